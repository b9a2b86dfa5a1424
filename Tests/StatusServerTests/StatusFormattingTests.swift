import Foundation
import StatusServer
import XCTest

@testable import PipelineRuntime

/// The metric exposition, the status text and the status page, without a server.
final class StatusFormattingTests: XCTestCase {
    func report(lag: Int64? = 7) -> PipelineStatusReport {
        var sink = SinkStatus(
            sink: "orders_db", table: "\"public\".\"orders\"", topic: "orders-data", rows: 93,
            partitions: [], sources: [], deadLetters: [], lastCommitAt: "2026-11-29T10:00:00.000Z", ownerAgeSeconds: 12, lag: lag)
        sink.partitions = [
            PartitionStatus(partition: 0, storedOffset: 50, endOffset: 50, lag: 0),
            PartitionStatus(partition: 1, storedOffset: 43, endOffset: 50, lag: 7),
        ]
        sink.sources = [
            SourceStatus(source: "orders_csv", path: "../data/orders.csv", fingerprint: "ab", rows: 93, deadLetters: 1, rowsRead: 94, reconciled: true)
        ]
        sink.deadLetters = [DeadLetterCount(stage: "cast", reason: "column 'qty': 'x<y>' is not a valid integer", count: 1)]
        return PipelineStatusReport(pipeline: "orders", generatedAt: "2026-11-29T10:00:05.000Z", health: "healthy", problems: [], sinks: [sink])
    }

    func testMetricsAreExposedWithHelpAndLabels() {
        let factory = PipelineMetricsFactory()
        factory.makeCounter(label: RuntimeMetric.rowsWritten.rawValue, dimensions: [("sink", "orders_db")]).increment(by: 93)
        factory.makeCounter(label: RuntimeMetric.deadLetters.rawValue, dimensions: [("sink", "orders_db"), ("stage", "cast")]).increment(by: 1)
        factory.makeRecorder(label: RuntimeMetric.consumerLag.rawValue, dimensions: [("topic", "orders-data"), ("partition", "1")], aggregate: false).record(
            Int64(7))
        factory.makeRecorder(label: RuntimeMetric.commitDuration.rawValue, dimensions: [], aggregate: true).record(0.02)
        var buffer: [UInt8] = []
        factory.registry.emit(into: &buffer)
        let text = String(decoding: buffer, as: UTF8.self)
        XCTAssertTrue(
            text.contains(
                "# HELP pipectl_rows_written_total Rows inserted into the sink's table, counted once their commit is durable (label sink).\n# TYPE pipectl_rows_written_total counter\npipectl_rows_written_total{sink=\"orders_db\"} 93\n"
            ), text)
        XCTAssertTrue(text.contains("pipectl_dead_letters_total{sink=\"orders_db\",stage=\"cast\"} 1\n"), text)
        XCTAssertTrue(text.contains("# TYPE pipectl_consumer_lag gauge\npipectl_consumer_lag{topic=\"orders-data\",partition=\"1\"} 7.0\n"), text)
        XCTAssertTrue(text.contains("pipectl_commit_duration_seconds_bucket{le=\"0.025\"} 1\n"), text)
        XCTAssertTrue(text.contains("pipectl_commit_duration_seconds_bucket{le=\"0.01\"} 0\n"), text)
        XCTAssertEqual(factory.totals.sum(.rowsWritten), 93)
        XCTAssertEqual(factory.totals.sum(.consumerLag), 7)
        // Every metric pipectl defines has help text.
        for metric in RuntimeMetric.allCases { XCTAssertFalse(metric.help.isEmpty, metric.rawValue) }
    }

    func testStatusTextShowsEveryPartitionSourceAndReason() {
        XCTAssertEqual(
            PipelineStatusReader.format(report()),
            """
            pipeline orders: healthy  (2026-11-29T10:00:05.000Z)
            sink orders_db -> "public"."orders": 93 rows; topic orders-data, lag 7
              last commit: 2026-11-29T10:00:00.000Z; partitions claimed 12 s ago
              partition  stored offset  end offset  lag
                      0             50          50  0
                      1             43          50  7
              source orders_csv (../data/orders.csv): 94 read, 93 rows, 1 dead letters; reconciled
              dead letters by reason:
                1 × [cast] column 'qty': 'x<y>' is not a valid integer
            """)
    }

    func testStatusPageShowsTheNumbersChartsAndEscapesText() {
        let samples = [
            StatusSample(at: 0, rowsWritten: 0, lag: 100), StatusSample(at: 5, rowsWritten: 50, lag: 50), StatusSample(at: 10, rowsWritten: 93, lag: 7),
        ]
        let html = StatusPage.render(
            pipeline: "orders", report: report(), samples: samples,
            counters: [.recordsConsumed: 94, .rowsWritten: 93, .deadLetters: 1],
            plan: "Pipeline 'orders'\n  1. source <x>\n\nDDL (each statement idempotent):\nCREATE TABLE …")
        XCTAssertTrue(html.contains("<meta http-equiv=\"refresh\" content=\"5\">"))
        XCTAssertTrue(html.contains("<b id=\"rows-stored\">93</b>"), html)
        XCTAssertTrue(html.contains("<b id=\"records-consumed\">94</b>"), html)
        XCTAssertTrue(html.contains("<b id=\"lag\">7</b>"), html)
        XCTAssertTrue(html.contains("<b id=\"rows-per-second\">9</b>"), html)  // (93 - 50) / 5 s
        XCTAssertTrue(html.contains("<tr><td>1</td><td>43</td><td>50</td><td>7</td></tr>"), html)
        XCTAssertTrue(html.contains("column 'qty': 'x&lt;y&gt;' is not a valid integer"), html)
        XCTAssertTrue(html.contains("1. source &lt;x&gt;"), html)
        XCTAssertFalse(html.contains("CREATE TABLE"), "the DDL stays in `pipectl plan`")
        XCTAssertTrue(html.contains("<svg id=\"rate-chart\""), html)
        XCTAssertTrue(html.contains("<polyline"), html)
        XCTAssertFalse(html.contains("http://") || html.contains("https://") || html.contains("<script"), "no external assets")
    }

    func testHTTPAddressIsParsedOrRefusedWithOneLine() throws {
        XCTAssertEqual(try StatusServer.parseAddress("127.0.0.1:9464").host, "127.0.0.1")
        XCTAssertEqual(try StatusServer.parseAddress("0.0.0.0:9464").port, 9464)
        XCTAssertEqual(try StatusServer.parseAddress("[::1]:80").host, "::1")
        XCTAssertThrowsError(try StatusServer.parseAddress("9464")) { XCTAssertEqual("\($0)", "--http '9464': expected HOST:PORT, e.g. 127.0.0.1:9464") }
        XCTAssertThrowsError(try StatusServer.parseAddress(":9464")) { XCTAssertEqual("\($0)", "--http ':9464': the host is missing, e.g. 127.0.0.1:9464") }
        XCTAssertThrowsError(try StatusServer.parseAddress("localhost:99999"))
    }
}
