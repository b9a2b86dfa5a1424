import PipelineCodegen
import PipelineCompiler
import PipelineSpec
import RecordFormats
import XCTest

/// Column types guessed from CSV samples, for `pipectl infer` and `pipectl init`.
final class SchemaInferenceTests: XCTestCase {
    typealias F = CompilerFixtures

    func infer(_ csv: String) throws -> [SchemaInference.InferredColumn] {
        try SchemaInference().infer(reader: CSVReader(bytes: Array(csv.utf8)))
    }

    /// "name type[?]" per column, `?` marking nullable ones.
    func summary(_ csv: String) throws -> [String] {
        try infer(csv).map { "\($0.name) \($0.type)\($0.nullable ? "?" : "")" }
    }

    func testHousingCSV() throws {
        let columns = try SchemaInference().infer(path: F.root + "/data/housing.csv")
        XCTAssertEqual(columns.map(\.name), ["crim", "zn", "indus", "chas", "nox", "rm", "age", "dis", "rad", "tax", "ptratio", "b", "lstat", "medv"])
        XCTAssertEqual(columns.filter { $0.type == .integer }.map(\.name), ["chas", "rad", "tax"])
        XCTAssertEqual(columns.filter { $0.type == .doublePrecision }.count, 11)
        XCTAssertEqual(columns.filter { $0.type != .integer && $0.type != .doublePrecision }.map(\.name), [])
        XCTAssertEqual(columns.filter(\.nullable).map(\.name), [])
    }

    func testZeroOneColumnIsIntegerNotBoolean() throws {
        XCTAssertEqual(try summary("flag\n0\n1\n1\n0\n"), ["flag integer"])
    }

    func testBooleanWords() throws {
        XCTAssertEqual(try summary("a,b,c\ntrue,yes,T\nfalse,no,f\nTRUE,Y,t\n"), ["a boolean", "b boolean", "c boolean"])
    }

    func testDatesAndTimestamps() throws {
        XCTAssertEqual(
            try summary(
                """
                day,at,us_day,mixed
                2024-01-31,2024-01-31 12:00:00,01/31/2024,2024-01-31
                2024-02-29,2024-02-01T08:30:00Z,02/29/2024,2024-02-01 10:00

                """), ["day date", "at timestamptz", "us_day date", "mixed timestamp"])
    }

    /// Identifiers with leading zeros (ZIP codes, USGS parameter codes) stay text: an integer
    /// column would store 07307 as 7307. A zero alone and decimals like 0.5 are still numbers.
    func testLeadingZerosKeepAColumnText() throws {
        XCTAssertEqual(try summary("zip,param_code\n07307,00060\n10001,00065\n"), ["zip text", "param_code text"])
        XCTAssertEqual(
            try summary("n,x,y,neg,signed\n0,0.5,-0.5,-0.25,+0\n12,1.5,2,-3,+7\n"),
            ["n integer", "x double precision", "y double precision", "neg double precision", "signed integer"])
        // Variant: a single padded value among plain numbers is enough, signed or not.
        XCTAssertEqual(try summary("code,delta\n5,-3\n12,-07\n042,4\n"), ["code text", "delta text"])
        XCTAssertEqual(try summary("ratio\n00.5\n1.25\n"), ["ratio text"])
    }

    /// A value with `Z` or an offset is an instant: timestamptz keeps it, timestamp would drop the zone.
    func testZonedTimestampsAreTimestamptz() throws {
        XCTAssertEqual(
            try summary("at,local\n2024-01-31T12:00:00Z,2024-01-31 12:00\n2024-02-01 08:30:00+02:00,2024-02-01 08:30\n"),
            ["at timestamptz", "local timestamp"])
        // Variant: the offset forms -0530 and +02, on one row of several.
        XCTAssertEqual(try summary("seen\n2024-03-01 10:00\n2024-03-01 10:00-0530\n2024-03-02 00:00+02\n"), ["seen timestamptz"])
    }

