import PipelineCompiler
import PipelineSpec
import XCTest

/// What a valid spec compiles to: defaults filled in, names resolved, columns bound.
final class CompilerTests: XCTestCase {
    typealias F = CompilerFixtures

    func testDefaultsOfTopicsSourcesAndSinks() throws {
        let p = try F.compile(F.people)
        let topic = try XCTUnwrap(p.topic(named: "people-data"))
        XCTAssertEqual(topic.from, "people_csv")
        XCTAssertEqual(topic.brokers, "127.0.0.1:9092")
        XCTAssertEqual(topic.partitions, 1)
        XCTAssertEqual(topic.replicationFactor, 1)
        XCTAssertEqual(topic.format, "json")
        XCTAssertEqual(topic.key, ["_record"])
        XCTAssertEqual(topic.lingerMs, 5)
        XCTAssertEqual(topic.compression, "zstd")
        XCTAssertEqual(topic.batchBytes, 1_000_000)
        XCTAssertEqual(topic.messageMaxBytes, 1_000_000)
        XCTAssertEqual(topic.properties, [:])

        let source = try XCTUnwrap(p.source(named: "people_csv"))
        XCTAssertEqual(source.path, "../data/people.csv")
        XCTAssertEqual(source.resolvedPath, "../data/people.csv")
        XCTAssertEqual(source.delimiter, UInt8(ascii: ","))
        XCTAssertEqual(source.quote, UInt8(ascii: "\""))
        XCTAssertEqual(source.batchSize, 100)
        XCTAssertNil(source.rateLimit)

        let sink = try XCTUnwrap(p.sinks.first)
        XCTAssertEqual(sink.dbSchema, "public")
        XCTAssertEqual(sink.table, "person")
        XCTAssertEqual(sink.batchSize, 5000)
        XCTAssertEqual(sink.maxDelayMs, 200)
        XCTAssertEqual(sink.mode, .insert)
        XCTAssertEqual(sink.url, "")
    }

    func testStagesAreInTopologicalOrderAndFlowsRunSourceToSink() throws {
        // Declared sinks-first, so the order comes from the graph, not the file.
        let text = """
            version: 1
            name: backwards
            sinks:
              - { name: db, type: postgres, from: rows, table: t }
            transforms:
              - { name: rows, from: data, schema: t }
            schemas:
              - { name: t, columns: [{ name: a, type: text }] }
            topics:
              - { name: data, from: csv }
            sources:
              - { name: csv, type: csv, path: a.csv }

            """
        let p = try F.compile(text, file: "pipelines/backwards.yaml")
        XCTAssertEqual(p.stages.map(\.name), ["csv", "data", "rows", "db"])
        XCTAssertEqual(p.stages.map(\.kind), [.source, .topic, .transform, .sink])
        XCTAssertEqual(p.stages.map(\.inputs), [[], ["csv"], ["data"], ["rows"]])
        XCTAssertEqual(p.sources[0].resolvedPath, "pipelines/a.csv")
        let flow = try XCTUnwrap(p.flows.first)
        XCTAssertEqual(flow.source?.name, "csv")
        XCTAssertEqual(flow.topic.name, "data")
        XCTAssertEqual(flow.transforms.map(\.name), ["rows"])
        XCTAssertEqual(flow.sink.name, "db")
    }

    func testColumnsWithADatabaseDefaultAreLeftToTheDatabaseUnlessNamed() throws {
        let p = try F.compile(F.people)
        let t = try XCTUnwrap(p.transform(named: "person_rows"))
        // id is bigserial (generated); created_at has a default and is not named by the transform.
        XCTAssertEqual(t.bindings.map(\.column.name), ["full_name", "age", "born"])
        XCTAssertEqual(t.bindings.map(\.inputType), [.text, .text, .text])
        XCTAssertEqual(t.bindings.map(\.castType), [nil, .integer, nil])
        XCTAssertEqual(t.bindings.map(\.onCastError), [.deadLetter, .deadLetter, .deadLetter])

        let named = try F.compile(F.inserting("    defaults:\n      created_at: \"2024-01-01 00:00:00+00\"", after: 24, in: F.people))
        let bindings = try XCTUnwrap(named.transform(named: "person_rows")).bindings
        XCTAssertEqual(bindings.map(\.column.name), ["full_name", "age", "born", "created_at"])
        XCTAssertEqual(bindings.last?.defaultValue, "2024-01-01 00:00:00+00")
    }

    func testRenamesDropsNullIfAndLongFormCasts() throws {
        let text = F.editing(
            F.people, line: 24,
            to: """
                      age: { type: numeric, on_error: null }
                    rename: { birthday: born, name: full_name }
                    drop: [internal_id]
                    null_if: ["NA", "-"]
                    flatten: "__"
                """)
        let t = try XCTUnwrap(F.compile(text).transform(named: "person_rows"))
        XCTAssertEqual(t.renames, ["birthday": "born", "name": "full_name"])
        XCTAssertEqual(t.drops, ["internal_id"])
        XCTAssertEqual(t.nullIf, ["NA", "-"])
        XCTAssertEqual(t.flattenSeparator, "__")
        let age = try XCTUnwrap(t.bindings.first { $0.column.name == "age" })
        XCTAssertEqual(age.castType, .numeric(precision: nil, scale: nil))
        XCTAssertEqual(age.onCastError, .null)
    }

