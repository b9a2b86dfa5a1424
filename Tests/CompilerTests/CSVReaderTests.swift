import Foundation
import RecordFormats
import XCTest

/// The streaming CSV parser: RFC 4180 quoting, line endings, and where each record started.
final class CSVReaderTests: XCTestCase {
    struct Row: Equatable {
        var fields: [String]
        var line: Int
        var ordinal: Int64
        var error: String? = nil
    }

    func read(_ text: String, delimiter: Character = ",", chunkSize: Int? = nil) throws -> [Row] {
        try read(bytes: Array(text.utf8), delimiter: delimiter, chunkSize: chunkSize)
    }

    /// Reads from memory, or through a temporary file in small chunks to cross buffer refills.
    func read(bytes: [UInt8], delimiter: Character = ",", chunkSize: Int? = nil) throws -> [Row] {
        let d = delimiter.asciiValue!
        let reader: CSVReader
        if let chunkSize {
            let path = NSTemporaryDirectory() + "pipectl-csv-\(UUID().uuidString).csv"
            XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
            addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
            reader = try CSVReader(path: path, delimiter: d, chunkSize: chunkSize)
        } else {
            reader = CSVReader(bytes: bytes, delimiter: d)
        }
        var record = CSVRecord()
        var rows: [Row] = []
        while reader.next(into: &record) {
            rows.append(Row(fields: (0..<record.count).map { record.string($0) }, line: record.line, ordinal: record.ordinal, error: record.error))
        }
        return rows
    }

    func testPlainRecords() throws {
        XCTAssertEqual(
            try read("a,b,c\n1,2,3\n"),
            [
                Row(fields: ["a", "b", "c"], line: 1, ordinal: 1),
                Row(fields: ["1", "2", "3"], line: 2, ordinal: 2),
            ])
    }

