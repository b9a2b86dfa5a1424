import Foundation
import Logging
import PipelineCompiler
import PostgresAdapter
import RecordFormats

/// A batch of decoded rows ready to commit with the consumer's offsets.
public struct RowBatch {
    /// COPY text rows, record-id column and newline included.
    public var rows: [UInt8] = []
    /// Byte range of each row in `rows`, with the message it came from.
    public var rowRanges: [Range<Int>] = []
    public var rowOrigins: [RowOrigin] = []
    public var rejected: [(RowOrigin, RejectedRecord)] = []
    /// Next offset to read per partition once this batch is stored.
    public var nextOffsets: [Int32: Int64] = [:]
    public var firstAt: Date?
    /// Send times carried by the records (for latency figures).
    public var sentAtMicros: [Int64] = []

    public var count: Int { rowRanges.count + rejected.count }
    public var isEmpty: Bool { count == 0 && nextOffsets.isEmpty }

    public mutating func clear() {
        rows.removeAll(keepingCapacity: true)
        rowRanges.removeAll(keepingCapacity: true)
        rowOrigins.removeAll(keepingCapacity: true)
        rejected.removeAll(keepingCapacity: true)
        nextOffsets.removeAll(keepingCapacity: true)
        sentAtMicros.removeAll(keepingCapacity: true)
        firstAt = nil
    }
}

/// Something that can hand over a record's raw bytes when it has to be dead-lettered; the
/// consumed message itself, so no copy is made for the rows that load.
public protocol PayloadHolder: AnyObject {
    var payloadBytes: [UInt8] { get }
}

final class CopiedPayload: PayloadHolder {
    let payloadBytes: [UInt8]
    init(_ bytes: [UInt8]) { payloadBytes = bytes }
}

public struct RowOrigin {
    public var partition: Int32
    public var offset: Int64
    public var recordID: RecordID?
    public var holder: PayloadHolder?

    public var payload: [UInt8]? { holder?.payloadBytes }
}

/// What one commit did.
public struct CommitResult: Sendable {
    public var loaded = 0
    public var duplicates = 0
    public var deadLettered = 0
    /// Dead letters by stage (`source`, `parse`, `cast`, `constraint`).
    public var deadLettersByStage: [String: Int] = [:]
    /// The server's WAL positions read at the start of the transaction (`pg_current_wal_insert_lsn()`,
    /// `pg_current_wal_flush_lsn()`): every earlier commit of this connection ends at or before
    /// `walInsertAtStart`, and everything up to `walFlushedAtStart` is on disk.
    var walInsertAtStart: UInt64 = 0
    var walFlushedAtStart: UInt64 = 0
}

/// The connection broke while COMMIT was on its way: the server may or may not have committed.
/// `result` is what the transaction did if it did; the stored offsets tell which it was.
struct CommitOutcomeUnknown: Error {
    var result: CommitResult
    var cause: PostgresError
}

/// A PostgreSQL `pg_lsn` (`16/B374D848`) as a number, for comparing WAL positions.
func parseLSN(_ text: String?) -> UInt64 {
    guard let text, let slash = text.firstIndex(of: "/"),
        let high = UInt64(text[..<slash], radix: 16), let low = UInt64(text[text.index(after: slash)...], radix: 16)
    else { return 0 }
    return high << 32 | low
}

/// This consumer no longer owns a partition it was about to commit: another member of the
/// group claimed it. The batch is dropped; the new owner reads it again.
public struct FencedError: Error, CustomStringConvertible, Sendable {
    /// The partitions another member of the group now owns.
    public var partitions: [Int32]
    public init(partitions: [Int32]) { self.partitions = partitions }
    public var description: String { "partitions \(partitions.map(String.init).joined(separator: ", ")) now belong to another consumer; batch dropped" }
}

/// The topic's stored offsets belong to an earlier incarnation of the topic.
public struct TopicIncarnationError: Error, CustomStringConvertible, Sendable {
    /// What was found.
    public enum Reason: Sendable, Equatable {
        /// The offsets stored for `partition` were written for topic ID `storedID`, but the
        /// topic now has `currentID`: it was deleted and created again.
        case recreated(topic: String, partition: Int32, storedID: String?, currentID: String)
        /// The consumer saw the topic vanish or change; the text says how.
        case detected
    }

    public var reason: Reason
    /// The line shown (tests match on it).
    public var message: String
    public var description: String { message }