    func testTopicFieldTypesBecomeInputTypes() throws {
        let text = F.editing(F.people, line: 9, to: "    fields: { age: bigint, born: timestamptz }")
        let p = try F.compile(text)
        XCTAssertNil(p.topic(named: "people-data")?.from)
        let bindings = try XCTUnwrap(p.transform(named: "person_rows")).bindings
        XCTAssertEqual(bindings.map(\.inputType), [.text, .bigint, .timestamptz])
        XCTAssertNil(p.flows[0].source)
    }

    func testTopicPropertiesAndTuningAreKeptAsWritten() throws {
        let text = F.editing(
            F.people, line: 10,
            to: """
                    compression: gzip
                    linger_ms: 0
                    batch_bytes: 65536
                    message_max_bytes: 2_000_000
                    key: [full_name, born]
                    properties:
                      security.protocol: SASL_SSL
                      sasl.mechanism: SCRAM-SHA-512
                """)
        let topic = try XCTUnwrap(F.compile(text).topic(named: "people-data"))
        XCTAssertEqual(topic.compression, "gzip")
        XCTAssertEqual(topic.lingerMs, 0)
        XCTAssertEqual(topic.batchBytes, 65536)
        XCTAssertEqual(topic.messageMaxBytes, 2_000_000)
        XCTAssertEqual(topic.key, ["full_name", "born"])
        XCTAssertEqual(topic.properties, ["security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512"])
    }

    func testBookkeepingTablesAreNamespacedPerPipeline() throws {
        let b = try F.compile(F.people).bookkeeping
        XCTAssertEqual(Bookkeeping.schema, "pipectl")
        XCTAssertEqual([b.offsets, b.sources, b.deadLetters], ["people__offsets", "people__sources", "people__dead_letters"])
    }
}

final class DDLTests: XCTestCase {
    typealias F = CompilerFixtures

    func testInsertSinkGetsARecordIndex() throws {
        let sink = try XCTUnwrap(F.compile(F.people).sinks.first)
        XCTAssertEqual(
            DDL.table(for: sink),
            [
                """
                CREATE TABLE IF NOT EXISTS "public"."person" (
                    "id" bigserial PRIMARY KEY,
                    "full_name" text,
                    "age" integer,
                    "born" date,
                    "created_at" timestamptz DEFAULT now(),
                    "_pipectl_record" bigint
                );
                """,
                #"CREATE UNIQUE INDEX IF NOT EXISTS "person__pipectl_record" ON "public"."person" ("_pipectl_record");"#,
            ])
    }

    func testUpsertSinkGetsAUniqueKeyIndexInItsSchema() throws {
        var text = F.editing(F.people, line: 15, to: "      - { name: full_name, type: \"varchar(200)\", nullable: false, unique: true }")
        text = F.inserting("    db_schema: crm\n    mode: upsert\n    key: [full_name, born]", after: 29, in: text)
        let sink = try XCTUnwrap(F.compile(text).sinks.first)
        XCTAssertEqual(
            DDL.table(for: sink),
            [
                // A db_schema other than public may not exist yet: creating it is part of the plan.
                #"CREATE SCHEMA IF NOT EXISTS "crm";"#,
                """
                CREATE TABLE IF NOT EXISTS "crm"."person" (
                    "id" bigserial PRIMARY KEY,
                    "full_name" varchar(200) NOT NULL UNIQUE,
                    "age" integer,
                    "born" date,
                    "created_at" timestamptz DEFAULT now(),
                    "_pipectl_record" bigint
                );
                """,
                #"CREATE UNIQUE INDEX IF NOT EXISTS "person__pipectl_key" ON "crm"."person" ("full_name", "born");"#,
            ])
    }

    func testHostileIdentifiersAreQuoted() {
        XCTAssertEqual(SQL.quote("housing"), #""housing""#)
        XCTAssertEqual(SQL.quote(#"a"b"#), #""a""b""#)
        XCTAssertEqual(SQL.quote(#"x"; DROP TABLE y; --"#), #""x""; DROP TABLE y; --""#)
        XCTAssertEqual(SQL.quote(#""""#), #""""""""#)
        XCTAssertEqual(SQL.qualified("my schema", #"t"1"#), #""my schema"."t""1""#)
        XCTAssertEqual(SQL.literal("it's"), "'it''s'")
    }

    func testHostileTableNameStaysQuotedInDDL() throws {
        let text = F.editing(F.people, line: 29, to: #"    table: 'person"; DROP TABLE users; --'"#)
        let statements = DDL.table(for: try XCTUnwrap(F.compile(text).sinks.first))
        XCTAssertEqual(
            statements[0].components(separatedBy: "\n")[0],
            #"CREATE TABLE IF NOT EXISTS "public"."person""; DROP TABLE users; --" ("#)
        XCTAssertEqual(
            statements[1],
            #"CREATE UNIQUE INDEX IF NOT EXISTS "person""; DROP TABLE users; --__pipectl_record" ON "public"."person""; DROP TABLE users; --" ("_pipectl_record");"#
        )
    }
}
