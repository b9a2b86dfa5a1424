import Foundation
import PipectlTestSupport
import PostgresAdapter
import XCTest

/// A table that exists before pipectl first runs (the seed stack made `housing` by hand) is
/// brought to what `plan --live` promises, in that order: refuse type differences before
/// anything changes, add `_pipectl_record`, then index it; then every row loads.
final class ExistingTableTests: XCTestCase {
    /// The seed's own table: `CREATE TABLE housing (id SERIAL PRIMARY KEY, crim double
    /// precision, … medv double precision, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)`,
    /// with one column's type replaceable.
    static func seedTable(_ table: String, taxType: String = "integer") -> String {
        let columns = BadInputCorpusTests.housingColumns.map { name, type in "\(name) \(name == "tax" ? taxType : type)" }
        return
            "CREATE TABLE \"public\".\"\(table)\" (id SERIAL PRIMARY KEY, \(columns.joined(separator: ", ")), created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
    }

    /// The columns of schemas/housing.yaml, which describe the seed's table.
    static func seedSchemaColumns() throws -> String {
        let text = try String(contentsOfFile: TestStack.repoRoot + "/schemas/housing.yaml", encoding: .utf8)
        return text.split(separator: "\n").filter { $0.hasPrefix("  - {") }.joined(separator: "\n")
    }

    func columns(_ db: PostgresConnection, _ table: String, schema: String = "public") throws -> [String] {
        try db.query(
            "SELECT column_name::text FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
            [schema, table]
        ).map { $0[0] ?? "" }
    }

    /// The output without `created topic …` (printed only by the first command to need it).
    static func withoutTopicLines(_ output: String) -> [String] {
        output.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("created topic ") }
    }

    static let seedColumnNames = ["id"] + BadInputCorpusTests.housingColumns.map(\.0) + ["created_at"]

    func testTableMadeByHandGetsTheRecordColumnThenItsIndexAndLoadsEveryRow() throws {
        let db = try TestStack.connect()
        let csv = try String(contentsOfFile: TestStack.repoRoot + "/data/housing.csv", encoding: .utf8)
        let p = try TestPipeline.written("it_existing", csv: csv, schemaColumns: try Self.seedSchemaColumns())
        try db.execute("DROP TABLE IF EXISTS \"public\".\"it_existing\"")
        try db.execute(Self.seedTable("it_existing"))

        let plan = try pipectl(["plan", p.specPath, "--live"])
        XCTAssertEqual(plan.status, 0, plan.output)
        let live = plan.output.split(separator: "\n").filter { $0.hasPrefix("  \"public\".\"it_existing\" (") }
        XCTAssertEqual(live.map { $0.components(separatedBy: "): ").last ?? "" }, ["column \"_pipectl_record\" bigint will be added (nullable)"], plan.output)

        let apply = try pipectl(["apply", p.specPath])
        XCTAssertEqual(apply.status, 0, apply.output)
        XCTAssertEqual(Self.withoutTopicLines(apply.output), ["applied: 1 topic, 1 table and the bookkeeping tables"])
        XCTAssertEqual(try columns(db, "it_existing"), Self.seedColumnNames + ["_pipectl_record"])
        XCTAssertEqual(
            try db.query("SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND indexname = 'it_existing__pipectl_record'").first?[0],
            "CREATE UNIQUE INDEX it_existing__pipectl_record ON public.it_existing USING btree (_pipectl_record)")

        let run = try pipectl(["run", p.specPath])
        XCTAssertEqual(run.status, 0, run.output)
        XCTAssertEqual(try db.int("SELECT count(*) FROM \"it_existing\""), 506)
        // Every value exactly as in the CSV, row by row in record order.
        let names = BadInputCorpusTests.housingColumns.map(\.0)
        let select = names.map { "\"\($0)\"::text" }.joined(separator: ", ")
        let rows = try db.query("SELECT \(select) FROM \"it_existing\" ORDER BY (\"_pipectl_record\" & ((1::bigint << 40) - 1))")
        let expected = csv.split(separator: "\n").dropFirst().map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        XCTAssertEqual(rows.count, expected.count)
        for (i, (row, want)) in zip(rows, expected).enumerated() {
            XCTAssertEqual(row.map { Double($0 ?? "") }, want.map { Double($0) }, "row \(i + 1)")
        }
    }

    func testDifferentColumnTypeIsRefusedBeforeAnythingChanges() throws {
        let db = try TestStack.connect()
        let p = try TestPipeline.written("it_refused", csv: housingHeader + "\n" + housingRows[0] + "\n", schemaColumns: try Self.seedSchemaColumns())
        try db.execute("DROP TABLE IF EXISTS \"public\".\"it_refused\"")
        try db.execute(Self.seedTable("it_refused", taxType: "text"))
        let reason = "column \"tax\" is text in the database but integer in schema 'it_refused'; pipectl never changes a column's type"

        let plan = try pipectl(["plan", p.specPath, "--live"])
        let live = plan.output.split(separator: "\n").filter { $0.hasPrefix("  \"public\".\"it_refused\" (") }.map {
            $0.components(separatedBy: "): ").last ?? ""
        }
        XCTAssertEqual(
            live, ["column \"_pipectl_record\" bigint will be added (nullable)", "refused: \(reason)"].sorted { a, _ in a.hasPrefix("refused") }, plan.output)

        for command in ["apply", "run"] {
            let result = try pipectl([command, p.specPath])
            XCTAssertEqual(result.status, 1, result.output)
            XCTAssertEqual(Self.withoutTopicLines(result.output), ["error: table \"public\".\"it_refused\" does not fit sink 'it_refused_db': \(reason)"])
        }
        XCTAssertEqual(try columns(db, "it_refused"), Self.seedColumnNames, "the table changed although it was refused")
        XCTAssertEqual(try db.int("SELECT count(*) FROM pg_indexes WHERE indexname = 'it_refused__pipectl_record'"), 0)
    }

    /// A `db_schema` that does not exist is created, quoted, as the plan says.
    func testMissingDatabaseSchemaIsCreated() throws {
        let db = try TestStack.connect()
        try db.execute("DROP SCHEMA IF EXISTS \"it Sales\" CASCADE")
        let p = try TestPipeline.written(
            "it_dbschema", csv: housingHeader + "\n" + housingRows[0] + "\n" + housingRows[1] + "\n", sinkExtra: ", db_schema: \"it Sales\"")
        let plan = try pipectl(["plan", p.specPath])
        XCTAssertTrue(
            plan.output.contains("\nCREATE SCHEMA IF NOT EXISTS \"it Sales\";\nCREATE TABLE IF NOT EXISTS \"it Sales\".\"it_dbschema\" (\n"), plan.output)
        let run = try pipectl(["run", p.specPath])
        XCTAssertEqual(run.status, 0, run.output)
        XCTAssertEqual(try db.query("SELECT \"medv\"::text FROM \"it Sales\".\"it_dbschema\" ORDER BY \"medv\"").map { $0[0] }, ["21.6", "24"])
    }
}
