import Foundation
import KafkaAdapter
import Logging
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
    /// How a consumer run ends and treats a re-created topic; `consume` and `run` differ here.
    public struct Options {
        /// Stop once the returned offsets of the returned topic incarnation are stored (bounded
        /// `run`: the producer's end offsets, known once it has finished); nil: keep consuming.
        public var until: (() -> (offsets: [Int32: Int64], topicID: String?)?)?
        /// Start a re-created topic from its beginning instead of stopping with an error.
        public var restartOnNewTopic = false
        /// Stop after this long without records once `untilOffsets` is nil and `--follow` is off.
        public var idleExit: Double?
        /// Seconds the consumer may go on polling, once `until` is met, for its first group join
        /// to complete before it leaves (0: leave at once). A consumer closed while it joins was
        /// seen to hold Tansu's group back for the next run (`run` starts its consumers before
        /// the source is checked, and a refused file ends them at once).
        public var joinBeforeLeaving: Double = 0
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
        let driver = try ConsumerDriver(loader: self, decoder: &decoder, sink: sink)
        return try driver.run()
    }
}

/// Runs a `ConsumerStateMachine` against the real consumer, broker and writer: every decision
/// is the machine's; this type only performs its actions and feeds the outcomes back.
///
/// Threads: everything here runs on the caller's thread, including librdkafka's rebalance
/// callbacks (they fire inside `poll`). The sink's PostgreSQL connection is the writer's: the
/// claim runs as a writer job (`BatchWriter.perform`), never on this thread.
private final class ConsumerDriver {
    typealias Machine = ConsumerStateMachine<KafkaMessage>
    let topic: Topic
    let sinkSpec: Sink
    let options: TopicLoader.Options
    let logger: Logger
    var decoder: RecordDecoder
    let sink: PostgresSink
    let admin: KafkaAdmin
    let consumer: GroupConsumer
    let writer: BatchWriter
    var machine: Machine
    var batch = RowBatch()
    var consumed = 0
    let keepSendTimes: Bool
    /// `PIPECTL_TIMING` figures.
    var submitWait = 0.0, idleSeconds = 0.0, idlePolls = 0

    /// The decoder moves into the driver (it keeps per-run state).
    init(loader: TopicLoader, decoder: inout RecordDecoder, sink: PostgresSink) throws {
        topic = loader.flow.topic
        sinkSpec = loader.flow.sink
        options = loader.options
        logger = loader.logger
        self.decoder = decoder
        self.sink = sink
        let settings = TopicLoader.consumerSettings(topic)
        admin = try KafkaAdmin(settings: settings)
        let group = "pipectl.\(loader.pipeline.name).\(sinkSpec.name)"
        consumer = try GroupConsumer(topic: topic.name, group: group, settings: settings)
        var configuration = Machine.Configuration(topic: topic.name, group: group)
        configuration.restartOnNewTopic = options.restartOnNewTopic
        configuration.idleExit = options.idleExit
        configuration.maxDelay = Double(sinkSpec.maxDelayMs) / 1000
        configuration.batchSize = sinkSpec.batchSize
        machine = Machine(configuration: configuration, now: Date())
        writer = BatchWriter(sink: sink, logger: logger)
        // PIPECTL_LATENCY_LOG=path: one line per stored row, `sent_at_micros committed_at_micros`
        // (benchmarks read it; the commit time is taken after COMMIT returns).
        let latencyLog: FileHandle? = ProcessInfo.processInfo.environment["PIPECTL_LATENCY_LOG"].flatMap { path in
            if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
            let handle = FileHandle(forWritingAtPath: path)
            handle?.seekToEndOfFile()
            return handle
        }
        keepSendTimes = latencyLog != nil
        if let latencyLog {
            writer.afterCommit = { committed in
                // Taken after COMMIT returned: send-to-stored latency per row.
                let now = CSVProducer.nowMicros()
                latencyLog.write(Data(committed.sentAtMicros.map { "\($0) \(now)\n" }.joined().utf8))
            }
        }
    }

