import Foundation

/// Collapses bursts of the same log line, so a broker that is down gives one line and a count
/// instead of hundreds: the first line of a kind is logged; repeats within `window` seconds are
/// counted and reported once, as `<first line> (repeated 37 more times in 10 s)`, when the
/// window has passed and the line comes again, or at `flush`.
///
/// Lines are "the same" when they differ only in numbers (`after 0ms` / `after 1ms`).
public final class RepeatCollapser: @unchecked Sendable {  // mutable state under `lock`
    /// Seconds during which repeats of a line are counted instead of logged.
    public let window: Double
    // NSLock-guarded: librdkafka logs from its own threads.
    private let lock = NSLock()
    private var seen: [String: (first: String, since: Date, repeats: Int)] = [:]

    /// - Parameter window: seconds, 10 by default.
    public init(window: Double = 10) { self.window = window }

    /// The lines to log now for `line`, seen at `now`.
    public func offer(_ line: String, now: Date = Date()) -> [String] {
        let key = Self.shape(line)
        lock.lock()
        defer { lock.unlock() }
        if let entry = seen[key], now.timeIntervalSince(entry.since) < window {
            seen[key]?.repeats += 1
            return []
        }
        var out: [String] = []
        if let entry = seen[key], entry.repeats > 0 { out.append(Self.summary(entry.first, entry.repeats, now.timeIntervalSince(entry.since))) }
        seen[key] = (line, now, 0)
        out.append(line)
        return out
    }

    /// Summaries of the repeats not reported yet (at exit).
    public func flush(now: Date = Date()) -> [String] {
        lock.lock()
        defer { lock.unlock() }
        let out = seen.values.filter { $0.repeats > 0 }.sorted { $0.since < $1.since }
            .map { Self.summary($0.first, $0.repeats, now.timeIntervalSince($0.since)) }
        seen.removeAll()
        return out
    }

    static func summary(_ line: String, _ repeats: Int, _ seconds: Double) -> String {
        "\(line) (repeated \(repeats) more time\(repeats == 1 ? "" : "s") in \(Int(seconds.rounded())) s)"
    }

    /// The line with every run of digits replaced by `#`.
    static func shape(_ line: String) -> String {
        var out = ""
        var inDigits = false
        for c in line.unicodeScalars {
            if ("0"..."9").contains(c) {
                if !inDigits { out += "#" }
                inDigits = true
            } else {
                out.unicodeScalars.append(c)
                inDigits = false
            }
        }
        return out
    }
}
