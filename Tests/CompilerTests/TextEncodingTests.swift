import RecordFormats
import XCTest

/// Encodings other than UTF-8 are detected, and converted with Foundation when declared.
final class TextEncodingTests: XCTestCase {
    let csv = "id,city,amount\n1,Zürich,10\n2,Köln,20\n"
    var utf16le: [UInt8] { Array(csv.utf16).flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] } }
    var utf16be: [UInt8] { Array(csv.utf16).flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] } }

    func testSniffRecognisesBOMsNULPatternsAndSingleByteHeaders() {
        XCTAssertEqual(TextEncoding.sniff([0xFF, 0xFE] + utf16le)?.encoding, .utf16le)
        XCTAssertEqual(TextEncoding.sniff(utf16le)?.encoding, .utf16le)
        XCTAssertEqual(TextEncoding.sniff(utf16le)?.why, "every other byte is NUL (00), as in UTF-16LE text")
        XCTAssertEqual(TextEncoding.sniff([0xFE, 0xFF] + utf16be)?.encoding, .utf16be)
        XCTAssertEqual(TextEncoding.sniff(utf16be)?.encoding, .utf16be)
        XCTAssertEqual(TextEncoding.sniff(Array("id,Gr".utf8) + [0xF6, 0xDF, 0x65, 0x0A])?.encoding, .windows1252)
        XCTAssertNil(TextEncoding.sniff(Array(csv.utf8)))
        XCTAssertNil(TextEncoding.sniff([0xEF, 0xBB, 0xBF] + Array(csv.utf8)))
        // A bad byte below the first line is one bad record, not an encoding.
        XCTAssertNil(TextEncoding.sniff(Array("id,city\n1,".utf8) + [0xFC] + Array("\n".utf8)))
    }

    func testDeclaredEncodingsConvertToUTF8() throws {
        XCTAssertEqual(String(decoding: try TextEncoding.utf16le.toUTF8(utf16le), as: UTF8.self), csv)
        XCTAssertEqual(String(decoding: try TextEncoding.utf16be.toUTF8(utf16be), as: UTF8.self), csv)
        XCTAssertEqual(String(decoding: try TextEncoding.latin1.toUTF8([0x47, 0x72, 0xF6, 0xDF, 0x65]), as: UTF8.self), "Größe")
        XCTAssertEqual(String(decoding: try TextEncoding.windows1252.toUTF8([0x80, 0x20, 0x93, 0x61, 0x94]), as: UTF8.self), "€ \u{201C}a\u{201D}")
        XCTAssertThrowsError(try TextEncoding.utf16le.toUTF8(utf16le.dropLast(1).map { $0 })) {
            XCTAssertEqual(($0 as? CSVError)?.message, "has an odd number of bytes (73), so it is not utf-16le text")
        }
        XCTAssertThrowsError(try TextEncoding.windows1252.toUTF8([0x61, 0x81])) {
            XCTAssertEqual(($0 as? CSVError)?.message, "is not valid windows-1252 text")
        }
    }

    /// The reader the producer uses gives the same records whatever the file's encoding.
    func testSourceReaderReadsEveryEncodingAsTheSameRecords() throws {
        let dir = NSTemporaryDirectory() + "pipectl-enc-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cases: [(TextEncoding, [UInt8])] = [
            (.utf8, Array(csv.utf8)), (.utf16le, utf16le), (.utf16le, [0xFF, 0xFE] + utf16le), (.utf16be, [0xFE, 0xFF] + utf16be),
            (.windows1252, Array(csv.data(using: .windowsCP1252)!)), (.latin1, Array(csv.data(using: .isoLatin1)!)),
        ]
        for (n, (encoding, bytes)) in cases.enumerated() {
            let path = dir + "/\(n).csv"
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let reader = try SourceText.reader(path: path, encoding: encoding, delimiter: UInt8(ascii: ","), quote: UInt8(ascii: "\""))
            var record = CSVRecord()
            var rows: [[String]] = []
            while reader.next(into: &record) { rows.append((0..<record.count).map { record.string($0) }) }
            XCTAssertEqual(rows, [["id", "city", "amount"], ["1", "Zürich", "10"], ["2", "Köln", "20"]], "\(encoding) case \(n)")
            XCTAssertEqual(
                try SourceText.header(path: path, encoding: encoding, delimiter: UInt8(ascii: ","), quote: UInt8(ascii: "\"")),
                ["id", "city", "amount"])
        }
        // Undeclared UTF-16 is refused by the reader too, naming the file and the option.
        XCTAssertThrowsError(try SourceText.reader(path: dir + "/1.csv", encoding: .utf8, delimiter: UInt8(ascii: ","), quote: UInt8(ascii: "\""))) {
            XCTAssertEqual(
                ($0 as? CSVError)?.message,
                "\(dir)/1.csv does not look like UTF-8 text (every other byte is NUL (00), as in UTF-16LE text); it looks like utf-16le: set 'encoding: utf-16le' on the source"
            )
        }
    }
}
