import Foundation
import KafkaAdapter
import PipectlTestSupport
import PipelineCompiler
import PipelineRuntime
import PipelineSpec
import PostgresAdapter
import XCTest

/// Issue 8, "right values or a loud refusal": real-world files against the real broker and
/// PostgreSQL, asserting the values stored, not only the counts.
final class ValuesTests: XCTestCase {
    func rows(_ db: PostgresConnection, _ sql: String) throws -> [[String]] {
        try db.query(sql).map { $0.map { $0 ?? "NULL" } }
    }

    /// Kind 1: a schema that spells its columns as the header does (mixed case, a space,
    /// non-ASCII, a SQL keyword) gets every value, not four NULLs.
    func testColumnsNamedAsTheHeaderIsWrittenGetTheirValues() throws {
        var p = try TestPipeline("it_names", csv: "UserId,Order Date,Größe,名前,select\n7,2024-01-31,XL,山田,x\n8,2024-02-29,S,Ann,\"y,z\"\n")
        p.schemaColumns = """
              - { name: UserId, type: integer, nullable: false }
              - { name: Order Date, type: date }
              - { name: Größe, type: text }
              - { name: 名前, type: text }
              - { name: select, type: text }
            """
        try p.write()
        XCTAssertEqual(try pipectl(["validate", p.specPath]).output, "ok\n")
        let run = try pipectl(["run", p.specPath])
        XCTAssertEqual(run.status, 0, run.output)
        XCTAssertTrue(run.output.contains("reconciled:         yes"), run.output)
        let db = try TestStack.connect()
        XCTAssertEqual(
            try rows(db, "SELECT \"UserId\"::text, \"Order Date\"::text, \"Größe\", \"名前\", \"select\" FROM \"it_names\" ORDER BY 1"),
            [["7", "2024-01-31", "XL", "山田", "x"], ["8", "2024-02-29", "S", "Ann", "y,z"]])
    }

    /// Kind 2: a day-2 file with a field the schema does not have (`email`), in another column
    /// order: the run warns once naming it, counts it in the summary, and loads the rest right.
    func testNewFieldIsNamedInAWarningAndCountedInTheSummary() throws {
        var p = try TestPipeline("it_newfield", csv: "name,email,cust_id\nAnn,ann@example.com,1\nBo,bo@example.com,2\n")
        p.schemaColumns = """
              - { name: cust_id, type: integer, nullable: false }
              - { name: name, type: text }
            """
        try p.write()
        let run = try pipectl(["run", p.specPath])
        XCTAssertEqual(run.status, 0, run.output)
        XCTAssertTrue(run.output.contains("warning: field 'email' of "), run.output)
        XCTAssertTrue(
            run.output.contains("fills no column of schema 'it_newfield' and is not loaded (add a column, list it in 'drop', or set on_unknown_field: ignore)"),
            run.output)
        XCTAssertTrue(run.output.contains("  fields not loaded:  1 (email): no column takes them; see on_unknown_field\n"), run.output)
        XCTAssertEqual(try rows(try TestStack.connect(), "SELECT \"cust_id\"::text, \"name\" FROM \"it_newfield\" ORDER BY 1"), [["1", "Ann"], ["2", "Bo"]])
    }

    /// Kind 1, variant: normalised column names still match; a NOT NULL column no field fills
    /// stops `run` before anything is sent, naming the column, the fields and a did-you-mean.
    func testUnfilledNotNullColumnStopsTheRunBeforeSending() throws {
        var p = try TestPipeline("it_unfilled", csv: "E-Mail,Zip Code\na@example.com,07307\n")
        p.schemaColumns = """
              - { name: e_mail, type: text }
              - { name: zipcode, type: text, nullable: false }
            """
        try p.write()
        let run = try pipectl(["run", p.specPath])
        XCTAssertEqual(run.status, 1, run.output)
        XCTAssertEqual(
            run.output.replacingOccurrences(of: p.dir + "/", with: ""),
            """
            it_unfilled.yaml:11:15: error: no field of it_unfilled.csv fills column 'zipcode' of schema 'it_unfilled', which is not nullable; the fields are E-Mail, Zip Code (did you mean 'Zip Code'?)
            it_unfilled.yaml:13:5: warning: field 'Zip Code' of it_unfilled.csv fills no column of schema 'it_unfilled' and is not loaded (add a column, list it in 'drop', or set on_unknown_field: ignore)

            """)
        let db = try TestStack.connect()
        XCTAssertEqual(try db.int("SELECT count(*) FROM pg_tables WHERE tablename = 'it_unfilled'"), 0)
        // Named as normalised, the same file loads its exact values.
        p.schemaColumns = """
              - { name: e_mail, type: text }
              - { name: zip_code, type: text, nullable: false }
            """
        try p.write()
        let fixed = try pipectl(["run", p.specPath])
        XCTAssertEqual(fixed.status, 0, fixed.output)
        XCTAssertEqual(try rows(db, "SELECT \"e_mail\", \"zip_code\" FROM \"it_unfilled\""), [["a@example.com", "07307"]])
    }

