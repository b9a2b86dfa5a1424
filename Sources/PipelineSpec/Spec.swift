/// The syntax tree of a pipeline spec (`pipelines/*.yaml`, `version: 1`) and the schema files
/// it references. Nothing here is resolved or validated beyond its shape: names are still
/// strings and types are still text; `PipelineCompiler` turns this into a checked DAG.
public struct PipelineSpec: Sendable {
    /// The spec file as the user named it (used in diagnostics).
    public var file: String
    /// The folder that relative paths in the spec are resolved against.
    public var directory: String
    /// `version` of the spec: must be 1 (the parser reports any other value); 1 when missing, after
    /// the missing field was reported.
    public var version: Located<Int>
    /// `name` of the spec, as written; the compiler checks it is 1 to 40 of `a-z`, `0-9`, `_`. Empty
    /// (at the spec's start) when missing, after the parser reported it.
    public var name: Located<String>
    /// `sources:`, in file order; items that could not be parsed are left out (and reported).
    public var sources: [SourceSpec]
    /// `topics:`, in file order; items that could not be parsed are left out (and reported).
    public var topics: [TopicSpec]
    /// `schemas:` (each a file path or an inline mapping), read and parsed, in file order.
    public var schemas: [SchemaSpec]
    /// `transforms:`, in file order; items that could not be parsed are left out (and reported).
    public var transforms: [TransformSpec]
    /// `sinks:`, in file order; items that could not be parsed are left out (and reported).
    public var sinks: [SinkSpec]
}

/// ```yaml
/// - name: housing_csv
///   type: csv
///   path: ../data/housing.csv
/// ```
public struct SourceSpec: Sendable {
    /// `name` of the source as written (any text; the compiler checks it is unique and printable).
    public var name: Located<String>
    /// Where the source's mapping starts in the spec.
    public var location: SourceLocation
    /// The CSV settings (`type: csv` is the only source type).
    public var csv: CSVSourceSpec
}

/// The fields of a `type: csv` source, unchecked beyond their YAML types.
public struct CSVSourceSpec: Sendable {
    /// Relative to the spec file's folder.
    public var path: Located<String>
    /// `header` of the source: whether the first record names the fields (default true).
    public var header: Bool = true
    /// `delimiter` as written; the compiler requires one ASCII character. nil: `,`.
    public var delimiter: Located<String>?
    /// `quote` as written; the compiler requires one ASCII character other than the delimiter. nil: `"`.
    public var quote: Located<String>?
    /// The cell text that means SQL NULL (default: the empty cell).
    public var null: String = ""
    /// `batch_size`: records per micro-batch sent to Kafka (at least 1 here, at most 1,000,000 in
    /// the compiler). nil: 100.
    public var batchSize: Located<Int>?
    /// Rows per second; nil means as fast as possible.
    public var rateLimit: Located<Double>?
    /// The file's text encoding (`utf-8` when absent).
    public var encoding: Located<String>? = nil
}

/// ```yaml
/// - name: housing-data
///   from: housing_csv
///   partitions: 1
/// ```
public struct TopicSpec: Sendable {
    /// `name` of the topic as written; the compiler checks Kafka's rule (1 to 249 of
    /// `a-z A-Z 0-9 . _ -`).
    public var name: Located<String>
    /// Where the topic's mapping starts in the spec.
    public var location: SourceLocation
    /// The source feeding the topic; nil for a topic written by someone else.
    public var from: Located<String>?
    /// `brokers`: comma-separated `host:port` bootstrap servers. nil: `127.0.0.1:9092`.
    public var brokers: Located<String>?
    /// `partitions` (at least 1) the topic is created with. nil: 1.
    public var partitions: Located<Int>?
    /// `replication_factor` (at least 1) the topic is created with. nil: 1.
    public var replicationFactor: Located<Int>?
    /// `format` as written; the compiler accepts only `json`. nil: `json`.
    public var format: Located<String>?
    /// The fields whose values make the message key; default: the source record id.
    public var key: [Located<String>]
    /// Declared types of the JSON fields in the messages (for topics not fed by a CSV source).
    public var fields: [(name: Located<String>, type: Located<String>)]
    /// `linger_ms`: librdkafka's `linger.ms` for the producer, in milliseconds (at least 0). nil: 5.
    public var lingerMs: Located<Int>?
    /// `compression` as written: librdkafka's `compression.type` (`none`, `gzip`, `snappy`, `lz4`,
    /// `zstd`, checked by the compiler). nil: `lz4`.
    public var compression: Located<String>?
    /// `batch_bytes`: librdkafka's `batch.size`, in bytes (at least 1). nil: 1,000,000.
    public var batchBytes: Located<Int>?
    /// `message_max_bytes`: librdkafka's `message.max.bytes`, in bytes (at least 1000). nil: 1,000,000.
    public var messageMaxBytes: Located<Int>?
    /// librdkafka properties passed through as they are (TLS, SASL, ...).
    public var properties: [(key: Located<String>, value: Located<String>)]
    /// Every source feeding the topic (`from: [a_csv, b_csv]`); `from` is the first.
    public var sources: [Located<String>] = []
}

