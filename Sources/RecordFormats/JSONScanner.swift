import Foundation

/// The kind of a JSON value found in a record.
public enum JSONKind: UInt8, Sendable {
    case string, number, bool, null
    /// An object or array kept as its JSON text (arrays always; objects when not flattened).
    case raw
}

public struct JSONField: Sendable {
    public var keyStart: Int
    public var keyEnd: Int
    public var valueStart: Int
    public var valueEnd: Int
    public var kind: JSONKind
}

/// A JSON object read into flat fields (`{"a":{"b":1}}` -> `a_b` with separator `_`).
/// Keys and values are byte ranges into `scratch`, reused between records. `scratch` starts
/// with a copy of the payload: keys and values that need no unescaping (most of them) are
/// ranges of that copy, the others (escapes, flattened keys) are appended after it.
public struct JSONFlatRecord: Sendable {
    public var scratch: [UInt8] = []
    public var fields: [JSONField] = []

    public init() {}

    public func key(_ i: Int) -> String {
        String(decoding: scratch[fields[i].keyStart..<fields[i].keyEnd], as: UTF8.self)
    }

    public func value(_ i: Int) -> String {
        String(decoding: scratch[fields[i].valueStart..<fields[i].valueEnd], as: UTF8.self)
    }

    /// Index of the field whose key is `key`, trying `hint` first (fields usually keep their order).
    public func index(of key: [UInt8], hint: Int) -> Int? {
        if hint < fields.count, keyEquals(hint, key) { return hint }
        for i in fields.indices where keyEquals(i, key) { return i }
        return nil
    }

    /// `index(of:hint:)` for a key given as bytes in memory (the consumer keeps its columns'
    /// keys back to back in one buffer, so no array is retained per lookup).
    public func index(of key: UnsafeBufferPointer<UInt8>, hint: Int) -> Int? {
        scratch.withUnsafeBufferPointer { s in
            fields.withUnsafeBufferPointer { fields in
                @inline(__always) func equals(_ f: JSONField) -> Bool {
                    guard f.keyEnd - f.keyStart == key.count else { return false }
                    // Column names are short: a byte loop beats a call to memcmp.
                    var k = 0
                    while k < key.count {
                        if s[f.keyStart + k] != key[k] { return false }
                        k += 1
                    }
                    return true
                }
                if hint >= 0, hint < fields.count, equals(fields[hint]) { return hint }
                for i in fields.indices where equals(fields[i]) { return i }
                return nil
            }
        }
    }

    @inline(__always)
    func keyEquals(_ i: Int, _ key: [UInt8]) -> Bool {
        let f = fields[i]
        guard f.keyEnd - f.keyStart == key.count else { return false }
        return scratch.withUnsafeBufferPointer { s in
            key.withUnsafeBufferPointer { k in
                memcmp(s.baseAddress! + f.keyStart, k.baseAddress!, key.count) == 0
            }
        }
    }
}

/// A small, allocation-free JSON reader for record payloads: one object per message.
public struct JSONScanner {
    let bytes: UnsafeBufferPointer<UInt8>
    var i = 0
    let separator: [UInt8]?
    /// Objects and arrays currently open around `i`.
    var depth = 0

    /// The deepest nesting of objects and arrays a payload may have. The scanner recurses once
    /// per level, so without a bound a message of 200,000 `[` (any producer can write one to a
    /// topic) overflows the consumer's stack and crashes it again on every restart; past this
    /// depth the record is dead-lettered instead. Real records nest a few levels.
    public static let maxDepth = 128

    public struct Failure: Error, Sendable { public var message: String }

    /// Reads the object in `bytes` into `record`; throws with a reason for anything else.
    public static func parse(_ bytes: UnsafeBufferPointer<UInt8>, flattenWith separator: [UInt8]?, into record: inout JSONFlatRecord) throws {
        record.scratch.removeAll(keepingCapacity: true)
        record.fields.removeAll(keepingCapacity: true)
        // One copy of the payload instead of one append per key and value.
        record.scratch.append(contentsOf: bytes)
        var scanner = JSONScanner(bytes: bytes, separator: separator)
        scanner.skipSpace()
        guard scanner.i < bytes.count, bytes[scanner.i] == UInt8(ascii: "{") else {
            throw Failure(message: scanner.i < bytes.count ? "payload is not a JSON object" : "payload is empty")
        }
        var prefix: [UInt8] = []
        try scanner.object(prefix: &prefix, into: &record)
        scanner.skipSpace()
        guard scanner.i == bytes.count else { throw scanner.fail("unexpected text after the JSON object") }
    }

