import Foundation
import Logging
import PipelineCompiler
import PostgresAdapter
import RecordFormats

/// One life of a source file in the sources table: its identity (record ids are
/// `identity:ordinal`), its number there, and how far it was sent.
public struct SourceLineage: Sendable {
    /// The source's number in the sources table (`source_id`); record ids stored in a sink's
    /// `_pipectl_record` column carry it in their high bits (ordinal in the low 40).
    public var sourceID: Int64
    /// The file's identity as stored in the `fingerprint` column (unique in the table); record ids
    /// are `identity:ordinal`.
    public var identity: String
    /// Records before this point were delivered to the topic incarnation `topicID`.
    public var checkpoint: ResumePoint
    /// The Kafka topic ID (KIP-516, librdkafka's base64 form) of the incarnation the checkpoint's
    /// records went to; nil before the first delivery. Another ID means the send starts over.
    public var topicID: String?
    /// End offset of each partition after the last delivered record (from delivery reports).
    public var endOffsets: [Int32: Int64]
    /// What may have been sent, checked before the checkpoint is trusted.
    public var sent: SentPart
}

/// The producer's send checkpoints, in the sources table of the sink's database
/// (`"pipectl"."<pipeline>__sources"`), on a connection of the producer's own with
/// `synchronous_commit = on`: a checkpoint the server acknowledged survives its crash.
public final class SourceCheckpointStore {
    let url: String
    let pipeline: Pipeline
    let table: String
    let source: String
    let path: String
    let retryTimeout: Double
    let logger: Logger
    var conn: PostgresConnection?
    var warnedUnreachable = false

    /// - Parameters:
    ///   - url: the sink database's connection string (the first flow of the source's topic).
    ///   - path: the source file's resolved path: a source is identified by path and content.
    ///   - retryTimeout: seconds a lost connection is retried where a write is required.
    public init(url: String, pipeline: Pipeline, source: String, path: String, retryTimeout: Double, logger: Logger = Logger(label: "pipectl.producer")) {
        self.url = url
        self.pipeline = pipeline
        self.table = SQL.qualified(Bookkeeping.schema, pipeline.bookkeeping.sources)
        self.source = source
        self.path = path
        self.retryTimeout = retryTimeout
        self.logger = logger
    }

    /// The store for `source` sent to `topic`: in the database of the first flow that reads
    /// the topic (several sinks of one topic share its records, and so its checkpoint).
    /// - Throws: `PostgresError` when that sink has no url and DATABASE_URL is not set.
    public static func forSource(
        _ source: Source, topic: Topic, pipeline: Pipeline, environment: [String: String], logger: Logger = Logger(label: "pipectl.producer")
    ) throws -> SourceCheckpointStore? {
        guard let flow = pipeline.flows.first(where: { $0.topic.name == topic.name }) else { return nil }
        let url = try PipelineRunner.databaseURL(for: flow.sink, environment: environment)
        return SourceCheckpointStore(
            url: url, pipeline: pipeline, source: source.name, path: source.resolvedPath,
            retryTimeout: Double(flow.sink.retryTimeoutMs) / 1000, logger: logger)
    }

