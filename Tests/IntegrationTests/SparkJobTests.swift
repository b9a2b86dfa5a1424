import Foundation
import PipectlTestSupport
import PostgresAdapter
import XCTest

/// The PySpark jobs of `pipectl generate --target spark`, run with `spark-submit` in `local[2]`
/// against the test's Tansu and PostgreSQL. Spark's Kafka jar cannot be fetched here, so the
/// jobs read the topic through the Python stand-in in Tests/SparkSupport (the one switch
/// `PIPECTL_SPARK_SOURCE`); everything else is the generated job as a cluster would run it.
/// Needs `make spark-deps` (pyspark 4.3.0 in .deps/spark, Java 17, the JDBC driver).
final class SparkJobTests: XCTestCase {
    static let sparkDeps = TestStack.repoRoot + "/.deps/spark"
    static let jdbcJar = "/usr/share/java/postgresql.jar"

    override func setUpWithError() throws {
        let fm = FileManager.default
        guard fm.fileExists(atPath: Self.sparkDeps + "/.installed"), fm.fileExists(atPath: Self.jdbcJar) else {
            if ProcessInfo.processInfo.environment["PIPECTL_SKIP_SPARK"] == "1" { throw XCTSkip("PIPECTL_SKIP_SPARK=1") }
            XCTFail("the Spark tests need `make spark-deps` (pyspark in .deps/spark, Java 17, \(Self.jdbcJar)); PIPECTL_SKIP_SPARK=1 skips them")
            throw XCTSkip("Spark dependencies missing")
        }
    }

    // MARK: helpers

    /// Generates the pipeline's Spark job and returns its path.
    func generateJob(_ p: TestPipeline) throws -> String {
        let out = p.dir + "/gen"
        let generated = try pipectl(["generate", p.specPath, "--target", "spark", "--out", out])
        XCTAssertEqual(generated.status, 0, generated.output)
        let job = out + "/spark/\(p.name)_db_job.py"
        XCTAssertTrue(generated.output.contains("wrote \(job)"), generated.output)
        return job
    }

    /// `spark-submit JOB --available-now` with the stand-in source; its exit status and output.
    @discardableResult
    func submit(_ job: String, crash: String? = nil, environment: [String: String] = [:], timeout: Double = 300) throws -> (status: Int32, output: String) {
        let running = try startSubmit(job, crash: crash, environment: environment)
        return finish(running, job: job, timeout: timeout)
    }

    /// Starts `spark-submit JOB --available-now`; `finish` waits for it.
    func startSubmit(_ job: String, crash: String? = nil, environment: [String: String] = [:]) throws -> ChildProcess {
        let state = try TestStack.require()
        var env: [String: String] = [:]
        env["PYTHONPATH"] = Self.sparkDeps + ":" + TestStack.repoRoot + "/Tests/SparkSupport"
        env["PIPECTL_SPARK_SOURCE"] = "pipectl_test_kafka:KafkaStandIn"
        env["PYSPARK_PYTHON"] = "python3"
        env["SPARK_LOCAL_IP"] = "127.0.0.1"
        env["DATABASE_URL"] = state.databaseURL
        env["KAFKA_BROKERS"] = state.kafkaBrokers
        env["PIPECTL_SPARK_CRASH"] = crash ?? ""
        env.merge(environment) { _, new in new }
        return try ChildProcess(
            Self.sparkDeps + "/pyspark/bin/spark-submit",
            [
                "--master", "local[2]", "--jars", Self.jdbcJar,
                "--conf", "spark.ui.enabled=false", "--conf", "spark.log.level=WARN",
                "--conf", "spark.sql.shuffle.partitions=2",
                job, "--available-now",
            ],
            environment: env)
    }

    /// Waits for the job (a test failure and SIGTERM past `timeout`); its status and output.
    func finish(_ running: ChildProcess, job: String, timeout: Double = 300) -> (status: Int32, output: String) {
        let result = running.finish(timeout: timeout)
        // Keep failures readable: the job's own lines and Python errors, not Spark's log.
        let lines = result.output.split(separator: "\n").filter { !$0.contains(" WARN ") && !$0.contains(" INFO ") }
        return (result.status, lines.joined(separator: "\n"))
    }

    func produce(_ p: TestPipeline) throws {
        let sent = try pipectl(["produce", p.specPath, "--allow-dead-letters"])
        XCTAssertEqual(sent.status, 0, sent.output)
    }