    func fail(_ what: String) -> Failure { Failure(message: "invalid JSON at byte \(i): \(what)") }

    @inline(__always)
    mutating func skipSpace() {
        while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i += 1 }
    }

    @inline(__always)
    mutating func expect(_ c: UInt8) throws {
        skipSpace()
        guard i < bytes.count, bytes[i] == c else { throw fail("expected '\(Character(Unicode.Scalar(c)))'") }
        i += 1
    }

    /// Enters one level of nesting, refusing to go deeper than `maxDepth`.
    mutating func enter() throws {
        depth += 1
        if depth > Self.maxDepth {
            throw Failure(message: "JSON nested deeper than \(Self.maxDepth) levels at byte \(i) (objects and arrays inside each other)")
        }
    }

    mutating func object(prefix: inout [UInt8], into record: inout JSONFlatRecord) throws {
        skipSpace()
        try enter()  // before the brace, so a refusal names the byte where the level opens
        defer { depth -= 1 }
        try expect(UInt8(ascii: "{"))
        skipSpace()
        if i < bytes.count, bytes[i] == UInt8(ascii: "}") {
            i += 1
            return
        }
        while true {
            skipSpace()
            let keyStart: Int
            let keyEnd: Int
            if prefix.isEmpty {
                (keyStart, keyEnd) = try stringRange(in: &record.scratch)
            } else {
                keyStart = record.scratch.count
                record.scratch.append(contentsOf: prefix)
                try string(into: &record.scratch)
                keyEnd = record.scratch.count
            }
            try expect(UInt8(ascii: ":"))
            skipSpace()
            guard i < bytes.count else { throw fail("missing value") }
            if bytes[i] == UInt8(ascii: "{"), let separator {
                var nested = Array(record.scratch[keyStart..<keyEnd]) + separator
                // A key appended after the payload's copy is not kept (the fields carry the prefix).
                if keyStart >= bytes.count { record.scratch.removeSubrange(keyStart...) }
                try object(prefix: &nested, into: &record)
            } else {
                let (kind, valueStart, valueEnd) = try valueRange(in: &record.scratch)
                record.fields.append(JSONField(keyStart: keyStart, keyEnd: keyEnd, valueStart: valueStart, valueEnd: valueEnd, kind: kind))
            }
            skipSpace()
            guard i < bytes.count else { throw fail("unterminated object") }
            if bytes[i] == UInt8(ascii: ",") {
                i += 1
                continue
            }
            if bytes[i] == UInt8(ascii: "}") {
                i += 1
                return
            }
            throw fail("expected ',' or '}'")
        }
    }

    /// A field's value as a range of `scratch` (whose first `bytes.count` bytes are the
    /// payload): the payload's own bytes unless a string needs unescaping.
    mutating func valueRange(in scratch: inout [UInt8]) throws -> (JSONKind, Int, Int) {
        let start = i
        switch bytes[i] {
        case UInt8(ascii: "\""):
            let (s, e) = try stringRange(in: &scratch)
            return (.string, s, e)
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            try skipValue()
            return (.raw, start, i)
        case UInt8(ascii: "t"):
            try literal("true", into: &scratch, keep: false)
            return (.bool, start, i)
        case UInt8(ascii: "f"):
            try literal("false", into: &scratch, keep: false)
            return (.bool, start, i)
        case UInt8(ascii: "n"):
            try literal("null", into: &scratch, keep: false)
            return (.null, start, start)
        default:
            try number()
            return (.number, start, i)
        }
    }

    /// Reads a JSON string; returns its unescaped UTF-8 as a range of `scratch`: the payload's
    /// bytes when it has no escape (the common case, no copy), else appended after them.
    /// Errors (and their byte positions) are those of `string(into:)`.
    mutating func stringRange(in scratch: inout [UInt8]) throws -> (Int, Int) {
        skipSpace()
        guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw fail("expected a string") }
        i += 1
        let contentStart = i
        while i < bytes.count {
            let c = bytes[i]
            if c == 0x22 {
                i += 1
                return (contentStart, i - 1)
            }
            if c == 0x5C || c < 0x20 { break }
            if c < 0x80 {
                i += 1
            } else {
                i += try utf8Length(at: i)
            }
        }
        // An escape, a control character or the end of the payload: unescape (or fail) the slow way.
        let outStart = scratch.count
        scratch.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[contentStart..<i]))
        try stringBody(into: &scratch)
        return (outStart, scratch.count)
    }

    mutating func value(into out: inout [UInt8]) throws -> JSONKind {
        let c = bytes[i]
        switch c {
        case UInt8(ascii: "\""):
            try string(into: &out)
            return .string
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            let start = i
            try skipValue()
            out.append(contentsOf: bytes[start..<i])
            return .raw
        case UInt8(ascii: "t"):
            try literal("true", into: &out)
            return .bool
        case UInt8(ascii: "f"):
            try literal("false", into: &out)
            return .bool
        case UInt8(ascii: "n"):
            try literal("null", into: &out, keep: false)
            return .null
        default:
            let start = i
            try number()
            out.append(contentsOf: bytes[start..<i])
            return .number
        }
    }

    mutating func literal(_ word: StaticString, into out: inout [UInt8], keep: Bool = true) throws {
        let n = word.utf8CodeUnitCount
        guard i + n <= bytes.count, memcmp(bytes.baseAddress! + i, word.utf8Start, n) == 0 else { throw fail("unknown literal") }
        if keep { out.append(contentsOf: UnsafeBufferPointer(start: word.utf8Start, count: n)) }
        i += n
    }

    mutating func number() throws {
        let start = i
        if i < bytes.count, bytes[i] == UInt8(ascii: "-") { i += 1 }
        var digits = 0
        while i < bytes.count, bytes[i] &- 0x30 < 10 {
            i += 1
            digits += 1
        }
        guard digits > 0 else { throw fail("expected a value") }
        if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
            i += 1
            var frac = 0
            while i < bytes.count, bytes[i] &- 0x30 < 10 {
                i += 1
                frac += 1
            }
            guard frac > 0 else { throw fail("malformed number") }
        }
        if i < bytes.count, bytes[i] | 0x20 == UInt8(ascii: "e") {
            i += 1
            if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
            var exp = 0
            while i < bytes.count, bytes[i] &- 0x30 < 10 {
                i += 1
                exp += 1
            }
            guard exp > 0 else { throw fail("malformed number") }
        }
        _ = start
    }

    /// Skips a whole value (for arrays and unflattened objects), checking its syntax.
    mutating func skipValue() throws {
        skipSpace()
        guard i < bytes.count else { throw fail("missing value") }
        var sink: [UInt8] = []
        switch bytes[i] {
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            let close = bytes[i] == UInt8(ascii: "{") ? UInt8(ascii: "}") : UInt8(ascii: "]")
            let isObject = close == UInt8(ascii: "}")
            try enter()
            defer { depth -= 1 }
            i += 1
            skipSpace()
            if i < bytes.count, bytes[i] == close {
                i += 1
                return
            }
            while true {
                if isObject {
                    skipSpace()
                    sink.removeAll(keepingCapacity: true)
                    try string(into: &sink)
                    try expect(UInt8(ascii: ":"))
                }
                try skipValue()
                skipSpace()
                guard i < bytes.count else { throw fail("unterminated \(isObject ? "object" : "array")") }
                if bytes[i] == UInt8(ascii: ",") {
                    i += 1
                    continue
                }
                if bytes[i] == close {
                    i += 1
                    return
                }
                throw fail("expected ',' or '\(Character(Unicode.Scalar(close)))'")
            }
        default:
            _ = try value(into: &sink)
        }
    }

    /// Reads a JSON string, appending its unescaped UTF-8 to `out`.
    mutating func string(into out: inout [UInt8]) throws {
        skipSpace()
        guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw fail("expected a string") }
        i += 1
        try stringBody(into: &out)
    }

    /// The rest of a string after its opening quote, up to and including the closing one.
    mutating func stringBody(into out: inout [UInt8]) throws {
        while i < bytes.count {
            // Copy the run of plain ASCII up to the next quote, escape, control or non-ASCII byte.
            let runStart = i
            while i < bytes.count {
                let c = bytes[i]
                if c == 0x22 || c == 0x5C || c < 0x20 || c >= 0x80 { break }
                i += 1
            }
            if i > runStart { out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<i])) }
            guard i < bytes.count else { break }
            let b = bytes[i]
            if b == UInt8(ascii: "\"") {
                i += 1
                return
            }
            if b == UInt8(ascii: "\\") {
                i += 1
                guard i < bytes.count else { break }
                switch bytes[i] {
                case UInt8(ascii: "\""): out.append(0x22)
                case UInt8(ascii: "\\"): out.append(0x5C)
                case UInt8(ascii: "/"): out.append(0x2F)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if (0xD800..<0xDC00).contains(scalar) {
                        guard i + 2 < bytes.count, bytes[i + 1] == UInt8(ascii: "\\"), bytes[i + 2] == UInt8(ascii: "u") else {
                            throw fail("lone surrogate in \\u escape")
                        }
                        i += 2
                        let low = try hex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw fail("bad surrogate pair") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00..<0xE000).contains(scalar) {
                        throw fail("lone surrogate in \\u escape")
                    }
                    guard let s = Unicode.Scalar(scalar) else { throw fail("bad \\u escape") }
                    out.append(contentsOf: UTF8.encode(s)!)
                default: throw fail("bad escape")
                }
                i += 1
                continue
            }
            if b < 0x20 { throw fail("control character in a string") }
            if b < 0x80 {
                out.append(b)
                i += 1
                continue
            }
            let n = try utf8Length(at: i)
            out.append(contentsOf: bytes[i..<(i + n)])
            i += n
        }
        throw fail("unterminated string")
    }

    mutating func hex4() throws -> UInt32 {
        guard i + 4 < bytes.count else { throw fail("bad \\u escape") }
        var v: UInt32 = 0
        for k in 1...4 {
            let c = bytes[i + k]
            let d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x41...0x46: d = UInt32(c - 0x37)
            case 0x61...0x66: d = UInt32(c - 0x57)
            default: throw fail("bad \\u escape")
            }
            v = v << 4 | d
        }
        i += 4
        return v
    }

    /// Validates one UTF-8 sequence starting at `at`; returns its length.
    func utf8Length(at p: Int) throws -> Int {
        let b = bytes[p]
        let n: Int
        let minimum: UInt32
        var scalar: UInt32
        switch b {
        case 0xC2...0xDF:
            n = 2
            scalar = UInt32(b & 0x1F)
            minimum = 0x80
        case 0xE0...0xEF:
            n = 3
            scalar = UInt32(b & 0x0F)
            minimum = 0x800
        case 0xF0...0xF4:
            n = 4
            scalar = UInt32(b & 0x07)
            minimum = 0x10000
        default: throw Failure(message: "payload is not valid UTF-8 (byte 0x\(String(b, radix: 16)) at \(p))")
        }
        guard p + n <= bytes.count else { throw Failure(message: "payload is not valid UTF-8 (truncated sequence at \(p))") }
        for k in 1..<n {
            let c = bytes[p + k]
            guard c & 0xC0 == 0x80 else { throw Failure(message: "payload is not valid UTF-8 (bad continuation at \(p + k))") }
            scalar = scalar << 6 | UInt32(c & 0x3F)
        }
        guard scalar >= minimum, scalar <= 0x10FFFF, !(0xD800..<0xE000).contains(scalar) else {
            throw Failure(message: "payload is not valid UTF-8 (bad sequence at \(p))")
        }
        return n
    }
}

