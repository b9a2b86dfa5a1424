import Foundation
import PipelineCompiler
import PostgresAdapter

/// `pipectl dlq list`: the dead-letter table of a pipeline, oldest first.
public enum DeadLetterList {
    /// One dead-lettered row, as stored (`"pipectl"."<pipeline>__dead_letters"`).
    public struct Entry: Sendable, Equatable {
        /// The row's number in the dead-letter table (what `dlq replay` removes).
        public var id: Int64
        /// Where it failed: `source`, `parse`, `cast` or `constraint`.
        public var stage: String
        /// The name of the sink whose consumer set the record aside (`sinks[].name`).
        public var sink: String
        /// The Kafka position of the record; nil for rows refused before they were sent.
        public var topic: String?
        /// The Kafka partition of the record; nil for rows refused before they were sent.
        public var partition: Int32?
        /// The record's Kafka offset in `partition`; nil for rows refused before they were sent.
        public var offset: Int64?
        /// The record's ordinal in its source file (1-based), when it has a record id.
        public var sourceOrdinal: Int64?
        /// Why it was refused, as the stage wrote it.
        public var reason: String
        /// Length of the stored payload in bytes (nil: no payload stored).
        public var payloadBytes: Int?
    }

    /// The first `limit` dead letters of one database and how many there are in all.
    public struct Listing: Sendable {
        /// The table read, quoted (`"pipectl"."housing__dead_letters"`).
        public var table: String
        /// The database read: its connection string with the password masked
        /// (`ConnectionString.redacted`).
        public var database: String
        /// Dead letters in the table in all (every sink of this database), however many
        /// `entries` holds.
        public var total: Int
        /// The first `limit` dead letters, by id (oldest first).
        public var entries: [Entry]
    }

    /// Reads the dead-letter table in each database the pipeline's sinks write to (a sink's
    /// `url`, else `DATABASE_URL` from `environment`), one listing per database in the order of
    /// the sinks, each ordered by id: every sink keeps its dead letters next to its table.
    /// - Throws: `PostgresError` (no database, no table, connection refused).
    public static func read(_ pipeline: Pipeline, limit: Int, environment: [String: String]) throws -> [Listing] {
        let table = SQL.qualified(Bookkeeping.schema, pipeline.bookkeeping.deadLetters)
        var listings: [Listing] = []
        // One database can be written two ways (`postgres://h/db`, `postgresql://h:5432/db`):
        // what the server says it is decides, not the spelling.
        var seen: Set<[String?]> = []
        for sink in pipeline.sinks {
            let url = try PipelineRunner.databaseURL(for: sink, environment: environment)
            let conn = try PostgresConnection(url: url)
            let identity = try conn.query("SELECT current_database(), inet_server_addr()::text, current_setting('port')").first ?? []
            guard seen.insert(identity).inserted else { continue }
            let total = Int(try conn.query("SELECT count(*) FROM \(table)").first?[0] ?? "0") ?? 0
            let rows = try conn.query(
                """
                SELECT "id", "stage", "sink", "topic", "partition", "offset", "source_ordinal", "reason", length("payload")
                FROM \(table) ORDER BY "id" LIMIT $1
                """, [String(limit)])
            let entries = rows.map { r in
                Entry(
                    id: Int64(r[0] ?? "") ?? 0, stage: r[1] ?? "", sink: r[2] ?? "", topic: r[3],
                    partition: r[4].flatMap { Int32($0) }, offset: r[5].flatMap { Int64($0) },
                    sourceOrdinal: r[6].flatMap { Int64($0) }, reason: r[7] ?? "", payloadBytes: r[8].flatMap { Int($0) })
            }
            listings.append(Listing(table: table, database: ConnectionString.redacted(url), total: total, entries: entries))
        }
        return listings
    }
}