    func run() throws -> LoadReport {
        defer { writer.stop() }
        consumer.onAssign = { [unowned self] partitions in try self.assigned(partitions) }
        consumer.onRevoke = { [unowned self] partitions in
            do { try self.perform(self.machine.partitionsRevoked(partitions)) } catch {}
        }
        try consumer.subscribe()
        defer { consumer.close() }
        let joinDeadline = Date().addingTimeInterval(options.joinBeforeLeaving)
        while true {
            // One clock read per turn of the loop (they were 8-9% of the consumer's CPU): the
            // machine's deadlines are tens of milliseconds and later.
            let now = Date()
            if let error = machine.failureDue(at: now) {
                try handOver()
                _ = try? writer.sync()
                throw error
            }
            if StopSignal.requested {
                // Ctrl-C: store what is in hand; a resync now leaves the rest to the next run.
                _ = try finish()
                return result()
            }
            if isDone(), machine.everAssigned || now >= joinDeadline, try finish(), isDone() { return result() }
            switch machine.nextRead(at: now) {
            case .replay(_, let generation):
                for m in machine.takeStash() {
                    // A resync (or a rebalance) while replaying: the rest are stale.
                    guard machine.generation == generation else { break }
                    try add(m, fromStash: true)
                }
                continue
            case .poll(let timeoutMs):
                switch try consumer.poll(timeoutMs: timeoutMs) {
                case .message(let message):
                    try add(message, fromStash: false, at: now)
                case .topicUnavailable(let text):
                    // A passing answer (metadata still settling) is confirmed against the topic's ID.
                    let stillHeld = machine.topicID.map { held in (try? admin.currentTopicID(topic.name)) == held }
                    try perform(machine.topicUnavailable(text, stillHeld: stillHeld, at: Date()))
                case .partitionEnd, .idle:
                    let after = Date()
                    idlePolls += 1
                    idleSeconds += after.timeIntervalSince(now)
                    try perform(machine.pollIdle(at: after))
                    if try machine.idleExitCheck(writerIdle: writer.isIdle, at: after) == .confirmTopic {
                        let id: String?
                        do {
                            id = try admin.currentTopicID(topic.name)
                        } catch {
                            throw KafkaError(
                                "cannot confirm that topic '\(topic.name)' is still the one consumed after \(Int(options.idleExit ?? 0)) s without records (\(error)); not reporting the load as complete"
                            )
                        }
                        switch machine.idleExitTopicConfirmed(id) {
                        case .checkTopicAndContinue:
                            try perform([.checkTopic])
                            continue
                        case .finish:
                            if try finish() { return result() }
                        }
                    }
                }
            }
            try perform(machine.tick(at: now))
        }
    }

    // MARK: actions

    func perform(_ actions: [Machine.Action]) throws {
        for action in actions {
            switch action {
            case .drainWriter(let ignoreResync):
                do {
                    try writer.drain()
                } catch let resync as ResyncNeeded {
                    if ignoreResync { writer.resumeAfterResync() } else { try reposition(resync) }
                }
            case .drainWriterQuietly:
                do { try writer.drain() } catch is ResyncNeeded { writer.resumeAfterResync() } catch {}
            case .dropBatch:
                batch.clear()
            case .claim, .learnTopicID:
                break  // done inside `assigned`, which must return the start offsets
            case .forget(let partitions):
                writer.forget(partitions)
            case .handOver:
                try handOver()
            case .pause(let partitions):
                consumer.pause(partitions)
            case .resume(let partitions):
                consumer.resume(partitions)
            case .seek(let offsets):
                try consumer.seek(offsets)
                writer.resumeAfterResync()
            case .rejoin:
                try consumer.rejoin()
                machine.rejoined()
            case .checkTopic:
                guard machine.checksTopic else { break }
                let current: String?
                do { current = try admin.currentTopicID(topic.name) } catch { break }  // broker unreachable: nothing to compare yet
                try perform(machine.topicChecked(current: current, at: Date()))
            case .checkTopicExists:
                if (try? admin.partitionCount(topic.name)) ?? nil != nil { try perform(machine.topicExists()) }
            case .reportLag:
                reportLag()
            case .logInfo(let text):
                logger.info("\(text)")
            case .logWarning(let text):
                logger.warning("\(text)")
            }
        }
    }

    /// The rebalance callback's assignment: claims the partitions in PostgreSQL and returns
    /// where each starts.
    func assigned(_ partitions: [Int32]) throws -> [Int32: Int64] {
        let actions = machine.partitionsAssigned(partitions, at: Date())
        try perform(actions)
        guard case .claim = actions.last else {
            // Nothing for us (more consumers than partitions, or the topic was missing when the
            // group was balanced). Remember which incarnation this was about.
            machine.topicIDLearned(try? admin.topicID(topic.name))
            return [:]
        }
        // Right after a broker restart the group can assign a topic that DescribeTopics does not
        // know yet (it is being created again); give it a few seconds.
        var topicID = ""
        for attempt in 0..<5 {
            do {
                topicID = try admin.topicID(topic.name)
                break
            } catch let error as KafkaError {
                if attempt == 4 {
                    guard try admin.partitionCount(topic.name) != nil else {
                        logger.info("topic \(topic.name) does not exist right now; waiting for it")
                        machine.assignmentDeclined()
                        throw TopicUnavailable()
                    }
                    throw error
                }
                Thread.sleep(forTimeInterval: 0.3)
            }
        }
        // The claim runs on the writer's thread, which owns the connection. It commits
        // synchronously, which also makes every earlier (asynchronous) commit durable.
        let restart = options.restartOnNewTopic
        let sink = self.sink
        let starts = try writer.perform { [topicID, logger] in
            try sink.claim(partitions, topicID: topicID, restartOnNewTopic: restart, logger: logger)
        }
        writer.markAllDurable()
        writer.setStored(machine.claimed(partitions, topicID: topicID, starts: starts, at: Date()))
        logger.info("assigned partitions \(partitions.sorted().map(String.init).joined(separator: ", ")) of \(topic.name)")
        return starts
    }