    /// `--date-order`: 03/05/2011 is 5 March by default (month first) and 3 May with dmy; the
    /// inferred column says which order it assumed, so the runtime reads it the same way.
    func testDateOrderIsAnOptionAndIsWrittenIntoTheSchema() throws {
        let csv = "sold_on,iso\n03/05/2011,2011-05-03\n25/12/2011,2011-12-25\n"
        // Month first, 25/12/2011 is no date: the column is text, not a wrong date.
        XCTAssertEqual(try summary(csv), ["sold_on text", "iso date"])
        var inference = SchemaInference()
        inference.dateOrder = .dmy
        let columns = try inference.infer(reader: CSVReader(bytes: Array(csv.utf8)))
        XCTAssertEqual(columns.map { "\($0.name) \($0.type) \($0.dateOrder?.rawValue ?? "-")" }, ["sold_on date dmy", "iso date -"])
        let yaml = SchemaInference.schemaYAML(name: "sales", columns: columns, from: "data/sales.csv")
        XCTAssertTrue(yaml.contains("  - { name: sold_on, type: date, nullable: false, date_order: dmy }\n"), yaml)
        XCTAssertTrue(yaml.contains("  - { name: iso, type: date, nullable: false }\n"), yaml)
        // The default order is written too, when it mattered.
        let us = try SchemaInference().infer(reader: CSVReader(bytes: Array("d\n03/05/2011\n12/31/2011\n".utf8)))
        XCTAssertEqual(us.map { "\($0.name) \($0.type) \($0.dateOrder?.rawValue ?? "-")" }, ["d date mdy"])
        // ymd refuses the ambiguous form altogether.
        inference.dateOrder = .ymd
        XCTAssertEqual(try inference.infer(reader: CSVReader(bytes: Array("d\n03/05/2011\n".utf8))).map(\.type), [.text])
    }

    func testBlanksMakeAColumnNullable() throws {
        XCTAssertEqual(try summary("a,b,c\n1,x,\n,y,\n3,,\n"), ["a integer?", "b text?", "c text?"])
    }

    func testShortRecordsMakeTheMissingColumnsNullable() throws {
        XCTAssertEqual(try summary("a,b\n1,2\n3\n"), ["a integer", "b integer?"])
    }

    func testNumbers() throws {
        XCTAssertEqual(
            try summary(
                """
                small,big,real,precise,sci
                1,3000000000,1.5,12345678901234567.5,1e5
                -2,-9000000000000000000,2,1,2.5E-3

                """), ["small integer", "big bigint", "real double precision", "precise numeric", "sci double precision"])
    }

    func testTextAndSpecialWords() throws {
        XCTAssertEqual(try summary("name,nan,code\nAnn,NaN,007\nBob,1.5,12x\n"), ["name text", "nan text", "code text"])
    }

    func testHeaderNamesAreNormalisedAndTheOriginalKept() throws {
        let columns = try infer("Price ($),price,a\"; DROP TABLE x; --\n1,2,3\n")
        XCTAssertEqual(columns.map(\.name), ["price", "price_2", "a_drop_table_x"])
        XCTAssertEqual(columns.map(\.header), ["Price ($)", "price", "a\"; DROP TABLE x; --"])
    }

    func testExtraFieldsGetNumberedNames() throws {
        XCTAssertEqual(try summary("a\n1,x\n"), ["a integer", "column_2 text"])
    }

    func testEmptyFileHasNoHeader() {
        XCTAssertThrowsError(try infer("")) { XCTAssertEqual("\($0)", "the file is empty: no header to name the columns") }
    }

    func testSchemaYAMLCompilesAndRecordsTheOriginalHeaders() throws {
        let columns = try infer("Price ($),sold\n1.5,2024-01-01\n,2024-01-02\n")
        let yaml = SchemaInference.schemaYAML(name: "sales", columns: columns, from: "data/sales.csv")
        XCTAssertEqual(
            yaml,
            """
            # Inferred by `pipectl init` from data/sales.csv; review the types before loading.
            version: 1
            name: sales
            columns:
              - { name: id, type: bigserial, primary_key: true }
              - { name: price, type: double precision }  # header: Price ($)
              - { name: sold, type: date, nullable: false }
              - { name: loaded_at, type: timestamptz, default: current_timestamp }

            """)
        let pipeline = SchemaInference.pipelineYAML(name: "sales", csvPath: "../data/sales.csv", delimiter: UInt8(ascii: ";"), columns: columns)
        let parser = SpecParser(
            environment: [:],
            readFile: { path in
                guard path == "schemas/sales.yaml" else { throw CSVError(message: "unexpected read of \(path)") }
                return yaml
            })
        let compiled = try Compiler().compile(parser.parse(text: pipeline, file: "pipelines/sales.yaml"))
        XCTAssertEqual(compiled.sources[0].delimiter, UInt8(ascii: ";"))
        XCTAssertEqual(compiled.sinks[0].table, "sales")
        XCTAssertEqual(compiled.transforms[0].bindings.map(\.column.name), ["price", "sold"])
    }
}
