import PipelineCompiler
import PipelineSpec
import XCTest

/// Broken specs the compiler refuses: each test pins the exact `file:line:col: error: message`.
/// Line numbers refer to `CompilerFixtures.people`, whose comments number its lines.
final class CompilerDiagnosticsTests: XCTestCase {
    typealias F = CompilerFixtures

    func testTheFixtureItselfCompiles() {
        XCTAssertEqual(F.diagnostics(F.people), [])
    }

    func testCycleBetweenTransformsIsReportedOnceAtItsFirstStage() {
        let text = """
            version: 1
            name: loop
            topics:
              - name: events
            schemas:
              - { name: event, columns: [{ name: id, type: text }] }
            transforms:
              - { name: first, from: second, schema: event }
              - { name: second, from: first, schema: event }
            sinks:
              - { name: db, type: postgres, from: second, table: event }

            """
        XCTAssertEqual(F.diagnostics(text), ["spec.yaml:8:13: error: cycle in 'from:' links: first <- second <- first"])
    }

    func testTransformReadingItselfIsACycle() {
        let text = F.editing(F.people, line: 21, to: "    from: person_rows")
        XCTAssertEqual(F.diagnostics(text), ["spec.yaml:20:11: error: cycle in 'from:' links: person_rows <- person_rows"])
    }

    func testDanglingFromSuggestsTheClosestStage() {
        let text = F.editing(F.people, line: 21, to: "    from: peeple-data")
        XCTAssertEqual(
            F.diagnostics(text),
            [
                "spec.yaml:21:11: error: transform 'person_rows' reads from 'peeple-data', which is not defined (did you mean 'people-data'?)"
            ])
    }

    func testFromAStageOfTheWrongKind() {
        let text = F.editing(F.people, line: 28, to: "    from: people_csv")
        XCTAssertEqual(
            F.diagnostics(text),
            [
                "spec.yaml:28:11: error: sink 'person_db' reads from source 'people_csv'; it must read from a transform"
            ])
    }

    func testUnknownTypeSuggestsTheIntendedOneAndNothingElse() {
        // The cast of `age` (line 24) must not add a second error about the dropped column.
        let text = F.editing(F.people, line: 16, to: "      - { name: age, type: flaot }")
        XCTAssertEqual(F.diagnostics(text), ["spec.yaml:16:28: error: unknown type 'flaot' (did you mean 'float'?)"])
    }

    func testMalformedTypeArguments() {
        let text = F.editing(F.people, line: 16, to: "      - { name: age, type: \"numeric(5,7)\" }")
        XCTAssertEqual(F.diagnostics(text), ["spec.yaml:16:28: error: numeric scale must be between 0 and the precision 5, found 7"])
    }

    func testDuplicateStageNames() {
        let text = F.editing(F.people, line: 26, to: "  - name: people-data")
        XCTAssertEqual(
            F.diagnostics(text),
            [
                "spec.yaml:26:11: error: duplicate name 'people-data': topic 'people-data' is already defined at spec.yaml:8:11"
            ])
    }

    func testColumnsDifferingOnlyInCaseAreDuplicates() {
        let text = F.editing(F.people, line: 17, to: "      - { name: Age, type: date }")
        XCTAssertEqual(
            F.diagnostics(text),
            [
                "spec.yaml:17:17: error: duplicate column 'Age' in schema 'person' ('age' and 'Age' differ only in case): first defined at spec.yaml:16:17"
            ])
    }

    func testReservedRecordColumn() {
        let text = F.editing(F.people, line: 17, to: "      - { name: _pipectl_record, type: bigint }")
        XCTAssertEqual(
            F.diagnostics(text),
            [
                "spec.yaml:17:17: error: column name '_pipectl_record' is reserved for pipectl's record ids"
            ])
    }

    func testCastFromJSONBToDateIsRefused() {
        let text = F.editing(F.people, line: 24, to: "      born: jsonb")
        XCTAssertEqual(
            F.diagnostics(text),
            [
                "spec.yaml:24:13: error: cast of 'born' is not allowed: cannot cast jsonb to date (column 'born' is date)"
            ])
    }