    /// Every stored row against housing.csv: ordinals 1...506 in order, every value equal as a number.
    func assertHousingValues(_ table: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let db = try TestStack.connect()
        let columns = housingHeader.split(separator: ",").map(String.init)
        let rows = try db.query(
            """
            SELECT "_pipectl_record" & ((1::bigint << 40) - 1), \(columns.map { "\"\($0)\"::numeric::text" }.joined(separator: ", "))
            FROM "\(table)" ORDER BY 1
            """)
        XCTAssertEqual(rows.count, 506, file: file, line: line)
        var mismatches = 0
        for (i, row) in rows.enumerated() where i < housingRows.count {
            if row[0] != String(i + 1) {
                mismatches += 1
                continue
            }
            let expected = housingRows[i].split(separator: ",").map { Decimal(string: String($0))! }
            for (c, value) in row.dropFirst().enumerated() where Decimal(string: value ?? "") != expected[c] {
                mismatches += 1
                if mismatches < 5 { XCTFail("row \(i + 1) column \(columns[c]): \(value ?? "NULL") != \(expected[c])", file: file, line: line) }
            }
        }
        XCTAssertEqual(mismatches, 0, file: file, line: line)
        XCTAssertEqual(try db.int("SELECT count(DISTINCT \"_pipectl_record\") FROM \"\(table)\""), 506, file: file, line: line)
    }

    func int(_ sql: String) throws -> Int { try TestStack.connect().int(sql) }

    func housingPipeline(_ name: String) throws -> TestPipeline {
        let p = try TestPipeline.written(name, csv: housingHeader + "\n" + housingRows.joined(separator: "\n") + "\n", sinkBatch: 100)
        return p
    }

    // MARK: tests

    /// The housing CSV through the generated job: 506 rows, every value equal to the CSV's, in
    /// micro-batches of the source's batch size (100), the offsets table at the end of the topic.
    func testSparkJobLoadsHousingWithEveryValueEqualToTheCSV() throws {
        let p = try housingPipeline("it_spark_housing")
        try produce(p)
        let run = try submit(try generateJob(p))
        XCTAssertEqual(run.status, 0, run.output)
        XCTAssertTrue(run.output.contains("pipectl-spark: batch 0: 100 loaded, 0 already loaded, 0 dead-lettered"), run.output)
        XCTAssertTrue(run.output.contains("pipectl-spark: done: 6 batches, 506 loaded, 0 already loaded, 0 dead-lettered"), run.output)
        try assertHousingValues(p.table)
        XCTAssertEqual(try int("SELECT \"next_offset\" FROM \"pipectl\".\"it_spark_housing__offsets\""), 506)
        XCTAssertEqual(try int("SELECT count(*) FROM \"pipectl\".\"it_spark_housing__dead_letters\""), 0)
        XCTAssertEqual(try int("SELECT count(*) FROM \"pipectl\".\"it_spark_housing__it_spark_housing_db__staging\""), 0)
        // The source was registered like pipectl's consumer does it, and its number is in the record ids.
        XCTAssertEqual(
            try int(
                """
                SELECT count(*) FROM "it_spark_housing" h JOIN "pipectl"."it_spark_housing__sources" s
                ON h."_pipectl_record" >> 40 = s."source_id" WHERE s."source" = 'it_spark_housing_csv'
                """), 506)
    }

    /// The driver dies after batch 3 was staged and before its transaction: 200 rows and offsets
    /// 200 stay, with the orphaned staging rows. The restart dies again inside the transaction of
    /// its second batch (before COMMIT): 300 rows. The third run ends exact; each restart
    /// replayed only the batch that was lost.
    func testCrashesBeforeAndInsideTheCommitThenRestartAreExact() throws {
        let p = try housingPipeline("it_spark_crash")
        try produce(p)
        let job = try generateJob(p)
        let crashed = try submit(job, crash: "after-stage:3")
        XCTAssertNotEqual(crashed.status, 0, crashed.output)
        XCTAssertEqual(try int("SELECT count(*) FROM \"it_spark_crash\""), 200)
        XCTAssertEqual(try int("SELECT \"next_offset\" FROM \"pipectl\".\"it_spark_crash__offsets\""), 200)
        XCTAssertEqual(try int("SELECT count(*) FROM \"pipectl\".\"it_spark_crash__it_spark_crash_db__staging\""), 100)

        let again = try submit(job, crash: "before-commit:2")
        XCTAssertNotEqual(again.status, 0, again.output)
        XCTAssertTrue(again.output.contains("pipectl-spark: batch 0: 100 loaded, 0 already loaded, 0 dead-lettered"), again.output)
        XCTAssertEqual(try int("SELECT count(*) FROM \"it_spark_crash\""), 300)
        XCTAssertEqual(try int("SELECT \"next_offset\" FROM \"pipectl\".\"it_spark_crash__offsets\""), 300)
        XCTAssertEqual(try int("SELECT count(*) FROM \"pipectl\".\"it_spark_crash__it_spark_crash_db__staging\""), 100)

        let restarted = try submit(job)
        XCTAssertEqual(restarted.status, 0, restarted.output)
        XCTAssertTrue(restarted.output.contains("pipectl-spark: done: 3 batches, 206 loaded, 0 already loaded, 0 dead-lettered"), restarted.output)
        try assertHousingValues(p.table)
        XCTAssertEqual(try int("SELECT \"next_offset\" FROM \"pipectl\".\"it_spark_crash__offsets\""), 506)
        XCTAssertEqual(try int("SELECT count(*) FROM \"pipectl\".\"it_spark_crash__it_spark_crash_db__staging\""), 0)
    }

