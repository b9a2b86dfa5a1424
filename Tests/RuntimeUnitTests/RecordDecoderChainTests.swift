import PipelineCompiler
import XCTest

@testable import PipelineRuntime

/// How one stage's row becomes the next stage's record in a chain of transforms.
final class RecordDecoderChainTests: XCTestCase {
    /// COPY text (tab-separated, `\N` null, backslash escapes) to a JSON object keyed by the
    /// stage's column names, carrying the record id and send time first.
    func testRowBecomesTheNextStagesRecord() {
        let row = Array(#"a\tb"#.utf8) + [0x09] + Array(#"\N"#.utf8) + [0x09] + Array(#"c\\d "q""#.utf8) + [0x09] + Array("".utf8)
        var out: [UInt8] = []
        RecordDecoder.appendRecord(row: row, columns: ["x", "y", "z", "empty"], id: nil, sentAt: 17, to: &out)
        XCTAssertEqual(String(decoding: out, as: UTF8.self), #"{"_sent_at":17,"x":"a\tb","y":null,"z":"c\\d \"q\"","empty":""}"#)
    }

    func testRecordIDIsCarriedAsItArrived() {
        var out: [UInt8] = []
        var last = ""
        let id = RecordID(ArraySlice("f00d:42".utf8), lastFingerprint: &last)
        RecordDecoder.appendRecord(row: Array("7".utf8), columns: ["n"], id: id, sentAt: nil, to: &out)
        XCTAssertEqual(String(decoding: out, as: UTF8.self), #"{"_record":"f00d:42","n":"7"}"#)
    }

    /// The send time is read from the bytes as `Int64(String)` read it (no String per record).
    func testSendTimeIsParsedAsInt64ParsesIt() {
        for text in [
            "0", "17", "-5", "+5", "1764470000000000", "9223372036854775807", "-9223372036854775808", "9223372036854775808",
            "-9223372036854775809", "", "-", "+", "1.5", "1e3", "12a", " 1", "--1",
        ] {
            XCTAssertEqual(RecordDecoder.parseInt64(ArraySlice(text.utf8)), Int64(text), text)
        }
        // A slice that does not start at index 0.
        XCTAssertEqual(RecordDecoder.parseInt64(Array("x:42".utf8)[2...]), 42)
    }

    /// A fingerprint that changes between records is taken from each record, not reused.
    func testRecordIDFingerprintChangesAreSeen() {
        var last = ""
        XCTAssertEqual(RecordID(ArraySlice("ab:1".utf8), lastFingerprint: &last)?.fingerprint, "ab")
        XCTAssertEqual(RecordID(ArraySlice("ab:2".utf8), lastFingerprint: &last)?.fingerprint, "ab")
        XCTAssertEqual(RecordID(ArraySlice("abc:3".utf8), lastFingerprint: &last)?.fingerprint, "abc")
        XCTAssertEqual(RecordID(ArraySlice("ab:4".utf8), lastFingerprint: &last)?.fingerprint, "ab")
        XCTAssertEqual(RecordID(ArraySlice("é:5".utf8), lastFingerprint: &last)?.fingerprint, "é")
        XCTAssertEqual(RecordID(ArraySlice(":6".utf8), lastFingerprint: &last)?.fingerprint, "")
    }
}
