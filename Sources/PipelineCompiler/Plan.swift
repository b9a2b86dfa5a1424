/// What `pipectl plan` shows: the stage graph, the topics to create and the exact DDL.
/// Built offline from a `Pipeline`; it never connects to anything.
public struct Plan: Codable, Sendable, Equatable {
    /// One node of the stage graph as `plan` shows it (`stages` in `plan --json`).
    public struct Stage: Codable, Sendable, Equatable {
        /// Which section of the spec the stage comes from (`source`, `topic`, `transform`, `sink` in JSON).
        public var kind: StageKind
        /// The stage's name as written in the spec.
        public var name: String
        /// Names of the stages it reads (its `from:`); empty for a source.
        public var inputs: [String]
        /// One line for people, e.g. `csv data/x.csv (header), batches of 100 rows` or
        /// `postgres "public"."t", insert, batches of 5000 rows or 200 ms`; empty if the stage is unknown.
        public var detail: String
    }

    /// A topic `run` creates if missing (`topics` in `plan --json`; `replicationFactor` is
    /// `replication_factor` there).
    public struct TopicPlan: Codable, Sendable, Equatable {
        /// The Kafka topic name.
        public var name: String
        /// Partitions the topic is created with (`partitions`, default 1).
        public var partitions: Int
        /// Replication factor the topic is created with (`replication_factor`, default 1).
        public var replicationFactor: Int
        /// The message format; always `json` today.
        public var format: String
        /// The fields making the message key; `["_record"]` is the source record id. For a topic feeding
        /// an upsert sink without its own `key:`, the fields filling the upsert key.
        public var key: [String]
        /// The bootstrap servers, comma-separated `host:port`.
        public var brokers: String

        enum CodingKeys: String, CodingKey {
            case name, partitions
            case replicationFactor = "replication_factor"
            case format, key, brokers
        }
    }

    /// One source file sent to its topic by `run` (and `produce`): once, whatever reads it.
    public struct SendPlan: Codable, Sendable, Equatable {
        /// The source's name as written in the spec.
        public var source: String
        /// The file's path as written in the spec (relative to the spec's folder).
        public var path: String
        /// The topic it is sent to.
        public var topic: String
    }

    /// One sink's consumer group: the topic it reads, the transforms applied in order, the
    /// table it writes and the columns it fills (the COPY column list).
    public struct ConsumerPlan: Codable, Sendable, Equatable {
        /// The Kafka consumer group: `pipectl.<pipeline>.<sink>`.
        public var group: String
        /// The topic the group consumes.
        public var topic: String
        /// Names of the transforms applied, upstream first.
        public var transforms: [String]
        /// The sink's name as written in the spec.
        public var sink: String
        /// The target table, qualified and quoted: `"public"."housing"`.
        public var table: String
        /// The COPY column list, quoted and comma-separated, ending with `"_pipectl_record"`
        /// (`Sink.columnList`).
        public var columns: String
    }

    /// The pipeline's name (`name` of the spec).
    public var pipeline: String
    /// The spec file as the user named it.
    public var file: String
    /// Every stage in topological order (inputs first).
    public var stages: [Stage]
    /// Every topic of the spec, in declaration order, with the settings it is created with.
    public var topics: [TopicPlan]
    /// What `run` produces, each once.
    public var sends: [SendPlan]
    /// What `run` consumes: one consumer group per sink; groups run side by side.
    public var consumers: [ConsumerPlan]
    /// Sinks whose topic no source of this spec feeds: `run` leaves them alone, `pipectl consume
    /// --sink NAME` loads them.
    public var consumeOnly: [ConsumerPlan]
    /// The DDL (`DDL.all(for:)`), one statement per element: the bookkeeping schema and tables
    /// first, then each sink's schema, table and indexes. Each is idempotent (`IF NOT EXISTS`).
    public var ddl: [String]

    /// Builds the plan from a compiled pipeline, offline (reads nothing, connects nowhere).
    public init(_ pipeline: Pipeline) {
        self.pipeline = pipeline.name
        self.file = pipeline.file
        self.stages = pipeline.stages.map { ref in
            Stage(kind: ref.kind, name: ref.name, inputs: ref.inputs, detail: Self.detail(of: ref, in: pipeline))
        }
        self.topics = pipeline.topics.map {
            TopicPlan(
                name: $0.name, partitions: $0.partitions, replicationFactor: $0.replicationFactor,
                format: $0.format, key: $0.key, brokers: $0.brokers)
        }
        self.sends = pipeline.sends.map { SendPlan(source: $0.source.name, path: $0.source.path, topic: $0.topic.name) }
        let consumerPlans = pipeline.flows.map {
            (
                fed: !$0.sources.isEmpty,
                plan: ConsumerPlan(
                    group: $0.consumerGroup, topic: $0.topic.name, transforms: $0.transforms.map(\.name), sink: $0.sink.name,
                    table: SQL.qualified($0.sink.dbSchema, $0.sink.table), columns: $0.sink.columnList)
            )
        }
        self.consumers = consumerPlans.filter(\.fed).map(\.plan)
        self.consumeOnly = consumerPlans.filter { !$0.fed }.map(\.plan)
        self.ddl = DDL.all(for: pipeline)
    }