    /// A topic change the consumer detected itself (`Reason.detected`), told by `message`.
    public init(message: String) {
        self.reason = .detected
        self.message = message
    }

    /// Stored offsets of another incarnation, found while claiming `partition`.
    init(recreated topic: String, partition: Int32, storedID: String?, currentID: String) {
        self.reason = .recreated(topic: topic, partition: partition, storedID: storedID, currentID: currentID)
        self.message =
            "stored offsets of topic '\(topic)' partition \(partition) belong to topic ID \(storedID ?? "?"), but the topic now has ID \(currentID): it was deleted and created again (a broker restart loses in-memory topics). Nothing was skipped. Re-send the data (`pipectl run` or `pipectl produce`) and start `pipectl consume --restart-on-new-topic`; record ids keep rows from loading twice."
    }
}

/// Writes batches into the sink's table together with the consumer's offsets and dead letters,
/// in one transaction, so a batch is stored exactly once or not at all.
public final class PostgresSink {
    let pipeline: Pipeline
    public let sink: Sink
    let topic: Topic
    let sourceName: String
    let sourcePath: String
    let flowSourceCount: Int
    public let url: String
    var conn: PostgresConnection
    let columnList: String
    let target: String
    let offsetsTable: String
    let sourcesTable: String
    let deadLetterTable: String
    /// Set after a batch met already-loaded records: the next batches go through the
    /// de-duplicating path first instead of failing a plain COPY each time.
    var dedupBatchesLeft = 0
    var stagingReady = false
    public private(set) var batchesCommitted = 0
    /// Identifies this consumer's claim on its partitions (a new one per assignment).
    public private(set) var ownerToken = UUID().uuidString

    public init(pipeline: Pipeline, flow: Flow, columnList: String, url: String) throws {
        self.pipeline = pipeline
        self.sink = flow.sink
        self.topic = flow.topic
        // One file feeding the topic: every record is that file's. Several: the file's own
        // source is learnt where its checkpoint was registered (`sourceOrigin`).
        self.flowSourceCount = flow.sources.count
        self.sourceName = flow.sources.count == 1 ? flow.sources[0].name : flow.topic.name
        self.sourcePath = flow.sources.count == 1 ? flow.sources[0].path : ""
        self.url = url
        self.columnList = columnList
        self.target = SQL.qualified(flow.sink.dbSchema, flow.sink.table)
        let b = pipeline.bookkeeping
        offsetsTable = SQL.qualified(Bookkeeping.schema, b.offsets)
        sourcesTable = SQL.qualified(Bookkeeping.schema, b.sources)
        deadLetterTable = SQL.qualified(Bookkeeping.schema, b.deadLetters)
        conn = try PostgresConnection(url: url)
        try Self.configure(conn)
    }

    /// A consumer frozen inside a transaction (SIGSTOP, a long GC-like pause, a lost network)
    /// must not hold the offsets rows locked forever: the server ends such a session, its
    /// batch rolls back, and the next owner of the partitions can claim them.
    static func configure(_ conn: PostgresConnection) throws {
        try conn.execute("SET idle_in_transaction_session_timeout = '5s'; SET statement_timeout = '120s'")
        // A batch commits its rows, dead letters and offsets together, so a commit the server
        // loses in a crash loses all three and the batch is read again: exactly-once holds
        // without waiting for the WAL flush. Claims (below) still wait for it.
        try conn.execute("SET synchronous_commit = off")
    }

    /// Applies the plan's DDL, serialised across consumers by an advisory lock. What already
    /// exists is not touched: DDL on a table waits for every open transaction on it, so a
    /// consumer starting next to one frozen inside a batch (the one it takes over from) would
    /// otherwise wait for that batch, up to its `statement_timeout`.
    /// - Throws: `PostgresError`; one naming the wait when a change that is needed could not
    ///   lock its table within `ddlLockTimeoutMs`.
    public func applyDDL() throws {
        do {
            try conn.withTransaction {
                // One lock for all pipelines: CREATE SCHEMA IF NOT EXISTS is not safe against a
                // concurrent create of the same schema. Taken before the lock timeout is set: the
                // wait for another pipectl's DDL is not the wait the timeout is about.
                try conn.query("SELECT pg_advisory_xact_lock(hashtext('pipectl ddl'))")
                try conn.execute("SET LOCAL lock_timeout = '\(Self.ddlLockTimeoutMs)ms'")
                if try conn.query(DDL.bookkeepingIsCurrent(for: pipeline)).first?[0] != "t" {
                    for statement in DDL.bookkeeping(for: pipeline) { try conn.execute(statement) }
                }
                // Compare first, then change: an existing table gets its columns before its indexes.
                for each in pipeline.sinks { try SchemaCheck.apply(sink: each, on: conn) }
            }
        } catch let error as PostgresError where error.code == .lockNotAvailable {
            throw PostgresError(
                "could not lock pipectl's tables for a schema change within \(Self.ddlLockTimeoutMs / 1000) s: another session keeps a transaction open on them (\(error.message)). Run again once it has ended; `SELECT pid, state, query FROM pg_stat_activity` shows it.",
                sqlState: error.sqlState)
        }
    }

