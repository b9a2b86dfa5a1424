import Foundation

/// YAML text -> `PipelineSpec`. Reports every shape error it finds (unknown keys, wrong types,
/// missing fields, unset environment variables), each at its `file:line:col`.
public struct SpecParser: Sendable {
    /// The variables `${NAME}` and `${NAME:-default}` in scalars are expanded from (`Interpolation`);
    /// the process environment by default.
    public var environment: [String: String]
    /// Reads a file by path; replaceable so tests can feed specs from memory.
    public var readFile: @Sendable (String) throws -> String
    /// Lets schema and source paths leave the spec's project folder (`--allow-outside-project`);
    /// off, so a spec from an untrusted place cannot make pipectl read other files.
    public var allowOutsideProject: Bool

    /// Defaults: the process environment, paths confined to the project folder, files read as UTF-8.
    public init(
        environment: [String: String] = ProcessInfo.processInfo.environment,
        allowOutsideProject: Bool = false,
        readFile: @escaping @Sendable (String) throws -> String = { try String(contentsOfFile: $0, encoding: .utf8) }
    ) {
        self.environment = environment
        self.allowOutsideProject = allowOutsideProject
        self.readFile = readFile
    }

    /// The flag that lifts the project-folder check, as named in messages.
    public static let outsideProjectFlag = "--allow-outside-project"

    static let topKeys = ["version", "name", "description", "sources", "topics", "schemas", "transforms", "sinks"]
    static let sourceKeys = ["name", "type", "path", "header", "delimiter", "quote", "null", "batch_size", "rate_limit", "encoding"]
    static let topicKeys = [
        "name", "from", "brokers", "partitions", "replication_factor", "format", "key", "fields",
        "linger_ms", "compression", "batch_bytes", "message_max_bytes", "properties",
    ]
    static let schemaKeys = ["version", "name", "description", "columns"]
    static let columnKeys = ["name", "type", "nullable", "primary_key", "unique", "default", "description", "date_order"]
    static let transformKeys = ["name", "from", "schema", "flatten", "rename", "drop", "casts", "defaults", "null_if", "on_unknown_field"]
    static let castKeys = ["type", "on_error"]
    static let sinkKeys = ["name", "from", "type", "url", "table", "db_schema", "batch_size", "max_delay_ms", "retry_timeout_ms", "mode", "key"]

    /// Parses the spec at `path` and the schema files it references.
    public func parse(path: String) throws -> PipelineSpec {
        let text: String
        do {
            text = try readFile(path)
        } catch {
            throw DiagnosticError([.error("cannot read spec file: \(Self.describe(error, path: path))", at: SourceLocation(file: path, line: 1, column: 1))])
        }
        return try parse(text: text, file: path)
    }

    /// Parses `text` as the spec file `file` (the name used in diagnostics; relative paths in it are
    /// resolved against its folder) and the schema files it references.
    /// - Throws: `DiagnosticError` with every error found (each at its `file:line:col`), warnings
    /// included.
    public func parse(text: String, file: String) throws -> PipelineSpec {
        var bag = DiagnosticBag()
        let spec = parse(text: text, file: file, bag: &bag)
        try bag.throwIfErrors()
        guard let spec else { throw DiagnosticError(bag.diagnostics) }
        return spec
    }

