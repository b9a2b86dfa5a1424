import Foundation
import Logging
import KafkaAdapter
import PipelineCompiler
import PostgresAdapter

/// `pipectl run`: applies the plan (topics, tables), runs producer and consumer together and
/// prints the summary.
public final class PipelineRunner {
    let pipeline: Pipeline
    let environment: [String: String]
    let logger: Logger

    /// A source file changed where it was already sent is sent as a new source instead of
    /// refused (`--as-new-source`).
    public var asNewSource = false

    public init(pipeline: Pipeline, environment: [String: String] = ProcessInfo.processInfo.environment, logger: Logger = Logger(label: "pipectl.run")) {
        self.pipeline = pipeline
        self.environment = environment
        self.logger = logger
    }

    public struct Summary: Sendable {
        public var flow: String
        public var rowsRead = 0
        public var rowsSent = 0
        public var loaded = 0
        public var duplicates = 0
        public var deadLettered = 0
        public var elapsed: Double = 0
        public var check: String?
        /// Rows of this source file in the table, and its dead letters, counted in the database.
        public var storedRows = 0
        public var storedDeadLetters = 0
        /// Ctrl-C / SIGTERM stopped the run before the whole file was sent, or before every
        /// sent record was stored (`lag` records were left on the topic).
        public var interrupted = false
        public var lag: Int64 = 0
        /// Header fields no column takes (`on_unknown_field`): read but not loaded.
        public var fieldsNotLoaded: [String] = []
        /// Dead letters of this file: this run's, or stored by an earlier one.
        public var hasDeadLetters: Bool { deadLettered > 0 || storedDeadLetters > 0 }
        /// Upserts keep one row per key, so there every record read must be an insert, an
        /// update or a dead letter; inserts must each be a stored row of this file.
        public var reconciled: Bool {
            mode == .upsert ? rowsRead == loaded + duplicates + deadLettered : rowsRead == storedRows + storedDeadLetters
        }
        /// In upsert mode `loaded` counts inserted rows and `duplicates` updated ones.
        public var mode: WriteMode = .insert
    }

    /// The sink's connection string: the spec's `url`, else DATABASE_URL.
    public static func databaseURL(for sink: Sink, environment: [String: String]) throws -> String {
        if !sink.url.isEmpty { return sink.url }
        if let url = environment["DATABASE_URL"], !url.isEmpty { return url }
        throw PostgresError("sink '\(sink.name)' has no 'url' and DATABASE_URL is not set")
    }

    /// Creates the topic and the tables (idempotent). Consumers starting together take turns
    /// (an advisory lock): two concurrent CreateTopics were seen to make two incarnations.
    public func prepare(_ flow: Flow) throws -> PostgresSink {
        guard let transform = flow.transforms.last else { throw PostgresError("sink '\(flow.sink.name)' has no transform") }
        let url = try Self.databaseURL(for: flow.sink, environment: environment)
        let sink = try PostgresSink(pipeline: pipeline, flow: flow, columnList: RecordDecoder(transform: transform).columnList, url: url)
        let lockKey = "pipectl prepare " + pipeline.name
        _ = try sink.query("SELECT pg_advisory_lock(hashtext($1))", [lockKey])
        defer { _ = try? sink.query("SELECT pg_advisory_unlock(hashtext($1))", [lockKey]) }
        let admin = try KafkaAdmin(settings: TopicLoader.consumerSettings(flow.topic))
        if try admin.ensureTopic(flow.topic.name, partitions: flow.topic.partitions, replicationFactor: flow.topic.replicationFactor) {
            logger.info("created topic \(flow.topic.name) (\(flow.topic.partitions) partition\(flow.topic.partitions == 1 ? "" : "s"))")
        }
        try sink.applyDDL()
        return sink
    }