    /// How long a needed schema change waits for its table's lock.
    static let ddlLockTimeoutMs = 30_000

    /// Reconnects after the server went away, with backoff (0.25 s doubling to 5 s), until
    /// `deadline` (the sink's `retry_timeout_ms` after the connection was lost).
    /// - Parameter stop: asked between tries; true gives up at once (Ctrl-C, or the consumer
    ///   stopping for another reason, which must not wait out the retry window).
    /// - Throws: `PostgresError` naming the retry window once it has passed, or when stopped.
    func reconnect(until deadline: Date, logger: Logger, stop: () -> Bool = { StopSignal.requested }) throws {
        var delay = 0.25
        while true {
            do {
                conn = try PostgresConnection(url: url)
                try Self.configure(conn)
                stagingReady = false
                logger.info("reconnected to PostgreSQL")
                return
            } catch let error as PostgresError {
                // Not `connectionLost`: the caller must stop, not try again.
                if stop() { throw PostgresError("stopped while reconnecting to PostgreSQL (\(error.message)); every committed batch is safe") }
                let left = deadline.timeIntervalSinceNow
                if left <= 0 {
                    throw PostgresError(
                        "PostgreSQL unreachable for longer than the sink's retry_timeout_ms (\(sink.retryTimeoutMs) ms): \(error.message). "
                            + "Every committed batch is safe; run again once the server is back to continue from the stored offsets.")
                }
                Thread.sleep(forTimeInterval: min(delay, left))
                delay = min(delay * 2, 5)
            }
        }
    }

    /// The stored next offset of each partition that this consumer still owns (after a
    /// reconnect: what the server kept; -1 means "from the beginning"), and the partitions
    /// another consumer has claimed meanwhile (this one is fenced out of them).
    func storedOffsets(_ partitions: [Int32]) throws -> (mine: [Int32: Int64], claimedByOthers: [Int32]) {
        guard !partitions.isEmpty else { return ([:], []) }
        let rows = try conn.query(
            "SELECT \"partition\", \"next_offset\", \"owner\" FROM \(offsetsTable) WHERE \"sink\" = $1 AND \"topic\" = $2 AND \"partition\" = ANY($3::int[])",
            [sink.name, topic.name, "{" + partitions.map(String.init).joined(separator: ",") + "}"])
        var offsets: [Int32: Int64] = [:]
        var others: [Int32] = []
        for row in rows {
            guard let p = Int32(row[0] ?? ""), let next = Int64(row[1] ?? "") else { continue }
            if row[2] == ownerToken { offsets[p] = next } else { others.append(p) }
        }
        return (offsets, others.sorted())
    }

    /// Makes every batch committed so far durable. Batches commit with `synchronous_commit =
    /// off`; a commit with it on flushes the WAL up to its own commit record, which lies after
    /// all of them (PostgreSQL docs, "Asynchronous Commit"). The transaction touches this
    /// consumer's offsets rows so that it writes WAL and so waits for the flush; holding no
    /// partitions, it waits for the WAL writer to pass the current insert position instead.
    func syncDurable() throws {
        try conn.withTransaction {
            try conn.execute("SET LOCAL synchronous_commit = on")
            // Rows locked in partition order first, as claims and commits lock them.
            let touched = try conn.query(
                """
                UPDATE \(offsetsTable) SET "updated_at" = now() WHERE ctid IN (
                  SELECT ctid FROM \(offsetsTable) WHERE "sink" = $1 AND "topic" = $2 AND "owner" = $3 ORDER BY "partition" FOR UPDATE
                ) RETURNING 1
                """, [sink.name, topic.name, ownerToken])
            if !touched.isEmpty { return }
            let target = parseLSN(try conn.query("SELECT pg_current_wal_insert_lsn()::text").first?[0] ?? nil)
            let deadline = Date().addingTimeInterval(30)
            while parseLSN(try conn.query("SELECT pg_current_wal_flush_lsn()::text").first?[0] ?? nil) < target {
                if Date() > deadline { throw PostgresError("PostgreSQL did not flush its WAL within 30 s") }
                Thread.sleep(forTimeInterval: 0.02)
            }
        }
    }