    /// Kind 3: `init` keeps leading zeros as text, zoned instants as timestamptz, and with
    /// `--date-order dmy` stores 03/05/2011 as 3 May; the schema says which order it assumed.
    func testInitKeepsLeadingZerosZonesAndTheDateOrder() throws {
        let state = try TestStack.require()
        let dir = NSTemporaryDirectory() + "pipectl-it-\(getpid())-init"
        try FileManager.default.createDirectory(atPath: dir + "/data", withIntermediateDirectories: true)
        try "zip,param_code,sold_on,at,qty\n07307,00060,03/05/2011,2024-01-31T23:30:00Z,0\n10001,00065,25/12/2011,2024-02-01 08:30:00+02:00,12\n"
            .write(toFile: dir + "/data/it_init.csv", atomically: true, encoding: .utf8)
        let initialised = try pipectl(["init", "it_init", "--csv", dir + "/data/it_init.csv", "--project", dir, "--date-order", "dmy"])
        XCTAssertEqual(initialised.status, 0, initialised.output)
        let schema = try String(contentsOfFile: dir + "/schemas/it_init.yaml", encoding: .utf8)
        XCTAssertTrue(
            schema.contains(
                """
                  - { name: zip, type: text, nullable: false }
                  - { name: param_code, type: text, nullable: false }
                  - { name: sold_on, type: date, nullable: false, date_order: dmy }
                  - { name: at, type: timestamptz, nullable: false }
                  - { name: qty, type: integer, nullable: false }
                """), schema)
        let env = ["KAFKA_BROKERS": state.kafkaBrokers, "DATABASE_URL": state.databaseURL]
        let run = try pipectl(["run", dir + "/pipelines/it_init.yaml"], environment: env)
        XCTAssertEqual(run.status, 0, run.output)
        let db = try TestStack.connect()
        _ = try db.query("SET TIME ZONE 'UTC'")
        XCTAssertEqual(
            try rows(db, "SELECT \"zip\", \"param_code\", \"sold_on\"::text, \"at\"::text, \"qty\"::text FROM \"it_init\" ORDER BY 1"),
            [
                ["07307", "00060", "2011-05-03", "2024-01-31 23:30:00+00", "0"],
                ["10001", "00065", "2011-12-25", "2024-02-01 06:30:00+00", "12"],
            ])
    }

    /// Kind 4: 5 products priced 20 times, 3 partitions, upsert by sku. The topic is keyed by
    /// sku, so every product ends at its last version; the summary counts inserts and updates.
    func testUpsertAcrossPartitionsKeepsTheLastVersionOfEveryKey() throws {
        var csv = "sku,version,price\n"
        for version in 1...20 { for product in 1...5 { csv += "S\(product),\(version),\(product * 100 + version).50\n" } }
        var p = try TestPipeline.written(
            "it_upsert_parts", csv: csv, partitions: 3, sourceBatch: 7, sinkBatch: 9, schemaColumns: TestPipeline.skuVersionPriceColumns,
            sinkExtra: ", mode: upsert, key: [sku]")
        XCTAssertTrue(try pipectl(["plan", p.specPath]).output.contains("it_upsert_parts-data  partitions=3 replication_factor=1 format=json key=sku "))
        let run = try pipectl(["run", p.specPath])
        XCTAssertEqual(run.status, 0, run.output)
        let db = try TestStack.connect()
        XCTAssertEqual(
            try rows(db, "SELECT \"sku\", \"version\"::text, \"price\"::text FROM \"it_upsert_parts\" ORDER BY 1"),
            (1...5).map { ["S\($0)", "20", "\($0 * 100 + 20).50"] })
        XCTAssertTrue(run.output.contains("rows inserted:      5\n"), run.output)
        XCTAssertTrue(run.output.contains("rows updated:       95 "), run.output)
        XCTAssertTrue(run.output.contains("reconciled:         yes (100 read = 5 inserted + 95 updated + 0 dead-lettered)"), run.output)
        // Variant: keyed by the record id, the same spec is refused before anything runs.
        p.topicExtra = ", key: [_record]"
        try p.write()
        let refused = try pipectl(["validate", p.specPath])
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(
            refused.output.contains(
                "error: topic 'it_upsert_parts-data' has 3 partitions and key [_record], which does not determine the key [sku] of upsert sink 'it_upsert_parts_db'"
            ),
            refused.output)
    }

