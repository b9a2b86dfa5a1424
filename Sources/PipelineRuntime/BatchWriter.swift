import Foundation
import Logging
import PostgresAdapter

/// The writer lost its PostgreSQL connection and reconnected. Batches commit with
/// `synchronous_commit = off`, so a server crash can lose commits the writer saw succeed
/// (rows and offsets together). The consumer must drop what it holds and read each partition
/// again from `offsets`, the next offsets the server kept (-1: from the beginning).
struct ResyncNeeded: Error, CustomStringConvertible {
    var offsets: [Int32: Int64]
    /// Partitions whose stored offset is behind what the writer had committed: the server lost
    /// those commits.
    var rewound: [Int32: (believed: Int64, stored: Int64)]
    var description: String {
        if rewound.isEmpty { return "reconnected; continuing from the stored offsets" }
        let parts = rewound.keys.sorted().map { p in "partition \(p) from offset \(rewound[p]!.stored) (had committed up to \(rewound[p]!.believed))" }
        return "the stored offsets are behind what this consumer committed (PostgreSQL lost commits, e.g. in a crash); reading again: "
            + parts.joined(separator: ", ")
    }
}

/// Commits batches on a thread of its own, so the consumer decodes the next batch while
/// PostgreSQL stores the last one. One batch is stored at a time and at most one waits.
///
/// Ownership: the sink (and its PostgreSQL connection) belongs to the writer's thread from
/// `init` until `stop()` returns. The consumer hands work over (`submit`, `sync`, `perform` for
/// a claim) and never touches the connection itself; after `stop()` the caller owns the sink
/// again.
///
/// `@unchecked Sendable`: the thread closure captures the writer; every mutable property is
/// read and written only under `condition` (except `busySeconds` and `afterCommit`, written
/// only by the writer thread, resp. only before the first batch).
///
/// Counts and stored offsets follow durability: a batch's result is *tentative* from its COMMIT
/// until the server's WAL flush position passes it (learned from the next batch's first query,
/// or forced by `sync()` before a summary), and is discarded if a crash lost it.
final class BatchWriter: @unchecked Sendable {
    let sink: PostgresSink
    let logger: Logger
    private let condition = NSCondition()
    private enum Job {
        case batch(RowBatch)
        case sync
        /// Work of the consumer's that needs the connection (`perform`).
        case call(() -> Void)
    }
    private var pending: Job?
    private var busy = false
    private var failure: Error?
    private var stopping = false
    /// Set by the writer thread as it returns; `stop()` waits for it.
    private var exited = false

    /// A committed batch whose commit may not be on disk yet.
    private struct Tentative {
        var nextOffsets: [Int32: Int64]
        var result: CommitResult
        /// A WAL position at or after the end of this batch's commit record, once known.
        var walBound: UInt64?
    }

    /// Guarded by `condition`.
    private(set) var storedOffsets: [Int32: Int64] = [:]
    private var durable = LoadReport()
    private var tentative: [Tentative] = []
    /// Time spent committing, for `PIPECTL_TIMING`.
    private(set) var busySeconds = 0.0
    /// Called on the writer thread after each COMMIT returned, with the batch.
    var afterCommit: (RowBatch) -> Void = { _ in }

    init(sink: PostgresSink, logger: Logger) {
        self.sink = sink
        self.logger = logger
        let thread = Thread { [self] in
            self.loop()
            self.condition.lock()
            self.exited = true
            self.condition.broadcast()
            self.condition.unlock()
        }
        thread.stackSize = 4 << 20
        thread.start()
    }

    /// Hands a batch over; waits up to `timeout` seconds for room. False if there was none.
    /// - Throws: `ResyncNeeded` after a lost connection (the batch is not taken), or the
    ///   writer's fatal error.
    func submit(_ batch: RowBatch, timeout: Double) throws -> Bool {
        try hand(.batch(batch), timeout: timeout)
    }

    private func hand(_ job: Job, timeout: Double?) throws -> Bool {
        condition.lock()
        defer { condition.unlock() }
        let deadline = timeout.map { Date().addingTimeInterval($0) }
        while pending != nil && failure == nil {
            if let deadline {
                if !condition.wait(until: deadline) { return false }
            } else {
                condition.wait()
            }
        }
        if let failure { throw failure }
        pending = job
        condition.broadcast()
        return true
    }

    /// Waits until every handed-over batch is committed.
    /// - Throws: `ResyncNeeded` or the writer's fatal error.
    func drain() throws {
        condition.lock()
        defer { condition.unlock() }
        while (pending != nil || busy) && failure == nil { condition.wait() }
        if let failure { throw failure }
    }

    /// Waits until every handed-over batch is committed *and durable*; after it returns the
    /// report counts only rows on disk.
    /// - Throws: `ResyncNeeded` when the connection was lost meanwhile, or a fatal error.
    func sync() throws {
        try drain()
        _ = try hand(.sync, timeout: nil)
        try drain()
    }

