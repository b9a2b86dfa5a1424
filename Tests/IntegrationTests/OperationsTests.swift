import Foundation
import PipectlTestSupport
import PostgresAdapter
import XCTest

/// Dead-letter replay, safe schema changes, secrets, and a consumer joining mid-load.
final class OperationsTests: XCTestCase {
    /// A row refused by the spec is replayed after the spec is fixed and leaves the
    /// dead-letter table; the others stay with their reasons.
    func testDeadLettersReplayAfterTheSpecIsFixed() throws {
        let rows =
            Array(housingRows.prefix(4)) + [
                "0.1,18,2.31,0,0.538,6.575,65.2,4.09,1,296,15.3,396.9,4.98,",  // medv missing: NOT NULL
                "0.1,18,2.31,0,0.538,6.575,65.2,4.09,1,oops,15.3,396.9,4.98,24",  // tax not a number
            ]
        var p = try TestPipeline.written("it_replay", csv: ([housingHeader] + rows).joined(separator: "\n") + "\n")
        XCTAssertEqual(try pipectl(["run", p.specPath]).status, 3)  // finished, with dead letters
        let db = try TestStack.connect()
        XCTAssertEqual(try db.int("SELECT count(*) FROM \"pipectl\".\"it_replay__dead_letters\""), 2)
        // The fix: a default for medv.
        p.transformExtra = "    defaults: { medv: \"0\" }"
        try p.write()
        let replay = try pipectl(["dlq", "replay", p.specPath])
        XCTAssertEqual(replay.status, 0, replay.output)
        XCTAssertTrue(replay.output.contains("replayed 2 dead-lettered rows of sink 'it_replay_db': 1 loaded and removed, 1 still failing"), replay.output)
        XCTAssertEqual(try db.int("SELECT count(*) FROM \"it_replay\""), 5)
        XCTAssertEqual(try db.int("SELECT count(*) FROM \"it_replay\" WHERE \"medv\" = 0"), 1)
        let left = try db.query("SELECT \"source_ordinal\", \"reason\" FROM \"pipectl\".\"it_replay__dead_letters\"")
        XCTAssertEqual(left.count, 1)
        XCTAssertEqual(left.first?[0], "6")
        XCTAssertEqual(left.first?[1], "column 'tax': 'oops' is not a valid integer")
        // Replaying again changes nothing and duplicates nothing.
        XCTAssertTrue(try pipectl(["dlq", "replay", p.specPath]).output.contains("0 loaded and removed, 1 still failing"))
        XCTAssertEqual(try db.int("SELECT count(*) FROM \"it_replay\""), 5)
    }

    /// A nullable column added to the schema is added to the table, and a column with a default
    /// is added with it (the row already stored gets the default); a changed type is refused
    /// with the reason, and nothing is dropped or narrowed.
    func testSchemaChangesAddNullableColumnsAndRefuseTypeChanges() throws {
        var p = try TestPipeline.written("it_schema", csv: housingHeader + "\n" + housingRows[0] + "\n")
        XCTAssertEqual(try pipectl(["run", p.specPath]).status, 0)
        p.schemaColumns =
            TestPipeline.housingColumns + "\n  - { name: note, type: text }" + "\n  - { name: status, type: text, nullable: false, default: \"'new'\" }"
            + "\n  - { name: seen_at, type: timestamptz, default: now() }" + "\n  - { name: ref, type: text, default: gen_random_uuid() }"
        try p.write()
        let plan = try pipectl(["plan", p.specPath, "--live"])
        XCTAssertTrue(plan.output.contains("column \"note\" text will be added (nullable)"), plan.output)
        XCTAssertTrue(
            plan.output.contains("column \"status\" text will be added with DEFAULT 'new' NOT NULL (existing rows get the default)"), plan.output)
        XCTAssertTrue(
            plan.output.contains("column \"seen_at\" timestamptz will be added with DEFAULT now() (existing rows get its value at the time of the change)"),
            plan.output)
        XCTAssertTrue(
            plan.output.contains("column \"ref\" text will be added with DEFAULT gen_random_uuid() for new rows (existing rows stay NULL)"), plan.output)
        let added = try pipectl(["apply", p.specPath])
        XCTAssertEqual(added.status, 0, added.output)
        let db = try TestStack.connect()
        XCTAssertEqual(
            try db.query("SELECT data_type FROM information_schema.columns WHERE table_name = 'it_schema' AND column_name = 'note'").first?[0], "text")
        XCTAssertEqual(
            try db.query(
                "SELECT is_nullable, column_default FROM information_schema.columns WHERE table_name = 'it_schema' AND column_name = 'status'"
            ).first ?? [], ["NO", "'new'::text"])
        XCTAssertEqual(
            try db.query("SELECT \"note\", \"status\", \"seen_at\" IS NOT NULL, \"ref\" FROM \"it_schema\"").first ?? [], [nil, "new", "t", nil])
        XCTAssertEqual(
            try db.query("SELECT column_default FROM information_schema.columns WHERE table_name = 'it_schema' AND column_name = 'ref'").first?[0],
            "gen_random_uuid()")
        p.schemaColumns = TestPipeline.housingColumns.replacingOccurrences(of: "{ name: tax, type: integer }", with: "{ name: tax, type: text }")
        try p.write()
        // plan --live shows the refusal and exits 2, changing nothing.
        let refusedPlan = try pipectl(["plan", p.specPath, "--live"])
        XCTAssertEqual(refusedPlan.status, 2, refusedPlan.output)
        XCTAssertTrue(refusedPlan.output.contains("refused: column \"tax\" is integer in the database but text in schema 'it_schema'"), refusedPlan.output)
        XCTAssertTrue(
            refusedPlan.output.contains("the live database refuses this plan (1 change marked 'refused'); apply and run would stop"), refusedPlan.output)
        let refused = try pipectl(["run", p.specPath])
        XCTAssertEqual(refused.status, 1, refused.output)
        XCTAssertTrue(
            refused.output.contains("column \"tax\" is integer in the database but text in schema 'it_schema'; pipectl never changes a column's type"),
            refused.output)
        XCTAssertEqual(
            try db.query("SELECT data_type FROM information_schema.columns WHERE table_name = 'it_schema' AND column_name = 'tax'").first?[0], "integer")
        XCTAssertEqual(try db.int("SELECT count(*) FROM \"it_schema\""), 1)
    }

