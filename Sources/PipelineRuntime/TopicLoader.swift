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
        var consumed = 0
        var batch = RowBatch()
        var owned = Set<Int32>()
        var lastActivity = Date()
        // PIPECTL_LATENCY_LOG=path: one line per stored row, `sent_at_micros committed_at_micros`
        // (benchmarks read it; the commit time is taken after COMMIT returns).
        let latencyLog: FileHandle? = ProcessInfo.processInfo.environment["PIPECTL_LATENCY_LOG"].flatMap { path in
            if !FileManager.default.fileExists(atPath: path) { FileManager.default.createFile(atPath: path, contents: nil) }
            let handle = FileHandle(forWritingAtPath: path)
            handle?.seekToEndOfFile()
            return handle
        }
        let keepSendTimes = latencyLog != nil
        var everAssigned = false
        var currentTopicID: String?
        var lastTopicCheck = Date()
        let writer = BatchWriter(sink: sink, log: log)
        defer { writer.stop() }
        if let latencyLog {
            writer.afterCommit = { committed in
                // Taken after COMMIT returned: send-to-stored latency per row.
                let now = CSVProducer.nowMicros()
                latencyLog.write(Data(committed.sentAtMicros.map { "\($0) \(now)\n" }.joined().utf8))
            }
        }

        consumer.onAssign = { partitions in
            everAssigned = true
            // The writer shares the sink's connection: let it finish first.
            try writer.drain()
            lastActivity = Date()
            if partitions.isEmpty {
                // Nothing for us (more consumers than partitions, or the topic was missing when
                // the group was balanced). Remember which incarnation this was about.
                currentTopicID = try? admin.topicID(topic.name)
                owned = []
                return [:]
            }
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
            owned = Set(partitions)
            lastActivity = Date()
            var offsets: [Int32: Int64] = [:]
            for p in partitions { offsets[p] = starts[p] ?? 0 }
            writer.setStored(offsets)
            self.log("assigned partitions \(partitions.sorted().map(String.init).joined(separator: ", ")) of \(topic.name)")
            return starts
        }
        consumer.onRevoke = { partitions in
            // Batches handed over are stored (the partitions are still ours during the callback);
            // the one being built is dropped: the next owner reads it again.
            if !partitions.isEmpty { self.log("partitions \(partitions.sorted().map(String.init).joined(separator: ", ")) revoked") }
            try? writer.drain()
            batch.clear()
            owned.removeAll()
        }
        try consumer.subscribe()
        defer { consumer.close() }

        func done() -> Bool {
            guard let until = options.until?() else { return false }
            if let id = until.topicID, id != currentTopicID { return false }
            return until.offsets.allSatisfy { p, end in end <= 0 || (writer.stored(p) ?? 0) >= end }
        }

        /// Hands the batch to the writer. While the writer is busy for long (PostgreSQL away),
        /// the partitions are paused and the consumer keeps polling so it stays in the group;
        /// records arriving meanwhile are kept for afterwards.
        var stash: [KafkaMessage] = []
        var submitWait = 0.0, idleSeconds = 0.0, idlePolls = 0
        func flush() throws {
            guard !batch.isEmpty else { return }
            var paused: [Int32] = []
            let began = Date()
            defer { submitWait += Date().timeIntervalSince(began) }
            while try !writer.submit(batch, timeout: 0.5) {
                if paused.isEmpty, !owned.isEmpty {
                    paused = Array(owned)
                    consumer.pause(paused)
                }
                if case let .message(m) = try consumer.poll(timeoutMs: 0) { stash.append(m) }
            }
            if !paused.isEmpty { consumer.resume(paused) }
            batch = RowBatch()
        }

        func add(_ message: KafkaMessage) throws {
            guard owned.contains(message.partition) else { return }
            consumed += 1
            if batch.firstAt == nil { batch.firstAt = Date() }
            let start = batch.rows.count
            switch decoder.decode(message.value, into: &batch.rows) {
            case let .row(id, sentAt):
                try sink.sources.appendKey(id, to: &batch.rows)
                batch.rowRanges.append(start..<batch.rows.count)
                batch.rowOrigins.append(RowOrigin(partition: message.partition, offset: message.offset, recordID: id, holder: message))
                if let sentAt, keepSendTimes { batch.sentAtMicros.append(sentAt) }
            case let .rejected(id, rejected):
                batch.rejected.append((RowOrigin(partition: message.partition, offset: message.offset, recordID: id, holder: nil), rejected))
            }
            batch.nextOffsets[message.partition] = message.offset + 1
            if batch.count >= flow.sink.batchSize { try flush() }
        }

        func result() throws -> LoadReport {
            try writer.drain()
            if ProcessInfo.processInfo.environment["PIPECTL_TIMING"] != nil {
                printTiming(String(format: "timing: writer busy %.2f s, consumer waiting for the writer %.2f s, polls without a record %d (%.2f s)",
                                   writer.busySeconds, submitWait, idlePolls, idleSeconds))
            }
            var report = writer.currentReport()
            report.consumed = consumed
            return report
        }

        let maxDelay = Double(flow.sink.maxDelayMs) / 1000
        while !StopSignal.requested {
            if done() { break }
            if !stash.isEmpty {
                let waiting = stash
                stash.removeAll()
                for m in waiting { try add(m) }
                continue
            }
            // Wake up in time for the batch's maximum delay.
            var timeout: Int32 = 100
            if let first = batch.firstAt {
                timeout = Int32(max(1, min(100, (maxDelay - Date().timeIntervalSince(first)) * 1000)))
            }
            let polled = Date()
            switch try consumer.poll(timeoutMs: timeout) {
            case let .message(message):
                lastActivity = Date()
                try add(message)
            case .partitionEnd, .idle:
                idlePolls += 1
                idleSeconds += Date().timeIntervalSince(polled)
                try flush()
                if consumer.waitingForTopic, (try? admin.partitionCount(topic.name)) ?? nil != nil {
                    try consumer.rejoin()
                } else if owned.isEmpty, everAssigned, Date().timeIntervalSince(lastTopicCheck) > 2 {
                    // Holding nothing: if the topic came back as a new incarnation since the
                    // group was balanced, the group does not know; join again.
                    lastTopicCheck = Date()
                    if let id = try? admin.topicID(topic.name), id != currentTopicID {
                        log("topic \(topic.name) exists again (ID \(id)); joining the group again")
                        try consumer.rejoin()
                    }
                }
                // Idle time counts once partitions were assigned (a group can take a session
                // timeout to hand over the partitions of a consumer that died).
                if let idle = options.idleExit, everAssigned || Date().timeIntervalSince(lastActivity) > 60,
                   Date().timeIntervalSince(lastActivity) > idle, writer.isIdle {
                    return try result()
                }
            }
            if let first = batch.firstAt, Date().timeIntervalSince(first) >= maxDelay { try flush() }
        }
        try flush()
        return try result()
    }
}

extension KafkaMessage: PayloadHolder {
    public var payloadBytes: [UInt8] { Array(value) }
}

func printTiming(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}