    /// The server's WAL insert and flush positions, for `BatchWriter`'s durability tracking.
    func walPositions() throws -> (insert: UInt64, flushed: UInt64) {
        let row = try conn.query("SELECT pg_current_wal_insert_lsn()::text, pg_current_wal_flush_lsn()::text").first
        return (parseLSN(row?[0] ?? nil), parseLSN(row?[1] ?? nil))
    }

    // MARK: sources

    /// Source numbers for record keys; used by the consumer thread while it decodes, on a
    /// connection of its own (the writer thread owns `conn`).
    public private(set) lazy var sources = SourceRegistry(
        url: url, table: sourcesTable, source: sourceName, path: sourcePath,
        retryTimeout: Double(sink.retryTimeoutMs) / 1000, origin: sourceOrigin)

    /// Where the topic's files were registered when several files feed it and this sink's
    /// database is not the one holding the send checkpoints (the first sink of the topic's):
    /// a file first seen here takes its source name and path from there.
    private var sourceOrigin: String? {
        guard flowSourceCount > 1, let first = pipeline.flows.first(where: { $0.topic.name == topic.name }),
            let origin = try? PipelineRunner.databaseURL(for: first.sink, environment: ProcessInfo.processInfo.environment), origin != url
        else { return nil }
        return origin
    }

    // MARK: offsets

    /// Claims `partitions` for this consumer and returns where each should start
    /// (nil: from the beginning). Offsets of another incarnation of the topic are refused,
    /// or forgotten when `restartOnNewTopic` is set (then record ids prevent duplicates).
    ///
    /// A previous owner frozen inside its batch's transaction (SIGSTOP, a VM pause, a lost
    /// network) holds the partition's offsets row locked; `idle_in_transaction_session_timeout`
    /// does not end it while it sits in a COPY, only `statement_timeout` would (120 s). So a
    /// claim that waits `claimLockTimeoutMs` for the row ends the session holding it
    /// (`pg_terminate_backend`), whose uncommitted batch rolls back, and claims again: the
    /// group has already moved the partition, so that batch could never be kept anyway.
    /// - Parameter logger: says which session was ended and why.
    /// - Throws: `TopicIncarnationError` for offsets of another incarnation of the topic;
    ///   `PostgresError` otherwise.
    public func claim(_ partitions: [Int32], topicID: String, restartOnNewTopic: Bool, logger: Logger) throws -> [Int32: Int64] {
        ownerToken = UUID().uuidString
        var starts: [Int32: Int64] = [:]
        try conn.withTransaction {
            // A lost claim would leave this consumer fenced out of its own partitions.
            try conn.execute("SET LOCAL synchronous_commit = on; SET LOCAL lock_timeout = '\(Self.claimLockTimeoutMs)ms'")
            // In partition order, the order in which a commit locks its rows (`ORDER BY "partition"
            // FOR UPDATE`), so a claim and a commit never wait for each other in a cycle.
            for p in partitions.sorted() {
                let rows = try claimRow(p, topicID: topicID, logger: logger)
                let storedID = rows.first?[0] ?? ""
                let next = Int64(rows.first?[1] ?? "-1") ?? -1
                if storedID != topicID {
                    guard restartOnNewTopic else {
                        throw TopicIncarnationError(recreated: topic.name, partition: p, storedID: storedID, currentID: topicID)
                    }
                    try conn.query(
                        "UPDATE \(offsetsTable) SET \"topic_id\" = $4, \"next_offset\" = -1 WHERE \"sink\" = $1 AND \"topic\" = $2 AND \"partition\" = $3",
                        [sink.name, topic.name, String(p), topicID])
                    continue
                }
                if next >= 0 { starts[p] = next }
            }
        }
        return starts
    }

    /// How long a claim waits for a partition's offsets row before it ends the session holding
    /// it. A live consumer holds the row for one batch's COPY and COMMIT (milliseconds to about a
    /// second), so 3 s means frozen.
    static let claimLockTimeoutMs = 3_000

