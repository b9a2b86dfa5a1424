import Foundation
import PipectlTestSupport
import PostgresAdapter
import XCTest

/// Faults a review found by attacking the DAG runtime with real runs against Tansu and
/// PostgreSQL (findings R1, R2, R3, R6 of the review of 2026-11-29), each kept as a test of the
/// behaviour that is right.
final class ReviewFindingsTests: XCTestCase {
    /// R1 (PipelineRunner.storedCounts): one topic, two insert sinks; only `strict_db` refuses
    /// two records. Both tables hold the right values, but `loose_db`'s summary counts the
    /// other sink's dead letters as its own ("reconciled: NO (4 read = 4 rows + 2 dead
    /// letters)") and `run` exits 1 with "the load does not reconcile".
    func testFanOutSinkWithoutDeadLettersStillReconciles() throws {
        let spec = try SpecFolder(
            "it_rv_fan", files: ["prices.csv": "sku,price,qty\nA-1,10.50,1\nB-2,3.25,x\nC-3,7.00,3\nD-4,abc,4\n"],
            body: """
                sources:
                  - { name: prices_csv, type: csv, path: prices.csv }
                topics:
                  - { name: it_rv_fan-data, from: prices_csv, brokers: BROKERS }
                schemas:
                  - name: loose
                    columns:
                      - { name: sku, type: text, nullable: false }
                      - { name: price, type: text }
                      - { name: qty, type: text }
                  - name: strict
                    columns:
                      - { name: sku, type: text, nullable: false }
                      - { name: price, type: "numeric(10,2)" }
                      - { name: qty, type: integer }
                transforms:
                  - { name: loose_rows, from: it_rv_fan-data, schema: loose }
                  - { name: strict_rows, from: it_rv_fan-data, schema: strict }
                sinks:
                  - { name: loose_db, type: postgres, from: loose_rows, url: URL, table: it_rv_fan_loose, batch_size: 100, max_delay_ms: 100 }
                  - { name: strict_db, type: postgres, from: strict_rows, url: URL, table: it_rv_fan_strict, batch_size: 100, max_delay_ms: 100 }

                """)
        let run = try pipectl(["run", spec.specPath, "--allow-dead-letters"])
        // The stored values are right (this part holds today).
        XCTAssertEqual(
            try rows(#"SELECT "sku", "price", "qty" FROM "it_rv_fan_loose" ORDER BY 1"#),
            [["A-1", "10.50", "1"], ["B-2", "3.25", "x"], ["C-3", "7.00", "3"], ["D-4", "abc", "4"]])
        XCTAssertEqual(
            try rows(#"SELECT "sku", "price"::text, "qty"::text FROM "it_rv_fan_strict" ORDER BY 1"#), [["A-1", "10.50", "1"], ["C-3", "7.00", "3"]])
        XCTAssertEqual(
            try rows(#"SELECT "sink", "source_ordinal"::text, "reason" FROM "pipectl"."it_rv_fan__dead_letters" ORDER BY 2"#),
            [
                ["strict_db", "2", "column 'qty': 'x' is not a valid integer"],
                ["strict_db", "4", "column 'price': 'abc' is not a valid numeric(10,2)"],
            ])
        // The verdict: each sink reconciles against its own dead letters.
        XCTAssertEqual(run.status, 0, run.output)
        XCTAssertTrue(run.output.contains("Summary (loose_db):"), run.output)
        XCTAssertTrue(run.output.contains("reconciled:         yes (4 read = 4 rows + 0 dead letters stored for this file)"), run.output)
        XCTAssertTrue(run.output.contains("reconciled:         yes (4 read = 2 rows + 2 dead letters stored for this file)"), run.output)
        XCTAssertFalse(run.output.contains("does not reconcile"), run.output)
    }

    /// R2 (ConsumerStateMachine.isDone): two sources into one topic; the second file changes
    /// where it was sent, so the next `run` refuses it (exit 1). Its consumer had started after
    /// the first file's check and left at once, in the middle of its group join, which leaves
    /// Tansu's group stuck: `run --as-new-source` then never stored a row (hung at
    /// "stored 0" until killed). Fixed on this branch (wait for the first join before leaving).
    func testRefusedSecondSourceDoesNotLeaveTheConsumerGroupStuck() throws {
        let spec = try SpecFolder(
            "it_rv_refused",
            files: ["north.csv": "code,qty\nN1,1\nN2,2\n", "south.csv": "code,qty\nS1,10\nS2,20\nS3,30\n"],
            body: """
                sources:
                  - { name: north_csv, type: csv, path: north.csv }
                  - { name: south_csv, type: csv, path: south.csv }
                topics:
                  - { name: it_rv_refused-data, from: [north_csv, south_csv], brokers: BROKERS, partitions: 2 }

                """ + SpecFolder.stockRows(from: "it_rv_refused-data", sinks: [("stock_db", "it_rv_refused", nil)]))
        let first = try pipectl(["run", spec.specPath])
        XCTAssertEqual(first.status, 0, first.output)
        try spec.write("code,qty\nS1,11\nS2,20\nS3,30\n", "south.csv")
        let refused = try pipectl(["run", spec.specPath], timeout: 60)
        XCTAssertEqual(refused.status, 1, refused.output)
        XCTAssertTrue(refused.output.contains("south.csv changed where it was already sent"), refused.output)

        let again = try ChildProcess(TestStack.pipectl, ["run", spec.specPath, "--as-new-source"]).finish(timeout: 45)
        XCTAssertEqual(again.status, 0, again.output)
        XCTAssertTrue(again.output.contains("rows loaded:        3\n"), again.output)
        // The first south file's rows stay; the changed file is loaded as a new source.
        XCTAssertEqual(
            try rows(
                """
                SELECT s."source", t."code", t."qty"::text FROM "it_rv_refused" t
                JOIN "pipectl"."it_rv_refused__sources" s ON s."source_id" = t."_pipectl_record" >> 40 ORDER BY s."source_id", t."_pipectl_record"
                """),
            [
                ["north_csv", "N1", "1"], ["north_csv", "N2", "2"],
                ["south_csv", "S1", "10"], ["south_csv", "S2", "20"], ["south_csv", "S3", "30"],
                ["south_csv", "S1", "11"], ["south_csv", "S2", "20"], ["south_csv", "S3", "30"],
            ])
    }

    /// R3: a sink reading a topic no source of the spec feeds. `run` used to refuse the whole
    /// pipeline, so the sink that does have a source was not loaded either, while `plan` listed
    /// both under Run. Now `plan` lists that sink apart, `run` loads the others and says so,
    /// and `consume --sink` loads it.
    func testPlanAndRunAgreeOnASinkWhoseTopicHasNoSource() throws {
        let spec = try SpecFolder(
            "it_rv_orphan", files: ["a.csv": "code,qty\nA,1\n"],
            body: """
                sources:
                  - { name: a_csv, type: csv, path: a.csv }
                topics:
                  - { name: it_rv_orphan-data, from: a_csv, brokers: BROKERS }
                  - { name: it_rv_orphan-ext, brokers: BROKERS }
                schemas:
                  - name: stock
                    columns:
                      - { name: code, type: text, nullable: false }
                      - { name: qty, type: integer, nullable: false }
                transforms:
                  - { name: a_rows, from: it_rv_orphan-data, schema: stock }
                  - { name: ext_rows, from: it_rv_orphan-ext, schema: stock }
                sinks:
                  - { name: a_db, type: postgres, from: a_rows, url: URL, table: it_rv_orphan_a, batch_size: 100, max_delay_ms: 100 }
                  - { name: ext_db, type: postgres, from: ext_rows, url: URL, table: it_rv_orphan_ext, batch_size: 100, max_delay_ms: 100 }

                """)
        let plan = try pipectl(["plan", spec.specPath])
        XCTAssertEqual(plan.status, 0, plan.output)
        XCTAssertTrue(plan.output.contains("  consume  topic it_rv_orphan-data -> a_rows -> \"public\".\"it_rv_orphan_a\""), plan.output)
        XCTAssertTrue(
            plan.output.contains(
                "Not run by `run` (no source of this spec feeds the topic; load with `pipectl consume --sink NAME`):\n  consume  topic it_rv_orphan-ext -> ext_rows -> \"public\".\"it_rv_orphan_ext\" in group pipectl.it_rv_orphan.ext_db  (sink ext_db)\n"
            ), plan.output)
        let run = try pipectl(["run", spec.specPath], timeout: 60)
        XCTAssertEqual(run.status, 0, run.output)
        XCTAssertTrue(
            run.output.contains(
                "sink 'ext_db' reads topic 'it_rv_orphan-ext', which no source of this spec feeds: run leaves it alone; load it with `pipectl consume "),
            run.output)
        XCTAssertTrue(run.output.contains("Summary (a_db):"), run.output)
        XCTAssertFalse(run.output.contains("Summary (ext_db):"), run.output)
        XCTAssertEqual(try rows(#"SELECT "code", "qty"::text FROM "it_rv_orphan_a""#), [["A", "1"]], run.output)
        // consume takes the sink by name when the spec has several.
        let unnamed = try pipectl(["consume", spec.specPath, "--idle-exit", "2"], timeout: 60)
        XCTAssertNotEqual(unnamed.status, 0, unnamed.output)
        XCTAssertTrue(unnamed.output.contains("this spec has 2 (a_db, ext_db): choose one with --sink"), unnamed.output)
        let ext = try pipectl(["consume", spec.specPath, "--sink", "ext_db", "--idle-exit", "2"], timeout: 90)
        XCTAssertEqual(ext.status, 0, ext.output)
        XCTAssertEqual(try TestStack.connect().int(#"SELECT count(*) FROM "it_rv_orphan_ext""#), 0)
    }

    /// R6 (PostgresSink.init: `SourceRegistry(source: flow.source?.name, path: flow.source?.path)`):
    /// two sources into one topic read by two sinks in different databases. The send
    /// checkpoints live in the first sink's database; in the second one the consumer registers
    /// each file's fingerprint itself, and labels every file with the topic's *first* source:
    /// south.csv's rows show as `north_csv (north.csv)` in that database's sources table and in
    /// `pipectl status`, and `reset --source south.csv` there cannot find them.
    func testSecondDatabaseLabelsEachFileWithItsOwnSource() throws {
        let secondURL = try freshDatabase("it_rv_second")
        let spec = try SpecFolder(
            "it_rv_twodb",
            files: ["north.csv": "code,qty\nN1,1\nN2,2\n", "south.csv": "code,qty\nS1,10\nS2,20\nS3,30\n"],
            body: """
                sources:
                  - { name: north_csv, type: csv, path: north.csv }
                  - { name: south_csv, type: csv, path: south.csv }
                topics:
                  - { name: it_rv_twodb-data, from: [north_csv, south_csv], brokers: BROKERS }

                """ + SpecFolder.stockRows(from: "it_rv_twodb-data", sinks: [("a_db", "it_rv_twodb_a", nil), ("b_db", "it_rv_twodb_b", secondURL)]))
        let run = try pipectl(["run", spec.specPath])
        XCTAssertEqual(run.status, 0, run.output)
        let second = try PostgresConnection(url: secondURL)
        let labelled = try second.query(
            """
            SELECT s."source", t."code" FROM "it_rv_twodb_b" t
            JOIN "pipectl"."it_rv_twodb__sources" s ON s."source_id" = t."_pipectl_record" >> 40 ORDER BY t."code"
            """
        ).map { $0.map { $0 ?? "NULL" } }
        XCTAssertEqual(
            labelled, [["north_csv", "N1"], ["north_csv", "N2"], ["south_csv", "S1"], ["south_csv", "S2"], ["south_csv", "S3"]])
    }

    /// `dlq list` reads the dead-letter table of every database the sinks write to, not only
    /// the first sink's: a row refused by both sinks of a fan-out into two databases is listed
    /// twice, each under its database (found in review of DeadLetterList).
    func testDeadLettersInEverySinksDatabaseAreListed() throws {
        let state = try TestStack.require()
        let secondURL = try freshDatabase("it_rv_dlq_second")
        let spec = try SpecFolder(
            "it_rv_dlq",
            files: ["stock.csv": "code,qty\nN1,1\nN2,many\nN3,3\n"],
            body: """
                sources:
                  - { name: stock_csv, type: csv, path: stock.csv }
                topics:
                  - { name: it_rv_dlq-data, from: stock_csv, brokers: BROKERS }

                """ + SpecFolder.stockRows(from: "it_rv_dlq-data", sinks: [("a_db", "it_rv_dlq_a", nil), ("b_db", "it_rv_dlq_b", secondURL)]))
        let run = try pipectl(["run", spec.specPath, "--allow-dead-letters"])
        XCTAssertEqual(run.status, 0, run.output)
        let list = try pipectl(["dlq", "list", spec.specPath])
        XCTAssertEqual(list.status, 0, list.output)
        let lines = list.output.split(separator: "\n").map(String.init)
        XCTAssertEqual(
            lines.filter { $0.contains("dead-lettered row") },
            [
                "1 dead-lettered row in \"pipectl\".\"it_rv_dlq__dead_letters\" at \(state.databaseURL)",
                "1 dead-lettered row in \"pipectl\".\"it_rv_dlq__dead_letters\" at \(secondURL)",
            ], list.output)
        XCTAssertEqual(
            lines.filter { $0.hasPrefix("#") }.map { $0.components(separatedBy: " record=").first.map { String($0.drop { $0 != "[" }) } ?? "" },
            ["[cast] sink=a_db it_rv_dlq-data[0]@1", "[cast] sink=b_db it_rv_dlq-data[0]@1"], list.output)
        XCTAssertTrue(lines.allSatisfy { !$0.hasPrefix("#") || $0.hasSuffix("bytes: column 'qty': 'many' is not a valid integer") }, list.output)
    }

    /// A new, empty database `name` on the test stack's server; returns its URL.
    func freshDatabase(_ name: String) throws -> String {
        let state = try TestStack.require()
        let db = try TestStack.connect()
        _ = try? db.query("DROP DATABASE IF EXISTS \(name)")
        _ = try db.query("CREATE DATABASE \(name)")
        let slash = try XCTUnwrap(state.databaseURL.lastIndex(of: "/"), state.databaseURL)
        return String(state.databaseURL[..<slash]) + "/\(name)"
    }
}
