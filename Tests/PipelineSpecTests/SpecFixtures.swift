import Foundation
import PipelineCompiler
import PipelineSpec

/// Specs as strings, and the diagnostics they produce, for tests that pin exact messages.
enum SpecFixtures {
    /// A small valid pipeline; the comments give line numbers so expected positions can be read off.
    static let people = """
        version: 1                                        # 1
        name: people                                      # 2
        description: People exported from the CRM         # 3
        sources:                                          # 4
          - name: people_csv                              # 5
            type: csv                                     # 6
            path: ../data/people.csv                      # 7
            batch_size: 500                               # 8
        topics:                                           # 9
          - name: people-data                             # 10
            from: people_csv                              # 11
            brokers: ${KAFKA_BROKERS:-localhost:9092}     # 12
            partitions: 3                                 # 13
        schemas:                                          # 14
          - name: person                                  # 15
            columns:                                      # 16
              - { name: id, type: bigserial, primary_key: true }
              - { name: full_name, type: text }           # 18
              - { name: age, type: integer }              # 19
        transforms:                                       # 20
          - name: person_rows                             # 21
            from: people-data                             # 22
            schema: person                                # 23
            casts:                                        # 24
              age: { type: integer, on_error: null }      # 25
        sinks:                                            # 26
          - name: person_db                               # 27
            type: postgres                                # 28
            from: person_rows                             # 29
            url: ${DATABASE_URL}                          # 30
            table: person                                 # 31

        """

    static let environment = ["DATABASE_URL": "postgresql://pipectl@db.internal/crm"]

    /// `text` with its 1-based line `line` replaced by `replacement` (which may span lines).
    static func editing(_ text: String, line: Int, to replacement: String) -> String {
        var lines = text.components(separatedBy: "\n")
        precondition(line >= 1 && line <= lines.count, "no line \(line)")
        lines[line - 1] = replacement
        return lines.joined(separator: "\n")
    }

    /// `text` without the 1-based lines in `lines`.
    static func removing(lines: ClosedRange<Int>, from text: String) -> String {
        text.components(separatedBy: "\n").enumerated().filter { !lines.contains($0.offset + 1) }.map(\.element)
            .joined(separator: "\n")
    }

    /// `text` with `inserted` added after line `line`.
    static func inserting(_ inserted: String, after line: Int, in text: String) -> String {
        var lines = text.components(separatedBy: "\n")
        lines.insert(inserted, at: line)
        return lines.joined(separator: "\n")
    }

    static func parser(environment: [String: String], files: [String: String] = [:]) -> SpecParser {
        SpecParser(
            environment: environment,
            readFile: { path in
                guard let text = files[path] else { throw CocoaError(.fileReadNoSuchFile) }
                return text
            })
    }

    /// Every diagnostic from parsing and compiling `text` as `spec.yaml`, one line each, in the
    /// order the CLI prints them; empty when the spec compiles.
    static func diagnostics(
        _ text: String, environment: [String: String] = SpecFixtures.environment, files: [String: String] = [:]
    ) -> [String] {
        do {
            let spec = try parser(environment: environment, files: files).parse(text: text, file: "spec.yaml")
            _ = try Compiler().compile(spec)
            return []
        } catch let error as DiagnosticError {
            return error.diagnostics.map(\.description)
        } catch {
            return ["unexpected error type: \(error)"]
        }
    }
}
