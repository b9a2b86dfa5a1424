import ArgumentParser
import Foundation
import KafkaAdapter
import LocalStack
import Logging
import PipelineCompiler
import PipelineRuntime
import PostgresAdapter
import RecordFormats

/// The front half of the commands that talk to Kafka: compile the spec, check the loaded
/// librdkafka and, for long-running ones, let Ctrl-C / SIGTERM finish the current batch.
func compileForKafka(_ spec: SpecArgument, handleSignals: Bool = true) throws -> Pipeline {
    let pipeline = try compile(spec)
    try KafkaLibrary.checkVersion()
    if handleSignals { StopSignal.install() }
    return pipeline
}

/// Every CSV source exists, is a regular file and is readable: checked before any topic is
/// created or any row sent, so a folder or a symlink loop is one line, not a half-made run.
func checkSourcesReadable(_ pipeline: Pipeline) throws {
    for source in pipeline.sources {
        do {
            try SourceFile.checkReadable(source.resolvedPath)
        } catch let error as SourceFile.Unreadable {
            throw ValidationError("source '\(source.name)': \(error)")
        }
    }
}

struct Run: PipectlCommand {
    static let configuration = CommandConfiguration(
        abstract: "Apply the plan (topics, tables) and run producer and consumer until every row is stored.")
    @OptionGroup var spec: SpecArgument
    @OptionGroup var logging: LogOptions
    @Flag(help: "Keep consuming after the source is exhausted (until Ctrl-C).") var follow = false
    @OptionGroup var deadLetters: DeadLetterPolicy
    @OptionGroup var http: HTTPOption
    @Flag(help: "If a source file changed where it was already sent, load it as a new file instead of stopping.")
    var asNewSource = false

    func run() throws {
        logging.bootstrap()
        let pipeline = try compileForKafka(spec)
        try checkSourcesReadable(pipeline)
        let server = try http.start(pipeline)
        defer { server?.stop() }
        let runner = PipelineRunner(pipeline: pipeline)
        runner.asNewSource = asNewSource
        let summaries = try runner.run(follow: follow)
        Observability.stopProgress()
        for s in summaries { print(PipelineRunner.format(s)) }
        if summaries.contains(where: \.interrupted) { throw CommandFailure.interrupted }
        if let s = summaries.first(where: { !$0.reconciled }) {
            throw ValidationError(
                "sink '\(s.flow)': the load does not reconcile (\(s.rowsRead) read, \(s.storedRows) rows and \(s.storedDeadLetters) dead letters stored for this file); run again, or see docs/reliability.md"
            )
        }
        try deadLetters.check(deadLetters: summaries.map { max($0.deadLettered, $0.storedDeadLetters) }.reduce(0, +), spec: spec.file)
    }
}

struct Apply: PipectlCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create the topics and tables a spec needs (idempotent; never drops or narrows anything).")
    @OptionGroup var spec: SpecArgument
    @OptionGroup var logging: LogOptions

    func run() throws {
        logging.bootstrap()
        let pipeline = try compileForKafka(spec, handleSignals: false)
        let runner = PipelineRunner(pipeline: pipeline)
        for flow in pipeline.flows { _ = try runner.prepare(flow) }
        print(
            "applied: \(pipeline.topics.count) topic\(pipeline.topics.count == 1 ? "" : "s"), \(pipeline.sinks.count) table\(pipeline.sinks.count == 1 ? "" : "s") and the bookkeeping tables"
        )
    }
}

