import PipelineSpec
import RecordFormats

/// A resolved, validated pipeline: every name points at something that exists, every type is
/// known, every cast is legal. Later stages (plan, generate, run) read only this.
public struct Pipeline: Sendable {
    /// The pipeline's `name` from the spec: 1 to 40 of `a-z`, `0-9`, `_`, not starting with a digit.
    /// It prefixes the bookkeeping tables (`Bookkeeping`) and the consumer groups (`Flow.consumerGroup`).
    public var name: String
    /// The spec file as the user named it.
    public var file: String
    /// The CSV sources (`sources:`), in declaration order.
    public var sources: [Source]
    /// The Kafka topics (`topics:`), in declaration order, with every default filled in.
    public var topics: [Topic]
    /// The table schemas (`schemas:`, files or inline), in declaration order.
    public var schemas: [Schema]
    /// The transforms (`transforms:`), in declaration order (not topological: see `stages`).
    public var transforms: [Transform]
    /// The PostgreSQL sinks (`sinks:`), in declaration order; `flows` follows this order.
    public var sinks: [Sink]
    /// Every stage in topological order (inputs before the stages reading them).
    public var stages: [StageRef]
    /// Warnings the compiler found (a column no field fills, fields no column takes); the
    /// commands print them, and they never stop a run.
    public var warnings: [Diagnostic] = []

    /// The source named `name` (`sources[].name`), or nil. Stage names are unique across all kinds.
    public func source(named name: String) -> Source? { sources.first { $0.name == name } }
    /// The topic named `name` (`topics[].name`), or nil.
    public func topic(named name: String) -> Topic? { topics.first { $0.name == name } }
    /// The schema named `name` (`schemas[].name`), or nil.
    public func schema(named name: String) -> Schema? { schemas.first { $0.name == name } }
    /// The transform named `name` (`transforms[].name`), or nil (also for another kind's name).
    public func transform(named name: String) -> Transform? { transforms.first { $0.name == name } }

    /// The chain feeding a sink, sources to sink: what `run` executes for it. Each sink is read
    /// by its own consumer group (`consumerGroup`), whichever other sinks read the same topic.
    public func flow(for sink: Sink) -> Flow {
        var chain: [Transform] = []
        var upstream = sink.from
        while let t = transform(named: upstream), !chain.contains(where: { $0.name == t.name }) {
            chain.insert(t, at: 0)
            upstream = t.from
        }
        let topic = topic(named: upstream)!
        return Flow(
            sources: topic.sources.compactMap { source(named: $0) }, topic: topic, transforms: chain, sink: sink,
            consumerGroup: "pipectl.\(name).\(sink.name)")
    }

    /// One flow per sink, in declaration order.
    public var flows: [Flow] { sinks.map { flow(for: $0) } }

    /// What the producer side of `run` sends: each source file to its topic exactly once, however
    /// many sinks read the topic. In topic order, then in the order of the topic's `from:`.
    public var sends: [Send] {
        topics.flatMap { topic in topic.sources.compactMap { source(named: $0) }.map { Send(source: $0, topic: topic) } }
    }

    /// Namespaced bookkeeping tables of this pipeline, in schema `pipectl`.
    public var bookkeeping: Bookkeeping { Bookkeeping(pipeline: name) }
}

/// One sink's path through the DAG: the topic it consumes (and the sources feeding it), the
/// chain of transforms applied in order (`transforms[0]` reads the topic's records, each next one
/// the previous one's output columns), and the sink.
public struct Flow: Sendable {
    /// Every source feeding the topic (several sources may share one topic).
    public var sources: [Source]
    /// The Kafka topic the sink's chain reads.
    public var topic: Topic
    /// The transforms applied in order, upstream first; never empty, since a sink reads a transform.
    public var transforms: [Transform]
    /// The PostgreSQL sink the flow ends in.
    public var sink: Sink
    /// The Kafka consumer group of this sink: `pipectl.<pipeline>.<sink>`.
    public var consumerGroup: String

    /// The first source feeding the topic; nil for a topic other programs write.
    public var source: Source? { sources.first }

    /// Memberwise; `Pipeline.flow(for:)` builds flows with `consumerGroup` set to
    /// `pipectl.<pipeline>.<sink>`.
    public init(sources: [Source], topic: Topic, transforms: [Transform], sink: Sink, consumerGroup: String) {
        self.sources = sources
        self.topic = topic
        self.transforms = transforms
        self.sink = sink
        self.consumerGroup = consumerGroup
    }
}