    /// The same file sent again after `pipectl run` loaded it (`reset` forgets the offsets and
    /// the send checkpoint, not the file's identity): the Spark job reads all 1,012 messages
    /// from the start and skips every one by record id (the ids both engines derive agree).
    func testRecordsSentAgainAreSkippedByRecordID() throws {
        let p = try housingPipeline("it_spark_again")
        let first = try pipectl(["run", p.specPath])
        XCTAssertEqual(first.status, 0, first.output)
        XCTAssertEqual(try int("SELECT count(*) FROM \"it_spark_again\""), 506)
        let reset = try pipectl(["reset", p.specPath, "--yes"])
        XCTAssertEqual(reset.status, 0, reset.output)
        try produce(p)
        let run = try submit(try generateJob(p))
        XCTAssertEqual(run.status, 0, run.output)
        XCTAssertTrue(run.output.contains("pipectl-spark: done: 11 batches, 0 loaded, 1012 already loaded, 0 dead-lettered"), run.output)
        try assertHousingValues(p.table)
        XCTAssertEqual(try int("SELECT \"next_offset\" FROM \"pipectl\".\"it_spark_again__offsets\""), 1012)
        XCTAssertEqual(try int("SELECT count(*) FROM \"pipectl\".\"it_spark_again__sources\""), 1)
    }

    /// Bad values go to the dead-letter table with the reasons pipectl's own consumer gives, and
    /// the good rows are stored with the same values: one CSV, loaded once by `pipectl run` and
    /// once by the Spark job, compared row by row and dead letter by dead letter.
    func testBadValuesAreDeadLetteredWithTheSwiftRuntimesReasons() throws {
        let good = housingRows[0].split(separator: ",").map(String.init)
        func row(_ changes: [Int: String]) -> String {
            var cells = good
            for (i, v) in changes { cells[i] = v }
            return cells.joined(separator: ",")
        }
        let csv =
            [
                housingHeader,
                row([:]),
                row([9: "12abc"]),  // tax: not an integer
                row([13: ""]),  // medv: NULL in a NOT NULL column
                row([0: "1e999"]),  // crim: out of range for double precision
                row([8: "99999999999"]),  // rad: out of range for integer
                row([9: "296.0", 1: " 18 "]),  // a whole number written with .0; blanks around a number
                row([12: "NaN", 3: "+1"]),  // special floats and signs are values
                "1,2,3",  // a malformed record: too few fields
                row([11: "3\u{7}96"]),  // a control character, escaped in the reason
                row([:]),
            ].joined(separator: "\n") + "\n"
        var swift = try TestPipeline("it_spark_dlq_swift", csv: csv)
        swift.schemaColumns = TestPipeline.housingColumns
        try swift.write()
        _ = try pipectl(["run", swift.specPath])
        var spark = try TestPipeline("it_spark_dlq", csv: csv)
        spark.sinkBatch = 100
        try spark.write()
        try produce(spark)
        let run = try submit(try generateJob(spark))
        XCTAssertEqual(run.status, 0, run.output)
        XCTAssertTrue(run.output.contains("pipectl-spark: done: 1 batches, 4 loaded, 0 already loaded, 6 dead-lettered"), run.output)

        let db = try TestStack.connect()
        func deadLetters(_ pipeline: String) throws -> [[String?]] {
            try db.query(
                """
                SELECT "stage", "source_ordinal"::text, "reason",
                       regexp_replace(regexp_replace(encode("payload", 'escape'), '"_sent_at":[0-9]+', ''), '"_record":"[^:"]*:', '"_record":"'),
                       "partition"::text, "offset"::text
                FROM "pipectl"."\(pipeline)__dead_letters" ORDER BY "offset"
                """)
        }
        let expected = try deadLetters("it_spark_dlq_swift")
        XCTAssertEqual(expected.count, 6)
        XCTAssertEqual(expected.map { $0[0] ?? "" }, ["cast", "cast", "cast", "cast", "source", "cast"])
        XCTAssertEqual(expected[0][2], "column 'tax': '12abc' is not a valid integer")
        let actual = try deadLetters("it_spark_dlq")
        XCTAssertEqual(actual.count, expected.count)
        for (a, e) in zip(actual, expected) {
            XCTAssertEqual(a[0], e[0], "stage")
            XCTAssertEqual(a[1], e[1], "source ordinal")
            XCTAssertEqual(a[2], e[2], "reason")
            XCTAssertEqual(a[3], e[3], "payload (without its send time)")
            XCTAssertEqual(a[4], e[4], "partition")
            XCTAssertEqual(a[5], e[5], "offset")
        }
        let columns = (housingHeader.split(separator: ",").map { "\"\($0)\"::text" } + ["(\"_pipectl_record\" & ((1::bigint << 40) - 1))::text"]).joined(
            separator: ", ")
        let stored = try db.query("SELECT \(columns) FROM \"it_spark_dlq\" ORDER BY \"_pipectl_record\"")
        XCTAssertEqual(stored.count, 4)
        XCTAssertEqual(stored, try db.query("SELECT \(columns) FROM \"it_spark_dlq_swift\" ORDER BY \"_pipectl_record\""))
    }

