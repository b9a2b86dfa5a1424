import Foundation
import PipelineCompiler
import PostgresAdapter

/// Compares a sink's table with the database: what exists, what would be added, what is refused.
/// pipectl never drops, narrows or retypes a column.
public enum SchemaCheck {
    /// A default of the spec that PostgreSQL computes per row (`gen_random_uuid()`): adding a
    /// column with it rewrites the table (PostgreSQL docs, "ALTER TABLE", Notes).
    static func isVolatile(_ defaultExpression: String) -> Bool {
        defaultExpression.trimmingCharacters(in: .whitespaces).lowercased() == "gen_random_uuid()"
    }

    /// A default that is a function (`now()`, `current_timestamp`, …), not a literal: existing rows
    /// get its value at the time of the ALTER.
    static func isFunction(_ defaultExpression: String) -> Bool {
        let d = defaultExpression.trimmingCharacters(in: .whitespaces).lowercased()
        return d.hasSuffix(")") || ["current_timestamp", "current_date", "current_time", "localtimestamp"].contains(d)
    }

    /// One difference between a sink's table (`Sink.schema` plus `_pipectl_record bigint`) and the
    /// database's `information_schema.columns`, as `plan --live` lists it.
    public enum Change: Equatable, CustomStringConvertible, Sendable {
        case createTable
        case matches
        /// A column the schema has and the table lacks: its name, type, the schema's `default`
        /// (nil: none, the column is added nullable) and whether it is NOT NULL (only with a
        /// default: PostgreSQL fills existing rows with it, "ALTER TABLE … ADD COLUMN").
        case addColumn(String, SQLType, defaultExpression: String?, notNull: Bool)
        case incompatible(String)

        /// The line `plan --live` prints: `table will be created`, `table exists and matches`,
        /// `column "x" integer will be added (nullable)`, `column "x" text will be added with
        /// DEFAULT 'new' NOT NULL (existing rows get the default)` (a function such as `now()`:
        /// `… get its value at the time of the change`; `gen_random_uuid()`: `… for new rows,
        /// existing rows stay NULL`) or `refused: <reason>`.
        public var description: String {
            switch self {
            case .createTable: return "table will be created"
            case .matches: return "table exists and matches"
            case .addColumn(let name, let type, let defaultExpression?, _) where SchemaCheck.isVolatile(defaultExpression):
                return "column \(SQL.quote(name)) \(type) will be added with DEFAULT \(defaultExpression) for new rows (existing rows stay NULL)"
            case .addColumn(let name, let type, let defaultExpression?, let notNull):
                let existing = SchemaCheck.isFunction(defaultExpression) ? "get its value at the time of the change" : "get the default"
                return
                    "column \(SQL.quote(name)) \(type) will be added with DEFAULT \(defaultExpression)\(notNull ? " NOT NULL" : "") (existing rows \(existing))"
            case .addColumn(let name, let type, nil, _): return "column \(SQL.quote(name)) \(type) will be added (nullable)"
            case .incompatible(let reason): return "refused: \(reason)"
            }
        }
    }

    /// The table exists but differs in a way pipectl does not change (a column's type, a
    /// narrower width, a missing NOT NULL column); nothing was changed.
    public struct Refusal: Error, CustomStringConvertible, Sendable, Equatable {
        /// The table, quoted (`"public"."sales"`).
        public var table: String
        /// The sink's name as written in the spec (`sinks[].name`).
        public var sink: String
        /// One sentence per refused difference, as `plan --live` shows them.
        public var reasons: [String]
        /// Memberwise: `table` qualified and quoted, `reasons` one sentence each.
        public init(table: String, sink: String, reasons: [String]) {
            self.table = table
            self.sink = sink
            self.reasons = reasons
        }
        /// One line: `table "public"."sales" does not fit sink 'db': <reason>; <reason>`.
        public var description: String { "table \(table) does not fit sink '\(sink)': \(reasons.joined(separator: "; "))" }
    }

