import Foundation
import KafkaAdapter
import PipelineCompiler
import PostgresAdapter

/// What `pipectl status` and the status server's `/status` show: where each sink's consumer
/// stands against the topic, what each source file left in the database, and a verdict.
/// Encoded as JSON with these field names (`pipectl status --json`).
public struct PipelineStatusReport: Codable, Sendable, Equatable {
    /// The pipeline's name (`name` of the spec).
    public var pipeline: String
    /// ISO-8601 time the report was made.
    public var generatedAt: String
    /// `healthy` or `unhealthy`; `problems` says why when unhealthy.
    public var health: String
    /// One sentence per problem found (nothing applied yet, a broker that did not answer, a missing
    /// topic, a stalled partition); empty when `health` is `healthy`.
    public var problems: [String]
    /// One entry per sink, in the spec's order.
    public var sinks: [SinkStatus]

    /// Whether `health` is `healthy`; `pipectl status` exits with 6 when not.
    public var isHealthy: Bool { health == "healthy" }

    /// Memberwise; `PipelineStatusReader.read` sets `health` from whether `problems` is empty.
    public init(pipeline: String, generatedAt: String, health: String, problems: [String], sinks: [SinkStatus]) {
        self.pipeline = pipeline
        self.generatedAt = generatedAt
        self.health = health
        self.problems = problems
        self.sinks = sinks
    }
}

/// Where one sink stands: its table, its consumer group's offsets against the topic, what each
/// source file left in the table and its dead letters.
public struct SinkStatus: Codable, Sendable, Equatable {
    /// The sink's name as written in the spec.
    public var sink: String
    /// The target table, qualified and quoted (`"public"."housing"`).
    public var table: String
    /// The topic the sink's consumer group reads.
    public var topic: String
    /// Rows in the sink's table.
    public var rows: Int
    /// One entry per partition, from 0 up to the broker's partition count (the spec's `partitions`
    /// when the broker did not answer), or further if the offsets table holds higher ones.
    public var partitions: [PartitionStatus]
    /// The source files with at least one row or dead letter in this sink, by source number
    /// (the `sources` bookkeeping table's order).
    public var sources: [SourceStatus]
    /// The sink's dead letters grouped by stage and reason, most frequent first; at most 50 groups.
    public var deadLetters: [DeadLetterCount]
    /// ISO-8601 time of the last commit of any partition, nil before the first.
    public var lastCommitAt: String?
    /// Seconds since the newest claim of the current owner (a consumer of the group), nil when
    /// no partition was ever claimed.
    public var ownerAgeSeconds: Double?
    /// Records past the stored offsets, summed over the partitions (nil when the broker did not answer).
    public var lag: Int64?
}

/// One partition of a sink's topic: the offset stored with the rows against the broker's end.
public struct PartitionStatus: Codable, Sendable, Equatable {
    /// The Kafka partition number, from 0.
    public var partition: Int32
    /// The next offset the sink will read (the offsets table; -1: from the beginning).
    public var storedOffset: Int64
    /// The log end offset (high watermark) from the broker; nil when it did not answer.
    public var endOffset: Int64?
    /// `endOffset - max(storedOffset, 0)`.
    public var lag: Int64?
}

/// One source file as a sink's table sees it (from the `sources` bookkeeping table).
public struct SourceStatus: Codable, Sendable, Equatable {
    /// The name of the source (`sources[].name`) that sent the file.
    public var source: String
    /// The file's path as recorded in the `sources` bookkeeping table: the producer records the
    /// resolved path (the spec's folder joined with the source's `path`).
    public var path: String
    /// The file's content fingerprint: SHA-256 of its bytes as 64 lowercase hex digits (`Fingerprint`).
    public var fingerprint: String
    /// Rows of this file in the table (by record id), and its dead letters.
    public var rows: Int
    /// Dead letters of this sink whose source fingerprint is this file's.
    public var deadLetters: Int
    /// Records in the file, once a producer has read it to its end (nil before).
    public var rowsRead: Int? = nil
    /// `rowsRead == rows + deadLetters` (nil while `rowsRead` is unknown). Upsert sinks keep one
    /// row per key, so there a file with repeated keys reads `false` by design.
    public var reconciled: Bool? = nil
}

