import Foundation
import RecordFormats
import XCTest

/// The pure rules of send checkpoints (`SourceCheckpoint`) and the snapshot and reader
/// positions they rest on, without a broker or a database.
final class SourceCheckpointTests: XCTestCase {
    func temporaryFile(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "pipectl-checkpoint-\(UUID().uuidString).csv"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// What a run that sent all of `text` stores, made from a snapshot of it.
    func sentPart(of text: String, chunkBytes: Int = 256) throws -> SentPart {
        let snapshot = try SourceSnapshot(path: try temporaryFile(text), chunkBytes: chunkBytes)
        let size = Int64(snapshot.size)
        return SentPart(
            bytes: size, openEnd: snapshot.endsOpen, hash: PrefixHasher(snapshot).hash(upTo: size), chunkBytes: chunkBytes,
            chunkDigests: SourceCheckpoint.digests(snapshot.chunkDigests, chunkBytes: chunkBytes, within: size))
    }

    func check(_ sent: SentPart, against text: String) throws -> PrefixCheck {
        let snapshot = try SourceSnapshot(path: try temporaryFile(text), verifyBytes: sent.bytes, chunkBytes: sent.chunkBytes)
        return SourceCheckpoint.check(
            sent: sent, size: Int64(snapshot.size), prefixHash: snapshot.prefixHash,
            chunkDigests: snapshot.chunkDigests, byteAtSentEnd: snapshot.bytes(at: sent.bytes, count: 1).first)
    }

    func rows(_ count: Int, from: Int = 1) -> String {
        (from..<(from + count)).map { "\($0),name \($0),\($0 * 10)\n" }.joined()
    }

    func testUnchangedAndAppendedFilesPassTheCheck() throws {
        let text = "id,name,value\n" + rows(200)
        let sent = try sentPart(of: text)
        XCTAssertEqual(try check(sent, against: text), .unchanged)
        XCTAssertEqual(try check(sent, against: text + rows(5, from: 201)), .unchanged)
    }

    /// A change is narrowed to the chunk of its first differing byte (256-byte chunks here).
    func testAChangedRecordIsNarrowedToItsChunk() throws {
        let text = "id,name,value\n" + rows(200)
        let sent = try sentPart(of: text)
        let edited = text.replacingOccurrences(of: "\n150,name 150,1500\n", with: "\n150,name 150,9999\n")
        let at = Int64(zip(text.utf8, edited.utf8).enumerated().first { $0.element.0 != $0.element.1 }!.offset)
        let chunk = at / 256 * 256
        XCTAssertEqual(try check(sent, against: edited), .changed(bytes: chunk..<(chunk + 256)))
    }

    /// A difference after the last full chunk is placed between that chunk and the sent end.
    func testAChangeInTheLastPartialChunkIsPlacedThere() throws {
        let text = "id\n" + String(repeating: "1\n", count: 200)  // 403 bytes: one full chunk, 147 more
        let sent = try sentPart(of: text)
        let edited = String(text.dropLast(2)) + "7\n"
        XCTAssertEqual(try check(sent, against: edited), .changed(bytes: 256..<403))
    }

    /// An edit that makes the file shorter is still placed by its chunk.
    func testAShorteningEditIsNarrowedToItsChunk() throws {
        let text = "id,name,value\n" + rows(200)
        let sent = try sentPart(of: text)
        let edited = text.replacingOccurrences(of: "\n150,name 150,1500\n", with: "\n150,name 150,1\n")
        let at = Int64(zip(text.utf8, edited.utf8).enumerated().first { $0.element.0 != $0.element.1 }!.offset)
        let chunk = at / 256 * 256
        XCTAssertEqual(try check(sent, against: edited), .changed(bytes: chunk..<(chunk + 256)))
    }

    func testAShorterFileIsReportedAsShorter() throws {
        let text = "id\n" + rows(10)
        let sent = try sentPart(of: text)
        XCTAssertEqual(try check(sent, against: "id\n" + rows(9)), .shorter(sent: sent.bytes, now: Int64(("id\n" + rows(9)).utf8.count)))
    }

    /// The last record had no line end when it was sent: text appended to it changes that record;
    /// a line end first starts a new one.
    func testAnOpenLastRecordMayOnlyBeFollowedByALineEnd() throws {
        let text = "id,v\n1,10\n2,20"
        let sent = try sentPart(of: text)
        XCTAssertTrue(sent.openEnd)
        XCTAssertEqual(try check(sent, against: text + "\n3,30\n"), .unchanged)
        XCTAssertEqual(try check(sent, against: text + "5\n3,30\n"), .changed(bytes: Int64(text.utf8.count - 1)..<Int64(text.utf8.count)))
    }

    func testNothingSentMatchesAnyFile() throws {
        let nothing = SentPart.nothing(chunkBytes: 256)
        XCTAssertEqual(try check(nothing, against: "anything\n"), .unchanged)
    }

    /// Resume at the checkpoint only in the topic incarnation it was taken in.
    func testResumePointBelongsToOneTopicIncarnation() {
        let point = ResumePoint(bytes: 1234, records: 40, line: 42)
        XCTAssertEqual(SourceCheckpoint.resumePoint(checkpoint: point, checkpointTopicID: "A", currentTopicID: "A"), point)
        XCTAssertEqual(SourceCheckpoint.resumePoint(checkpoint: point, checkpointTopicID: "A", currentTopicID: "B"), .start)
        XCTAssertEqual(SourceCheckpoint.resumePoint(checkpoint: point, checkpointTopicID: nil, currentTopicID: "B"), .start)
    }

    func testChunkSizeAndSentEndSteps() {
        XCTAssertEqual(SourceCheckpoint.chunkBytes(forSize: 0), 256)
        XCTAssertEqual(SourceCheckpoint.chunkBytes(forSize: 1 << 20), 256)
        XCTAssertEqual(SourceCheckpoint.chunkBytes(forSize: (1 << 20) + 1), 512)
        XCTAssertEqual(SourceCheckpoint.chunkBytes(forSize: 1 << 40), 1 << 20)
        XCTAssertEqual(SourceCheckpoint.nextSentEnd(recordEnd: 100, size: 5_000), 5_000)
        XCTAssertEqual(SourceCheckpoint.nextSentEnd(recordEnd: 100, size: 640 << 20), 100 + (10 << 20))
    }

    /// The identity depends on the path, the leading bytes and the nonce, and is 64 hex digits.
    func testIdentityCoversPathLeadingBytesAndNonce() {
        let a = SourceCheckpoint.identity(path: "/d/a.csv", leadingDigest: [1, 2], nonce: "n")
        XCTAssertEqual(a.count, 64)
        XCTAssertNotEqual(a, SourceCheckpoint.identity(path: "/d/b.csv", leadingDigest: [1, 2], nonce: "n"))
        XCTAssertNotEqual(a, SourceCheckpoint.identity(path: "/d/a.csv", leadingDigest: [1, 3], nonce: "n"))
        XCTAssertNotEqual(a, SourceCheckpoint.identity(path: "/d/a.csv", leadingDigest: [1, 2], nonce: "m"))
        XCTAssertEqual(a, SourceCheckpoint.identity(path: "/d/a.csv", leadingDigest: [1, 2], nonce: "n"))
    }

    /// Resuming at a checkpoint taken after a record whose quoted field spans lines: the reader
    /// continues with the next ordinal and the right line number.
    func testReaderResumesAtARecordBoundaryAfterAQuotedNewline() throws {
        let text = "id,note\n1,\"two\nlines\"\n2,plain\n3,last\n"
        let path = try temporaryFile(text)
        let snapshot = try SourceSnapshot(path: path)
        let first = snapshot.reader(delimiter: UInt8(ascii: ","), quote: UInt8(ascii: "\""))
        var record = CSVRecord()
        XCTAssertTrue(first.next(into: &record))  // header
        XCTAssertTrue(first.next(into: &record))  // record 1, lines 2-3
        let checkpoint = ResumePoint(bytes: record.endOffset, records: record.ordinal - 1, line: first.nextLine)
        XCTAssertEqual(checkpoint, ResumePoint(bytes: Int64("id,note\n1,\"two\nlines\"\n".utf8.count), records: 1, line: 4))

        let again = try SourceSnapshot(path: path)
        let reader = again.reader(delimiter: UInt8(ascii: ","), quote: UInt8(ascii: "\""))
        XCTAssertTrue(reader.next(into: &record))  // the header is read from the start
        XCTAssertEqual(record.string(1), "note")
        try reader.seek(toOffset: checkpoint.bytes, records: checkpoint.records + 1, line: checkpoint.line)
        XCTAssertTrue(reader.next(into: &record))
        XCTAssertEqual([record.string(0), record.string(1), String(record.ordinal - 1), String(record.line)], ["2", "plain", "2", "4"])
        XCTAssertTrue(reader.next(into: &record))
        XCTAssertEqual(
            [record.string(0), String(record.ordinal - 1), String(record.line), String(record.endOffset)], ["3", "3", "5", String(text.utf8.count)])
        XCTAssertFalse(record.endedAtEOF)
        XCTAssertFalse(reader.next(into: &record))
    }

    /// The snapshot's prefix hash is the SHA-256 of exactly the first `verifyBytes` bytes.
    func testSnapshotHashesTheVerifiedPrefixInTheSamePass() throws {
        let text = "id\n" + String(repeating: "12345\n", count: 1000)
        let snapshot = try SourceSnapshot(path: try temporaryFile(text), verifyBytes: 1001)
        XCTAssertEqual(snapshot.prefixHash, Fingerprint.of(bytes: Array(text.utf8.prefix(1001))))
        XCTAssertEqual(snapshot.fingerprint, Fingerprint.of(bytes: Array(text.utf8)))
        XCTAssertEqual(snapshot.chunkDigests.count, (text.utf8.count / snapshot.chunkBytes) * SourceCheckpoint.digestBytes)
        XCTAssertNil(try SourceSnapshot(path: try temporaryFile("short"), verifyBytes: 1001).prefixHash)
    }
}
