import Foundation
import PipectlTestSupport
import PostgresAdapter
import RecordFormats
import XCTest

/// Files that grow, runs that are interrupted, files that change, and `reset` (issue 8, kind 6
/// and the `reset --source` part of kind 2): each file is sent once from a checkpoint, and
/// the table ends with exactly the file's rows, by value.
final class GrowingFileTests: XCTestCase {
    func append(_ lines: [String], to path: String) throws {
        let handle = try XCTUnwrap(FileHandle(forWritingAtPath: path))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data((lines.joined(separator: "\n") + "\n").utf8))
        try handle.close()
    }

    /// The reported case: 2,000 rows loaded, one appended, `produce` again. Only the new row is
    /// sent (its ordinal continues the file's, so its id is new); the table holds 2,001 rows.
    /// A second append is sent by `run` itself, which also reconciles the whole file.
    func testAppendedRowIsTheOnlyRecordSentAndLoadsOnce() throws {
        let p = try TestPipeline.written("it_grow", csv: repeatedHousingCSV(2_000), sourceBatch: 500)
        let first = try pipectl(["run", p.specPath])
        XCTAssertEqual(first.status, 0, first.output)
        XCTAssertTrue(first.output.contains("rows sent:          2000\n"), first.output)

        try append([housingRows[2_000 % housingRows.count]], to: p.csvPath)
        let produce = try pipectl(["produce", p.specPath])
        XCTAssertEqual(produce.status, 0, produce.output)
        XCTAssertTrue(produce.output.contains("Produced 1 records from it_grow.csv to it_grow-data (0 as error records; 2000 sent before)"), produce.output)
        let consume = try pipectl(["consume", p.specPath, "--idle-exit", "4"])
        XCTAssertEqual(consume.status, 0, consume.output)
        XCTAssertTrue(consume.output.contains("Consumed 1 records: 1 loaded, 0 already loaded, 0 dead-lettered"), consume.output)
        try assertExactTable("it_grow", rows: 2_001, everyRow: true)

        try append([housingRows[2_001 % housingRows.count], housingRows[2_002 % housingRows.count]], to: p.csvPath)
        let second = try pipectl(["run", p.specPath])
        XCTAssertEqual(second.status, 0, second.output)
        XCTAssertTrue(second.output.contains("rows read:          2003\n"), second.output)
        XCTAssertTrue(second.output.contains("rows sent:          2\n"), second.output)
        XCTAssertTrue(second.output.contains("rows loaded:        2\n"), second.output)
        XCTAssertTrue(second.output.contains("reconciled:         yes (2003 read = 2003 rows + 0 dead letters stored for this file)"), second.output)
        try assertExactTable("it_grow", rows: 2_003, everyRow: true)
    }

    /// A file without a final line end: the appended text starts with one, so the last record
    /// stays what it was and only the new records are sent.
    func testFileWithoutAFinalLineEndGrowsByNewRecords() throws {
        var csv = repeatedHousingCSV(300)
        csv.removeLast()
        let p = try TestPipeline.written("it_grow_open", csv: csv, sourceBatch: 100)
        XCTAssertEqual(try pipectl(["run", p.specPath]).status, 0)
        try append(["", housingRows[300 % housingRows.count]].map { $0 }, to: p.csvPath)
        let second = try pipectl(["run", p.specPath])
        XCTAssertEqual(second.status, 0, second.output)
        XCTAssertTrue(second.output.contains("rows sent:          1\n"), second.output)
        try assertExactTable("it_grow_open", rows: 301, everyRow: true)
    }

    /// `run` interrupted in the middle of sending, by Ctrl-C (SIGINT) and then by SIGKILL: the
    /// next run resumes after the delivered records instead of sending the whole file again,
    /// and the table ends exact.
    func testInterruptedRunResumesFromItsCheckpoint() throws {
        let p = try TestPipeline.written("it_resume", csv: repeatedHousingCSV(60_000), sourceBatch: 1000, sinkBatch: 2000, sourceExtra: ", rate_limit: 5000")
        for signal in [SIGINT, SIGKILL] {
            // --verbose: the "Sent batch" line per micro-batch, to interrupt after a few.
            let run = try startPipectl(["run", p.specPath, "--verbose"])
            // Interrupted once its consumer has joined the group (a member killed while it
            // joins can hold Tansu's group back) and a few more batches went out.
            waitFor("the consumer's assignment") { run.output().contains("assigned partitions") }
            let before = run.output().components(separatedBy: "Sent batch").count
            waitFor("some batches") { run.output().components(separatedBy: "Sent batch").count > before + 3 }
            run.send(signal)
            XCTAssertTrue(run.wait(timeout: 60), run.output())
            XCTAssertFalse(run.output().contains("rows read:          60000"), "the run was not interrupted mid-send: \(run.output())")
        }
        let db = try TestStack.connect()
        let checkpoint = try db.int("SELECT \"checkpoint_records\" FROM \"pipectl\".\"it_resume__sources\"")
        XCTAssertGreaterThanOrEqual(checkpoint, 3_000)
        XCTAssertLessThan(checkpoint, 60_000)
        let last = try pipectl(["run", p.specPath])
        XCTAssertEqual(last.status, 0, last.output)
        let sent = last.output.split(separator: "\n").first { $0.hasPrefix("  rows sent:") }.flatMap { Int($0.split(separator: " ").last ?? "") } ?? -1
        XCTAssertEqual(sent, 60_000 - checkpoint, last.output)
        XCTAssertTrue(last.output.contains("rows read:          60000\n"), last.output)
        XCTAssertTrue(last.output.contains("reconciled:         yes (60000 read = 60000 rows + 0 dead letters stored for this file)"), last.output)
        try assertExactTable("it_resume", rows: 60_000, everyRow: true)
    }

    /// The records of `csv` overlapping bytes [from, to): the record range the refusal names.
    func recordsOverlapping(_ csv: String, from: Int, to: Int) -> (first: Int, last: Int) {
        var start = 0
        var first = -1
        var last = -1
        for (i, line) in csv.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let end = start + line.utf8.count + 1
            if end > from, start < to, i > 0 {
                if first < 0 { first = i }
                last = i
            }
            start = end
        }
        return (first, last)
    }

    /// A record changed where the file was already sent: `run` stops with one line naming the
    /// file, the narrowest record range the chunk digests prove and both ways on. Then
    /// `--as-new-source` loads the edited file beside the old rows, and `reset --source`
    /// deletes what the file's current life loaded, after which `run` loads it exactly.
    func testChangedRecordIsRefusedThenLoadedAsNewSourceOrAfterResetSource() throws {
        let original = repeatedHousingCSV(2_000)
        let p = try TestPipeline.written("it_changed", csv: original, sourceBatch: 500)
        XCTAssertEqual(try pipectl(["run", p.specPath]).status, 0)

        // Record 1200's tax (field 10) goes from its value to 1.
        var lines = original.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var fields = lines[1_200].split(separator: ",").map(String.init)
        let oldTax = Int(fields[9])!
        fields[9] = "1"
        lines[1_200] = fields.joined(separator: ",")
        let edited = lines.joined(separator: "\n")
        try edited.write(toFile: p.csvPath, atomically: true, encoding: .utf8)
        let at = zip(original.utf8, edited.utf8).enumerated().first { $0.element.0 != $0.element.1 }!.offset
        let chunk = 256  // the chunk size for a file under 1 MiB
        let range = recordsOverlapping(edited, from: (at / chunk) * chunk, to: (at / chunk + 1) * chunk)
        XCTAssertTrue(range.first <= 1_200 && 1_200 <= range.last)

        let refused = try pipectl(["run", p.specPath])
        XCTAssertEqual(refused.status, 1, refused.output)
        let expected =
            "error: it_changed.csv changed where it was already sent: the first difference is in records \(range.first)-\(range.last) (lines \(range.first + 1)-\(range.last + 1)); "
            + "run again with --as-new-source to load it as a new file (the rows loaded from it stay), "
            + "or delete what it loaded with `pipectl reset --source it_changed.csv` and run again\n"
        XCTAssertTrue(refused.output.contains(expected), refused.output)
        XCTAssertEqual(refused.output.components(separatedBy: "error:").count, 2, refused.output)
        try assertExactTable("it_changed", rows: 2_000, everyRow: true)

        // As a new source: the edited file's 2,000 rows join the 2,000 loaded before.
        let asNew = try pipectl(["run", p.specPath, "--as-new-source"])
        XCTAssertEqual(asNew.status, 0, asNew.output)
        XCTAssertTrue(asNew.output.contains("rows sent:          2000\n"), asNew.output)
        XCTAssertTrue(asNew.output.contains("reconciled:         yes (2000 read = 2000 rows + 0 dead letters stored for this file)"), asNew.output)
        let db = try TestStack.connect()
        XCTAssertEqual(try db.int("SELECT count(*) FROM \"it_changed\""), 4_000)
        XCTAssertEqual(try db.int("SELECT count(DISTINCT \"_pipectl_record\") FROM \"it_changed\""), 4_000)
        var tax = 0
        for i in 0..<2_000 { tax += Int(housingRows[i % housingRows.count].split(separator: ",")[9])! }
        XCTAssertEqual(try db.int("SELECT sum(\"tax\") FROM \"it_changed\""), 2 * tax - oldTax + 1)

        // Reset the file's current life: its 2,000 rows go, the first life's stay.
        let reset = try pipectl(["reset", p.specPath, "--source", p.csvPath, "--yes"])
        XCTAssertEqual(reset.status, 0, reset.output)
        XCTAssertTrue(
            reset.output.contains(
                "reset source 'it_changed_csv' (it_changed.csv): deleted 2000 rows from \"public\".\"it_changed\", 0 dead letters and its send checkpoint; the next run loads it again"
            ), reset.output)
        try assertExactTable("it_changed", rows: 2_000, everyRow: true)

        // Back to the original content: the first life is the newest one left at this path and
        // the file is what it sent, so nothing is sent and nothing doubles.
        try original.write(toFile: p.csvPath, atomically: true, encoding: .utf8)
        let again = try pipectl(["run", p.specPath])
        XCTAssertEqual(again.status, 0, again.output)
        XCTAssertTrue(again.output.contains("rows sent:          0\n"), again.output)
        try assertExactTable("it_changed", rows: 2_000, everyRow: true)
    }

    /// `reset` then `run` never doubles a table: the whole-pipeline reset keeps each file's
    /// identity, so the re-sent file is recognised; `reset --source` deletes the rows with the
    /// identity, so the file loads once more, exactly.
    func testResetThenRunNeverDoublesTheTable() throws {
        let p = try TestPipeline.written("it_reset", csv: repeatedHousingCSV(2_000), sourceBatch: 500)
        XCTAssertEqual(try pipectl(["run", p.specPath]).status, 0)

        let reset = try pipectl(["reset", p.specPath, "--yes"])
        XCTAssertEqual(reset.status, 0, reset.output)
        XCTAssertTrue(
            reset.output.contains(
                "reset pipeline 'it_reset': stored offsets and send checkpoints forgotten; rows already stored stay and are not loaded twice"), reset.output)
        let again = try pipectl(["run", p.specPath])
        XCTAssertEqual(again.status, 0, again.output)
        XCTAssertTrue(again.output.contains("rows sent:          2000\n"), again.output)
        XCTAssertTrue(again.output.contains("rows loaded:        0\n"), again.output)
        XCTAssertTrue(again.output.contains("reconciled:         yes (2000 read = 2000 rows + 0 dead letters stored for this file)"), again.output)
        try assertExactTable("it_reset", rows: 2_000, everyRow: true)

        let source = try pipectl(["reset", p.specPath, "--source", "it_reset_csv", "--yes"])
        XCTAssertEqual(source.status, 0, source.output)
        XCTAssertTrue(source.output.contains("deleted 2000 rows from \"public\".\"it_reset\", 0 dead letters and its send checkpoint"), source.output)
        XCTAssertEqual(try TestStack.connect().int("SELECT count(*) FROM \"it_reset\""), 0)
        let reload = try pipectl(["run", p.specPath])
        XCTAssertEqual(reload.status, 0, reload.output)
        XCTAssertTrue(reload.output.contains("rows loaded:        2000\n"), reload.output)
        try assertExactTable("it_reset", rows: 2_000, everyRow: true)

        let unknown = try pipectl(["reset", p.specPath, "--source", "nope.csv", "--yes"])
        XCTAssertEqual(unknown.status, 1, unknown.output)
        XCTAssertTrue(
            unknown.output.contains("error: nope.csv is not a source of pipeline 'it_reset'; its sources are: it_reset.csv (it_reset_csv)"), unknown.output)
    }

    /// A database from before checkpoints: the file registered under its whole SHA-256, no
    /// checkpoint columns filled. The next run takes that row over (same number, same ids),
    /// sends the file once more and stores nothing twice; the run after that sends nothing.
    func testSourceRegisteredBeforeCheckpointsKeepsItsRowsSingle() throws {
        let p = try TestPipeline.written("it_legacy", csv: repeatedHousingCSV(1_000), sourceBatch: 500)
        XCTAssertEqual(try pipectl(["run", p.specPath]).status, 0)
        let db = try TestStack.connect()
        _ = try db.query(
            """
            UPDATE "pipectl"."it_legacy__sources" SET "fingerprint" = $1, "topic_id" = NULL, "checkpoint_bytes" = NULL,
                "checkpoint_records" = NULL, "checkpoint_line" = NULL, "end_offsets" = NULL, "sent_bytes" = NULL, "sent_open" = NULL,
                "sent_hash" = NULL, "chunk_bytes" = NULL, "chunk_digests" = NULL
            """, [try Fingerprint.ofFile(atPath: p.csvPath)])
        // A database of an earlier version also lacks the later columns and indexes: the run
        // adds them (it skips DDL only when everything is there).
        try db.execute(
            """
            ALTER TABLE "pipectl"."it_legacy__sources" DROP COLUMN "updated_at";
            ALTER TABLE "pipectl"."it_legacy__offsets" DROP COLUMN "claimed_at";
            DROP INDEX "pipectl"."it_legacy__dead_letters_record";
            DROP INDEX "public"."it_legacy__pipectl_record";
            """)
        let upgraded = try pipectl(["run", p.specPath])
        XCTAssertEqual(upgraded.status, 0, upgraded.output)
        XCTAssertTrue(upgraded.output.contains("rows sent:          1000\n"), upgraded.output)
        XCTAssertTrue(upgraded.output.contains("rows loaded:        0\n"), upgraded.output)
        XCTAssertTrue(upgraded.output.contains("already loaded:     1000 "), upgraded.output)
        XCTAssertTrue(upgraded.output.contains("reconciled:         yes (1000 read = 1000 rows + 0 dead letters stored for this file)"), upgraded.output)
        XCTAssertEqual(try db.int("SELECT count(*) FROM \"pipectl\".\"it_legacy__sources\""), 1)
        XCTAssertEqual(
            try db.query(
                """
                SELECT to_regclass('"pipectl"."it_legacy__dead_letters_record"') IS NOT NULL, to_regclass('"public"."it_legacy__pipectl_record"') IS NOT NULL,
                  (SELECT count(*) FROM information_schema.columns WHERE table_schema = 'pipectl' AND (table_name, column_name)
                     IN (('it_legacy__sources', 'updated_at'), ('it_legacy__offsets', 'claimed_at')))
                """
            ).first ?? [], ["t", "t", "2"])
        let settled = try pipectl(["run", p.specPath])
        XCTAssertTrue(settled.output.contains("rows sent:          0\n"), settled.output)
        try assertExactTable("it_legacy", rows: 1_000, everyRow: true)
    }

    /// The reported day-1/day-2 case: day 2's file has an `email` column the schema lacks, so
    /// its emails are not stored; once the schema gains `email`, running again sends nothing
    /// (the file was sent). `reset --source` for the day-2 file and `run` load its emails, and
    /// day 1's rows stay as they were.
    func testDay2FileGetsItsEmailsAfterResetSource() throws {
        let state = try TestStack.require()
        let dir = NSTemporaryDirectory() + "pipectl-it-\(getpid())-it_days"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try "cust_id,name\n1,Ann\n2,Bob\n".write(toFile: dir + "/day1.csv", atomically: true, encoding: .utf8)
        try "name,email,cust_id\nCid,cid@example.com,3\nDee,dee@example.com,4\n".write(toFile: dir + "/day2.csv", atomically: true, encoding: .utf8)
        let spec = dir + "/it_days.yaml"
        func write(file: String, email: Bool) throws {
            try """
            version: 1
            name: it_days
            sources:
              - { name: customers_csv, type: csv, path: \(file) }
            topics:
              - { name: it_days-data, from: customers_csv, brokers: "\(state.kafkaBrokers)" }
            schemas:
              - name: customers
                columns:
                  - { name: cust_id, type: integer }
                  - { name: name, type: text }
            \(email ? "      - { name: email, type: text }" : "")
            transforms:
              - { name: customer_rows, from: it_days-data, schema: customers }
            sinks:
              - { name: customers_db, type: postgres, from: customer_rows, url: "\(state.databaseURL)", table: it_days, max_delay_ms: 100 }

            """.write(toFile: spec, atomically: true, encoding: .utf8)
        }
        try write(file: "day1.csv", email: false)
        let day1 = try pipectl(["run", spec])
        XCTAssertEqual(day1.status, 0, day1.output)
        try write(file: "day2.csv", email: false)
        let day2 = try pipectl(["run", spec])
        XCTAssertEqual(day2.status, 0, day2.output)
        try write(file: "day2.csv", email: true)
        let rerun = try pipectl(["run", spec])
        XCTAssertEqual(rerun.status, 0, rerun.output)
        XCTAssertTrue(rerun.output.contains("rows sent:          0\n"), rerun.output)
        let db = try TestStack.connect()
        func table() throws -> [String] {
            try db.query("SELECT cust_id::text || ',' || name || ',' || coalesce(email, 'NULL') FROM it_days ORDER BY cust_id").map { $0[0] ?? "" }
        }
        XCTAssertEqual(try table(), ["1,Ann,NULL", "2,Bob,NULL", "3,Cid,NULL", "4,Dee,NULL"])

        let reset = try pipectl(["reset", spec, "--source", dir + "/day2.csv", "--yes"])
        XCTAssertEqual(reset.status, 0, reset.output)
        XCTAssertTrue(
            reset.output.contains(
                "reset source 'customers_csv' (day2.csv): deleted 2 rows from \"public\".\"it_days\", 0 dead letters and its send checkpoint"), reset.output)
        let reload = try pipectl(["run", spec])
        XCTAssertEqual(reload.status, 0, reload.output)
        XCTAssertTrue(reload.output.contains("rows loaded:        2\n"), reload.output)
        XCTAssertEqual(try table(), ["1,Ann,NULL", "2,Bob,NULL", "3,Cid,cid@example.com", "4,Dee,dee@example.com"])
        XCTAssertEqual(try db.int("SELECT count(DISTINCT \"_pipectl_record\") FROM it_days"), 4)
    }
}
