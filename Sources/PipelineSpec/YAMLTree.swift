import Foundation
import Yams

/// A value with the place in a spec file it came from.
public struct Located<Value: Sendable>: Sendable {
    /// The value as the spec holds it (after `${VAR}` interpolation for strings).
    public var value: Value
    /// Where the value starts: the key's or scalar's `file:line:col`.
    public var location: SourceLocation

    /// Memberwise.
    public init(_ value: Value, at location: SourceLocation) {
        self.value = value
        self.location = location
    }
}

extension Located: Equatable where Value: Equatable {}
extension Located: Hashable where Value: Hashable {}

/// The YAML document as a plain tree whose every node keeps its `file:line:col`.
/// Scalars are already environment-interpolated (`${VAR}`, `${VAR:-default}`).
public indirect enum YAMLTree: Sendable {
    case scalar(String, isPlainNull: Bool, SourceLocation)
    case mapping([(key: Located<String>, value: YAMLTree)], SourceLocation)
    case sequence([YAMLTree], SourceLocation)

    /// Where the node starts in its file (1-based line and column).
    public var location: SourceLocation {
        switch self {
        case .scalar(_, _, let l), .mapping(_, let l), .sequence(_, let l): return l
        }
    }

    var kindName: String {
        switch self {
        case .scalar(_, true, _): return "null"
        case .scalar: return "a scalar"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        }
    }

    /// Reads `text` (the contents of `file`) into a tree, or the diagnostics for why it cannot.
    public static func parse(
        _ text: String, file: String, environment: [String: String], diagnostics: inout DiagnosticBag
    ) -> YAMLTree? {
        // Before Yams builds anything: its duplicate-key check and this tree expand aliases.
        if let bomb = AliasBudget.check(text) {
            diagnostics.error(bomb.message, at: SourceLocation(file: file, line: bomb.line, column: bomb.column))
            return nil
        }
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            diagnostics.append(contentsOf: [yamlDiagnostic(error, file: file)])
            return nil
        } catch {
            diagnostics.error("cannot read YAML: \(error)", at: SourceLocation(file: file, line: 1, column: 1))
            return nil
        }
        guard let root else {
            diagnostics.error("the file is empty", at: SourceLocation(file: file, line: 1, column: 1))
            return nil
        }
        var converter = Converter(file: file, environment: environment)
        let tree = converter.convert(root)
        diagnostics.append(contentsOf: converter.diagnostics)
        return tree
    }

    static func yamlDiagnostic(_ error: YamlError, file: String) -> Diagnostic {
        func at(_ mark: Mark) -> SourceLocation {
            SourceLocation(file: file, line: max(mark.line, 1), column: max(mark.column, 1))
        }
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
            .composer(let context, let problem, let mark, _):
            let extra = context.map { " \($0.text)" } ?? ""
            return .error("YAML syntax error: \(problem)\(extra)", at: at(mark))
        case .duplicatedKeysInMapping(let duplicates, let context):
            let names = duplicates.sorted().map { "'\($0)'" }.joined(separator: ", ")
            return .error("duplicate key \(names) in a mapping", at: at(context.mark))
        case .reader(let problem, _, _, _):
            return .error("cannot read the file: \(problem)", at: SourceLocation(file: file, line: 1, column: 1))
        default:
            return .error("cannot read YAML: \(error)", at: SourceLocation(file: file, line: 1, column: 1))
        }
    }

    private struct Converter {
        let file: String
        let environment: [String: String]
        let limits = AliasBudget.Limits()
        var diagnostics: [Diagnostic] = []
        var nodes = 0
        var scalarBytes = 0
        /// Set once a limit is hit: conversion stops (the tree is incomplete, and an error says why).
        var exhausted = false

        init(file: String, environment: [String: String]) {
            self.file = file
            self.environment = environment
        }

        func location(_ mark: Mark?) -> SourceLocation {
            SourceLocation(file: file, line: mark?.line ?? 1, column: mark?.column ?? 1)
        }

        /// Counts `node` against the limits; false (with one diagnostic) once one is exceeded.
        /// `AliasBudget` has already refused documents that expand too far; this is the backstop
        /// should the two ever count differently.
        mutating func admit(_ node: Node) -> Bool {
            if exhausted { return false }
            nodes += 1
            if case .scalar(let scalar) = node { scalarBytes += scalar.string.utf8.count }
            guard nodes > limits.nodes || scalarBytes > limits.scalarBytes else { return true }
            exhausted = true
            diagnostics.append(
                .error(
                    "YAML aliases expand too far: more than \(limits.nodes) nodes or \(limits.scalarBytes >> 20) MiB of text; write the values out instead",
                    at: location(node.mark)))
            return false
        }

        mutating func convert(_ node: Node) -> YAMLTree {
            guard admit(node) else { return .scalar("", isPlainNull: true, location(node.mark)) }
            switch node {
            case .scalar(let scalar):
                let loc = location(scalar.mark)
                let isNull = scalar.style == .plain && ["", "~", "null", "Null", "NULL"].contains(scalar.string)
                do {
                    return .scalar(try Interpolation.expand(scalar.string, environment: environment), isPlainNull: isNull, loc)
                } catch let error as Interpolation.Failure {
                    diagnostics.append(.error(error.message, at: loc))
                    return .scalar(scalar.string, isPlainNull: false, loc)
                } catch {
                    return .scalar(scalar.string, isPlainNull: false, loc)
                }
            case .mapping(let mapping):
                var pairs: [(key: Located<String>, value: YAMLTree)] = []
                for (key, value) in mapping {
                    guard !exhausted else { break }
                    // A key that is a list or mapping has no text; a short description stands in.
                    pairs.append((Located(key.string ?? "<\(Self.kind(key))>", at: location(key.mark)), convert(value)))
                }
                return .mapping(pairs, location(mapping.mark))
            case .sequence(let sequence):
                var items: [YAMLTree] = []
                for item in sequence {
                    guard !exhausted else { break }
                    items.append(convert(item))
                }
                return .sequence(items, location(sequence.mark))
            case .alias(let alias):
                diagnostics.append(.error("YAML aliases are not supported in specs", at: location(alias.mark)))
                return .scalar("", isPlainNull: true, location(alias.mark))
            }
        }

        static func kind(_ node: Node) -> String {
            switch node {
            case .mapping: return "a mapping"
            case .sequence: return "a list"
            case .scalar, .alias: return "a scalar"
            }
        }
    }
}

