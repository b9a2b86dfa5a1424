import Foundation
import PipelineSpec
import RecordFormats

/// `PipelineSpec` -> `Pipeline`: resolves every `from:`, checks names, types, casts and the
/// shape of the graph, and reports every error it finds at its `file:line:col`.
public struct Compiler: Sendable {
    /// Reads a CSV source's header cells (decoded from its encoding), or nil when the file
    /// cannot be read yet; the compiler then leaves the field checks to `run`. Reading a
    /// local file's first line is the only I/O the compiler does; it never connects anywhere.
    public var readHeader: @Sendable (Source) throws -> [String]?

    /// - Parameter readHeader: how CSV headers are read; tests pass one that reads from memory or
    /// returns nil (no header checks).
    public init(readHeader: @escaping @Sendable (Source) throws -> [String]? = Compiler.readLocalHeader) {
        self.readHeader = readHeader
    }

    /// The default header reader: the first record of the file at `resolvedPath`.
    public static let readLocalHeader: @Sendable (Source) throws -> [String]? = { source in
        try SourceText.header(path: source.resolvedPath, encoding: source.encoding, delimiter: source.delimiter, quote: source.quote)
    }

    /// The values `compression` of a topic accepts: librdkafka's `compression.type` codecs.
    public static let compressions = ["none", "gzip", "snappy", "lz4", "zstd"]
    /// The values `format` of a topic accepts; only JSON messages today.
    public static let formats = ["json"]

    /// Resolves and checks the whole spec, reading each CSV source's header (local files only).
    /// - Returns: the pipeline, with the warnings (unfilled nullable columns, unknown fields) in
    /// `warnings`, sorted by location.
    /// - Throws: `DiagnosticError` with every error (and warning) found, each at its `file:line:col`.
    public func compile(_ spec: PipelineSpec) throws -> Pipeline {
        var run = Run(spec: spec, readHeader: readHeader)
        var pipeline = run.compile()
        try run.bag.throwIfErrors()
        pipeline.warnings = run.bag.diagnostics.filter { $0.severity == .warning }.sorted {
            ($0.location?.description ?? "") < ($1.location?.description ?? "")
        }
        return pipeline
    }

    /// One compilation: the diagnostics it gathers and the name table.
    struct Run {
        let spec: PipelineSpec
        var bag = DiagnosticBag()
        /// Every stage name -> (kind, where it was defined).
        var stageNames: [String: (kind: StageKind, location: SourceLocation)] = [:]
        /// Schema name -> columns dropped for an unknown type (already reported), so later
        /// references to them do not add a second, misleading "not a column" error.
        var untypedColumns: [String: Set<String>] = [:]
        let readHeader: @Sendable (Source) throws -> [String]?
        /// Source name -> its header's field names, for the sources whose file could be read.
        var headers: [String: Header] = [:]

        struct Header {
            /// The file as the spec names it (for messages).
            var file: String
            /// JSON field names, as the producer sends them.
            var fields: [String]
            /// Their normalised forms, position by position.
            var normalized: [String]
        }

        init(spec: PipelineSpec, readHeader: @escaping @Sendable (Source) throws -> [String]?) {
            self.spec = spec
            self.readHeader = readHeader
        }

        mutating func warning(_ message: String, at location: SourceLocation?) {
            bag.append(contentsOf: [Diagnostic(.warning, at: location, message)])
        }

        /// Reads each CSV source's header once, so transforms can be checked against it.
        mutating func readHeaders(_ sources: [Source]) {
            for (s, source) in zip(spec.sources, sources) where !source.path.isEmpty {
                do {
                    guard let cells = try readHeader(source) else { continue }
                    // Without a header the producer names fields column_1, column_2, ...
                    let named = source.header ? cells : cells.map { _ in "" }
                    headers[source.name] = Header(
                        file: source.resolvedPath, fields: FieldMatching.fieldNames(header: named),
                        normalized: FieldMatching.normalized(header: named))
                } catch let error as CSVError {
                    bag.error("source '\(source.name)': \(error.message)", at: s.csv.path.location)
                } catch {
                    bag.error("source '\(source.name)': cannot read \(source.resolvedPath): \(error)", at: s.csv.path.location)
                }
            }
        }

        mutating func compile() -> Pipeline {
            checkPipelineName()
            declareNames()
            let schemas = spec.schemas.compactMap { compileSchema($0) }
            checkUnique(spec.schemas.map(\.name), what: "schema")
            let sources = spec.sources.map { compileSource($0) }
            if !bag.hasErrors { readHeaders(sources) }
            var topics = spec.topics.map { compileTopic($0) }
            checkSourcesFeedOneTopic(topics)
            checkSharedTopicHeaders(topics)
            let transforms = compileTransforms(schemas: schemas, topics: topics)
            let sinks = spec.sinks.compactMap { compileSink($0, transforms: transforms) }
            keyTopicsForUpserts(&topics, transforms: transforms, sinks: sinks)
            let stages = order()
            return Pipeline(
                name: spec.name.value, file: spec.file, sources: sources, topics: topics, schemas: schemas,
                transforms: transforms, sinks: sinks, stages: stages)
        }