/// Writing JSON text into byte buffers.
public enum JSONText {
    static let hexDigits = Array("0123456789abcdef".utf8)

    /// Appends `bytes` as a JSON string (quotes included); most cells need no escaping and
    /// are copied in one piece.
    public static func appendString(_ bytes: UnsafeBufferPointer<UInt8>, to out: inout [UInt8]) {
        var plain = true
        for b in bytes where b < 0x20 || b == 0x22 || b == 0x5C {
            plain = false
            break
        }
        if plain {
            out.append(0x22)
            out.append(contentsOf: bytes)
            out.append(0x22)
        } else {
            appendEscaped(bytes, to: &out)
        }
    }

    public static func appendString(_ bytes: some Collection<UInt8>, to out: inout [UInt8]) {
        if let done: Void = bytes.withContiguousStorageIfAvailable({ appendString($0, to: &out) }) { return done }
        appendEscaped(bytes, to: &out)
    }

    /// Appends a whole number in decimal.
    public static func appendDecimal(_ value: Int64, to out: inout [UInt8]) {
        if value < 0 { out.append(UInt8(ascii: "-")) }
        var v = value.magnitude
        var digits:
            (
                UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8
            ) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var n = 0
        withUnsafeMutableBytes(of: &digits) { d in
            repeat {
                d[19 - n] = UInt8(truncatingIfNeeded: v % 10) + 0x30
                v /= 10
                n += 1
            } while v > 0
            out.append(contentsOf: d[(20 - n)...])
        }
    }