/// One source file sent to one topic: the unit of the producer side of `run`.
public struct Send: Sendable {
    /// The CSV source whose file is sent.
    public var source: Source
    /// The topic it is sent to (the one whose `from:` lists the source).
    public var topic: Topic
}

/// The four kinds of stage in a spec; the raw values (`source`, `topic`, `transform`, `sink`)
/// appear in diagnostics and in `plan --json`.
public enum StageKind: String, Sendable, Codable { case source, topic, transform, sink }

/// One node of the stage graph: a stage named by kind and name, with the stages it reads.
public struct StageRef: Hashable, Sendable {
    /// Which section of the spec the stage is declared in.
    public var kind: StageKind
    /// The stage's name as written in the spec; unique among all stages of every kind.
    public var name: String
    /// The stages this one reads from (several sources for a topic fed by more than one).
    public var inputs: [String]
}

/// A CSV file sent to a Kafka topic as JSON records (`sources[]` with `type: csv`), defaults
/// filled in.
public struct Source: Sendable {
    /// The source's name as written in the spec (`sources[].name`), unique among all stages.
    public var name: String
    /// The path as written in the spec, relative to the spec's folder.
    public var path: String
    /// The path to open (spec folder + path).
    public var resolvedPath: String
    /// `header` of the source (default `true`): whether the first record names the fields; when
    /// false the producer names them `column_1`, `column_2`, ...
    public var header: Bool
    /// `delimiter` of the source as one ASCII byte (default `,`); differs from `quote`.
    public var delimiter: UInt8
    /// `quote` of the source as one ASCII byte (default `"`); differs from `delimiter`.
    public var quote: UInt8
    /// `null` of the source: the unquoted cell text that means SQL NULL (default `""`, the empty cell).
    public var null: String
    /// `batch_size` of the source: records per micro-batch sent to Kafka, 1 to 1,000,000
    /// (default 100). The producer polls for deliveries and applies `rateLimit` once per batch.
    public var batchSize: Int
    /// `rate_limit` of the source, in records per second; nil (the default) sends as fast as
    /// possible. Pacing is checked at the end of each batch of `batchSize` records.
    public var rateLimit: Double?
    /// The file's text encoding; the producer converts it to UTF-8 as it reads.
    public var encoding: TextEncoding = .utf8
}

/// A Kafka topic (`topics[]`), defaults filled in. Also used, with empty Kafka settings, to
/// describe a transform's output to the transform reading it.
public struct Topic: Sendable {
    /// The Kafka topic name (`topics[].name`): 1 to 249 of `a-z A-Z 0-9 . _ -`, not `.` or `..`
    /// (Kafka's rule for topic names).
    public var name: String
    /// The first source feeding the topic; nil for a topic other programs write.
    public var from: String?
    /// Every source feeding the topic, in the order of `from:`; each is sent with its own
    /// fingerprint, send checkpoint and record ids.
    public var sources: [String] = []
    /// `brokers` of the topic: the bootstrap servers as comma-separated `host:port` (librdkafka's
    /// `bootstrap.servers`); default `127.0.0.1:9092`.
    public var brokers: String
    /// `partitions` of the topic (at least 1, default 1): a missing topic is created with this
    /// many; an existing one with fewer is an error (`KafkaAdmin.ensureTopic`), with more is used.
    public var partitions: Int
    /// `replication_factor` of the topic (at least 1, default 1): used only when the topic is created.
    public var replicationFactor: Int
    /// `format` of the topic: the message format; only `json` (the default) is accepted.
    public var format: String
    /// Fields making the message key; `["_record"]` means the source record id.
    public var key: [String]
    /// Declared JSON field types; fields not listed are read as text.
    public var fieldTypes: [String: SQLType]
    /// `linger_ms` of the topic: the producer's librdkafka `linger.ms`, in milliseconds (default 5,
    /// at least 0); a `linger.ms` in `properties` wins.
    public var lingerMs: Int
    /// `compression` of the topic: librdkafka's `compression.type`, one of `Compiler.compressions`
    /// (default `lz4`); a `compression.type` in `properties` wins.
    public var compression: String
    /// `batch_bytes` of the topic: librdkafka's `batch.size`, the producer's batch size in bytes
    /// (default 1,000,000, at least 1); a `batch.size` in `properties` wins.
    public var batchBytes: Int
    /// `message_max_bytes` of the topic: librdkafka's `message.max.bytes`, in bytes (default
    /// 1,000,000, at least 1000). A record larger than this as JSON is dead-lettered, not sent.
    public var messageMaxBytes: Int
    /// `properties` of the topic: librdkafka settings passed through as they are. A key prefixed
    /// `producer.` goes only to the producer and `consumer.` only to the consumers (prefix removed);
    /// any other key goes to both.
    public var properties: [String: String]

