/// The syntax tree of a pipeline spec (`pipelines/*.yaml`, `version: 1`) and the schema files
/// it references. Nothing here is resolved or validated beyond its shape: names are still
/// strings and types are still text; `PipelineCompiler` turns this into a checked DAG.
public struct PipelineSpec: Sendable {
    /// The spec file as the user named it (used in diagnostics).
    public var file: String
    /// The folder that relative paths in the spec are resolved against.
    public var directory: String
    public var version: Located<Int>
    public var name: Located<String>
    public var sources: [SourceSpec]
    public var topics: [TopicSpec]
    public var schemas: [SchemaSpec]
    public var transforms: [TransformSpec]
    public var sinks: [SinkSpec]
}

/// ```yaml
/// - name: housing_csv
///   type: csv
///   path: ../data/housing.csv
/// ```
public struct SourceSpec: Sendable {
    public var name: Located<String>
    public var location: SourceLocation
    public var csv: CSVSourceSpec
}

public struct CSVSourceSpec: Sendable {
    /// Relative to the spec file's folder.
    public var path: Located<String>
    public var header: Bool = true
    public var delimiter: Located<String>?
    public var quote: Located<String>?
    /// The cell text that means SQL NULL (default: the empty cell).
    public var null: String = ""
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
    public var name: Located<String>
    public var location: SourceLocation
    /// The source feeding the topic; nil for a topic written by someone else.
    public var from: Located<String>?
    public var brokers: Located<String>?
    public var partitions: Located<Int>?
    public var replicationFactor: Located<Int>?
    public var format: Located<String>?
    /// The fields whose values make the message key; default: the source record id.
    public var key: [Located<String>]
    /// Declared types of the JSON fields in the messages (for topics not fed by a CSV source).
    public var fields: [(name: Located<String>, type: Located<String>)]
    public var lingerMs: Located<Int>?
    public var compression: Located<String>?
    public var batchBytes: Located<Int>?
    public var messageMaxBytes: Located<Int>?
    /// librdkafka properties passed through as they are (TLS, SASL, ...).
    public var properties: [(key: Located<String>, value: Located<String>)]
    /// Every source feeding the topic (`from: [a_csv, b_csv]`); `from` is the first.
    public var sources: [Located<String>] = []
}

/// A table definition, in its own file (`schemas/housing.yaml`).
public struct SchemaSpec: Sendable {
    public var name: Located<String>
    public var file: String
    public var columns: [ColumnSpec]
    /// Where the pipeline referenced it.
    public var referencedAt: SourceLocation
}

/// ```yaml
/// - { name: tax, type: integer, nullable: false }
/// ```
public struct ColumnSpec: Sendable {
    public var name: Located<String>
    public var type: Located<String>
    public var nullable: Located<Bool>?
    public var primaryKey: Located<Bool>?
    public var unique: Located<Bool>?
    /// A SQL default expression: `current_timestamp`, `0`, `'n/a'`.
    public var defaultExpression: Located<String>?
    /// `mdy`, `dmy` or `ymd`: how `03/05/2011` is read into a date or timestamp column.
    public var dateOrder: Located<String>? = nil
    public var location: SourceLocation
}

/// ```yaml
/// - name: housing_rows
///   from: housing-data
///   schema: housing
///   flatten: "_"
/// ```
public struct TransformSpec: Sendable {
    public var name: Located<String>
    public var location: SourceLocation
    public var from: Located<String>?
    public var schema: Located<String>?
    /// Separator for flattening nested JSON objects into columns; nil keeps them as JSON values.
    public var flatten: Located<String>?
    public var rename: [(from: Located<String>, to: Located<String>)]
    public var drop: [Located<String>]
    public var casts: [CastSpec]
    public var defaults: [(field: Located<String>, value: Located<String>)]
    /// Field values that mean NULL, besides JSON null (e.g. `"NA"`).
    public var nullIf: [Located<String>]
    /// `ignore`, `warn` (default) or `error`: what to say about fields no column takes.
    public var onUnknownField: Located<String>? = nil
}

public struct CastSpec: Sendable {
    public var field: Located<String>
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
    public var name: Located<String>
    public var location: SourceLocation
    public var from: Located<String>?
    public var url: Located<String>?
    public var table: Located<String>?
    public var dbSchema: Located<String>?
    public var batchSize: Located<Int>?
    public var maxDelayMs: Located<Int>?
    public var retryTimeoutMs: Located<Int>?
    public var mode: Located<String>?
    public var key: [Located<String>]
}
