import Foundation
import Logging
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
    /// Records on the topic past the stored offsets of the partitions held when the consumer
    /// stopped (from the last fetch's high watermarks): more than 0 after Ctrl-C means the load
    /// was interrupted before every record was stored.
    public var lag: Int64 = 0
    /// The consumer stopped on Ctrl-C / SIGTERM.
    public var interrupted = false
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
    let logger: Logger

    public init(pipeline: Pipeline, flow: Flow, options: Options, logger: Logger = Logger(label: "pipectl.consumer")) {
        self.pipeline = pipeline
        self.flow = flow
        self.options = options
        self.logger = logger
    }

    static func consumerSettings(_ topic: Topic) -> [String: String] {
        var settings = ["bootstrap.servers": topic.brokers]
        for (k, v) in topic.properties where !k.hasPrefix("producer.") {
            settings[k.hasPrefix("consumer.") ? String(k.dropFirst("consumer.".count)) : k] = v
        }
        return settings
    }

    /// Consumes until `options.until` is met, the idle time passes, or Ctrl-C; every stored row
    /// is durable when it returns (the last commit waits for the WAL flush).
    /// - Throws: `TopicIncarnationError` when the topic vanished or was re-created under a
    ///   consumer that may not restart it; `KafkaError`; `PostgresError` once the sink's
    ///   `retry_timeout_ms` has passed without a connection.
    public func run(url: String, sink existingSink: PostgresSink? = nil) throws -> LoadReport {
        guard !flow.transforms.isEmpty else { throw PostgresError("sink '\(flow.sink.name)' has no transform") }
        var decoder = RecordDecoder(chain: flow.transforms)
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
        /// Set while the broker does not know the topic (it vanished, or is being re-created).
        var topicMissingSince: Date?
        /// Group joins completed (assignment callbacks), and a lost-topic error waiting to be
        /// thrown once the group is settled: Tansu keeps a member that leaves in the middle of a
        /// join as the group's leader, which blocks every later consumer of the group.
        var joinsCompleted = 0
        var lostTopic: (error: TopicIncarnationError, joinsAtDetection: Int, detectedAt: Date)?
        let writer = BatchWriter(sink: sink, logger: logger)
        defer { writer.stop() }
        if let latencyLog {
            writer.afterCommit = { committed in
                // Taken after COMMIT returned: send-to-stored latency per row.
                let now = CSVProducer.nowMicros()
                latencyLog.write(Data(committed.sentAtMicros.map { "\($0) \(now)\n" }.joined().utf8))
            }
        }
        /// Records polled while the writer was busy (partitions paused), kept for afterwards.
        var stash: [KafkaMessage] = []
        /// Bumped whenever the consumer is sent back to the stored offsets: records polled before
        /// (a stash being replayed) must not be added after it.
        var generation = 0

        /// Waits for the writer; after a lost PostgreSQL connection the partitions are read
        /// again from the offsets the server kept, since a crash can lose commits that had
        /// returned (they commit with `synchronous_commit = off`).
        func drainWriter() throws {
            do {
                try writer.drain()
            } catch let resync as ResyncNeeded {
                try reposition(resync)
            }
        }
        func reposition(_ resync: ResyncNeeded) throws {
            generation += 1
            batch.clear()
            stash.removeAll()
            // The records read again count as activity: an idle exit must wait for them.
            lastActivity = Date()
            let seeks = resync.offsets.filter { owned.contains($0.key) }
            logger.warning("\(resync.description)")
            try consumer.seek(seeks)
            writer.resumeAfterResync()
        }

        consumer.onAssign = { partitions in
            everAssigned = true
            joinsCompleted += 1
            // The writer shares the sink's connection: let it finish first. A resync is moot
            // here: the claim below reads the stored offsets again.
            do { try writer.drain() } catch is ResyncNeeded { writer.resumeAfterResync() }
            generation += 1
            batch.clear()
            stash.removeAll()
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
                            self.logger.info("topic \(topic.name) does not exist right now; waiting for it")
                            throw TopicUnavailable()
                        }
                        throw error
                    }
                    Thread.sleep(forTimeInterval: 0.3)
                }
            }
            currentTopicID = topicID
            topicMissingSince = nil
            // The claim uses the writer's connection: lease it, so the writer's idle work cannot
            // run on it at the same time. The claim commits synchronously, which also makes every
            // earlier (asynchronous) commit durable.
            let starts = try writer.withConnection {
                try sink.claim(partitions, topicID: topicID, restartOnNewTopic: self.options.restartOnNewTopic)
            }
            writer.markAllDurable()
            owned = Set(partitions)
            lastActivity = Date()
            var offsets: [Int32: Int64] = [:]
            for p in partitions { offsets[p] = starts[p] ?? 0 }
            writer.setStored(offsets)
            self.logger.info("assigned partitions \(partitions.sorted().map(String.init).joined(separator: ", ")) of \(topic.name)")
            return starts
        }
        consumer.onRevoke = { partitions in
            // Batches handed over are stored (the partitions are still ours during the callback);
            // the one being built is dropped: the next owner reads it again.
            if !partitions.isEmpty { self.logger.info("partitions \(partitions.sorted().map(String.init).joined(separator: ", ")) revoked") }
            do { try writer.drain() } catch is ResyncNeeded { writer.resumeAfterResync() } catch {}
            generation += 1
            batch.clear()
            stash.removeAll()
            owned.subtract(partitions)
            writer.forget(partitions)
        }
        try consumer.subscribe()
        defer { consumer.close() }

        func done() -> Bool {
            guard let until = options.until?() else { return false }
            if let id = until.topicID, id != currentTopicID { return false }
            return until.offsets.allSatisfy { p, end in end <= 0 || (writer.stored(p) ?? 0) >= end }
        }

        /// Remembers why `consume` must stop, and pauses its partitions meanwhile: nothing more
        /// is read from a topic whose incarnation is in doubt.
        func noteLostTopic(_ error: TopicIncarnationError) {
            guard lostTopic == nil else { return }
            lostTopic = (error, joinsCompleted, Date())
            consumer.pause(Array(owned))
        }

        /// Compares the topic's incarnation with the one assigned. A topic that vanished or came
        /// back under a new ID is an error for `consume` (its stored offsets cannot be trusted
        /// against the new log); `run`, whose producer sends the file again, waits and rejoins.
        func checkTopic() throws {
            guard everAssigned else { return }
            let now: String?
            do {
                now = try admin.currentTopicID(topic.name)
            } catch {
                return  // broker unreachable: nothing to compare yet
            }
            // An empty assignment may not have learnt the ID: the first one seen is the one held.
            guard let assignedID = currentTopicID else { currentTopicID = now; return }
            if now == assignedID { topicMissingSince = nil; return }
            guard options.restartOnNewTopic else {
                if lostTopic != nil { return }
                noteLostTopic(TopicIncarnationError(message: now == nil
                    ? "topic '\(topic.name)' (ID \(assignedID)) vanished while consuming (a broker restart loses in-memory topics). Nothing was skipped. Re-send the data (`pipectl run` or `pipectl produce`) and start `pipectl consume --restart-on-new-topic`; record ids keep rows from loading twice."
                    : "topic '\(topic.name)' was deleted and created again while consuming (ID \(assignedID) -> \(now!)). Nothing was skipped. Re-send the data (`pipectl run` or `pipectl produce`) and start `pipectl consume --restart-on-new-topic`; record ids keep rows from loading twice."))
                return
            }
            if let now {
                logger.info("topic \(topic.name) exists again (ID \(now)); joining the group again")
                topicMissingSince = nil
                try drainWriter()
                try consumer.rejoin()
                // currentTopicID changes when the new assignment's claim succeeds (onAssign).
            } else if topicMissingSince == nil {
                topicMissingSince = Date()
                logger.info("topic \(topic.name) vanished; waiting for it to be created again")
            }
        }

        /// Hands the batch to the writer. While the writer is busy for long (PostgreSQL away),
        /// the partitions are paused and the consumer keeps polling so it stays in the group;
        /// records arriving meanwhile are kept for afterwards.
        var submitWait = 0.0, idleSeconds = 0.0, idlePolls = 0
        func flush() throws {
            guard !batch.isEmpty else { return }
            var paused: [Int32] = []
            let began = Date()
            defer {
                submitWait += Date().timeIntervalSince(began)
                if !paused.isEmpty { consumer.resume(paused) }
            }
            Emit.count(.recordsConsumed, batch.count, [("topic", topic.name)])
            do {
                // A rebalance inside the poll below can drop the batch: then there is nothing to hand over.
                while !batch.isEmpty, try !writer.submit(batch, timeout: 0.5) {
                    if paused.isEmpty, !owned.isEmpty {
                        paused = Array(owned)
                        consumer.pause(paused)
                    }
                    if case let .message(m) = try consumer.poll(timeoutMs: 0) { stash.append(m) }
                }
                batch = RowBatch()
            } catch let resync as ResyncNeeded {
                try reposition(resync)
            }
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

        /// Exports each held partition's lag: the last fetch's high watermark minus the stored
        /// next offset (fetch watermarks, since Tansu's ListOffsets is wrong; FIELD-NOTES).
        func reportLag() {
            for p in owned {
                guard let high = consumer.cachedHighWatermark(p) else { continue }
                Emit.gauge(.consumerLag, max(0, high - max(writer.stored(p) ?? 0, 0)), [("topic", topic.name), ("partition", String(p))])
            }
        }

        /// Stores what is in hand and waits until it is durable. False when a lost connection
        /// sent the consumer back to read again (the caller goes on consuming).
        func finish() throws -> Bool {
            try flush()
            do {
                try writer.sync()
            } catch let resync as ResyncNeeded {
                try reposition(resync)
                return false
            }
            return true
        }

        func result() -> LoadReport {
            reportLag()
            if ProcessInfo.processInfo.environment["PIPECTL_TIMING"] != nil {
                printTiming(String(format: "timing: writer busy %.2f s, consumer waiting for the writer %.2f s, polls without a record %d (%.2f s)",
                                   writer.busySeconds, submitWait, idlePolls, idleSeconds))
            }
            var report = writer.currentReport()
            report.consumed = consumed
            report.interrupted = StopSignal.requested
            for p in owned {
                if let high = consumer.cachedHighWatermark(p) { report.lag += max(0, high - max(writer.stored(p) ?? 0, 0)) }
            }
            return report
        }

        let maxDelay = Double(flow.sink.maxDelayMs) / 1000
        while true {
            // A lost topic stops `consume` once the group has settled (the join under way
            // completed, or 10 s passed), so this member leaves the group cleanly.
            if let lost = lostTopic, joinsCompleted > lost.joinsAtDetection || Date().timeIntervalSince(lost.detectedAt) > 10 {
                try flush()
                _ = try? writer.sync()
                throw lost.error
            }
            if StopSignal.requested {
                // Ctrl-C: store what is in hand; a resync now leaves the rest to the next run.
                _ = try finish()
                return result()
            }
            if done(), try finish(), done() { return result() }
            if !stash.isEmpty {
                let waiting = stash
                stash.removeAll()
                let started = generation
                for m in waiting {
                    // A resync (or a rebalance) while replaying: the rest are stale.
                    guard generation == started else { break }
                    try add(m)
                }
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
            case let .topicUnavailable(text):
                // The broker does not know the topic: `run` waits for its producer to create it
                // again; `consume` stops, unless it may restart a new incarnation. A passing
                // answer (metadata still settling) is confirmed against the topic's ID first.
                if let held = currentTopicID, (try? admin.currentTopicID(topic.name)) == held { break }
                if everAssigned, !options.restartOnNewTopic {
                    noteLostTopic(TopicIncarnationError(message: "topic '\(topic.name)' vanished while consuming (\(text)); a broker restart loses in-memory topics. Nothing was skipped. Re-send the data (`pipectl run` or `pipectl produce`) and start `pipectl consume --restart-on-new-topic`; record ids keep rows from loading twice."))
                }
                if topicMissingSince == nil {
                    topicMissingSince = Date()
                    logger.info("topic \(topic.name) is not on the broker right now; waiting for it")
                }
                try flush()
            case .partitionEnd, .idle:
                idlePolls += 1
                idleSeconds += Date().timeIntervalSince(polled)
                try flush()
                if (consumer.waitingForTopic || topicMissingSince != nil), (try? admin.partitionCount(topic.name)) ?? nil != nil {
                    topicMissingSince = nil
                    try drainWriter()
                    try consumer.rejoin()
                }
                // Idle time counts once partitions were assigned (a group can take a session
                // timeout to hand over the partitions of a consumer that died). Before exiting,
                // the topic must still be the one consumed: idle exit never hides a lost topic.
                if let idle = options.idleExit, everAssigned || Date().timeIntervalSince(lastActivity) > 60,
                   Date().timeIntervalSince(lastActivity) > idle, writer.isIdle, topicMissingSince == nil, lostTopic == nil {
                    guard everAssigned else {
                        throw KafkaError("the consumer group '\(consumer.group)' did not complete a join in \(Int(Date().timeIntervalSince(lastActivity))) s, so nothing was consumed; is another member stuck in it? (with the embedded broker, `pipectl dev down && pipectl dev up` clears its groups)")
                    }
                    if everAssigned {
                        let id: String?
                        do {
                            id = try admin.currentTopicID(topic.name)
                        } catch {
                            throw KafkaError("cannot confirm that topic '\(topic.name)' is still the one consumed after \(Int(idle)) s without records (\(error)); not reporting the load as complete")
                        }
                        if id != currentTopicID { try checkTopic(); continue }
                    }
                    if try finish() { return result() }
                }
            }
            // Every 2 s, while consuming too: a topic re-created under us must not be read from
            // the old incarnation's offsets, and one that came back must be joined again (the
            // group does not notice a new incarnation by itself).
            if Date().timeIntervalSince(lastTopicCheck) > 2 {
                lastTopicCheck = Date()
                try checkTopic()
                reportLag()
            }
            if let first = batch.firstAt, Date().timeIntervalSince(first) >= maxDelay { try flush() }
        }
    }
}

extension KafkaMessage: PayloadHolder {
    public var payloadBytes: [UInt8] { Array(value) }
}

func printTiming(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}