struct Produce: PipectlCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run only the producer: send the CSV sources to their topics, each from where an earlier send stopped.")
    @OptionGroup var spec: SpecArgument
    @OptionGroup var logging: LogOptions
    @OptionGroup var deadLetters: DeadLetterPolicy
    @Flag(help: "If a source file changed where it was already sent, send it as a new file instead of stopping.")
    var asNewSource = false

    func run() throws {
        logging.bootstrap()
        let pipeline = try compileForKafka(spec)
        try checkSourcesReadable(pipeline)
        Observability.startProgress()
        defer { Observability.stopProgress() }
        var errorRecords = 0
        try SourceSend.run(pipeline, asNewSource: asNewSource, environment: ProcessInfo.processInfo.environment) { sent in
            let (source, report) = (sent.source, sent.report)
            let skipped = report.rowsSkipped > 0 ? "; \(report.rowsSkipped) sent before" : ""
            print("Produced \(report.rowsSent) records from \(source.path) to \(sent.topic.name) (\(report.rowsSentAsErrors) as error records\(skipped))")
            if report.interrupted {
                print(
                    "Interrupted before the end of \(source.path); run `pipectl produce \(spec.file)` again to send the rest (it resumes from its checkpoint).")
                throw CommandFailure.interrupted
            }
            errorRecords += report.rowsSentAsErrors
        }
        // Error records (malformed CSV rows) will be dead-lettered by the consumer.
        try deadLetters.check(deadLetters: errorRecords, spec: spec.file)
    }
}

struct Consume: PipectlCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run only the consumer: load the topics into PostgreSQL (several can share one consumer group).")
    @OptionGroup var spec: SpecArgument
    @OptionGroup var logging: LogOptions
    @Flag(help: "If the topic was deleted and created again, start it from the beginning instead of stopping.")
    var restartOnNewTopic = false
    @Option(help: "Exit after this many seconds without new records (default: run until Ctrl-C).")
    var idleExit: Double?
    @Option(help: "The sink to load, when the spec has several (each sink is its own consumer group).")
    var sink: String?
    @OptionGroup var deadLetters: DeadLetterPolicy
    @OptionGroup var http: HTTPOption

    func run() throws {
        logging.bootstrap()
        let pipeline = try compileForKafka(spec)
        let flow: Flow
        if let name = sink {
            guard let chosen = pipeline.flows.first(where: { $0.sink.name == name }) else {
                throw ValidationError("no sink '\(name)' in this spec; its sinks: \(pipeline.flows.map(\.sink.name).joined(separator: ", "))")
            }
            flow = chosen
        } else {
            guard pipeline.flows.count == 1, let only = pipeline.flows.first else {
                throw ValidationError(
                    "consume runs one sink at a time; this spec has \(pipeline.flows.count) (\(pipeline.flows.map(\.sink.name).joined(separator: ", "))): choose one with --sink"
                )
            }
            flow = only
        }
        let server = try http.start(pipeline)
        defer { server?.stop() }
        let sink = try PipelineRunner(pipeline: pipeline).prepare(flow)
        Logger(label: "pipectl.consumer").info(
            "topic \(flow.topic.name) at \(flow.topic.brokers) -> table \(SQL.qualified(flow.sink.dbSchema, flow.sink.table)) at \(ConnectionString.redacted(sink.url))"
        )
        var options = TopicLoader.Options()
        options.restartOnNewTopic = restartOnNewTopic
        options.idleExit = idleExit
        let report = try TopicLoader(pipeline: pipeline, flow: flow, options: options).run(url: sink.url, sink: sink)
        Observability.stopProgress()
        if flow.sink.mode == .upsert {
            print("Consumed \(report.consumed) records: \(report.loaded) inserted, \(report.duplicates) updated, \(report.deadLettered) dead-lettered")
        } else {
            print("Consumed \(report.consumed) records: \(report.loaded) loaded, \(report.duplicates) already loaded, \(report.deadLettered) dead-lettered")
        }
        if report.interrupted, report.lag > 0 {
            print("Interrupted with \(report.lag) records on the topic not yet stored; start `pipectl consume \(spec.file)` again to finish.")
            throw CommandFailure.interrupted
        }
        try deadLetters.check(deadLetters: report.deadLettered, spec: spec.file)
    }
}