        // MARK: names

        mutating func checkPipelineName() {
            let name = spec.name
            guard !name.value.isEmpty else { return }  // already reported as missing
            let ok =
                name.value.count <= 40
                && name.value.unicodeScalars.allSatisfy {
                    ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_"
                } && !("0"..."9").contains(name.value.unicodeScalars.first!)
            if !ok {
                bag.error(
                    "pipeline name '\(name.value)' must be 1 to 40 of a-z, 0-9 and _, not starting with a digit (it names the bookkeeping tables)",
                    at: name.location)
            }
        }

        mutating func declareNames() {
            let all: [(StageKind, Located<String>)] =
                spec.sources.map { (.source, $0.name) } + spec.topics.map { (.topic, $0.name) }
                + spec.transforms.map { (.transform, $0.name) } + spec.sinks.map { (.sink, $0.name) }
            for (kind, name) in all where !name.value.isEmpty {
                // Stage names end up in comments of generated SQL and Swift, in the plan and in
                // bookkeeping rows: a carriage return there once ran `DROP TABLE` under psql.
                checkPrintable(name, what: "\(kind.rawValue) name")
                if let first = stageNames[name.value] {
                    bag.error(
                        "duplicate name '\(name.value)': \(first.kind.rawValue) '\(name.value)' is already defined at \(first.location)",
                        at: name.location)
                } else {
                    stageNames[name.value] = (kind, name.location)
                }
            }
        }

        mutating func checkUnique(_ names: [Located<String>], what: String) {
            var seen: [String: SourceLocation] = [:]
            for name in names {
                if let first = seen[name.value] {
                    bag.error("duplicate \(what) '\(name.value)': already defined at \(first)", at: name.location)
                } else {
                    seen[name.value] = name.location
                }
            }
        }

        /// Resolves `from:` to a stage of one of the allowed kinds.
        mutating func resolve(_ from: Located<String>?, of context: String, allowed: [StageKind]) -> String? {
            guard let from else { return nil }
            guard let target = stageNames[from.value] else {
                let candidates = stageNames.filter { allowed.contains($0.value.kind) }.map(\.key)
                bag.error(
                    "\(context) reads from '\(from.value)', which is not defined\(Suggest.hint(for: from.value, in: candidates))",
                    at: from.location)
                return nil
            }
            guard allowed.contains(target.kind) else {
                let kinds = allowed.map(\.rawValue).joined(separator: " or ")
                bag.error("\(context) reads from \(target.kind.rawValue) '\(from.value)'; it must read from a \(kinds)", at: from.location)
                return nil
            }
            return from.value
        }

        // MARK: identifiers

        /// PostgreSQL identifiers: quoted everywhere, so any text is safe once it is non-empty,
        /// fits in 63 bytes (longer names are silently truncated by the server) and has no NUL.
        mutating func checkIdentifier(_ name: Located<String>, what: String) {
            if name.value.isEmpty {
                bag.error("\(what) name must not be empty", at: name.location)
            } else if name.value.utf8.count > 63 {
                bag.error("\(what) name '\(Excerpt.quoted(name.value, limit: 70))' is \(name.value.utf8.count) bytes; PostgreSQL allows 63", at: name.location)
            } else {
                checkPrintable(name, what: "\(what) name")
            }
        }

        /// No control characters (C0, DEL, C1) and no Unicode line or paragraph separator: each
        /// is a line break or an escape somewhere a name is written (YAML, SQL comments, a
        /// terminal). The message shows the name escaped, never raw.
        mutating func checkPrintable(_ name: Located<String>, what: String) {
            if name.value.unicodeScalars.contains(where: Excerpt.isUnsafe) {
                bag.error("\(what) '\(Excerpt.quoted(name.value))' contains a control character or line break", at: name.location)
            }
        }

        mutating func parseType(_ text: Located<String>) -> SQLType? {
            switch SQLType.parse(text.value) {
            case .success(let type): return type
            case .failure(let error):
                bag.error(error.message, at: text.location)
                return nil
            }
        }

        /// PostgreSQL's limit on the columns of a table.
        static let maxTableColumns = 1600

        static let defaultFunctions = ["current_timestamp", "current_date", "current_time", "localtimestamp", "now()", "gen_random_uuid()"]

        /// Defaults go into DDL as SQL, so only literals and a few functions are accepted.
        static func isSafeDefault(_ text: String) -> Bool {
            let t = text.trimmingCharacters(in: .whitespaces)
            if defaultFunctions.contains(t.lowercased()) || ["true", "false", "null"].contains(t.lowercased()) { return true }
            if t.count >= 2, t.hasPrefix("'"), t.hasSuffix("'") {
                let inner = t.dropFirst().dropLast()
                return !inner.replacingOccurrences(of: "''", with: "").contains("'")
            }
            if case .success = ValueCaster.cast(t, to: .numeric(precision: nil, scale: nil)) { return !t.lowercased().contains("n") }
            return false
        }

        // MARK: stages

