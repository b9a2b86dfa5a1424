import Foundation
import PipelineCompiler
import PipelineSpec
import XCTest

/// Specs written to hurt: alias bombs, paths out of the project, files that are not YAML,
/// keys full of terminal escapes. Each must end in one short, exact diagnostic, quickly.
final class HostileSpecTests: XCTestCase {
    typealias F = SpecFixtures

    /// `depth` levels of nine aliases each ("billion laughs"): 9^depth strings from a few
    /// hundred bytes, fed to `sources:` so that every level would be walked.
    static func aliasBomb(depth: Int) -> String {
        var lines = ["version: 1", "name: bomb", #"a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]"#]
        for i in 1..<depth {
            lines.append("a\(i): &a\(i) [" + Array(repeating: "*a\(i - 1)", count: 9).joined(separator: ",") + "]")
        }
        lines.append("sources: *a\(depth - 1)")
        return lines.joined(separator: "\n") + "\n"
    }

    func assertAliasBombStopsFast(depth: Int) {
        let text = Self.aliasBomb(depth: depth)
        XCTAssertLessThan(text.utf8.count, 600)
        let started = Date()
        let diagnostics = F.diagnostics(text)
        let elapsed = Date().timeIntervalSince(started)
        // a4 is the first anchor whose expansion (9^5 strings plus its lists) passes 200,000 nodes.
        XCTAssertEqual(
            diagnostics,
            [
                #"spec.yaml:8:14: error: alias '*a4' expands the document past 200000 nodes (nested aliases, a "billion laughs" bomb?); write the values out instead"#
            ])
        XCTAssertLessThan(elapsed, 0.5, "depth \(depth) took \(elapsed) s")
    }

    func testAliasBombOfDepth7FailsFast() { assertAliasBombStopsFast(depth: 7) }
    func testAliasBombOfDepth10FailsFast() { assertAliasBombStopsFast(depth: 10) }

    /// The same bomb used as a mapping key: Yams hashes keys to find duplicates, which would
    /// expand it inside the YAML library, before pipectl ever saw the tree.
    func testAliasBombAsAMappingKeyFailsFast() {
        var text = Self.aliasBomb(depth: 10)
        text = text.replacingOccurrences(of: "sources: *a9\n", with: "? *a9\n: boom\n")
        let started = Date()
        XCTAssertEqual(
            F.diagnostics(text),
            [
                #"spec.yaml:8:14: error: alias '*a4' expands the document past 200000 nodes (nested aliases, a "billion laughs" bomb?); write the values out instead"#
            ])
        XCTAssertLessThan(Date().timeIntervalSince(started), 0.5)
    }

    func testTooManyAliasesAreRefusedAtTheFirstOneOverTheLimit() {
        let many = (0..<101).map { _ in "  - *b" }.joined(separator: "\n")
        let text = "version: 1\nname: x\nb: &b 1\nlist:\n\(many)\n"
        XCTAssertEqual(F.diagnostics(text), ["spec.yaml:105:5: error: more than 100 YAML aliases; write the values out instead"])
    }

    /// Aliases within the bounds still work: the topic's name reused as the transform's `from`.
    func testModestAliasesStillWork() throws {
        var text = F.editing(F.people, line: 10, to: "  - name: &topic people-data")
        text = F.editing(text, line: 22, to: "    from: *topic")
        let spec = try F.parser(environment: F.environment).parse(text: text, file: "spec.yaml")
        XCTAssertEqual(spec.transforms.map { $0.from?.value }, ["people-data"])
        XCTAssertEqual(F.diagnostics(text), [])
    }

    // MARK: keys and files that are not what they claim

    func testUnknownKeyIsQuotedAsAShortEscapedExcerpt() {
        let text = F.inserting(#"    "\e[31mred\a and a very long tail that goes on and on": 1"#, after: 13, in: F.people)
        XCTAssertEqual(
            F.diagnostics(text),
            [
                #"spec.yaml:14:5: error: unknown key '\u001B[31mred\u0007 and a very long tail that goes…' in topic 'people-data'"#
            ])
    }

    /// A scratch project: `root/pipelines/spec.yaml`, `root/schemas/`, and a folder beside the
    /// project standing for the rest of the machine.
    struct Scratch {
        let base: String
        var root: String { base + "/project" }
        var outside: String { base + "/elsewhere" }
        var spec: String { root + "/pipelines/spec.yaml" }

        init() throws {
            base = NSTemporaryDirectory() + "pipectl-hostile-\(UUID().uuidString)"
            for dir in [root + "/pipelines", root + "/schemas", outside] {
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            }
        }

        func write(_ text: String, to path: String) throws {
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        }

        func specReferencing(schema: String) -> String {
            """
            version: 1
            name: hostile
            schemas: [\(schema)]

            """
        }

        func diagnostics(allowOutsideProject: Bool) -> [String] {
            do {
                _ = try SpecParser(environment: [:], allowOutsideProject: allowOutsideProject).parse(path: spec)
                return []
            } catch let error as DiagnosticError {
                return error.diagnostics.map(\.description)
            } catch {
                return ["unexpected error type: \(error)"]
            }
        }
    }

    static let shadow = """
        root:*:19000:0:99999:7:::
        daemon:$6$pepper$0123456789abcdefghijklmnopqrstuvwxyz:19000:0:99999:7:::
        alice:$y$j9T$saltsaltsalt$hashhashhashhashhashhashhashhash:19000:0:99999:7:::

        """

    func testSchemaOutsideTheProjectIsRefusedNamingThePathAndTheOptIn() throws {
        let s = try Scratch()
        defer { try? FileManager.default.removeItem(atPath: s.base) }
        try s.write("name: t\ncolumns: [{ name: a, type: text }]\n", to: s.outside + "/t.yaml")
        try s.write(s.specReferencing(schema: "../../elsewhere/t.yaml"), to: s.spec)
        XCTAssertEqual(
            s.diagnostics(allowOutsideProject: false),
            [
                "\(s.spec):3:11: error: schema file '\(s.outside)/t.yaml' is outside the project folder '\(s.root)'; pass --allow-outside-project to read it"
            ])
        XCTAssertEqual(s.diagnostics(allowOutsideProject: true), [])
        let spec = try SpecParser(environment: [:], allowOutsideProject: true).parse(path: s.spec)
        XCTAssertEqual(spec.schemas.map { $0.columns.map(\.name.value) }, [["a"]])
    }

    func testSymlinkInsideTheProjectPointingOutIsRefused() throws {
        let s = try Scratch()
        defer { try? FileManager.default.removeItem(atPath: s.base) }
        try s.write("name: t\ncolumns: [{ name: a, type: text }]\n", to: s.outside + "/t.yaml")
        try FileManager.default.createSymbolicLink(atPath: s.root + "/schemas/t.yaml", withDestinationPath: s.outside + "/t.yaml")
        try s.write(s.specReferencing(schema: "../schemas/t.yaml"), to: s.spec)
        XCTAssertEqual(
            s.diagnostics(allowOutsideProject: false),
            [
                "\(s.spec):3:11: error: schema file '\(s.root)/schemas/t.yaml' is outside the project folder '\(s.root)'; pass --allow-outside-project to read it"
            ])
    }

    func testSourceOutsideTheProjectIsRefused() throws {
        let s = try Scratch()
        defer { try? FileManager.default.removeItem(atPath: s.base) }
        try s.write("version: 1\nname: x\nsources: [{ name: c, type: csv, path: /etc/passwd }]\n", to: s.spec)
        XCTAssertEqual(
            s.diagnostics(allowOutsideProject: false),
            [
                "\(s.spec):3:39: error: source file '/etc/passwd' is outside the project folder '\(s.root)'; pass --allow-outside-project to read it"
            ])
        XCTAssertEqual(s.diagnostics(allowOutsideProject: true), [])
    }

    /// `schemas: [.../shadow]` once printed every line of the file as an unknown key.
    func testAFileThatIsNotASchemaNeverHasItsLinesQuoted() throws {
        let s = try Scratch()
        defer { try? FileManager.default.removeItem(atPath: s.base) }
        try s.write(Self.shadow, to: s.outside + "/shadow")
        try s.write(s.specReferencing(schema: "../../elsewhere/shadow"), to: s.spec)
        let diagnostics = s.diagnostics(allowOutsideProject: true)
        XCTAssertEqual(
            diagnostics,
            [
                "\(s.spec):3:11: error: '\(s.outside)/shadow' is not a pipectl schema file: it has neither 'name' nor 'columns' at the top level"
            ])
        for line in Self.shadow.split(separator: "\n") {
            XCTAssertFalse(diagnostics.joined().contains(line.prefix(12)), "diagnostics quote '\(line)'")
        }
    }

    func testASpecThatIsNotASpecGetsOneLine() throws {
        let s = try Scratch()
        defer { try? FileManager.default.removeItem(atPath: s.base) }
        try s.write("root: x\ndaemon: y\n", to: s.spec)
        XCTAssertEqual(
            s.diagnostics(allowOutsideProject: false),
            [
                "\(s.spec):1:1: error: this is not a pipectl pipeline spec: none of version, name, description, sources, topics, schemas, transforms, sinks at the top level"
            ])
    }
}
