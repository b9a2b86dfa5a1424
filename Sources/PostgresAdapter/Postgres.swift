import CLibPQ
import Foundation

/// A PostgreSQL error with the fields pipectl acts on.
///
/// Callers switch on `code` (built once, from the SQLSTATE the server sent, `PG_DIAG_SQLSTATE`,
/// or from the connection's state), never on the message text. `PostgresError("text")` is an
/// error of pipectl's own (code `.other(nil)`): its message is the whole story.
public struct PostgresError: Error, Sendable, CustomStringConvertible {
    /// What went wrong, in the terms pipectl acts on. SQLSTATE classes and codes are
    /// PostgreSQL's (Appendix A, "PostgreSQL Error Codes").
    public enum Code: Sendable, Hashable {
        /// The connection is gone (server stopped, network) or could not be made: libpq's
        /// status is no longer `CONNECTION_OK`, or SQLSTATE class 08. The work can be retried
        /// on a new connection.
        case connectionFailure
        /// 23505: a unique index refused a key (e.g. a record id already loaded).
        case uniqueViolation
        /// 23502: NULL in a NOT NULL column.
        case notNullViolation
        /// 23503: a foreign key has no matching row.
        case foreignKeyViolation
        /// 23514: a CHECK constraint refused the row.
        case checkViolation
        /// Another code of class 23 (integrity constraint violation), e.g. 23P01.
        case otherConstraintViolation(String)
        /// Class 22: the data itself is bad (value out of range, invalid text); the SQLSTATE.
        case dataException(String)
        /// 42P01: the table does not exist.
        case undefinedTable
        /// 42703: the column does not exist.
        case undefinedColumn
        /// 57014: `statement_timeout` or a cancel request ended the statement.
        case queryCanceled
        /// 25P03: `idle_in_transaction_session_timeout` ended the session.
        case idleInTransactionTimeout
        /// 55P03: a lock was not granted within `lock_timeout` (or NOWAIT).
        case lockNotAvailable
        /// 40P01: the server broke a deadlock by ending this statement; trying again can succeed.
        case deadlockDetected
        /// Any other SQLSTATE, or nil for an error pipectl raised itself.
        case other(String?)

        /// The code for a SQLSTATE (`23505`, `08006`, …); `connectionLost` wins over it.
        public init(sqlState: String?, connectionLost: Bool = false) {
            if connectionLost {
                self = .connectionFailure
                return
            }
            guard let sqlState else {
                self = .other(nil)
                return
            }
            switch sqlState {
            case "23505": self = .uniqueViolation
            case "23502": self = .notNullViolation
            case "23503": self = .foreignKeyViolation
            case "23514": self = .checkViolation
            case "42P01": self = .undefinedTable
            case "42703": self = .undefinedColumn
            case "57014": self = .queryCanceled
            case "25P03": self = .idleInTransactionTimeout
            case "55P03": self = .lockNotAvailable
            case "40P01": self = .deadlockDetected
            // Class 08, and the server ending the session: admin_shutdown (57P01, `pg_ctl stop
            // -m fast`), crash_shutdown (57P02), cannot_connect_now (57P03, starting up).
            case _ where sqlState.hasPrefix("08"), "57P01", "57P02", "57P03": self = .connectionFailure
            case _ where sqlState.hasPrefix("23"): self = .otherConstraintViolation(sqlState)
            case _ where sqlState.hasPrefix("22"): self = .dataException(sqlState)
            default: self = .other(sqlState)
            }
        }

        /// Class 23: the data broke a constraint; other rows of the batch may be fine.
        public var isConstraintViolation: Bool {
            switch self {
            case .uniqueViolation, .notNullViolation, .foreignKeyViolation, .checkViolation, .otherConstraintViolation: true
            default: false
            }
        }

        /// Class 22: the data itself is bad.
        public var isDataException: Bool {
            if case .dataException = self { return true }
            return false
        }
    }

    /// The text the server (`PG_DIAG_MESSAGE_PRIMARY`) or pipectl wrote.
    public var message: String
    /// SQLSTATE as the server sent it, e.g. `23505`; nil for pipectl's own errors.
    public let sqlState: String?
    /// What kind of failure this is, from `sqlState` and the connection's state.
    public let code: Code
    /// The constraint at fault, for constraint violations.
    public var constraint: String?
    /// The server's DETAIL line (`PG_DIAG_MESSAGE_DETAIL`), e.g. `Key (id)=(7) already exists.`;
    /// nil when the server sent none or the error is pipectl's own.
    public var detail: String?

    /// - Parameters:
    ///   - message: the text shown (tests and users match on it).
    ///   - connectionLost: the connection is gone; makes `code` `.connectionFailure`.
    public init(_ message: String, sqlState: String? = nil, constraint: String? = nil, detail: String? = nil, connectionLost: Bool = false) {
        self.message = message
        self.sqlState = sqlState
        self.code = Code(sqlState: sqlState, connectionLost: connectionLost)
        self.constraint = constraint
        self.detail = detail
    }