    public func run(follow: Bool = false) throws -> [Summary] {
        var summaries: [Summary] = []
        for flow in pipeline.flows {
            guard let source = flow.source else {
                throw PostgresError("sink '\(flow.sink.name)' reads topic '\(flow.topic.name)', which has no source in this spec; use `pipectl consume`")
            }
            let started = Date()
            let sink = try prepare(flow)
            let url = sink.url
            logger.info("\(source.path) -> topic \(flow.topic.name) at \(flow.topic.brokers) -> table \(SQL.qualified(flow.sink.dbSchema, flow.sink.table)) at \(ConnectionString.redacted(url))")
            let box = ProducerBox()
            let producerThread = Thread {
                var result = self.produceWithRetries(source: source, flow: flow, onChecked: { box.checked = true })
                box.set(result)
                // Records sent but not yet stored can vanish with the topic (a broker that keeps
                // topics in memory restarted): until the consumer is done, watch the topic and
                // send the file again if its incarnation changed. Record ids drop the repeats.
                let admin = try? KafkaAdmin(settings: CSVProducer.kafkaSettings(flow.topic))
                while case let .success(report) = result, !box.consumerFinished, !StopSignal.requested {
                    Thread.sleep(forTimeInterval: 0.5)
                    guard let admin, !box.consumerFinished else { break }
                    let current: String? = (try? admin.partitionCount(flow.topic.name)) ?? nil == nil ? nil : try? admin.topicID(flow.topic.name)
                    if current != report.topicID {
                        self.logger.info("topic \(flow.topic.name) was lost before every record was stored; sending \(source.path) again")
                        box.clear()
                        result = self.produceWithRetries(source: source, flow: flow)
                        box.set(result)
                    }
                }
                box.producerExited = true
            }
            producerThread.stackSize = 8 << 20
            producerThread.start()
            // The consumer starts once the file passed its checkpoint check: a consumer started
            // and stopped while it joins its group was seen to hold Tansu's group back for the
            // next run, and a refused file needs no consumer.
            while !box.checked, box.get() == nil { Thread.sleep(forTimeInterval: 0.01) }
            if case let .failure(error) = box.get() {
                box.consumerFinished = true
                while !box.producerExited { Thread.sleep(forTimeInterval: 0.01) }
                throw error
            }
            var options = TopicLoader.Options()
            options.restartOnNewTopic = true
            if !follow {
                options.until = {
                    guard let result = box.get() else { return nil }
                    switch result {
                    case let .success(report): return (report.endOffsets, report.topicID)
                    case .failure: return ([:], nil)  // the producer failed: stop after what is there
                    }
                }
            }
            let load: LoadReport
            do {
                load = try TopicLoader(pipeline: pipeline, flow: flow, options: options, logger: logger).run(url: url, sink: sink)
                box.consumerFinished = true
            } catch {
                box.consumerFinished = true
                throw error
            }
            while !box.producerExited { Thread.sleep(forTimeInterval: 0.01) }
            let produced: ProduceReport
            switch box.get()! {
            case let .success(report): produced = report
            case let .failure(error): throw error
            }
            var summary = Summary(flow: flow.sink.name)
            summary.rowsRead = produced.rowsRead
            summary.rowsSent = produced.rowsSent
            summary.loaded = load.loaded
            summary.duplicates = load.duplicates
            summary.deadLettered = load.deadLettered
            summary.lag = load.lag
            summary.fieldsNotLoaded = flow.transforms.last?.unknownFields ?? []
            summary.interrupted = produced.interrupted || (load.interrupted && load.lag > 0)
            summary.mode = flow.sink.mode
            summary.elapsed = Date().timeIntervalSince(started)
            (summary.storedRows, summary.storedDeadLetters) = try storedCounts(fingerprint: produced.fingerprint, sink: sink)
            summary.check = try check(flow.sink, sink: sink)
            summaries.append(summary)
        }
        return summaries
    }

    /// Sends the source from its checkpoint, again when the producer fails (for example a
    /// broker restart that lost the topic: the new topic ID makes it start from the first
    /// record, and record ids make the re-sent rows harmless).
    func produceWithRetries(source: Source, flow: Flow, attempts: Int = 5, onChecked: (() -> Void)? = nil) -> Result<ProduceReport, Error> {
        var lastError: Error?
        for attempt in 1...attempts {
            if StopSignal.requested { break }
            do {
                let admin = try KafkaAdmin(settings: CSVProducer.kafkaSettings(flow.topic))
                if try admin.ensureTopic(flow.topic.name, partitions: flow.topic.partitions, replicationFactor: flow.topic.replicationFactor) {
                    logger.info("created topic \(flow.topic.name) again (the broker had lost it)")
                }
                let topicID = try admin.topicID(flow.topic.name)
                let store = try SourceCheckpointStore.forSource(source, topic: flow.topic, pipeline: pipeline, environment: environment, logger: logger)
                let producer = CSVProducer(source: source, topic: flow.topic, checkpoints: store,
                                           asNewSource: asNewSource || pipeline.onlyUpserts(topic: flow.topic.name), topicID: topicID, logger: logger)
                producer.onChecked = onChecked
                var report = try producer.run()
                // A topic that changed under the producer means some records may be gone.
                if try admin.topicID(flow.topic.name) != topicID {
                    throw KafkaError("topic \(flow.topic.name) was re-created while sending")
                }
                report.topicID = topicID
                return .success(report)
            } catch {
                lastError = error
                // Only Kafka trouble is worth another attempt; a missing file is not.
                guard error is KafkaError else { break }
                if attempt < attempts {
                    logger.info("producer: \(error); sending \(source.path) again from the start (attempt \(attempt + 1) of \(attempts))")
                    Thread.sleep(forTimeInterval: Double(attempt))
                }
            }
        }
        return .failure(lastError ?? KafkaError("producer stopped"))
    }

