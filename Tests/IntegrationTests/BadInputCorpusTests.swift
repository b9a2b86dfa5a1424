import Foundation
import LocalStack
import PipectlTestSupport
import PipelineRuntime
import PostgresAdapter
import RecordFormats
import XCTest

/// The bad-input corpus (Tests/Fixtures, listed in Tests/Fixtures/manifest.json): every case is
/// run through the real pipectl binary and must end exactly as the manifest says.
///
/// - data cases: `pipectl run` on a pipeline of their own (all cases run at once, each with its
///   own topic, consumer group, table and dead-letter table), then the summary, the table's rows
///   and the dead letters (stage, reason, payload) are checked;
/// - spec cases: `pipectl validate FILE` prints exactly the expected diagnostics;
/// - command-line cases: the exact error output and exit status.
final class BadInputCorpusTests: XCTestCase {
    static let fixtures = TestStack.repoRoot + "/Tests/Fixtures"

    /// Every fixture is in the manifest, every case in the README, and there are enough cases.
    func testManifestCoversEveryFixture() throws {
        let manifest = try BadInputManifest.load()
        let all = manifest.dataCases.map(\.id) + manifest.specCases.map(\.id) + manifest.cliCases.map(\.id)
        XCTAssertGreaterThanOrEqual(all.count, 25)
        XCTAssertEqual(Set(manifest.dataCases.map(\.id)).count, manifest.dataCases.count, "duplicate data case ids")
        XCTAssertEqual(Set(manifest.specCases.map(\.id)).count, manifest.specCases.count, "duplicate spec case ids")
        XCTAssertEqual(Set(manifest.cliCases.map(\.id)).count, manifest.cliCases.count, "duplicate command-line case ids")

        let fm = FileManager.default
        let csvFiles = Set(try fm.contentsOfDirectory(atPath: Self.fixtures + "/csv").map { "csv/" + $0 })
        XCTAssertEqual(csvFiles, Set(manifest.dataCases.compactMap(\.file)), "CSV fixtures and data cases differ")
        let specFiles = Set(try fm.contentsOfDirectory(atPath: Self.fixtures + "/specs").filter { $0.hasSuffix(".yaml") }.map { "specs/" + $0 })
        XCTAssertEqual(specFiles, Set(manifest.specCases.map(\.file)), "spec fixtures and spec cases differ")
        let specTexts = try specFiles.map { try String(contentsOfFile: Self.fixtures + "/" + $0, encoding: .utf8) }.joined()
        for schema in try fm.contentsOfDirectory(atPath: Self.fixtures + "/specs/schemas") {
            XCTAssertTrue(specTexts.contains("schemas/" + schema), "schema fixture \(schema) is used by no spec")
        }
        for c in manifest.dataCases {
            XCTAssertTrue((c.file == nil) != (c.generated == nil), "\(c.id): needs exactly one of file and generated")
            if c.generated != nil { XCTAssertNotNil(Self.generatedCSV[c.id], "\(c.id): no generator in the test") }
            XCTAssertEqual(c.expect.rowsRead, c.expect.loaded + c.expect.deadLettered, "\(c.id): read != loaded + dead-lettered")
            XCTAssertEqual(c.expect.deadLetters.count, c.expect.deadLettered, "\(c.id): dead letters listed")
            XCTAssertEqual(c.expect.rows.count, c.expect.loaded, "\(c.id): rows listed")
        }
        let readme = try String(contentsOfFile: Self.fixtures + "/README.md", encoding: .utf8)
        for id in all { XCTAssertTrue(readme.contains("`\(id)`"), "README.md does not list case \(id)") }
    }

    /// `pipectl validate` on each spec case: exact diagnostics, exit status 1, no stack trace.
    func testSpecCasesReportExactDiagnostics() throws {
        let manifest = try BadInputManifest.load()
        for c in manifest.specCases {
            let result = try BadInputProcess.run(["validate", c.file], in: Self.fixtures, unset: c.unsetEnv ?? [])
            Self.check(result, c.expect, "spec case \(c.id)")
        }
    }

