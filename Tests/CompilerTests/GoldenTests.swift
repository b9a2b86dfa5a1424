import Foundation
import HousingRecords
import PipelineCodegen
import PipelineCompiler
import XCTest

/// The plan and the generated files for pipelines/housing.yaml, compared byte for byte with
/// committed copies. After an intended change, regenerate them and review the diff:
///
///     UPDATE_GOLDEN=1 swift test --filter GoldenTests
///
/// which rewrites Tests/CompilerTests/Golden/plan.txt, plan.json, sql/housing.sql and
/// Sources/HousingRecords/Records.swift (the same files `pipectl generate pipelines/housing.yaml --out .` writes).
final class GoldenTests: XCTestCase {
    typealias F = CompilerFixtures

    static var updating: Bool { ProcessInfo.processInfo.environment["UPDATE_GOLDEN"] == "1" }

    /// Compares `actual` with the file at `path` (relative to the repository root), or rewrites it.
    func assertGolden(_ actual: String, _ path: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let full = F.root + "/" + path
        if Self.updating {
            try FileManager.default.createDirectory(
                atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try actual.write(toFile: full, atomically: true, encoding: .utf8)
            return
        }
        let expected = try String(contentsOfFile: full, encoding: .utf8)
        if actual != expected {
            let a = actual.components(separatedBy: "\n")
            let e = expected.components(separatedBy: "\n")
            let first = Array(zip(a, e)).firstIndex { $0 != $1 } ?? min(a.count, e.count)
            XCTFail(
                """
                \(path) differs at line \(first + 1) (run with UPDATE_GOLDEN=1 to regenerate):
                  expected: \(first < e.count ? e[first] : "<end of file>")
                  actual:   \(first < a.count ? a[first] : "<end of file>")
                """, file: file, line: line)
        }
    }

    func testPlanText() throws {
        try assertGolden(Plan(F.housing()).text, "Tests/CompilerTests/Golden/plan.txt")
    }

    func testPlanJSON() throws {
        // Encoded as `pipectl plan --json` does.
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let plan = Plan(try F.housing())
        let json = String(decoding: try encoder.encode(plan), as: UTF8.self) + "\n"
        try assertGolden(json, "Tests/CompilerTests/Golden/plan.json")
        // And it reads back as the same plan.
        XCTAssertEqual(try JSONDecoder().decode(Plan.self, from: Data(json.utf8)), plan)
    }

    func testGeneratedSQLMatchesTheCommittedFile() throws {
        let files = SQLFiles.files(for: try F.housing())
        XCTAssertEqual(files.map(\.name), ["housing.sql"])
        try assertGolden(files[0].text, "sql/housing.sql")
    }

    func testGeneratedSwiftRecordsMatchTheCommittedModule() throws {
        try assertGolden(SwiftRecords.generate(for: F.housing()), "Sources/HousingRecords/Records.swift")
    }

    func testPlanSummary() throws {
        let plan = Plan(try F.housing())
        XCTAssertEqual(plan.pipeline, "housing")
        XCTAssertEqual(plan.file, "pipelines/housing.yaml")
        XCTAssertEqual(plan.stages.map(\.name), ["housing_csv", "housing-data", "housing_rows", "housing_db"])
        XCTAssertEqual(plan.topics.map(\.name), ["housing-data"])
        XCTAssertEqual(plan.topics.map(\.partitions), [1])
        XCTAssertEqual(plan.topics.map(\.replicationFactor), [1])
        XCTAssertEqual(plan.topics.map(\.key), [["_record"]])
        XCTAssertEqual(plan.topics.map(\.brokers), ["127.0.0.1:9092"])
        XCTAssertEqual(plan.ddl.count, 9)  // schema, offsets and its claimed_at, sources and its checkpoint columns, dead letters and their index, table, index
        XCTAssertEqual(plan.ddl[0], #"CREATE SCHEMA IF NOT EXISTS "pipectl";"#)
    }
}

/// The generated `Housing` struct reads the rows the pipeline produces.
final class HousingRecordTests: XCTestCase {
    typealias F = CompilerFixtures

    func testDecodesTheFirstRowOfTheCSV() throws {
        let csv = try String(contentsOfFile: F.root + "/data/housing.csv", encoding: .utf8)
        let lines = csv.split(separator: "\n", maxSplits: 2).map(String.init)
        let header = lines[0].split(separator: ",").map(String.init)
        let values = lines[1].split(separator: ",").map(String.init)
        XCTAssertEqual(header, ["crim", "zn", "indus", "chas", "nox", "rm", "age", "dis", "rad", "tax", "ptratio", "b", "lstat", "medv"])
        // A row as the table holds it: the CSV's numbers plus the database-filled id and created_at.
        var fields = ["\"id\": 1", "\"created_at\": \"2024-05-01T12:00:00Z\""]
        for (name, value) in zip(header, values) { fields.append("\"\(name)\": \(value)") }
        let json = "{" + fields.joined(separator: ", ") + "}"

        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        let row = try decoder.decode(Housing.self, from: Data(json.utf8))
        XCTAssertEqual(row.id, 1)
        XCTAssertEqual(row.crim, 0.00632)
        XCTAssertEqual(row.zn, 18)
        XCTAssertEqual(row.indus, 2.31)
        XCTAssertEqual(row.chas, 0)
        XCTAssertEqual(row.nox, 0.538)
        XCTAssertEqual(row.rm, 6.575)
        XCTAssertEqual(row.age, 65.2)
        XCTAssertEqual(row.dis, 4.09)
        XCTAssertEqual(row.rad, 1)
        XCTAssertEqual(row.tax, 296)
        XCTAssertEqual(row.ptratio, 15.3)
        XCTAssertEqual(row.b, 396.9)
        XCTAssertEqual(row.lstat, 4.98)
        XCTAssertEqual(row.medv, 24)
        XCTAssertEqual(row.createdAt, Date(timeIntervalSince1970: 1_714_564_800))
        XCTAssertEqual(
            row,
            Housing(
                id: 1, crim: 0.00632, zn: 18, indus: 2.31, chas: 0, nox: 0.538, rm: 6.575, age: 65.2, dis: 4.09,
                rad: 1, tax: 296, ptratio: 15.3, b: 396.9, lstat: 4.98, medv: 24, createdAt: Date(timeIntervalSince1970: 1_714_564_800)))
    }

    func testNullableColumnsMayBeAbsent() throws {
        let row = try JSONDecoder().decode(Housing.self, from: Data(#"{"id": 7, "tax": 242}"#.utf8))
        XCTAssertEqual(row, Housing(id: 7, tax: 242))
        XCTAssertNil(row.crim)
    }
}