    /// Runs `body` on the writer's thread, between batches, and returns its result: the way
    /// the consumer uses the sink's connection (a claim), since the connection is the writer's
    /// alone (libpq connections are not thread-safe). Waits until the writer is idle first; a
    /// pending resync does not stop it (a claim reads the stored offsets again anyway).
    /// - Throws: what `body` throws, or the writer's fatal error.
    func perform<T>(_ body: @escaping () throws -> T) throws -> T {
        var outcome: Result<T, Error>?
        condition.lock()
        defer { condition.unlock() }
        while (pending != nil || busy) && failure == nil { condition.wait() }
        if let failure, !(failure is ResyncNeeded) { throw failure }
        pending = .call { [condition] in
            let result = Result { try body() }
            // Under the lock: this thread reads `outcome` whenever `condition` wakes it, also
            // while the writer is still inside `body` (review finding R5: a data race before).
            condition.lock()
            outcome = result
            condition.unlock()
        }
        condition.broadcast()
        // The writer sets `outcome` (under `condition`), then broadcasts in `finish`.
        while outcome == nil && !exited { condition.wait() }
        guard let outcome else { throw PostgresError("the batch writer stopped before running a claim") }
        return try outcome.get()
    }

    /// After a synchronous commit on the connection (a claim): every earlier commit is on disk.
    func markAllDurable() {
        condition.lock()
        for t in tentative { addDurable(t.result) }
        tentative.removeAll()
        condition.unlock()
    }

    /// Partitions revoked from this consumer: their stored offsets are no longer its to track.
    func forget(_ partitions: [Int32]) {
        condition.lock()
        for p in partitions { storedOffsets[p] = nil }
        condition.unlock()
    }

    /// Called by the consumer once it has re-positioned itself after `ResyncNeeded`.
    func resumeAfterResync() {
        condition.lock()
        if failure is ResyncNeeded { failure = nil }
        condition.broadcast()
        condition.unlock()
    }

    var isIdle: Bool {
        condition.lock()
        defer { condition.unlock() }
        return pending == nil && !busy
    }

    func stored(_ partition: Int32) -> Int64? {
        condition.lock()
        defer { condition.unlock() }
        return storedOffsets[partition]
    }

    func setStored(_ offsets: [Int32: Int64]) {
        condition.lock()
        storedOffsets.merge(offsets) { _, new in new }
        condition.unlock()
    }

    /// Durable counts plus those of commits not yet known to be on disk.
    func currentReport() -> LoadReport {
        condition.lock()
        defer { condition.unlock() }
        var report = durable
        for t in tentative { Self.add(t.result, to: &report) }
        return report
    }

    /// Every stored offset this writer tracks (partition -> next offset).
    func storedOffsetsSnapshot() -> [Int32: Int64] {
        condition.lock()
        defer { condition.unlock() }
        return storedOffsets
    }

    /// Stops the writer thread once the job in hand (if any) is done, and waits for it, so the
    /// sink's connection is the caller's again when this returns.
    func stop() {
        condition.lock()
        stopping = true
        condition.broadcast()
        while !exited { condition.wait() }
        condition.unlock()
    }

    /// Adds a durable commit to the report, and to the exported metrics.
    private func addDurable(_ result: CommitResult) {
        Self.add(result, to: &durable)
        let sinkName = [("sink", sink.sink.name)]
        Emit.count(.rowsWritten, result.loaded, sinkName)
        Emit.count(sink.sink.mode == .upsert ? .rowsUpdated : .recordsAlreadyLoaded, result.duplicates, sinkName)
        for (stage, n) in result.deadLettersByStage.sorted(by: { $0.key < $1.key }) {
            Emit.count(.deadLetters, n, [("sink", sink.sink.name), ("stage", stage)])
        }
    }

    private static func add(_ result: CommitResult, to report: inout LoadReport) {
        report.loaded += result.loaded
        report.duplicates += result.duplicates
        report.deadLettered += result.deadLettered
        report.batches += 1
    }

    /// Moves tentative results the WAL flush has passed into the durable report.
    /// Caller holds `condition`.
    private func promote(flushed: UInt64) {
        var n = 0
        while n < tentative.count, let bound = tentative[n].walBound, bound <= flushed { n += 1 }
        for t in tentative[..<n] { addDurable(t.result) }
        tentative.removeFirst(n)
    }

    private func loop() {
        while true {
            condition.lock()
            while pending == nil && !stopping {
                // Idle with commits not yet known to be on disk (a light or finished stream):
                // ask the server how far its WAL is flushed, so counts and metrics catch up.
                // `busy` keeps drain() waiting: the consumer thread uses the connection after it
                // (claims), so the two must never overlap.
                if !condition.wait(until: Date().addingTimeInterval(1)), pending == nil, !busy, !stopping, !tentative.isEmpty {
                    busy = true
                    condition.unlock()
                    refreshDurability()
                    condition.lock()
                    busy = false
                    condition.broadcast()
                }
            }
            if pending == nil && stopping {
                condition.unlock()
                return
            }
            let job = pending!
            pending = nil
            busy = true
            condition.broadcast()
            condition.unlock()

            let began = Date()
            switch job {
            case .batch(let batch): store(batch)
            case .sync: syncDurable()
            case .call(let body):
                body()
                finish {}
            }
            busySeconds += Date().timeIntervalSince(began)
        }
    }

