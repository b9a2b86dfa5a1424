import Foundation
import PipelineCompiler
import PipelineSpec

/// Specs as strings, and what compiling them gives, for tests that pin exact results.
enum CompilerFixtures {
    /// The repository root, found from this file so tests run from any working directory.
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    /// A small valid pipeline; the comments give line numbers so expected positions can be read off.
    static let people = """
        version: 1                                        # 1
        name: people                                      # 2
        sources:                                          # 3
          - name: people_csv                              # 4
            type: csv                                     # 5
            path: ../data/people.csv                      # 6
        topics:                                           # 7
          - name: people-data                             # 8
            from: people_csv                              # 9
            compression: zstd                             # 10
        schemas:                                          # 11
          - name: person                                  # 12
            columns:                                      # 13
              - { name: id, type: bigserial, primary_key: true }
              - { name: full_name, type: text }           # 15
              - { name: age, type: integer }              # 16
              - { name: born, type: date }                # 17
              - { name: created_at, type: timestamptz, default: now() }
        transforms:                                       # 19
          - name: person_rows                             # 20
            from: people-data                             # 21
            schema: person                                # 22
            casts:                                        # 23
              age: integer                                # 24
        sinks:                                            # 25
          - name: person_db                               # 26
            type: postgres                                # 27
            from: person_rows                             # 28
            table: person                                 # 29

        """

    /// `text` with its 1-based line `line` replaced by `replacement` (which may span lines).
    static func editing(_ text: String, line: Int, to replacement: String) -> String {
        var lines = text.components(separatedBy: "\n")
        precondition(line >= 1 && line <= lines.count, "no line \(line)")
        lines[line - 1] = replacement
        return lines.joined(separator: "\n")
    }

    /// `text` with `inserted` added after line `line`.
    static func inserting(_ inserted: String, after line: Int, in text: String) -> String {
        var lines = text.components(separatedBy: "\n")
        lines.insert(inserted, at: line)
        return lines.joined(separator: "\n")
    }

    /// Reads files relative to the repository root, so `pipelines/housing.yaml` works from anywhere.
    static func parser(environment: [String: String] = [:]) -> SpecParser {
        let root = Self.root
        return SpecParser(
            environment: environment,
            readFile: { path in
                try String(contentsOfFile: path.hasPrefix("/") ? path : root + "/" + path, encoding: .utf8)
            })
    }

    static func compile(_ text: String, file: String = "spec.yaml") throws -> Pipeline {
        try Compiler().compile(parser().parse(text: text, file: file))
    }

    /// Every diagnostic from parsing and compiling `text`, one line each, in the order the CLI
    /// prints them; empty when the spec compiles.
    static func diagnostics(_ text: String) -> [String] {
        do {
            _ = try compile(text)
            return []
        } catch let error as DiagnosticError {
            return error.diagnostics.map(\.description)
        } catch {
            return ["unexpected error type: \(error)"]
        }
    }

    /// pipelines/housing.yaml compiled with an empty environment, so defaults apply and output
    /// does not depend on the machine running the tests.
    static func housing() throws -> Pipeline {
        try Compiler().compile(parser().parse(path: "pipelines/housing.yaml"))
    }
}