/// How many dead letters of a sink share one stage and reason.
public struct DeadLetterCount: Codable, Sendable, Equatable {
    /// Where the record was set aside: `source` (a bad CSV record), `parse` (a message that is not
    /// valid JSON), `cast` (a value that fails a cast) or `constraint` (PostgreSQL refused the row).
    public var stage: String
    /// The reason stored with the dead letters, exactly as written (e.g. `'12abc' is not a valid integer`).
    public var reason: String
    /// Dead letters with this stage and reason (at least 1).
    public var count: Int
}

/// Reads a pipeline's status from its bookkeeping tables and the broker. Read-only.
public enum PipelineStatusReader {
    /// A partition with lag whose last commit is older than this is *stalled*.
    public static let stalledAfterSeconds = 60.0

    /// - Throws: `PostgresError` when a sink's database cannot be read (the caller reports it);
    ///   an unreachable broker is a problem in the report, not an error.
    public static func read(
        _ pipeline: Pipeline, environment: [String: String] = ProcessInfo.processInfo.environment,
        now: Date = Date()
    ) throws -> PipelineStatusReport {
        var problems: [String] = []
        var sinks: [SinkStatus] = []
        let b = pipeline.bookkeeping
        for flow in pipeline.flows {
            let sink = flow.sink
            let conn = try PostgresConnection(url: try PipelineRunner.databaseURL(for: sink, environment: environment), applicationName: "pipectl status")
            let exists = try conn.query("SELECT to_regclass($1) IS NOT NULL", [SQL.qualified(Bookkeeping.schema, b.offsets)]).first?[0] == "t"
            let tableExists = try conn.query("SELECT to_regclass($1) IS NOT NULL", [SQL.qualified(sink.dbSchema, sink.table)]).first?[0] == "t"
            var status = SinkStatus(
                sink: sink.name, table: SQL.qualified(sink.dbSchema, sink.table), topic: flow.topic.name, rows: 0,
                partitions: [], sources: [], deadLetters: [])
            guard exists, tableExists else {
                problems.append("sink '\(sink.name)': nothing applied yet (run `pipectl apply` or `pipectl run`)")
                sinks.append(status)
                continue
            }
            status.rows = Int(try conn.query("SELECT count(*) FROM \(status.table)").first?[0] ?? "0") ?? 0
            let offsets = try conn.query(
                """
                SELECT "partition", "next_offset", to_char("updated_at" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                       extract(epoch FROM now() - "updated_at"), extract(epoch FROM now() - "claimed_at")
                FROM \(SQL.qualified(Bookkeeping.schema, b.offsets)) WHERE "sink" = $1 AND "topic" = $2 ORDER BY "partition"
                """, [sink.name, flow.topic.name])
            var partitionCount = flow.topic.partitions
            var ends: [Int32: Int64] = [:]
            do {
                let admin = try KafkaAdmin(settings: TopicLoader.consumerSettings(flow.topic).merging(["log_level": "3"]) { a, _ in a })
                if let n = try admin.partitionCount(flow.topic.name) {
                    partitionCount = n
                    ends = try fetchHighWatermarks(
                        topic: flow.topic.name, partitions: (0..<Int32(n)).map { $0 }, settings: TopicLoader.consumerSettings(flow.topic))
                } else {
                    problems.append("topic '\(flow.topic.name)' does not exist on the broker")
                }
            } catch {
                problems.append("broker \(flow.topic.brokers) did not answer: \(error)")
            }
            var stored: [Int32: (offset: Int64, updatedAt: String?, idle: Double?, claimAge: Double?)] = [:]
            for row in offsets {
                guard let p = Int32(row[0] ?? ""), let next = Int64(row[1] ?? "") else { continue }
                stored[p] = (next, row[2] ?? nil, Double(row[3] ?? ""), Double(row[4] ?? ""))
            }
            var totalLag: Int64? = ends.isEmpty ? nil : 0
            for p in 0..<Int32(max(partitionCount, stored.keys.map { Int($0) + 1 }.max() ?? 0)) {
                let next = stored[p]?.offset ?? -1
                let end = ends[p]
                let lag = end.map { max(0, $0 - max(next, 0)) }
                if let lag { totalLag = (totalLag ?? 0) + lag }
                status.partitions.append(PartitionStatus(partition: p, storedOffset: next, endOffset: end, lag: lag))
                if let lag, lag > 0, (stored[p]?.idle ?? .infinity) > stalledAfterSeconds {
                    problems.append(
                        "sink '\(sink.name)' partition \(p): \(lag) records waiting and no commit for \(stored[p]?.idle.map { String(format: "%.0f s", $0) } ?? "ever") (is a consumer running?)"
                    )
                }
            }
            status.lag = totalLag
            let newest = stored.values.min { ($0.idle ?? .infinity) < ($1.idle ?? .infinity) }
            status.lastCommitAt = newest?.updatedAt
            status.ownerAgeSeconds = stored.values.compactMap(\.claimAge).min()
            let sources = try conn.query(
                """
                SELECT "source_id", "source", "path", "fingerprint", "rows" FROM \(SQL.qualified(Bookkeeping.schema, b.sources)) ORDER BY "source_id"
                """)
            for row in sources {
                guard let id = Int64(row[0] ?? "") else { continue }
                let fingerprint = row[3] ?? ""
                let rows = try conn.query(
                    "SELECT count(*) FROM \(status.table) WHERE \(SQL.quote(Sink.recordColumn)) BETWEEN $1 AND $2",
                    [String(id << 40), String((id + 1) << 40 - 1)])
                let dead = try conn.query(
                    "SELECT count(*) FROM \(SQL.qualified(Bookkeeping.schema, b.deadLetters)) WHERE \"sink\" = $1 AND \"source_fingerprint\" = $2",
                    [sink.name, fingerprint])
                let rowCount = Int(rows.first?[0] ?? "0") ?? 0
                let deadCount = Int(dead.first?[0] ?? "0") ?? 0
                if rowCount + deadCount > 0 {
                    var source = SourceStatus(source: row[1] ?? "", path: row[2] ?? "", fingerprint: fingerprint, rows: rowCount, deadLetters: deadCount)
                    if let read = Int(row[4] ?? "") {
                        source.rowsRead = read
                        source.reconciled = read == rowCount + deadCount
                    }
                    status.sources.append(source)
                }
            }
            status.deadLetters = try conn.query(
                """
                SELECT "stage", "reason", count(*) FROM \(SQL.qualified(Bookkeeping.schema, b.deadLetters))
                WHERE "sink" = $1 GROUP BY "stage", "reason" ORDER BY count(*) DESC, "stage", "reason" LIMIT 50
                """, [sink.name]
            ).map { DeadLetterCount(stage: $0[0] ?? "", reason: $0[1] ?? "", count: Int($0[2] ?? "0") ?? 0) }
            sinks.append(status)
        }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return PipelineStatusReport(
            pipeline: pipeline.name, generatedAt: formatter.string(from: now),
            health: problems.isEmpty ? "healthy" : "unhealthy", problems: problems, sinks: sinks)
    }

