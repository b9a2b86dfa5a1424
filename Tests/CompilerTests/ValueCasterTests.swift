import PipelineCompiler
import RecordFormats
import XCTest

/// Per-value checks done in Swift before rows reach PostgreSQL: the canonical text a value
/// becomes, or the exact reason (which goes into the dead-letter table) it cannot.
final class ValueCasterTests: XCTestCase {
    /// The canonical (unescaped) text, or "error: reason".
    func cast(_ text: String, _ type: SQLType) -> String {
        switch ValueCaster.cast(text, to: type) {
        case .success(let value): return value
        case .failure(let error): return "error: " + error.message
        }
    }

    /// The bytes appended for COPY's text format, or "error: reason".
    func copyText(_ text: String, _ type: SQLType) -> String {
        var out: [UInt8] = Array("prefix|".utf8)
        var bytes = Array(text.utf8)
        let error = bytes.withUnsafeMutableBufferPointer { ValueCaster.append(UnsafeBufferPointer($0), as: type, to: &out) }
        if let error { return "error: \(error.message) (buffer: \(String(decoding: out, as: UTF8.self)))" }
        return String(decoding: out, as: UTF8.self)
    }

    func testIntegers() {
        XCTAssertEqual(cast("42", .integer), "42")
        XCTAssertEqual(cast(" -7 ", .integer), "-7")
        XCTAssertEqual(cast("+15", .smallint), "15")
        XCTAssertEqual(cast("296.0", .integer), "296")
        XCTAssertEqual(cast("296.00", .bigint), "296")
        XCTAssertEqual(cast("296.5", .integer), "error: '296.5' is not a valid integer")
        XCTAssertEqual(cast("12abc", .integer), "error: '12abc' is not a valid integer")
        XCTAssertEqual(cast("", .integer), "error: '' is not a valid integer")
        XCTAssertEqual(cast("-", .integer), "error: '-' is not a valid integer")
        XCTAssertEqual(cast("1e3", .integer), "error: '1e3' is not a valid integer")
    }

    func testIntegerRanges() {
        XCTAssertEqual(cast("32767", .smallint), "32767")
        XCTAssertEqual(cast("-32768", .smallint), "-32768")
        XCTAssertEqual(cast("32768", .smallint), "error: '32768' is out of range for smallint")
        XCTAssertEqual(cast("2147483647", .integer), "2147483647")
        XCTAssertEqual(cast("-2147483648", .integer), "-2147483648")
        XCTAssertEqual(cast("2147483648", .integer), "error: '2147483648' is out of range for integer")
        XCTAssertEqual(cast("2147483648", .serial), "error: '2147483648' is out of range for integer")
        XCTAssertEqual(cast("9223372036854775807", .bigint), "9223372036854775807")
        XCTAssertEqual(cast("-9223372036854775808", .bigint), "-9223372036854775808")
        XCTAssertEqual(cast("9223372036854775808", .bigint), "error: '9223372036854775808' is out of range for bigint")
        XCTAssertEqual(cast("-9223372036854775809", .bigint), "error: '-9223372036854775809' is out of range for bigint")
        XCTAssertEqual(cast("99999999999999999999999", .bigint), "error: '99999999999999999999999' is out of range for bigint")
    }