struct Reset: PipectlCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Forget where consumers and producers stopped (the next run sends and reads everything again; stored rows are not loaded twice), or with --source delete everything one file loaded."
    )
    @OptionGroup var spec: SpecArgument
    @Flag(help: "Do not ask for confirmation.") var yes = false
    @Option(
        help: ArgumentHelp(
            "Delete the rows, dead letters and send checkpoint of this source file (its path or source name), so the next run loads it again.",
            valueName: "file"))
    var source: String?

    /// The spec's source named by `--source`: its name, its path as the spec writes it, or any
    /// path that leads to the same file.
    static func matchingSource(_ text: String, in pipeline: Pipeline) throws -> Source {
        func real(_ path: String) -> String? {
            guard let resolved = realpath(path, nil) else { return nil }
            defer { free(resolved) }
            return String(cString: resolved)
        }
        let given = real(text)
        if let found = pipeline.sources.first(where: { s in
            s.name == text || s.path == text || s.resolvedPath == text || (given != nil && real(s.resolvedPath) == given)
        }) {
            return found
        }
        let known = pipeline.sources.map { "\($0.path) (\($0.name))" }.joined(separator: ", ")
        throw ValidationError("\(text) is not a source of pipeline '\(pipeline.name)'; its sources are: \(known)")
    }

    func run() throws {
        let pipeline = try compile(spec)
        let environment = ProcessInfo.processInfo.environment
        if let text = source {
            let source = try Self.matchingSource(text, in: pipeline)
            if !yes {
                print(
                    "This deletes the rows, dead letters and send checkpoint that \(source.path) loaded into pipeline '\(pipeline.name)'; the next run loads it again. Continue? [y/N] ",
                    terminator: "")
                guard let answer = readLine(), ["y", "yes"].contains(answer.lowercased()) else {
                    print("nothing changed")
                    return
                }
            }
            let report = try PipelineReset.source(
                source, pipeline: pipeline, legacyFingerprint: try? Fingerprint.ofFile(atPath: source.resolvedPath),
                environment: environment)
            let rows = report.rows.map { "\($0.count) row\($0.count == 1 ? "" : "s") from \($0.table)" }.joined(separator: ", ")
            print(
                "reset source '\(source.name)' (\(source.path)): deleted \(rows.isEmpty ? "no rows" : rows), \(report.deadLetters) dead letter\(report.deadLetters == 1 ? "" : "s") and \(report.lives == 0 ? "no send checkpoint (it was never sent)" : "its send checkpoint"); the next run loads it again"
            )
            return
        }
        if !yes {
            print(
                "This forgets the stored offsets and send checkpoints of pipeline '\(pipeline.name)'; the next run reads topics from the start and sends every source again (rows already stored are not loaded twice). Continue? [y/N] ",
                terminator: "")
            guard let answer = readLine(), ["y", "yes"].contains(answer.lowercased()) else {
                print("nothing changed")
                return
            }
        }
        try PipelineReset.forgetPositions(pipeline: pipeline, environment: environment)
        print("reset pipeline '\(pipeline.name)': stored offsets and send checkpoints forgotten; rows already stored stay and are not loaded twice")
    }
}

struct DeadLetters: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dlq", abstract: "Inspect and replay dead-lettered rows.", subcommands: [List.self, Replay.self])

    struct List: PipectlCommand {
        static let configuration = CommandConfiguration(abstract: "Show dead-lettered rows with their reasons.")
        @OptionGroup var spec: SpecArgument
        @Option(help: "At most this many rows.") var limit = 50

        func run() throws {
            let pipeline = try compile(spec)
            let listings = try DeadLetterList.read(pipeline, limit: limit, environment: ProcessInfo.processInfo.environment)
            for listing in listings {
                // Several databases: say which one each table is in.
                let place = listings.count > 1 ? " at \(listing.database)" : ""
                print("\(listing.total) dead-lettered row\(listing.total == 1 ? "" : "s") in \(listing.table)\(place)")
                for e in listing.entries {
                    let partition = e.partition.map(String.init) ?? ""
                    let offset = e.offset.map(String.init) ?? ""
                    print(
                        "#\(e.id) [\(e.stage)] sink=\(e.sink) \(e.topic ?? "")[\(partition)]@\(offset) record=\(e.sourceOrdinal.map(String.init) ?? "") payload=\(e.payloadBytes.map(String.init) ?? "") bytes: \(e.reason)"
                    )
                }
            }
        }
    }

    struct Replay: PipectlCommand {
        static let configuration = CommandConfiguration(
            abstract: "Load dead-lettered rows again with the current spec; rows that now load leave the dead-letter table.")
        @OptionGroup var spec: SpecArgument

        func run() throws {
            let pipeline = try compile(spec)
            for flow in pipeline.flows {
                let url = try PipelineRunner.databaseURL(for: flow.sink, environment: ProcessInfo.processInfo.environment)
                let result = try DeadLetterReplay(pipeline: pipeline, flow: flow, url: url).run()
                print(
                    "replayed \(result.attempted) dead-lettered rows of sink '\(flow.sink.name)': \(result.loaded) loaded and removed, \(result.stillFailing) still failing"
                )
            }
        }
    }
}