        mutating func compileSource(_ s: SourceSpec) -> Source {
            if let size = s.csv.batchSize, size.value > 1_000_000 {
                bag.error("batch_size \(size.value) of source '\(s.name.value)' is too large (at most 1000000)", at: size.location)
            }
            if s.csv.path.value.isEmpty == false, let q = s.csv.quote, let d = s.csv.delimiter, q.value == d.value {
                bag.error("the quote and the delimiter of source '\(s.name.value)' must differ", at: q.location)
            }
            let delimiter = s.csv.delimiter?.value.utf8.first ?? UInt8(ascii: ",")
            let quote = s.csv.quote?.value.utf8.first ?? UInt8(ascii: "\"")
            for (field, value) in [("delimiter", s.csv.delimiter), ("quote", s.csv.quote)] {
                if let value, value.value.utf8.count != 1 {
                    bag.error("the \(field) of source '\(s.name.value)' must be a single ASCII character, found '\(value.value)'", at: value.location)
                }
            }
            var encoding = TextEncoding.utf8
            if let e = s.csv.encoding {
                if let value = TextEncoding(rawValue: e.value.lowercased()) {
                    encoding = value
                } else {
                    let names = TextEncoding.allCases.map(\.rawValue)
                    bag.error(
                        "unknown encoding '\(e.value)' for source '\(s.name.value)'\(Suggest.hint(for: e.value.lowercased(), in: names)); one of \(TextEncoding.names)",
                        at: e.location)
                }
            }
            return Source(
                name: s.name.value, path: s.csv.path.value,
                resolvedPath: SpecParser.join(spec.directory, s.csv.path.value),
                header: s.csv.header, delimiter: delimiter, quote: quote, null: s.csv.null,
                batchSize: s.csv.batchSize?.value ?? 100, rateLimit: s.csv.rateLimit?.value, encoding: encoding)
        }

        mutating func compileTopic(_ t: TopicSpec) -> Topic {
            let context = "topic '\(t.name.value)'"
            let legal = t.name.value.unicodeScalars.allSatisfy {
                $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || ".-_".unicodeScalars.contains($0))
            }
            if !t.name.value.isEmpty, !legal || t.name.value.count > 249 || t.name.value == "." || t.name.value == ".." {
                bag.error(
                    "topic name '\(t.name.value)' is not a legal Kafka topic name (1 to 249 of a-z, A-Z, 0-9, '.', '_', '-')",
                    at: t.name.location)
            }
            let listed = t.sources.isEmpty ? (t.from.map { [$0] } ?? []) : t.sources
            var sources: [String] = []
            for name in listed {
                if sources.contains(name.value) {
                    bag.error("\(context) lists source '\(name.value)' twice in 'from:'", at: name.location)
                } else if let resolved = resolve(name, of: context, allowed: [.source]) {
                    sources.append(resolved)
                }
            }
            let from = sources.first
            if let format = t.format, !Compiler.formats.contains(format.value) {
                bag.error(
                    "unknown format '\(format.value)' for \(context)\(Suggest.hint(for: format.value, in: Compiler.formats)); supported: json",
                    at: format.location)
            }
            if let c = t.compression, !Compiler.compressions.contains(c.value) {
                bag.error(
                    "unknown compression '\(c.value)'\(Suggest.hint(for: c.value, in: Compiler.compressions)); one of \(Compiler.compressions.joined(separator: ", "))",
                    at: c.location)
            }
            if let b = t.brokers, b.value.trimmingCharacters(in: .whitespaces).isEmpty {
                bag.error("brokers of \(context) is empty", at: b.location)
            }
            var fieldTypes: [String: SQLType] = [:]
            for field in t.fields {
                if let type = parseType(field.type) { fieldTypes[field.name.value] = type }
            }
            var properties: [String: String] = [:]
            for p in t.properties { properties[p.key.value] = p.value.value }
            return Topic(
                name: t.name.value, from: from, sources: sources,
                brokers: t.brokers?.value ?? "127.0.0.1:9092",
                partitions: t.partitions?.value ?? 1,
                replicationFactor: t.replicationFactor?.value ?? 1,
                format: t.format?.value ?? "json",
                key: t.key.isEmpty ? [Topic.recordKey] : t.key.map(\.value),
                fieldTypes: fieldTypes,
                lingerMs: t.lingerMs?.value ?? 5,
                compression: t.compression?.value ?? "lz4",
                batchBytes: t.batchBytes?.value ?? 1_000_000,
                messageMaxBytes: t.messageMaxBytes?.value ?? 1_000_000,
                properties: properties)
        }

        /// A source sends its file to one topic: its send checkpoint and record ids belong to
        /// the file, so a second topic would find it already sent.
        mutating func checkSourcesFeedOneTopic(_ topics: [Topic]) {
            var fed: [String: String] = [:]
            for (t, topic) in zip(spec.topics, topics) {
                for source in topic.sources {
                    if let first = fed[source] {
                        let location = (t.sources.isEmpty ? t.from.map { [$0] } ?? [] : t.sources).first { $0.value == source }?.location
                        bag.error(
                            "source '\(source)' feeds topic '\(first)' already; a source feeds one topic (its send checkpoint and record ids belong to the file), so list both topics' readers under '\(first)' or add a second source",
                            at: location ?? t.location)
                    } else {
                        fed[source] = topic.name
                    }
                }
            }
        }

