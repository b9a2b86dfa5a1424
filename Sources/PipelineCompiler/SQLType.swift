import Foundation
import PipelineSpec

/// A PostgreSQL column type that pipectl knows how to check, cast and generate code for.
public enum SQLType: Hashable, Sendable, CustomStringConvertible {
    case smallint, integer, bigint
    /// Auto-numbered columns: filled by PostgreSQL, never by a record.
    case serial, bigserial
    case real, doublePrecision
    /// `numeric(p,s)`, `numeric(p)` or plain `numeric`.
    case numeric(precision: Int?, scale: Int?)
    case boolean
    case text
    case varchar(Int?)
    case date, timestamp, timestamptz
    case json, jsonb

    /// The SQL spelling used in DDL.
    public var description: String {
        switch self {
        case .smallint: return "smallint"
        case .integer: return "integer"
        case .bigint: return "bigint"
        case .serial: return "serial"
        case .bigserial: return "bigserial"
        case .real: return "real"
        case .doublePrecision: return "double precision"
        case .numeric(let p?, let s?): return "numeric(\(p),\(s))"
        case .numeric(let p?, nil): return "numeric(\(p))"
        case .numeric: return "numeric"
        case .boolean: return "boolean"
        case .text: return "text"
        case .varchar(let n?): return "varchar(\(n))"
        case .varchar: return "varchar"
        case .date: return "date"
        case .timestamp: return "timestamp"
        case .timestamptz: return "timestamptz"
        case .json: return "json"
        case .jsonb: return "jsonb"
        }
    }

    /// The family a type belongs to, for cast rules.
    public enum Family: Sendable { case integer, float, decimal, boolean, text, date, timestamp, json }

    /// The type's family: `integer` (with the serials), `float`, `decimal` (numeric), `boolean`,
    /// `text` (with varchar), `date`, `timestamp` (with timestamptz) or `json` (with jsonb).
    public var family: Family {
        switch self {
        case .smallint, .integer, .bigint, .serial, .bigserial: return .integer
        case .real, .doublePrecision: return .float
        case .numeric: return .decimal
        case .boolean: return .boolean
        case .text, .varchar: return .text
        case .date: return .date
        case .timestamp, .timestamptz: return .timestamp
        case .json, .jsonb: return .json
        }
    }

    /// Filled in by the database (`serial`), so records never carry it.
    public var isGenerated: Bool { self == .serial || self == .bigserial }

    /// The name PostgreSQL reports in `information_schema.columns.data_type`, for live diffs.
    public var informationSchemaName: String {
        switch self {
        case .smallint: return "smallint"
        case .integer, .serial: return "integer"
        case .bigint, .bigserial: return "bigint"
        case .real: return "real"
        case .doublePrecision: return "double precision"
        case .numeric: return "numeric"
        case .boolean: return "boolean"
        case .text: return "text"
        case .varchar: return "character varying"
        case .date: return "date"
        case .timestamp: return "timestamp without time zone"
        case .timestamptz: return "timestamp with time zone"
        case .json: return "json"
        case .jsonb: return "jsonb"
        }
    }

    static let names: [String: SQLType] = [
        "smallint": .smallint, "int2": .smallint,
        "integer": .integer, "int": .integer, "int4": .integer,
        "bigint": .bigint, "int8": .bigint,
        "serial": .serial, "serial4": .serial, "bigserial": .bigserial, "serial8": .bigserial,
        "real": .real, "float4": .real,
        "double precision": .doublePrecision, "double": .doublePrecision, "float": .doublePrecision, "float8": .doublePrecision,
        "numeric": .numeric(precision: nil, scale: nil), "decimal": .numeric(precision: nil, scale: nil),
        "boolean": .boolean, "bool": .boolean,
        "text": .text,
        "varchar": .varchar(nil), "character varying": .varchar(nil),
        "date": .date,
        "timestamp": .timestamp, "timestamp without time zone": .timestamp,
        "timestamptz": .timestamptz, "timestamp with time zone": .timestamptz,
        "json": .json, "jsonb": .jsonb,
    ]

    /// Type names offered in `did you mean` hints.
    public static var knownNames: [String] { names.keys.sorted() }

