import Foundation

/// Why a value could not become a column's type; the text goes into the dead-letter table.
public struct CastError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// How a date written with slashes and the year last (`03/05/2011`) is read. ISO dates
/// (`2011-05-03`, `2011/05/03`) and dotted dates (`03.05.2011`, always day first) do not depend
/// on it.
///
/// ```yaml
/// - { name: sold_on, type: date, date_order: dmy }   # 03/05/2011 is 3 May 2011
/// ```
public enum DateOrder: String, Sendable, Codable, CaseIterable {
    /// `03/05/2011` is 5 March 2011 (the US order, and the default).
    case mdy
    /// `03/05/2011` is 3 May 2011.
    case dmy
    /// Only year-first dates are read; `03/05/2011` is refused as ambiguous.
    case ymd
}

/// The column types a value is cast to: PostgreSQL's, as far as casting tells them apart.
/// PipelineCompiler's `SQLType` maps onto it (`serial` is `integer`, `jsonb` is `json`), so
/// this module needs nothing from the compiler.
public enum CastTarget: Hashable, Sendable {
    case smallint, integer, bigint
    case real, doublePrecision
    /// `numeric(p,s)`, `numeric(p)` or plain `numeric`.
    case numeric(precision: Int?, scale: Int?)
    case boolean
    case text
    /// `varchar(n)` (at most n characters) or plain `varchar`.
    case varchar(Int?)
    case date, timestamp, timestamptz
    /// `json` and `jsonb`: passed through as text (PostgreSQL checks them).
    case json
}

/// Checks a value against a column type in Swift, before it reaches PostgreSQL, and writes the
/// form PostgreSQL's COPY text format expects. Works on bytes: it runs once per cell.
public enum ValueCaster {
    /// Validates `value` as `type` and appends its escaped COPY text to `out`; dates with the
    /// year last are read in `dateOrder`. On failure nothing is appended.
    public static func append(
        _ value: UnsafeBufferPointer<UInt8>, castingTo type: CastTarget, dateOrder: DateOrder = .mdy,
        to out: inout [UInt8]
    ) -> CastError? {
        var v = value[...]
        switch type {
        case .text, .varchar, .json:
            break
        default:
            // Surrounding blanks are not part of a number or date.
            while let f = v.first, f == 0x20 || f == 0x09 { v = v.dropFirst() }
            while let l = v.last, l == 0x20 || l == 0x09 { v = v.dropLast() }
        }
        switch type {
        case .smallint: return appendInteger(v, min: Int64(Int16.min), max: Int64(Int16.max), name: "smallint", to: &out)
        case .integer: return appendInteger(v, min: Int64(Int32.min), max: Int64(Int32.max), name: "integer", to: &out)
        case .bigint: return appendInteger(v, min: Int64.min, max: Int64.max, name: "bigint", to: &out)
        case .real: return appendFloat(v, single: true, to: &out)
        case .doublePrecision: return appendFloat(v, single: false, to: &out)
        case .numeric(let p, let s): return appendNumeric(v, precision: p, scale: s ?? 0, to: &out)
        case .boolean: return appendBoolean(v, to: &out)
        case .text: return appendText(v, limit: nil, to: &out)
        case .varchar(let n): return appendText(v, limit: n, to: &out)
        case .date: return appendDate(v, order: dateOrder, to: &out)
        case .timestamp: return appendTimestamp(v, zoned: false, order: dateOrder, to: &out)
        case .timestamptz: return appendTimestamp(v, zoned: true, order: dateOrder, to: &out)
        case .json: return appendText(v, limit: nil, to: &out)
        }
    }

    /// The same for a `String`, returning the unescaped canonical text (for checks and tests).
    public static func cast(_ text: String, castingTo type: CastTarget, dateOrder: DateOrder = .mdy) -> Result<String, CastError> {
        var out: [UInt8] = []
        var copy = Array(text.utf8)
        let error = copy.withUnsafeMutableBufferPointer { append(UnsafeBufferPointer($0), castingTo: type, dateOrder: dateOrder, to: &out) }
        if let error { return .failure(error) }
        return .success(unescapeCopy(out))
    }