        /// Sources sharing a topic must send the same fields: transforms reading the topic are
        /// matched against one header, and every record must fit it.
        mutating func checkSharedTopicHeaders(_ topics: [Topic]) {
            for (t, topic) in zip(spec.topics, topics) where topic.sources.count > 1 {
                guard let first = headers[topic.sources[0]] else { continue }
                for other in topic.sources.dropFirst() {
                    guard let header = headers[other], header.fields != first.fields else { continue }
                    let location = t.sources.first { $0.value == other }?.location
                    bag.error(
                        "sources '\(topic.sources[0])' and '\(other)' of topic '\(topic.name)' have different fields (\(first.fields.joined(separator: ", ")) and \(header.fields.joined(separator: ", "))); sources sharing a topic must have the same header",
                        at: location ?? t.location)
                }
            }
        }

        /// Compiles the transforms upstream first, so a transform reading another one is
        /// matched against that one's output columns; returns them in declaration order.
        mutating func compileTransforms(schemas: [Schema], topics: [Topic]) -> [Transform] {
            let names = Set(spec.transforms.map(\.name.value))
            var done: [String: Transform] = [:]
            var visited = Set<String>()
            var order: [TransformSpec] = []
            var pending = spec.transforms
            // Upstream transforms first; a transform on a cycle (reported by `order()`) or reading
            // an unknown stage is compiled as it comes.
            while !pending.isEmpty {
                let before = pending.count
                pending.removeAll { t in
                    guard let from = t.from?.value, names.contains(from), !visited.contains(from) else {
                        visited.insert(t.name.value)
                        order.append(t)
                        return true
                    }
                    return false
                }
                if pending.count == before {
                    order.append(contentsOf: pending)
                    pending = []
                }
            }
            for t in order {
                let upstream = t.from.flatMap { done[$0.value] }
                if let compiled = compileTransform(t, schemas: schemas, topics: topics, upstream: upstream), done[compiled.name] == nil {
                    done[compiled.name] = compiled
                }
            }
            // Duplicate names were reported by `declareNames`.
            var seen = Set<String>()
            return spec.transforms.compactMap { t in seen.insert(t.name.value).inserted ? done[t.name.value] : nil }
        }

        mutating func compileSchema(_ s: SchemaSpec) -> Schema? {
            checkIdentifier(s.name, what: "schema")
            if s.columns.isEmpty, !s.name.value.isEmpty {
                bag.error("schema '\(s.name.value)' has no columns", at: s.name.location)
            }
            // PostgreSQL refuses a table with more (MaxHeapAttributeNumber); pipectl adds its
            // record-id column, so the schema may have one fewer. Say so now, not at run time.
            let maxColumns = Self.maxTableColumns - 1
            if s.columns.count > maxColumns {
                bag.error(
                    "schema '\(Excerpt.quoted(s.name.value))' has \(s.columns.count) columns; PostgreSQL allows \(Self.maxTableColumns) per table and pipectl adds one (\(Sink.recordColumn)), so at most \(maxColumns)",
                    at: s.name.location)
            }
            var seen: [String: Located<String>] = [:]
            var columns: [Column] = []
            for c in s.columns {
                checkIdentifier(c.name, what: "column")
                let normalized = c.name.value.lowercased()
                if let first = seen[normalized] {
                    let same = first.value == c.name.value ? "" : " ('\(first.value)' and '\(c.name.value)' differ only in case)"
                    bag.error(
                        "duplicate column '\(c.name.value)' in schema '\(s.name.value)'\(same): first defined at \(first.location)",
                        at: c.name.location)
                }
                seen[normalized] = seen[normalized] ?? c.name
                if c.name.value == Sink.recordColumn {
                    bag.error("column name '\(Sink.recordColumn)' is reserved for pipectl's record ids", at: c.name.location)
                }
                guard let type = parseType(c.type) else {
                    untypedColumns[s.name.value, default: []].insert(c.name.value)
                    continue
                }
                let primaryKey = c.primaryKey?.value ?? false
                if primaryKey, let n = c.nullable, n.value {
                    bag.error("column '\(c.name.value)' is a primary key and cannot be nullable", at: n.location)
                }
                if let d = c.defaultExpression {
                    if type.isGenerated {
                        bag.error("column '\(c.name.value)' is \(type) and takes no default", at: d.location)
                    } else if !Self.isSafeDefault(d.value) {
                        bag.error(
                            "default '\(d.value)' of column '\(c.name.value)' must be a number, a 'quoted string', true, false, null or one of \(Self.defaultFunctions.joined(separator: ", "))",
                            at: d.location)
                    } else if d.value.trimmingCharacters(in: .whitespaces).lowercased() == "null", primaryKey || c.nullable?.value == false {
                        bag.error(
                            "default null of column '\(c.name.value)' contradicts its NOT NULL; drop the default or make the column nullable",
                            at: d.location)
                    }
                }
                var dateOrder = DateOrder.mdy
                if let order = c.dateOrder {
                    if let value = DateOrder(rawValue: order.value) {
                        dateOrder = value
                    } else {
                        bag.error(
                            "unknown date_order '\(order.value)' for column '\(c.name.value)'\(Suggest.hint(for: order.value, in: DateOrder.allCases.map(\.rawValue))); one of mdy, dmy, ymd",
                            at: order.location)
                    }
                    if ![.date, .timestamp, .timestamptz].contains(type) {
                        bag.error("date_order is for date and timestamp columns; column '\(c.name.value)' is \(type)", at: order.location)
                    }
                }
                columns.append(
                    Column(
                        name: c.name.value, type: type,
                        nullable: primaryKey ? false : (c.nullable?.value ?? !type.isGenerated),
                        primaryKey: primaryKey, unique: c.unique?.value ?? false,
                        defaultExpression: c.defaultExpression?.value, dateOrder: dateOrder))
            }
            guard !s.name.value.isEmpty else { return nil }
            return Schema(name: s.name.value, file: s.file, columns: columns)
        }