    static func detail(of ref: StageRef, in p: Pipeline) -> String {
        switch ref.kind {
        case .source:
            guard let s = p.source(named: ref.name) else { return "" }
            let rate = s.rateLimit.map { ", at most \(Int($0)) rows/s" } ?? ""
            return "csv \(s.path)\(s.header ? " (header)" : ""), batches of \(s.batchSize) rows\(rate)"
        case .topic:
            guard let t = p.topic(named: ref.name) else { return "" }
            return "kafka, \(t.partitions) partition\(t.partitions == 1 ? "" : "s"), \(t.format), key \(t.key.joined(separator: "+"))"
        case .transform:
            guard let t = p.transform(named: ref.name) else { return "" }
            var parts = ["schema \(t.schema.name), \(t.bindings.count) columns from records"]
            if let sep = t.flattenSeparator { parts.append("flatten with '\(sep)'") }
            let casts = t.bindings.filter { $0.castType != nil }.count
            if casts > 0 { parts.append("\(casts) explicit cast\(casts == 1 ? "" : "s")") }
            return parts.joined(separator: ", ")
        case .sink:
            guard let s = p.sinks.first(where: { $0.name == ref.name }) else { return "" }
            let key = s.key.isEmpty ? "" : " on (\(s.key.joined(separator: ", ")))"
            return "postgres \(SQL.qualified(s.dbSchema, s.table)), \(s.mode.rawValue)\(key), batches of \(s.batchSize) rows or \(s.maxDelayMs) ms"
        }
    }

    /// The human-readable plan. Every name and path is escaped (`GeneratedText.comment`): the
    /// plan goes to a terminal, where a raw control character is an instruction.
    public var text: String {
        let e = GeneratedText.comment
        var out = "Pipeline '\(e(pipeline))' (\(e(file)))\n\nStages (topological order):\n"
        let kindWidth = stages.map(\.kind.rawValue.count).max() ?? 0
        let nameWidth = stages.map { e($0.name).count }.max() ?? 0
        for (i, stage) in stages.enumerated() {
            let kind = stage.kind.rawValue.padding(toLength: kindWidth, withPad: " ", startingAt: 0)
            let name = e(stage.name).padding(toLength: nameWidth, withPad: " ", startingAt: 0)
            let inputs = stage.inputs.isEmpty ? "" : "<- \(stage.inputs.map(e).joined(separator: ", "))  "
            out += "  \(i + 1). \(kind)  \(name)  \(inputs)\(e(stage.detail))\n"
        }
        out += "\nTopics to create if missing:\n"
        if topics.isEmpty { out += "  (none)\n" }
        for t in topics {
            out +=
                "  \(e(t.name))  partitions=\(t.partitions) replication_factor=\(t.replicationFactor) format=\(e(t.format)) key=\(e(t.key.joined(separator: "+"))) brokers=\(e(t.brokers))\n"
        }
        out += "\nRun (each source sent once; one consumer group per sink, side by side):\n"
        for s in sends {
            out += "  send     \(e(s.path)) (\(e(s.source))) -> topic \(e(s.topic))\n"
        }
        for c in consumers {
            let chain = c.transforms.map { " -> \(e($0))" }.joined()
            out += "  consume  topic \(e(c.topic))\(chain) -> \(e(c.table)) in group \(e(c.group))\n"
        }
        if sends.isEmpty && consumers.isEmpty { out += "  (nothing)\n" }
        if !consumeOnly.isEmpty {
            out += "\nNot run by `run` (no source of this spec feeds the topic; load with `pipectl consume --sink NAME`):\n"
            for c in consumeOnly {
                let chain = c.transforms.map { " -> \(e($0))" }.joined()
                out += "  consume  topic \(e(c.topic))\(chain) -> \(e(c.table)) in group \(e(c.group))  (sink \(e(c.sink)))\n"
            }
        }
        out += "\nDDL (each statement idempotent):\n"
        // Statements span lines on purpose; the names in them were refused at validate if they
        // held control characters, so only the line structure is kept and each line escaped.
        out +=
            ddl.map { $0.split(separator: "\n", omittingEmptySubsequences: false).map { e(String($0)) }.joined(separator: "\n") }
            .joined(separator: "\n") + "\n"
        return out
    }
}
