import PipelineSpec
import RecordFormats

/// A resolved, validated pipeline: every name points at something that exists, every type is
/// known, every cast is legal. Later stages (plan, generate, run) read only this.
public struct Pipeline: Sendable {
    public var name: String
    /// The spec file as the user named it.
    public var file: String
    public var sources: [Source]
    public var topics: [Topic]
    public var schemas: [Schema]
    public var transforms: [Transform]
    public var sinks: [Sink]
    /// Every stage in topological order (inputs before the stages reading them).
    public var stages: [StageRef]
    /// Warnings the compiler found (a column no field fills, fields no column takes); the
    /// commands print them, and they never stop a run.
    public var warnings: [Diagnostic] = []

    public func source(named name: String) -> Source? { sources.first { $0.name == name } }
    public func topic(named name: String) -> Topic? { topics.first { $0.name == name } }
    public func schema(named name: String) -> Schema? { schemas.first { $0.name == name } }
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
    public var topic: Topic
    public var transforms: [Transform]
    public var sink: Sink
    /// The Kafka consumer group of this sink: `pipectl.<pipeline>.<sink>`.
    public var consumerGroup: String

    /// The first source feeding the topic; nil for a topic other programs write.
    public var source: Source? { sources.first }

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
    public var source: Source
    public var topic: Topic
}

public enum StageKind: String, Sendable, Codable { case source, topic, transform, sink }

public struct StageRef: Hashable, Sendable {
    public var kind: StageKind
    public var name: String
    /// The stages this one reads from (several sources for a topic fed by more than one).
    public var inputs: [String]
}

public struct Source: Sendable {
    public var name: String
    /// The path as written in the spec, relative to the spec's folder.
    public var path: String
    /// The path to open (spec folder + path).
    public var resolvedPath: String
    public var header: Bool
    public var delimiter: UInt8
    public var quote: UInt8
    public var null: String
    public var batchSize: Int
    public var rateLimit: Double?
    /// The file's text encoding; the producer converts it to UTF-8 as it reads.
    public var encoding: TextEncoding = .utf8
}

public struct Topic: Sendable {
    public var name: String
    /// The first source feeding the topic; nil for a topic other programs write.
    public var from: String?
    /// Every source feeding the topic, in the order of `from:`; each is sent with its own
    /// fingerprint, send checkpoint and record ids.
    public var sources: [String] = []
    public var brokers: String
    public var partitions: Int
    public var replicationFactor: Int
    public var format: String
    /// Fields making the message key; `["_record"]` means the source record id.
    public var key: [String]
    /// Declared JSON field types; fields not listed are read as text.
    public var fieldTypes: [String: SQLType]
    public var lingerMs: Int
    public var compression: String
    public var batchBytes: Int
    public var messageMaxBytes: Int
    public var properties: [String: String]

    /// The name of the record id key: the source fingerprint plus the record's ordinal.
    public static let recordKey = "_record"
}

public struct Schema: Sendable, Equatable {
    public var name: String
    public var file: String
    public var columns: [Column]

    public var primaryKey: [Column] { columns.filter(\.primaryKey) }
}

public struct Column: Sendable, Equatable {
    public var name: String
    public var type: SQLType
    public var nullable: Bool
    public var primaryKey: Bool
    public var unique: Bool
    public var defaultExpression: String?
    /// How dates with the year last (`03/05/2011`) are read into this column.
    public var dateOrder: DateOrder

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
    public var column: Column
    /// The record field (after flattening and renames) read into the column.
    public var field: String
    /// The field's type as it arrives (text for CSV-fed topics).
    public var inputType: SQLType
    /// An explicit intermediate cast from the spec, if any.
    public var castType: SQLType?
    public var onCastError: CastFailure
    /// A literal used when the field is missing or null.
    public var defaultValue: String?
    /// The exact JSON key that fills the column, when the compiler read the CSV header and
    /// applied the matching rule (`FieldMatching`); nil: the consumer applies it per message.
    public var key: String? = nil
}

public struct Transform: Sendable {
    public var name: String
    public var from: String
    public var schema: Schema
    public var flattenSeparator: String?
    /// Original field name -> new name.
    public var renames: [String: String]
    public var drops: Set<String>
    public var nullIf: Set<String>
    /// One binding per column the records fill, in schema order.
    public var bindings: [ColumnBinding]
    /// What to say about fields no column takes.
    public var onUnknownField: UnknownFieldPolicy = .warn
    /// Fields of the source's header that no column takes (known when the header could be
    /// read at compile time); the run's summary names them.
    public var unknownFields: [String] = []
}

public enum WriteMode: String, Sendable, Codable { case insert, upsert }

public struct Sink: Sendable {
    public var name: String
    public var from: String
    public var url: String
    public var dbSchema: String
    public var table: String
    public var batchSize: Int
    public var maxDelayMs: Int
    /// How long, in milliseconds, a lost PostgreSQL connection is retried (with backoff)
    /// before the run stops with an error; like Kafka Connect's `errors.retry.timeout`.
    public var retryTimeoutMs: Int
    public var mode: WriteMode
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
    public var pipeline: String
    public static let schema = "pipectl"
    public var offsets: String { "\(pipeline)__offsets" }
    public var sources: String { "\(pipeline)__sources" }
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