        /// - Parameter upstream: the transform this one reads, when it reads one: its output
        ///   columns are this one's input fields (typed as its columns).
        mutating func compileTransform(_ t: TransformSpec, schemas: [Schema], topics: [Topic], upstream: Transform? = nil) -> Transform? {
            let context = "transform '\(t.name.value)'"
            let from = resolve(t.from, of: context, allowed: [.topic, .transform])
            guard let schemaName = t.schema else { return nil }
            guard let schema = schemas.first(where: { $0.name == schemaName.value }) else {
                bag.error(
                    "\(context) uses schema '\(schemaName.value)', which is not defined\(Suggest.hint(for: schemaName.value, in: schemas.map(\.name)))",
                    at: schemaName.location)
                return nil
            }
            if let sep = t.flatten, sep.value.isEmpty {
                bag.error("the flatten separator of \(context) must not be empty", at: sep.location)
            }
            let columnNames = schema.columns.map(\.name)
            let untyped = untypedColumns[schema.name] ?? []
            var topic = from.flatMap { name in topics.first { $0.name == name } }
            if let upstream {
                // The upstream's rows, as a topic: its columns are the fields, typed.
                topic = Topic(
                    name: upstream.name, from: nil, brokers: "", partitions: 1, replicationFactor: 1, format: "json", key: [],
                    fieldTypes: Dictionary(upstream.bindings.map { ($0.column.name, $0.column.type) }, uniquingKeysWith: { a, _ in a }),
                    lingerMs: 0, compression: "none", batchBytes: 0, messageMaxBytes: 0, properties: [:])
            }

            var renames: [String: String] = [:]
            for r in t.rename {
                if renames[r.from.value] != nil {
                    bag.error("field '\(r.from.value)' is renamed twice in \(context)", at: r.from.location)
                }
                renames[r.from.value] = r.to.value
                if !columnNames.contains(r.to.value), !untyped.contains(r.to.value) {
                    bag.error(
                        "\(context) renames '\(r.from.value)' to '\(r.to.value)', which is not a column of schema '\(schema.name)'\(Suggest.hint(for: r.to.value, in: columnNames))",
                        at: r.to.location)
                }
            }
            let inverse = Dictionary(renames.map { ($0.value, $0.key) }, uniquingKeysWith: { a, _ in a })

            func column(_ field: Located<String>, role: String) -> Column? {
                guard let column = schema.columns.first(where: { $0.name == field.value }) else {
                    if !untyped.contains(field.value) {
                        bag.error(
                            "\(role) of '\(field.value)' in \(context): schema '\(schema.name)' has no column '\(field.value)'\(Suggest.hint(for: field.value, in: columnNames))",
                            at: field.location)
                    }
                    return nil
                }
                if column.type.isGenerated {
                    bag.error("column '\(column.name)' is \(column.type) and filled by the database; it takes no \(role)", at: field.location)
                    return nil
                }
                return column
            }

            var casts: [String: (type: SQLType, onError: CastFailure)] = [:]
            for cast in t.casts {
                guard let col = column(cast.field, role: "cast"), let type = parseType(cast.type) else { continue }
                var onError = CastFailure.deadLetter
                if let e = cast.onError {
                    if let value = CastFailure(rawValue: e.value) {
                        onError = value
                    } else {
                        bag.error(
                            "unknown on_error '\(e.value)'\(Suggest.hint(for: e.value, in: ["dead_letter", "null", "default"])); one of dead_letter, null, default",
                            at: e.location)
                    }
                }
                let field = inverse[col.name] ?? col.name
                let input = topic?.fieldTypes[field] ?? .text
                if case .refused(let reason) = Castability.of(input, to: type) {
                    bag.error("cast of '\(cast.field.value)' is not allowed: \(reason) (field '\(field)' is \(input))", at: cast.type.location)
                } else if case .refused(let reason) = Castability.of(type, to: col.type) {
                    bag.error("cast of '\(cast.field.value)' is not allowed: \(reason) (column '\(col.name)' is \(col.type))", at: cast.type.location)
                }
                if onError == .null, !col.nullable {
                    bag.error("on_error: null for '\(col.name)', but the column is not nullable", at: cast.onError!.location)
                }
                casts[col.name] = (type, onError)
            }

            var defaults: [String: String] = [:]
            for d in t.defaults {
                guard let col = column(d.field, role: "default") else { continue }
                if case .failure(let reason) = ValueCaster.cast(d.value.value, to: col.type, dateOrder: col.dateOrder) {
                    bag.error("invalid default for column '\(col.name)': \(reason.message)", at: d.value.location)
                }
                defaults[col.name] = d.value.value
            }
            for (name, cast) in casts where cast.onError == .default && defaults[name] == nil {
                let loc = t.casts.first { $0.field.value == name }!.field.location
                bag.error("on_error: default for '\(name)', but \(context) gives it no default", at: loc)
            }

            var unknownPolicy = UnknownFieldPolicy.warn
            if let u = t.onUnknownField {
                if let value = UnknownFieldPolicy(rawValue: u.value) {
                    unknownPolicy = value
                } else {
                    bag.error(
                        "unknown on_unknown_field '\(u.value)'\(Suggest.hint(for: u.value, in: UnknownFieldPolicy.allCases.map(\.rawValue))); one of ignore, warn, error",
                        at: u.location)
                }
            }
            // With the CSV header at hand, the matching rule (FieldMatching) is applied here, once:
            // each binding gets its exact key, and what does not match is reported before any run.
            let header =
                upstream.map { up in
                    Header(
                        file: "transform '\(up.name)'", fields: up.bindings.map(\.column.name),
                        normalized: up.bindings.map { FieldMatching.normalized($0.column.name) })
                } ?? topic?.from.flatMap { headers[$0] }
            var matcher = header.map { FieldMatcher(header: $0, transform: t) }

            var bindings: [ColumnBinding] = []
            /// Nullable columns no field fills: one warning for all of them, after the loop.
            var unfilledNullable: [(name: String, location: SourceLocation)] = []
            // Columns with a database default (created_at) are left to the database unless the
            // transform names them in a cast, default or rename.
            let named = Set(casts.keys).union(defaults.keys).union(renames.values)
            for col in schema.columns where !col.isFilledByDatabase && (col.defaultExpression == nil || named.contains(col.name)) {
                let field = inverse[col.name] ?? col.name
                let input = topic?.fieldTypes[field] ?? .text
                if casts[col.name] == nil, case .refused(let reason) = Castability.of(input, to: col.type) {
                    let loc = topic.flatMap { tp in spec.topics.first { $0.name.value == tp.name }?.fields.first { $0.name.value == field }?.type.location }
                    bag.error("field '\(field)' cannot fill column '\(col.name)': \(reason)", at: loc ?? t.location)
                }
                var key: String?
                if let header, matcher != nil {
                    key = matcher!.take(column: col.name)
                    if key == nil, defaults[col.name] == nil {
                        let loc = spec.schemas.first { $0.name.value == schema.name }?.columns.first { $0.name.value == col.name }?.name.location
                        if col.nullable {
                            unfilledNullable.append((col.name, loc ?? t.location))
                        } else {
                            let hint = Suggest.hint(for: col.name, in: header.fields + header.normalized)
                            bag.error(
                                "no field of \(header.file) fills column '\(col.name)' of schema '\(schema.name)', which is not nullable; the fields are \(header.fields.joined(separator: ", "))\(hint)\(Self.delimiterHint(header))",
                                at: loc ?? t.location)
                        }
                    }
                }
                bindings.append(
                    ColumnBinding(
                        column: col, field: col.name, inputType: input, castType: casts[col.name]?.type,
                        onCastError: casts[col.name]?.onError ?? .deadLetter, defaultValue: defaults[col.name], key: key))
            }
            if let header, let first = unfilledNullable.first {
                let names = unfilledNullable.map { "'\($0.name)'" }.joined(separator: ", ")
                let hint = unfilledNullable.count == 1 ? Suggest.hint(for: first.name, in: header.fields + header.normalized) : ""
                let what =
                    unfilledNullable.count == 1
                    ? "column \(names) of schema '\(schema.name)', so it stays" : "columns \(names) of schema '\(schema.name)', so they stay"
                warning(
                    "no field of \(header.file) fills \(what) NULL; the fields are \(header.fields.joined(separator: ", "))\(hint)\(Self.delimiterHint(header))",
                    at: first.location)
            }
            if let header, let matcher {
                let unknown = matcher.untaken
                if !unknown.isEmpty, unknownPolicy != .ignore {
                    let list = unknown.map { "'\($0)'" }.joined(separator: ", ")
                    let message =
                        "\(unknown.count == 1 ? "field" : "fields") \(list) of \(header.file) \(unknown.count == 1 ? "fills" : "fill") no column of schema '\(schema.name)' and \(unknown.count == 1 ? "is" : "are") not loaded (add a column, list \(unknown.count == 1 ? "it" : "them") in 'drop', or set on_unknown_field: ignore)"
                    if unknownPolicy == .error {
                        bag.error(message, at: t.onUnknownField?.location ?? t.location)
                    } else {
                        warning(message, at: t.location)
                    }
                }
            }
            guard let from else { return nil }
            return Transform(
                name: t.name.value, from: from, schema: schema, flattenSeparator: t.flatten?.value,
                renames: renames, drops: Set(t.drop.map(\.value)), nullIf: Set(t.nullIf.map(\.value)), bindings: bindings,
                onUnknownField: unknownPolicy, unknownFields: header != nil ? (matcher?.untaken ?? []) : [])
        }