    /// A 3-partition topic: the job reads every partition, stores all 506 rows once, and keeps
    /// one offsets row per partition whose next offsets add up to the topic's 506 records.
    func testThreePartitionTopicIsLoadedExactly() throws {
        let p = try TestPipeline.written("it_spark_parts", csv: housingHeader + "\n" + housingRows.joined(separator: "\n") + "\n", partitions: 3)
        try produce(p)
        let run = try submit(try generateJob(p))
        XCTAssertEqual(run.status, 0, run.output)
        try assertHousingValues(p.table)
        let offsets = try TestStack.connect().query("SELECT \"partition\"::text, \"next_offset\"::text FROM \"pipectl\".\"it_spark_parts__offsets\" ORDER BY 1")
        XCTAssertEqual(offsets.map { $0[0] ?? "" }, ["0", "1", "2"])
        XCTAssertEqual(offsets.map { Int($0[1] ?? "") ?? 0 }.reduce(0, +), 506)
        XCTAssertTrue(offsets.allSatisfy { (Int($0[1] ?? "") ?? 0) > 0 }, "\(offsets)")
    }

    /// An upsert sink over a 3-partition topic keyed by the upsert key: the job keeps the last
    /// version of every key, like `pipectl run` on the same CSV, and a re-run changes nothing.
    func testUpsertSinkKeepsTheLastVersionOfEveryKeyLikePipectl() throws {
        var lines = ["sku,version,price"]
        for version in 1...20 { for sku in 1...5 { lines.append("S\(sku),\(version),\(sku * 100 + version).50") } }
        let csv = lines.joined(separator: "\n") + "\n"
        func pipeline(_ name: String) throws -> TestPipeline {
            let p = try TestPipeline.written(
                name, csv: csv, partitions: 3, sourceBatch: 7, sinkBatch: 9, schemaColumns: TestPipeline.skuVersionPriceColumns,
                sinkExtra: ", mode: upsert, key: [sku]")
            return p
        }
        let swift = try pipeline("it_spark_upsert_swift")
        let loaded = try pipectl(["run", swift.specPath])
        XCTAssertEqual(loaded.status, 0, loaded.output)
        let spark = try pipeline("it_spark_upsert")
        try produce(spark)
        let job = try generateJob(spark)
        XCTAssertTrue(try String(contentsOfFile: job, encoding: .utf8).contains("MAX_OFFSETS_PER_TRIGGER = 7\n"))
        let run = try submit(job)
        XCTAssertEqual(run.status, 0, run.output)
        XCTAssertTrue(run.output.contains(", 5 inserted, 95 updated, 0 dead-lettered"), run.output)
        let db = try TestStack.connect()
        let query = "SELECT \"sku\", \"version\"::text, \"price\"::text FROM %@ ORDER BY 1"
        let expected = (1...5).map { ["S\($0)", "20", "\($0 * 100 + 20).50"] }
        XCTAssertEqual(try db.query(String(format: query, "\"it_spark_upsert\"")), expected)
        XCTAssertEqual(try db.query(String(format: query, "\"it_spark_upsert_swift\"")), expected)
    }