    func testDeclaredJSONBFieldCannotFillADateColumn() {
        // An external topic (no `from:`) whose messages declare `born` as jsonb.
        let text = F.editing(F.people, line: 9, to: "    fields: { born: jsonb }")
        XCTAssertEqual(
            F.diagnostics(text),
            [
                "spec.yaml:9:21: error: field 'born' cannot fill column 'born': cannot cast jsonb to date"
            ])
    }

    func testUpsertWithoutKey() {
        let text = F.inserting("    mode: upsert", after: 29, in: F.people)
        XCTAssertEqual(
            F.diagnostics(text),
            [
                "spec.yaml:30:11: error: sink 'person_db' uses mode upsert and needs a 'key' naming the columns that identify a row"
            ])
    }

    func testUpsertKeyFilledByTheDatabase() {
        let text = F.inserting("    mode: upsert\n    key: [id]", after: 29, in: F.people)
        XCTAssertEqual(
            F.diagnostics(text),
            [
                "spec.yaml:31:11: error: upsert key column 'id' is filled by the database, so it cannot identify incoming rows"
            ])
    }

    func testSinkKeyMustBeAColumn() {
        let text = F.inserting("    mode: upsert\n    key: [full_nam]", after: 29, in: F.people)
        XCTAssertEqual(
            F.diagnostics(text),
            [
                "spec.yaml:31:11: error: key column 'full_nam' of sink 'person_db' is not a column of schema 'person' (did you mean 'full_name'?)"
            ])
    }

    func testUnknownWriteMode() {
        let text = F.inserting("    mode: upsret", after: 29, in: F.people)
        XCTAssertEqual(
            F.diagnostics(text),
            [
                "spec.yaml:30:11: error: unknown write mode 'upsret' (did you mean 'upsert'?); one of insert, upsert"
            ])
    }

    func testUnknownCompression() {
        let text = F.editing(F.people, line: 10, to: "    compression: zstdd")
        XCTAssertEqual(
            F.diagnostics(text),
            [
                "spec.yaml:10:18: error: unknown compression 'zstdd' (did you mean 'zstd'?); one of none, gzip, snappy, lz4, zstd"
            ])
    }

    func testBadPipelineName() {
        let text = F.editing(F.people, line: 2, to: "name: People-Pipeline")
        XCTAssertEqual(
            F.diagnostics(text),
            [
                "spec.yaml:2:7: error: pipeline name 'People-Pipeline' must be 1 to 40 of a-z, 0-9 and _, not starting with a digit (it names the bookkeeping tables)"
            ])
    }

    func testIllegalTopicName() {
        let text = F.editing(F.editing(F.people, line: 8, to: "  - name: people data"), line: 21, to: "    from: people data")
        XCTAssertEqual(
            F.diagnostics(text),
            [
                "spec.yaml:8:11: error: topic name 'people data' is not a legal Kafka topic name (1 to 249 of a-z, A-Z, 0-9, '.', '_', '-')"
            ])
    }

    func testUnknownSchemaReference() {
        let text = F.editing(F.people, line: 22, to: "    schema: persn")
        XCTAssertEqual(
            F.diagnostics(text),
            [
                "spec.yaml:22:13: error: transform 'person_rows' uses schema 'persn', which is not defined (did you mean 'person'?)"
            ])
    }

    func testCastOfANonColumn() {
        let text = F.editing(F.people, line: 24, to: "      agee: integer")
        XCTAssertEqual(
            F.diagnostics(text),
            [
                "spec.yaml:24:7: error: cast of 'agee' in transform 'person_rows': schema 'person' has no column 'agee' (did you mean 'age'?)"
            ])
    }

    func testCastOfAGeneratedColumn() {
        let text = F.editing(F.people, line: 24, to: "      id: integer")
        XCTAssertEqual(
            F.diagnostics(text),
            [
                "spec.yaml:24:7: error: column 'id' is bigserial and filled by the database; it takes no cast"
            ])
    }

    func testRenameToANonColumn() {
        let text = F.inserting("    rename: { birthday: bron }", after: 24, in: F.people)
        XCTAssertEqual(
            F.diagnostics(text),
            [
                "spec.yaml:25:25: error: transform 'person_rows' renames 'birthday' to 'bron', which is not a column of schema 'person' (did you mean 'born'?)"
            ])
    }

