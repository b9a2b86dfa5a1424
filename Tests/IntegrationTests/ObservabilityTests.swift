import Foundation
import PipectlTestSupport
import XCTest

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// `--http`: Prometheus /metrics, the status page in a real headless Chromium, and
/// `pipectl status --json`, all checked against what the database holds.
final class ObservabilityTests: XCTestCase {
    func get(_ url: String) -> String? {
        guard let data = try? Data(contentsOf: URL(string: url)!) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    /// The value of one sample line of a Prometheus exposition, e.g. `pipectl_rows_written_total{sink="x"}`.
    func sample(_ exposition: String, _ series: String) -> Double? {
        for line in exposition.split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.dropFirst(series.count + 1))
        }
        return nil
    }

    func chromium() -> String? {
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Runs Chromium headless on `url`; returns its standard output.
    func headless(_ arguments: [String], _ url: String) throws -> String {
        let browser = try XCTUnwrap(chromium(), "chromium is not installed (make deps installs it)")
        let arguments =
            ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--user-data-dir=\(NSTemporaryDirectory())pipectl-chromium-\(getpid())"]
            + arguments + [url]
        // Standard output only: Chromium's standard error is its own log.
        return try ChildProcess.run(browser, arguments, separateStandardError: true).output
    }

    func testMetricsPageAndStatusMatchTheDatabaseDuringAndAfterARun() throws {
        var lines = repeatedHousingCSV(100_000).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        for i in [10, 50_000, 99_990] { lines[i] = lines[i].replacingOccurrences(of: "^[^,]*", with: "bad", options: .regularExpression) }
        let p = try TestPipeline.written("it_observe", csv: lines.joined(separator: "\n"), sourceBatch: 500, sinkBatch: 1000)
        let port = TestStack.freePort()
        let base = "http://127.0.0.1:\(port)"
        let run = try startPipectl(["run", p.specPath, "--follow", "--http", "127.0.0.1:\(port)"])
        defer { run.kill9() }
        let db = try TestStack.connect()

        // During the run: counters move, and never count more rows than the table holds
        // (rows are counted once durable).
        waitFor("rows during the run", timeout: 120) { (try? db.int("SELECT count(*) FROM \"it_observe\"")) ?? 0 > 5_000 }
        let during = try XCTUnwrap(get(base + "/metrics"), run.output())
        let tableNow = try db.int("SELECT count(*) FROM \"it_observe\"")
        let writtenDuring = try XCTUnwrap(sample(during, "pipectl_rows_written_total{sink=\"it_observe_db\"}") ?? 0)
        XCTAssertLessThanOrEqual(Int(writtenDuring), tableNow)
        XCTAssertTrue(during.contains("# HELP pipectl_records_consumed_total "), during)

        // The page in a real browser, during the run (once the status report has rows).
        waitFor("/status to show rows", timeout: 30) { get(base + "/status")?.contains("\"rows\" : 0") == false }
        let dom = try headless(["--dump-dom", "--virtual-time-budget=2000"], base + "/")
        XCTAssertTrue(dom.contains("pipeline <code>it_observe</code>"), dom)
        XCTAssertTrue(dom.contains("id=\"rows-stored\""), dom)
        XCTAssertTrue(dom.contains("id=\"lag\""), dom)
        XCTAssertTrue(dom.contains("<svg id=\"rate-chart\""), dom)
        let shot = TestStack.repoRoot + "/.build/status-page.png"
        _ = try headless(["--screenshot=\(shot)", "--window-size=1100,1300"], base + "/")
        XCTAssertGreaterThan((try? FileManager.default.attributesOfItem(atPath: shot)[.size] as? Int) ?? 0, 10_000, "screenshot at \(shot)")

        // After the load: the counters equal the database's counts.
        waitFor("every row", timeout: 120) {
            (try? db.int("SELECT count(*) FROM \"it_observe\"")) == 99_997
                && (try? db.int("SELECT count(*) FROM \"pipectl\".\"it_observe__dead_letters\"")) == 3
        }
        var after = ""
        waitFor("the counters to catch up", timeout: 120) {
            after = get(base + "/metrics") ?? ""
            return sample(after, "pipectl_rows_written_total{sink=\"it_observe_db\"}") == 99_997
        }
        XCTAssertEqual(sample(after, "pipectl_rows_written_total{sink=\"it_observe_db\"}"), 99_997, after)
        XCTAssertEqual(sample(after, "pipectl_dead_letters_total{sink=\"it_observe_db\",stage=\"cast\"}"), 3, after)
        XCTAssertEqual(sample(after, "pipectl_records_consumed_total{topic=\"it_observe-data\"}"), 100_000, after)
        XCTAssertEqual(sample(after, "pipectl_records_produced_total{topic=\"it_observe-data\"}"), 100_000, after)
        XCTAssertEqual(sample(after, "pipectl_source_rows_read_total{source=\"it_observe_csv\"}"), 100_000, after)
        waitFor("lag 0", timeout: 120) { sample(get(base + "/metrics") ?? "", "pipectl_consumer_lag{topic=\"it_observe-data\",partition=\"0\"}") == 0 }

        // `status --json` agrees with the offsets table and the table.
        let status = try pipectl(["status", p.specPath, "--json"])
        XCTAssertEqual(status.status, 0, status.output)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(status.output.utf8)) as? [String: Any], status.output)
        XCTAssertEqual(json["health"] as? String, "healthy")
        let sink = try XCTUnwrap((json["sinks"] as? [[String: Any]])?.first)
        XCTAssertEqual(sink["rows"] as? Int, 99_997)
        let partition = try XCTUnwrap((sink["partitions"] as? [[String: Any]])?.first)
        let stored = try db.int("SELECT \"next_offset\" FROM \"pipectl\".\"it_observe__offsets\" WHERE \"partition\" = 0")
        XCTAssertEqual(partition["storedOffset"] as? Int, stored)
        XCTAssertEqual(partition["endOffset"] as? Int, 100_000)
        XCTAssertEqual(partition["lag"] as? Int, 0)
        let source = try XCTUnwrap((sink["sources"] as? [[String: Any]])?.first)
        XCTAssertEqual(source["rowsRead"] as? Int, 100_000)
        XCTAssertEqual(source["rows"] as? Int, 99_997)
        XCTAssertEqual(source["deadLetters"] as? Int, 3)
        XCTAssertEqual(source["reconciled"] as? Bool, true)
        let dead = try XCTUnwrap(sink["deadLetters"] as? [[String: Any]])
        XCTAssertEqual(dead.map { $0["count"] as? Int }, [3])
        XCTAssertEqual(dead.first?["reason"] as? String, "column 'crim': 'bad' is not a valid double precision")
        // The same report over HTTP (refreshed every 2 s).
        waitFor("/status to show the stored offset", timeout: 30) { get(base + "/status")?.contains("\"storedOffset\" : 100000") == true }

        run.send(SIGINT)
        XCTAssertTrue(run.wait(timeout: 30), run.output())
        XCTAssertEqual(run.terminationStatus, 3, run.output())  // finished, with dead letters
    }

    /// `status` on a pipeline whose topic is gone: unhealthy, exit status 6, the reason named.
    func testStatusIsUnhealthyWhenTheTopicIsMissing() throws {
        let p = try TestPipeline("it_status_gone", csv: repeatedHousingCSV(10))
        try p.write()
        XCTAssertEqual(try pipectl(["apply", p.specPath]).status, 0)
        let spec = try String(contentsOfFile: p.specPath, encoding: .utf8).replacingOccurrences(
            of: "name: it_status_gone-data", with: "name: it_status_gone-other"
        )
        .replacingOccurrences(of: "from: it_status_gone-data", with: "from: it_status_gone-other")
        try spec.write(toFile: p.specPath, atomically: true, encoding: .utf8)
        let status = try pipectl(["status", p.specPath])
        XCTAssertEqual(status.status, 6, status.output)
        XCTAssertTrue(status.output.contains("pipeline it_status_gone: unhealthy"), status.output)
        XCTAssertTrue(status.output.contains("problem: topic 'it_status_gone-other' does not exist on the broker"), status.output)
    }
}