    /// Inserts or takes over the offsets row of `partition`; returns its `topic_id` and
    /// `next_offset`. Runs inside the claim's transaction, each try under a savepoint.
    private func claimRow(_ partition: Int32, topicID: String, logger: Logger) throws -> [[String?]] {
        var told: Set<String> = []
        while true {
            try conn.execute("SAVEPOINT pipectl_claim")
            do {
                let rows = try conn.query(
                    """
                    INSERT INTO \(offsetsTable) ("sink", "topic", "partition", "topic_id", "next_offset", "owner", "claimed_at")
                    VALUES ($1, $2, $3, $4, -1, $5, now())
                    ON CONFLICT ("sink", "topic", "partition") DO UPDATE SET "owner" = EXCLUDED."owner", "claimed_at" = now()
                    RETURNING "topic_id", "next_offset"
                    """, [sink.name, topic.name, String(partition), topicID, ownerToken])
                try conn.execute("RELEASE SAVEPOINT pipectl_claim")
                return rows
            } catch let error as PostgresError where error.code == .lockNotAvailable || error.code == .deadlockDetected {
                // A deadlock victim (40P01) lost only this statement: try again.
                try conn.execute("ROLLBACK TO SAVEPOINT pipectl_claim")
                if StopSignal.requested { throw error }
                if error.code == .lockNotAvailable { try endFrozenHolder(of: partition, told: &told, logger: logger) }
            }
        }
    }

    /// After a claim waited `claimLockTimeoutMs` for `partition`'s offsets row: ends the session
    /// holding it if that session is frozen, so its uncommitted batch rolls back; otherwise the
    /// claim goes on waiting (and says why, once per session).
    ///
    /// The holder is the client session of this database whose transaction id is the row's
    /// `xmax` (a row lock's owner, PostgreSQL docs "Row-Level Locks") and which holds a lock on
    /// the offsets table. It counts as frozen when it is idle inside its transaction for the whole
    /// wait, or waits for its client (`wait_event` ClientRead) with its COPY making no progress
    /// for a second (`pg_stat_progress_copy.bytes_processed`; before PostgreSQL 14, ClientRead
    /// twice a second apart). A session that is working (a slow COPY, a Spark job's INSERT …
    /// SELECT, a wait for another lock) is left alone: its batch passed its owner check and may
    /// commit, and this claim then starts after it. Ending a session of another role needs
    /// `pg_signal_backend`; without it the claim waits.
    private func endFrozenHolder(of partition: Int32, told: inout Set<String>, logger: Logger) throws {
        let place = "partition \(partition) of \(topic.name)"
        let progress = conn.serverVersion >= 140000  // pg_stat_progress_copy is PostgreSQL 14's
        func copyBytes(_ pid: String) throws -> String? {
            guard progress else { return nil }
            return try conn.query("SELECT \"bytes_processed\"::text FROM pg_stat_progress_copy WHERE \"pid\" = $1::int", [pid]).first?[0] ?? nil
        }
        let holders = try conn.query(
            """
            SELECT a."pid"::text, coalesce(a."client_addr"::text, 'local'), round(extract(epoch FROM now() - a."xact_start"))::int::text,
                   a."state", coalesce(a."wait_event", ''), extract(epoch FROM now() - a."state_change")::float8::text
            FROM \(offsetsTable) o JOIN pg_stat_activity a ON a."backend_xid" = o."xmax"
            WHERE o."sink" = $1 AND o."topic" = $2 AND o."partition" = $3 AND a."pid" <> pg_backend_pid()
              AND a."backend_type" = 'client backend' AND a."datname" = current_database()
              AND EXISTS (SELECT 1 FROM pg_locks l WHERE l."pid" = a."pid" AND l."locktype" = 'relation' AND l."relation" = $4::regclass)
            """, [sink.name, topic.name, String(partition), offsetsTable])
        guard !holders.isEmpty else {
            if told.insert("unknown").inserted {
                logger.warning(
                    "\(place): its offsets row has been locked for \(Self.claimLockTimeoutMs / 1000) s by a transaction that is not a session's own (a prepared transaction, a subtransaction, or locks shared by several sessions); waiting for it to end"
                )
            }
            return
        }
        for holder in holders {
            guard let pid = holder[0] else { continue }
            let (state, waitEvent) = (holder[3] ?? "", holder[4] ?? "")
            let who =
                "PostgreSQL session \(pid) from \(holder[1] ?? "?"), in its transaction for \(holder[2] ?? "?") s, \(state)\(waitEvent.isEmpty ? "" : " (\(waitEvent))")"
            var frozen = false
            if state.hasPrefix("idle in transaction") {
                frozen = (Double(holder[5] ?? "") ?? 0) * 1000 >= Double(Self.claimLockTimeoutMs)
            } else if state == "active" && waitEvent == "ClientRead" {
                let before = try copyBytes(pid)
                Thread.sleep(forTimeInterval: 1)
                let again = try conn.query("SELECT coalesce(\"wait_event\", '') FROM pg_stat_activity WHERE \"pid\" = $1::int", [pid])
                let after = try copyBytes(pid)
                frozen = again.first?[0] == "ClientRead" && after == before
            }
            guard frozen else {
                if told.insert("working \(pid)").inserted {
                    logger.warning("\(place): waiting for its previous owner's transaction, which is still working (\(who))")
                }
                continue
            }
            var ended = false
            try conn.execute("SAVEPOINT pipectl_terminate")
            do {
                ended = try conn.query("SELECT pg_terminate_backend($1::int)", [pid]).first?[0] == "t"
                try conn.execute("RELEASE SAVEPOINT pipectl_terminate")
            } catch let error as PostgresError where !error.connectionLost {
                // 42501: not allowed to signal that session.
                try conn.execute("ROLLBACK TO SAVEPOINT pipectl_terminate")
            }
            if ended {
                logger.warning(
                    "\(place): its previous owner's transaction held the offsets row for \(Self.claimLockTimeoutMs / 1000) s and is frozen (\(who)); ended that session, so its uncommitted batch rolls back"
                )
            } else if told.insert("not ended \(pid)").inserted {
                logger.warning("\(place): its previous owner's transaction is frozen (\(who)) but this role may not end it (pg_signal_backend); waiting for it")
            }
        }
    }