        mutating func compileSink(_ s: SinkSpec, transforms: [Transform]) -> Sink? {
            let context = "sink '\(s.name.value)'"
            let from = resolve(s.from, of: context, allowed: [.transform])
            if let table = s.table { checkIdentifier(table, what: "table") }
            if let schema = s.dbSchema { checkIdentifier(schema, what: "database schema") }
            var mode = WriteMode.insert
            if let m = s.mode {
                if let value = WriteMode(rawValue: m.value) {
                    mode = value
                } else {
                    bag.error(
                        "unknown write mode '\(m.value)'\(Suggest.hint(for: m.value, in: ["insert", "upsert"])); one of insert, upsert",
                        at: m.location)
                }
            }
            guard let from, let transform = transforms.first(where: { $0.name == from }) else { return nil }
            let schema = transform.schema
            let untyped = untypedColumns[schema.name] ?? []
            for key in s.key where !schema.columns.contains(where: { $0.name == key.value }) && !untyped.contains(key.value) {
                bag.error(
                    "key column '\(key.value)' of \(context) is not a column of schema '\(schema.name)'\(Suggest.hint(for: key.value, in: schema.columns.map(\.name)))",
                    at: key.location)
            }
            if mode == .upsert, s.key.isEmpty {
                bag.error("\(context) uses mode upsert and needs a 'key' naming the columns that identify a row", at: s.mode?.location ?? s.location)
            }
            if mode == .upsert, let generated = s.key.first(where: { k in schema.columns.first { $0.name == k.value }?.type.isGenerated == true }) {
                bag.error("upsert key column '\(generated.value)' is filled by the database, so it cannot identify incoming rows", at: generated.location)
            }
            return Sink(
                name: s.name.value, from: from, url: s.url?.value ?? "",
                dbSchema: s.dbSchema?.value ?? "public", table: s.table?.value ?? "",
                batchSize: s.batchSize?.value ?? 5000, maxDelayMs: s.maxDelayMs?.value ?? 200,
                retryTimeoutMs: s.retryTimeoutMs?.value ?? 120_000,
                mode: mode, key: s.key.map(\.value), schema: schema,
                columnList: (transform.bindings.map { SQL.quote($0.column.name) } + [SQL.quote(Sink.recordColumn)]).joined(separator: ", "))
        }