    static func appendEscaped(_ bytes: some Collection<UInt8>, to out: inout [UInt8]) {
        out.append(0x22)
        for b in bytes {
            switch b {
            case 0x22:
                out.append(0x5C)
                out.append(0x22)
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
            case 0..<0x20:
                out.append(contentsOf: Array("\\u00".utf8))
                out.append(hexDigits[Int(b >> 4)])
                out.append(hexDigits[Int(b & 0xF)])
            default: out.append(b)
            }
        }
        out.append(0x22)
    }

    public static func appendString(_ s: String, to out: inout [UInt8]) { appendString(s.utf8, to: &out) }

    /// True when `bytes` is valid UTF-8 (ASCII is checked eight bytes at a time).
    public static func isValidUTF8(_ bytes: [UInt8]) -> Bool {
        let ascii = bytes.withUnsafeBytes { raw -> Bool in
            var i = 0
            var acc: UInt64 = 0
            while i + 8 <= raw.count {
                acc |= raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                i += 8
            }
            while i < raw.count {
                acc |= UInt64(raw[i])
                i += 1
            }
            return acc & 0x8080_8080_8080_8080 == 0
        }
        return ascii || isValidUTF8(bytes[...])
    }

    public static func isValidUTF8(_ bytes: some Collection<UInt8>) -> Bool {
        var it = bytes.makeIterator()
        var decoder = UTF8()
        while true {
            switch decoder.decode(&it) {
            case .scalarValue: continue
            case .emptyInput: return true
            case .error: return false
            }
        }
    }
}