    func testFloats() {
        XCTAssertEqual(cast("0.00632", .doublePrecision), "0.00632")
        XCTAssertEqual(cast("396.9", .doublePrecision), "396.9")
        XCTAssertEqual(cast("-1.5e-3", .doublePrecision), "-1.5e-3")
        XCTAssertEqual(cast(".5", .real), ".5")
        XCTAssertEqual(cast("NaN", .doublePrecision), "NaN")
        XCTAssertEqual(cast("-Infinity", .doublePrecision), "-Infinity")
        XCTAssertEqual(cast("inf", .real), "inf")
        XCTAssertEqual(cast("1e308", .doublePrecision), "1e308")
        XCTAssertEqual(cast("1e400", .doublePrecision), "error: '1e400' is out of range for double precision")
        XCTAssertEqual(cast("1e-400", .doublePrecision), "error: '1e-400' is out of range for double precision")
        XCTAssertEqual(cast("1e39", .real), "error: '1e39' is out of range for real")
        XCTAssertEqual(cast("0e400", .doublePrecision), "0e400")
        XCTAssertEqual(cast("1.2.3", .doublePrecision), "error: '1.2.3' is not a valid double precision")
        XCTAssertEqual(cast("abc", .real), "error: 'abc' is not a valid real")
        XCTAssertEqual(cast("1e", .doublePrecision), "error: '1e' is not a valid double precision")
    }

    func testNumeric() {
        let money = SQLType.numeric(precision: 5, scale: 2)
        XCTAssertEqual(cast("999.99", money), "999.99")
        XCTAssertEqual(cast("-123.4", money), "-123.4")
        XCTAssertEqual(cast("0.001", money), "0.001")
        XCTAssertEqual(cast("1000", money), "error: '1000' does not fit numeric(5,2) (at most 3 digits before the point)")
        XCTAssertEqual(cast("1234.5", money), "error: '1234.5' does not fit numeric(5,2) (at most 3 digits before the point)")
        XCTAssertEqual(cast("1.5e3", money), "error: '1.5e3' does not fit numeric(5,2) (at most 3 digits before the point)")
        XCTAssertEqual(cast("NaN", money), "error: 'NaN' is not allowed in numeric(5,2)")
        XCTAssertEqual(cast("NaN", .numeric(precision: nil, scale: nil)), "NaN")
        XCTAssertEqual(cast("12345678901234567890.5", .numeric(precision: nil, scale: nil)), "12345678901234567890.5")
        XCTAssertEqual(cast("12,5", .numeric(precision: nil, scale: nil)), "error: '12,5' is not a valid numeric")
    }

    func testBooleans() {
        for word in ["true", "TRUE", "t", "yes", "y", "on", "1"] { XCTAssertEqual(cast(word, .boolean), "t", word) }
        for word in ["false", "F", "no", "n", "off", "0"] { XCTAssertEqual(cast(word, .boolean), "f", word) }
        XCTAssertEqual(cast("maybe", .boolean), "error: 'maybe' is not a valid boolean")
        XCTAssertEqual(cast("2", .boolean), "error: '2' is not a valid boolean")
    }

    func testDatesInEverySupportedFormat() {
        XCTAssertEqual(cast("2024-01-31", .date), "2024-01-31")
        XCTAssertEqual(cast("2024/01/31", .date), "2024-01-31")
        XCTAssertEqual(cast("01/31/2024", .date), "2024-01-31")  // US order
        XCTAssertEqual(cast("31.01.2024", .date), "2024-01-31")  // European order
        XCTAssertEqual(cast("2024-02-29", .date), "2024-02-29")  // leap year
        XCTAssertEqual(cast("2023-02-29", .date), "error: '2023-02-29' is not a valid date (expected YYYY-MM-DD)")
        XCTAssertEqual(cast("2024-02-30", .date), "error: '2024-02-30' is not a valid date (expected YYYY-MM-DD)")
        XCTAssertEqual(cast("1900-02-29", .date), "error: '1900-02-29' is not a valid date (expected YYYY-MM-DD)")
        XCTAssertEqual(cast("2000-02-29", .date), "2000-02-29")
        XCTAssertEqual(cast("2024-13-01", .date), "error: '2024-13-01' is not a valid date (expected YYYY-MM-DD)")
        XCTAssertEqual(cast("2024-1-31", .date), "error: '2024-1-31' is not a valid date (expected YYYY-MM-DD)")
        XCTAssertEqual(cast("2024-01-31 10:00", .date), "error: '2024-01-31 10:00' is not a valid date (expected YYYY-MM-DD)")
        XCTAssertEqual(cast("yesterday", .date), "error: 'yesterday' is not a valid date (expected YYYY-MM-DD)")
    }

