import Foundation
import PipectlTestSupport
import PostgresAdapter
import XCTest

/// CSV -> Kafka (Tansu) -> PostgreSQL through the real pipectl binary.
final class EndToEndTests: XCTestCase {
    /// Every CSV value of housing.csv lands exactly, row by row keyed by the source ordinal;
    /// a second run loads nothing new.
    func testHousingPipelineLandsEveryValueExactlyAndOnce() throws {
        let p = try TestPipeline.written("it_housing", csv: housingHeader + "\n" + housingRows.joined(separator: "\n") + "\n", sinkBatch: 200)
        // --verbose: the seed's "Sent batch" line per micro-batch (detail, not the default output).
        let first = try pipectl(["run", p.specPath, "--verbose"])
        XCTAssertEqual(first.status, 0, first.output)
        XCTAssertTrue(first.output.contains("debug: Sent batch of 100 records to it_housing-data"), first.output)
        XCTAssertTrue(first.output.contains("Sent batch of 6 records to it_housing-data"), first.output)
        XCTAssertTrue(first.output.contains("rows loaded:        506"), first.output)
        XCTAssertTrue(first.output.contains("count=506  avg=22.5328  min=5  max=50"), first.output)

        let db = try TestStack.connect()
        let columns = housingHeader.split(separator: ",").map(String.init)
        let rows = try db.query(
            """
            SELECT "_pipectl_record" & ((1::bigint << 40) - 1), \(columns.map { "\"\($0)\"::numeric::text" }.joined(separator: ", "))
            FROM "it_housing" ORDER BY 1
            """)
        XCTAssertEqual(rows.count, 506)
        for (i, row) in rows.enumerated() {
            XCTAssertEqual(row[0], String(i + 1), "ordinal of row \(i)")
            let expected = housingRows[i].split(separator: ",").map { Decimal(string: String($0))! }
            for (c, value) in row.dropFirst().enumerated() {
                XCTAssertEqual(Decimal(string: value ?? ""), expected[c], "row \(i + 1) column \(columns[c])")
            }
        }

        // The file's delivery was checkpointed: the second run sends nothing and still counts
        // (and reconciles) the whole file.
        let second = try pipectl(["run", p.specPath])
        XCTAssertEqual(second.status, 0, second.output)
        XCTAssertTrue(second.output.contains("rows read:          506\n"), second.output)
        XCTAssertTrue(second.output.contains("rows sent:          0\n"), second.output)
        XCTAssertTrue(second.output.contains("rows loaded:        0"), second.output)
        XCTAssertTrue(second.output.contains("reconciled:         yes (506 read = 506 rows + 0 dead letters stored for this file)"), second.output)
        XCTAssertEqual(try db.int("SELECT count(*) FROM \"it_housing\""), 506)
    }

    /// Two consumers in one group over a 3-partition topic share the work and land every row once.
    func testTwoConsumersInOneGroupLandEveryRowOnce() throws {
        let p = try TestPipeline.written("it_group", csv: repeatedHousingCSV(20_000), partitions: 3, sourceBatch: 1000, sinkBatch: 500)
        let apply = try pipectl(["apply", p.specPath])
        XCTAssertEqual(apply.status, 0, apply.output)
        // Tables and topic first, so both consumers start from the same place.
        let a = try startPipectl(["consume", p.specPath, "--idle-exit", "10"])
        let b = try startPipectl(["consume", p.specPath, "--idle-exit", "10"])
        defer {
            a.kill9()
            b.kill9()
        }
        let deadline = Date().addingTimeInterval(60)
        func assignedCount(_ r: ChildProcess) -> Int {
            // The latest assignment line tells how many partitions this consumer holds now.
            guard let line = r.output().split(separator: "\n").last(where: { $0.hasPrefix("assigned partitions") }) else { return 0 }
            return line.split(separator: ",").count
        }
        while Date() < deadline, assignedCount(a) + assignedCount(b) != 3 || assignedCount(a) == 0 || assignedCount(b) == 0 {
            usleep(200_000)
        }
        XCTAssertEqual(assignedCount(a) + assignedCount(b), 3, "a: \(a.output())\nb: \(b.output())")
        let produce = try pipectl(["produce", p.specPath])
        XCTAssertEqual(produce.status, 0, produce.output)
        XCTAssertTrue(produce.output.contains("Produced 20000 records"), produce.output)
        XCTAssertTrue(a.wait(timeout: 120) && b.wait(timeout: 120), "consumers did not finish")
        let db = try TestStack.connect()
        XCTAssertEqual(try db.int("SELECT count(*) FROM \"it_group\""), 20_000)
        XCTAssertEqual(try db.int("SELECT count(DISTINCT \"_pipectl_record\") FROM \"it_group\""), 20_000)
        XCTAssertEqual(try db.int("SELECT max(\"_pipectl_record\" & ((1::bigint << 40) - 1)) FROM \"it_group\""), 20_000)
        func consumed(_ r: ChildProcess) -> Int {
            guard let line = r.output().split(separator: "\n").last(where: { $0.hasPrefix("Consumed ") }) else { return -1 }
            return Int(line.split(separator: " ")[1]) ?? -1
        }
        XCTAssertGreaterThan(consumed(a), 0, a.output())
        XCTAssertGreaterThan(consumed(b), 0, b.output())
        XCTAssertEqual(consumed(a) + consumed(b), 20_000, "a: \(a.output())\nb: \(b.output())")
    }