/// A growable byte buffer written through a pointer, for text built from many small pieces per
/// record (the producer's JSON): each `Array.append` checks uniqueness and capacity, which took
/// ~10% of `pipectl produce`'s CPU. A value without a deinit: its owner calls `deallocate()` once.
public struct ByteBuffer {
    @usableFromInline var base: UnsafeMutablePointer<UInt8>
    @usableFromInline var capacity: Int
    /// Bytes written; set to 0 to reuse the memory for the next record.
    public var count = 0

    public init(capacity: Int = 4096) {
        self.capacity = max(capacity, 16)
        base = .allocate(capacity: self.capacity)
    }

    /// Frees the memory; the buffer must not be used afterwards.
    public func deallocate() { base.deallocate() }

    /// The bytes written so far (valid until the next write or `deallocate()`).
    @inlinable public var bytes: UnsafeBufferPointer<UInt8> { UnsafeBufferPointer(start: base, count: count) }

    /// Makes room for `extra` more bytes.
    @inlinable public mutating func reserve(_ extra: Int) {
        if count + extra > capacity { grow(to: count + extra) }
    }

    @usableFromInline mutating func grow(to needed: Int) {
        let newCapacity = max(needed, capacity * 2)
        let newBase = UnsafeMutablePointer<UInt8>.allocate(capacity: newCapacity)
        newBase.update(from: base, count: count)
        base.deallocate()
        base = newBase
        capacity = newCapacity
    }

    @inlinable public mutating func append(_ byte: UInt8) {
        reserve(1)
        base[count] = byte
        count += 1
    }

    @inlinable public mutating func append(_ bytes: UnsafeBufferPointer<UInt8>) {
        guard let source = bytes.baseAddress, !bytes.isEmpty else { return }
        reserve(bytes.count)
        (base + count).update(from: source, count: bytes.count)
        count += bytes.count
    }

    @inlinable public mutating func append(_ text: StaticString) {
        append(UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }
}

extension JSONText {
    /// `appendString(_:to:)` into a `ByteBuffer`: the same bytes.
    public static func appendString(_ bytes: UnsafeBufferPointer<UInt8>, to out: inout ByteBuffer) {
        var plain = true
        for b in bytes where b < 0x20 || b == 0x22 || b == 0x5C {
            plain = false
            break
        }
        if plain {
            out.reserve(bytes.count + 2)
            out.append(0x22)
            out.append(bytes)
            out.append(0x22)
        } else {
            var escaped: [UInt8] = []
            appendEscaped(bytes, to: &escaped)
            escaped.withUnsafeBufferPointer { out.append($0) }
        }
    }

    /// `appendDecimal(_:to:)` into a `ByteBuffer`: the same bytes.
    public static func appendDecimal(_ value: Int64, to out: inout ByteBuffer) {
        out.reserve(20)
        if value < 0 { out.append(UInt8(ascii: "-")) }
        var v = value.magnitude
        var n = 0
        var probe = v
        repeat {
            n += 1
            probe /= 10
        } while probe > 0
        out.reserve(n)
        let end = out.base + out.count + n
        var p = end
        repeat {
            p -= 1
            p.pointee = UInt8(truncatingIfNeeded: v % 10) + 0x30
            v /= 10
        } while v > 0
        out.count += n
    }
}