    func testInvalidTransformDefaultValue() {
        let text = F.inserting("    defaults:\n      age: ten", after: 24, in: F.people)
        XCTAssertEqual(F.diagnostics(text), ["spec.yaml:26:12: error: invalid default for column 'age': 'ten' is not a valid integer"])
    }

    func testColumnDefaultMustBeALiteralOrAKnownFunction() {
        let text = F.editing(F.people, line: 16, to: "      - { name: age, type: integer, default: \"0; DROP TABLE person\" }")
        XCTAssertEqual(
            F.diagnostics(text),
            [
                "spec.yaml:16:46: error: default '0; DROP TABLE person' of column 'age' must be a number, a 'quoted string', true, false, null or one of current_timestamp, current_date, current_time, localtimestamp, now(), gen_random_uuid()"
            ])
    }

    /// `default: "null"` (SQL's null; YAML's bare `null` means no default) on a NOT NULL column
    /// could only fail, and only in the database (adding it to a table that has rows): refused
    /// at validate.
    func testNullDefaultOfANotNullColumnIsRefused() {
        let text = F.editing(F.people, line: 16, to: "      - { name: age, type: integer, nullable: false, default: \"null\" }")
        XCTAssertEqual(
            F.diagnostics(text), ["spec.yaml:16:63: error: default null of column 'age' contradicts its NOT NULL; drop the default or make the column nullable"]
        )
        XCTAssertEqual(F.diagnostics(F.editing(F.people, line: 16, to: "      - { name: age, type: integer, default: null }")), [])
    }

    func testOnErrorNullNeedsANullableColumn() {
        var text = F.editing(F.people, line: 16, to: "      - { name: age, type: integer, nullable: false }")
        text = F.editing(text, line: 24, to: "      age: { type: integer, on_error: null }")
        XCTAssertEqual(F.diagnostics(text), ["spec.yaml:24:39: error: on_error: null for 'age', but the column is not nullable"])
    }

    func testOnErrorDefaultNeedsADefault() {
        let text = F.editing(F.people, line: 24, to: "      age: { type: integer, on_error: default }")
        XCTAssertEqual(
            F.diagnostics(text),
            [
                "spec.yaml:24:7: error: on_error: default for 'age', but transform 'person_rows' gives it no default"
            ])
    }

    func testUnknownOnError() {
        let text = F.editing(F.people, line: 24, to: "      age: { type: integer, on_error: skip }")
        XCTAssertEqual(F.diagnostics(text), ["spec.yaml:24:39: error: unknown on_error 'skip'; one of dead_letter, null, default"])
    }

    func testEveryCompileErrorIsReportedInOneRunInFileOrder() {
        var text = F.editing(F.people, line: 2, to: "name: 9people")
        text = F.editing(text, line: 9, to: "    from: people_cvs")
        text = F.editing(text, line: 10, to: "    compression: brotli")
        text = F.editing(text, line: 17, to: "      - { name: Age, type: dat }")
        text = F.editing(text, line: 24, to: "      agee: integer")
        text = F.inserting("    mode: upsert", after: 29, in: text)
        XCTAssertEqual(
            F.diagnostics(text),
            [
                "spec.yaml:2:7: error: pipeline name '9people' must be 1 to 40 of a-z, 0-9 and _, not starting with a digit (it names the bookkeeping tables)",
                "spec.yaml:9:11: error: topic 'people-data' reads from 'people_cvs', which is not defined (did you mean 'people_csv'?)",
                "spec.yaml:10:18: error: unknown compression 'brotli'; one of none, gzip, snappy, lz4, zstd",
                "spec.yaml:17:17: error: duplicate column 'Age' in schema 'person' ('age' and 'Age' differ only in case): first defined at spec.yaml:16:17",
                "spec.yaml:17:28: error: unknown type 'dat' (did you mean 'date'?)",
                "spec.yaml:24:7: error: cast of 'agee' in transform 'person_rows': schema 'person' has no column 'agee' (did you mean 'age'?)",
                "spec.yaml:30:11: error: sink 'person_db' uses mode upsert and needs a 'key' naming the columns that identify a row",
            ])
    }
}
