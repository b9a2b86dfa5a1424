import Foundation
import PipelineCompiler
import PipelineSpec
import XCTest

/// The DAG shapes `run` executes: chains of transforms, one topic read by several sinks,
/// several sources into one topic; what the compiler refuses; and what `plan` says about them.
final class DAGCompilerTests: XCTestCase {
    /// Headers by source name, so no file is read.
    static let headers: [String: [String]] = [
        "a_csv": ["Full Name", "Age", "Town"],
        "b_csv": ["Full Name", "Age", "Town"],
        "c_csv": ["name", "years"],
    ]

    func compile(_ text: String) throws -> Pipeline {
        let parser = SpecParser(environment: [:], readFile: { _ in "" })
        return try Compiler(readHeader: { Self.headers[$0.name] }).compile(parser.parse(text: text, file: "dag.yaml"))
    }

    func diagnostics(_ text: String) -> [String] {
        do {
            _ = try compile(text)
            return []
        } catch let error as DiagnosticError {
            return error.diagnostics.map(\.description)
        } catch {
            return ["unexpected error type: \(error)"]
        }
    }

    /// topic -> person_rows -> adult_rows -> adults_db; line numbers in the comments.
    static let chain = """
        version: 1                                        # 1
        name: dag                                         # 2
        sources:                                          # 3
          - { name: a_csv, type: csv, path: a.csv }       # 4
        topics:                                           # 5
          - { name: people, from: a_csv }                 # 6
        schemas:                                          # 7
          - name: person                                  # 8
            columns:                                      # 9
              - { name: full_name, type: text }           # 10
              - { name: age, type: integer }              # 11
          - name: adult                                   # 12
            columns:                                      # 13
              - { name: who, type: text, nullable: false }
              - { name: age, type: bigint }               # 15
        transforms:                                       # 16
          - { name: person_rows, from: people, schema: person, drop: [Town] }
          - { name: adult_rows, from: person_rows, schema: adult, rename: { full_name: who } }
        sinks:                                            # 19
          - { name: adults_db, type: postgres, from: adult_rows, table: adults }

        """