    /// The name of the record id key: the source fingerprint plus the record's ordinal.
    public static let recordKey = "_record"
}

/// A table schema (`schemas[]`): the columns of the table a sink writes, in order.
public struct Schema: Sendable, Equatable {
    /// The schema's `name`, which transforms refer to in `schema:`; a PostgreSQL identifier (at most
    /// 63 bytes), unique among schemas.
    public var name: String
    /// The file the schema was read from: the schema file's path joined to the spec's folder, or
    /// the spec file itself for an inline schema.
    public var file: String
    /// The columns in declaration order (the table's column order in the DDL); at most 1599, since
    /// PostgreSQL allows 1600 per table and pipectl adds `Sink.recordColumn`.
    public var columns: [Column]

    /// The columns with `primary_key: true`, in schema order (several make a composite key); empty
    /// when the table has no primary key.
    public var primaryKey: [Column] { columns.filter(\.primaryKey) }
}

/// One column of a schema (`columns[]`), defaults filled in.
public struct Column: Sendable, Equatable {
    /// The column name (`columns[].name`): any text up to 63 bytes (PostgreSQL's identifier limit),
    /// always quoted in SQL; names differing only in case are refused as duplicates.
    public var name: String
    /// The column's PostgreSQL type, parsed from `type` (aliases such as `int4` resolved).
    public var type: SQLType
    /// `nullable` of the column: whether NULL is allowed. Default true, but false for
    /// `serial`/`bigserial`; always false for a primary-key column.
    public var nullable: Bool
    /// `primary_key` of the column (default false): part of the table's primary key.
    public var primaryKey: Bool
    /// `unique` of the column (default false): the DDL adds a UNIQUE constraint.
    public var unique: Bool
    /// `default` of the column: a SQL DEFAULT expression written into the DDL as it is; only a
    /// number, a `'quoted string'`, `true`, `false`, `null` or one of a few functions
    /// (`current_timestamp`, `now()`, `gen_random_uuid()`, ...) are accepted. nil: no default.
    public var defaultExpression: String?
    /// How dates with the year last (`03/05/2011`) are read into this column.
    public var dateOrder: DateOrder

    /// Memberwise, with the spec's defaults for the optional flags (`dateOrder` `.mdy`).
    public init(
        name: String, type: SQLType, nullable: Bool, primaryKey: Bool = false, unique: Bool = false,
        defaultExpression: String? = nil, dateOrder: DateOrder = .mdy
    ) {
        self.name = name
        self.type = type
        self.nullable = nullable
        self.primaryKey = primaryKey
        self.unique = unique
        self.defaultExpression = defaultExpression
        self.dateOrder = dateOrder
    }

    /// Records never carry generated columns; columns with a default may be absent.
    public var isFilledByDatabase: Bool { type.isGenerated }
}

/// What to do when a value cannot be cast.
public enum CastFailure: String, Sendable, Codable {
    case deadLetter = "dead_letter"
    case null, `default`
}

/// How one target column gets its value from an incoming record.
public struct ColumnBinding: Sendable, Equatable {
    /// The target column.
    public var column: Column
    /// The record field (after flattening and renames) read into the column.
    public var field: String
    /// The field's type as it arrives (text for CSV-fed topics).
    public var inputType: SQLType
    /// An explicit intermediate cast from the spec, if any.
    public var castType: SQLType?
    /// `on_error` of the column's cast (default `.deadLetter`): what a value that fails the cast
    /// becomes; `.null` needs a nullable column and `.default` an entry in `defaults`.
    public var onCastError: CastFailure
    /// A literal used when the field is missing or null.
    public var defaultValue: String?
    /// The exact JSON key that fills the column, when the compiler read the CSV header and
    /// applied the matching rule (`FieldMatching`); nil: the consumer applies it per message.
    public var key: String? = nil
}

/// A transform (`transforms[]`): maps the JSON records of a topic (or another transform's rows)
/// onto the columns of a schema.
public struct Transform: Sendable {
    /// The transform's name as written in the spec (`transforms[].name`), unique among all stages.
    public var name: String
    /// `from` of the transform: the name of the topic or of the transform it reads.
    public var from: String
    /// The schema named in `schema:`, whose columns the transform fills.
    public var schema: Schema
    /// `flatten` of the transform: the separator joining nested JSON object keys into field names
    /// (`{"page": {"url": ...}}` becomes `page_url` with `_`); nil keeps nested objects as JSON values.
    public var flattenSeparator: String?
    /// Original field name -> new name.
    public var renames: [String: String]
    /// `drop` of the transform: field names ignored, even when a column has their name.
    public var drops: Set<String>
    /// `null_if` of the transform: string values read as NULL, besides JSON `null` (e.g. `NA`).
    public var nullIf: Set<String>
    /// One binding per column the records fill, in schema order.
    public var bindings: [ColumnBinding]
    /// What to say about fields no column takes.
    public var onUnknownField: UnknownFieldPolicy = .warn
    /// Fields of the source's header that no column takes (known when the header could be
    /// read at compile time); the run's summary names them.
    public var unknownFields: [String] = []
}

