import Foundation
import Hummingbird
import Logging
import PipelineCompiler
import PipelineRuntime
import Prometheus

/// `--http HOST:PORT` on `run` and `consume`: a Hummingbird server with
/// - `GET /metrics`: Prometheus text exposition (format 0.0.4) of `RuntimeMetric`s;
/// - `GET /status`: the same JSON as `pipectl status --json`;
/// - `GET /`: the status page (`StatusPage`).
///
/// Chart samples are taken every `sampleInterval` seconds from the metric totals (no I/O).
/// The status report (it queries PostgreSQL and the broker) is read only when `/status` or `/`
/// is asked for, at most every `reportMaxAge` seconds, on a thread of its own: nobody watching
/// costs the run nothing but the metric updates.
public final class StatusServer: @unchecked Sendable {  // every var is read and written under `lock`
    /// Seconds between two chart samples; the page keeps the last 300 (10 minutes).
    public static let sampleInterval = 2.0
    static let reportMaxAge = 2.0
    /// 10 minutes of samples.
    static let sampleCount = 300

    let pipeline: Pipeline
    let plan: String
    let factory: PipelineMetricsFactory
    let environment: [String: String]
    private let lock = NSLock()
    private var samples: [StatusSample] = []
    private var report: PipelineStatusReport?
    private var reportAt = Date.distantPast
    private var task: Task<Void, Error>?
    private var stopped = false
    private let started = Date()

    /// - Parameters:
    /// - plan: the text of `pipectl plan` (`Plan.text`); the page shows it up to its DDL.
    /// - factory: the bootstrapped metrics backend, whose totals feed the charts and counters.
    /// - environment: where `DATABASE_URL` is looked up when a sink has no `url`.
    public init(
        pipeline: Pipeline, plan: String, factory: PipelineMetricsFactory,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) {
        self.pipeline = pipeline
        self.plan = plan
        self.factory = factory
        self.environment = environment
    }

    /// `HOST:PORT` (`127.0.0.1:9464`, `0.0.0.0:9464`, `[::1]:9464`) -> host and port.
    /// - Throws: `StatusServerError` naming the value when it is not of that form.
    public static func parseAddress(_ text: String) throws -> (host: String, port: Int) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            throw StatusServerError(message: "--http '\(text)': expected HOST:PORT, e.g. 127.0.0.1:9464")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw StatusServerError(message: "--http '\(text)': the host is missing, e.g. 127.0.0.1:\(port)") }
        return (host, port)
    }

    /// Starts listening; returns once the port is bound.
    /// - Throws: `StatusServerError` when the address cannot be bound (in use, not local).
    public func start(host: String, port: Int) throws {
        let router = Router()
        router.get("metrics") { [factory] _, _ -> Response in
            var buffer: [UInt8] = []
            factory.registry.emit(into: &buffer)
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: buffer)))
        }
        router.get("status") { [self] _, _ -> Response in
            await refreshReport()
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let body =
                (try? encoder.encode(
                    currentReport() ?? PipelineStatusReport(pipeline: pipeline.name, generatedAt: "", health: "starting", problems: [], sinks: []))) ?? Data()
            return Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
        }
        router.get("/") { [self] _, _ -> Response in
            await refreshReport()
            let html = page()
            return Response(
                status: .ok, headers: [.contentType: "text/html; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: html)))
        }
        var logger = Logger(label: "pipectl.http")
        logger.logLevel = .critical
        let ready = DispatchSemaphore(value: 0)
        let failure = LockedBox<Error?>(nil)
        let app = Application(
            router: router, configuration: .init(address: .hostname(host, port: port), serverName: "pipectl"),
            onServerRunning: { _ in ready.signal() }, logger: logger)
        let server = Task {
            do {
                try await app.run()
            } catch {
                failure.set(error)
                ready.signal()
                throw error
            }
        }
        lock.withLock { task = server }
        if ready.wait(timeout: .now() + 10) == .timedOut {
            throw StatusServerError(message: "--http \(host):\(port): the server did not start within 10 s")
        }
        if let error = failure.get() {
            throw StatusServerError(message: "--http \(host):\(port): cannot listen there: \(error)")
        }
        let sampler = Thread { [self] in sampleLoop() }
        sampler.stackSize = 1 << 20
        sampler.start()
    }

    /// Stops the sampling thread (within `sampleInterval`) and cancels the server task; the port is
    /// released once Hummingbird has shut down.
    public func stop() {
        let server = lock.withLock {
            stopped = true
            return task
        }
        server?.cancel()
    }

    /// Reads the report again when it is older than `reportMaxAge`, off the server's threads.
    func refreshReport() async {
        let fresh = lock.withLock { Date().timeIntervalSince(reportAt) < Self.reportMaxAge }
        if fresh { return }
        let report: PipelineStatusReport? = await withCheckedContinuation { continuation in
            DispatchQueue.global().async { [self] in
                continuation.resume(returning: try? PipelineStatusReader.read(pipeline, environment: environment))
            }
        }
        lock.withLock {
            if let report { self.report = report }
            reportAt = Date()
        }
    }

    func currentReport() -> PipelineStatusReport? {
        lock.lock()
        defer { lock.unlock() }
        return report
    }

    func page() -> String {
        lock.lock()
        let (report, samples) = (self.report, self.samples)
        lock.unlock()
        var counters: [RuntimeMetric: Int64] = [:]
        for metric in RuntimeMetric.allCases { counters[metric] = factory.totals.sum(metric) }
        return StatusPage.render(pipeline: pipeline.name, report: report, samples: samples, counters: counters, plan: plan)
    }

    private func sampleLoop() {
        while true {
            lock.lock()
            let done = stopped
            lock.unlock()
            if done { return }
            let sample = StatusSample(
                at: Date().timeIntervalSince(started),
                rowsWritten: factory.totals.sum(.rowsWritten) + factory.totals.sum(.rowsUpdated),
                lag: factory.totals.sum(.consumerLag))
            lock.lock()
            samples.append(sample)
            if samples.count > Self.sampleCount { samples.removeFirst(samples.count - Self.sampleCount) }
            lock.unlock()
            Thread.sleep(forTimeInterval: Self.sampleInterval)
        }
    }
}

/// An `--http` address that cannot be parsed or bound; `message` names the value and the fix.
public struct StatusServerError: Error, CustomStringConvertible {
    /// One line for the terminal, starting with `--http` and the address given.
    public var message: String
    /// `message`, as it is.
    public var description: String { message }
}

/// A value shared between the server task and the thread that starts it.
final class LockedBox<Value>: @unchecked Sendable {  // `value` is read and written under `lock`
    private let lock = NSLock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func get() -> Value {
        lock.lock()
        defer { lock.unlock() }
        return value
    }
    func set(_ new: Value) {
        lock.lock()
        value = new
        lock.unlock()
    }
}