    /// The job holds its third batch (staged, not committed) while `pipectl consume` claims the
    /// partition and loads the rest; the job's commit then finds another owner in the offsets
    /// row, drops the batch and stops. The table ends exact: fencing works across engines.
    func testJobIsFencedWhenPipectlConsumeClaimsItsPartition() throws {
        let p = try housingPipeline("it_spark_fence")
        try produce(p)
        let job = try generateJob(p)
        let resume = p.dir + "/resume"
        let running = try startSubmit(job, crash: "pause-before-commit:3", environment: ["PIPECTL_SPARK_RESUME": resume])
        let deadline = Date().addingTimeInterval(180)
        while !FileManager.default.fileExists(atPath: resume + ".paused"), running.isRunning, Date() < deadline { usleep(100_000) }
        XCTAssertTrue(FileManager.default.fileExists(atPath: resume + ".paused"), "the job did not reach its third batch")
        XCTAssertEqual(try int("SELECT count(*) FROM \"it_spark_fence\""), 200)
        let taken = try pipectl(["consume", p.specPath, "--idle-exit", "5"])
        XCTAssertEqual(taken.status, 0, taken.output)
        XCTAssertTrue(taken.output.contains("Consumed 306 records: 306 loaded, 0 already loaded, 0 dead-lettered"), taken.output)
        _ = FileManager.default.createFile(atPath: resume, contents: nil)
        let fenced = finish(running, job: job)
        XCTAssertNotEqual(fenced.status, 0, fenced.output)
        XCTAssertTrue(fenced.output.contains("partitions 0 now belong to another consumer; batch dropped"), fenced.output)
        try assertHousingValues(p.table)
        XCTAssertEqual(try int("SELECT \"next_offset\" FROM \"pipectl\".\"it_spark_fence__offsets\""), 506)
    }

    /// `pipectl consume` loads part of the topic and dies; the Spark job finishes it. Then the
    /// other way round on a second topic: the job stops after 2 batches, `pipectl consume`
    /// finishes. Both end exact: the engines share offsets, owner tokens and record ids.
    func testLoadMovesBetweenPipectlConsumeAndSparkWithoutLossOrDuplicates() throws {
        let a = try housingPipeline("it_spark_move_a")
        try produce(a)
        let apply = try pipectl(["apply", a.specPath])
        XCTAssertEqual(apply.status, 0, apply.output)
        let consumed = try pipectl(
            ["consume", a.specPath, "--idle-exit", "10"],
            environment: ["PIPECTL_CRASH_AT": "after-commit", "PIPECTL_CRASH_BATCH": "2"])
        XCTAssertNotEqual(consumed.status, 0, consumed.output)
        let partway = try int("SELECT count(*) FROM \"it_spark_move_a\"")
        XCTAssertTrue(partway > 0 && partway < 506, "pipectl consume stored \(partway) rows before it was killed")
        XCTAssertEqual(try int("SELECT \"next_offset\" FROM \"pipectl\".\"it_spark_move_a__offsets\""), partway)
        let finished = try submit(try generateJob(a))
        XCTAssertEqual(finished.status, 0, finished.output)
        XCTAssertTrue(finished.output.contains(", \(506 - partway) loaded, 0 already loaded, 0 dead-lettered"), finished.output)
        try assertHousingValues(a.table)
        XCTAssertEqual(try int("SELECT \"next_offset\" FROM \"pipectl\".\"it_spark_move_a__offsets\""), 506)

        let b = try housingPipeline("it_spark_move_b")
        try produce(b)
        let started = try submit(try generateJob(b), crash: "after-commit:2")
        XCTAssertNotEqual(started.status, 0, started.output)
        XCTAssertEqual(try int("SELECT count(*) FROM \"it_spark_move_b\""), 200)
        let rest = try pipectl(["consume", b.specPath, "--idle-exit", "5"])
        XCTAssertEqual(rest.status, 0, rest.output)
        XCTAssertTrue(rest.output.contains("Consumed 306 records: 306 loaded, 0 already loaded, 0 dead-lettered"), rest.output)
        try assertHousingValues(b.table)
        XCTAssertEqual(try int("SELECT \"next_offset\" FROM \"pipectl\".\"it_spark_move_b__offsets\""), 506)
    }
}