    /// The report as a person reads it at a terminal.
    public static func format(_ report: PipelineStatusReport) -> String {
        var lines = ["pipeline \(report.pipeline): \(report.health)  (\(report.generatedAt))"]
        for problem in report.problems { lines.append("  problem: \(problem)") }
        for s in report.sinks {
            lines.append("sink \(s.sink) -> \(s.table): \(s.rows) rows; topic \(s.topic), lag \(s.lag.map(String.init) ?? "unknown")")
            lines.append("  last commit: \(s.lastCommitAt ?? "none")" + (s.ownerAgeSeconds.map { String(format: "; partitions claimed %.0f s ago", $0) } ?? ""))
            lines.append("  partition  stored offset  end offset  lag")
            for p in s.partitions {
                func pad(_ text: String, _ width: Int) -> String { String(repeating: " ", count: max(0, width - text.count)) + text }
                lines.append(
                    "  " + pad(String(p.partition), 9) + "  " + pad(String(p.storedOffset), 13) + "  "
                        + pad(p.endOffset.map(String.init) ?? "?", 10) + "  " + (p.lag.map(String.init) ?? "?"))
            }
            for source in s.sources {
                let read = source.rowsRead.map { "\($0) read, " } ?? ""
                let reconciled = source.reconciled.map { $0 ? "; reconciled" : "; NOT reconciled (read != rows + dead letters)" } ?? ""
                lines.append("  source \(source.source) (\(source.path)): \(read)\(source.rows) rows, \(source.deadLetters) dead letters\(reconciled)")
            }
            if s.deadLetters.isEmpty {
                lines.append("  dead letters: none")
            } else {
                lines.append("  dead letters by reason:")
                for d in s.deadLetters { lines.append("    \(d.count) × [\(d.stage)] \(d.reason)") }
            }
        }
        return lines.joined(separator: "\n")
    }
}