    /// The second transform reads the first one's output columns: its bindings are keyed by
    /// those column names (its rename applied), the sink's column list is the last schema's.
    func testChainOfTwoTransformsBindsTheSecondToTheFirstOnesColumns() throws {
        let p = try compile(Self.chain)
        let flow = p.flow(for: p.sinks[0])
        XCTAssertEqual(flow.transforms.map(\.name), ["person_rows", "adult_rows"])
        XCTAssertEqual(flow.sources.map(\.name), ["a_csv"])
        XCTAssertEqual(flow.consumerGroup, "pipectl.dag.adults_db")
        XCTAssertEqual(flow.transforms[0].bindings.map(\.key), ["Full Name", "Age"])
        XCTAssertEqual(flow.transforms[1].bindings.map(\.key), ["full_name", "age"])
        XCTAssertEqual(flow.transforms[1].bindings.map(\.inputType), [.text, .integer], "typed as the first transform's columns")
        XCTAssertEqual(p.sinks[0].columnList, #""who", "age", "_pipectl_record""#)
        XCTAssertEqual(p.warnings.map(\.description), [])
        XCTAssertEqual(p.sends.map { "\($0.source.name)->\($0.topic.name)" }, ["a_csv->people"])
    }

    /// Transforms may be declared downstream first: they are compiled upstream first.
    func testChainDeclaredOutOfOrderCompilesTheSame() throws {
        let swapped = CompilerFixtures.editing(
            CompilerFixtures.editing(Self.chain, line: 17, to: "  - { name: adult_rows, from: person_rows, schema: adult, rename: { full_name: who } }"),
            line: 18, to: "  - { name: person_rows, from: people, schema: person, drop: [Town] }")
        let p = try compile(swapped)
        XCTAssertEqual(p.transforms.map(\.name), ["adult_rows", "person_rows"])
        XCTAssertEqual(p.flow(for: p.sinks[0]).transforms.map(\.name), ["person_rows", "adult_rows"])
        XCTAssertEqual(p.transform(named: "adult_rows")?.bindings.map(\.key), ["full_name", "age"])
    }

    /// A column of the second transform that no output column of the first fills is refused
    /// at the schema line, as for a CSV header; an output column nothing takes is a warning.
    func testChainColumnNoUpstreamColumnFillsIsRefusedAtItsLine() {
        let text = CompilerFixtures.editing(Self.chain, line: 18, to: "  - { name: adult_rows, from: person_rows, schema: adult }")
        XCTAssertEqual(
            diagnostics(text),
            [
                "dag.yaml:14:17: error: no field of transform 'person_rows' fills column 'who' of schema 'adult', which is not nullable; the fields are full_name, age",
                "dag.yaml:18:5: warning: field 'full_name' of transform 'person_rows' fills no column of schema 'adult' and is not loaded (add a column, list it in 'drop', or set on_unknown_field: ignore)",
            ])
    }

    /// An upsert sink behind a chain keys its topic by the CSV field that fills its key
    /// column, traced back through every transform's renames.
    func testUpsertKeyBehindAChainKeysTheTopicByTheSourceField() throws {
        let text = Self.chain.replacingOccurrences(
            of: "{ name: adults_db, type: postgres, from: adult_rows, table: adults }",
            with: "{ name: adults_db, type: postgres, from: adult_rows, table: adults, mode: upsert, key: [who] }")
        let p = try compile(text)
        XCTAssertEqual(p.topic(named: "people")?.key, ["Full Name"])
    }

    /// The plan says what `run` does: the file sent once, each consumer group's chain.
    func testPlanShowsTheSendAndTheChainOfEachGroup() throws {
        let text = Plan(try compile(Self.chain)).text
        XCTAssertTrue(
            text.contains(
                """
                Run (each source sent once; one consumer group per sink, side by side):
                  send     a.csv (a_csv) -> topic people
                  consume  topic people -> person_rows -> adult_rows -> "public"."adults" in group pipectl.dag.adults_db

                """), text)
    }

    /// One topic, two sinks: one send, two consumer groups.
    func testTopicReadByTwoSinksIsSentOnceAndConsumedByTwoGroups() throws {
        let text =
            Self.chain + """
                  - { name: people_db, type: postgres, from: person_rows, table: people }

                """
        let p = try compile(text)
        XCTAssertEqual(p.sends.count, 1)
        XCTAssertEqual(p.flows.map(\.consumerGroup), ["pipectl.dag.adults_db", "pipectl.dag.people_db"])
        XCTAssertEqual(p.flows.map(\.topic.name), ["people", "people"])
        XCTAssertEqual(p.sinks[1].columnList, #""full_name", "age", "_pipectl_record""#)
        let plan = Plan(p)
        XCTAssertEqual(plan.sends.map { "\($0.source) \($0.path) \($0.topic)" }, ["a_csv a.csv people"])
        XCTAssertEqual(plan.consumers.map(\.group), ["pipectl.dag.adults_db", "pipectl.dag.people_db"])
        XCTAssertTrue(plan.text.contains("  consume  topic people -> person_rows -> \"public\".\"people\" in group pipectl.dag.people_db\n"), plan.text)
    }

    /// Two sources in one topic's `from:`: both sent (in that order), the topic stage reads both.
    func testTwoSourcesIntoOneTopic() throws {
        var text = CompilerFixtures.editing(Self.chain, line: 4, to: "  - { name: a_csv, type: csv, path: a.csv }\n  - { name: b_csv, type: csv, path: b.csv }")
        text = text.replacingOccurrences(of: "{ name: people, from: a_csv }", with: "{ name: people, from: [a_csv, b_csv] }")
        let p = try compile(text)
        XCTAssertEqual(p.topic(named: "people")?.sources, ["a_csv", "b_csv"])
        XCTAssertEqual(p.topic(named: "people")?.from, "a_csv")
        XCTAssertEqual(p.sends.map { "\($0.source.name)->\($0.topic.name)" }, ["a_csv->people", "b_csv->people"])
        XCTAssertEqual(p.stages.first { $0.name == "people" }?.inputs, ["a_csv", "b_csv"])
        XCTAssertEqual(p.flows[0].sources.map(\.name), ["a_csv", "b_csv"])
        XCTAssertTrue(Plan(p).text.contains("  send     a.csv (a_csv) -> topic people\n  send     b.csv (b_csv) -> topic people\n"))
    }

    /// What `run` cannot do is refused at its line: one source into two topics, sources of one
    /// topic with different headers, a source listed twice.
    func testRefusesWhatRunCannotDo() {
        let twoTopics = CompilerFixtures.editing(Self.chain, line: 6, to: "  - { name: people, from: a_csv }\n  - { name: people2, from: a_csv }")
        XCTAssertEqual(
            diagnostics(twoTopics),
            [
                "dag.yaml:7:28: error: source 'a_csv' feeds topic 'people' already; a source feeds one topic (its send checkpoint and record ids belong to the file), so list both topics' readers under 'people' or add a second source"
            ])
        var headers = CompilerFixtures.editing(
            Self.chain, line: 4, to: "  - { name: a_csv, type: csv, path: a.csv }\n  - { name: c_csv, type: csv, path: c.csv }")
        headers = headers.replacingOccurrences(of: "{ name: people, from: a_csv }", with: "{ name: people, from: [a_csv, c_csv] }")
        XCTAssertEqual(
            diagnostics(headers),
            [
                "dag.yaml:7:35: error: sources 'a_csv' and 'c_csv' of topic 'people' have different fields (Full Name, Age, Town and name, years); sources sharing a topic must have the same header"
            ])
        let twice = Self.chain.replacingOccurrences(of: "{ name: people, from: a_csv }", with: "{ name: people, from: [a_csv, a_csv] }")
        XCTAssertEqual(diagnostics(twice), ["dag.yaml:6:35: error: topic 'people' lists source 'a_csv' twice in 'from:'"])
    }
}