    /// Kind 5: Excel's "Unicode text" (UTF-16LE, with and without BOM) and a Windows-1252 file
    /// are refused with the encoding to set, detected by `init`, and load exact text once declared.
    func testUTF16AndWindows1252FilesLoadOnceDeclared() throws {
        let text = "id,city,amount\n1,Zürich,10\n2,Köln,20\n"
        let le = Array(text.utf16).flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
        // The Windows-1252 file names a column Größe (0xF6 0xDF in the header).
        let cp1252 = Array("id,city,Größe\n1,Zürich,10\n2,Köln,20\n".data(using: .windowsCP1252)!)
        let db = try TestStack.connect()
        for (name, bytes, encoding) in [
            ("it_utf16_bom", [0xFF, 0xFE] + le, "utf-16le"), ("it_utf16", le, "utf-16le"),
            ("it_cp1252", cp1252, "windows-1252"),
        ] {
            var p = try TestPipeline(name, csv: "")
            try Data(bytes).write(to: URL(fileURLWithPath: p.csvPath))
            let third = encoding == "windows-1252" ? "Größe" : "amount"
            p.schemaColumns = """
                  - { name: id, type: integer }
                  - { name: city, type: text }
                  - { name: \(third), type: integer }
                """
            try p.write()
            let refused = try pipectl(["run", p.specPath])
            XCTAssertEqual(refused.status, 1, refused.output)
            XCTAssertTrue(refused.output.contains("\(name).csv does not look like UTF-8 text"), refused.output)
            XCTAssertTrue(refused.output.contains("it looks like \(encoding): set 'encoding: \(encoding)' on the source"), refused.output)
            p.sourceExtra = ", encoding: \(encoding)"
            try p.write()
            let run = try pipectl(["run", p.specPath])
            XCTAssertEqual(run.status, 0, run.output)
            XCTAssertEqual(
                try rows(db, "SELECT \"id\"::text, \"city\", \"\(third)\"::text FROM \"\(name)\" ORDER BY 1"),
                [["1", "Zürich", "10"], ["2", "Köln", "20"]], name)
            // `infer` detects the encoding and reads the same column names.
            let inferred = try pipectl(["infer", p.csvPath])
            XCTAssertEqual(inferred.status, 0, inferred.output)
            XCTAssertTrue(inferred.output.contains("  - { name: city, type: text, nullable: false }"), inferred.output)
        }
        // `init` writes the option it detected; a file it cannot read leaves nothing behind.
        let dir = NSTemporaryDirectory() + "pipectl-it-\(getpid())-init16"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try Data(le).write(to: URL(fileURLWithPath: dir + "/cities.csv"))
        XCTAssertEqual(try pipectl(["init", "cities", "--csv", dir + "/cities.csv", "--project", dir]).status, 0)
        XCTAssertTrue(try String(contentsOfFile: dir + "/pipelines/cities.yaml", encoding: .utf8).contains("    encoding: utf-16le\n"))
        try Data(le.dropLast()).write(to: URL(fileURLWithPath: dir + "/odd.csv"))
        let failed = try pipectl(["init", "odd", "--csv", dir + "/odd.csv", "--project", dir])
        XCTAssertEqual(failed.status, 1, failed.output)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/schemas/odd.yaml"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/pipelines/odd.yaml"))
    }

    /// Kind 7: a message of 200,000 nested arrays, written by another producer, is dead-lettered
    /// with its reason (stage parse); the consumer does not overflow its stack.
    func testDeeplyNestedMessageIsDeadLetteredNotACrash() throws {
        let state = try TestStack.require()
        let name = "it_deep"
        let dir = NSTemporaryDirectory() + "pipectl-it-\(getpid())-\(name)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let spec = dir + "/\(name).yaml"
        try """
        version: 1
        name: \(name)
        topics:
          - { name: \(name)-data, brokers: "\(state.kafkaBrokers)" }
        schemas:
          - name: \(name)
            columns:
              - { name: a, type: jsonb }
        transforms:
          - { name: \(name)_rows, from: \(name)-data, schema: \(name) }
        sinks:
          - { name: \(name)_db, type: postgres, from: \(name)_rows, url: "\(state.databaseURL)", table: \(name) }

        """.write(toFile: spec, atomically: true, encoding: .utf8)
        XCTAssertEqual(try pipectl(["apply", spec]).status, 0)
        let writer = try TopicWriter(topic: "\(name)-data", settings: ["bootstrap.servers": state.kafkaBrokers])
        let payloads = [
            "{\"a\":" + String(repeating: "[", count: 200_000),
            String(repeating: "[", count: 200_000),
            "{\"a\":[[1],{\"b\":[2]}]}",
            "{\"a\":{\"b\":" + String(repeating: "{\"c\":", count: 100_000),
        ]
        for payload in payloads {
            try Array(payload.utf8).withUnsafeBytes { v in try Array("k".utf8).withUnsafeBytes { k in try writer.send(value: v, key: k, token: 0) } }
        }
        XCTAssertTrue(writer.flush(timeoutMs: 10_000))
        let consumed = try pipectl(["consume", spec, "--idle-exit", "4"])
        XCTAssertEqual(consumed.status, 3, consumed.output)  // finished, with dead letters
        XCTAssertTrue(consumed.output.contains("Consumed 4 records: 1 loaded, 0 already loaded, 3 dead-lettered"), consumed.output)
        let db = try TestStack.connect()
        XCTAssertEqual(try rows(db, "SELECT \"a\"::text FROM \"\(name)\""), [["[[1], {\"b\": [2]}]"]])
        XCTAssertEqual(
            try rows(db, "SELECT \"stage\", \"reason\", length(\"payload\")::text FROM pipectl.\(name)__dead_letters ORDER BY \"offset\""),
            [
                ["parse", "JSON nested deeper than 128 levels at byte 132 (objects and arrays inside each other)", "200005"],
                ["parse", "payload is not a JSON object", "200000"],
                ["parse", "JSON nested deeper than 128 levels at byte 640 (objects and arrays inside each other)", "500010"],
            ])
    }
}