    /// Command-line mistakes: the exact error, a non-zero exit status, no stack trace.
    func testCommandLineErrorsAreOneClearError() throws {
        let manifest = try BadInputManifest.load()
        for c in manifest.cliCases {
            let result = try BadInputProcess.run(c.args ?? [], in: Self.fixtures)
            Self.check(result, c.expect, "command-line case \(c.id)")
            XCTAssertNotEqual(result.status, 0, "command-line case \(c.id)")
            let errorLines = result.stderrLines.filter { $0.lowercased().hasPrefix("error") || $0.contains(": error: ") }
            XCTAssertEqual(errorLines.count, 1, "command-line case \(c.id): one error line expected:\n\(result.stderr)")
        }
    }

    /// `pipectl run` on every data case (in parallel, one pipeline each): exit status 0, the
    /// summary, the rows in the table and the dead letters exactly as the manifest says.
    func testDataCasesLoadAndDeadLetterExactly() throws {
        let state = try TestStack.require()
        let manifest = try BadInputManifest.load()
        let base = NSTemporaryDirectory() + "pipectl-it-\(getpid())-badinput"
        try? FileManager.default.removeItem(atPath: base)
        let db = try TestStack.connect()

        // Pipelines with different names applying their DDL at the same moment on a fresh database
        // can collide on CREATE SCHEMA IF NOT EXISTS "pipectl" (the DDL lock is per pipeline;
        // IF NOT EXISTS is not safe against a concurrent create). The corpus is about bad
        // input, not that race, so the schema is made first.
        try db.execute(#"CREATE SCHEMA IF NOT EXISTS "pipectl""#)
        // The tables a hostile header would drop if it reached SQL unquoted.
        try db.execute(#"CREATE TABLE IF NOT EXISTS "public"."x" ("marker" text); CREATE TABLE IF NOT EXISTS "public"."students" ("marker" text)"#)
        try db.execute(#"INSERT INTO "public"."x" VALUES ('still here'); INSERT INTO "public"."students" VALUES ('still here')"#)

        var prepared: [(BadInputManifest.DataCase, PreparedRun)] = []
        for c in manifest.dataCases {
            prepared.append((c, try prepare(c, in: base + "/" + c.id, state: state)))
        }
        let started = Date()
        let results = try BadInputProcess.runAll(prepared.map(\.1), parallel: 12, timeout: 180)
        print("bad-input corpus: \(prepared.count) pipelines ran in \(String(format: "%.1f", Date().timeIntervalSince(started))) s")

        for ((c, run), result) in zip(prepared, results) {
            do {
                try verify(c, run: run, result: result, db: db)
            } catch {
                XCTFail("data case \(c.id): \(error)\n\(result.stdout)\(result.stderr)")
            }
        }
        for table in ["x", "students"] {
            XCTAssertEqual(
                try db.query("SELECT \"marker\" FROM \"public\".\"\(table)\"").map { $0[0] }, ["still here"], "table \(table) after the hostile header")
        }
        if testRun?.failureCount == 0 { try? FileManager.default.removeItem(atPath: base) }
    }

    // MARK: data cases

    struct PreparedRun {
        var pipeline: String
        var dir: String
        var arguments: [String]
        var environment: [String: String]
        var csvPath: String
    }

    static let housingColumns: [(String, String)] = [
        ("crim", "double precision"), ("zn", "double precision"), ("indus", "double precision"), ("chas", "integer"),
        ("nox", "double precision"), ("rm", "double precision"), ("age", "double precision"), ("dis", "double precision"),
        ("rad", "integer"), ("tax", "integer"), ("ptratio", "double precision"), ("b", "double precision"),
        ("lstat", "double precision"), ("medv", "double precision"),
    ]

    /// Writes the case's CSV and pipeline (or has `pipectl init` write it).
    func prepare(_ c: BadInputManifest.DataCase, in dir: String, state: LocalStack.State) throws -> PreparedRun {
        let fm = FileManager.default
        let name = "bi_" + c.id
        let fileName = c.file.map { ($0 as NSString).lastPathComponent } ?? c.id + ".csv"
        let bytes: [UInt8]
        if let file = c.file {
            bytes = Array(try Data(contentsOf: URL(fileURLWithPath: Self.fixtures + "/" + file)))
        } else {
            bytes = try XCTUnwrap(Self.generatedCSV[c.id], "no generator for \(c.id)")()
        }
        if c.initSchema == true {
            try fm.createDirectory(atPath: dir + "/data", withIntermediateDirectories: true)
            let csvPath = dir + "/data/" + fileName
            try Data(bytes).write(to: URL(fileURLWithPath: csvPath))
            let initResult = try BadInputProcess.run(["init", name, "--csv", "data/" + fileName], in: dir)
            XCTAssertEqual(initResult.status, 0, "\(c.id): pipectl init\n\(initResult.stdout)\(initResult.stderr)")
            XCTAssertTrue(initResult.stdoutLines.contains("wrote pipelines/\(name).yaml"), "\(c.id): pipectl init\n\(initResult.stdout)")
            return PreparedRun(
                pipeline: name, dir: dir, arguments: ["run", "pipelines/\(name).yaml"],
                environment: ["KAFKA_BROKERS": state.kafkaBrokers, "DATABASE_URL": state.databaseURL], csvPath: csvPath)
        }
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let csvPath = dir + "/" + fileName
        try Data(bytes).write(to: URL(fileURLWithPath: csvPath))
        let types = c.columnTypes ?? [:]
        let columns = Self.housingColumns.map { column, type -> String in
            let nullable = column == "medv" ? ", nullable: false" : ""
            return "      - { name: \(column), type: \(types[column] ?? type)\(nullable) }"
        }
        let yaml = """
            version: 1
            name: \(name)
            sources:
              - { name: \(name)_csv, type: csv, path: \(fileName) }
            topics:
              - { name: \(name)-data, from: \(name)_csv, brokers: "\(state.kafkaBrokers)" }
            schemas:
              - name: \(name)
                columns:
                  - { name: id, type: bigserial, primary_key: true }
            \(columns.joined(separator: "\n"))
            transforms:
              - { name: \(name)_rows, from: \(name)-data, schema: \(name) }
            sinks:
              - { name: \(name)_db, type: postgres, from: \(name)_rows, url: "\(state.databaseURL)", table: \(name), max_delay_ms: 100 }

            """
        try yaml.write(toFile: dir + "/\(name).yaml", atomically: true, encoding: .utf8)
        return PreparedRun(pipeline: name, dir: dir, arguments: ["run", "\(name).yaml"], environment: [:], csvPath: csvPath)
    }

    func verify(_ c: BadInputManifest.DataCase, run: PreparedRun, result: BadInputResult, db: PostgresConnection) throws {
        let id = "data case \(c.id)"
        let output = result.stdout + result.stderr
        let e = c.expect
        if let refused = e.refused {
            XCTAssertEqual(result.status, 1, "\(id): exit status\n\(output)")
            XCTAssertEqual(result.stderrLines, refused, "\(id): stderr")
            XCTAssertEqual(try db.int("SELECT count(*) FROM pg_tables WHERE tablename = '\(run.pipeline)'"), 0, "\(id): no table")
            return
        }
        // Exit status 3: finished, with rows dead-lettered (docs/operations.md, "Exit codes").
        XCTAssertEqual(result.status, e.deadLettered > 0 ? 3 : 0, "\(id): exit status\n\(output)")
        Self.assertNoCrash(result, id)

        // The summary.
        let read = Self.summaryNumber("rows read", in: result.stdoutLines)
        let sent = Self.summaryNumber("rows sent", in: result.stdoutLines)
        let loaded = Self.summaryNumber("rows loaded", in: result.stdoutLines)
        let already = Self.summaryNumber("already loaded", in: result.stdoutLines)
        let dead = Self.summaryNumber("dead-lettered", in: result.stdoutLines)
        XCTAssertEqual(read, e.rowsRead, "\(id): rows read\n\(output)")
        XCTAssertEqual(sent, e.rowsRead, "\(id): rows sent\n\(output)")
        XCTAssertEqual(loaded, e.loaded, "\(id): rows loaded\n\(output)")
        XCTAssertEqual(already, 0, "\(id): already loaded\n\(output)")
        XCTAssertEqual(dead, e.deadLettered, "\(id): dead-lettered\n\(output)")
        if let read, let loaded, let dead, let already {
            XCTAssertEqual(read, loaded + already + dead, "\(id): rows read = loaded + already loaded + dead-lettered")
        }
        XCTAssertTrue(result.stdoutLines.contains { $0.hasPrefix("  reconciled:         yes ") }, "\(id): reconciled\n\(output)")
        for line in e.output ?? [] {
            XCTAssertTrue(result.stdoutLines.contains(line) || result.stderrLines.contains(line), "\(id): expected the line '\(line)'\n\(output)")
        }

        // The rows in the table, by record ordinal.
        let table = "\"public\".\"\(run.pipeline)\""
        XCTAssertEqual(try db.int("SELECT count(*) FROM \(table)"), e.loaded, "\(id): rows in the table")
        let columns = Array(Set(e.rows.flatMap(\.values.keys))).sorted()
        let select = (["(\"_pipectl_record\" & ((1::bigint << 40) - 1))::text"] + columns.map { "\"\($0)\"::text" }).joined(separator: ", ")
        let rows = try db.query("SELECT \(select) FROM \(table) ORDER BY 1")
        XCTAssertEqual(rows.map { $0[0] }, e.rows.map { String($0.ordinal) }, "\(id): ordinals of the loaded rows")
        for (row, expected) in zip(rows, e.rows) {
            for (n, column) in columns.enumerated() {
                guard let value = expected.values[column] else { continue }
                XCTAssertEqual(row[n + 1], value, "\(id): row \(expected.ordinal) column \(column)")
            }
        }
        if let expectedColumns = e.tableColumns {
            let actual = try db.query(
                "SELECT column_name::text FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
                [run.pipeline])
            XCTAssertEqual(actual.map { $0[0] ?? "" }, expectedColumns, "\(id): table columns")
        }

        // The dead letters: ordinal, stage, exact reason and payload.
        let letters = try db.query(
            """
            SELECT "source_ordinal"::text, "stage", "reason", encode("payload", 'hex'), "source_fingerprint"
            FROM "pipectl"."\(run.pipeline)__dead_letters" ORDER BY "source_ordinal"
            """)
        XCTAssertEqual(letters.map { $0[0] }, e.deadLetters.map { String($0.ordinal) }, "\(id): ordinals of the dead letters")
        let csv = Array(try Data(contentsOf: URL(fileURLWithPath: run.csvPath)))
        // The source's identity, as the producer registered it (record ids are `identity:ordinal`).
        let fingerprint =
            try db.query("SELECT \"fingerprint\" FROM \"pipectl\".\"\(run.pipeline)__sources\" ORDER BY \"source_id\" DESC LIMIT 1").first?[0] ?? nil ?? ""
        for (letter, expected) in zip(letters, e.deadLetters) {
            let where_ = "\(id): dead letter \(expected.ordinal)"
            XCTAssertEqual(letter[1], expected.stage, "\(where_): stage")
            XCTAssertEqual(letter[4], fingerprint, "\(where_): source fingerprint")
            var reason = expected.reason
            if reason.contains("{json_bytes}") {
                reason = reason.replacingOccurrences(
                    of: "{json_bytes}", with: String(Self.jsonSize(csv: csv, line: 3, ordinal: expected.ordinal, fingerprint: fingerprint)))
            }
            XCTAssertEqual(letter[2], reason, "\(where_): reason")
            let payload = Self.bytes(hex: letter[3] ?? "")
            if let text = expected.payload { XCTAssertEqual(payload, Array(text.utf8), "\(where_): payload\n\(String(decoding: payload, as: UTF8.self))") }
            if let hex = expected.payloadHex { XCTAssertEqual(payload, Self.bytes(hex: hex), "\(where_): payload") }
            if let length = expected.payloadLength { XCTAssertEqual(payload.count, length, "\(where_): payload length") }
            if let line = expected.payloadPrefixOfLine {
                XCTAssertTrue(Self.line(line, of: csv).starts(with: payload), "\(where_): payload is not the start of line \(line)")
            }
            if let fields = expected.payloadFields {
                let json = try? JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any]
                XCTAssertNotNil(json, "\(where_): payload is not a JSON message")
                XCTAssertEqual(json?["_record"] as? String, "\(fingerprint):\(expected.ordinal)", "\(where_): payload record id")
                for (field, value) in fields {
                    if let value {
                        XCTAssertEqual(json?[field] as? String, value, "\(where_): payload field \(field)")
                    } else {
                        XCTAssertTrue(json?[field] is NSNull, "\(where_): payload field \(field) should be null")
                    }
                }
            }
        }
    }

    // MARK: generated inputs (big or binary: not committed)

    static let header = "crim,zn,indus,chas,nox,rm,age,dis,rad,tax,ptratio,b,lstat,medv"
    static let row1 = "0.00632,18,2.31,0,0.538,6.575,65.2,4.09,1,296,15.3,396.9,4.98,24"
    static let row2 = "0.02731,0,7.07,0,0.469,6.421,78.9,4.9671,2,242,17.8,396.9,9.14,21.6"
    static let front = "0.1,18,2.31,0,0.538,6.575,65.2,4.09,1,296,15.3,"

    static let generatedCSV: [String: @Sendable () -> [UInt8]] = [
        "huge_field": {
            // b is 10 MiB of digits: ten times the topic's message_max_bytes.
            Array("\(header)\n\(row1)\n\(front)".utf8) + [UInt8](repeating: UInt8(ascii: "9"), count: 10 << 20)
                + Array(",4.98,24\n\(row2)\n".utf8)
        },
        "invalid_utf8": {
            Array("\(header)\n\(row1)\n0.1".utf8) + [0xFF] + Array(",18,2.31,0,0.538,6.575,65.2,4.09,1,296,15.3,396.9,4.98,24\n".utf8)
                + Array("\(front)\"".utf8) + [0xC3, UInt8(ascii: "(")] + Array("\",4.98,24\n".utf8)
                + Array(front.utf8) + [0xC0, 0xAF] + Array(",4.98,24\n\(row2)\n".utf8)
        },
        "nul_byte": {
            Array("\(header)\n\(row1)\n0.1".utf8) + [0] + Array(",18,2.31,0,0.538,6.575,65.2,4.09,1,296,15.3,396.9,4.98,24\n".utf8)
                + Array("\(front)a".utf8) + [0] + Array("b,4.98,24\n\(row2)\n".utf8)
        },
    ]

    /// The size of the JSON message the producer makes of line `line` (header names, string
    /// values, `_record` and a 16-digit `_sent_at`).
    static func jsonSize(csv: [UInt8], line: Int, ordinal: Int, fingerprint: String) -> Int {
        let names = String(decoding: Self.line(1, of: csv), as: UTF8.self).split(separator: ",").map(String.init)
        let values = Self.line(line, of: csv).split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false)
        var json: [UInt8] = Array("{\"_record\":\"\(fingerprint):\(ordinal)\",\"_sent_at\":".utf8)
        json += Array(String(Int64(Date().timeIntervalSince1970 * 1_000_000)).utf8)
        for (name, value) in zip(names, values) {
            json.append(UInt8(ascii: ","))
            JSONText.appendString(name, to: &json)
            json.append(UInt8(ascii: ":"))
            JSONText.appendString(value, to: &json)
        }
        return json.count + 1
    }

    static func line(_ n: Int, of bytes: [UInt8]) -> ArraySlice<UInt8> {
        let lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        return n <= lines.count ? lines[n - 1] : []
    }

    static func bytes(hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var high: UInt8?
        for c in hex.utf8 {
            let v: UInt8 = c <= UInt8(ascii: "9") ? c - UInt8(ascii: "0") : (c | 0x20) - UInt8(ascii: "a") + 10
            if let h = high {
                out.append(h << 4 | v)
                high = nil
            } else {
                high = v
            }
        }
        return out
    }

    // MARK: helpers

    static func summaryNumber(_ key: String, in lines: [String]) -> Int? {
        guard let line = lines.first(where: { $0.hasPrefix("  \(key):") }) else { return nil }
        return line.dropFirst(key.count + 3).split(separator: " ").first.flatMap { Int($0) }
    }

    static func assertNoCrash(_ result: BadInputResult, _ id: String) {
        let output = result.stdout + result.stderr
        for marker in ["Fatal error", "Stack dump", "Current stack trace", "Backtrace", "Illegal instruction", "Segmentation fault"] {
            XCTAssertFalse(output.contains(marker), "\(id): '\(marker)' in the output\n\(output)")
        }
        XCTAssertFalse(result.signaled, "\(id): killed by a signal\n\(output)")
    }

    static func check(_ result: BadInputResult, _ expect: BadInputManifest.CommandExpect, _ id: String) {
        XCTAssertEqual(result.status, expect.status, "\(id): exit status\n\(result.stdout)\(result.stderr)")
        XCTAssertEqual(result.stdoutLines, expect.stdout, "\(id): stdout")
        XCTAssertEqual(result.stderrLines, expect.stderr, "\(id): stderr")
        assertNoCrash(result, id)
    }
}

// MARK: the manifest

struct BadInputManifest: Decodable {
    var dataCases: [DataCase]
    var specCases: [CommandCase]
    var cliCases: [CommandCase]