    private func finish(_ update: () -> Void) {
        condition.lock()
        busy = false
        update()
        condition.broadcast()
        condition.unlock()
    }

    private func store(_ batch: RowBatch) {
        guard !batch.isEmpty, !batch.nextOffsets.isEmpty else { return finish {} }
        do {
            let began = Date()
            let result = try sink.commit(batch)
            Emit.record(.commitDuration, Date().timeIntervalSince(began))
            Emit.record(.batchRows, Double(batch.count))
            finish {
                // Every tentative commit ended before this transaction began.
                // (A position of 0 means the query returned no row: learn nothing from it.)
                if result.walInsertAtStart > 0 {
                    for i in tentative.indices where tentative[i].walBound == nil { tentative[i].walBound = result.walInsertAtStart }
                    promote(flushed: result.walFlushedAtStart)
                }
                tentative.append(Tentative(nextOffsets: batch.nextOffsets, result: result))
                storedOffsets.merge(batch.nextOffsets) { _, new in new }
            }
            afterCommit(batch)
        } catch let fenced as FencedError {
            logger.warning("\(fenced)")
            finish {}
        } catch let unknown as CommitOutcomeUnknown {
            // It may have committed: keep it as tentative; the stored offsets will tell.
            condition.lock()
            tentative.append(Tentative(nextOffsets: batch.nextOffsets, result: unknown.result))
            condition.unlock()
            resync(after: unknown.cause, partitions: Array(batch.nextOffsets.keys))
        } catch let error as PostgresError where error.connectionLost {
            resync(after: error, partitions: Array(batch.nextOffsets.keys))
        } catch {
            finish { failure = error }
        }
    }

    /// Reads the server's WAL insert and flush positions (one cheap query, no flush forced):
    /// every commit so far ends before the insert position, and those the flush has passed are
    /// durable. Errors are left to the next commit, which reconnects and resyncs.
    private func refreshDurability() {
        let insert: UInt64
        let flushed: UInt64
        do {
            (insert, flushed) = try sink.walPositions()
        } catch let error as PostgresError where error.connectionLost {
            // The server went away while the stream was quiet: find out now what it kept.
            resync(after: error, partitions: [])
            return
        } catch {
            return
        }
        guard insert > 0 else { return }
        condition.lock()
        for i in tentative.indices where tentative[i].walBound == nil { tentative[i].walBound = insert }
        promote(flushed: flushed)
        condition.unlock()
    }

    private func syncDurable() {
        do {
            try sink.syncDurable()
            finish {
                for t in tentative { addDurable(t.result) }
                tentative.removeAll()
            }
        } catch let error as PostgresError where error.connectionLost {
            resync(after: error, partitions: [])
        } catch {
            finish { failure = error }
        }
    }

    /// After a lost connection: reconnect within the sink's retry window, read the offsets the
    /// server kept, keep the tentative results those offsets cover (WAL is replayed in order, so
    /// the survivors are a prefix), and tell the consumer where to read again.
    private func resync(after error: PostgresError, partitions: [Int32], deadline: Date? = nil) {
        let deadline = deadline ?? Date().addingTimeInterval(Double(sink.sink.retryTimeoutMs) / 1000)
        let left = Int(max(0, deadline.timeIntervalSinceNow).rounded())
        logger.warning("PostgreSQL connection lost (\(error.message)); reconnecting for up to \(left) s more (retry_timeout_ms)")
        do {
            try sink.reconnect(
                until: deadline, logger: logger,
                stop: { [self] in
                    condition.lock()
                    defer { condition.unlock() }
                    return StopSignal.requested || stopping
                })
            condition.lock()
            let known = Array(Set(storedOffsets.keys).union(partitions))
            condition.unlock()
            let (kept, claimedByOthers) = try sink.storedOffsets(known)
            if !claimedByOthers.isEmpty { logger.warning("\(FencedError(partitions: claimedByOthers))") }
            finish {
                var survivors = 0
                // Partitions no longer this consumer's (revoked, or claimed by another) cannot say.
                while survivors < tentative.count,
                    tentative[survivors].nextOffsets.allSatisfy({ p, next in kept[p].map { $0 >= next } ?? true })
                { survivors += 1 }
                for t in tentative[..<survivors] { addDurable(t.result) }
                tentative.removeAll()
                var rewound: [Int32: (believed: Int64, stored: Int64)] = [:]
                // -1 (nothing stored yet) and 0 both mean "from the beginning".
                for (p, believed) in storedOffsets where kept[p] != nil && max(kept[p]!, 0) < believed {
                    rewound[p] = (believed, kept[p] ?? -1)
                }
                storedOffsets = kept
                pending = nil
                failure = ResyncNeeded(offsets: kept, rewound: rewound)
            }
        } catch let retry as PostgresError where retry.connectionLost {
            // Lost again between reconnecting and reading the offsets: go round once more.
            resync(after: retry, partitions: partitions, deadline: deadline)
        } catch {
            finish { failure = error }
        }
    }
}
