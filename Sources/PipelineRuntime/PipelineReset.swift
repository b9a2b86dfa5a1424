import Foundation
import PipelineCompiler
import PostgresAdapter

/// What `pipectl reset` changes in the sink databases. Neither form ever leaves a table that
/// the next run loads twice: the whole-pipeline reset keeps each source's identity (so re-sent
/// records are recognised), and `--source` deletes the rows together with that identity.
public enum PipelineReset {
    /// What `reset --source` deleted in one database.
    public struct SourceReport: Sendable {
        /// Rows deleted per target table (`"schema"."table"`), in flow order.
        public var rows: [(table: String, count: Int)] = []
        /// Dead letters deleted from the database's dead-letter table: those whose source fingerprint
        /// is one of the forgotten lives', for every sink stored there.
        public var deadLetters = 0
        /// Lives of the source forgotten (rows of the sources table).
        public var lives = 0
    }

    /// The databases of a pipeline's sinks, each once, with the sinks stored there.
    static func databases(_ sinks: [Sink], environment: [String: String]) throws -> [(url: String, sinks: [Sink])] {
        var out: [(url: String, sinks: [Sink])] = []
        for sink in sinks {
            let url = try PipelineRunner.databaseURL(for: sink, environment: environment)
            if let i = out.firstIndex(where: { $0.url == url }) { out[i].sinks.append(sink) } else { out.append((url, [sink])) }
        }
        return out
    }

    /// One durable transaction under the DDL lock.
    static func inTransaction(_ conn: PostgresConnection, _ body: () throws -> Void) throws {
        try conn.withTransaction {
            try conn.execute("SET LOCAL synchronous_commit = on")
            // The same lock as every DDL change: the checkpoint columns may be added here.
            try conn.query("SELECT pg_advisory_xact_lock(hashtext('pipectl ddl'))")
            try body()
        }
    }

    /// Forgets the stored offsets (consumers read their topics from the start) and moves every
    /// source's send checkpoint back to its start (the next run sends each file whole), in one
    /// transaction per database. Source identities and what was sent stay, so the re-sent
    /// records are skipped as already loaded and a file changed meanwhile is still refused.
    /// - Throws: `PostgresError` (nothing changed in that database).
    public static func forgetPositions(pipeline: Pipeline, environment: [String: String]) throws {
        let b = pipeline.bookkeeping
        for database in try databases(pipeline.sinks, environment: environment) {
            let conn = try PostgresConnection(url: database.url)
            try inTransaction(conn) {
                for statement in DDL.bookkeeping(for: pipeline) { try conn.execute(statement) }
                try conn.execute("DELETE FROM \(SQL.qualified(Bookkeeping.schema, b.offsets))")
                try conn.execute(
                    """
                    UPDATE \(SQL.qualified(Bookkeeping.schema, b.sources)) SET "checkpoint_bytes" = 0, "checkpoint_records" = 0,
                        "checkpoint_line" = 1, "topic_id" = NULL, "end_offsets" = NULL, "updated_at" = now()
                    WHERE "sent_bytes" IS NOT NULL
                    """)
            }
        }
    }

    /// Deletes everything the file now at the source's path loaded: its rows in every sink that
    /// reads it (found by record id: source number << 40 | ordinal), its dead letters, and its
    /// row of the sources table (identity and checkpoint), in one transaction per database.
    /// That is the file's current life (the one the next run would continue), plus the row a
    /// version of pipectl before checkpoints registered for the same content
    /// (`legacyFingerprint`, the file's whole SHA-256). Earlier lives kept by
    /// `--as-new-source`, and other paths of the same source, stay. Offsets stay too: the
    /// topic's other records are not read again.
    /// - Throws: `PostgresError` (nothing changed in that database).
    public static func source(_ source: Source, pipeline: Pipeline, legacyFingerprint: String?, environment: [String: String]) throws -> SourceReport {
        let b = pipeline.bookkeeping
        let sources = SQL.qualified(Bookkeeping.schema, b.sources)
        let sinks = pipeline.flows.filter { $0.sources.contains { $0.name == source.name } }.map(\.sink)
        var report = SourceReport()
        let all = try databases(sinks, environment: environment)
        // The file's identity is kept (with its checkpoint) in one database, the first sink's;
        // a sink in another database registered the same identity without a checkpoint. So the
        // identities are collected from every database first, then deleted by identity in each.
        var identities: Set<String> = legacyFingerprint.map { [$0] } ?? []
        for database in all {
            let conn = try PostgresConnection(url: database.url)
            for statement in DDL.bookkeeping(for: pipeline) { try conn.execute(statement) }
            let current = try conn.query(
                """
                SELECT "fingerprint" FROM \(sources) WHERE "source" = $1 AND "path" = $2 AND "sent_bytes" IS NOT NULL
                ORDER BY "source_id" DESC LIMIT 1
                """, [source.name, source.resolvedPath])
            for row in current { if let f = row[0] { identities.insert(f) } }
        }
        let identityList = "{" + identities.sorted().joined(separator: ",") + "}"
        for database in all {
            let conn = try PostgresConnection(url: database.url)
            try inTransaction(conn) {
                let lives = try conn.query(
                    "SELECT \"source_id\", \"fingerprint\" FROM \(sources) WHERE \"fingerprint\" = ANY($1::text[]) FOR UPDATE",
                    [identityList])
                let ids = lives.compactMap { Int64($0[0] ?? "") }
                for sink in database.sinks {
                    let target = SQL.qualified(sink.dbSchema, sink.table)
                    guard try conn.query("SELECT to_regclass($1) IS NOT NULL", [target]).first?[0] == "t" else { continue }
                    var deleted = 0
                    for id in ids {
                        // A range on the record column uses its index.
                        deleted += try conn.query(
                            "DELETE FROM \(target) WHERE \(SQL.quote(Sink.recordColumn)) >= $1 AND \(SQL.quote(Sink.recordColumn)) < $2 RETURNING 1",
                            [String(id << 40), String((id + 1) << 40)]
                        ).count
                    }
                    report.rows.append((target, deleted))
                }
                let fingerprints = "{" + lives.compactMap { $0[1] }.joined(separator: ",") + "}"
                report.deadLetters += try conn.query(
                    "DELETE FROM \(SQL.qualified(Bookkeeping.schema, b.deadLetters)) WHERE \"source_fingerprint\" = ANY($1::text[]) RETURNING 1",
                    [fingerprints]
                ).count
                try conn.query("DELETE FROM \(sources) WHERE \"source_id\" = ANY($1::int[])", ["{" + ids.map(String.init).joined(separator: ",") + "}"])
                report.lives += lives.count
            }
        }
        return report
    }
}
