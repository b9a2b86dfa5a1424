import Foundation
import PipectlTestSupport
import XCTest

/// The documented exit statuses (docs/operations.md, "Exit codes"): a run never looks like
/// success when it is not.
final class ExitCodeTests: XCTestCase {
    /// A file with one row that cannot be cast: `run`, `consume` and `produce` finish with status 3
    /// unless `--allow-dead-letters` is given; the good rows land either way.
    func testDeadLettersGiveStatus3UnlessAllowed() throws {
        let rows = Array(housingRows.prefix(20))
        var bad = rows
        bad[4] = bad[4].replacingOccurrences(of: "^[^,]*", with: "abc", options: .regularExpression)
        var p = try TestPipeline.written("it_exit3", csv: ([housingHeader] + bad).joined(separator: "\n") + "\n")
        let run = try pipectl(["run", p.specPath])
        XCTAssertEqual(run.status, 3, run.output)
        XCTAssertTrue(run.output.contains("dead-lettered:      1"), run.output)
        XCTAssertTrue(
            run.output.contains("finished with 1 dead-lettered row: see `pipectl dlq list \(p.specPath)` (exit status 3; --allow-dead-letters exits 0)"),
            run.output)
        // Run again: nothing left to send, but the file's dead letter is still there: status 3,
        // or 0 when dead letters are allowed.
        let again = try pipectl(["run", p.specPath])
        XCTAssertEqual(again.status, 3, again.output)
        let allowed = try pipectl(["run", p.specPath, "--allow-dead-letters"])
        XCTAssertEqual(allowed.status, 0, allowed.output)
        XCTAssertTrue(allowed.output.contains("rows sent:          0\n"), allowed.output)
        let db = try TestStack.connect()
        XCTAssertEqual(try db.int("SELECT count(*) FROM \"it_exit3\""), 19)
        XCTAssertEqual(
            try db.query("SELECT \"reason\" FROM \"pipectl\".\"it_exit3__dead_letters\"").map { $0[0] },
            ["column 'crim': 'abc' is not a valid double precision"])

        // A malformed CSV row is sent as an error record: produce says so with status 3 too.
        p.sourceBatch = 100
        try ([housingHeader] + rows + ["1,2,3"]).joined(separator: "\n").appending("\n").write(toFile: p.csvPath, atomically: true, encoding: .utf8)
        // (Changed where it was already sent, so it goes out as a new source.)
        let produce = try pipectl(["produce", p.specPath, "--as-new-source"])
        XCTAssertEqual(produce.status, 3, produce.output)
        XCTAssertTrue(produce.output.contains("(1 as error records)"), produce.output)
        let consume = try pipectl(["consume", p.specPath, "--idle-exit", "3"])
        XCTAssertEqual(consume.status, 3, consume.output)
        XCTAssertTrue(consume.output.contains("1 dead-lettered"), consume.output)
    }

    /// Ctrl-C in the middle of a `run`: status 4 and a line saying what to do; running again
    /// finishes and the table is exact.
    func testInterruptedRunGivesStatus4AndRunningAgainFinishes() throws {
        let p = try TestPipeline.written("it_exit4", csv: repeatedHousingCSV(200_000), sourceBatch: 500)
        let run = try startPipectl(["run", p.specPath])
        defer { run.kill9() }
        waitFor("the first rows") { (try? TestStack.connect().int("SELECT count(*) FROM \"it_exit4\"")) ?? 0 > 1_000 }
        run.send(SIGINT)
        guard run.wait(timeout: 60) else { return XCTFail("run did not stop: \(run.output())") }
        XCTAssertEqual(run.terminationStatus, 4, run.output())
        XCTAssertTrue(run.output().contains("Interrupted: "), run.output())
        XCTAssertTrue(run.output().contains("Run the same command again to finish: records already stored are skipped by record id."), run.output())
        let again = try pipectl(["run", p.specPath])
        XCTAssertEqual(again.status, 0, again.output)
        XCTAssertTrue(again.output.contains("reconciled:         yes"), again.output)
        let db = try TestStack.connect()
        XCTAssertEqual(try db.int("SELECT count(DISTINCT \"_pipectl_record\") FROM \"it_exit4\""), 200_000)
        XCTAssertEqual(try db.int("SELECT count(*) FROM \"it_exit4\""), 200_000)
        var tax = 0
        for i in 0..<200_000 { tax += Int(housingRows[i % housingRows.count].split(separator: ",")[9])! }
        XCTAssertEqual(try db.int("SELECT sum(\"tax\") FROM \"it_exit4\""), tax)
    }

    /// `dev status` exits 5 when the stack is not up.
    func testDevStatusGivesStatus5WhenAServerIsDown() throws {
        let dir = NSTemporaryDirectory() + "pipectl-it-\(getpid())-nostack"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let status = try pipectl(["dev", "status"], environment: ["PIPECTL_STATE_DIR": dir])
        XCTAssertEqual(status.status, 5, status.output)
        XCTAssertEqual(status.output, "stack: not set up (run `pipectl dev up`)\n")
    }
}
