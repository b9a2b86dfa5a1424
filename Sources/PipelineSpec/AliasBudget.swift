import CYaml

/// Measures how big a YAML document becomes once its aliases are expanded, from libyaml's event
/// stream and before anything is built.
///
/// Why before: Yams composes an alias as the anchored node itself (cheap), but then hashes every
/// mapping key to find duplicates, and pipectl walks the whole tree; both expand aliases. A
/// 392-byte "billion laughs" spec (aliases of aliases, depth 7) grew past 850 MB. Like go-yaml
/// and SnakeYAML, pipectl bounds the number of aliases and the expanded size, and stops at the
/// alias that crosses the line. This is the one place pipectl talks to libyaml directly.
public enum AliasBudget {
    /// The bounds. A real spec, even one with 1,600 columns, stays far below them.
    public struct Limits: Sendable {
        /// Alias uses (`*name`) in one document.
        public var aliases = 100
        /// Nodes (scalars, lists, mappings) once every alias is expanded.
        public var nodes = 200_000
        /// Bytes of scalar text once every alias is expanded.
        public var scalarBytes = 16 << 20

        /// The defaults: 100 aliases, 200,000 nodes, 16 MiB of scalar text.
        public init() {}
    }

    /// Why a document is refused, and the 1-based line and column of the alias at fault.
    public struct Violation: Error, Sendable, Equatable {
        /// The sentence shown after `error: `, naming the limit crossed and the alias.
        public var message: String
        /// 1-based line of the alias (libyaml's 0-based mark plus one).
        public var line: Int
        /// 1-based column of the alias.
        public var column: Int
    }

    /// The first violation in `text`, or nil. Syntax errors are left to the real parser.
    public static func check(_ text: String, limits: Limits = Limits()) -> Violation? {
        var bytes = Array(text.utf8)
        return bytes.withUnsafeMutableBufferPointer { buffer -> Violation? in
            var parser = yaml_parser_t()
            guard yaml_parser_initialize(&parser) == 1 else { return nil }
            defer { yaml_parser_delete(&parser) }
            yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING)
            yaml_parser_set_input_string(&parser, buffer.baseAddress, buffer.count)

            // Expanded size of each anchored node, and of each collection still open.
            var anchored: [String: (nodes: Int, bytes: Int)] = [:]
            var open: [(anchor: String?, nodes: Int, bytes: Int)] = []
            var total = (nodes: 0, bytes: 0)
            var aliases = 0
            // Sizes are capped so that sums of huge expansions cannot overflow.
            let cap = 1 << 50
            func add(_ size: (nodes: Int, bytes: Int)) {
                total = (min(total.nodes + size.nodes, cap), min(total.bytes + size.bytes, cap))
                if !open.isEmpty {
                    open[open.count - 1].nodes = min(open[open.count - 1].nodes + size.nodes, cap)
                    open[open.count - 1].bytes = min(open[open.count - 1].bytes + size.bytes, cap)
                }
            }
            func name(_ pointer: UnsafeMutablePointer<yaml_char_t>?) -> String? {
                pointer.map { String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self)) }
            }

            while true {
                var event = yaml_event_t()
                guard yaml_parser_parse(&parser, &event) == 1 else { return nil }
                defer { yaml_event_delete(&event) }
                let mark = event.start_mark
                func violation(_ message: String) -> Violation {
                    Violation(message: message, line: Int(mark.line) + 1, column: Int(mark.column) + 1)
                }
                switch event.type {
                case YAML_STREAM_END_EVENT:
                    return nil
                case YAML_DOCUMENT_START_EVENT:
                    // Each document has its own anchors; the budget covers the whole file.
                    anchored.removeAll()
                case YAML_SCALAR_EVENT:
                    let size = (nodes: 1, bytes: Int(event.data.scalar.length))
                    if let anchor = name(event.data.scalar.anchor) { anchored[anchor] = size }
                    add(size)
                case YAML_SEQUENCE_START_EVENT:
                    open.append((name(event.data.sequence_start.anchor), 1, 0))
                    total.nodes += 1
                case YAML_MAPPING_START_EVENT:
                    open.append((name(event.data.mapping_start.anchor), 1, 0))
                    total.nodes += 1
                case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
                    guard let done = open.popLast() else { continue }
                    if let anchor = done.anchor { anchored[anchor] = (done.nodes, done.bytes) }
                    // The collection's own node was counted in `total` when it opened.
                    if !open.isEmpty {
                        open[open.count - 1].nodes = min(open[open.count - 1].nodes + done.nodes, cap)
                        open[open.count - 1].bytes = min(open[open.count - 1].bytes + done.bytes, cap)
                    }
                case YAML_ALIAS_EVENT:
                    aliases += 1
                    let anchor = name(event.data.alias.anchor) ?? ""
                    if aliases > limits.aliases {
                        return violation("more than \(limits.aliases) YAML aliases; write the values out instead")
                    }
                    // An unknown anchor is the parser's error to report; count it as one node.
                    add(anchored[anchor] ?? (1, 0))
                    if total.nodes > limits.nodes {
                        return violation(
                            "alias '*\(Excerpt.quoted(anchor))' expands the document past \(limits.nodes) nodes (nested aliases, a \"billion laughs\" bomb?); write the values out instead"
                        )
                    }
                    if total.bytes > limits.scalarBytes {
                        return violation(
                            "alias '*\(Excerpt.quoted(anchor))' expands the document past \(limits.scalarBytes >> 20) MiB of text; write the values out instead"
                        )
                    }
                default:
                    break
                }
            }
        }
    }
}