    /// Runs `body` on the connection, reconnecting (0.5 s apart) for up to `retryTimeout`
    /// seconds when the server goes away.
    func withConnection<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        var deadline: Date?
        while true {
            do {
                if conn == nil || conn?.isConnected == false {
                    let c = try PostgresConnection(url: url)
                    try c.execute("SET synchronous_commit = on")
                    conn = c
                }
                return try body(conn!)
            } catch let error as PostgresError where error.connectionLost {
                // Includes libpq's own errors (no SQLSTATE), such as "server closed the connection
                // unexpectedly" while PQstatus still reads OK: see `PostgresConnection.error(from:)`.
                let end = deadline ?? Date().addingTimeInterval(retryTimeout)
                deadline = end
                conn = nil
                if Date() > end || StopSignal.requested {
                    throw PostgresError(
                        "cannot store the send checkpoint of \(path): PostgreSQL unreachable for longer than the sink's retry_timeout_ms (\(Int(retryTimeout * 1000)) ms): \(error.message)"
                    )
                }
                Thread.sleep(forTimeInterval: 0.5)
            }
        }
    }

    /// Creates the bookkeeping tables, or adds the checkpoint columns to older ones (idempotent,
    /// under the lock `PostgresSink.applyDDL` takes).
    public func prepare() throws {
        try withConnection { conn in
            try conn.withTransaction {
                try conn.query("SELECT pg_advisory_xact_lock(hashtext('pipectl ddl'))")
                for statement in DDL.bookkeeping(for: pipeline) { try conn.execute(statement) }
            }
        }
    }

    static let columns = """
        "source_id", "fingerprint", "checkpoint_bytes", "checkpoint_records", "checkpoint_line", "topic_id", "end_offsets",
        "sent_bytes", "sent_open", "sent_hash", "chunk_bytes", encode("chunk_digests", 'hex')
        """

    static func lineage(_ row: [String?]) -> SourceLineage? {
        guard let id = Int64(row[0] ?? ""), let identity = row[1] else { return nil }
        var ends: [Int32: Int64] = [:]
        for pair in (row[6] ?? "").split(separator: ",") {
            let parts = pair.split(separator: ":")
            if parts.count == 2, let p = Int32(parts[0]), let o = Int64(parts[1]) { ends[p] = o }
        }
        let chunk = Int(row[10] ?? "") ?? 0
        return SourceLineage(
            sourceID: id, identity: identity,
            checkpoint: ResumePoint(bytes: Int64(row[2] ?? "") ?? 0, records: Int64(row[3] ?? "") ?? 0, line: Int(row[4] ?? "") ?? 1),
            topicID: row[5], endOffsets: ends,
            sent: SentPart(
                bytes: Int64(row[7] ?? "") ?? 0, openEnd: row[8] == "t", hash: row[9] ?? "",
                chunkBytes: chunk > 0 ? chunk : 256, chunkDigests: hexBytes(row[11] ?? "")))
    }

    /// The source's current life at this path (the newest one with a checkpoint), if any.
    public func current() throws -> SourceLineage? {
        try withConnection { conn in
            let rows = try conn.query(
                """
                SELECT \(Self.columns) FROM \(table)
                WHERE "source" = $1 AND "path" = $2 AND "sent_bytes" IS NOT NULL ORDER BY "source_id" DESC LIMIT 1
                """, [source, path])
            return rows.first.flatMap(Self.lineage)
        }
    }

    /// Registers a new life of the source with nothing sent yet. `identity` may already be in
    /// the table without a checkpoint (a source registered before checkpoints existed, whose
    /// identity was the file's whole SHA-256): that row is taken over, keeping its number, so
    /// its stored rows keep their ids.
    public func create(identity: String, chunkBytes: Int) throws -> SourceLineage {
        let nothing = SentPart.nothing(chunkBytes: chunkBytes)
        return try withConnection { conn in
            let rows = try conn.query(
                """
                INSERT INTO \(table) AS s ("fingerprint", "source", "path", "checkpoint_bytes", "checkpoint_records", "checkpoint_line",
                                           "sent_bytes", "sent_open", "sent_hash", "chunk_bytes", "chunk_digests", "updated_at")
                VALUES ($1, $2, $3, 0, 0, 1, 0, false, $4, $5, ''::bytea, now())
                ON CONFLICT ("fingerprint") DO UPDATE SET "path" = EXCLUDED."path", "checkpoint_bytes" = 0, "checkpoint_records" = 0,
                    "checkpoint_line" = 1, "sent_bytes" = 0, "sent_open" = false, "sent_hash" = EXCLUDED."sent_hash",
                    "chunk_bytes" = EXCLUDED."chunk_bytes", "chunk_digests" = ''::bytea, "updated_at" = now()
                  WHERE s."sent_bytes" IS NULL
                RETURNING \(Self.columns)
                """, [identity, source, path, nothing.hash, String(chunkBytes)])
            guard let lineage = rows.first.flatMap(Self.lineage) else {
                throw PostgresError("\(path): source identity \(identity) is already registered with a send checkpoint; run `pipectl reset --source` for it")
            }
            return lineage
        }
    }

    /// Whether the sources table has any row from before checkpoints (no `sent_bytes`): only
    /// then is a new file's whole SHA-256 needed before it is sent (`isLegacy`).
    public func hasLegacySources() throws -> Bool {
        try withConnection { conn in
            try !conn.query("SELECT 1 FROM \(table) WHERE \"sent_bytes\" IS NULL LIMIT 1").isEmpty
        }
    }

    /// Whether a row of the sources table from before checkpoints has this identity (the
    /// file's whole SHA-256 then): such a file keeps that identity, so its stored rows count.
    public func isLegacy(identity: String) throws -> Bool {
        try withConnection { conn in
            try !conn.query("SELECT 1 FROM \(table) WHERE \"fingerprint\" = $1 AND \"sent_bytes\" IS NULL", [identity]).isEmpty
        }
    }

    /// Stores the part that may be sent from now on: required before any of it is sent (a
    /// synchronous commit, retried for the sink's retry_timeout_ms).
    public func recordSent(_ sent: SentPart, sourceID: Int64) throws {
        try withConnection { conn in
            _ = try conn.query(
                """
                UPDATE \(table) SET "sent_bytes" = $2, "sent_open" = $3, "sent_hash" = $4, "chunk_digests" = decode($5, 'hex'), "updated_at" = now()
                WHERE "source_id" = $1
                """, [String(sourceID), String(sent.bytes), sent.openEnd ? "true" : "false", sent.hash, Self.hex(sent.chunkDigests)])
        }
    }

    /// Moves the checkpoint forward over records whose delivery was confirmed. Best effort: a
    /// checkpoint that cannot be written only means a later run re-sends more (record ids skip
    /// what was stored), so a lost connection is reported once and sending goes on.
    /// - Parameter rows: the file's record count when the whole file was sent.
    @discardableResult
    public func recordCheckpoint(_ point: ResumePoint, topicID: String?, endOffsets: [Int32: Int64], sourceID: Int64, rows: Int64? = nil) -> Bool {
        do {
            if conn == nil || conn?.isConnected == false {
                let c = try PostgresConnection(url: url)
                try c.execute("SET synchronous_commit = on")
                conn = c
            }
            let ends = endOffsets.keys.sorted().map { "\($0):\(endOffsets[$0]!)" }.joined(separator: ",")
            _ = try conn!.query(
                """
                UPDATE \(table) SET "checkpoint_bytes" = $2, "checkpoint_records" = $3, "checkpoint_line" = $4, "topic_id" = $5,
                    "end_offsets" = $6, "rows" = coalesce($7::bigint, "rows"), "updated_at" = now()
                WHERE "source_id" = $1
                """, [String(sourceID), String(point.bytes), String(point.records), String(point.line), topicID, ends, rows.map(String.init)])
            return true
        } catch {
            conn = nil
            if !warnedUnreachable {
                warnedUnreachable = true
                logger.warning("could not store the send checkpoint of \(path) (\(error)); sending goes on, and a later run may send some records again")
            }
            return false
        }
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func hexBytes(_ text: String) -> [UInt8] {
        var out: [UInt8] = []
        var high: UInt8?
        for c in text.utf8 {
            let v: UInt8
            switch c {
            case 0x30...0x39: v = c - 0x30
            case 0x61...0x66: v = c - 0x61 + 10
            default: continue
            }
            if let h = high {
                out.append(h << 4 | v)
                high = nil
            } else {
                high = v
            }
        }
        return out
    }
}
