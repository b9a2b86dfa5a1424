import Foundation
import PipelineRuntime

/// One point of the status page's charts, taken every `StatusServer.sampleInterval` seconds.
public struct StatusSample: Sendable, Equatable {
    /// Seconds since the server started.
    public var at: Double
    /// Rows written so far (durable inserts and updates).
    public var rowsWritten: Int64
    /// Records on the topic past the stored offsets, all partitions.
    public var lag: Int64

    /// Memberwise: `at` in seconds since the server started, counts in rows and records.
    public init(at: Double, rowsWritten: Int64, lag: Int64) {
        self.at = at
        self.rowsWritten = rowsWritten
        self.lag = lag
    }
}

/// The HTML status page a person watches: a pure function of the data, so it is tested
/// without a server. No external assets; it reloads itself every 5 s.
public enum StatusPage {
    /// - Parameters:
    ///   - report: the latest `pipectl status` report (nil before the first one is read).
    ///   - samples: oldest first, at most the last 10 minutes.
    ///   - counters: current totals by metric (records consumed, rows written, dead letters).
    ///   - plan: the pipeline's stage graph as `pipectl plan` prints it.
    public static func render(
        pipeline: String, report: PipelineStatusReport?, samples: [StatusSample],
        counters: [RuntimeMetric: Int64], plan: String
    ) -> String {
        let rates = ratesPerSecond(samples)
        let currentRate = rates.last?.value ?? 0
        let lag = report?.sinks.compactMap(\.lag).reduce(0, +) ?? samples.last?.lag ?? 0
        var html = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
            <title>pipectl: \(escape(pipeline))</title>
            <style>
            body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
            h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
            .cards { display: flex; gap: 1em; flex-wrap: wrap; }
            .card { border: 1px solid #ccc; border-radius: 6px; padding: 0.6em 1em; min-width: 9em; }
            .card b { display: block; font-size: 1.6em; }
            table { border-collapse: collapse; } td, th { border: 1px solid #ddd; padding: 0.25em 0.7em; text-align: right; }
            th { background: #f4f4f4; } td.text { text-align: left; }
            .healthy { color: #1a7f37; } .unhealthy { color: #cf222e; }
            pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; }
            svg { border: 1px solid #ddd; background: #fff; }
            </style></head><body>
            <h1>pipeline <code>\(escape(pipeline))</code>: <span id="health" class="\(report?.health ?? "healthy")">\(escape(report?.health ?? "starting"))</span></h1>

            """
        for problem in report?.problems ?? [] { html += "<p class=\"unhealthy\">\(escape(problem))</p>\n" }
        html += """
            <div class="cards">
            <div class="card">records consumed<b id="records-consumed">\(counters[.recordsConsumed] ?? 0)</b></div>
            <div class="card">rows stored<b id="rows-stored">\((counters[.rowsWritten] ?? 0) + (counters[.rowsUpdated] ?? 0))</b></div>
            <div class="card">already loaded<b id="already-loaded">\(counters[.recordsAlreadyLoaded] ?? 0)</b></div>
            <div class="card">dead letters<b id="dead-letters">\(counters[.deadLetters] ?? 0)</b></div>
            <div class="card">rows/s<b id="rows-per-second">\(Int(currentRate.rounded()))</b></div>
            <div class="card">lag (records)<b id="lag">\(lag)</b></div>
            </div>
            <h2>Rows stored per second, last 10 minutes</h2>
            \(chart(rates.map { ($0.at, $0.value) }, id: "rate-chart"))
            <h2>Consumer lag (records), last 10 minutes</h2>
            \(chart(samples.map { ($0.at, Double($0.lag)) }, id: "lag-chart"))

            """
        for sink in report?.sinks ?? [] {
            html += "<h2>Sink <code>\(escape(sink.sink))</code> &rarr; <code>\(escape(sink.table))</code>: \(sink.rows) rows</h2>\n"
            html += "<p>topic <code>\(escape(sink.topic))</code>; last commit \(escape(sink.lastCommitAt ?? "none"))</p>\n"
            html += "<table id=\"partitions-\(escape(sink.sink))\"><tr><th>partition</th><th>stored offset</th><th>end offset</th><th>lag</th></tr>\n"
            for p in sink.partitions {
                html +=
                    "<tr><td>\(p.partition)</td><td>\(p.storedOffset)</td><td>\(p.endOffset.map(String.init) ?? "?")</td><td>\(p.lag.map(String.init) ?? "?")</td></tr>\n"
            }
            html += "</table>\n"
            if sink.deadLetters.isEmpty {
                html += "<p>No dead letters.</p>\n"
            } else {
                html += "<h2>Dead letters by reason</h2><table><tr><th>count</th><th>stage</th><th>reason</th></tr>\n"
                for d in sink.deadLetters {
                    html += "<tr><td>\(d.count)</td><td class=\"text\">\(escape(d.stage))</td><td class=\"text\">\(escape(d.reason))</td></tr>\n"
                }
                html += "</table>\n"
            }
        }
        // The stage graph and topics of `pipectl plan`, without its DDL.
        let graph = plan.components(separatedBy: "\nDDL (").first ?? plan
        html += "<h2>Pipeline</h2>\n<pre id=\"plan\">\(escape(graph))</pre>\n</body></html>\n"
        return html
    }

    /// Rows per second between consecutive samples.
    static func ratesPerSecond(_ samples: [StatusSample]) -> [(at: Double, value: Double)] {
        guard samples.count > 1 else { return [] }
        return zip(samples, samples.dropFirst()).map { a, b in
            (b.at, b.at > a.at ? Double(b.rowsWritten - a.rowsWritten) / (b.at - a.at) : 0)
        }
    }

    /// A line chart as inline SVG: x = time, y = value from 0 to the maximum.
    static func chart(_ points: [(Double, Double)], id: String, width: Double = 600, height: Double = 140) -> String {
        guard let first = points.first, let last = points.last, points.count > 1 else {
            return "<svg id=\"\(id)\" width=\"\(Int(width))\" height=\"\(Int(height))\"><text x=\"10\" y=\"20\">collecting data…</text></svg>"
        }
        let maxY = max(points.map(\.1).max() ?? 1, 1)
        let span = max(last.0 - first.0, 1)
        let left = 50.0
        let bottom = height - 20
        let coordinates = points.map { x, y in
            String(format: "%.1f,%.1f", left + (x - first.0) / span * (width - left - 10), bottom - y / maxY * (bottom - 10))
        }.joined(separator: " ")
        return """
            <svg id="\(id)" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))">
            <line x1="\(left)" y1="\(bottom)" x2="\(width - 10)" y2="\(bottom)" stroke="#999"/>
            <text x="4" y="16" font-size="11">\(Int(maxY.rounded()))</text><text x="4" y="\(bottom)" font-size="11">0</text>
            <text x="\(left)" y="\(height - 4)" font-size="11">\(Int(span.rounded())) s</text>
            <polyline fill="none" stroke="#0969da" stroke-width="2" points="\(coordinates)"/>
            </svg>
            """
    }

    static func escape(_ text: String) -> String {
        var out = ""
        for c in text.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            default:
                // No raw control characters in the page (names and reasons come from users' files).
                if c.value < 0x20 && c != "\n" && c != "\t" { out += "&#\(c.value);" } else { out.unicodeScalars.append(c) }
            }
        }
        return out
    }
}