/// The consumer's half of the matching rule, for topics whose fields the compiler could not
/// read in advance: exact key first, else a field whose normalised name is the column's.
final class RecordDecoderMatchingTests: XCTestCase {
    func decoder(columns: String, transform: String = "") throws -> RecordDecoder {
        let text = """
            version: 1
            name: m
            topics:
              - { name: m-data }
            schemas:
              - name: m
                columns:
            \(columns)
            transforms:
              - { name: m_rows, from: m-data, schema: m\(transform) }
            sinks:
              - { name: m_db, type: postgres, from: m_rows, table: m }

            """
        let pipeline = try Compiler().compile(SpecParser(environment: [:]).parse(text: text, file: "m.yaml"))
        XCTAssertNil(pipeline.transforms[0].bindings[0].key)
        return RecordDecoder(transform: pipeline.transforms[0])
    }

    func row(_ decoder: inout RecordDecoder, _ json: String) -> String {
        var out: [UInt8] = []
        let outcome = Array(json.utf8).withUnsafeBytes { decoder.decode($0, into: &out) }
        if case .rejected(_, let r) = outcome { return "rejected: \(r.reason)" }
        return String(decoding: out, as: UTF8.self)
    }

    func testMessagesAreMatchedByExactThenNormalisedNames() throws {
        var d = try decoder(
            columns: """
                      - { name: order_date, type: date }
                      - { name: UserId, type: integer }
                      - { name: size, type: text }
                """)
        XCTAssertEqual(row(&d, #"{"Order Date":"2024-01-31","UserId":"7","Size":"XL"}"#), "2024-01-31\t7\tXL")
        // The exact spelling wins over a normalised one in the same message.
        XCTAssertEqual(row(&d, #"{"Order Date":"2024-01-31","order_date":"2024-02-01","userid":"8","UserId":"9"}"#), "2024-02-01\t9\t\\N")
        // Variant: renames name the field by its normalised spelling, drops too.
        var r = try decoder(
            columns: "      - { name: price, type: \"numeric(10,2)\" }\n      - { name: note, type: text }",
            transform: ", rename: { price_eur: price }, drop: [note]")
        XCTAssertEqual(row(&r, #"{"Price (EUR)":"12.5","Note":"x"}"#), "12.5\t\\N")
    }
}
