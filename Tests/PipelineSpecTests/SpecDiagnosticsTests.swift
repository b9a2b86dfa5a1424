import PipelineSpec
import XCTest

/// Broken specs caught while reading the YAML (before compiling): each test pins the exact
/// `file:line:col: error: message` a user sees.
final class SpecDiagnosticsTests: XCTestCase {
    typealias F = SpecFixtures

    func testTheFixtureItselfIsValid() {
        XCTAssertEqual(F.diagnostics(F.people), [])
    }

    func testYAMLSyntaxErrorPointsAtTheBadLine() {
        let text = F.editing(F.people, line: 7, to: "   path: ../data/people.csv")
        XCTAssertEqual(
            F.diagnostics(text),
            [
                "spec.yaml:7:4: error: YAML syntax error: did not find expected '-' indicator while parsing a block collection"
            ])
    }

    func testUnclosedQuoteIsAYAMLSyntaxError() {
        let text = "version: 1\nname: \"people\n"
        XCTAssertEqual(
            F.diagnostics(text),
            [
                "spec.yaml:3:1: error: YAML syntax error: found unexpected end of stream while scanning a quoted scalar"
            ])
    }

    func testDuplicateYAMLKeyIsReported() {
        let text = F.inserting("    partitions: 6", after: 13, in: F.people)
        XCTAssertEqual(F.diagnostics(text), ["spec.yaml:13:5: error: duplicate key 'partitions' in a mapping"])
    }

    func testUnknownKeySuggestsTheClosestKnownKey() {
        let text = F.editing(F.people, line: 13, to: "    partitons: 3")
        XCTAssertEqual(
            F.diagnostics(text),
            [
                "spec.yaml:13:5: error: unknown key 'partitons' in topic 'people-data' (did you mean 'partitions'?)"
            ])
    }

    func testUnknownTopLevelKeySuggestsTheList() {
        let text = F.editing(F.people, line: 26, to: "sink:")
        XCTAssertEqual(
            F.diagnostics(text),
            [
                "spec.yaml:26:1: error: unknown key 'sink' in the pipeline spec (did you mean 'sinks'?)"
            ])
    }

    func testUnknownKeyFarFromAnyKnownKeyHasNoHint() {
        let text = F.editing(F.people, line: 8, to: "    colour: blue")
        XCTAssertEqual(F.diagnostics(text), ["spec.yaml:8:5: error: unknown key 'colour' in source 'people_csv'"])
    }

    func testWrongTypeForAWholeNumberField() {
        let text = F.editing(F.people, line: 13, to: "    partitions: many")
        XCTAssertEqual(
            F.diagnostics(text),
            [
                "spec.yaml:13:17: error: 'partitions' in topic 'people-data' must be a whole number, found 'many'"
            ])
    }

    func testNumberBelowItsMinimum() {
        let text = F.editing(F.people, line: 13, to: "    partitions: 0")
        XCTAssertEqual(
            F.diagnostics(text),
            [
                "spec.yaml:13:17: error: 'partitions' in topic 'people-data' must be at least 1, found 0"
            ])
    }

    func testMappingWhereAStringBelongs() {
        let text = F.editing(F.people, line: 31, to: "    table: { name: person }")
        XCTAssertEqual(
            F.diagnostics(text),
            [
                "spec.yaml:31:12: error: 'table' in sink 'person_db' must be a string, found a mapping"
            ])
    }

    func testMissingRequiredFieldPointsAtItsMapping() {
        let text = F.editing(F.people, line: 31, to: "")
        XCTAssertEqual(F.diagnostics(text), ["spec.yaml:27:5: error: missing required field 'table' in sink 'person_db'"])
    }

    func testMissingVersion() {
        let text = F.editing(F.people, line: 1, to: "# no version")
        XCTAssertEqual(F.diagnostics(text), ["spec.yaml:2:1: error: missing required field 'version' in the pipeline spec"])
    }

    func testUnsupportedVersion() {
        let text = F.editing(F.people, line: 1, to: "version: 2")
        XCTAssertEqual(F.diagnostics(text), ["spec.yaml:1:10: error: unsupported spec version 2; this pipectl reads version 1"])
    }

    func testUnsetEnvironmentVariableIsNamed() {
        XCTAssertEqual(
            F.diagnostics(F.people, environment: [:]),
            [
                "spec.yaml:30:10: error: environment variable 'DATABASE_URL' is not set (write ${DATABASE_URL:-default} to give a default)"
            ])
    }

    func testMalformedEnvironmentReference() {
        let text = F.editing(F.people, line: 30, to: "    url: ${DATABASE URL}")
        XCTAssertEqual(
            F.diagnostics(text),
            [
                "spec.yaml:30:10: error: '${DATABASE URL}' is not a valid environment reference; use ${NAME} or ${NAME:-default}"
            ])
    }

    func testUnknownSourceTypeSuggestsCSV() {
        let text = F.editing(F.people, line: 6, to: "    type: cvs")
        XCTAssertEqual(F.diagnostics(text), ["spec.yaml:6:11: error: unknown source type 'cvs' (did you mean 'csv'?); supported: csv"])
    }

    func testEmptyNameIsRefused() {
        let text = F.editing(F.people, line: 27, to: "  - name: \"\"")
        XCTAssertEqual(F.diagnostics(text), ["spec.yaml:27:11: error: sink name must not be empty"])
    }

    /// The inline schema of the fixture (lines 15-19) replaced by a reference to a file.
    static let withSchemaFile = F.editing(F.removing(lines: 16...19, from: F.people), line: 15, to: "  - ../schemas/person.yaml")

    func testMissingSchemaFileIsReportedWhereItIsReferenced() {
        XCTAssertEqual(
            F.diagnostics(Self.withSchemaFile),
            [
                "spec.yaml:15:5: error: cannot read schema file '../schemas/person.yaml': no such file"
            ])
    }

    func testErrorsInASchemaFileCarryThatFilesName() {
        let schema = """
            version: 1
            name: person
            colums:
              - { name: id, type: bigserial, primary_key: true }

            """
        XCTAssertEqual(
            F.diagnostics(Self.withSchemaFile, files: ["../schemas/person.yaml": schema]),
            [
                "../schemas/person.yaml:1:1: error: missing required field 'columns' in schema 'person'",
                "../schemas/person.yaml:3:1: error: unknown key 'colums' in schema 'person' (did you mean 'columns'?)",
            ])
    }

    func testEveryShapeErrorIsReportedInOneRunInFileOrder() {
        var text = F.editing(F.people, line: 8, to: "    batch_size: lots")
        text = F.editing(text, line: 13, to: "    partitons: 3")
        text = F.editing(text, line: 19, to: "      - { name: age, type: integer, nullable: sometimes }")
        text = F.editing(text, line: 28, to: "    type: postgress")
        XCTAssertEqual(
            F.diagnostics(text, environment: [:]),
            [
                "spec.yaml:8:17: error: 'batch_size' in source 'people_csv' must be a whole number, found 'lots'",
                "spec.yaml:13:5: error: unknown key 'partitons' in topic 'people-data' (did you mean 'partitions'?)",
                "spec.yaml:19:47: error: 'nullable' in column 'age' must be true or false, found 'sometimes'",
                "spec.yaml:28:11: error: unknown sink type 'postgress' (did you mean 'postgres'?); supported: postgres",
                "spec.yaml:30:10: error: environment variable 'DATABASE_URL' is not set (write ${DATABASE_URL:-default} to give a default)",
            ])
    }
}