    func testQuotedFieldsWithDelimiterAndDoubledQuotes() throws {
        XCTAssertEqual(
            try read(#"name,quote"# + "\n" + #""Smith, Jane","She said ""hi""""# + "\n"),
            [
                Row(fields: ["name", "quote"], line: 1, ordinal: 1),
                Row(fields: ["Smith, Jane", #"She said "hi""#], line: 2, ordinal: 2),
            ])
    }

    func testNewlineInsideQuotesKeepsOrdinalAndLineApart() throws {
        let rows = try read("id,note\n1,\"two\nlines\"\n2,plain\n")
        XCTAssertEqual(
            rows,
            [
                Row(fields: ["id", "note"], line: 1, ordinal: 1),
                Row(fields: ["1", "two\nlines"], line: 2, ordinal: 2),
                Row(fields: ["2", "plain"], line: 4, ordinal: 3),  // third record, fourth line
            ])
    }

    func testCRLFLineEndings() throws {
        XCTAssertEqual(
            try read("a,b\r\n1,\"x\r\ny\"\r\n2,3\r\n"),
            [
                Row(fields: ["a", "b"], line: 1, ordinal: 1),
                Row(fields: ["1", "x\r\ny"], line: 2, ordinal: 2),
                Row(fields: ["2", "3"], line: 4, ordinal: 3),
            ])
    }

    func testByteOrderMarkIsNotPartOfTheFirstField() throws {
        let rows = try read(bytes: [0xEF, 0xBB, 0xBF] + Array("crim,zn\n1,2\n".utf8))
        XCTAssertEqual(rows.map(\.fields), [["crim", "zn"], ["1", "2"]])
    }

    func testBlankLinesAreSkippedButCounted() throws {
        XCTAssertEqual(
            try read("a\n\n\r\n1\n\n2"),
            [
                Row(fields: ["a"], line: 1, ordinal: 1),
                Row(fields: ["1"], line: 4, ordinal: 2),
                Row(fields: ["2"], line: 6, ordinal: 3),
            ])
    }

    func testTrailingDelimiterMakesAnEmptyLastField() throws {
        XCTAssertEqual(try read("a,b,\n1,,\n").map(\.fields), [["a", "b", ""], ["1", "", ""]])
    }

    func testQuotedEmptyFieldIsMarkedQuoted() {
        let reader = CSVReader(bytes: Array("\"\",x,\n".utf8))
        var record = CSVRecord()
        XCTAssertTrue(reader.next(into: &record))
        XCTAssertEqual(record.quoted, [true, false, false])
        XCTAssertEqual((0..<record.count).map { record.string($0) }, ["", "x", ""])
    }

    func testUnclosedQuoteRunsToTheEndWithAnError() throws {
        XCTAssertEqual(
            try read("a,b\n1,\"open\n2,3\n"),
            [
                Row(fields: ["a", "b"], line: 1, ordinal: 1),
                Row(
                    fields: ["1", "open\n2,3\n"], line: 2, ordinal: 2,
                    error: "unclosed quote: the quoted field starting on line 2 runs to the end of the file"),
            ])
    }

    func testTextAfterAClosingQuoteIsAnError() throws {
        let rows = try read("\"ab\"c,d\n")
        XCTAssertEqual(rows.first?.error, "unexpected character after a closing quote in field 1 (line 1)")
    }

    func testOtherDelimitersAndNoTrailingNewline() throws {
        XCTAssertEqual(try read("a;b\n\"1;2\";3", delimiter: ";").map(\.fields), [["a", "b"], ["1;2", "3"]])
        XCTAssertEqual(try read("a\tb\nx\ty", delimiter: "\t").map(\.fields), [["a", "b"], ["x", "y"]])
    }

    func testRecordsSpanningFileBufferRefills() throws {
        // Chunks of 3 bytes split quotes, CRLFs and the BOM across refills.
        let bytes = [0xEF, 0xBB, 0xBF] + Array("id,note\r\n1,\"a \"\"quoted\"\"\r\nvalue\"\r\n\r\n2,last".utf8)
        XCTAssertEqual(
            try read(bytes: bytes, chunkSize: 3),
            [
                Row(fields: ["id", "note"], line: 1, ordinal: 1),
                Row(fields: ["1", "a \"quoted\"\r\nvalue"], line: 2, ordinal: 2),
                Row(fields: ["2", "last"], line: 5, ordinal: 3),
            ])
    }

    /// Unquoted lines inside the buffer take a one-pass path, others (quotes, a line cut by a
    /// refill) the byte-by-byte one. Read in every chunk size, from 1 byte (always the slow path)
    /// to the whole input (the fast path where it applies), every record is the same: fields,
    /// quoted flags, raw text, line, ordinal, end offset, error.
    func testOnePassAndByteByBytePathsAgree() throws {
        let text = "a,b,c\r\n,,\n\nplain,\"quoted, with comma\",x\r\nhé,日本,\r\n1,2,3\n\"q\"\"d\",e,f\rlast,row,\"\"\r\n,x\"y,z\nend,no,newline"
        let bytes = Array(text.utf8)
        func records(chunkSize: Int?) throws -> [String] {
            let reader: CSVReader
            if let chunkSize {
                let path = NSTemporaryDirectory() + "pipectl-csv-\(UUID().uuidString).csv"
                XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
                defer { try? FileManager.default.removeItem(atPath: path) }
                reader = try CSVReader(path: path, chunkSize: chunkSize)
            } else {
                reader = CSVReader(bytes: bytes)
            }
            var record = CSVRecord()
            var out: [String] = []
            while reader.next(into: &record) {
                let fields = (0..<record.count).map { record.string($0) }
                out.append(
                    "\(fields) \(record.quoted) raw=\(String(decoding: record.raw, as: UTF8.self)) line=\(record.line) "
                        + "ordinal=\(record.ordinal) end=\(record.endOffset) eof=\(record.endedAtEOF) error=\(record.error ?? "-")")
            }
            return out
        }
        let expected = try records(chunkSize: 1)
        XCTAssertEqual(expected.count, 9)
        XCTAssertEqual(expected[0], #"["a", "b", "c"] [false, false, false] raw=a,b,c line=1 ordinal=1 end=7 eof=false error=-"#)
        XCTAssertEqual(expected[1], #"["", "", ""] [false, false, false] raw=,, line=2 ordinal=2 end=10 eof=false error=-"#)
        XCTAssertEqual(expected[3], #"["hé", "日本", ""] [false, false, false] raw=hé,日本, line=5 ordinal=4 end=54 eof=false error=-"#)
        XCTAssertEqual(expected[7], #"["", "x\"y", "z"] [false, false, false] raw=,x"y,z line=9 ordinal=8 end=91 eof=false error=-"#)
        XCTAssertEqual(expected[8], #"["end", "no", "newline"] [false, false, false] raw=end,no,newline line=10 ordinal=9 end=105 eof=true error=-"#)
        XCTAssertEqual(try records(chunkSize: nil), expected)
        for chunkSize in 2...(bytes.count + 1) {
            XCTAssertEqual(try records(chunkSize: chunkSize), expected, "chunk size \(chunkSize)")
        }
    }

    func testRawTextIsKeptForDeadLetters() {
        let reader = CSVReader(bytes: Array("a,\"b,c\"\r\nnext\n".utf8))
        var record = CSVRecord()
        XCTAssertTrue(reader.next(into: &record))
        XCTAssertEqual(String(decoding: record.raw, as: UTF8.self), "a,\"b,c\"")
    }

    func testMissingFileMessage() {
        XCTAssertThrowsError(try CSVReader(path: "/nonexistent/x.csv")) { error in
            XCTAssertEqual("\(error)", "/nonexistent/x.csv: no such file")
        }
    }

    func testHeaderNormalisation() {
        XCTAssertEqual(
            CSVReader.normalizeHeader(["Price ($)", "price", "Price", "  Zip Code ", "2nd", "", "a\"; DROP TABLE x; --", "ÄÖ"]),
            ["price", "price_2", "price_3", "zip_code", "_2nd", "column_6", "a_drop_table_x", "column_8"])
    }
}
