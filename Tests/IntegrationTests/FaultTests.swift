import Foundation
import PipectlTestSupport
import PostgresAdapter
import Synchronization
import XCTest

/// Server faults and rebalances against the real broker and database: the result stays exact.
final class FaultTests: XCTestCase {
    /// PostgreSQL stopped and started in the middle of a load: the consumer retries with
    /// backoff and the result is exact.
    func testPostgresRestartMidLoadStillLoadsEveryRowOnce() throws {
        let p = try TestPipeline.written("it_pgrestart", csv: repeatedHousingCSV(100_000), sourceBatch: 1000, sinkBatch: 1000)
        XCTAssertEqual(try pipectl(["produce", p.specPath]).status, 0)
        let consumer = try startPipectl(["consume", p.specPath, "--idle-exit", "8"])
        defer { consumer.kill9() }
        waitFor("the first rows") { rowCount("it_pgrestart") > 5_000 }
        try TestStack.stack!.stopDatabase()
        sleep(3)
        _ = try TestStack.stack!.up(log: { _ in })
        guard consumer.wait(timeout: 180) else { return XCTFail("consumer did not finish: \(consumer.output())") }
        XCTAssertEqual(consumer.terminationStatus, 0, consumer.output())
        XCTAssertTrue(consumer.output().contains("PostgreSQL connection lost"), consumer.output())
        XCTAssertTrue(consumer.output().contains("reconnected to PostgreSQL"), consumer.output())
        try assertExactTable("it_pgrestart", rows: 100_000, everyRow: false)
    }

    /// PostgreSQL crashes (`pg_ctl stop -m immediate`) at three moments of a `run`. Batches
    /// commit with `synchronous_commit = off`, so each crash loses the last commits the server
    /// had acknowledged (rows and offsets together); the consumer reads those partitions again
    /// from the offsets the server kept, and the summary counts only durable rows.
    func testPostgresCrashLosesNoAcknowledgedRows() throws {
        let db = try TestStack.connect()
        // Hold asynchronous commits in the WAL buffers for up to 10 s, so that a crash surely
        // loses some that were acknowledged.
        try db.execute("ALTER SYSTEM SET wal_writer_delay = '10s'")
        _ = try db.query("SELECT pg_reload_conf()")
        defer {
            if let db = try? TestStack.connect() {
                try? db.execute("ALTER SYSTEM RESET wal_writer_delay")
                _ = try? db.query("SELECT pg_reload_conf()")
            }
        }
        let p = try TestPipeline.written("it_pgcrash", csv: repeatedHousingCSV(200_000), sourceBatch: 1000, sinkBatch: 2000)
        let run = try startPipectl(["run", p.specPath])
        defer { run.kill9() }
        for threshold in [10_000, 60_000, 120_000] {
            waitFor("\(threshold) rows", timeout: 120) { rowCount("it_pgcrash") >= threshold }
            try TestStack.stack!.stopDatabase(mode: "immediate")
            sleep(2)
            _ = try TestStack.stack!.up(log: { _ in })
        }
        guard run.wait(timeout: 240) else { return XCTFail("run did not finish: \(run.output())") }
        let output = run.output()
        XCTAssertEqual(run.terminationStatus, 0, output)
        XCTAssertTrue(
            output.contains(
                "the stored offsets are behind what this consumer committed (PostgreSQL lost commits, e.g. in a crash); reading again: partition 0 from offset"),
            output)
        XCTAssertTrue(output.contains("rows loaded:        200000\n"), output)
        XCTAssertTrue(output.contains("already loaded:     0 "), output)
        XCTAssertTrue(output.contains("reconciled:         yes"), output)
        try assertExactTable("it_pgcrash", rows: 200_000, everyRow: false)
        let offsets = try TestStack.connect().int("SELECT \"next_offset\" FROM \"pipectl\".\"it_pgcrash__offsets\"")
        XCTAssertEqual(offsets, 200_000)
    }

