/// SQL text for a pipeline's tables. Every identifier is quoted; nothing from a spec is
/// pasted into SQL unquoted except validated default expressions.
public enum SQL {
    /// `"name"`, with embedded quotes doubled: `a"b` -> `"a""b"`.
    public static func quote(_ identifier: String) -> String {
        "\"" + identifier.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// `'text'`, with embedded quotes doubled.
    public static func literal(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: "''") + "'"
    }

    /// `"schema"."table"`, each part quoted with `quote`.
    public static func qualified(_ schema: String, _ table: String) -> String { "\(quote(schema)).\(quote(table))" }
}

/// The DDL `plan` shows and `run` applies: each statement idempotent (`IF NOT EXISTS`).
public enum DDL {
    /// Everything a sink's table needs, in the order it is applied: its database schema (unless
    /// `public`), the table, then its indexes.
    public static func table(for sink: Sink) -> [String] {
        schema(for: sink) + [createTable(for: sink)] + indexes(for: sink)
    }

    /// `CREATE SCHEMA IF NOT EXISTS "sales"` for a sink's `db_schema`; nothing for `public`,
    /// which every database has.
    public static func schema(for sink: Sink) -> [String] {
        sink.dbSchema == "public" ? [] : ["CREATE SCHEMA IF NOT EXISTS \(SQL.quote(sink.dbSchema));"]
    }

    /// `CREATE TABLE IF NOT EXISTS` with every column and pipectl's record-id column.
    public static func createTable(for sink: Sink) -> String {
        let schema = sink.schema
        let pk = schema.primaryKey
        var lines: [String] = schema.columns.map { c in
            var line = "    \(SQL.quote(c.name)) \(c.type)"
            if c.primaryKey && pk.count == 1 {
                line += " PRIMARY KEY"
            } else if !c.nullable && !c.primaryKey {
                line += " NOT NULL"
            }
            if c.unique { line += " UNIQUE" }
            if let d = c.defaultExpression { line += " DEFAULT \(d)" }
            return line
        }
        if pk.count > 1 { lines.append("    PRIMARY KEY (\(pk.map { SQL.quote($0.name) }.joined(separator: ", ")))") }
        // The record id (source number << 40 | ordinal) that makes re-sent records harmless.
        lines.append("    \(SQL.quote(Sink.recordColumn)) bigint")
        return "CREATE TABLE IF NOT EXISTS \(SQL.qualified(sink.dbSchema, sink.table)) (\n\(lines.joined(separator: ",\n"))\n);"
    }

    /// The unique index on the record id (insert mode) and the index on the sink's key. On a
    /// table that existed before, they need the columns added first (`SchemaCheck`).
    public static func indexes(for sink: Sink) -> [String] { namedIndexes(for: sink).map(\.statement) }

    /// `indexes(for:)` with each index's name (in the sink's `db_schema`), so that an index
    /// already there is not created again: `CREATE INDEX IF NOT EXISTS` locks the table first.
    public static func namedIndexes(for sink: Sink) -> [(name: String, statement: String)] {
        let target = SQL.qualified(sink.dbSchema, sink.table)
        var statements: [(name: String, statement: String)] = []
        if sink.mode == .insert {
            let name = indexName(sink.table, "record")
            statements.append((name, "CREATE UNIQUE INDEX IF NOT EXISTS \(SQL.quote(name)) ON \(target) (\(SQL.quote(Sink.recordColumn)));"))
        }
        if !sink.key.isEmpty, sink.key != sink.schema.primaryKey.map(\.name) {
            let unique = sink.mode == .upsert ? "UNIQUE " : ""
            let name = indexName(sink.table, "key")
            statements.append(
                (name, "CREATE \(unique)INDEX IF NOT EXISTS \(SQL.quote(name)) ON \(target) (\(sink.key.map(SQL.quote).joined(separator: ", ")));"))
        }
        return statements
    }

    /// Index names are limited to 63 bytes like every identifier.
    static func indexName(_ table: String, _ suffix: String) -> String {
        let tail = "__pipectl_\(suffix)"
        var base = table
        while base.utf8.count + tail.utf8.count > 63 { base.removeLast() }
        return base + tail
    }