        /// A header read as one field holding `;`, a tab or `|` was split with the wrong delimiter.
        static func delimiterHint(_ header: Header) -> String {
            guard header.fields.count == 1, let field = header.fields.first else { return "" }
            for (c, shown) in [(";", "\";\""), ("\t", "\"\\t\""), ("|", "\"|\"")] where field.contains(c) {
                return " (the header was read as one field: is the delimiter \(shown)?)"
            }
            return ""
        }

        // MARK: upsert keys

        /// `mode: upsert` needs every version of one key in one partition, where Kafka keeps
        /// order; otherwise an older version can be written last. So a topic without a `key:`
        /// is keyed by the fields that fill the upsert key columns, and an explicit topic key
        /// that does not determine the upsert key is an error once there is more than one partition.
        mutating func keyTopicsForUpserts(_ topics: inout [Topic], transforms: [Transform], sinks: [Sink]) {
            for sink in sinks where sink.mode == .upsert && !sink.key.isEmpty {
                guard var transform = transforms.first(where: { $0.name == sink.from }) else { continue }
                /// The field of `transform`'s input that fills `column`.
                func field(_ column: String, of transform: Transform) -> String {
                    let inverse = Dictionary(transform.renames.map { ($0.value, $0.key) }, uniquingKeysWith: { a, _ in a })
                    return transform.bindings.first { $0.column.name == column }?.key ?? inverse[column] ?? column
                }
                // Through a chain of transforms, back to the fields of the topic's records.
                var keyFields = sink.key.map { field($0, of: transform) }
                var seen: Set<String> = [transform.name]
                while let up = transforms.first(where: { $0.name == transform.from }), !seen.contains(up.name) {
                    seen.insert(up.name)
                    keyFields = keyFields.map { field($0, of: up) }
                    transform = up
                }
                guard let index = topics.firstIndex(where: { $0.name == transform.from }) else { continue }
                guard let topicSpec = spec.topics.first(where: { $0.name.value == topics[index].name }) else { continue }
                if topicSpec.key.isEmpty && topics[index].key == [Topic.recordKey] {
                    topics[index].key = keyFields
                    continue
                }
                // The topic key determines the upsert key when each of its fields is one of the
                // fields filling the key columns (equal keys then mean equal message keys).
                let determined = topics[index].key.allSatisfy { field in
                    keyFields.contains { $0 == field || FieldMatching.normalized($0) == field }
                }
                if topics[index].partitions > 1, !determined {
                    let topicKey = topics[index].key.joined(separator: ", ")
                    let location = topicSpec.key.first?.location ?? spec.sinks.first { $0.name.value == sink.name }?.key.first?.location
                    bag.error(
                        "topic '\(topics[index].name)' has \(topics[index].partitions) partitions and key [\(topicKey)], which does not determine the key [\(sink.key.joined(separator: ", "))] of upsert sink '\(sink.name)': versions of one row could land in different partitions and an older one be written last; key the topic by [\(keyFields.joined(separator: ", "))] or leave its key out",
                        at: location ?? topicSpec.location)
                }
            }
        }