    /// `message`, followed by ` (detail)` when there is a detail.
    public var description: String {
        var text = message
        if let detail, !detail.isEmpty { text += " (\(detail))" }
        return text
    }

    /// The connection is gone (server stopped, network); the work can be retried on a new one.
    public var connectionLost: Bool { code == .connectionFailure }
    /// Class 23: the data broke a constraint; other rows of the batch may be fine.
    public var isConstraintViolation: Bool { code.isConstraintViolation }
    /// Class 22: the data itself is bad (value out of range, invalid text).
    public var isDataException: Bool { code.isDataException }
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
// @unchecked: libpq connections may move between threads but not be shared; every owner
// (sink, store, registry) uses its connection from one thread at a time.
/// One libpq connection, used by one thread at a time; every session is set to
/// `TimeZone = 'UTC'` and `client_min_messages = warning` on connect.
public final class PostgresConnection: @unchecked Sendable {
    let conn: OpaquePointer
    /// The connection string as given (a `postgresql://` URL or libpq `key=value` pairs), password
    /// included: print `ConnectionString.redacted(url)` instead.
    public let url: String

    /// Connects with libpq (`PQconnectdbParams`, expanding `url` as the dbname; connect timeout 10 s).
    /// - Parameter applicationName: shown in `pg_stat_activity.application_name`.
    /// - Throws: `PostgresError` when `url` is neither a URL nor `key=value` pairs (the text is not
    /// quoted: it may hold a password), or, with `connectionLost` set, when the server cannot be
    /// reached or refuses the login.
    public init(url: String, applicationName: String = "pipectl") throws {
        self.url = url
        // libpq's parse errors quote the text around the mistake, which may be the password.
        if !ConnectionString.isURL(url), ConnectionString.parse(url) == nil {
            throw PostgresError(
                "cannot read the PostgreSQL connection string: it is neither a postgresql:// URL nor valid key=value pairs (not shown: it may hold a password)")
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

    /// Whether libpq still reports the connection as open (`PQstatus` is `CONNECTION_OK`); it turns
    /// false only once a call found the connection broken.
    public var isConnected: Bool { PQstatus(conn) == CONNECTION_OK }

    /// The server's version as libpq reports it (`PQserverVersion`): major * 10000 + minor since
    /// PostgreSQL 10, e.g. `160004` for 16.4.
    public var serverVersion: Int { Int(PQserverVersion(conn)) }

    func error(from result: OpaquePointer?, fallback: String) -> PostgresError {
        func field(_ code: UInt8) -> String? {
            guard let result, let p = PQresultErrorField(result, Int32(code)) else { return nil }
            return String(cString: p)
        }
        let message = field(UInt8(ascii: "M")) ?? String(cString: PQerrorMessage(conn)).trimmingCharacters(in: .whitespacesAndNewlines)
        let sqlState = field(UInt8(ascii: "C"))
        // libpq reports a broken connection in two ways: the status turns CONNECTION_BAD, or,
        // when sending failed (the server was gone: EPIPE), an error without a SQLSTATE while
        // the status still reads OK until the next read. Every error the server sends carries a
        // SQLSTATE, so one without is the client's: treated as a lost connection (reconnecting
        // is also the cure for a connection libpq left in an unusable state).
        return PostgresError(
            message.isEmpty ? fallback : message,
            sqlState: sqlState, constraint: field(UInt8(ascii: "n")), detail: field(UInt8(ascii: "D")),
            connectionLost: PQstatus(conn) != CONNECTION_OK || sqlState == nil)
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
        let rows = Int(PQntuples(result))
        let columns = Int(PQnfields(result))
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

    /// Runs `body` in one transaction: `BEGIN`, the body, `COMMIT`; when the body (or COMMIT)
    /// throws, `ROLLBACK` on a connection that is still there, and the error is rethrown
    /// unchanged. Statements the transaction needs first (`SET LOCAL …`, a lock) go at the
    /// start of `body`.
    ///
    ///     try conn.withTransaction {
    ///         try conn.execute("SET LOCAL synchronous_commit = on")
    ///         try conn.query("DELETE FROM ...")
    ///     }
    ///
    /// - Parameter commitFailed: turns a failed `COMMIT` into the error thrown, given what the
    ///   body returned (when the connection broke during COMMIT the server may or may not have
    ///   committed: the caller may need the body's result to find out). By default the
    ///   `PostgresError` itself.
    /// - Throws: the body's error, `commitFailed`'s, or `PostgresError` from BEGIN.
    public func withTransaction<T>(
        _ body: () throws -> T,
        commitFailed: (T, PostgresError) -> any Error = { $1 }
    ) throws -> T {
        try execute("BEGIN")
        do {
            let value = try body()
            do {
                try execute("COMMIT")
            } catch let error as PostgresError {
                throw commitFailed(value, error)
            }
            return value
        } catch {
            if isConnected { try? execute("ROLLBACK") }
            throw error
        }
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
            if rc != 1 {
                sendFailed = true
                break
            }
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