/// `${VAR}` (required) and `${VAR:-default}` inside YAML scalars; `$${` is a literal `${`.
public enum Interpolation {
    /// A malformed `${...}` or an unset variable without a default; `message` says which and how to
    /// write it.
    public struct Failure: Error, Sendable { public var message: String }

    /// Replaces each `${NAME}` with the variable's value and each `${NAME:-default}` with the value,
    /// or `default` when it is unset or empty (the shell's rule); `$${` gives a literal `${`. `NAME`
    /// is a letter or `_`, then letters, digits or `_` (ASCII).
    /// - Throws: `Failure` for an unterminated `${`, an invalid name, or an unset `${NAME}`.
    public static func expand(_ text: String, environment: [String: String]) throws -> String {
        guard text.contains("$") else { return text }
        var out = ""
        var i = text.startIndex
        while i < text.endIndex {
            let c = text[i]
            if c == "$" {
                let next = text.index(after: i)
                if text[next...].hasPrefix("${") {  // `$${` escapes
                    out += "${"
                    i = text.index(next, offsetBy: 2)
                    continue
                }
                if next < text.endIndex, text[next] == "{" {
                    guard let close = text[next...].firstIndex(of: "}") else {
                        throw Failure(message: "unterminated '${' in '\(text)'; write '$${' for a literal '${'")
                    }
                    let body = String(text[text.index(after: next)..<close])
                    let name: String
                    let fallback: String?
                    if let range = body.range(of: ":-") {
                        name = String(body[..<range.lowerBound])
                        fallback = String(body[range.upperBound...])
                    } else {
                        name = body
                        fallback = nil
                    }
                    guard isVariableName(name) else {
                        throw Failure(message: "'${\(body)}' is not a valid environment reference; use ${NAME} or ${NAME:-default}")
                    }
                    if let value = environment[name], !(value.isEmpty && fallback != nil) {
                        out += value
                    } else if let fallback {
                        out += fallback
                    } else {
                        throw Failure(message: "environment variable '\(name)' is not set (write ${\(name):-default} to give a default)")
                    }
                    i = text.index(after: close)
                    continue
                }
            }
            out.append(c)
            i = text.index(after: i)
        }
        return out
    }

    static func isVariableName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first == "_" || (first.isASCII && first.properties.isAlphabetic) else { return false }
        return name.unicodeScalars.allSatisfy { $0 == "_" || ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) }
    }
}
