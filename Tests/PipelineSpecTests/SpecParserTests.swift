import PipelineSpec
import XCTest

/// What the parser reads from a valid spec: values, defaults and the positions kept for later errors.
final class SpecParserTests: XCTestCase {
    typealias F = SpecFixtures

    func parse(_ text: String, environment: [String: String] = F.environment, files: [String: String] = [:]) throws -> PipelineSpec {
        try F.parser(environment: environment, files: files).parse(text: text, file: "pipelines/people.yaml")
    }

    func testReadsEveryStageWithItsLocation() throws {
        let spec = try parse(F.people)
        XCTAssertEqual(spec.file, "pipelines/people.yaml")
        XCTAssertEqual(spec.directory, "pipelines")
        XCTAssertEqual(spec.version.value, 1)
        XCTAssertEqual(spec.name.value, "people")
        XCTAssertEqual(spec.name.location.description, "pipelines/people.yaml:2:7")

        XCTAssertEqual(spec.sources.map(\.name.value), ["people_csv"])
        XCTAssertEqual(spec.sources[0].csv.path.value, "../data/people.csv")
        XCTAssertEqual(spec.sources[0].csv.batchSize?.value, 500)
        XCTAssertEqual(spec.sources[0].csv.header, true)
        XCTAssertEqual(spec.sources[0].csv.null, "")

        XCTAssertEqual(spec.topics.map(\.name.value), ["people-data"])
        XCTAssertEqual(spec.topics[0].brokers?.value, "localhost:9092")
        XCTAssertEqual(spec.topics[0].brokers?.location.description, "pipelines/people.yaml:12:14")
        XCTAssertEqual(spec.topics[0].partitions?.value, 3)
        XCTAssertEqual(spec.topics[0].key.count, 0)

        XCTAssertEqual(spec.schemas.map(\.name.value), ["person"])
        XCTAssertEqual(spec.schemas[0].file, "pipelines/people.yaml")
        XCTAssertEqual(spec.schemas[0].columns.map(\.name.value), ["id", "full_name", "age"])
        XCTAssertEqual(spec.schemas[0].columns.map(\.type.value), ["bigserial", "text", "integer"])
        XCTAssertEqual(spec.schemas[0].columns[0].primaryKey?.value, true)

        XCTAssertEqual(spec.transforms[0].casts.map(\.field.value), ["age"])
        XCTAssertEqual(spec.transforms[0].casts[0].type.value, "integer")
        XCTAssertEqual(spec.sinks[0].url?.value, "postgresql://pipectl@db.internal/crm")
        XCTAssertEqual(spec.sinks[0].table?.value, "person")
    }

    func testYAMLNullWordsAreTextWhereTheFieldMeansText() throws {
        // `on_error: null` and `null: NULL` are values, not YAML's null.
        let spec = try parse(F.inserting("    null: NULL", after: 8, in: F.people))
        XCTAssertEqual(spec.sources[0].csv.null, "NULL")
        XCTAssertEqual(spec.transforms[0].casts[0].onError?.value, "null")
    }

    func testShortAndLongCastForms() throws {
        let text = F.editing(F.people, line: 25, to: "      age: int\n      full_name: { type: varchar(80), on_error: dead_letter }")
        let casts = try parse(text).transforms[0].casts
        XCTAssertEqual(casts.map(\.field.value), ["age", "full_name"])
        XCTAssertEqual(casts.map(\.type.value), ["int", "varchar(80)"])
        XCTAssertEqual(casts.map { $0.onError?.value }, [nil, "dead_letter"])
    }

    func testSchemaFilesAreResolvedAgainstTheSpecsFolder() throws {
        let text = F.editing(F.removing(lines: 16...19, from: F.people), line: 15, to: "  - ../schemas/person.yaml")
        let schema = "version: 1\nname: person\ncolumns:\n  - { name: id, type: serial }\n"
        let spec = try parse(text, files: ["schemas/person.yaml": schema])
        XCTAssertEqual(spec.schemas[0].file, "schemas/person.yaml")
        XCTAssertEqual(spec.schemas[0].columns[0].name.location.description, "schemas/person.yaml:4:13")
        XCTAssertEqual(spec.schemas[0].referencedAt.description, "pipelines/people.yaml:15:5")
    }

    func testPathJoiningKeepsMessagesShort() {
        XCTAssertEqual(SpecParser.join("pipelines", "../schemas/x.yaml"), "schemas/x.yaml")
        XCTAssertEqual(SpecParser.join("", "../x.yaml"), "../x.yaml")
        XCTAssertEqual(SpecParser.join("a/b", "/abs/./x.yaml"), "/abs/x.yaml")
        XCTAssertEqual(SpecParser.normalize("./a//b/../c"), "a/c")
        XCTAssertEqual(SpecParser.normalize("/../a"), "/a")
    }
}