    enum CodingKeys: String, CodingKey {
        case dataCases = "data_cases"
        case specCases = "spec_cases"
        case cliCases = "cli_cases"
    }

    struct DataCase: Decodable {
        var id: String
        var file: String?
        var generated: String?
        var description: String
        var outcome: String
        var columnTypes: [String: String]?
        var initSchema: Bool?
        var expect: DataExpect

        enum CodingKeys: String, CodingKey {
            case id, file, generated, description, outcome, expect
            case columnTypes = "column_types"
            case initSchema = "init"
        }
    }

    struct DataExpect: Decodable {
        var rowsRead: Int
        var loaded: Int
        var deadLettered: Int
        var rows: [Row]
        var deadLetters: [DeadLetter]
        var output: [String]?
        var tableColumns: [String]?
        /// When set, `run` must refuse the file before sending anything: exit status 1 with
        /// exactly these lines on standard error, and no table created.
        var refused: [String]?

        enum CodingKeys: String, CodingKey {
            case rowsRead = "rows_read"
            case loaded
            case deadLettered = "dead_lettered"
            case rows
            case deadLetters = "dead_letters"
            case output
            case tableColumns = "table_columns"
            case refused
        }
    }

    struct Row: Decodable {
        var ordinal: Int
        /// Column -> its value as PostgreSQL's text output (`::text`), nil for NULL.
        var values: [String: String?]
    }

