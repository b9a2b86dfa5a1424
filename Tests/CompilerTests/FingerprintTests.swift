import Foundation
import RecordFormats
import XCTest

/// Source identity: SHA-256 fingerprints, and one read that the fingerprint and the records
/// both come from.
final class FingerprintTests: XCTestCase {
    func temporaryFile(_ text: String) -> String {
        let path = NSTemporaryDirectory() + "pipectl-fp-\(UUID().uuidString).csv"
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(text.utf8)))
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    func records(_ reader: CSVReader) -> [String] {
        var record = CSVRecord()
        var out: [String] = []
        while reader.next(into: &record) { out.append((0..<record.count).map { record.string($0) }.joined(separator: "|")) }
        return out
    }

    func testFingerprintIsTheSHA256OfTheBytes() throws {
        // FIPS 180-4 test vector for "abc".
        XCTAssertEqual(Fingerprint.of(bytes: Array("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(try Fingerprint.ofFile(atPath: temporaryFile("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(try Fingerprint.ofFile(atPath: temporaryFile("")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }

    /// Rows appended after the snapshot was taken are not read under its fingerprint.
    func testRowsAppendedAfterTheSnapshotAreNotReadUnderItsFingerprint() throws {
        let original = "id,name\n1,a\n2,b\n"
        let path = temporaryFile(original)
        let snapshot = try SourceSnapshot(path: path)
        let handle = try XCTUnwrap(FileHandle(forWritingAtPath: path))
        handle.seekToEndOfFile()
        handle.write(Data("3,c\n".utf8))
        try handle.close()
        XCTAssertEqual(snapshot.fingerprint, Fingerprint.of(bytes: Array(original.utf8)))
        XCTAssertEqual(snapshot.size, original.utf8.count)
        XCTAssertEqual(records(snapshot.reader(delimiter: UInt8(ascii: ","), quote: UInt8(ascii: "\""))), ["id|name", "1|a", "2|b"])
    }

    /// A file rewritten in place after the snapshot: the records read are the snapshot's.
    func testFileRewrittenAfterTheSnapshotIsReadAsItWas() throws {
        let path = temporaryFile("id,name\n1,a\n2,b\n")
        let snapshot = try SourceSnapshot(path: path, temporaryDirectory: NSTemporaryDirectory())
        try "id,name\n1,X\n2,Y\n".write(toFile: path, atomically: false, encoding: .utf8)
        XCTAssertEqual(records(snapshot.reader(delimiter: UInt8(ascii: ","), quote: UInt8(ascii: "\""))), ["id|name", "1|a", "2|b"])
    }

    /// The snapshot's one running SHA-256 (whole, up to a sent part, or none) and `PrefixHasher`
    /// going on from it give the values a separate hash of each prefix gives, across the 1 MiB
    /// reads; the chunk digests do not depend on it.
    func testTheRunningHashGivesTheSameFingerprintsHoweverFarTheSnapshotHashed() throws {
        let bytes = (0..<(5 << 19)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 11) }
        let path = NSTemporaryDirectory() + "pipectl-fp-\(UUID().uuidString).csv"
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        let whole = Fingerprint.of(bytes: bytes)
        let ends: [Int64] = [1, 4096, 1 << 20, (1 << 20) + 7, 2_000_000, Int64(bytes.count)]
        let reference = try SourceSnapshot(path: path, chunkBytes: 4096)
        XCTAssertEqual(reference.fingerprint, whole)
        for verify: Int64 in [0, 1_500_001, Int64(bytes.count), Int64(bytes.count) + 1] {
            for wholeFingerprint in [true, false] {
                let snapshot = try SourceSnapshot(path: path, verifyBytes: verify, chunkBytes: 4096, wholeFingerprint: wholeFingerprint)
                let label = "verify \(verify), whole \(wholeFingerprint)"
                XCTAssertEqual(snapshot.fingerprint, wholeFingerprint ? whole : nil, label)
                XCTAssertEqual(snapshot.prefixHash, verify <= Int64(bytes.count) ? Fingerprint.of(bytes: Array(bytes[..<Int(verify)])) : nil, label)
                XCTAssertEqual(snapshot.chunkDigests, reference.chunkDigests, label)
                XCTAssertEqual(snapshot.leadingDigest, reference.leadingDigest, label)
                let hasher = PrefixHasher(snapshot)
                for end in ends where end >= min(verify, Int64(bytes.count)) {
                    XCTAssertEqual(hasher.hash(upTo: end), Fingerprint.of(bytes: Array(bytes[..<Int(end)])), "\(label), end \(end)")
                }
            }
        }
        XCTAssertEqual(try Fingerprint.ofFile(atPath: path), whole)
    }

    func testAFolderIsRefusedWithOneLine() {
        XCTAssertThrowsError(try SourceSnapshot(path: NSTemporaryDirectory())) { error in
            XCTAssertEqual("\(error)", "\(NSTemporaryDirectory()): is a folder, not a file")
        }
    }
}