struct Dev: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The embedded local stack: a Tansu Kafka broker and a private PostgreSQL.",
        subcommands: [Up.self, Down.self, Status.self, Env.self])

    static func stack() -> LocalStack {
        let env = ProcessInfo.processInfo.environment
        let root = env["PIPECTL_PROJECT_DIR"] ?? projectRoot(from: FileManager.default.currentDirectoryPath)
        return LocalStack(
            stateDir: env["PIPECTL_STATE_DIR"] ?? root + "/.pipectl", projectDir: root,
            kafkaPort: Int(env["PIPECTL_KAFKA_PORT"] ?? "") ?? 9092, pgPort: Int(env["PIPECTL_PG_PORT"] ?? "") ?? 55432)
    }

    /// The project folder, found the way git finds its root: the nearest folder, from `start`
    /// upwards, that holds the stack's state (`.pipectl/`), else the nearest that holds
    /// `pipelines/`, else `start` itself. So `pipectl dev …` works from any folder inside.
    static func projectRoot(from start: String) -> String {
        let fm = FileManager.default
        func nearest(holding name: String) -> String? {
            var dir = URL(fileURLWithPath: start).standardizedFileURL
            while true {
                var isDir: ObjCBool = false
                if fm.fileExists(atPath: dir.appendingPathComponent(name).path, isDirectory: &isDir), isDir.boolValue { return dir.path }
                let parent = dir.deletingLastPathComponent()
                if parent.path == dir.path { return nil }
                dir = parent
            }
        }
        return nearest(holding: ".pipectl") ?? nearest(holding: "pipelines") ?? start
    }

    struct Up: PipectlCommand {
        static let configuration = CommandConfiguration(abstract: "Start the broker and the database and wait until both answer.")
        func run() throws {
            let state = try Dev.stack().up()
            print("export KAFKA_BROKERS=\(state.kafkaBrokers) DATABASE_URL=\(state.databaseURL)")
        }
    }

    struct Down: PipectlCommand {
        static let configuration = CommandConfiguration(abstract: "Stop the stack (the database files are kept).")
        func run() throws { try Dev.stack().down() }
    }

    struct Status: PipectlCommand {
        static let configuration = CommandConfiguration(abstract: "Show whether the broker and the database are up.")
        /// Exit status 5 (`ExitStatus.unavailable`) when a server is down or the stack was never set up.
        func run() throws {
            let status = Dev.stack().status()
            status.lines.forEach { print($0) }
            if !status.isUp { throw CommandFailure.stackDown }
        }
    }

    struct Env: PipectlCommand {
        static let configuration = CommandConfiguration(abstract: "Print the environment that points pipectl at the stack.")
        func run() throws {
            guard let state = Dev.stack().loadState() else { throw ValidationError("no local stack: run `pipectl dev up` first") }
            print("export KAFKA_BROKERS=\(state.kafkaBrokers) DATABASE_URL=\(state.databaseURL)")
        }
    }
}

/// `plan --live`: the plan compared with the database. Exit status 2 when it refuses a change.
enum LivePlan {
    /// Prints the comparison (`LiveComparison`) under the plan.
    /// - Throws: `CommandFailure.planRefused` when a change is refused.
    static func show(_ pipeline: Pipeline) throws {
        print("\nLive comparison:")
        let entries = try LiveComparison.compare(pipeline, environment: ProcessInfo.processInfo.environment)
        for entry in entries {
            print(GeneratedText.comment("  \(SQL.qualified(entry.sink.dbSchema, entry.sink.table)) (\(entry.redactedURL)): \(entry.change)"))
        }
        let refused = entries.filter(\.isRefused).count
        if refused > 0 { throw CommandFailure.planRefused(changes: refused) }
    }
}