    public static func unescapeCopy(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        var i = 0
        while i < bytes.count {
            if bytes[i] == 0x5C, i + 1 < bytes.count {
                switch bytes[i + 1] {
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                default: out.append(bytes[i + 1])
                }
                i += 2
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The value as quoted in a reason. Control characters are escaped (`\0`, `\t`, `\n`, `\r`,
    /// `\x1B`): a NUL would cut the reason short when it is stored (libpq parameters are C
    /// strings), and raw line breaks or tabs would garble `dlq list`.
    static func show(_ v: Slice<UnsafeBufferPointer<UInt8>>) -> String {
        var text = ""
        for scalar in String(decoding: v.prefix(60), as: UTF8.self).unicodeScalars {
            switch scalar.value {
            case 0x00: text += "\\0"
            case 0x09: text += "\\t"
            case 0x0A: text += "\\n"
            case 0x0D: text += "\\r"
            case 0x01..<0x20, 0x7F: text += "\\x" + String(format: "%02X", scalar.value)
            default: text.unicodeScalars.append(scalar)
            }
        }
        return v.count > 60 ? "'\(text)…'" : "'\(text)'"
    }

    @inline(__always) static func isDigit(_ b: UInt8) -> Bool { b &- 0x30 < 10 }

    static func appendInteger(_ v: Slice<UnsafeBufferPointer<UInt8>>, min: Int64, max: Int64, name: String, to out: inout [UInt8]) -> CastError? {
        var i = v.startIndex
        var negative = false
        if i < v.endIndex, v[i] == UInt8(ascii: "-") || v[i] == UInt8(ascii: "+") {
            negative = v[i] == UInt8(ascii: "-")
            i += 1
        }
        guard i < v.endIndex else { return CastError("\(show(v)) is not a valid \(name)") }
        // Magnitude accumulated as negative so Int64.min fits.
        var acc: Int64 = 0
        while i < v.endIndex {
            let b = v[i]
            guard isDigit(b) else {
                if b == UInt8(ascii: "."), v[(i + 1)...].allSatisfy({ $0 == UInt8(ascii: "0") }), i + 1 <= v.endIndex {
                    break  // "296.0" is a whole number
                }
                return CastError("\(show(v)) is not a valid \(name)")
            }
            let (m, o1) = acc.multipliedReportingOverflow(by: 10)
            let (s, o2) = m.subtractingReportingOverflow(Int64(b - 0x30))
            if o1 || o2 { return CastError("\(show(v)) is out of range for \(name)") }
            acc = s
            i += 1
        }
        let value: Int64
        if negative {
            value = acc
        } else {
            if acc == Int64.min { return CastError("\(show(v)) is out of range for \(name)") }
            value = -acc
        }
        guard value >= min, value <= max else { return CastError("\(show(v)) is out of range for \(name)") }
        JSONText.appendDecimal(value, to: &out)  // no String per cell
        return nil
    }

    /// `[+-]digits[.digits][e[+-]digits]`, or NaN / Infinity; returns (integer digits, exponent) or nil.
    static func scanDecimal(_ v: Slice<UnsafeBufferPointer<UInt8>>) -> (intDigits: Int, fracDigits: Int, exponent: Int, hasExponent: Bool)? {
        var i = v.startIndex
        if i < v.endIndex, v[i] == UInt8(ascii: "-") || v[i] == UInt8(ascii: "+") { i += 1 }
        var intDigits = 0
        var fracDigits = 0
        var leading = true
        while i < v.endIndex, isDigit(v[i]) {
            if !(leading && v[i] == UInt8(ascii: "0")) {
                intDigits += 1
                leading = false
            }
            i += 1
        }
        let sawInt = i > v.startIndex && isDigit(v[i - 1])
        var sawFrac = false
        if i < v.endIndex, v[i] == UInt8(ascii: ".") {
            i += 1
            while i < v.endIndex, isDigit(v[i]) {
                fracDigits += 1
                sawFrac = true
                i += 1
            }
        }
        guard sawInt || sawFrac else { return nil }
        var exponent = 0
        var hasExponent = false
        if i < v.endIndex, v[i] | 0x20 == UInt8(ascii: "e") {
            hasExponent = true
            i += 1
            var negative = false
            if i < v.endIndex, v[i] == UInt8(ascii: "-") || v[i] == UInt8(ascii: "+") {
                negative = v[i] == UInt8(ascii: "-")
                i += 1
            }
            guard i < v.endIndex else { return nil }
            while i < v.endIndex, isDigit(v[i]) {
                exponent = min(exponent * 10 + Int(v[i] - 0x30), 100_000)
                i += 1
            }
            if negative { exponent = -exponent }
        }
        guard i == v.endIndex else { return nil }
        return (intDigits, fracDigits, exponent, hasExponent)
    }

    static func isSpecialFloat(_ v: Slice<UnsafeBufferPointer<UInt8>>) -> Bool {
        // Numbers start with a digit, a sign then a digit, or a point: no text needed for those.
        guard var first = v.first else { return false }
        if first == UInt8(ascii: "-") || first == UInt8(ascii: "+") {
            guard v.count > 1 else { return false }
            first = v[v.startIndex + 1]
        }
        let lower = first | 0x20
        guard lower == UInt8(ascii: "n") || lower == UInt8(ascii: "i") else { return false }
        var text = String(decoding: v, as: UTF8.self).lowercased()
        if text.hasPrefix("+") || text.hasPrefix("-") { text.removeFirst() }
        return text == "nan" || text == "infinity" || text == "inf"
    }

    static func appendFloat(_ v: Slice<UnsafeBufferPointer<UInt8>>, single: Bool, to out: inout [UInt8]) -> CastError? {
        let name = single ? "real" : "double precision"
        guard v.count < 400 else { return CastError("\(show(v)) is not a valid \(name)") }
        if isSpecialFloat(v) {
            out.append(contentsOf: v)
            return nil
        }
        guard let d = scanDecimal(v) else { return CastError("\(show(v)) is not a valid \(name)") }
        let magnitude = d.intDigits + d.exponent
        if d.hasExponent || d.intDigits > 30 || abs(magnitude) > (single ? 30 : 300) {
            let text = String(decoding: v, as: UTF8.self)
            if single {
                guard let f = Float(text), f.isFinite else { return CastError("\(show(v)) is out of range for real") }
                if f == 0, !isZero(v) { return CastError("\(show(v)) is out of range for real") }
            } else {
                guard let f = Double(text), f.isFinite else { return CastError("\(show(v)) is out of range for double precision") }
                if f == 0, !isZero(v) { return CastError("\(show(v)) is out of range for double precision") }
            }
        }
        out.append(contentsOf: v)
        return nil
    }

    static func isZero(_ v: Slice<UnsafeBufferPointer<UInt8>>) -> Bool {
        var mantissa = true
        for b in v {
            if b | 0x20 == UInt8(ascii: "e") { mantissa = false }
            if mantissa, isDigit(b), b != UInt8(ascii: "0") { return false }
        }
        return true
    }

    static func appendNumeric(_ v: Slice<UnsafeBufferPointer<UInt8>>, precision: Int?, scale: Int, to out: inout [UInt8]) -> CastError? {
        let name = precision.map { "numeric(\($0),\(scale))" } ?? "numeric"
        if isSpecialFloat(v) {
            guard precision == nil else { return CastError("\(show(v)) is not allowed in \(name)") }
            out.append(contentsOf: v)
            return nil
        }
        guard v.count < 1200, let d = scanDecimal(v) else { return CastError("\(show(v)) is not a valid \(name)") }
        if let precision, d.intDigits > 0, d.intDigits + d.exponent > precision - scale {
            return CastError("\(show(v)) does not fit \(name) (at most \(precision - scale) digits before the point)")
        }
        out.append(contentsOf: v)
        return nil
    }

    static let trueWords: Set<String> = ["true", "t", "yes", "y", "on", "1"]
    static let falseWords: Set<String> = ["false", "f", "no", "n", "off", "0"]

    static func appendBoolean(_ v: Slice<UnsafeBufferPointer<UInt8>>, to out: inout [UInt8]) -> CastError? {
        let word = String(decoding: v, as: UTF8.self).lowercased()
        if trueWords.contains(word) {
            out.append(UInt8(ascii: "t"))
            return nil
        }
        if falseWords.contains(word) {
            out.append(UInt8(ascii: "f"))
            return nil
        }
        return CastError("\(show(v)) is not a valid boolean")
    }

    static func appendText(_ v: Slice<UnsafeBufferPointer<UInt8>>, limit: Int?, to out: inout [UInt8]) -> CastError? {
        if let limit {
            var characters = 0
            for b in v where b & 0xC0 != 0x80 { characters += 1 }
            if characters > limit { return CastError("a value of \(characters) characters does not fit varchar(\(limit))") }
        }
        let start = out.count
        for b in v {
            switch b {
            case 0:
                out.removeSubrange(start...)
                return CastError("text contains a NUL character, which PostgreSQL cannot store")
            case 0x5C:
                out.append(0x5C)
                out.append(0x5C)
            case 0x0A:
                out.append(0x5C)
                out.append(UInt8(ascii: "n"))
            case 0x0D:
                out.append(0x5C)
                out.append(UInt8(ascii: "r"))
            case 0x09:
                out.append(0x5C)
                out.append(UInt8(ascii: "t"))
            default: out.append(b)
            }
        }
        return nil
    }

    // MARK: dates and times

    /// Reads `count` digits at `i`.
    static func digits(_ v: Slice<UnsafeBufferPointer<UInt8>>, _ i: Int, _ count: Int) -> Int? {
        guard i >= v.startIndex, i + count <= v.endIndex else { return nil }
        var n = 0
        for k in i..<(i + count) {
            guard isDigit(v[k]) else { return nil }
            n = n * 10 + Int(v[k] - 0x30)
        }
        return n
    }

    static func isValidDate(year: Int, month: Int, day: Int) -> Bool {
        guard year >= 1, (1...12).contains(month), day >= 1 else { return false }
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
        let days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
        return day <= days
    }

    /// A date in one of the formats pipectl reads: `2024-01-31`, `2024/01/31`, `01/31/2024`
    /// (`order` says which of the first two numbers is the month) or `31.01.2024`.
    /// Returns (year, month, day, length read).
    public static func scanDate(_ v: Slice<UnsafeBufferPointer<UInt8>>, order: DateOrder = .mdy) -> (Int, Int, Int, Int)? {
        let s = v.startIndex
        if let y = digits(v, s, 4), s + 10 <= v.endIndex, v[s + 4] == v[s + 7],
            v[s + 4] == UInt8(ascii: "-") || v[s + 4] == UInt8(ascii: "/"),
            let m = digits(v, s + 5, 2), let d = digits(v, s + 8, 2)
        {
            return isValidDate(year: y, month: m, day: d) ? (y, m, d, 10) : nil
        }
        if s + 10 <= v.endIndex, let a = digits(v, s, 2), let b = digits(v, s + 3, 2), let y = digits(v, s + 6, 4) {
            if v[s + 2] == UInt8(ascii: "/"), v[s + 5] == UInt8(ascii: "/") {
                switch order {
                case .mdy: return isValidDate(year: y, month: a, day: b) ? (y, a, b, 10) : nil
                case .dmy: return isValidDate(year: y, month: b, day: a) ? (y, b, a, 10) : nil
                case .ymd: return nil
                }
            }
            if v[s + 2] == UInt8(ascii: "."), v[s + 5] == UInt8(ascii: ".") {
                return isValidDate(year: y, month: b, day: a) ? (y, b, a, 10) : nil
            }
        }
        return nil
    }

    static func appendISODate(_ y: Int, _ m: Int, _ d: Int, to out: inout [UInt8]) {
        func two(_ n: Int) {
            out.append(UInt8(0x30 + n / 10))
            out.append(UInt8(0x30 + n % 10))
        }
        out.append(UInt8(0x30 + y / 1000 % 10))
        out.append(UInt8(0x30 + y / 100 % 10))
        two(y % 100)
        out.append(UInt8(ascii: "-"))
        two(m)
        out.append(UInt8(ascii: "-"))
        two(d)
    }

    static func appendDate(_ v: Slice<UnsafeBufferPointer<UInt8>>, order: DateOrder, to out: inout [UInt8]) -> CastError? {
        guard let (y, m, d, n) = scanDate(v, order: order), n == v.count else { return CastError("\(show(v)) is not a valid date (expected YYYY-MM-DD)") }
        appendISODate(y, m, d, to: &out)
        return nil
    }

    /// `2024-01-31 12:34[:56[.123456]][Z|+02[:00]]`, with `T` or a space between date and time.
    public static func scanTimestamp(_ v: Slice<UnsafeBufferPointer<UInt8>>, order: DateOrder = .mdy) -> (date: (Int, Int, Int), time: [UInt8], zone: [UInt8])?
    {
        guard let (y, mo, d, n) = scanDate(v, order: order) else { return nil }
        var i = v.startIndex + n
        guard i < v.endIndex, v[i] == UInt8(ascii: "T") || v[i] == UInt8(ascii: " ") else { return nil }
        i += 1
        guard let h = digits(v, i, 2), i + 5 <= v.endIndex, v[i + 2] == UInt8(ascii: ":"), let mi = digits(v, i + 3, 2),
            h < 24, mi < 60
        else { return nil }
        var end = i + 5
        if end < v.endIndex, v[end] == UInt8(ascii: ":") {
            guard let sec = digits(v, end + 1, 2), sec < 61 else { return nil }
            end += 3
            if end < v.endIndex, v[end] == UInt8(ascii: ".") {
                var k = end + 1
                while k < v.endIndex, isDigit(v[k]) { k += 1 }
                guard k > end + 1 else { return nil }
                end = k
            }
        }
        let time = Array(v[i..<end])
        var zone: [UInt8] = []
        if end < v.endIndex {
            let z = v[end...]
            if z.count == 1, z.first == UInt8(ascii: "Z") {
                zone = Array("+00".utf8)
            } else if let sign = z.first, sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-"),
                digits(v, end + 1, 2) != nil,
                z.count == 3 || (z.count == 6 && v[end + 3] == UInt8(ascii: ":") && digits(v, end + 4, 2) != nil)
                    || (z.count == 5 && digits(v, end + 3, 2) != nil)
            {
                zone = Array(z)
            } else {
                return nil
            }
        }
        return ((y, mo, d), time, zone)
    }

    static func appendTimestamp(_ v: Slice<UnsafeBufferPointer<UInt8>>, zoned: Bool, order: DateOrder, to out: inout [UInt8]) -> CastError? {
        let name = zoned ? "timestamptz" : "timestamp"
        if let (date, time, zone) = scanTimestamp(v, order: order) {
            appendISODate(date.0, date.1, date.2, to: &out)
            out.append(UInt8(ascii: " "))
            out.append(contentsOf: time)
            if zoned { out.append(contentsOf: zone) }
            return nil
        }
        if let (y, m, d, n) = scanDate(v, order: order), n == v.count {  // a date alone is midnight
            appendISODate(y, m, d, to: &out)
            out.append(contentsOf: " 00:00:00".utf8)
            return nil
        }
        return CastError("\(show(v)) is not a valid \(name) (expected YYYY-MM-DD HH:MM:SS)")
    }
}