    /// Passwords never appear in what pipectl prints.
    func testPasswordsInURLsAreMasked() throws {
        let dir = NSTemporaryDirectory() + "pipectl-it-\(getpid())-secret"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try (housingHeader + "\n" + housingRows[0] + "\n").write(toFile: dir + "/s.csv", atomically: true, encoding: .utf8)
        let spec = """
            version: 1
            name: secret
            sources: [{ name: s_csv, type: csv, path: s.csv }]
            topics: [{ name: secret-data, from: s_csv, brokers: "${KAFKA_BROKERS}" }]
            schemas: [{ name: s, columns: [{ name: crim, type: double precision }] }]
            transforms: [{ name: s_rows, from: secret-data, schema: s }]
            sinks: [{ name: s_db, type: postgres, from: s_rows, table: s, url: "${SECRET_URL}" }]
            """
        try spec.write(toFile: dir + "/s.yaml", atomically: true, encoding: .utf8)
        let result = try pipectl(
            ["run", dir + "/s.yaml"],
            environment: [
                "KAFKA_BROKERS": try TestStack.require().kafkaBrokers,
                "SECRET_URL": "postgresql://loader:hunter2-very-secret@127.0.0.1:1/db",
            ])
        XCTAssertEqual(result.status, 1, result.output)
        XCTAssertTrue(result.output.contains("postgresql://loader:***@127.0.0.1:1/db"), result.output)
        XCTAssertFalse(result.output.contains("hunter2"), result.output)
        let env = try pipectl(["run", dir + "/s.yaml"], environment: ["SECRET_URL": "x"])
        XCTAssertEqual(env.output.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").count, 1, env.output)
    }

    /// A second consumer joining in the middle of a load takes over part of the partitions;
    /// every row lands once.
    func testSecondConsumerJoiningMidLoadLandsEveryRowOnce() throws {
        let p = try TestPipeline.written("it_join", csv: repeatedHousingCSV(120_000), partitions: 2, sourceBatch: 1000, sinkBatch: 1000)
        XCTAssertEqual(try pipectl(["produce", p.specPath]).status, 0)
        let a = try startPipectl(["consume", p.specPath, "--idle-exit", "8"])
        defer { a.kill9() }
        let db = try TestStack.connect()
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, (try? db.int("SELECT count(*) FROM \"it_join\"")) ?? 0 < 5_000 { usleep(100_000) }
        let b = try startPipectl(["consume", p.specPath, "--idle-exit", "8"])
        defer { b.kill9() }
        guard a.wait(timeout: 180), b.wait(timeout: 180) else { return XCTFail("a: \(a.output())\nb: \(b.output())") }
        XCTAssertEqual(a.terminationStatus, 0, a.output())
        XCTAssertEqual(b.terminationStatus, 0, b.output())
        XCTAssertEqual(try db.int("SELECT count(*) FROM \"it_join\""), 120_000)
        XCTAssertEqual(try db.int("SELECT count(DISTINCT \"_pipectl_record\") FROM \"it_join\""), 120_000)
        XCTAssertTrue(a.output().contains("revoked"), a.output())
    }
}

/// `mode: upsert` keeps one row per key, the last version winning, within a batch and
/// across runs.
final class UpsertTests: XCTestCase {
    func testUpsertKeepsTheLastVersionOfEachKey() throws {
        let csv = "code,price\n1,10\n2,20\n1,11\n3,30\n2,21\n"
        var p = try TestPipeline("it_upsert", csv: csv)
        p.schemaColumns = """
              - { name: code, type: integer, primary_key: true }
              - { name: price, type: "numeric(10,2)" }
            """
        p.sinkExtra = ", mode: upsert, key: [code]"
        try p.write()
        let first = try pipectl(["run", p.specPath])
        XCTAssertEqual(first.status, 0, first.output)
        let db = try TestStack.connect()
        XCTAssertEqual(
            try db.query("SELECT \"code\"::text, \"price\"::text FROM \"it_upsert\" ORDER BY 1").map { $0.map { $0 ?? "" } },
            [["1", "11.00"], ["2", "21.00"], ["3", "30.00"]])
        // A new version of the file: changed prices replace the stored ones, a new key is added
        // (an upsert-only topic takes a changed file as a new source without --as-new-source).
        try "code,price\n2,22\n4,40\n".write(toFile: p.csvPath, atomically: true, encoding: .utf8)
        let second = try pipectl(["run", p.specPath])
        XCTAssertEqual(second.status, 0, second.output)
        XCTAssertEqual(
            try db.query("SELECT \"code\"::text, \"price\"::text FROM \"it_upsert\" ORDER BY 1").map { $0.map { $0 ?? "" } },
            [["1", "11.00"], ["2", "22.00"], ["3", "30.00"], ["4", "40.00"]])
    }
}