    /// Hands the batch to the writer. While the writer is busy for long (PostgreSQL away), the
    /// partitions are paused and the consumer keeps polling so it stays in the group; records
    /// arriving meanwhile are kept for afterwards.
    func handOver() throws {
        guard machine.hasBatch else { return }
        let began = Date()
        var taken = false
        defer {
            submitWait += Date().timeIntervalSince(began)
            try? perform(machine.handOverEnded(taken: taken))
        }
        Emit.count(.recordsConsumed, batch.count, [("topic", topic.name)])
        do {
            // A rebalance inside the poll below can drop the batch: then there is nothing to hand over.
            while machine.hasBatch, try !writer.submit(batch, timeout: 0.5) {
                try perform(machine.writerBusy())
                if case .message(let m) = try consumer.poll(timeoutMs: 0) { machine.stashed(m) }
            }
            taken = machine.hasBatch
            batch = RowBatch()
        } catch let resync as ResyncNeeded {
            try reposition(resync)
        }
    }

    /// After a lost PostgreSQL connection the partitions are read again from the offsets the
    /// server kept, since a crash can lose commits that had returned (`synchronous_commit = off`).
    func reposition(_ resync: ResyncNeeded) throws {
        try perform(machine.resyncNeeded(offsets: resync.offsets, description: resync.description, at: Date()))
    }

    func add(_ message: KafkaMessage, fromStash: Bool, at now: Date = Date()) throws {
        let step = machine.messageArrived(partition: message.partition, fromStash: fromStash, writerIdle: writer.isIdle, at: now)
        guard step.add else { return }
        consumed += 1
        if batch.firstAt == nil { batch.firstAt = now }
        let start = batch.rows.count
        switch decoder.decode(message.value, into: &batch.rows) {
        case .row(let id, let sentAt):
            try sink.sources.appendKey(id, to: &batch.rows)
            batch.rowRanges.append(start..<batch.rows.count)
            batch.rowOrigins.append(RowOrigin(partition: message.partition, offset: message.offset, recordID: id, holder: message))
            if let sentAt, keepSendTimes { batch.sentAtMicros.append(sentAt) }
        case .rejected(let id, let rejected):
            batch.rejected.append((RowOrigin(partition: message.partition, offset: message.offset, recordID: id, holder: nil), rejected))
        }
        batch.nextOffsets[message.partition] = message.offset + 1
        if step.handOver { try handOver() }
    }

    func isDone() -> Bool {
        guard let target = options.until?() else { return false }
        let stored = writer.storedOffsetsSnapshot()
        return machine.isDone(target: target, stored: { stored[$0] }, at: Date())
    }

    /// Stores what is in hand and waits until it is durable. False when a lost connection sent
    /// the consumer back to read again (the caller goes on consuming).
    func finish() throws -> Bool {
        try handOver()
        do {
            try writer.sync()
        } catch let resync as ResyncNeeded {
            try reposition(resync)
            return false
        }
        return true
    }

    /// Exports each held partition's lag: the last fetch's high watermark minus the stored next
    /// offset (fetch watermarks, since Tansu's ListOffsets is wrong; FIELD-NOTES).
    /// - Parameter fresh: high watermarks just fetched, used instead of the cached ones.
    /// - Returns: the lag of all held partitions together.
    @discardableResult
    func reportLag(highWatermarks fresh: [Int32: Int64] = [:]) -> Int64 {
        var total: Int64 = 0
        for p in machine.owned {
            guard let high = fresh[p] ?? consumer.cachedHighWatermark(p) else { continue }
            let lag = max(0, high - max(writer.stored(p) ?? 0, 0))
            Emit.gauge(.consumerLag, lag, [("topic", topic.name), ("partition", String(p))])
            total += lag
        }
        return total
    }

    func result() -> LoadReport {
        machine.finished()
        if ProcessInfo.processInfo.environment["PIPECTL_TIMING"] != nil {
            printTiming(
                String(
                    format: "timing: writer busy %.2f s, consumer waiting for the writer %.2f s, polls without a record %d (%.2f s)",
                    writer.busySeconds, submitWait, idlePolls, idleSeconds))
        }
        var report = writer.currentReport()
        report.consumed = consumed
        report.interrupted = StopSignal.requested
        // The consumer's cached watermarks are those of its last fetch, which is old when the
        // partitions were paused for a busy writer: an interrupted run asks the broker afresh, so
        // its summary does not call records stored that are not (falls back to the cache).
        // The exported gauge gets the same figures.
        let fresh =
            report.interrupted
            ? (try? fetchHighWatermarks(topic: topic.name, partitions: machine.owned.sorted(), settings: TopicLoader.consumerSettings(topic), timeoutMs: 2000))
                ?? [:] : [:]
        report.lag = reportLag(highWatermarks: fresh)
        return report
    }
}

extension KafkaMessage: PayloadHolder {
    public var payloadBytes: [UInt8] { Array(value) }
}

func printTiming(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}
