import Foundation
import KafkaAdapter
import Logging
import PipelineCompiler
import PostgresAdapter

/// `pipectl run`: applies the plan (topics, tables), runs producer and consumer together and
/// prints the summary.
public final class PipelineRunner: @unchecked Sendable {  // `asNewSource` is set before `run`; the threads only read
    let pipeline: Pipeline
    let environment: [String: String]
    let logger: Logger

    /// A source file changed where it was already sent is sent as a new source instead of
    /// refused (`--as-new-source`).
    public var asNewSource = false

    /// - Parameters:
    /// - environment: where `DATABASE_URL` is read for sinks without a `url`.
    /// - logger: progress and problems, one line each (label `pipectl.run`).
    public init(pipeline: Pipeline, environment: [String: String] = ProcessInfo.processInfo.environment, logger: Logger = Logger(label: "pipectl.run")) {
        self.pipeline = pipeline
        self.environment = environment
        self.logger = logger
    }

    /// One sink's result of a `run`: what was read, sent, stored and dead-lettered, and whether
    /// the stored rows reconcile with the records read (`format` prints it).
    public struct Summary: Sendable {
        /// The sink's name (`sinks[].name`): one summary per sink.
        public var flow: String
        /// Records in the source files feeding the sink's topic, counted to their end (records sent by
        /// earlier runs included).
        public var rowsRead = 0
        /// Records this run delivered to the topic (0 for a file already sent).
        public var rowsSent = 0
        /// Rows this run inserted into the table (durable).
        public var loaded = 0
        /// Insert mode: records this run consumed that were already stored (skipped by record id, e.g.
        /// re-sent after a crash). Upsert mode: rows this run updated.
        public var duplicates = 0
        /// Records this run set aside in the dead-letter table.
        public var deadLettered = 0
        /// Seconds from the start of `run` to the summary (wall clock); `format` divides `rowsRead` by it.
        public var elapsed: Double = 0
        /// A check query on the target table and its result, two lines: `COUNT/AVG/MIN/MAX` of the last
        /// float or numeric column, else `COUNT(*)`. `run` always sets it; nil means no check line.
        public var check: String?
        /// Rows of this source file in the table, and its dead letters, counted in the database.
        public var storedRows = 0
        /// Dead letters of the source files stored for this sink (by fingerprint), any run's.
        public var storedDeadLetters = 0
        /// Ctrl-C / SIGTERM stopped the run before the whole file was sent, or before every
        /// sent record was stored (`lag` records were left on the topic).
        public var interrupted = false
        /// Records left on the topic past the stored offsets when the consumer stopped (> 0 only when
        /// interrupted).
        public var lag: Int64 = 0
        /// Header fields no column takes (`on_unknown_field`): read but not loaded.
        public var fieldsNotLoaded: [String] = []
        /// Dead letters of this file: this run's, or stored by an earlier one.
        public var hasDeadLetters: Bool { deadLettered > 0 || storedDeadLetters > 0 }
        /// Upserts keep one row per key, so there every record read must be an insert, an
        /// update or a dead letter; inserts must each be a stored row of this file.
        public var reconciled: Bool {
            mode == .upsert ? rowsRead == loaded + duplicates + deadLettered || loadedEarlier : rowsRead == storedRows + storedDeadLetters
        }
        /// Upsert: this run sent and stored nothing, and the table holds the file's rows or dead
        /// letters: an earlier run loaded it (a second `run` of an unchanged file).
        public var loadedEarlier: Bool {
            rowsSent == 0 && loaded + duplicates + deadLettered == 0 && !interrupted && (storedRows + storedDeadLetters > 0 || rowsRead == 0)
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
    /// - Returns: the sink's writer, with the compiler's column list (`Sink.columnList`).
    public func prepare(_ flow: Flow) throws -> PostgresSink {
        guard !flow.transforms.isEmpty else { throw PostgresError("sink '\(flow.sink.name)' has no transform") }
        let url = try Self.databaseURL(for: flow.sink, environment: environment)
        let sink = try PostgresSink(pipeline: pipeline, flow: flow, columnList: flow.sink.columnList, url: url)
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

    /// Runs the whole DAG: each topic's source files are sent once (`Pipeline.sends`, one
    /// producer thread per topic, files in `from:` order), and each sink consumes its topic in
    /// its own consumer group on a thread of its own, with its own `PostgresSink`. Without
    /// `follow` every consumer stops at the end offsets its topic's producer reported.
    /// - Returns: one summary per sink, in declaration order.
    /// - Throws: the first error of a producer or consumer, once every thread has ended.
    public func run(follow: Bool = false) throws -> [Summary] {
        // A sink whose topic no source of this spec feeds is `consume`'s alone (plan says so):
        // with nothing sent there is no end for a bounded run to stop at.
        let flows = pipeline.flows.filter { !$0.sources.isEmpty }
        for orphan in pipeline.flows where orphan.sources.isEmpty {
            logger.warning(
                "sink '\(orphan.sink.name)' reads topic '\(orphan.topic.name)', which no source of this spec feeds: run leaves it alone; load it with `pipectl consume \(pipeline.file) --sink \(orphan.sink.name)`"
            )
        }
        if flows.isEmpty {
            throw PipelineRunError.nothingToSend(
                "no sink of this spec reads a topic that one of its sources feeds, so run has nothing to send; load the topics with `pipectl consume`")
        }
        let started = Date()
        var sinks: [PostgresSink] = []
        for flow in flows {
            let sink = try prepare(flow)
            let chain = ([flow.topic.name] + flow.transforms.map(\.name)).joined(separator: " -> ")
            logger.info(
                "\(flow.sources.map(\.path).joined(separator: ", ")) -> \(chain) at \(flow.topic.brokers) -> table \(SQL.qualified(flow.sink.dbSchema, flow.sink.table)) at \(ConnectionString.redacted(sink.url)) (group \(flow.consumerGroup))"
            )
            sinks.append(sink)
        }
        // One production per produced topic, each file sent once however many sinks read it.
        var productions: [String: TopicProduction] = [:]
        var order: [TopicProduction] = []
        for send in pipeline.sends where productions[send.topic.name] == nil {
            let production = TopicProduction(
                topic: send.topic, sources: pipeline.sends.filter { $0.topic.name == send.topic.name }.map(\.source),
                consumers: flows.filter { $0.topic.name == send.topic.name }.count)
            productions[send.topic.name] = production
            order.append(production)
        }
        let results = ConsumerResults(count: flows.count)
        var firstError: Error?
        var consumersStarted = 0
        for production in order {
            // Started here, not on the thread: the lifecycle is sending before anyone can wait on it.
            let first = production.handle(.start)
            // The consumers start at once (`ProducerLifecycle`): their group join (about 1 s on
            // Tansu) overlaps the first file's checkpoint check and snapshot. A consumer started
            // and stopped while it joins was seen to hold Tansu's group back for the next run,
            // so when the file is refused each one leaves only after its join completed
            // (`TopicLoader.Options.joinBeforeLeaving`).
            if first.contains(.startConsumers) {
                for (index, flow) in flows.enumerated() where flow.topic.name == production.topic.name {
                    startConsumer(flow, sink: Handoff(sinks[index]), index: index, production: production, follow: follow, results: results)
                    consumersStarted += 1
                }
            }
            startProducer(production, actions: first.filter { $0 != .startConsumers })
            // A topic no sink reads is sent all the same (as `plan` shows); nothing waits on it.
            if production.consumerCount == 0 { production.consumersFinished(count: 0) }
        }
        let loads = results.waitForAll(started: consumersStarted)
        for production in order { production.waitForExit() }
        for production in order {
            if let error = production.error { firstError = firstError ?? error }
        }
        for load in loads { if case .failure(let error)? = load { firstError = firstError ?? error } }
        if let firstError { throw firstError }

        var summaries: [Summary] = []
        for (index, flow) in flows.enumerated() {
            guard let production = productions[flow.topic.name], case .success(let load)? = loads[index] else { continue }
            let produced = production.reports.compactMap { $0 }
            let sink = sinks[index]
            var summary = Summary(flow: flow.sink.name)
            summary.rowsRead = produced.reduce(0) { $0 + $1.rowsRead }
            summary.rowsSent = produced.reduce(0) { $0 + $1.rowsSent }
            summary.loaded = load.loaded
            summary.duplicates = load.duplicates
            summary.deadLettered = load.deadLettered
            summary.lag = load.lag
            summary.fieldsNotLoaded = flow.transforms.first?.unknownFields ?? []
            summary.mode = flow.sink.mode
            summary.elapsed = Date().timeIntervalSince(started)
            for report in produced {
                let (rows, dead) = try storedCounts(fingerprint: report.fingerprint, sink: sink)
                summary.storedRows += rows
                summary.storedDeadLetters += dead
            }
            // A stop before every record read was stored is an interruption, also when the
            // consumer held no partitions at the time (no lag it could see).
            summary.interrupted =
                produced.contains(where: \.interrupted) || produced.count < production.sources.count
                || (load.interrupted && (load.lag > 0 || !summary.reconciled))
            summary.check = try check(flow.sink, sink: sink)
            summaries.append(summary)
        }
        return summaries
    }

    /// The producer thread of one topic: performs `ProducerLifecycle`'s actions (send a file,
    /// watch the topic's ID every 0.5 s until its consumers are done) and feeds back the results.
    /// - Parameter actions: what the lifecycle's `start` asked for, the consumers' start aside.
    func startProducer(_ production: TopicProduction, actions first: [ProducerLifecycle.Action]) {
        let topic = production.topic
        let thread = Thread {
            var actions = first
            let admin = try? KafkaAdmin(settings: CSVProducer.kafkaSettings(topic))
            while !actions.isEmpty {
                let action = actions.removeFirst()
                switch action {
                case .send(let index, let again):
                    if StopSignal.requested {
                        actions += production.handle(.stopRequested)
                        continue
                    }
                    let source = production.sources[index]
                    if again { self.logger.info("topic \(topic.name) was lost before every record was stored; sending \(source.path) again") }
                    let result = self.produceWithRetries(source: source, topic: topic)
                    switch result {
                    case .success(let report):
                        production.store(report, at: index)
                        actions += production.handle(.sourceSent(endOffsets: report.endOffsets, topicID: report.topicID ?? ""))
                    case .failure(let error):
                        production.store(error)
                        actions += production.handle(.sendFailed(message: "\(error)"))
                    }
                case .checkTopicLater:
                    // Records sent but not yet stored can vanish with the topic (a broker that
                    // keeps topics in memory restarted): until the consumers are done, watch it.
                    guard production.waitWhileWatching(seconds: 0.5) else { continue }
                    if StopSignal.requested {
                        actions += production.handle(.stopRequested)
                        continue
                    }
                    guard let admin else { continue }
                    // Only an answer counts: the topic is absent, or has this ID. A broker that
                    // does not answer (restarting, busy) says nothing about the topic, so the
                    // check is made again later instead of sending every file again (review R9).
                    let current: String?
                    do {
                        current = try admin.partitionCount(topic.name) == nil ? nil : try admin.topicID(topic.name)
                    } catch {
                        actions.append(.checkTopicLater)
                        continue
                    }
                    actions += production.handle(.topicChecked(topicID: current))
                case .startConsumers, .publish, .withdraw, .fail:
                    break  // the production wakes its waiters on every transition
                case .exit:
                    actions = []
                }
            }
            production.markExited()
        }
        thread.stackSize = 8 << 20
        thread.start()
    }

    /// One sink's consumer thread: consumes until its topic's producer's end offsets are stored
    /// (or Ctrl-C with `follow`), then tells the production it is done.
    func startConsumer(_ flow: Flow, sink: Handoff<PostgresSink>, index: Int, production: TopicProduction, follow: Bool, results: ConsumerResults) {
        let thread = Thread {
            var options = TopicLoader.Options()
            options.restartOnNewTopic = true
            // Started before the file is checked: a refused file must not end a join midway.
            options.joinBeforeLeaving = 5
            if !follow { options.until = { production.consumerBound } }
            let result = Result {
                try TopicLoader(pipeline: self.pipeline, flow: flow, options: options, logger: self.logger).run(url: sink.value.url, sink: sink.value)
            }
            production.consumersFinished(count: 1)
            results.set(result, at: index)
        }
        thread.stackSize = 8 << 20
        thread.start()
    }

    /// Sends the source from its checkpoint, again when the producer fails (for example a
    /// broker restart that lost the topic: the new topic ID makes it start from the first
    /// record, and record ids make the re-sent rows harmless).
    func produceWithRetries(source: Source, topic: Topic) -> Result<ProduceReport, Error> {
        Result {
            try SourceSend.withRetries(
                source, to: topic, pipeline: pipeline, asNewSource: asNewSource, environment: environment, logger: logger,
                createdTopic: { logger.info("created topic \(topic.name) again (the broker had lost it)") })
        }
    }

    /// How many rows and dead letters of one source file the database holds.
    func storedCounts(fingerprint: String, sink: PostgresSink) throws -> (Int, Int) {
        let b = pipeline.bookkeeping
        // This sink's dead letters only: in a fan-out every sink of the topic reads the same
        // file, and each reconciles against its own table.
        let deadLettersOfSink =
            "SELECT count(*) FROM \(SQL.qualified(Bookkeeping.schema, b.deadLetters)) WHERE \"source_fingerprint\" = $1 AND \"sink\" = $2"
        guard
            let id = try sink.query("SELECT \"source_id\" FROM \(SQL.qualified(Bookkeeping.schema, b.sources)) WHERE \"fingerprint\" = $1", [fingerprint])
                .first?[0] ?? nil,
            let sid = Int64(id)
        else {
            let dead = try sink.query(deadLettersOfSink, [fingerprint, sink.sink.name])
            return (0, Int(dead.first?[0] ?? "0") ?? 0)
        }
        let target = SQL.qualified(sink.sink.dbSchema, sink.sink.table)
        let rows = try sink.query(
            "SELECT count(*) FROM \(target) WHERE \(SQL.quote(Sink.recordColumn)) BETWEEN $1 AND $2",
            [String(sid << 40), String((sid + 1) << 40 - 1)])
        let dead = try sink.query(deadLettersOfSink, [fingerprint, sink.sink.name])
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

    /// The summary as printed after a run: one line per count, the reconciliation, the check
    /// query and, if interrupted, how to finish.
    public static func format(_ s: Summary) -> String {
        let rate = s.elapsed > 0 ? Double(s.rowsRead) / s.elapsed : 0
        var lines = [
            "Summary (\(s.flow)):",
            "  rows read:          \(s.rowsRead)",
            "  rows sent:          \(s.rowsSent)",
            s.mode == .upsert ? "  rows inserted:      \(s.loaded)" : "  rows loaded:        \(s.loaded)",
            s.mode == .upsert
                ? "  rows updated:       \(s.duplicates)  (a row with the same key existed, or a later version in the same batch replaced it)"
                : "  already loaded:     \(s.duplicates)  (re-sent records skipped by record id)",
            "  dead-lettered:      \(s.deadLettered)",
            s.mode == .upsert && s.loadedEarlier
                ? "  reconciled:         yes (nothing sent: loaded by an earlier run; \(s.storedRows) rows + \(s.storedDeadLetters) dead letters of this file stored)"
                : s.mode == .upsert
                    ? "  reconciled:         \(s.reconciled ? "yes" : "NO") (\(s.rowsRead) read = \(s.loaded) inserted + \(s.duplicates) updated + \(s.deadLettered) dead-lettered)"
                    : "  reconciled:         \(s.reconciled ? "yes" : "NO") (\(s.rowsRead) read = \(s.storedRows) rows + \(s.storedDeadLetters) dead letters stored for this file)",
            String(format: "  elapsed:            %.2f s  (%.0f rows/s)", s.elapsed, rate),
        ]
        if !s.fieldsNotLoaded.isEmpty {
            lines.insert(
                "  fields not loaded:  \(s.fieldsNotLoaded.count) (\(s.fieldsNotLoaded.joined(separator: ", "))): no column takes them; see on_unknown_field",
                at: lines.count - 1)
        }
        if let check = s.check { lines.append("Check: " + check) }
        if s.interrupted {
            lines.append(
                "Interrupted: \(s.rowsRead) records read so far\(s.lag > 0 ? ", \(s.lag) sent but not yet stored" : ""). "
                    + "Run the same command again to finish: records already stored are skipped by record id.")
        }
        return lines.joined(separator: "\n")
    }
}

/// One produced topic while `run` works: its `ProducerLifecycle`, the files' reports, and a
/// condition signalled on every transition, on which the consumers' start, the watch interval
/// and the end of the run wait (no polling).
final class TopicProduction: @unchecked Sendable {  // every var is read and written under `condition`
    let topic: Topic
    let sources: [Source]
    /// Sinks consuming the topic in this run.
    let consumerCount: Int
    private let condition = NSCondition()
    private var lifecycle: ProducerLifecycle
    private var _reports: [ProduceReport?]
    private var _error: Error?
    private var exited = false
    private var consumersLeft: Int

    init(topic: Topic, sources: [Source], consumers: Int) {
        self.topic = topic
        self.sources = sources
        consumerCount = consumers
        consumersLeft = consumers
        lifecycle = ProducerLifecycle(sourceCount: sources.count)
        _reports = Array(repeating: nil, count: sources.count)
    }

    /// Changes under the lock, then wakes every waiter.
    private func locked<T>(_ body: () -> T) -> T {
        condition.lock()
        defer {
            condition.broadcast()
            condition.unlock()
        }
        return body()
    }

    private func reading<T>(_ body: () -> T) -> T {
        condition.lock()
        defer { condition.unlock() }
        return body()
    }

    /// Applies `event` to the lifecycle and wakes every waiter.
    func handle(_ event: ProducerLifecycle.Event) -> [ProducerLifecycle.Action] { locked { lifecycle.handle(event) } }
    func store(_ report: ProduceReport, at index: Int) { locked { _reports[index] = report } }
    func store(_ error: Error) { locked { _error = error } }
    func markExited() { locked { exited = true } }
    var reports: [ProduceReport?] { reading { _reports } }
    var error: Error? { reading { _error } }
    /// `TopicLoader.Options.until`: the end offsets once every file is delivered.
    var consumerBound: (offsets: [Int32: Int64], topicID: String?)? { reading { lifecycle.consumerBound } }

    /// `count` consumers returned; the last one ends the watch.
    func consumersFinished(count: Int) {
        locked {
            consumersLeft -= count
            if consumersLeft <= 0 { _ = lifecycle.handle(.consumersFinished) }
        }
    }

    /// Waits `seconds` while the lifecycle is watching the topic; false when it stopped
    /// watching meanwhile (the consumers finished).
    func waitWhileWatching(seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        condition.lock()
        defer { condition.unlock() }
        while case .watching = lifecycle.state, Date() < deadline { _ = condition.wait(until: deadline) }
        if case .watching = lifecycle.state { return true }
        return false
    }

    func waitForExit() {
        condition.lock()
        defer { condition.unlock() }
        while !exited { condition.wait() }
    }
}

/// The consumer threads' results, by flow index; `waitForAll` waits on a condition.
final class ConsumerResults: @unchecked Sendable {  // every var is read and written under `condition`
    private let condition = NSCondition()
    private var results: [Result<LoadReport, Error>?]
    private var done = 0

    init(count: Int) { results = Array(repeating: nil, count: count) }

    func set(_ result: Result<LoadReport, Error>, at index: Int) {
        condition.lock()
        results[index] = result
        done += 1
        condition.broadcast()
        condition.unlock()
    }

    /// Waits until `started` consumers have set their result; returns every slot.
    func waitForAll(started: Int) -> [Result<LoadReport, Error>?] {
        condition.lock()
        defer { condition.unlock() }
        while done < started { condition.wait() }
        return results
    }
}

/// A value lent to one other thread: the sender uses it again only after that thread reported
/// its result (ordered by `ConsumerResults`' condition), so one thread at a time touches it.
final class Handoff<Value>: @unchecked Sendable {  // one thread at a time, see above
    let value: Value
    init(_ value: Value) { self.value = value }
}

/// Why `run` cannot start.
public enum PipelineRunError: Error, CustomStringConvertible {
    /// Every sink reads a topic without a source in the spec (`consume` loads those).
    case nothingToSend(String)

    /// The message as it is: one sentence pointing to `pipectl consume`.
    public var description: String {
        switch self {
        case .nothingToSend(let message): message
        }
    }
}
