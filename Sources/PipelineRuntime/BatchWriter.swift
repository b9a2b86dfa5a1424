import Foundation
import PostgresAdapter

/// Commits batches on a thread of its own, so the consumer decodes the next batch while
/// PostgreSQL stores the last one. One batch is stored at a time and at most one waits.
/// Offsets and counts are updated only after a batch's COMMIT returned.
final class BatchWriter {
    let sink: PostgresSink
    let log: (String) -> Void
    private let condition = NSCondition()
    private var pending: RowBatch?
    private var busy = false
    private var failure: Error?
    private var stopping = false
    private var thread: Thread?

    /// Guarded by `condition`.
    private(set) var storedOffsets: [Int32: Int64] = [:]
    private(set) var report = LoadReport()
    /// Time spent committing, for `PIPECTL_TIMING`.
    private(set) var busySeconds = 0.0
    /// Called on the writer thread after each COMMIT returned, with the batch.
    var afterCommit: (RowBatch) -> Void = { _ in }

    init(sink: PostgresSink, log: @escaping (String) -> Void) {
        self.sink = sink
        self.log = log
        let thread = Thread { [unowned self] in self.loop() }
        thread.stackSize = 4 << 20
        self.thread = thread
        thread.start()
    }

    /// Hands a batch over; waits up to `timeout` seconds for room. False if there was none.
    func submit(_ batch: RowBatch, timeout: Double) throws -> Bool {
        condition.lock()
        defer { condition.unlock() }
        let deadline = Date().addingTimeInterval(timeout)
        while pending != nil && failure == nil {
            if !condition.wait(until: deadline) { return false }
        }
        if let failure { throw failure }
        pending = batch
        condition.broadcast()
        return true
    }

    /// Waits until every handed-over batch is stored.
    func drain() throws {
        condition.lock()
        defer { condition.unlock() }
        while (pending != nil || busy) && failure == nil { condition.wait() }
        if let failure { throw failure }
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

    func currentReport() -> LoadReport {
        condition.lock()
        defer { condition.unlock() }
        return report
    }

    func stop() {
        condition.lock()
        stopping = true
        condition.broadcast()
        condition.unlock()
    }

    private func loop() {
        while true {
            condition.lock()
            while pending == nil && !stopping { condition.wait() }
            if pending == nil && stopping { condition.unlock(); return }
            let batch = pending!
            pending = nil
            busy = true
            condition.broadcast()
            condition.unlock()

            var outcome: Result<CommitResult?, Error>
            let began = Date()
            do {
                outcome = .success(try commitWithRetries(batch))
            } catch {
                outcome = .failure(error)
            }
            busySeconds += Date().timeIntervalSince(began)

            condition.lock()
            busy = false
            switch outcome {
            case let .success(result?):
                report.loaded += result.loaded
                report.duplicates += result.duplicates
                report.deadLettered += result.deadLettered
                report.batches += 1
                storedOffsets.merge(batch.nextOffsets) { _, new in new }
            case .success(nil):
                break
            case let .failure(error):
                failure = error
            }
            condition.broadcast()
            condition.unlock()
            if case .success(_?) = outcome { afterCommit(batch) }
        }
    }

    /// Stores the batch, reconnecting with backoff while PostgreSQL is away. A fenced batch
    /// (its partitions now belong to another consumer) is dropped: nil.
    private func commitWithRetries(_ batch: RowBatch) throws -> CommitResult? {
        var attempt = 0
        while true {
            do {
                return try sink.commit(batch)
            } catch let fenced as FencedError {
                log("warning: \(fenced)")
                return nil
            } catch let error as PostgresError where error.connectionLost {
                attempt += 1
                log("PostgreSQL connection lost (\(error.message)); retrying the batch (attempt \(attempt))")
                try sink.reconnect { self.log($0) }
            }
        }
    }
}