final class InterpolationTests: XCTestCase {
    func expand(_ text: String, _ env: [String: String] = [:]) -> String {
        do { return try Interpolation.expand(text, environment: env) } catch let e as Interpolation.Failure {
            return "error: " + e.message
        } catch { return "unexpected: \(error)" }
    }

    func testVariables() {
        XCTAssertEqual(expand("${HOST}:9092", ["HOST": "kafka"]), "kafka:9092")
        XCTAssertEqual(expand("${HOST:-localhost}:9092"), "localhost:9092")
        XCTAssertEqual(expand("${HOST:-localhost}", ["HOST": ""]), "localhost")  // empty means unset when there is a default
        XCTAssertEqual(expand("${HOST}", ["HOST": ""]), "")
        XCTAssertEqual(expand("${A}-${B:-b}", ["A": "a"]), "a-b")
        XCTAssertEqual(expand("${URL:-postgresql://u@h:5432/db}"), "postgresql://u@h:5432/db")
    }

    func testLiteralDollarAndEscapes() {
        XCTAssertEqual(expand("costs $5"), "costs $5")
        XCTAssertEqual(expand("$${NOT_A_VAR}"), "${NOT_A_VAR}")
        XCTAssertEqual(expand("end$"), "end$")
    }

    func testFailures() {
        XCTAssertEqual(expand("${MISSING}"), "error: environment variable 'MISSING' is not set (write ${MISSING:-default} to give a default)")
        XCTAssertEqual(expand("${OPEN"), "error: unterminated '${' in '${OPEN'; write '$${' for a literal '${'")
        XCTAssertEqual(expand("${1X}"), "error: '${1X}' is not a valid environment reference; use ${NAME} or ${NAME:-default}")
    }
}

final class SuggestTests: XCTestCase {
    func testClosestNameWithinAnEditDistanceThatGrowsWithLength() {
        XCTAssertEqual(Suggest.closest(to: "flaot", in: ["float", "text", "date"]), "float")
        XCTAssertEqual(Suggest.closest(to: "FLOAT8", in: ["float8", "float4"]), "float8")
        XCTAssertEqual(Suggest.closest(to: "housing_csvv", in: ["housing_csv", "housing-data"]), "housing_csv")
        XCTAssertNil(Suggest.closest(to: "zebra", in: ["float", "text"]))
        // Replacing a whole one-letter name is not a typo.
        XCTAssertNil(Suggest.closest(to: "b", in: ["a", "id"]))
    }

    func testHint() {
        XCTAssertEqual(Suggest.hint(for: "sink", in: ["sinks", "sources"]), " (did you mean 'sinks'?)")
        XCTAssertEqual(Suggest.hint(for: "sinks", in: ["sinks"]), "")
        XCTAssertEqual(Suggest.hint(for: "qqq", in: ["sinks"]), "")
    }

    func testDiagnosticFormat() {
        let at = SourceLocation(file: "pipelines/housing.yaml", line: 12, column: 7)
        XCTAssertEqual(
            Diagnostic.error("unknown type 'flaot' (did you mean 'float'?)", at: at).description,
            "pipelines/housing.yaml:12:7: error: unknown type 'flaot' (did you mean 'float'?)")
        XCTAssertEqual(Diagnostic(.warning, at: nil, "no sinks").description, "warning: no sinks")
        let sorted = DiagnosticError([
            .error("b", at: SourceLocation(file: "a.yaml", line: 3, column: 1)),
            .error("a", at: SourceLocation(file: "a.yaml", line: 1, column: 9)),
            .error("z", at: nil),
        ])
        XCTAssertEqual(sorted.description, "error: z\na.yaml:1:9: error: a\na.yaml:3:1: error: b")
    }
}

final class FlowMappingCommaTests: XCTestCase {
    /// `{ type: numeric(10,2) }` splits at the comma; the error says to quote the value.
    func testUnquotedCommaInAFlowMappingGetsAQuotingHint() throws {
        let yaml = """
            version: 1
            name: s
            schemas:
              - name: s
                columns:
                  - { name: price, type: numeric(10,2) }
            """
        XCTAssertThrowsError(try SpecParser(environment: [:]).parse(text: yaml, file: "s.yaml")) { error in
            XCTAssertEqual(
                (error as? DiagnosticError)?.diagnostics.map(\.description),
                [
                    "s.yaml:6:41: error: unknown key '2)' in column 'price'; inside { } a value with a comma must be quoted, e.g. type: \"numeric(10,2)\""
                ])
        }
    }
}