    /// The runtime's own state, namespaced per pipeline in schema `pipectl`.
    public static func bookkeeping(for pipeline: Pipeline) -> [String] {
        let b = pipeline.bookkeeping
        let s = Bookkeeping.schema
        return [
            "CREATE SCHEMA IF NOT EXISTS \(SQL.quote(s));",
            """
            CREATE TABLE IF NOT EXISTS \(SQL.qualified(s, b.offsets)) (
                "sink" text NOT NULL,
                "topic" text NOT NULL,
                "partition" integer NOT NULL,
                "topic_id" text NOT NULL,
                "next_offset" bigint NOT NULL,
                "owner" text,
                "updated_at" timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY ("sink", "topic", "partition")
            );
            """,
            """
            CREATE TABLE IF NOT EXISTS \(SQL.qualified(s, b.sources)) (
                "source_id" integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                "fingerprint" text NOT NULL UNIQUE,
                "source" text NOT NULL,
                "path" text NOT NULL,
                "rows" bigint,
                "first_seen" timestamptz NOT NULL DEFAULT now()
            );
            """,
            // The producer's send checkpoint of each source (see docs/reliability.md, "Files that
            // grow or change"), added to tables made by earlier versions too.
            "ALTER TABLE \(SQL.qualified(s, b.sources))\n"
                + sourcesAddedColumns.map { "    ADD COLUMN IF NOT EXISTS \(SQL.quote($0.name)) \($0.type)" }.joined(separator: ",\n") + ";",
            """
            CREATE TABLE IF NOT EXISTS \(SQL.qualified(s, b.deadLetters)) (
                "id" bigserial PRIMARY KEY,
                "stage" text NOT NULL,
                "sink" text NOT NULL,
                "topic" text,
                "partition" integer,
                "offset" bigint,
                "source_fingerprint" text,
                "source_ordinal" bigint,
                "payload" bytea,
                "reason" text NOT NULL,
                "created_at" timestamptz NOT NULL DEFAULT now()
            );
            """,
            // When the current owner claimed the partition (`pipectl status` shows its age);
            // added separately so that databases made by earlier versions gain it.
            "ALTER TABLE \(SQL.qualified(s, b.offsets)) ADD COLUMN IF NOT EXISTS \"claimed_at\" timestamptz;",
            "CREATE UNIQUE INDEX IF NOT EXISTS \(SQL.quote(b.deadLetters + "_record")) ON \(SQL.qualified(s, b.deadLetters)) (\"sink\", \"source_fingerprint\", \"source_ordinal\");",
        ]
    }

    /// Columns added to the sources table after it was first made, in one `ALTER TABLE`.
    static let sourcesAddedColumns: [(name: String, type: String)] = [
        ("topic_id", "text"), ("checkpoint_bytes", "bigint"), ("checkpoint_records", "bigint"),
        ("checkpoint_line", "bigint"), ("end_offsets", "text"), ("sent_bytes", "bigint"), ("sent_open", "boolean"),
        ("sent_hash", "text"), ("chunk_bytes", "integer"), ("chunk_digests", "bytea"), ("updated_at", "timestamptz"),
    ]

    /// A query answering one row, `t` when every table, column and index `bookkeeping(for:)`
    /// makes already exists. It reads only the catalogs, so it waits for no lock; the
    /// statements themselves would (`ALTER TABLE` takes an ACCESS EXCLUSIVE lock and
    /// `CREATE INDEX IF NOT EXISTS` a SHARE lock on the table before it looks for the index,
    /// PostgreSQL docs, "Explicit Locking"), stalling behind any consumer inside a batch.
    public static func bookkeepingIsCurrent(for pipeline: Pipeline) -> String {
        let b = pipeline.bookkeeping
        let s = Bookkeeping.schema
        func regclass(_ name: String) -> String { "to_regclass(\(SQL.literal(SQL.qualified(s, name))))" }
        func columns(_ table: String, _ names: [String]) -> String {
            "(SELECT count(*) FROM pg_attribute WHERE attrelid = \(regclass(table)) AND NOT attisdropped AND attname = ANY(ARRAY[\(names.map(SQL.literal).joined(separator: ", "))])) = \(names.count)"
        }
        return "SELECT "
            + [
                "\(regclass(b.deadLetters)) IS NOT NULL",
                columns(b.offsets, ["claimed_at"]),
                columns(b.sources, sourcesAddedColumns.map(\.name)),
                "\(regclass(b.deadLetters + "_record")) IS NOT NULL",
            ].joined(separator: "\n  AND ")
    }

    /// Every statement for the pipeline, in the order `plan` shows them: the bookkeeping schema and
    /// tables in `pipectl` first, then each sink's schema, table and indexes, in spec order.
    public static func all(for pipeline: Pipeline) -> [String] {
        bookkeeping(for: pipeline) + pipeline.sinks.flatMap(table(for:))
    }
}