    /// PostgreSQL away for longer than the sink's `retry_timeout_ms`: the consumer says once how
    /// long it keeps trying, then stops with an error naming the setting; nothing is lost.
    func testPostgresDownLongerThanRetryTimeoutStopsWithTheSetting() throws {
        let p = try TestPipeline.written(
            "it_pgwindow", csv: repeatedHousingCSV(150_000), sourceBatch: 1000, sinkBatch: 500, sinkExtra: ", retry_timeout_ms: 3000")
        XCTAssertEqual(try pipectl(["produce", p.specPath]).status, 0)
        let consumer = try startPipectl(["consume", p.specPath, "--idle-exit", "5"])
        defer { consumer.kill9() }
        waitFor("the first rows") { rowCount("it_pgwindow") > 2_000 }
        try TestStack.stack!.stopDatabase()
        let stopped = Date()
        guard consumer.wait(timeout: 60) else {
            _ = try TestStack.stack!.up(log: { _ in })
            return XCTFail("consumer did not give up: \(consumer.output())")
        }
        let waited = Date().timeIntervalSince(stopped)
        _ = try TestStack.stack!.up(log: { _ in })
        let output = consumer.output()
        XCTAssertEqual(consumer.terminationStatus, 1, output)
        XCTAssertLessThan(waited, 20, output)
        XCTAssertTrue(output.contains("reconnecting for up to 3 s more (retry_timeout_ms)"), output)
        XCTAssertTrue(output.contains("error: PostgreSQL unreachable for longer than the sink's retry_timeout_ms (3000 ms)"), output)
        // What was committed stays; a second consume finishes the load exactly.
        let again = try pipectl(["consume", p.specPath, "--idle-exit", "5"])
        XCTAssertEqual(again.status, 0, again.output)
        try assertExactTable("it_pgwindow", rows: 150_000, everyRow: false)
    }

    /// The broker restarted under a running `consume --idle-exit`: the in-memory topic is gone,
    /// and the consumer stops with that error instead of idling out with exit status 0.
    func testConsumeStopsWhenTheTopicVanishesUnderIt() throws {
        let p = try TestPipeline.written("it_topicgone", csv: repeatedHousingCSV(100_000), sourceBatch: 1000, sinkBatch: 500)
        XCTAssertEqual(try pipectl(["produce", p.specPath]).status, 0)
        let consumer = try startPipectl(["consume", p.specPath, "--idle-exit", "20"])
        defer { consumer.kill9() }
        waitFor("the first rows") { rowCount("it_topicgone") > 2_000 }
        try TestStack.stack!.stopBroker()
        sleep(1)
        _ = try TestStack.stack!.up(log: { _ in })
        guard consumer.wait(timeout: 60) else { return XCTFail("consumer did not stop: \(consumer.output())") }
        let output = consumer.output()
        XCTAssertEqual(consumer.terminationStatus, 1, output)
        XCTAssertTrue(output.contains("error: topic 'it_topicgone-data'"), output)
        XCTAssertTrue(output.contains("vanished while consuming"), output)
        XCTAssertFalse(output.contains("Consumed "), output)
        // Re-sent and consumed with --restart-on-new-topic: exact.
        XCTAssertEqual(try pipectl(["produce", p.specPath]).status, 0)
        let healed = try pipectl(["consume", p.specPath, "--idle-exit", "5", "--restart-on-new-topic"])
        XCTAssertEqual(healed.status, 0, healed.output)
        XCTAssertTrue(healed.output.contains("Consumed 100000 records"), healed.output)
        try assertExactTable("it_topicgone", rows: 100_000, everyRow: false)
    }

