import CLibPQ
import Foundation

/// A PostgreSQL error with the fields pipectl acts on.
public struct PostgresError: Error, Sendable, CustomStringConvertible {
    public var message: String
    /// SQLSTATE, e.g. `23505` (unique violation), `23502` (not null violation).
    public var sqlState: String?
    /// The constraint at fault, for constraint violations.
    public var constraint: String?
    public var detail: String?
    /// The connection is gone (server stopped, network); the work can be retried on a new one.
    public var connectionLost: Bool

    public init(_ message: String, sqlState: String? = nil, constraint: String? = nil, detail: String? = nil, connectionLost: Bool = false) {
        self.message = message
        self.sqlState = sqlState
        self.constraint = constraint
        self.detail = detail
        self.connectionLost = connectionLost
    }

    public var description: String {
        var text = message
        if let detail, !detail.isEmpty { text += " (\(detail))" }
        return text
    }

    /// Class 23: the data broke a constraint; other rows of the batch may be fine.
    public var isConstraintViolation: Bool { sqlState?.hasPrefix("23") == true }
    /// Class 22: the data itself is bad (value out of range, invalid text).
    public var isDataException: Bool { sqlState?.hasPrefix("22") == true }
}

/// Connection strings with their passwords masked, for anything printed or logged.
public enum ConnectionString {
    /// What is shown in place of a secret.
    public static let mask = "***"

    /// `postgresql://user:secret@host/db` -> `postgresql://user:***@host/db`;
    /// `password = 's3cret tail' host=x` -> `host=x password=***` (libpq's option order).
    ///
    /// Key=value strings are parsed by libpq itself (`PQconninfoParse`) and rebuilt, so quoting,
    /// spaces around `=` and backslash escapes cannot hide part of a password from the mask;
    /// every option libpq marks as secret (`password`, `sslpassword`) is masked. A string libpq
    /// cannot parse is not shown at all: its error text could quote the password.
    public static func redacted(_ conninfo: String) -> String {
        if isURL(conninfo) { return redactedURL(conninfo) }
        guard let options = parse(conninfo) else { return "(unreadable connection string, not shown)" }
        return options.map { option in
            "\(option.keyword)=\(option.secret ? mask : quoted(option.value))"
        }.joined(separator: " ")
    }

    /// libpq reads a URL when the string starts with one of these schemes.
    static func isURL(_ text: String) -> Bool {
        let t = text.drop { $0 == " " || $0 == "\t" }
        return t.hasPrefix("postgresql://") || t.hasPrefix("postgres://")
    }

    /// The options libpq reads from a key=value string, in libpq's order, only those given;
    /// nil when libpq refuses the string.
    static func parse(_ conninfo: String) -> [(keyword: String, value: String, secret: Bool)]? {
        var error: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(conninfo, &error) else {
            if let error { PQfreemem(error) }
            return nil
        }
        defer { PQconninfoFree(options) }
        var out: [(String, String, Bool)] = []
        var option = options
        while let keyword = option.pointee.keyword {
            if let value = option.pointee.val {
                // dispchar "*": libpq's own mark for options whose value must be hidden.
                let secret = option.pointee.dispchar.map { String(cString: $0) == "*" } ?? false
                out.append((String(cString: keyword), String(cString: value), secret))
            }
            option += 1
        }
        return out
    }

    /// A value as libpq reads it back: single-quoted (with `\\` and `\'`) when it is empty or
    /// holds a space, a quote or a backslash.
    static func quoted(_ value: String) -> String {
        guard value.isEmpty || value.contains(where: { $0 == " " || $0 == "'" || $0 == "\\" || $0.isWhitespace }) else { return value }
        return "'" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
    }

    /// URLs: the password in the user info and any `password=` / `sslpassword=` parameter.
    /// Percent-encoding keeps spaces and `&` out of URL values, so text matching is exact here.
    static func redactedURL(_ url: String) -> String {
        var text = url
        if let scheme = text.range(of: "://") {
            let rest = text[scheme.upperBound...]
            // The user info ends at the first '@' before the host's '/', '?' (as libpq reads it).
            let end = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
            if let at = rest[..<end].lastIndex(of: "@"), let colon = rest[..<at].firstIndex(of: ":") {
                text.replaceSubrange(text.index(after: colon)..<at, with: mask)
            }
        }
        if let regex = try? NSRegularExpression(pattern: "([?&](?:ssl)?password=)[^&#]*", options: [.caseInsensitive]) {
            text = regex.stringByReplacingMatches(in: text, range: NSRange(text.startIndex..., in: text), withTemplate: "$1\(mask)")
        }
        return text
    }
}

/// The libpq actually loaded.
public enum PostgresLibrary {
    /// `PQlibVersion()` as `15.18` (major * 10000 + minor since PostgreSQL 10).
    public static var version: String {
        let v = Int(PQlibVersion())
        return v >= 100_000 ? "\(v / 10000).\(v % 10000)" : "\(v / 10000).\(v / 100 % 100).\(v % 100)"
    }
}

/// One libpq connection. Not thread-safe: one owner at a time.
public final class PostgresConnection: @unchecked Sendable {
    let conn: OpaquePointer
    public let url: String