/// `mode` of a sink (default `insert`). `insert` appends rows, de-duplicating re-sent records on
/// `Sink.recordColumn`; `upsert` writes `INSERT ... ON CONFLICT (key) DO UPDATE` (PostgreSQL),
/// so a newer version of a row replaces the older one.
public enum WriteMode: String, Sendable, Codable { case insert, upsert }

/// A PostgreSQL sink (`sinks[]` with `type: postgres`), defaults filled in.
public struct Sink: Sendable {
    /// The sink's name as written in the spec (`sinks[].name`), unique among all stages; part of its
    /// consumer group `pipectl.<pipeline>.<sink>`.
    public var name: String
    /// `from` of the sink: the name of the transform whose rows it writes.
    public var from: String
    /// `url` of the sink: a libpq connection URL (`postgresql://user:pass@host:port/db`). Empty when
    /// the spec gives none; `run` then uses `DATABASE_URL` (`PipelineRunner.databaseURL(for:environment:)`).
    public var url: String
    /// `db_schema` of the sink: the PostgreSQL schema of the table (default `public`).
    public var dbSchema: String
    /// `table` of the sink: the target table's name, unquoted (a PostgreSQL identifier of at most 63 bytes).
    public var table: String
    /// `batch_size` of the sink: rows per COPY batch (default 5000, at least 1).
    public var batchSize: Int
    /// `max_delay_ms` of the sink: how long, in milliseconds, a partial batch waits for more rows
    /// before it is written anyway (default 200, at least 0).
    public var maxDelayMs: Int
    /// How long, in milliseconds, a lost PostgreSQL connection is retried (with backoff)
    /// before the run stops with an error; like Kafka Connect's `errors.retry.timeout`.
    public var retryTimeoutMs: Int
    /// `mode` of the sink: how rows are written (default `.insert`).
    public var mode: WriteMode
    /// `key` of the sink: the column names identifying a row, in order; required for `.upsert` (the
    /// `ON CONFLICT` target, with a UNIQUE index unless it is the primary key). In insert mode a
    /// non-empty key only gets a plain index.
    public var key: [String]
    /// The schema of the rows arriving (the feeding transform's).
    public var schema: Schema
    /// The COPY column list, quoted: the columns the feeding transform fills, in schema order,
    /// then the record-id column (`recordColumn`).
    public var columnList: String = ""

    /// Insert mode de-duplicates re-sent records on this bigint column: the source's number
    /// (from the `sources` bookkeeping table) in the high bits, the record's ordinal in the low 40.
    public static let recordColumn = "_pipectl_record"
}

/// Names of the tables the runtime keeps its state in, one set per pipeline.
public struct Bookkeeping: Sendable {
    /// The pipeline's name (`Pipeline.name`): the prefix of every table name below.
    public var pipeline: String
    /// The PostgreSQL schema holding every pipeline's bookkeeping tables.
    public static let schema = "pipectl"
    /// Table name (unqualified, in `schema`): the next Kafka offset per sink, topic and partition,
    /// committed in the same transaction as the rows.
    public var offsets: String { "\(pipeline)__offsets" }
    /// Table name (unqualified, in `schema`): every source file seen, its number (the high bits of
    /// record ids) and its send checkpoint.
    public var sources: String { "\(pipeline)__sources" }
    /// Table name (unqualified, in `schema`): records that could not become rows, with the reason,
    /// topic/partition/offset and the raw payload.
    public var deadLetters: String { "\(pipeline)__dead_letters" }
}

extension Pipeline {
    /// Every sink fed by `topic` writes `mode: upsert`. A new version of a file then simply
    /// updates rows by key, so a file that changed where it was already sent goes out as a new
    /// source without `--as-new-source` (insert sinks would load its rows a second time).
    public func onlyUpserts(topic: String) -> Bool {
        let sinks = flows.filter { $0.topic.name == topic }.map(\.sink)
        return !sinks.isEmpty && sinks.allSatisfy { $0.mode == .upsert }
    }
}
