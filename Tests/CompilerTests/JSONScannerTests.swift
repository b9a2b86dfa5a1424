import RecordFormats
import XCTest

/// The record payload reader: one JSON object per message, flattened into fields.
final class JSONScannerTests: XCTestCase {
    struct Field: Equatable {
        var key: String
        var value: String
        var kind: JSONKind
        init(_ key: String, _ value: String, _ kind: JSONKind) { (self.key, self.value, self.kind) = (key, value, kind) }
    }

    func scan(_ bytes: [UInt8], flatten: String? = "_") throws -> [Field] {
        var record = JSONFlatRecord()
        try bytes.withUnsafeBufferPointer {
            try JSONScanner.parse($0, flattenWith: flatten.map { Array($0.utf8) }, into: &record)
        }
        return record.fields.indices.map { Field(record.key($0), record.value($0), record.fields[$0].kind) }
    }

    func scan(_ text: String, flatten: String? = "_") throws -> [Field] { try scan(Array(text.utf8), flatten: flatten) }

    func failure(_ bytes: [UInt8]) -> String {
        do {
            _ = try scan(bytes)
            return "no error"
        } catch let f as JSONScanner.Failure {
            return f.message
        } catch {
            return "unexpected: \(error)"
        }
    }

    func failure(_ text: String) -> String { failure(Array(text.utf8)) }