    /// Rows appended while `produce` is reading the file: what is sent is exactly the content
    /// the source was fingerprinted from (one read of the same bytes), so no record travels
    /// under the id of other content. The appended rows wait for the next run.
    func testRowsAppendedWhileProducingAreNotSentUnderTheOldFingerprint() throws {
        let p = try TestPipeline.written("it_inflight", csv: repeatedHousingCSV(300_000), sourceBatch: 1000)
        let producer = try startPipectl(["produce", p.specPath, "--verbose"])
        defer { producer.kill9() }
        waitFor("the first batches") { producer.output().contains("Sent batch") }
        let handle = try XCTUnwrap(FileHandle(forWritingAtPath: p.csvPath))
        handle.seekToEndOfFile()
        handle.write(Data((0..<1_000).map { housingRows[$0 % housingRows.count] + "\n" }.joined().utf8))
        try handle.close()
        guard producer.wait(timeout: 180) else { return XCTFail("produce did not finish: \(producer.output())") }
        XCTAssertEqual(producer.terminationStatus, 0, producer.output())
        XCTAssertTrue(producer.output().contains("Produced 300000 records from"), producer.output())
        let consume = try pipectl(["consume", p.specPath, "--idle-exit", "5"])
        XCTAssertEqual(consume.status, 0, consume.output)
        XCTAssertTrue(consume.output.contains("Consumed 300000 records: 300000 loaded"), consume.output)
        try assertExactTable("it_inflight", rows: 300_000, everyRow: false)
        XCTAssertEqual(try TestStack.connect().int("SELECT count(*) FROM \"pipectl\".\"it_inflight__sources\""), 1)
    }

    /// A broker restart loses the in-memory topic. `consume` notices that its stored offsets
    /// belong to another incarnation and stops with a clear error instead of skipping data;
    /// `run`, which owns the producer, re-sends and ends exact.
    func testBrokerRestartIsDetectedByConsumeAndHealedByRun() throws {
        let p = try TestPipeline.written("it_brokerrestart", csv: repeatedHousingCSV(3_000), sourceBatch: 500)
        let first = try pipectl(["run", p.specPath])
        XCTAssertEqual(first.status, 0, first.output)
        try TestStack.stack!.stopBroker()
        _ = try TestStack.stack!.up(log: { _ in })
        XCTAssertEqual(try pipectl(["produce", p.specPath]).status, 0)
        let refused = try pipectl(["consume", p.specPath, "--idle-exit", "5"])
        XCTAssertEqual(refused.status, 1, refused.output)
        XCTAssertTrue(refused.output.contains("error: stored offsets of topic 'it_brokerrestart-data' partition 0 belong to topic ID"), refused.output)
        XCTAssertTrue(refused.output.contains("it was deleted and created again"), refused.output)
        let healed = try pipectl(["consume", p.specPath, "--idle-exit", "5", "--restart-on-new-topic"])
        XCTAssertEqual(healed.status, 0, healed.output)
        XCTAssertTrue(healed.output.contains("Consumed 3000 records: 0 loaded, 3000 already loaded"), healed.output)
        try assertExactTable("it_brokerrestart", rows: 3_000, everyRow: false)

        // A restart in the middle of `run`: the producer sends again, the consumer starts the
        // new incarnation from the beginning, record ids drop what was already stored.
        let q = try TestPipeline.written("it_runrestart", csv: repeatedHousingCSV(150_000), sourceBatch: 1000, sinkBatch: 2000)
        let run = try startPipectl(["run", q.specPath])
        defer { run.kill9() }
        waitFor("the first rows") { rowCount("it_runrestart") > 2_000 }
        try TestStack.stack!.stopBroker()
        sleep(1)
        _ = try TestStack.stack!.up(log: { _ in })
        guard run.wait(timeout: 240) else { return XCTFail("run did not finish: \(run.output())") }
        XCTAssertEqual(run.terminationStatus, 0, run.output())
        XCTAssertTrue(run.output().contains("reconciled:         yes"), run.output())
        try assertExactTable("it_runrestart", rows: 150_000, everyRow: false)
    }