    /// Compares the sink's table with the database's `information_schema`, read-only.
    public static func diff(sink: Sink, on conn: PostgresConnection) throws -> [Change] {
        let rows = try conn.query(
            """
            SELECT column_name, data_type, is_nullable, character_maximum_length, numeric_precision, numeric_scale
            FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2
            """, [sink.dbSchema, sink.table])
        if rows.isEmpty { return [.createTable] }
        var existing: [String: [String?]] = [:]
        for row in rows { existing[row[0] ?? ""] = row }
        var changes: [Change] = []
        let wanted = sink.schema.columns + [Column(name: Sink.recordColumn, type: .bigint, nullable: true, primaryKey: false, unique: false)]
        for column in wanted {
            guard let row = existing[column.name] else {
                if let d = column.defaultExpression, Self.isVolatile(d), !column.nullable {
                    changes.append(
                        .incompatible(
                            "column \(SQL.quote(column.name)) is missing and is NOT NULL with the volatile default \(d): adding it computes a value for every stored row while the table is locked (a rewrite); add it yourself, or make it nullable"
                        ))
                } else if column.nullable || column.defaultExpression != nil {
                    changes.append(
                        .addColumn(
                            column.name, column.type, defaultExpression: column.defaultExpression,
                            notNull: !column.nullable && column.defaultExpression != nil))
                } else {
                    changes.append(
                        .incompatible(
                            "column \(SQL.quote(column.name)) is missing and is NOT NULL without a default; add it yourself (pipectl only adds nullable columns)"
                        ))
                }
                continue
            }
            let dbType = row[1] ?? ""
            if dbType != column.type.informationSchemaName {
                changes.append(
                    .incompatible(
                        "column \(SQL.quote(column.name)) is \(dbType) in the database but \(column.type) in schema '\(sink.schema.name)'; pipectl never changes a column's type"
                    ))
                continue
            }
            if case .varchar(let n?) = column.type, let have = Int(row[3] ?? ""), have < n {
                changes.append(.incompatible("column \(SQL.quote(column.name)) is varchar(\(have)) in the database, narrower than varchar(\(n)) in the schema"))
            }
            if case .numeric(let p?, let s) = column.type, let hp = Int(row[4] ?? ""), let hs = Int(row[5] ?? ""), hp < p || hs < (s ?? 0) {
                changes.append(
                    .incompatible("column \(SQL.quote(column.name)) is numeric(\(hp),\(hs)) in the database, narrower than \(column.type) in the schema"))
            }
        }
        return changes.isEmpty ? [.matches] : changes
    }

    /// Brings a sink's table to what `plan --live` promised, in its order: incompatible
    /// differences are refused before anything changes; then the database schema and the table
    /// are created, or the missing nullable columns added; the indexes come last, because on a
    /// table made by hand they index a column (`_pipectl_record`) that only now exists.
    /// Runs inside the caller's transaction, so a failure leaves the database as it was.
    /// - Throws: `Refusal` before any change, `PostgresError` from the statements.
    public static func apply(sink: Sink, on conn: PostgresConnection) throws {
        let changes = try diff(sink: sink, on: conn)
        let refused = changes.compactMap { if case .incompatible(let r) = $0 { return r } else { return nil } }
        if !refused.isEmpty {
            throw Refusal(table: SQL.qualified(sink.dbSchema, sink.table), sink: sink.name, reasons: refused)
        }
        for statement in DDL.schema(for: sink) { try conn.execute(statement) }
        if changes.contains(.createTable) {
            try conn.execute(DDL.createTable(for: sink))
        }
        let table = SQL.qualified(sink.dbSchema, sink.table)
        for case .addColumn(let name, let type, let defaultExpression, let notNull) in changes {
            if let d = defaultExpression, Self.isVolatile(d) {
                // A volatile default in ADD COLUMN rewrites the table; set afterwards, it applies
                // to new rows only ("ALTER TABLE … SET DEFAULT").
                try conn.execute("ALTER TABLE \(table) ADD COLUMN IF NOT EXISTS \(SQL.quote(name)) \(type)")
                try conn.execute("ALTER TABLE \(table) ALTER COLUMN \(SQL.quote(name)) SET DEFAULT \(d)")
                continue
            }
            let rest = (defaultExpression.map { " DEFAULT \($0)" } ?? "") + (notNull ? " NOT NULL" : "")
            try conn.execute("ALTER TABLE \(table) ADD COLUMN IF NOT EXISTS \(SQL.quote(name)) \(type)\(rest)")
        }
        for index in DDL.namedIndexes(for: sink) {
            // CREATE INDEX IF NOT EXISTS locks the table before it looks: look first.
            let exists = try conn.query("SELECT to_regclass($1) IS NOT NULL", [SQL.qualified(sink.dbSchema, index.name)]).first?[0] == "t"
            if !exists { try conn.execute(index.statement) }
        }
    }
}

/// `plan --live`: every sink's table compared with its database, read-only.
public enum LiveComparison {
    /// One difference (or `matches`) for one sink, with where it was found.
    public struct Entry: Sendable {
        /// The compiled sink whose table was compared.
        public var sink: Sink
        /// The sink's connection string with its password masked (`ConnectionString.redacted`).
        public var redactedURL: String
        /// The difference found; `.matches` when there is none.
        public var change: SchemaCheck.Change
        /// `apply` and `run` would stop on this change.
        public var isRefused: Bool {
            if case .incompatible = change { return true }
            return false
        }
    }

    /// Compares each sink of `pipeline` with its database (the sink's `url`, else
    /// `DATABASE_URL` from `environment`), in spec order; changes nothing.
    /// - Throws: `PostgresError` when a database cannot be reached or read, or a sink has no url.
    public static func compare(_ pipeline: Pipeline, environment: [String: String]) throws -> [Entry] {
        var entries: [Entry] = []
        for sink in pipeline.sinks {
            let url = try PipelineRunner.databaseURL(for: sink, environment: environment)
            let conn = try PostgresConnection(url: url)
            for change in try SchemaCheck.diff(sink: sink, on: conn) {
                entries.append(Entry(sink: sink, redactedURL: ConnectionString.redacted(url), change: change))
            }
        }
        return entries
    }
}