    static func describe(_ error: Error, path: String? = nil) -> String {
        if let path {
            // Foundation reports a symlink loop as a generic error 256 and a dangling link as
            // "no such file"; stat tells them apart.
            var info = stat()
            var link = stat()
            if stat(path, &info) != 0 {
                if errno == ELOOP { return "it is a symlink loop" }
                if errno == ENOENT, lstat(path, &link) == 0 { return "it is a symlink to a file that does not exist" }
            }
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
                return "it is a folder, not a file"
            }
        }
        let ns = error as NSError
        if ns.domain == NSCocoaErrorDomain, ns.code == NSFileReadNoSuchFileError || ns.code == 260 { return "no such file" }
        return ns.localizedDescription
    }

    func parse(text: String, file: String, bag: inout DiagnosticBag) -> PipelineSpec? {
        let start = SourceLocation(file: file, line: 1, column: 1)
        guard let tree = YAMLTree.parse(text, file: file, environment: environment, diagnostics: &bag) else { return nil }
        // Not a spec at all (a CSV, a password file): one line instead of one per line of it.
        if case .mapping = tree, !FieldReader.looksLike(tree, anyOf: Self.topKeys) {
            bag.error("this is not a pipectl pipeline spec: none of \(Self.topKeys.joined(separator: ", ")) at the top level", at: start)
            return nil
        }
        guard let top = FieldReader(tree, context: "the pipeline spec", allowed: Self.topKeys, bag: &bag) else { return nil }
        let directory = (file as NSString).deletingLastPathComponent
        let project = ProjectFolder(containingSpec: file)

        let version = top.int("version", bag: &bag)
        if version == nil, top["version"] == nil { top.missing("version", bag: &bag) }
        if let version, version.value != 1 {
            bag.error("unsupported spec version \(version.value); this pipectl reads version 1", at: version.location)
        }
        let name = requiredName(top, kind: "pipeline", bag: &bag) ?? Located("", at: start)

        let sources = top.list("sources", bag: &bag).compactMap { parseSource($0, directory: directory, project: project, bag: &bag) }
        let topics = top.list("topics", bag: &bag).compactMap { parseTopic($0, bag: &bag) }
        let schemas = top.list("schemas", bag: &bag).compactMap { parseSchemaReference($0, directory: directory, project: project, bag: &bag) }
        let transforms = top.list("transforms", bag: &bag).compactMap { parseTransform($0, bag: &bag) }
        let sinks = top.list("sinks", bag: &bag).compactMap { parseSink($0, bag: &bag) }

        return PipelineSpec(
            file: file, directory: directory, version: version ?? Located(1, at: start), name: name,
            sources: sources, topics: topics, schemas: schemas, transforms: transforms, sinks: sinks)
    }

    /// `- name: x` items: the name, or a diagnostic and a placeholder so checking goes on.
    private func itemName(_ fields: FieldReader, bag: inout DiagnosticBag) -> Located<String> {
        let kind = fields.context.split(separator: " ").first.map(String.init) ?? "item"
        return requiredName(fields, kind: kind, bag: &bag) ?? Located("", at: fields.location)
    }

    /// `name: ""` is present but names nothing: say so, or the empty name slips through checks.
    private func requiredName(_ fields: FieldReader, kind: String, bag: inout DiagnosticBag) -> Located<String>? {
        guard let name = fields.string("name", required: true, bag: &bag) else { return nil }
        if name.value.trimmingCharacters(in: .whitespaces).isEmpty {
            bag.error("\(kind) name must not be empty", at: name.location)
        }
        return name
    }

    private func context(_ kind: String, _ tree: YAMLTree) -> String {
        if case .mapping(let pairs, _) = tree, let n = pairs.first(where: { $0.key.value == "name" }),
            case .scalar(let text, _, _) = n.value
        {
            return "\(kind) '\(Excerpt.quoted(text))'"
        }
        return kind
    }

    /// Refuses a path outside the project unless the caller allowed it; true when it may be read.
    func checkInsideProject(_ full: String, what: String, project: ProjectFolder, at location: SourceLocation, bag: inout DiagnosticBag) -> Bool {
        guard !allowOutsideProject, !project.contains(full) else { return true }
        bag.error(
            "\(what) '\(Excerpt.quoted(full, limit: 200))' is outside the project folder '\(Excerpt.quoted(project.shownAs, limit: 200))'; pass \(Self.outsideProjectFlag) to read it",
            at: location)
        return false
    }

    func parseSource(_ tree: YAMLTree, directory: String = "", project: ProjectFolder? = nil, bag: inout DiagnosticBag) -> SourceSpec? {
        guard let f = FieldReader(tree, context: context("source", tree), allowed: Self.sourceKeys, bag: &bag) else { return nil }
        let name = itemName(f, bag: &bag)
        if let type = f.string("type", required: true, bag: &bag), type.value != "csv" {
            bag.error(
                "unknown source type '\(type.value)'\(Suggest.hint(for: type.value, in: ["csv"])); supported: csv",
                at: type.location)
        }
        var csv = CSVSourceSpec(path: f.string("path", required: true, bag: &bag) ?? Located("", at: f.location))
        if let project, !csv.path.value.isEmpty {
            _ = checkInsideProject(Self.join(directory, csv.path.value), what: "source file", project: project, at: csv.path.location, bag: &bag)
        }
        csv.header = f.bool("header", bag: &bag)?.value ?? true
        csv.delimiter = f.string("delimiter", bag: &bag)
        csv.quote = f.string("quote", bag: &bag)
        csv.null = f.literalString("null", bag: &bag)?.value ?? ""
        csv.batchSize = f.int("batch_size", min: 1, bag: &bag)
        csv.rateLimit = f.double("rate_limit", bag: &bag)
        csv.encoding = f.string("encoding", bag: &bag)
        for single in [csv.delimiter, csv.quote].compactMap({ $0 }) where single.value.unicodeScalars.count != 1 {
            bag.error("'\(single.value)' must be exactly one character", at: single.location)
        }
        return SourceSpec(name: name, location: f.location, csv: csv)
    }

    func parseTopic(_ tree: YAMLTree, bag: inout DiagnosticBag) -> TopicSpec? {
        guard let f = FieldReader(tree, context: context("topic", tree), allowed: Self.topicKeys, bag: &bag) else { return nil }
        // `from:` names one source, or a list of sources sharing the topic.
        var sources: [Located<String>] = []
        if case .sequence = f["from"] { sources = f.strings("from", bag: &bag) } else if let one = f.string("from", bag: &bag) { sources = [one] }
        var topic = TopicSpec(
            name: itemName(f, bag: &bag), location: f.location,
            from: sources.first,
            brokers: f.string("brokers", bag: &bag),
            partitions: f.int("partitions", min: 1, bag: &bag),
            replicationFactor: f.int("replication_factor", min: 1, bag: &bag),
            format: f.string("format", bag: &bag),
            key: f.strings("key", bag: &bag),
            fields: f.stringMap("fields", bag: &bag).map { (name: $0.key, type: $0.value) },
            lingerMs: f.int("linger_ms", min: 0, bag: &bag),
            compression: f.string("compression", bag: &bag),
            batchBytes: f.int("batch_bytes", min: 1, bag: &bag),
            messageMaxBytes: f.int("message_max_bytes", min: 1000, bag: &bag),
            properties: f.stringMap("properties", bag: &bag))
        topic.sources = sources
        return topic
    }

    /// `- ../schemas/housing.yaml` (a file, relative to the spec) or an inline schema mapping.
    func parseSchemaReference(_ tree: YAMLTree, directory: String, project: ProjectFolder? = nil, bag: inout DiagnosticBag) -> SchemaSpec? {
        switch tree {
        case .scalar(let path, _, let loc):
            let full = Self.join(directory, path)
            if let project, !checkInsideProject(full, what: "schema file", project: project, at: loc, bag: &bag) { return nil }
            let text: String
            do {
                text = try readFile(full)
            } catch {
                bag.error("cannot read schema file '\(full)': \(Self.describe(error, path: full))", at: loc)
                return nil
            }
            guard let schemaTree = YAMLTree.parse(text, file: full, environment: environment, diagnostics: &bag) else {
                return nil
            }
            return parseSchema(schemaTree, file: full, referencedAt: loc, fromFile: true, bag: &bag)
        case .mapping:
            return parseSchema(tree, file: tree.location.file, referencedAt: tree.location, bag: &bag)
        case .sequence:
            bag.error("a schema must be a file path or a mapping, found a list", at: tree.location)
            return nil
        }
    }

    func parseSchema(_ tree: YAMLTree, file: String, referencedAt: SourceLocation, fromFile: Bool = false, bag: inout DiagnosticBag) -> SchemaSpec? {
        // A referenced file that is not a schema at all (any text reads as YAML of some kind)
        // gets one line, not one "unknown key" per line quoting the file back.
        if fromFile, !FieldReader.looksLike(tree, anyOf: ["name", "columns"]) {
            bag.error(
                "'\(Excerpt.quoted(file, limit: 200))' is not a pipectl schema file: it has neither 'name' nor 'columns' at the top level",
                at: referencedAt)
            return nil
        }
        guard let f = FieldReader(tree, context: context("schema", tree), allowed: Self.schemaKeys, bag: &bag) else { return nil }
        if let version = f.int("version", bag: &bag), version.value != 1 {
            bag.error("unsupported schema version \(version.value); this pipectl reads version 1", at: version.location)
        }
        let name = itemName(f, bag: &bag)
        let items = f.list("columns", bag: &bag)
        if f["columns"] == nil { f.missing("columns", bag: &bag) }
        let columns: [ColumnSpec] = items.compactMap { item in
            guard let c = FieldReader(item, context: context("column", item), allowed: Self.columnKeys, bag: &bag) else { return nil }
            return ColumnSpec(
                name: itemName(c, bag: &bag),
                type: c.string("type", required: true, bag: &bag) ?? Located("", at: c.location),
                nullable: c.bool("nullable", bag: &bag),
                primaryKey: c.bool("primary_key", bag: &bag),
                unique: c.bool("unique", bag: &bag),
                defaultExpression: c.string("default", bag: &bag),
                dateOrder: c.string("date_order", bag: &bag),
                location: c.location)
        }
        return SchemaSpec(name: name, file: file, columns: columns, referencedAt: referencedAt)
    }

    func parseTransform(_ tree: YAMLTree, bag: inout DiagnosticBag) -> TransformSpec? {
        guard let f = FieldReader(tree, context: context("transform", tree), allowed: Self.transformKeys, bag: &bag) else { return nil }
        var casts: [CastSpec] = []
        if let castTree = f["casts"] {
            if case .mapping(let pairs, _) = castTree {
                for pair in pairs {
                    switch pair.value {
                    case .scalar(let type, _, let loc):
                        casts.append(CastSpec(field: pair.key, type: Located(type, at: loc), onError: nil))
                    case .mapping:
                        guard let c = FieldReader(pair.value, context: "cast of '\(pair.key.value)'", allowed: Self.castKeys, bag: &bag) else { continue }
                        let type = c.string("type", required: true, bag: &bag) ?? Located("", at: c.location)
                        casts.append(CastSpec(field: pair.key, type: type, onError: c.literalString("on_error", bag: &bag)))
                    case .sequence:
                        bag.error("cast of '\(pair.key.value)' must be a type or a mapping, found a list", at: pair.value.location)
                    }
                }
            } else {
                bag.error("'casts' in \(f.context) must be a mapping of field: type, found \(castTree.kindName)", at: castTree.location)
            }
        }
        return TransformSpec(
            name: itemName(f, bag: &bag), location: f.location,
            from: f.string("from", required: true, bag: &bag),
            schema: f.string("schema", required: true, bag: &bag),
            flatten: f.string("flatten", bag: &bag),
            rename: f.stringMap("rename", bag: &bag).map { (from: $0.key, to: $0.value) },
            drop: f.strings("drop", bag: &bag),
            casts: casts,
            defaults: f.stringMap("defaults", bag: &bag).map { (field: $0.key, value: $0.value) },
            nullIf: f.strings("null_if", bag: &bag),
            onUnknownField: f.string("on_unknown_field", bag: &bag))
    }

    func parseSink(_ tree: YAMLTree, bag: inout DiagnosticBag) -> SinkSpec? {
        guard let f = FieldReader(tree, context: context("sink", tree), allowed: Self.sinkKeys, bag: &bag) else { return nil }
        if let type = f.string("type", required: true, bag: &bag), type.value != "postgres" {
            bag.error(
                "unknown sink type '\(type.value)'\(Suggest.hint(for: type.value, in: ["postgres"])); supported: postgres",
                at: type.location)
        }
        return SinkSpec(
            name: itemName(f, bag: &bag), location: f.location,
            from: f.string("from", required: true, bag: &bag),
            url: f.string("url", bag: &bag),
            table: f.string("table", required: true, bag: &bag),
            dbSchema: f.string("db_schema", bag: &bag),
            batchSize: f.int("batch_size", min: 1, bag: &bag),
            maxDelayMs: f.int("max_delay_ms", min: 0, bag: &bag),
            retryTimeoutMs: f.int("retry_timeout_ms", min: 0, bag: &bag),
            mode: f.string("mode", bag: &bag),
            key: f.strings("key", bag: &bag))
    }

    /// `pipelines` + `../schemas/x.yaml` -> `schemas/x.yaml`: paths in messages stay short.
    public static func join(_ directory: String, _ path: String) -> String {
        if path.hasPrefix("/") || directory.isEmpty { return normalize(path) }
        return normalize(directory + "/" + path)
    }

    /// Removes `.` and empty parts and folds `dir/..` by text (symlinks are not followed):
    /// `a/./b/../c` -> `a/c`. A relative path keeps leading `..`; `..` above `/` is dropped; an empty
    /// result is `.`.
    public static func normalize(_ path: String) -> String {
        let absolute = path.hasPrefix("/")
        var parts: [Substring] = []
        for part in path.split(separator: "/", omittingEmptySubsequences: true) {
            if part == "." { continue }
            if part == "..", let last = parts.last, last != ".." {
                parts.removeLast()
                continue
            }
            if part == "..", absolute { continue }
            parts.append(part)
        }
        let joined = parts.joined(separator: "/")
        return absolute ? "/" + joined : (joined.isEmpty ? "." : joined)
    }
}
