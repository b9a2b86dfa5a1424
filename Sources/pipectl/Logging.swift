import ArgumentParser
import Foundation
import KafkaAdapter
import Logging
import PipelineRuntime

/// `--quiet`, `--verbose`, `--log-format` for the commands that talk to servers. Diagnostics go
/// to standard error through swift-log; results (summaries, plans, lists) stay on standard output.
struct LogOptions: ParsableArguments {
    @Flag(name: .shortAndLong, help: "Only warnings and errors on standard error.") var quiet = false
    @Flag(name: .shortAndLong, help: "Also detail: every micro-batch sent, librdkafka's informational lines.") var verbose = false
    @Option(help: "Diagnostics as 'text' (one line each) or 'json' (one object per line).") var logFormat: LogFormat = .text

    enum LogFormat: String, ExpressibleByArgument, CaseIterable { case text, json }

    var level: Logger.Level { verbose ? .debug : quiet ? .warning : .info }

    /// Installs the handler (once per process) and routes librdkafka's log through it, with
    /// repeats collapsed.
    func bootstrap() {
        CLILog.install(level: level, format: logFormat)
    }
}

enum CLILog {
    // Unsafe: both are set in `main`, before any thread that logs is started.
    nonisolated(unsafe) private static var installed = false
    /// `--quiet` was given: no progress line either.
    nonisolated(unsafe) static var quiet = false
    static let kafkaRepeats = RepeatCollapser(window: 10)

    static func install(level: Logger.Level, format: LogOptions.LogFormat) {
        guard !installed else { return }
        installed = true
        // The progress line is for people: not with --quiet, nor among JSON log lines.
        quiet = level > .info || format == .json
        LoggingSystem.bootstrap { label in CLILogHandler(label: label, logLevel: level, json: format == .json) }
        let kafka = Logger(label: "librdkafka")
        KafkaLog.handler = { level, facility, message in
            // librdkafka's syslog levels: its errors are mostly transient connection trouble that
            // pipectl retries and reports itself, so they are warnings here.
            let mapped: Logger.Level = level <= 2 ? .error : level <= 4 ? .warning : level <= 6 ? .debug : .trace
            guard mapped >= kafka.logLevel else { return }
            for line in kafkaRepeats.offer("librdkafka \(facility): \(message)") { kafka.log(level: mapped, "\(line)") }
        }
        atexit { for line in CLILog.kafkaRepeats.flush() { Logger(label: "librdkafka").warning("\(line)") } }
    }
}

/// One line per message on standard error: `warning: …`, `error: …`, plain text for info, or a
/// JSON object (`time`, `level`, `label`, `message` and the metadata).
struct CLILogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level
    let json: Bool
    var metadata: Logger.Metadata = [:]

    init(label: String, logLevel: Logger.Level, json: Bool) {
        self.label = label
        self.logLevel = logLevel
        self.json = json
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        write(level: event.level, message: event.message, metadata: event.metadata)
    }

    func log(
        level: Logger.Level, message: Logger.Message, metadata explicit: Logger.Metadata?, source: String,
        file: String, function: String, line: UInt
    ) {
        write(level: level, message: message, metadata: explicit)
    }

    private func write(level: Logger.Level, message: Logger.Message, metadata explicit: Logger.Metadata?) {
        var all = metadata
        if let explicit { all.merge(explicit) { _, new in new } }
        let text: String
        if json {
            var object: [String: String] = [
                "time": ISO8601DateFormatter().string(from: Date()), "level": level.rawValue,
                "label": label, "message": message.description,
            ]
            for (k, v) in all { object[k] = v.description }
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
            text = String(decoding: data, as: UTF8.self)
        } else {
            let prefix: String
            switch level {
            case .info, .notice: prefix = ""
            case .critical: prefix = "error: "
            default: prefix = "\(level.rawValue): "
            }
            let meta = all.isEmpty ? "" : " " + all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            text = prefix + message.description + meta
        }
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }
}