    public init(url: String, applicationName: String = "pipectl") throws {
        self.url = url
        // libpq's parse errors quote the text around the mistake, which may be the password.
        if !ConnectionString.isURL(url), ConnectionString.parse(url) == nil {
            throw PostgresError("cannot read the PostgreSQL connection string: it is neither a postgresql:// URL nor valid key=value pairs (not shown: it may hold a password)")
        }
        let keys = ["dbname", "application_name", "connect_timeout"]
        let values = [url, applicationName, "10"]
        // expand_dbname=1: the dbname value may be a full URL or key=value string.
        let c: OpaquePointer? = keys.withCStrings { k in values.withCStrings { v in PQconnectdbParams(k, v, 1) } }
        guard let c else { throw PostgresError("cannot allocate a PostgreSQL connection", connectionLost: true) }
        if PQstatus(c) != CONNECTION_OK {
            // libpq's text spans lines ("Is the server running ..."); errors are one line here.
            let message = String(cString: PQerrorMessage(c)).split(whereSeparator: \.isNewline)
                .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }.joined(separator: "; ")
            PQfinish(c)
            throw PostgresError("cannot connect to PostgreSQL at \(ConnectionString.redacted(url)): \(message)", connectionLost: true)
        }
        conn = c
        try execute("SET TimeZone = 'UTC'")
        try execute("SET client_min_messages = warning")
    }

    deinit { PQfinish(conn) }

    public var isConnected: Bool { PQstatus(conn) == CONNECTION_OK }

    public var serverVersion: Int { Int(PQserverVersion(conn)) }

    func error(from result: OpaquePointer?, fallback: String) -> PostgresError {
        func field(_ code: UInt8) -> String? {
            guard let result, let p = PQresultErrorField(result, Int32(code)) else { return nil }
            return String(cString: p)
        }
        let message = field(UInt8(ascii: "M")) ?? String(cString: PQerrorMessage(conn)).trimmingCharacters(in: .whitespacesAndNewlines)
        return PostgresError(
            message.isEmpty ? fallback : message,
            sqlState: field(UInt8(ascii: "C")), constraint: field(UInt8(ascii: "n")), detail: field(UInt8(ascii: "D")),
            connectionLost: PQstatus(conn) != CONNECTION_OK)
    }

    /// Runs statements without parameters (several may be separated by `;`).
    public func execute(_ sql: String) throws {
        let result = PQexec(conn, sql)
        defer { PQclear(result) }
        let status = PQresultStatus(result)
        guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK || status == PGRES_EMPTY_QUERY else {
            throw error(from: result, fallback: "statement failed")
        }
    }

    /// Runs one statement with text parameters; returns the rows as text (nil for NULL).
    @discardableResult
    public func query(_ sql: String, _ parameters: [String?] = []) throws -> [[String?]] {
        let result: OpaquePointer? = parameters.withOptionalCStrings { values in
            PQexecParams(conn, sql, Int32(parameters.count), nil, values, nil, nil, 0)
        }
        defer { PQclear(result) }
        let status = PQresultStatus(result)
        guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK else {
            throw error(from: result, fallback: "query failed")
        }
        let rows = Int(PQntuples(result)), columns = Int(PQnfields(result))
        var out: [[String?]] = []
        out.reserveCapacity(rows)
        for r in 0..<rows {
            var row: [String?] = []
            for c in 0..<columns {
                row.append(PQgetisnull(result, Int32(r), Int32(c)) == 1 ? nil : String(cString: PQgetvalue(result, Int32(r), Int32(c))))
            }
            out.append(row)
        }
        return out
    }

    /// Sends `data` (COPY text format) through `COPY ... FROM STDIN`; returns rows copied.
    @discardableResult
    public func copyIn(_ sql: String, data: UnsafeRawBufferPointer) throws -> Int {
        let start = PQexec(conn, sql)
        let status = PQresultStatus(start)
        if status != PGRES_COPY_IN {
            defer { PQclear(start) }
            throw error(from: start, fallback: "COPY did not start")
        }
        PQclear(start)
        var offset = 0
        let chunk = 1 << 20
        var sendFailed = false
        while offset < data.count {
            let n = min(chunk, data.count - offset)
            let rc = PQputCopyData(conn, data.baseAddress!.advanced(by: offset).assumingMemoryBound(to: CChar.self), Int32(n))
            if rc != 1 { sendFailed = true; break }
            offset += n
        }
        _ = PQputCopyEnd(conn, sendFailed ? "pipectl could not send the data" : nil)
        var firstError: PostgresError?
        var rows = 0
        while let result = PQgetResult(conn) {
            if PQresultStatus(result) != PGRES_COMMAND_OK, firstError == nil {
                firstError = error(from: result, fallback: "COPY failed")
            } else if let tuples = PQcmdTuples(result), let n = Int(String(cString: tuples)) {
                rows = n
            }
            PQclear(result)
        }
        if let firstError { throw firstError }
        if sendFailed || PQstatus(conn) != CONNECTION_OK {
            throw PostgresError("connection lost during COPY: \(String(cString: PQerrorMessage(conn)))", connectionLost: true)
        }
        return rows
    }
}

extension Array where Element == String {
    func withCStrings<R>(_ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
        let copies = map { strdup($0) }
        defer { copies.forEach { free($0) } }
        let pointers: [UnsafePointer<CChar>?] = copies.map { UnsafePointer($0) } + [nil]
        return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
    }
}

extension Array where Element == String? {
    func withOptionalCStrings<R>(_ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
        let copies = map { $0.map { strdup($0) } }
        defer { copies.forEach { $0.map { free($0) } } }
        let pointers: [UnsafePointer<CChar>?] = copies.map { $0.map { UnsafePointer($0) } ?? nil }
        return pointers.withUnsafeBufferPointer { body($0.baseAddress) }
    }
}