    func testFlatObject() throws {
        XCTAssertEqual(
            try scan(#"{"crim": 0.00632, "name": "x", "ok": true, "gone": null, "n": -1.5e3}"#),
            [
                Field("crim", "0.00632", .number), Field("name", "x", .string), Field("ok", "true", .bool),
                Field("gone", "", .null), Field("n", "-1.5e3", .number),
            ])
        XCTAssertEqual(try scan("  {}  "), [])
    }

    func testNestedObjectsAreFlattenedWithTheSeparator() throws {
        XCTAssertEqual(
            try scan(#"{"user": {"name": "Ann", "address": {"zip": "12345"}}, "id": 1}"#),
            [
                Field("user_name", "Ann", .string), Field("user_address_zip", "12345", .string), Field("id", "1", .number),
            ])
        XCTAssertEqual(try scan(#"{"a": {"b": 1}}"#, flatten: "__"), [Field("a__b", "1", .number)])
    }

    func testNestedObjectsAreKeptRawWithoutFlattening() throws {
        XCTAssertEqual(
            try scan(#"{"a": {"b": [1, 2]}, "c": 3}"#, flatten: nil),
            [
                Field("a", #"{"b": [1, 2]}"#, .raw), Field("c", "3", .number),
            ])
    }

    func testArraysAreKeptAsRawJSON() throws {
        XCTAssertEqual(
            try scan(#"{"tags": ["a", {"b": null}, [1]], "n": 1}"#),
            [
                Field("tags", #"["a", {"b": null}, [1]]"#, .raw), Field("n", "1", .number),
            ])
    }

    func testStringEscapes() throws {
        XCTAssertEqual(try scan(#"{"s": "q\" b\\ s\/ \b\f\n\r\t"}"#), [Field("s", "q\" b\\ s/ \u{8}\u{c}\n\r\t", .string)])
        XCTAssertEqual(try scan(#"{"u": "\u00e9\u4e2d"}"#), [Field("u", "é中", .string)])
        XCTAssertEqual(try scan(#"{"emoji": "\ud83d\ude00"}"#), [Field("emoji", "😀", .string)])
        XCTAssertEqual(try scan(#"{"k\u0041y": 1}"#), [Field("kAy", "1", .number)])
        XCTAssertEqual(try scan(#"{"raw": "日本"}"#), [Field("raw", "日本", .string)])
    }

    func testBadEscapes() {
        XCTAssertEqual(failure(#"{"s": "\ud83d"}"#), "invalid JSON at byte 12: lone surrogate in \\u escape")
        XCTAssertEqual(failure(#"{"s": "\ude00"}"#), "invalid JSON at byte 12: lone surrogate in \\u escape")
        XCTAssertEqual(failure(#"{"s": "\ud83d\u0041"}"#), "invalid JSON at byte 18: bad surrogate pair")
        XCTAssertEqual(failure(#"{"s": "\x"}"#), "invalid JSON at byte 8: bad escape")
        XCTAssertEqual(failure(#"{"s": "\u12G4"}"#), "invalid JSON at byte 8: bad \\u escape")
    }

    func testInvalidUTF8IsRefused() {
        XCTAssertEqual(failure(Array(#"{"s": ""#.utf8) + [0xFF] + Array(#""}"#.utf8)), "payload is not valid UTF-8 (byte 0xff at 7)")
        XCTAssertEqual(failure(Array(#"{"s": ""#.utf8) + [0xC3, 0x28] + Array(#""}"#.utf8)), "payload is not valid UTF-8 (bad continuation at 8)")
        // An overlong encoding of '/'.
        XCTAssertEqual(failure(Array(#"{"s": ""#.utf8) + [0xE0, 0x80, 0xAF] + Array(#""}"#.utf8)), "payload is not valid UTF-8 (bad sequence at 7)")
        // A UTF-8-encoded surrogate.
        XCTAssertEqual(failure(Array(#"{"s": ""#.utf8) + [0xED, 0xA0, 0x80] + Array(#""}"#.utf8)), "payload is not valid UTF-8 (bad sequence at 7)")
    }

    func testNotAnObjectIsRefused() {
        XCTAssertEqual(failure("[1, 2]"), "payload is not a JSON object")
        XCTAssertEqual(failure(#""text""#), "payload is not a JSON object")
        XCTAssertEqual(failure("   "), "payload is empty")
        XCTAssertEqual(failure(#"{"a": 1} {"b": 2}"#), "invalid JSON at byte 9: unexpected text after the JSON object")
    }

    func testMalformedObjects() {
        XCTAssertEqual(failure(#"{"a": 1"#), "invalid JSON at byte 7: unterminated object")
        XCTAssertEqual(failure(#"{"a" 1}"#), "invalid JSON at byte 5: expected ':'")
        XCTAssertEqual(failure(#"{"a": tru}"#), "invalid JSON at byte 6: unknown literal")
        XCTAssertEqual(failure(#"{"a": 1.}"#), "invalid JSON at byte 8: malformed number")
        XCTAssertEqual(failure(#"{"a": "x"#), "invalid JSON at byte 8: unterminated string")
        XCTAssertEqual(failure("{\"a\": \"x\ny\"}"), "invalid JSON at byte 8: control character in a string")
        XCTAssertEqual(failure(#"{"a": [1, 2}"#), "invalid JSON at byte 11: expected ',' or ']'")
    }

    func testRecordsAreReusedBetweenMessages() throws {
        var record = JSONFlatRecord()
        for (payload, expected) in [(#"{"a": "first", "b": 2}"#, ["a", "b"]), (#"{"c": 3}"#, ["c"])] {
            try Array(payload.utf8).withUnsafeBufferPointer { try JSONScanner.parse($0, flattenWith: nil, into: &record) }
            XCTAssertEqual(record.fields.indices.map(record.key), expected)
        }
        XCTAssertEqual(record.index(of: Array("c".utf8), hint: 5), 0)
        XCTAssertNil(record.index(of: Array("a".utf8), hint: 0))
    }

    /// Plain keys and values are ranges of the payload's copy; escaped ones are appended after
    /// it. Both kinds, mixed in one record, read back as the same text.
    func testPlainAndEscapedStringsMixInOneRecord() throws {
        XCTAssertEqual(
            try scan(#"{"a": "", "b\n": "x\ty", "c": "é中", "": "plain", "d": "tail\\"}"#),
            [
                Field("a", "", .string), Field("b\n", "x\ty", .string), Field("c", "é中", .string), Field("", "plain", .string),
                Field("d", "tail\\", .string),
            ])
        // An escape after a run of non-ASCII text keeps the text before it.
        XCTAssertEqual(try scan(#"{"s": "日本\"語\""}"#), [Field("s", "日本\"語\"", .string)])
        XCTAssertEqual(try scan(#"{"n": null, "e": "", "t": true, "f": false}"#).map(\.value), ["", "", "true", "false"])
    }

    /// Flattening with escaped and plain object keys: the object's own key is not a field and
    /// leaves nothing behind that a later field could read.
    func testFlatteningWithEscapedObjectKeys() throws {
        XCTAssertEqual(
            try scan(#"{"o\u0041": {"x": "1", "y\"": {"z": "2"}}, "p": {"q": "3"}, "r": "\u00e9"}"#),
            [Field("oA_x", "1", .string), Field("oA_y\"_z", "2", .string), Field("p_q", "3", .string), Field("r", "é", .string)])
    }

    /// The fast string path fails exactly as the escaping one: same reason, same byte.
    func testStringErrorsAtTheSameByteOnEitherPath() {
        XCTAssertEqual(failure(#"{"a": "x"#), "invalid JSON at byte 8: unterminated string")
        XCTAssertEqual(failure(#"{"a": "x\n"#), "invalid JSON at byte 10: unterminated string")
        XCTAssertEqual(failure(Array(#"{"a\u0041": "x"#.utf8) + [0x01] + Array(#""}"#.utf8)), "invalid JSON at byte 14: control character in a string")
        XCTAssertEqual(failure(Array(#"{"k"#.utf8) + [0xFF] + Array(#"": 1}"#.utf8)), "payload is not valid UTF-8 (byte 0xff at 3)")
        XCTAssertEqual(failure(Array(#"{"s": "\n"#.utf8) + [0xC3] + Array(#""}"#.utf8)), "payload is not valid UTF-8 (bad continuation at 10)")
    }

    /// Strings are scanned 8 bytes at a time up to the first special byte: a quote, escape,
    /// control character or non-ASCII byte at every position of the words and of the tail.
    func testSpecialBytesAtEveryPositionOfAWord() throws {
        for length in 0...19 {
            for k in 0...length {
                let (a, b) = (String(repeating: "a", count: k), String(repeating: "b", count: length - k))
                XCTAssertEqual(try scan("{\"s\": \"\(a)\\n\(b)\"}"), [Field("s", a + "\n" + b, .string)], "escape at \(k) of \(length)")
                XCTAssertEqual(try scan("{\"s\": \"\(a)é\(b)\"}"), [Field("s", a + "é" + b, .string)], "é at \(k) of \(length)")
                XCTAssertEqual(try scan("{\"\(a)\(b)\": \"\(a)\"}"), [Field(a + b, a, .string)], "quote at \(k) of \(length)")
                XCTAssertEqual(
                    failure(Array("{\"s\": \"\(a)".utf8) + [0x1F] + Array("\(b)\"}".utf8)), "invalid JSON at byte \(7 + k): control character in a string")
                XCTAssertEqual(failure(Array("{\"s\": \"\(a)".utf8) + [0x80] + Array("\(b)\"}".utf8)), "payload is not valid UTF-8 (byte 0x80 at \(7 + k))")
            }
        }
    }

    /// The producer's pointer-written JSON is byte for byte what the array writers produce,
    /// across the buffer's growth, escapes, UTF-8, empty cells and every Int64.
    func testByteBufferWritesTheSameBytesAsTheArrayWriters() {
        var buffer = ByteBuffer(capacity: 1)
        defer { buffer.deallocate() }
        var expected: [UInt8] = []
        let cells = ["", "plain", "q\"uote", "back\\slash", "tab\tnew\nline\r", "\u{1}\u{1F}", "é日本😀", String(repeating: "x", count: 300)]
        for cell in cells {
            Array(cell.utf8).withUnsafeBufferPointer {
                JSONText.appendString($0, to: &buffer)
                JSONText.appendString($0, to: &expected)
            }
        }
        for n: Int64 in [0, 7, -7, 10, 99, 100, 1_764_470_000_000_000, .max, .min, .min + 1] {
            JSONText.appendDecimal(n, to: &buffer)
            JSONText.appendDecimal(n, to: &expected)
        }
        buffer.append("{\"_record\":\"")
        expected.append(contentsOf: "{\"_record\":\"".utf8)
        buffer.append(UInt8(ascii: "}"))
        expected.append(UInt8(ascii: "}"))
        XCTAssertEqual(Array(buffer.bytes), expected)
        buffer.count = 0
        buffer.append("null")
        XCTAssertEqual(Array(buffer.bytes), Array("null".utf8))
    }

    func testWritingJSONStrings() {
        var out: [UInt8] = []
        JSONText.appendString("a\"b\\c\n\t\u{1}é", to: &out)
        XCTAssertEqual(String(decoding: out, as: UTF8.self), #""a\"b\\c\n\t\u0001é""#)
        XCTAssertTrue(JSONText.isValidUTF8(Array("héllo".utf8)))
        XCTAssertFalse(JSONText.isValidUTF8([0x68, 0xFF]))
    }

    /// A topic written by another producer can carry absurd nesting: past `maxDepth` the
    /// record is refused with a reason (to be dead-lettered), not parsed until the stack overflows.
    func testDeepNestingIsRefusedNotRecursedInto() throws {
        let deep = "{\"a\":" + String(repeating: "[", count: 200_000)
        XCTAssertEqual(
            failure(Array(deep.utf8)),
            "JSON nested deeper than 128 levels at byte 132 (objects and arrays inside each other)")
        // Nested objects, flattened or kept raw, are bounded the same way.
        let objects = String(repeating: "{\"k\":", count: 200_000)
        XCTAssertEqual(
            failure(Array(objects.utf8)),
            "JSON nested deeper than 128 levels at byte 640 (objects and arrays inside each other)")
        XCTAssertEqual(
            try { () -> String in
                do {
                    _ = try scan(objects, flatten: nil)
                    return "no error"
                } catch let f as JSONScanner.Failure { return f.message }
            }(), "JSON nested deeper than 128 levels at byte 640 (objects and arrays inside each other)")
        // 200,000 '[' alone is not an object at all.
        XCTAssertEqual(failure(Array(String(repeating: "[", count: 200_000).utf8)), "payload is not a JSON object")
        // Exactly the limit still reads: the object plus 127 arrays.
        let limit = "{\"a\":" + String(repeating: "[", count: 127) + String(repeating: "]", count: 127) + "}"
        XCTAssertEqual(
            try scan(limit, flatten: nil),
            [Field("a", String(repeating: "[", count: 127) + String(repeating: "]", count: 127), .raw)])
        // One more level is refused.
        let over = "{\"a\":" + String(repeating: "[", count: 128) + String(repeating: "]", count: 128) + "}"
        XCTAssertEqual(
            failure(Array(over.utf8)),
            "JSON nested deeper than 128 levels at byte 132 (objects and arrays inside each other)")
    }
}