    /// How many rows and dead letters of one source file the database holds.
    func storedCounts(fingerprint: String, sink: PostgresSink) throws -> (Int, Int) {
        let b = pipeline.bookkeeping
        guard let id = try sink.query("SELECT \"source_id\" FROM \(SQL.qualified(Bookkeeping.schema, b.sources)) WHERE \"fingerprint\" = $1", [fingerprint]).first?[0] ?? nil,
              let sid = Int64(id) else {
            let dead = try sink.query("SELECT count(*) FROM \(SQL.qualified(Bookkeeping.schema, b.deadLetters)) WHERE \"source_fingerprint\" = $1", [fingerprint])
            return (0, Int(dead.first?[0] ?? "0") ?? 0)
        }
        let target = SQL.qualified(sink.sink.dbSchema, sink.sink.table)
        let rows = try sink.query("SELECT count(*) FROM \(target) WHERE \(SQL.quote(Sink.recordColumn)) BETWEEN $1 AND $2",
                                  [String(sid << 40), String((sid + 1) << 40 - 1)])
        let dead = try sink.query("SELECT count(*) FROM \(SQL.qualified(Bookkeeping.schema, b.deadLetters)) WHERE \"source_fingerprint\" = $1", [fingerprint])
        return (Int(rows.first?[0] ?? "0") ?? 0, Int(dead.first?[0] ?? "0") ?? 0)
    }

    /// The seed's own check: row count and AVG/MIN/MAX of the last floating-point column
    /// (`medv` for housing).
    func check(_ sink: Sink, sink writer: PostgresSink) throws -> String {
        let table = SQL.qualified(sink.dbSchema, sink.table)
        if let column = sink.schema.columns.last(where: { $0.type.family == .float || $0.type.family == .decimal }) {
            let c = SQL.quote(column.name)
            let sql = "SELECT COUNT(*), AVG(\(c)), MIN(\(c)), MAX(\(c)) FROM \(table)"
            let row = try writer.query(sql + ";").first ?? []
            let values = row.map { $0 ?? "NULL" }
            return "\(sql)\n  count=\(values[0])  avg=\(Self.short(values[1]))  min=\(values[2])  max=\(values[3])"
        }
        let sql = "SELECT COUNT(*) FROM \(table)"
        return "\(sql)\n  count=\(try writer.query(sql).first?[0] ?? "?")"
    }

    static func short(_ value: String) -> String {
        guard let d = Double(value) else { return value }
        return String(format: "%.4f", d)
    }

    public static func format(_ s: Summary) -> String {
        let rate = s.elapsed > 0 ? Double(s.rowsRead) / s.elapsed : 0
        var lines = [
            "Summary (\(s.flow)):",
            "  rows read:          \(s.rowsRead)",
            "  rows sent:          \(s.rowsSent)",
            s.mode == .upsert ? "  rows inserted:      \(s.loaded)" : "  rows loaded:        \(s.loaded)",
            s.mode == .upsert ? "  rows updated:       \(s.duplicates)  (a row with the same key existed, or a later version in the same batch replaced it)"
                : "  already loaded:     \(s.duplicates)  (re-sent records skipped by record id)",
            "  dead-lettered:      \(s.deadLettered)",
            s.mode == .upsert
                ? "  reconciled:         \(s.reconciled ? "yes" : "NO") (\(s.rowsRead) read = \(s.loaded) inserted + \(s.duplicates) updated + \(s.deadLettered) dead-lettered)"
                : "  reconciled:         \(s.reconciled ? "yes" : "NO") (\(s.rowsRead) read = \(s.storedRows) rows + \(s.storedDeadLetters) dead letters stored for this file)",
            String(format: "  elapsed:            %.2f s  (%.0f rows/s)", s.elapsed, rate),
        ]
        if !s.fieldsNotLoaded.isEmpty {
            lines.insert("  fields not loaded:  \(s.fieldsNotLoaded.count) (\(s.fieldsNotLoaded.joined(separator: ", "))): no column takes them; see on_unknown_field", at: lines.count - 1)
        }
        if let check = s.check { lines.append("Check: " + check) }
        if s.interrupted {
            lines.append("Interrupted: \(s.rowsRead) records read so far\(s.lag > 0 ? ", \(s.lag) sent but not yet stored" : ""). "
                + "Run the same command again to finish: records already stored are skipped by record id.")
        }
        return lines.joined(separator: "\n")
    }
}

/// The producer thread's result, read by the consumer loop.
final class ProducerBox: @unchecked Sendable {
    private let lock = NSLock()
    private var result: Result<ProduceReport, Error>?
    private var finished = false
    private var exited = false
    private var sourceChecked = false
    /// The producer checked its file against the checkpoint and is about to send.
    var checked: Bool {
        get { lock.lock(); defer { lock.unlock() }; return sourceChecked }
        set { lock.lock(); sourceChecked = newValue; lock.unlock() }
    }
    func set(_ r: Result<ProduceReport, Error>) { lock.lock(); result = r; lock.unlock() }
    func clear() { lock.lock(); result = nil; lock.unlock() }
    func get() -> Result<ProduceReport, Error>? { lock.lock(); defer { lock.unlock() }; return result }
    var consumerFinished: Bool {
        get { lock.lock(); defer { lock.unlock() }; return finished }
        set { lock.lock(); finished = newValue; lock.unlock() }
    }
    var producerExited: Bool {
        get { lock.lock(); defer { lock.unlock() }; return exited }
        set { lock.lock(); exited = newValue; lock.unlock() }
    }
}