    // MARK: writing

    /// Stores the batch: rows, dead letters and offsets in one transaction.
    /// - Throws: `FencedError` when another consumer owns one of the batch's partitions;
    ///   `CommitOutcomeUnknown` when the connection broke during COMMIT; `PostgresError` otherwise.
    public func commit(_ batch: RowBatch) throws -> CommitResult {
        batchesCommitted += 1
        let partitions = batch.nextOffsets.keys.sorted()
        let keyed = batch
        let result = try conn.withTransaction {
            var result = CommitResult()
            // The WAL positions ride along, so the writer learns which earlier (asynchronous)
            // commits are on disk without another round trip.
            let owners = try conn.query(
                "SELECT \"partition\", \"owner\", pg_current_wal_insert_lsn()::text, pg_current_wal_flush_lsn()::text FROM \(offsetsTable) WHERE \"sink\" = $1 AND \"topic\" = $2 AND \"partition\" = ANY($3::int[]) ORDER BY \"partition\" FOR UPDATE",
                [sink.name, topic.name, "{" + partitions.map(String.init).joined(separator: ",") + "}"])
            let lost = partitions.filter { p in !owners.contains { $0[0] == String(p) && $0[1] == ownerToken } }
            if !lost.isEmpty { throw FencedError(partitions: lost) }
            result.walInsertAtStart = parseLSN(owners.first?[2] ?? nil)
            result.walFlushedAtStart = parseLSN(owners.first?[3] ?? nil)
            StopSignal.crashIfAsked("during-copy", batch: batchesCommitted)
            var dead: [(RowOrigin, RejectedRecord)] = batch.rejected
            if !keyed.rowRanges.isEmpty {
                let written = try writeRows(keyed, indices: Array(keyed.rowRanges.indices), dead: &dead)
                result.loaded = written.loaded
                result.duplicates = written.duplicates
            }
            for (origin, rejected) in dead {
                try conn.query(
                    """
                    INSERT INTO \(deadLetterTable) ("stage", "sink", "topic", "partition", "offset", "source_fingerprint", "source_ordinal", "payload", "reason")
                    VALUES ($1, $2, $3, $4, $5, $6, $7, decode($8, 'base64'), $9)
                    ON CONFLICT ("sink", "source_fingerprint", "source_ordinal") DO NOTHING
                    """,
                    [
                        rejected.stage, sink.name, topic.name, String(origin.partition), String(origin.offset),
                        origin.recordID?.fingerprint, origin.recordID.map { String($0.ordinal) },
                        Data(rejected.payload).base64EncodedString(), rejected.reason,
                    ])
            }
            result.deadLettered = dead.count
            for (_, rejected) in dead { result.deadLettersByStage[rejected.stage, default: 0] += 1 }
            // All partitions' next offsets in one statement.
            try conn.query(
                """
                UPDATE \(offsetsTable) AS o SET "next_offset" = n.next, "updated_at" = now()
                FROM unnest($3::int[], $4::bigint[]) AS n(part, next)
                WHERE o."sink" = $1 AND o."topic" = $2 AND o."partition" = n.part
                """,
                [
                    sink.name, topic.name, "{" + partitions.map(String.init).joined(separator: ",") + "}",
                    "{" + partitions.map { String(batch.nextOffsets[$0]!) }.joined(separator: ",") + "}",
                ])
            StopSignal.crashIfAsked("before-commit", batch: batchesCommitted)
            return result
        } commitFailed: { result, error in
            // The server may or may not have committed; the stored offsets tell which.
            error.connectionLost ? CommitOutcomeUnknown(result: result, cause: error) as any Error : error
        }
        StopSignal.crashIfAsked("after-commit", batch: batchesCommitted)
        return result
    }