    struct DeadLetter: Decodable {
        var ordinal: Int
        var stage: String
        var reason: String
        /// The payload exactly, as UTF-8 text or as hex.
        var payload: String?
        var payloadHex: String?
        /// Fields the payload (a JSON message) must hold; nil for JSON null.
        var payloadFields: [String: String?]?
        var payloadLength: Int?
        /// The payload is the start of this line of the CSV.
        var payloadPrefixOfLine: Int?

        enum CodingKeys: String, CodingKey {
            case ordinal, stage, reason, payload
            case payloadHex = "payload_hex"
            case payloadFields = "payload_fields"
            case payloadLength = "payload_length"
            case payloadPrefixOfLine = "payload_prefix_of_line"
        }
    }

    struct CommandCase: Decodable {
        var id: String
        var file: String
        var args: [String]?
        var description: String
        var unsetEnv: [String]?
        var expect: CommandExpect

        enum CodingKeys: String, CodingKey {
            case id, file, args, description, expect
            case unsetEnv = "unset_env"
        }

        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            id = try c.decode(String.self, forKey: .id)
            file = try c.decodeIfPresent(String.self, forKey: .file) ?? ""
            args = try c.decodeIfPresent([String].self, forKey: .args)
            description = try c.decode(String.self, forKey: .description)
            unsetEnv = try c.decodeIfPresent([String].self, forKey: .unsetEnv)
            expect = try c.decode(CommandExpect.self, forKey: .expect)
        }
    }

