import Foundation
import KafkaAdapter
import PipelineCompiler
import PostgresAdapter

/// Counts from one consumer run.
public struct LoadReport: Sendable {
    public var consumed = 0
    public var loaded = 0
    public var duplicates = 0
    public var deadLettered = 0
    public var batches = 0
    /// Send-to-commit latencies in microseconds (records carrying `_sent_at`).
    public var latenciesMicros: [Int64] = []
}

/// The consumer side of a flow: reads the topic in a consumer group, decodes and casts records,
/// and commits batches (rows + dead letters + offsets) through `PostgresSink`.
public final class TopicLoader {
    public struct Options {
        /// Stop once the returned offsets of the returned topic incarnation are stored (bounded
        /// `run`: the producer's end offsets, known once it has finished); nil: keep consuming.
        public var until: (() -> (offsets: [Int32: Int64], topicID: String?)?)?
        /// Start a re-created topic from its beginning instead of stopping with an error.
        public var restartOnNewTopic = false
        /// Stop after this long without records once `untilOffsets` is nil and `--follow` is off.
        public var idleExit: Double?
        public var recordLatency = false
        public init() {}
    }

    let pipeline: Pipeline
    let flow: Flow
    let options: Options
    let log: (String) -> Void

    public init(pipeline: Pipeline, flow: Flow, options: Options, log: @escaping (String) -> Void = { print($0) }) {
        self.pipeline = pipeline
        self.flow = flow
        self.options = options
        self.log = log
    }

    static func consumerSettings(_ topic: Topic) -> [String: String] {
        var settings = ["bootstrap.servers": topic.brokers]
        for (k, v) in topic.properties where !k.hasPrefix("producer.") {
            settings[k.hasPrefix("consumer.") ? String(k.dropFirst("consumer.".count)) : k] = v
        }
        return settings
    }