/// A table definition, in its own file (`schemas/housing.yaml`).
public struct SchemaSpec: Sendable {
    /// `name` of the schema as written: what transforms name in `schema:`.
    public var name: Located<String>
    /// The file the schema was read from (joined to the spec's folder), or the spec file for an
    /// inline schema; locations inside the schema point into this file.
    public var file: String
    /// `columns:`, in file order; the compiler requires at least one.
    public var columns: [ColumnSpec]
    /// Where the pipeline referenced it.
    public var referencedAt: SourceLocation
}

/// ```yaml
/// - { name: tax, type: integer, nullable: false }
/// ```
public struct ColumnSpec: Sendable {
    /// `name` of the column as written; the compiler checks it is a PostgreSQL identifier (at most
    /// 63 bytes) and not `_pipectl_record`.
    public var name: Located<String>
    /// `type` of the column as written (`integer`, `numeric(10,2)`, `varchar(20)`, an alias such as
    /// `int4`); parsed by the compiler into `SQLType`.
    public var type: Located<String>
    /// `nullable` of the column. nil: true, except for primary keys and serial types.
    public var nullable: Located<Bool>?
    /// `primary_key` of the column. nil: false.
    public var primaryKey: Located<Bool>?
    /// `unique` of the column (a UNIQUE constraint). nil: false.
    public var unique: Located<Bool>?
    /// A SQL default expression: `current_timestamp`, `0`, `'n/a'`.
    public var defaultExpression: Located<String>?
    /// `mdy`, `dmy` or `ymd`: how `03/05/2011` is read into a date or timestamp column.
    public var dateOrder: Located<String>? = nil
    /// Where the column's mapping starts in the schema's file.
    public var location: SourceLocation
}

/// ```yaml
/// - name: housing_rows
///   from: housing-data
///   schema: housing
///   flatten: "_"
/// ```
public struct TransformSpec: Sendable {
    /// `name` of the transform as written (unique among all stages, checked by the compiler).
    public var name: Located<String>
    /// Where the transform's mapping starts in the spec.
    public var location: SourceLocation
    /// `from` of the transform: the topic or transform it reads; nil when missing (reported).
    public var from: Located<String>?
    /// `schema` of the transform: the name of the schema whose columns it fills; nil when missing
    /// (reported).
    public var schema: Located<String>?
    /// Separator for flattening nested JSON objects into columns; nil keeps them as JSON values.
    public var flatten: Located<String>?
    /// `rename` of the transform: `field: column` pairs, in file order, for fields whose names
    /// differ from the columns'.
    public var rename: [(from: Located<String>, to: Located<String>)]
    /// `drop` of the transform: fields ignored even when a column has their name.
    public var drop: [Located<String>]
    /// `casts` of the transform, in file order.
    public var casts: [CastSpec]
    /// `defaults` of the transform: `column: value` pairs; the value (a literal, cast to the
    /// column's type) is used when the field is missing or null.
    public var defaults: [(field: Located<String>, value: Located<String>)]
    /// Field values that mean NULL, besides JSON null (e.g. `"NA"`).
    public var nullIf: [Located<String>]
    /// `ignore`, `warn` (default) or `error`: what to say about fields no column takes.
    public var onUnknownField: Located<String>? = nil
}

/// One entry of a transform's `casts`: `column: type` or `column: { type, on_error }`.
public struct CastSpec: Sendable {
    /// The column the cast is for (the key of the `casts` entry).
    public var field: Located<String>
    /// The intermediate type to cast through, as written (`integer`, `date`, ...).
    public var type: Located<String>
    /// `dead_letter` (default), `null` or `default`.
    public var onError: Located<String>?
}

/// ```yaml
/// - name: housing_db
///   from: housing_rows
///   type: postgres
///   table: housing
/// ```
public struct SinkSpec: Sendable {
    /// `name` of the sink as written (unique among all stages, checked by the compiler).
    public var name: Located<String>
    /// Where the sink's mapping starts in the spec.
    public var location: SourceLocation
    /// `from` of the sink: the transform whose rows it writes; nil when missing (reported).
    public var from: Located<String>?
    /// `url` of the sink: a libpq connection URL (`postgresql://user:pass@host:port/db`), usually
    /// `${DATABASE_URL}`. nil: `run` uses the `DATABASE_URL` environment variable.
    public var url: Located<String>?
    /// `table` of the sink: the target table's name; nil when missing (reported).
    public var table: Located<String>?
    /// `db_schema` of the sink: the PostgreSQL schema of the table. nil: `public`.
    public var dbSchema: Located<String>?
    /// `batch_size` of the sink: rows per COPY batch (at least 1). nil: 5000.
    public var batchSize: Located<Int>?
    /// `max_delay_ms` of the sink: milliseconds a partial batch waits before it is written (at
    /// least 0). nil: 200.
    public var maxDelayMs: Located<Int>?
    /// `retry_timeout_ms` of the sink: milliseconds a lost PostgreSQL connection is retried before
    /// the run stops (like Kafka Connect's `errors.retry.timeout`). nil: 120000.
    public var retryTimeoutMs: Located<Int>?
    /// `mode` of the sink as written: `insert` or `upsert` (checked by the compiler). nil: `insert`.
    public var mode: Located<String>?
    /// `key` of the sink: the columns identifying a row, in file order; required for `upsert`.
    public var key: [Located<String>]
}