    /// A consumer that is paused until its partitions move to another member cannot commit
    /// rows or offsets for them afterwards; the load ends exact.
    func testPausedConsumerIsFencedAfterItsPartitionsMoved() throws {
        let p = try TestPipeline.written("it_fence", csv: repeatedHousingCSV(100_000), partitions: 2, sourceBatch: 1000, sinkBatch: 500)
        XCTAssertEqual(try pipectl(["produce", p.specPath]).status, 0)
        let a = try startPipectl(["consume", p.specPath, "--idle-exit", "10"])
        defer { a.kill9() }
        waitFor("consumer a to load") { rowCount("it_fence") > 3_000 }
        a.send(SIGSTOP)
        let b = try startPipectl(["consume", p.specPath, "--idle-exit", "10"])
        defer { b.kill9() }
        // b takes over once a's session has timed out, and stores rows of its own.
        let before = rowCount("it_fence")
        waitFor("consumer b to take over", timeout: 90, otherwise: "b: \(b.output())") {
            b.output().contains("assigned partitions 0, 1") && rowCount("it_fence") > before + 2_000
        }
        a.send(SIGCONT)
        guard a.wait(timeout: 180) && b.wait(timeout: 180) else { return XCTFail("a: \(a.output())\nb: \(b.output())") }
        XCTAssertTrue(a.output().contains("now belong to another consumer; batch dropped"), a.output())
        try assertExactTable("it_fence", rows: 100_000, everyRow: false)
    }

    /// The next owner of a partition whose offsets row another transaction holds: it waits for
    /// a holder that is working (here a session in `pg_sleep`, standing in for a slow COPY or a
    /// Spark job's INSERT) and leaves it alone; a holder frozen inside its COPY (a real `psql`
    /// COPY FROM STDIN that never gets its data, as a SIGSTOPped consumer leaves it) is ended
    /// after 3 s, so its batch rolls back. Neither stalls the new owner's start (its tables exist,
    /// so it runs no DDL); every row is stored once. Before, the frozen COPY held the new owner
    /// until the COPY's `statement_timeout` (120 s), here with none for ever.
    func testConsumerFrozenInsideABatchIsEndedAndABusyOneIsWaitedFor() throws {
        let p = try TestPipeline.written("it_frozen", csv: repeatedHousingCSV(1_000), sourceBatch: 500)
        let first = try pipectl(["run", p.specPath])
        XCTAssertEqual(first.status, 0, first.output)
        func appendAndProduce(_ rows: Range<Int>) throws {
            let handle = try XCTUnwrap(FileHandle(forWritingAtPath: p.csvPath))
            try handle.seekToEnd()
            try handle.write(contentsOf: Data(rows.map { housingRows[$0 % housingRows.count] + "\n" }.joined().utf8))
            try handle.close()
            XCTAssertEqual(try pipectl(["produce", p.specPath]).status, 0)
        }
        let offsets = "\"pipectl\".\"it_frozen__offsets\""

        // A busy holder: waited for, not ended.
        try appendAndProduce(1_000..<1_500)
        let busy = try TestStack.connect()
        try busy.execute("BEGIN")
        XCTAssertEqual(try busy.query("SELECT \"next_offset\" FROM \(offsets) FOR UPDATE").map { $0[0] }, ["1000"])
        let busyDone = DispatchSemaphore(value: 0)
        let busyOutcome = Mutex("")
        let holder = UncheckedSendable(busy)
        Thread.detachNewThread {
            do {
                _ = try holder.value.query("SELECT pg_sleep(7)")
                try holder.value.execute("COMMIT")
                busyOutcome.withLock { $0 = "committed" }
            } catch {
                busyOutcome.withLock { $0 = "\(error)" }
            }
            busyDone.signal()
        }
        let waited = try pipectl(["consume", p.specPath, "--idle-exit", "4"], timeout: 90)
        XCTAssertEqual(waited.status, 0, waited.output)
        XCTAssertTrue(waited.output.contains("waiting for its previous owner's transaction, which is still working"), waited.output)
        XCTAssertFalse(waited.output.contains("ended that session"), waited.output)
        XCTAssertTrue(waited.output.contains("Consumed 500 records: 500 loaded, 0 already loaded, 0 dead-lettered"), waited.output)
        XCTAssertEqual(busyDone.wait(timeout: .now() + 30), .success)
        XCTAssertEqual(busyOutcome.withLock { $0 }, "committed")

        // A holder frozen inside its COPY: ended.
        try appendAndProduce(1_500..<2_000)
        let state = try TestStack.require()
        let psql = Process()
        psql.executableURL = URL(fileURLWithPath: try XCTUnwrap(TestStack.stack).postgresBin() + "/psql")
        psql.arguments = [
            state.databaseURL, "-X", "-q", "-c", "BEGIN", "-c", "SELECT \"next_offset\" FROM \(offsets) FOR UPDATE",
            "-c", "COPY \"it_frozen\" (\"crim\") FROM STDIN",
        ]
        let stdin = Pipe()
        psql.standardInput = stdin
        psql.standardOutput = FileHandle.nullDevice
        psql.standardError = FileHandle.nullDevice
        try psql.run()
        defer {
            try? stdin.fileHandleForWriting.close()
            if psql.isRunning { psql.terminate() }
        }
        let db = try TestStack.connect()
        waitFor("psql's COPY to wait for its data", timeout: 20) {
            (try? db.int("SELECT count(*) FROM pg_stat_activity WHERE \"query\" LIKE 'COPY \"it_frozen\"%' AND \"wait_event\" = 'ClientRead'")) == 1
        }
        let consume = try pipectl(["consume", p.specPath, "--idle-exit", "4"], timeout: 90)
        XCTAssertEqual(consume.status, 0, consume.output)
        XCTAssertTrue(consume.output.contains("its previous owner's transaction held the offsets row for 3 s and is frozen"), consume.output)
        XCTAssertTrue(consume.output.contains("ended that session, so its uncommitted batch rolls back"), consume.output)
        XCTAssertTrue(consume.output.contains("Consumed 500 records: 500 loaded, 0 already loaded, 0 dead-lettered"), consume.output)
        XCTAssertEqual(try db.int("SELECT count(*) FROM pg_stat_activity WHERE \"query\" LIKE 'COPY \"it_frozen\"%'"), 0)
        try assertExactTable("it_frozen", rows: 2_000, everyRow: true)
        XCTAssertEqual(try db.int("SELECT \"next_offset\" FROM \(offsets)"), 2_000)
    }

