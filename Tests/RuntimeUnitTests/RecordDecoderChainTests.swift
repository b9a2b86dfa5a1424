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
}