    public func run(url: String, sink existingSink: PostgresSink? = nil) throws -> LoadReport {
        guard let transform = flow.transforms.last, flow.transforms.count == 1 else {
            throw PostgresError("sink '\(flow.sink.name)': pipectl runs flows with exactly one transform between topic and sink")
        }
        var decoder = RecordDecoder(transform: transform)
        let sink = try existingSink ?? PostgresSink(pipeline: pipeline, flow: flow, columnList: decoder.columnList, url: url)
        let topic = flow.topic
        let settings = Self.consumerSettings(topic)
        let admin = try KafkaAdmin(settings: settings)
        let consumer = try GroupConsumer(topic: topic.name, group: "pipectl.\(pipeline.name).\(flow.sink.name)", settings: settings)
        var report = LoadReport()
        var batch = RowBatch()
        var owned = Set<Int32>()
        var stored: [Int32: Int64] = [:]
        var lastActivity = Date()
        // PIPECTL_LATENCY_LOG=path: one line per stored row, `sent_at_micros committed_at_micros`
        // (benchmarks read it; the commit time is taken after COMMIT returns).
        let latencyLog: FileHandle? = ProcessInfo.processInfo.environment["PIPECTL_LATENCY_LOG"].flatMap { path in
            if !FileManager.default.fileExists(atPath: path) { FileManager.default.createFile(atPath: path, contents: nil) }
            let handle = FileHandle(forWritingAtPath: path)
            handle?.seekToEndOfFile()
            return handle
        }
        var everAssigned = false
        var currentTopicID: String?

        consumer.onAssign = { partitions in
            // Right after a broker restart the group can assign a topic that DescribeTopics
            // does not know yet (it is being created again); give it a few seconds.
            var topicID = ""
            for attempt in 0..<5 {
                do {
                    topicID = try admin.topicID(topic.name)
                    break
                } catch let error as KafkaError {
                    if attempt == 4 {
                        guard try admin.partitionCount(topic.name) != nil else {
                            self.log("topic \(topic.name) does not exist right now; waiting for it")
                            throw TopicUnavailable()
                        }
                        throw error
                    }
                    Thread.sleep(forTimeInterval: 0.3)
                }
            }
            currentTopicID = topicID
            let starts = try sink.claim(partitions, topicID: topicID, restartOnNewTopic: self.options.restartOnNewTopic)
            everAssigned = true
            owned = Set(partitions)
            lastActivity = Date()
            for p in partitions { stored[p] = starts[p] ?? 0 }
            self.log("assigned partitions \(partitions.sorted().map(String.init).joined(separator: ", ")) of \(topic.name)")
            return starts
        }
        consumer.onRevoke = { partitions in
            // Work not yet committed for these partitions is dropped: the next owner re-reads it.
            if !partitions.isEmpty { self.log("partitions \(partitions.sorted().map(String.init).joined(separator: ", ")) revoked") }
            batch.clear()
            owned.removeAll()
        }
        try consumer.subscribe()
        defer { consumer.close() }

        func done() -> Bool {
            guard let until = options.until?() else { return false }
            if let id = until.topicID, id != currentTopicID { return false }
            return until.offsets.allSatisfy { p, end in end <= 0 || (stored[p] ?? 0) >= end }
        }

        func flush() throws {
            guard !batch.isEmpty else { return }
            var attempt = 0
            while true {
                do {
                    let result = try sink.commit(batch)
                    report.loaded += result.loaded
                    report.duplicates += result.duplicates
                    report.deadLettered += result.deadLettered
                    report.batches += 1
                    for (p, o) in batch.nextOffsets { stored[p] = o }
                    if options.recordLatency || latencyLog != nil {
                        // Taken after COMMIT returned: send-to-stored latency per row.
                        let now = Int64(Date().timeIntervalSince1970 * 1_000_000)
                        if options.recordLatency { report.latenciesMicros.append(contentsOf: batch.sentAtMicros.map { now - $0 }) }
                        if let latencyLog {
                            let lines = batch.sentAtMicros.map { "\($0) \(now)\n" }.joined()
                            latencyLog.write(Data(lines.utf8))
                        }
                    }
                    batch.clear()
                    return
                } catch let fenced as FencedError {
                    log("warning: \(fenced)")
                    batch.clear()
                    return
                } catch let error as PostgresError where error.connectionLost {
                    attempt += 1
                    log("PostgreSQL connection lost (\(error.message)); retrying the batch (attempt \(attempt))")
                    consumer.pause(Array(owned))
                    defer { consumer.resume(Array(owned)) }
                    try sink.reconnect { self.log($0) }
                }
            }
        }

        let maxDelay = Double(flow.sink.maxDelayMs) / 1000
        while !StopSignal.requested {
            if done() { break }
            let event = try consumer.poll(timeoutMs: 100)
            switch event {
            case let .message(message):
                lastActivity = Date()
                guard owned.contains(message.partition) else { continue }
                report.consumed += 1
                if batch.firstAt == nil { batch.firstAt = Date() }
                let start = batch.rows.count
                let outcome = decoder.decode(message.value, into: &batch.rows)
                switch outcome {
                case let .row(id, sentAt):
                    batch.rowRanges.append(start..<batch.rows.count)
                    batch.rowOrigins.append(RowOrigin(partition: message.partition, offset: message.offset, recordID: id, holder: message))
                    if let sentAt, options.recordLatency || latencyLog != nil { batch.sentAtMicros.append(sentAt) }
                case let .rejected(id, rejected):
                    batch.rejected.append((RowOrigin(partition: message.partition, offset: message.offset, recordID: id, holder: nil), rejected))
                }
                batch.nextOffsets[message.partition] = message.offset + 1
                if batch.count >= flow.sink.batchSize { try flush() }
            case .partitionEnd, .idle:
                try flush()
                if consumer.waitingForTopic, (try? admin.partitionCount(topic.name)) ?? nil != nil {
                    try consumer.rejoin()
                }
                // Idle time counts once partitions were assigned (a group can take a session
                // timeout to hand over the partitions of a consumer that died).
                if let idle = options.idleExit, everAssigned || Date().timeIntervalSince(lastActivity) > 60,
                   Date().timeIntervalSince(lastActivity) > idle { return report }
            }
            if let first = batch.firstAt, Date().timeIntervalSince(first) >= maxDelay { try flush() }
        }
        try flush()
        return report
    }
}

extension KafkaMessage: PayloadHolder {
    public var payloadBytes: [UInt8] { Array(value) }
}