    /// The producer killed mid-send and run again: the consumer stores each record once.
    func testProducerKilledAndRerunLeavesNoDuplicates() throws {
        let p = try TestPipeline.written("it_prodkill", csv: repeatedHousingCSV(200_000), sourceBatch: 1000, sinkBatch: 5000)
        XCTAssertEqual(try pipectl(["apply", p.specPath]).status, 0)
        let producer = try startPipectl(["produce", p.specPath, "--verbose"])
        waitFor("some batches") { producer.output().components(separatedBy: "Sent batch").count > 20 }
        producer.kill9()
        // The second send resumes after the checkpointed deliveries: it sends exactly the rest.
        let checkpoint = try TestStack.connect().int("SELECT \"checkpoint_records\" FROM \"pipectl\".\"it_prodkill__sources\"")
        XCTAssertGreaterThan(checkpoint, 0)
        let again = try pipectl(["produce", p.specPath])
        XCTAssertEqual(again.status, 0, again.output)
        XCTAssertTrue(
            again.output.contains(
                "Produced \(200_000 - checkpoint) records from it_prodkill.csv to it_prodkill-data (0 as error records; \(checkpoint) sent before)"),
            again.output)
        let consume = try pipectl(["consume", p.specPath, "--idle-exit", "5"])
        XCTAssertEqual(consume.status, 0, consume.output)
        try assertExactTable("it_prodkill", rows: 200_000, everyRow: false)
    }
}

/// Hands a value to one other thread that alone uses it from then on (the test thread only waits).
struct UncheckedSendable<Value>: @unchecked Sendable {  // one owner at a time, handed over once
    let value: Value
    init(_ value: Value) { self.value = value }
}