    struct CommandExpect: Decodable {
        var status: Int32
        var stdout: [String]
        var stderr: [String]
    }

    static func load() throws -> BadInputManifest {
        let data = try Data(contentsOf: URL(fileURLWithPath: BadInputCorpusTests.fixtures + "/manifest.json"))
        return try JSONDecoder().decode(BadInputManifest.self, from: data)
    }
}

// MARK: running the binary with separate stdout and stderr

struct BadInputResult {
    var status: Int32
    var signaled: Bool
    var stdout: String
    var stderr: String
    var stdoutLines: [String] { Self.lines(stdout) }
    var stderrLines: [String] { Self.lines(stderr) }

    static func lines(_ text: String) -> [String] {
        var lines = text.components(separatedBy: "\n")
        if lines.last == "" { lines.removeLast() }
        return lines
    }
}

/// pipectl started in a fixture's folder, standard output and standard error kept apart.
final class BadInputProcess {
    let child: ChildProcess

    init(_ arguments: [String], in directory: String, environment: [String: String] = [:], unset: [String] = []) throws {
        child = try ChildProcess(
            TestStack.pipectl, arguments, environment: environment, unset: unset,
            workingDirectory: directory, separateStandardError: true)
    }

    func finish(timeout: Double) -> BadInputResult {
        let result = child.finish(timeout: timeout)
        return BadInputResult(status: result.status, signaled: result.signaled, stdout: result.output, stderr: result.standardError)
    }

    static func run(
        _ arguments: [String], in directory: String, environment: [String: String] = [:], unset: [String] = [],
        timeout: Double = 60
    ) throws -> BadInputResult {
        try BadInputProcess(arguments, in: directory, environment: environment, unset: unset).finish(timeout: timeout)
    }

    /// Runs the prepared pipelines, at most `parallel` at a time; results in the same order.
    static func runAll(_ runs: [BadInputCorpusTests.PreparedRun], parallel: Int, timeout: Double) throws -> [BadInputResult] {
        var results = [BadInputResult?](repeating: nil, count: runs.count)
        var running: [(index: Int, process: BadInputProcess, deadline: Date)] = []
        var next = 0
        while next < runs.count || !running.isEmpty {
            while next < runs.count, running.count < parallel {
                let r = runs[next]
                running.append((next, try BadInputProcess(r.arguments, in: r.dir, environment: r.environment), Date().addingTimeInterval(timeout)))
                next += 1
            }
            if let done = running.firstIndex(where: { !$0.process.child.isRunning || Date() > $0.deadline }) {
                let finished = running.remove(at: done)
                results[finished.index] = finished.process.finish(timeout: 0)
            } else {
                usleep(20_000)
            }
        }
        return results.map { $0! }
    }
}