    /// Parses `numeric(10,2)`, `varchar(80)`, `double precision`, `INT`, ...
    /// Returns the reason as text when it is not a type pipectl knows.
    public static func parse(_ raw: String) -> Result<SQLType, TypeError> {
        let text = raw.trimmingCharacters(in: .whitespaces).lowercased()
            .split(whereSeparator: { $0 == " " || $0 == "\t" }).joined(separator: " ")
        if let plain = names[text] { return .success(plain) }
        if let open = text.firstIndex(of: "("), text.hasSuffix(")") {
            let base = text[..<open].trimmingCharacters(in: .whitespaces)
            let args = text[text.index(after: open)..<text.index(before: text.endIndex)]
                .split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard !args.isEmpty, args.allSatisfy({ $0 != nil }) else {
                return .failure(TypeError("malformed type '\(raw)': the arguments must be whole numbers"))
            }
            let numbers = args.map { $0! }
            switch (names[base], numbers.count) {
            case (.numeric?, 1), (.numeric?, 2):
                let p = numbers[0]
                let s = numbers.count == 2 ? numbers[1] : 0
                guard (1...1000).contains(p) else { return .failure(TypeError("numeric precision must be between 1 and 1000, found \(p)")) }
                guard (0...p).contains(s) else { return .failure(TypeError("numeric scale must be between 0 and the precision \(p), found \(s)")) }
                return .success(.numeric(precision: p, scale: numbers.count == 2 ? s : nil))
            case (.varchar?, 1):
                guard (1...10_485_760).contains(numbers[0]) else {
                    return .failure(TypeError("varchar length must be between 1 and 10485760, found \(numbers[0])"))
                }
                return .success(.varchar(numbers[0]))
            case (nil, _):
                return .failure(TypeError("unknown type '\(raw)'\(Suggest.hint(for: String(base), in: knownNames))"))
            default:
                return .failure(TypeError("type '\(base)' does not take arguments like '\(raw)'"))
            }
        }
        if let sqlName = otherLanguageNames[text] {
            return .failure(TypeError("unknown type '\(raw)' (did you mean '\(sqlName)'?)"))
        }
        return .failure(TypeError("unknown type '\(raw)'\(Suggest.hint(for: text, in: knownNames))"))
    }

    /// Type names people bring from other languages; edit distance alone would offer
    /// `serial` for `string`.
    static let otherLanguageNames: [String: String] = [
        "string": "text", "str": "text", "datetime": "timestamp", "long": "bigint", "int64": "bigint",
        "int32": "integer", "int16": "smallint", "number": "numeric", "object": "jsonb", "dict": "jsonb",
    ]

    /// A type `SQLType.parse` refuses: an unknown name (with the nearest known one suggested) or
    /// arguments out of PostgreSQL's ranges (numeric precision 1 to 1000, scale 0 to the
    /// precision, varchar length 1 to 10485760).
    public struct TypeError: Error, Sendable, Equatable {
        /// One sentence for the terminal, e.g. `unknown type 'flaot' (did you mean 'float'?)`; the
        /// compiler reports it at the `type:` field.
        public var message: String
        init(_ message: String) { self.message = message }
    }
}

/// Whether a value of one type can become another.
public enum Castability: Sendable, Equatable {
    /// Always succeeds (`integer` -> `bigint`, anything -> `text`).
    case implicit
    /// Allowed, checked per value at run time; failures go to the dead-letter table
    /// (`text` -> `integer`, `bigint` -> `smallint`).
    case checked
    /// Refused at compile time, with the reason (`jsonb` -> `date`).
    case refused(String)

    /// How a value of type `from` becomes type `to`, by family: equal types and widenings (smaller
    /// integer to larger, exact integer to float, date to timestamp, anything to text, json to json)
    /// are `.implicit`; from text, narrowing and numeric conversions are `.checked`; the rest (e.g.
    /// `date` -> `integer`, `jsonb` -> `date`) are `.refused` with the reason.
    public static func of(_ from: SQLType, to: SQLType) -> Castability {
        if from == to { return .implicit }
        switch (from.family, to.family) {
        case (_, .text):
            if case .varchar(let n?) = to, from.family == .text, case .varchar(let m?) = from, m <= n { return .implicit }
            if case .varchar(_?) = to { return .checked }  // may be too long
            return .implicit
        case (.text, _): return .checked
        case (.integer, .integer): return rank(to) >= rank(from) ? .implicit : .checked
        case (.integer, .float), (.integer, .decimal): return isExactWidening(from, to) ? .implicit : .checked
        case (.float, .float): return to == .doublePrecision ? .implicit : .checked
        case (.float, .integer), (.decimal, .integer), (.float, .decimal), (.decimal, .float), (.decimal, .decimal):
            return .checked
        case (.integer, .boolean), (.boolean, .integer): return .checked
        case (.date, .timestamp): return .implicit
        case (.timestamp, .date), (.timestamp, .timestamp): return .checked
        case (.json, .json): return .implicit
        case (.json, .integer), (.json, .float), (.json, .decimal), (.json, .boolean): return .checked
        case (_, .json): return .checked
        default:
            return .refused("cannot cast \(from) to \(to)")
        }
    }

    private static func rank(_ t: SQLType) -> Int {
        switch t {
        case .smallint: return 1
        case .integer, .serial: return 2
        default: return 3
        }
    }

    private static func isExactWidening(_ from: SQLType, _ to: SQLType) -> Bool {
        switch (from, to) {
        case (_, .numeric(nil, _)): return true
        case (.smallint, .doublePrecision), (.integer, .doublePrecision), (.serial, .doublePrecision): return true
        case (.smallint, .real): return true
        default: return false
        }
    }
}
