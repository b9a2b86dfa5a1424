import Foundation
import PipelineRuntime

/// The one-line progress of `run`, `produce` and `consume`, made from the metric totals:
/// `sent 120000 · stored 98000 · dead letters 3 · 25400 rows/s · lag 22000 · 61% read · ETA 4 s`.
public enum ProgressLine {
    /// - Parameters:
    ///   - now, previous: totals now and at the last line, `seconds` apart (for rows/s).
    public static func render(now: ProgressCounts, previous: ProgressCounts?, seconds: Double) -> String {
        var parts: [String] = []
        if now.sent > 0 || now.bytesTotal > 0 { parts.append("sent \(now.sent)") }
        parts.append("stored \(now.stored)")
        parts.append("dead letters \(now.deadLetters)")
        let rate = previous.map { seconds > 0 ? Double(now.stored - $0.stored) / seconds : 0 } ?? 0
        parts.append("\(Int(rate.rounded())) rows/s")
        parts.append("lag \(now.lag)")
        if now.bytesTotal > 0 {
            let fraction = min(1, Double(now.bytesRead) / Double(now.bytesTotal))
            parts.append("\(Int((fraction * 100).rounded(.down)))% read")
            if let previous, fraction < 1, seconds > 0, now.bytesRead > previous.bytesRead {
                let bytesPerSecond = Double(now.bytesRead - previous.bytesRead) / seconds
                parts.append("ETA \(Int((Double(now.bytesTotal - now.bytesRead) / bytesPerSecond).rounded(.up))) s")
            }
        }
        return parts.joined(separator: " · ")
    }
}

/// The numbers a progress line shows.
public struct ProgressCounts: Sendable, Equatable {
    /// Records delivered to Kafka (`pipectl_records_produced_total`, all topics).
    public var sent: Int64 = 0
    /// Records whose rows are durable in PostgreSQL: inserted, updated (upsert) or found already
    /// loaded, all sinks.
    public var stored: Int64 = 0
    /// Records set aside in the dead-letter tables, once durable, all sinks and stages.
    public var deadLetters: Int64 = 0
    /// Records on the topics past the stored next offsets, summed over topics and partitions.
    public var lag: Int64 = 0
    /// How far the producers have read into their source files, in bytes, all sources.
    public var bytesRead: Int64 = 0
    /// Sizes of the source files being sent, in bytes (0: nothing is being sent, no `%` or ETA).
    public var bytesTotal: Int64 = 0

    /// Explicit counts (tests, and `render`'s inputs); every count defaults to 0.
    public init(sent: Int64 = 0, stored: Int64 = 0, deadLetters: Int64 = 0, lag: Int64 = 0, bytesRead: Int64 = 0, bytesTotal: Int64 = 0) {
        self.sent = sent
        self.stored = stored
        self.deadLetters = deadLetters
        self.lag = lag
        self.bytesRead = bytesRead
        self.bytesTotal = bytesTotal
    }

    /// Reads the current sums from the metric totals.
    public init(_ totals: MetricTotals) {
        sent = totals.sum(.recordsProduced)
        stored = totals.sum(.rowsWritten) + totals.sum(.rowsUpdated) + totals.sum(.recordsAlreadyLoaded)
        deadLetters = totals.sum(.deadLetters)
        lag = totals.sum(.consumerLag)
        bytesRead = totals.sum(.sourceBytesRead)
        bytesTotal = totals.sum(.sourceSize)
    }
}

/// Prints the progress line on standard error while a command runs: redrawn in place every
/// half second on a terminal, one plain line every 10 s otherwise (logs, CI).
public final class ProgressReporter: @unchecked Sendable {  // `stopped` and `thread` under `lock`; the rest immutable
    let totals: MetricTotals
    let terminal: Bool
    private let lock = NSLock()
    private var stopped = false
    private var thread: Thread?

    /// `terminal`: redraw one line in place every 0.5 s (standard error is a TTY by default) rather
    /// than print a line every 10 s.
    public init(totals: MetricTotals, terminal: Bool = isatty(STDERR_FILENO) != 0) {
        self.totals = totals
        self.terminal = terminal
    }

    /// Starts the printing thread; the first line appears after one interval. Call once.
    public func start() {
        let interval = terminal ? 0.5 : 10.0
        let thread = Thread { [self] in
            var previous: ProgressCounts?
            var last = Date()
            while true {
                let deadline = Date().addingTimeInterval(interval)
                while Date() < deadline {
                    if isStopped { return }
                    Thread.sleep(forTimeInterval: 0.1)
                }
                let now = ProgressCounts(totals)
                let line = ProgressLine.render(now: now, previous: previous, seconds: Date().timeIntervalSince(last))
                previous = now
                last = Date()
                FileHandle.standardError.write(Data((terminal ? "\r\u{1B}[K" + line : line + "\n").utf8))
            }
        }
        thread.stackSize = 1 << 20
        lock.withLock { self.thread = thread }
        thread.start()
    }

    var isStopped: Bool {
        lock.lock()
        defer { lock.unlock() }
        return stopped
    }

    /// Stops and clears the line (on a terminal).
    public func stop() {
        lock.lock()
        stopped = true
        lock.unlock()
        if terminal { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
    }
}
