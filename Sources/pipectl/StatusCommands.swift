import ArgumentParser
import CoreMetrics
import Foundation
import KafkaAdapter
import PipelineCompiler
import PipelineRuntime
import PostgresAdapter
import StatusServer

/// The process's metrics backend, bootstrapped once by the commands that move data, so the
/// runtime's swift-metrics calls reach Prometheus (`--http`) and the progress totals.
enum Observability {
    // Unsafe: set once by the command on the main thread before the runtime starts its threads.
    nonisolated(unsafe) private static var installed: PipelineMetricsFactory?
    nonisolated(unsafe) private static var progress: ProgressReporter?

    /// The progress line on standard error, until the process exits; off with `--quiet`.
    static func startProgress() {
        guard progress == nil, !CLILog.quiet else { return }
        let reporter = ProgressReporter(totals: factory().totals)
        reporter.start()
        progress = reporter
    }

    /// Clears the progress line before a summary is printed.
    static func stopProgress() {
        progress?.stop()
    }

    static func factory() -> PipelineMetricsFactory {
        if let installed { return installed }
        let factory = PipelineMetricsFactory()
        MetricsSystem.bootstrap(factory)
        installed = factory
        return factory
    }
}

/// `--http HOST:PORT` for `run` and `consume`.
struct HTTPOption: ParsableArguments {
    @Option(
        name: .customLong("http"),
        help: ArgumentHelp(
            "Serve Prometheus /metrics, /status (JSON) and a status page at HOST:PORT, e.g. 127.0.0.1:9464 (off by default).",
            valueName: "host:port"))
    var address: String?

    /// Starts the progress line, and the server when asked (nil otherwise).
    func start(_ pipeline: Pipeline) throws -> StatusServer? {
        Observability.startProgress()
        let factory = Observability.factory()
        guard let address else { return nil }
        let (host, port) = try StatusServer.parseAddress(address)
        let server = StatusServer(pipeline: pipeline, plan: PipelineCompiler.Plan(pipeline).text, factory: factory)
        try server.start(host: host, port: port)
        printError("status page: http://\(host.contains(":") ? "[\(host)]" : host):\(port)/  (metrics: /metrics, JSON: /status)")
        return server
    }
}

struct Status: PipectlCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show where each sink's consumer stands: stored and end offsets, lag, rows per source, dead letters by reason.",
        discussion:
            "Exit status 0 when healthy, 6 when unhealthy (a topic missing, records waiting with no commit for 60 s), 1 when the database cannot be read.")
    @OptionGroup var spec: SpecArgument
    @OptionGroup var logging: LogOptions
    @Flag(help: "Print the report as JSON (the same as the status server's /status).") var json = false
    @Flag(help: "Print it again every 2 seconds until Ctrl-C.") var watch = false

    func run() throws {
        logging.bootstrap()
        let pipeline = try compile(spec)
        try KafkaLibrary.checkVersion()
        if watch { StopSignal.install() }
        var report: PipelineStatusReport
        repeat {
            report = try PipelineStatusReader.read(pipeline)
            if watch, isatty(STDOUT_FILENO) != 0 { print("\u{1B}[H\u{1B}[2J", terminator: "") }
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(report), as: UTF8.self))
            } else {
                print(PipelineStatusReader.format(report))
            }
            if watch { for _ in 0..<20 where !StopSignal.requested { Thread.sleep(forTimeInterval: 0.1) } }
        } while watch && !StopSignal.requested
        if !report.isHealthy { throw CommandFailure.unhealthy }
    }
}
