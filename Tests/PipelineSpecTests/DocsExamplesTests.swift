import Foundation
import PipelineCompiler
import PipelineSpec
import XCTest

/// docs/spec.md must not drift from the compiler: every ```yaml block in it is a complete
/// pipeline that compiles, and every ```yaml fragment block is at least well-formed YAML.
final class DocsExamplesTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    /// The environment the examples are checked under (they may use these variables without defaults).
    static let environment = [
        "KAFKA_BROKERS": "kafka-1:9092,kafka-2:9092",
        "DATABASE_URL": "postgresql://pipectl@db.internal:5432/warehouse",
        "KAFKA_USER": "pipectl",
        "KAFKA_PASSWORD": "not-a-secret",
        "DATA_DIR": "/srv/data",
    ]

    struct Block {
        var info: String
        /// 1-based line of the block's first YAML line in docs/spec.md.
        var line: Int
        var text: String
    }

    static func blocks(in markdown: String) -> [Block] {
        var blocks: [Block] = []
        var current: Block?
        for (index, line) in markdown.components(separatedBy: "\n").enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if var block = current {
                if trimmed == "```" {
                    blocks.append(block)
                    current = nil
                } else {
                    block.text += line + "\n"
                    current = block
                }
            } else if trimmed.hasPrefix("```yaml") {
                current = Block(info: String(trimmed.dropFirst(3)), line: index + 2, text: "")
            }
        }
        return blocks
    }

    func docsBlocks() throws -> [Block] {
        let text = try String(contentsOfFile: Self.root + "/docs/spec.md", encoding: .utf8)
        return Self.blocks(in: text)
    }

    func testEveryCompleteYAMLExampleCompiles() throws {
        let complete = try docsBlocks().filter { $0.info == "yaml" }
        XCTAssertGreaterThan(complete.count, 0, "docs/spec.md has no ```yaml examples to check")
        let root = Self.root
        // Examples live, as it were, in pipelines/: `../schemas/housing.yaml` is the real file.
        // The orders example reads ${DATA_DIR}, set here to a folder outside the project, as the
        // docs say it needs --allow-outside-project (HostileSpecTests prove the refusal).
        let parser = SpecParser(
            environment: Self.environment, allowOutsideProject: true,
            readFile: { path in
                try String(contentsOfFile: path.hasPrefix("/") ? path : root + "/" + path, encoding: .utf8)
            })
        for block in complete {
            do {
                let spec = try parser.parse(text: block.text, file: "pipelines/example.yaml")
                let pipeline = try Compiler().compile(spec)
                XCTAssertFalse(pipeline.stages.isEmpty, "docs/spec.md:\(block.line): example has no stages")
            } catch {
                XCTFail("docs/spec.md:\(block.line): example does not compile:\n\(error)")
            }
        }
    }

    func testEveryFragmentIsWellFormedYAML() throws {
        let fragments = try docsBlocks().filter { $0.info != "yaml" }
        XCTAssertEqual(Set(fragments.map(\.info)), ["yaml fragment"], "unexpected fence info strings")
        for block in fragments {
            var bag = DiagnosticBag()
            let tree = YAMLTree.parse(block.text, file: "docs/spec.md@\(block.line)", environment: Self.environment, diagnostics: &bag)
            XCTAssertNotNil(tree, "docs/spec.md:\(block.line): \(bag.diagnostics)")
            XCTAssertEqual(bag.diagnostics.map(\.description), [], "docs/spec.md:\(block.line)")
        }
    }

    func testBlockExtractionFindsFencesAndLines() {
        let markdown = "# T\n```yaml\nversion: 1\n```\ntext\n```yaml fragment\na: 1\n```\n```sh\nls\n```\n"
        let blocks = Self.blocks(in: markdown)
        XCTAssertEqual(blocks.map(\.info), ["yaml", "yaml fragment"])
        XCTAssertEqual(blocks.map(\.line), [3, 7])
        XCTAssertEqual(blocks.map(\.text), ["version: 1\n", "a: 1\n"])
    }
}