        // MARK: graph

        /// Topological order of the stages (Kahn's algorithm, stable in declaration order);
        /// any stage left over sits on a cycle, which is reported once per cycle.
        mutating func order() -> [StageRef] {
            var nodes: [(ref: StageRef, location: SourceLocation)] = []
            for s in spec.sources { nodes.append((StageRef(kind: .source, name: s.name.value, inputs: []), s.name.location)) }
            for t in spec.topics {
                let inputs = t.sources.isEmpty ? (t.from.map { [$0.value] } ?? []) : t.sources.map(\.value)
                nodes.append((StageRef(kind: .topic, name: t.name.value, inputs: inputs), t.name.location))
            }
            for t in spec.transforms {
                nodes.append((StageRef(kind: .transform, name: t.name.value, inputs: t.from.map { [$0.value] } ?? []), t.name.location))
            }
            for s in spec.sinks { nodes.append((StageRef(kind: .sink, name: s.name.value, inputs: s.from.map { [$0.value] } ?? []), s.name.location)) }
            let known = Set(nodes.map(\.ref.name))
            var placed = Set<String>()
            var ordered: [StageRef] = []
            var progress = true
            while progress {
                progress = false
                for node in nodes where !placed.contains(node.ref.name) {
                    if node.ref.inputs.allSatisfy({ placed.contains($0) || !known.contains($0) }) {
                        placed.insert(node.ref.name)
                        ordered.append(node.ref)
                        progress = true
                    }
                }
            }
            var reported = Set<String>()
            for node in nodes where !placed.contains(node.ref.name) && !reported.contains(node.ref.name) {
                var path = [node.ref.name]
                var current = node.ref
                while let next = current.inputs.first, let n = nodes.first(where: { $0.ref.name == next }), !path.contains(next) {
                    path.append(next)
                    current = n.ref
                }
                // A stage downstream of a cycle walks into it too; report each cycle once.
                guard let next = current.inputs.first, let start = path.firstIndex(of: next), !reported.contains(next) else { continue }
                let cycle = Array(path[start...]) + [next]
                cycle.forEach { reported.insert($0) }
                let first = nodes.first { $0.ref.name == cycle[0] }!
                bag.error("cycle in 'from:' links: \(cycle.joined(separator: " <- "))", at: first.location)
            }
            return ordered
        }
    }
}

/// Applies the matching rule (`FieldMatching`) for one transform against a CSV header:
/// drops, then renames, then exact names before normalised ones. Remembers which header fields
/// were taken, so the rest can be reported as unknown.
struct FieldMatcher {
    let header: Compiler.Run.Header
    /// Per header field: the name it offers to columns after renames (nil: dropped).
    var offered: [String?]
    /// Per header field: its normalised form after renames (nil: dropped).
    var offeredNormalized: [String?]
    var taken: Set<Int> = []

    init(header: Compiler.Run.Header, transform t: TransformSpec) {
        self.header = header
        offered = header.fields.map { Optional($0) }
        offeredNormalized = header.normalized.map { Optional($0) }
        for r in t.rename {
            if let i = FieldMatching.index(of: r.from.value, in: header.fields, normalized: header.normalized) {
                offered[i] = r.to.value
                offeredNormalized[i] = r.to.value
            }
        }
        for d in t.drop {
            for i in header.fields.indices where header.fields[i] == d.value || header.normalized[i] == d.value {
                offered[i] = nil
                offeredNormalized[i] = nil
                taken.insert(i)  // dropped on purpose: not unknown
            }
        }
    }

    /// The exact key of the field that fills `column`, or nil.
    mutating func take(column: String) -> String? {
        let i = offered.firstIndex(of: column) ?? offeredNormalized.firstIndex(of: column)
        guard let i else { return nil }
        taken.insert(i)
        return header.fields[i]
    }

    /// Header fields no column took (and not dropped), in header order.
    var untaken: [String] {
        header.fields.indices.filter { !taken.contains($0) }.map { header.fields[$0] }
    }
}