    func isDuplicateRecord(_ error: PostgresError) -> Bool {
        error.code == .uniqueViolation && error.constraint?.hasSuffix("__pipectl_record") == true
    }

    /// Writes the rows at `indices`; rows PostgreSQL refuses go to `dead` with its reason.
    /// Fast path: COPY straight into the table. Records already loaded (a re-sent file) make it
    /// fail on the record index; those batches go through a staging table with ON CONFLICT
    /// DO NOTHING. Other constraint failures are narrowed down by halving under savepoints.
    func writeRows(_ batch: RowBatch, indices: [Int], dead: inout [(RowOrigin, RejectedRecord)]) throws -> (loaded: Int, duplicates: Int) {
        var data: [UInt8] = []
        for i in indices { data.append(contentsOf: batch.rows[batch.rowRanges[i]]) }
        let useStaging = sink.mode == .upsert || dedupBatchesLeft > 0
        try conn.execute("SAVEPOINT pipectl_rows")
        do {
            let loaded: Int
            if useStaging {
                loaded = try stageAndInsert(data)
            } else {
                loaded = try data.withUnsafeBytes { try conn.copyIn("COPY \(target) (\(columnList)) FROM STDIN", data: $0) }
            }
            try conn.execute("RELEASE SAVEPOINT pipectl_rows")
            if useStaging, dedupBatchesLeft > 0 { dedupBatchesLeft -= 1 }
            return (loaded, indices.count - loaded)
        } catch let error as PostgresError where !error.connectionLost {
            try conn.execute("ROLLBACK TO SAVEPOINT pipectl_rows")
            if isDuplicateRecord(error), !useStaging {
                dedupBatchesLeft = 20
                return try writeRows(batch, indices: indices, dead: &dead)
            }
            guard error.isConstraintViolation || error.isDataException else { throw error }
            if indices.count == 1 {
                let origin = batch.rowOrigins[indices[0]]
                dead.append((origin, RejectedRecord(stage: "constraint", reason: "PostgreSQL refused the row: \(error)", payload: origin.payload ?? [])))
                return (0, 0)
            }
            let half = indices.count / 2
            let a = try writeRows(batch, indices: Array(indices[..<half]), dead: &dead)
            let b = try writeRows(batch, indices: Array(indices[half...]), dead: &dead)
            return (a.loaded + b.loaded, a.duplicates + b.duplicates)
        }
    }