    /// `date_order` decides which of 03/05/2011's first two numbers is the month; ISO and
    /// dotted dates read the same whatever the order.
    func testDateOrder() {
        func cast(_ text: String, _ type: SQLType, _ order: DateOrder) -> String {
            switch ValueCaster.cast(text, to: type, dateOrder: order) {
            case .success(let value): return value
            case .failure(let error): return "error: " + error.message
            }
        }
        XCTAssertEqual(cast("03/05/2011", .date, .mdy), "2011-03-05")
        XCTAssertEqual(cast("03/05/2011", .date, .dmy), "2011-05-03")
        XCTAssertEqual(cast("25/12/2011", .date, .dmy), "2011-12-25")
        XCTAssertEqual(cast("25/12/2011", .date, .mdy), "error: '25/12/2011' is not a valid date (expected YYYY-MM-DD)")
        XCTAssertEqual(cast("03/05/2011", .date, .ymd), "error: '03/05/2011' is not a valid date (expected YYYY-MM-DD)")
        XCTAssertEqual(cast("2011/05/03", .date, .ymd), "2011-05-03")
        XCTAssertEqual(cast("03.05.2011", .date, .mdy), "2011-05-03")
        // Variant: timestamps follow the same order.
        XCTAssertEqual(cast("03/05/2011 10:30", .timestamp, .dmy), "2011-05-03 10:30")
        XCTAssertEqual(cast("03/05/2011 10:30Z", .timestamptz, .dmy), "2011-05-03 10:30+00")
    }

    func testTimestamps() {
        XCTAssertEqual(cast("2024-01-31 12:34", .timestamp), "2024-01-31 12:34")
        XCTAssertEqual(cast("2024-01-31T12:34:56", .timestamp), "2024-01-31 12:34:56")
        XCTAssertEqual(cast("2024-01-31T12:34:56.123456", .timestamp), "2024-01-31 12:34:56.123456")
        XCTAssertEqual(cast("2024-01-31", .timestamp), "2024-01-31 00:00:00")
        XCTAssertEqual(cast("01/31/2024 08:00:00", .timestamp), "2024-01-31 08:00:00")
        // A timestamp without time zone drops the zone, as PostgreSQL does.
        XCTAssertEqual(cast("2024-01-31T12:34:56+02:00", .timestamp), "2024-01-31 12:34:56")
        XCTAssertEqual(cast("2024-01-31T12:34:56Z", .timestamptz), "2024-01-31 12:34:56+00")
        XCTAssertEqual(cast("2024-01-31T12:34:56+02:00", .timestamptz), "2024-01-31 12:34:56+02:00")
        XCTAssertEqual(cast("2024-01-31 12:34:56-0530", .timestamptz), "2024-01-31 12:34:56-0530")
        XCTAssertEqual(cast("2024-01-31 12:34:56+02", .timestamptz), "2024-01-31 12:34:56+02")
        XCTAssertEqual(cast("2024-01-31 24:00", .timestamp), "error: '2024-01-31 24:00' is not a valid timestamp (expected YYYY-MM-DD HH:MM:SS)")
        XCTAssertEqual(
            cast("2024-01-31 12:34:56 CET", .timestamptz), "error: '2024-01-31 12:34:56 CET' is not a valid timestamptz (expected YYYY-MM-DD HH:MM:SS)")
        XCTAssertEqual(cast("2024-02-30 00:00", .timestamp), "error: '2024-02-30 00:00' is not a valid timestamp (expected YYYY-MM-DD HH:MM:SS)")
    }

