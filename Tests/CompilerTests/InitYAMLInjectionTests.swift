import PipelineCodegen
import PipelineCompiler
import PipelineSpec
import RecordFormats
import XCTest

/// `pipectl init` writes each renamed CSV header into a `# header:` comment. YAML ends a comment
/// at any line break, U+2028, U+2029 and U+0085 included, so a header once added a column
/// (`injected_ls text UNIQUE` reached the DDL). The generated schema must hold exactly the
/// CSV's columns whatever the header says.
final class InitYAMLInjectionTests: XCTestCase {
    static let payload = "  - { name: injected, type: text, unique: true }"

    /// The schema `init` writes for a CSV whose second header hides `payload` after `lineBreak`,
    /// read back through the spec parser and the compiler as `init` itself does.
    func columnsAndLine(lineBreak: String) throws -> (columns: [String], line: String) {
        let csv = "ok,\"x\(lineBreak)\(Self.payload)\"\n1,2\n"
        let inferred = try SchemaInference().infer(reader: CSVReader(bytes: Array(csv.utf8)))
        let yaml = SchemaInference.schemaYAML(name: "t", columns: inferred, from: "t.csv")
        let spec = "version: 1\nname: t\nschemas: [t.yaml]\n"
        let parser = SpecParser(
            environment: [:],
            readFile: { path in
                guard path == "t.yaml" else { throw CocoaError(.fileReadNoSuchFile) }
                return yaml
            })
        let pipeline = try Compiler().compile(parser.parse(text: spec, file: "spec.yaml"))
        let line = yaml.split(separator: "\n", omittingEmptySubsequences: false).first { $0.contains("# header:") }.map(String.init) ?? ""
        return (pipeline.schemas.flatMap { $0.columns.map(\.name) }, line)
    }

    func assertNoInjection(_ lineBreak: String, escaped: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let result = try columnsAndLine(lineBreak: lineBreak)
        XCTAssertEqual(result.columns, ["id", "ok", "x_name_injected_type_text_unique_true", "loaded_at"], file: file, line: line)
        XCTAssertEqual(
            result.line, "  - { name: x_name_injected_type_text_unique_true, type: integer, nullable: false }  # header: x\(escaped)\(Self.payload)",
            file: file, line: line)
    }

    func testLineSeparatorCannotAddAColumn() throws { try assertNoInjection("\u{2028}", escaped: #"\u2028"#) }
    func testParagraphSeparatorCannotAddAColumn() throws { try assertNoInjection("\u{2029}", escaped: #"\u2029"#) }
    func testNextLineCannotAddAColumn() throws { try assertNoInjection("\u{85}", escaped: #"\u0085"#) }
    func testCarriageReturnCannotAddAColumn() throws { try assertNoInjection("\r", escaped: #"\r"#) }
    func testNewlineCannotAddAColumn() throws { try assertNoInjection("\n", escaped: #"\n"#) }

    /// The CSV path goes into a quoted `path:` value of the pipeline: it must stay one scalar.
    func testCSVPathWithALineBreakStaysOneValue() throws {
        let yaml = SchemaInference.pipelineYAML(name: "t", csvPath: "../data/a\u{2028}b.csv", delimiter: UInt8(ascii: ","), columns: [])
        let path = yaml.split(separator: "\n").first { $0.contains("path:") }.map(String.init)
        XCTAssertEqual(path, #"    path: "../data/a\u2028b.csv""#)
        XCTAssertTrue(yaml.hasPrefix(#"# Made by `pipectl init`: loads ../data/a\u2028b.csv into table t."#))
    }
}