    /// COPY into a session staging table, then one INSERT … ON CONFLICT into the target.
    func stageAndInsert(_ data: [UInt8]) throws -> Int {
        if !stagingReady {
            try conn.execute("CREATE TEMP TABLE IF NOT EXISTS \"pipectl_staging\" (LIKE \(target) INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
            stagingReady = true
        }
        try conn.execute("TRUNCATE \"pipectl_staging\"")
        _ = try data.withUnsafeBytes { try conn.copyIn("COPY \"pipectl_staging\" (\(columnList)) FROM STDIN", data: $0) }
        let conflict: String
        if sink.mode == .upsert {
            let keys = Set(sink.key)
            let columns = columnList.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            let updates = columns.filter { c in !keys.contains { SQL.quote($0) == c } }.map { "\($0) = EXCLUDED.\($0)" }
            conflict = "ON CONFLICT (\(sink.key.map(SQL.quote).joined(separator: ", "))) DO UPDATE SET \(updates.joined(separator: ", "))"
            // Several versions of one key in a batch: the last one wins.
            let keyList = sink.key.map(SQL.quote).joined(separator: ", ")
            let rows = try conn.query(
                """
                INSERT INTO \(target) (\(columnList))
                SELECT \(columnList) FROM (
                  SELECT DISTINCT ON (\(keyList)) * FROM "pipectl_staging" ORDER BY \(keyList), ctid DESC
                ) s \(conflict) RETURNING ("xmax" = 0)
                """)
            // Only rows that were new count as loaded (xmax is 0 for a fresh insert); every other
            // row of the batch updated a stored row or was superseded by a later version, which
            // the caller counts in `duplicates` and the upsert summary shows as updated.
            return rows.filter { $0.first == "t" }.count
        }
        conflict = "ON CONFLICT (\(SQL.quote(Sink.recordColumn))) DO NOTHING"
        let rows = try conn.query("INSERT INTO \(target) (\(columnList)) SELECT \(columnList) FROM \"pipectl_staging\" \(conflict) RETURNING 1")
        return rows.count
    }

    public func query(_ sql: String, _ params: [String?] = []) throws -> [[String?]] { try conn.query(sql, params) }
}

/// Gives each source file (by content fingerprint) a compact number, registered on first sight,
/// and writes the `_pipectl_record` column: that number in the high bits, the ordinal in the low 40.
public final class SourceRegistry {
    let url: String
    let table: String
    let source: String
    let path: String
    var conn: PostgresConnection?
    var ids: [String: Int64] = [:]
    var last: (fingerprint: String, id: Int64)?

    /// Seconds a lost connection is retried (the sink's `retry_timeout_ms`).
    let retryTimeout: Double
    /// The database whose sources table names each file (several files into one topic, and
    /// this database is another one); nil: `source` and `path` name every file.
    let origin: String?

    init(url: String, table: String, source: String, path: String, retryTimeout: Double, origin: String? = nil) {
        self.retryTimeout = retryTimeout
        self.origin = origin
        self.url = url
        self.table = table
        self.source = source
        self.path = path
    }

    func id(_ fingerprint: String) throws -> Int64 {
        if let last, last.fingerprint == fingerprint { return last.id }
        if let id = ids[fingerprint] {
            last = (fingerprint, id)
            return id
        }
        var deadline: Date?
        while true {
            do {
                if conn == nil || conn?.isConnected == false { conn = try PostgresConnection(url: url) }
                // Autocommit with the server's default synchronous_commit: a source number is
                // durable before any row carries it.
                let rows = try conn!.query(
                    """
                    INSERT INTO \(table) ("fingerprint", "source", "path") VALUES ($1, $2, $3)
                    ON CONFLICT ("fingerprint") DO UPDATE SET "fingerprint" = EXCLUDED."fingerprint"
                    RETURNING "source_id"
                    """, try label(fingerprint))
                guard let text = rows.first?[0] ?? nil, let id = Int64(text) else { throw PostgresError("could not register source \(fingerprint)") }
                ids[fingerprint] = id
                last = (fingerprint, id)
                return id
            } catch let error as PostgresError where error.connectionLost {
                let end = deadline ?? Date().addingTimeInterval(retryTimeout)
                deadline = end
                if Date() > end || StopSignal.requested {
                    throw PostgresError("PostgreSQL unreachable for longer than the sink's retry_timeout_ms (\(Int(retryTimeout * 1000)) ms): \(error.message)")
                }
                conn = nil
                Thread.sleep(forTimeInterval: 0.5)
            }
        }
    }

    /// The row registering `fingerprint`: its source name and path from `origin` when there is
    /// one and it knows the file, else this registry's own.
    private func label(_ fingerprint: String) throws -> [String?] {
        guard let origin else { return [fingerprint, source, path] }
        let known = try PostgresConnection(url: origin).query("SELECT \"source\", \"path\" FROM \(table) WHERE \"fingerprint\" = $1", [fingerprint])
        guard let row = known.first, let name = row[0] else { return [fingerprint, source, path] }
        return [fingerprint, name, row[1] ?? ""]
    }

    /// Appends a tab, the record key (or `\N` for records without an id) and the newline.
    public func appendKey(_ recordID: RecordID?, to rows: inout [UInt8]) throws {
        rows.append(0x09)
        if let recordID {
            JSONText.appendDecimal((try id(recordID.fingerprint) << 40) | recordID.ordinal, to: &rows)
        } else {
            rows.append(0x5C)
            rows.append(UInt8(ascii: "N"))
        }
        rows.append(0x0A)
    }
}