    func testTextIsEscapedForCOPY() {
        XCTAssertEqual(copyText("a\tb", .text), #"prefix|a\tb"#)
        XCTAssertEqual(copyText("line 1\nline 2\r\n", .text), #"prefix|line 1\nline 2\r\n"#)
        XCTAssertEqual(copyText(#"C:\temp"#, .text), #"prefix|C:\\temp"#)
        XCTAssertEqual(copyText(#"\N"#, .text), #"prefix|\\N"#)  // not COPY's NULL marker
        // JSON's own escapes are text to COPY: the backslash is doubled so PostgreSQL reads it back as one.
        XCTAssertEqual(copyText(#"{"a": "b\n"}"#, .jsonb), #"prefix|{"a": "b\\n"}"#)
        XCTAssertEqual(copyText("  padded  ", .text), "prefix|  padded  ")  // text keeps its blanks
        XCTAssertEqual(copyText(" 42 ", .integer), "prefix|42")
        XCTAssertEqual(cast("a\tb\\c", .text), "a\tb\\c")  // cast() returns the value unescaped
    }

    func testNULIsRefusedAndNothingIsAppended() {
        XCTAssertEqual(copyText("ab\u{0}cd", .text), "error: text contains a NUL character, which PostgreSQL cannot store (buffer: prefix|)")
        XCTAssertEqual(copyText("x\u{0}", .varchar(10)), "error: text contains a NUL character, which PostgreSQL cannot store (buffer: prefix|)")
        XCTAssertEqual(copyText("12x", .integer), "error: '12x' is not a valid integer (buffer: prefix|)")
    }

    func testVarcharLengthCountsCharactersNotBytes() {
        XCTAssertEqual(cast("abc", .varchar(3)), "abc")
        XCTAssertEqual(cast("héé", .varchar(3)), "héé")
        XCTAssertEqual(cast("日本語", .varchar(3)), "日本語")
        XCTAssertEqual(cast("abcd", .varchar(3)), "error: a value of 4 characters does not fit varchar(3)")
        XCTAssertEqual(cast(String(repeating: "x", count: 10_000), .varchar(nil)).count, 10_000)
    }

    func testLongValuesAreShortenedInMessages() {
        let long = String(repeating: "z", count: 70)
        XCTAssertEqual(cast(long, .integer), "error: '\(String(repeating: "z", count: 60))…' is not a valid integer")
        XCTAssertEqual(cast(String(repeating: "9", count: 70), .integer), "error: '\(String(repeating: "9", count: 60))…' is out of range for integer")
    }
}

final class SQLTypeTests: XCTestCase {
    func parse(_ text: String) -> String {
        switch SQLType.parse(text) {
        case .success(let type): return type.description
        case .failure(let error): return "error: " + error.message
        }
    }

    func testNamesAndAliases() {
        XCTAssertEqual(
            ["int", "int4", "INTEGER", "int2", "smallint", "int8", "bigint"].map(parse),
            ["integer", "integer", "integer", "smallint", "smallint", "bigint", "bigint"])
        XCTAssertEqual(
            ["float", "float8", "double", "double  precision", "float4", "real"].map(parse),
            ["double precision", "double precision", "double precision", "double precision", "real", "real"])
        XCTAssertEqual(
            ["decimal", "numeric(10,2)", "NUMERIC( 12 )", "decimal(7, 3)"].map(parse),
            ["numeric", "numeric(10,2)", "numeric(12)", "numeric(7,3)"])
        XCTAssertEqual(
            ["bool", "varchar", "character varying(40)", "varchar(80)", "text"].map(parse),
            ["boolean", "varchar", "varchar(40)", "varchar(80)", "text"])
        XCTAssertEqual(
            ["timestamp without time zone", "timestamp with time zone", "timestamptz", "date", "json", "jsonb"].map(parse),
            ["timestamp", "timestamptz", "timestamptz", "date", "json", "jsonb"])
        XCTAssertEqual(["serial", "serial4", "bigserial", "serial8"].map(parse), ["serial", "serial", "bigserial", "bigserial"])
    }

    func testRefusedTypes() {
        XCTAssertEqual(parse("flaot"), "error: unknown type 'flaot' (did you mean 'float'?)")
        XCTAssertEqual(parse("string"), "error: unknown type 'string' (did you mean 'text'?)")
        XCTAssertEqual(parse("datetime"), "error: unknown type 'datetime' (did you mean 'timestamp'?)")
        XCTAssertEqual(parse("varchr(10)"), "error: unknown type 'varchr(10)' (did you mean 'varchar'?)")
        XCTAssertEqual(parse("numeric(a,b)"), "error: malformed type 'numeric(a,b)': the arguments must be whole numbers")
        XCTAssertEqual(parse("numeric(0)"), "error: numeric precision must be between 1 and 1000, found 0")
        XCTAssertEqual(parse("varchar(0)"), "error: varchar length must be between 1 and 10485760, found 0")
        XCTAssertEqual(parse("integer(4)"), "error: type 'integer' does not take arguments like 'integer(4)'")
    }

    func testInformationSchemaNames() {
        XCTAssertEqual(SQLType.serial.informationSchemaName, "integer")
        XCTAssertEqual(SQLType.varchar(10).informationSchemaName, "character varying")
        XCTAssertEqual(SQLType.timestamptz.informationSchemaName, "timestamp with time zone")
    }
}

final class CastabilityTests: XCTestCase {
    func testImplicitCasts() {
        XCTAssertEqual(Castability.of(.integer, to: .bigint), .implicit)
        XCTAssertEqual(Castability.of(.smallint, to: .integer), .implicit)
        XCTAssertEqual(Castability.of(.integer, to: .doublePrecision), .implicit)
        XCTAssertEqual(Castability.of(.real, to: .doublePrecision), .implicit)
        XCTAssertEqual(Castability.of(.date, to: .timestamptz), .implicit)
        XCTAssertEqual(Castability.of(.jsonb, to: .text), .implicit)
        XCTAssertEqual(Castability.of(.varchar(10), to: .varchar(20)), .implicit)
        XCTAssertEqual(Castability.of(.json, to: .jsonb), .implicit)
        XCTAssertEqual(Castability.of(.bigint, to: .numeric(precision: nil, scale: nil)), .implicit)
    }

    func testCheckedCasts() {
        XCTAssertEqual(Castability.of(.text, to: .integer), .checked)
        XCTAssertEqual(Castability.of(.text, to: .date), .checked)
        XCTAssertEqual(Castability.of(.bigint, to: .smallint), .checked)
        XCTAssertEqual(Castability.of(.bigint, to: .doublePrecision), .checked)  // loses precision past 2^53
        XCTAssertEqual(Castability.of(.doublePrecision, to: .integer), .checked)
        XCTAssertEqual(Castability.of(.doublePrecision, to: .real), .checked)
        XCTAssertEqual(Castability.of(.varchar(20), to: .varchar(10)), .checked)
        XCTAssertEqual(Castability.of(.text, to: .varchar(10)), .checked)
        XCTAssertEqual(Castability.of(.timestamptz, to: .date), .checked)
        XCTAssertEqual(Castability.of(.jsonb, to: .integer), .checked)
        XCTAssertEqual(Castability.of(.integer, to: .boolean), .checked)
        XCTAssertEqual(Castability.of(.date, to: .jsonb), .checked)
    }

    func testRefusedCasts() {
        XCTAssertEqual(Castability.of(.jsonb, to: .date), .refused("cannot cast jsonb to date"))
        XCTAssertEqual(Castability.of(.boolean, to: .date), .refused("cannot cast boolean to date"))
        XCTAssertEqual(Castability.of(.date, to: .integer), .refused("cannot cast date to integer"))
        XCTAssertEqual(Castability.of(.json, to: .timestamp), .refused("cannot cast json to timestamp"))
        XCTAssertEqual(Castability.of(.doublePrecision, to: .boolean), .refused("cannot cast double precision to boolean"))
    }
}