    /// Bad rows go to the dead-letter table with their reasons; every good row lands, and the
    /// summary reconciles read = loaded + dead-lettered.
    func testBadRowsAreDeadLetteredWithReasonsWhileGoodRowsLand() throws {
        let good = Array(housingRows.prefix(10))
        let bad = [
            "abc,18,2.31,0,0.538,6.575,65.2,4.09,1,296,15.3,396.9,4.98,24",  // text in a number column
            "0.1,18,2.31,0,0.538,6.575,65.2,4.09,1,99999999999,15.3,396.9,4.98,24",  // integer overflow
            "0.1,18,2.31,0,0.538",  // wrong column count
            "0.1,18,2.31,0,0.538,6.575,65.2,4.09,1,296,15.3,396.9,4.98,",  // NULL into NOT NULL medv
        ]
        let csv = ([housingHeader] + good[0..<5] + bad + good[5...]).joined(separator: "\n") + "\n"
        let p = try TestPipeline("it_bad", csv: csv)
        try p.write()
        let run = try pipectl(["run", p.specPath])
        XCTAssertEqual(run.status, 3, run.output)  // finished, with dead letters
        XCTAssertTrue(run.output.contains("finished with 4 dead-lettered rows: see `pipectl dlq list"), run.output)
        XCTAssertTrue(run.output.contains("rows read:          14"), run.output)
        XCTAssertTrue(run.output.contains("rows loaded:        10"), run.output)
        XCTAssertTrue(run.output.contains("dead-lettered:      4"), run.output)
        XCTAssertTrue(run.output.contains("reconciled:         yes"), run.output)
        let db = try TestStack.connect()
        XCTAssertEqual(try db.int("SELECT count(*) FROM \"it_bad\""), 10)
        let dead = try db.query("SELECT \"source_ordinal\", \"stage\", \"reason\" FROM \"pipectl\".\"it_bad__dead_letters\" ORDER BY \"source_ordinal\"")
        XCTAssertEqual(dead.map { $0[0] }, ["6", "7", "8", "9"])
        XCTAssertEqual(dead.map { $0[1] }, ["cast", "cast", "source", "cast"])
        XCTAssertEqual(dead[0][2], "column 'crim': 'abc' is not a valid double precision")
        XCTAssertEqual(dead[1][2], "column 'tax': '99999999999' is out of range for integer")
        XCTAssertEqual(dead[2][2], "wrong number of fields on line 9: expected 14, found 5")
        XCTAssertEqual(dead[3][2], "column 'medv' is not nullable and field 'medv' is null")
        let payload = try db.query("SELECT convert_from(\"payload\", 'UTF8') FROM \"pipectl\".\"it_bad__dead_letters\" WHERE \"source_ordinal\" = 8")
        XCTAssertEqual(payload.first?[0], "0.1,18,2.31,0,0.538")
        let list = try pipectl(["dlq", "list", p.specPath])
        XCTAssertTrue(list.output.hasPrefix("4 dead-lettered rows"), list.output)
        XCTAssertTrue(list.output.contains("'abc' is not a valid double precision"), list.output)
    }

    /// A 200,000-row load; the consumer is killed with SIGKILL six times (at the three named
    /// crash points, then at three seeded random moments) and restarted: every row is in the
    /// table exactly once, checked by count, distinct record ids and per-column checksums.
    func testConsumerKilledMidRunStillLoadsEveryRowExactlyOnce() throws {
        let p = try TestPipeline.written("it_crash", csv: repeatedHousingCSV(200_000), sourceBatch: 1000, sinkBatch: 1000)
        let produce = try pipectl(["produce", p.specPath])
        XCTAssertEqual(produce.status, 0, produce.output)
        for point in ["during-copy", "before-commit", "after-commit"] {
            let crashed = try pipectl(
                ["consume", p.specPath, "--idle-exit", "5"],
                environment: ["PIPECTL_CRASH_AT": point, "PIPECTL_CRASH_BATCH": "3"])
            XCTAssertEqual(crashed.status, 9, "expected SIGKILL at \(point): \(crashed.output)")
        }
        var generator = SeededGenerator(seed: 42)
        for _ in 0..<3 {
            let consumer = try startPipectl(["consume", p.specPath, "--idle-exit", "5"])
            // Kill once it has assigned partitions and is loading.
            let deadline = Date().addingTimeInterval(30)
            while Date() < deadline, !consumer.output().contains("assigned partitions") { usleep(50_000) }
            usleep(UInt32.random(in: 100_000...800_000, using: &generator))
            consumer.kill9()
        }
        let finish = try pipectl(["consume", p.specPath, "--idle-exit", "5"])
        XCTAssertEqual(finish.status, 0, finish.output)
        let db = try TestStack.connect()
        XCTAssertEqual(try db.int("SELECT count(*) FROM \"it_crash\""), 200_000)
        XCTAssertEqual(try db.int("SELECT count(DISTINCT \"_pipectl_record\") FROM \"it_crash\""), 200_000)
        // Per-column checksums against the exact decimal sums of the source values.
        let columns = housingHeader.split(separator: ",").map(String.init)
        let sums = try db.query("SELECT \(columns.map { "sum(\"\($0)\"::numeric)::text" }.joined(separator: ", ")) FROM \"it_crash\"").first!
        var expected = [Decimal](repeating: 0, count: columns.count)
        for i in 0..<200_000 {
            for (c, v) in housingRows[i % housingRows.count].split(separator: ",").enumerated() { expected[c] += Decimal(string: String(v))! }
        }
        for (c, name) in columns.enumerated() {
            XCTAssertEqual(Decimal(string: sums[c] ?? ""), expected[c], "checksum of \(name)")
        }
    }
}

/// A small deterministic generator so random kill moments repeat from run to run.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
