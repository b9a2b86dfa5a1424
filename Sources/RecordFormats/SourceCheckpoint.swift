import Crypto
import Foundation

/// Where sending a source resumes: a record boundary of the file, with the number of data
/// records before it and the line it falls on (quoted fields can span lines).
public struct ResumePoint: Equatable, Sendable {
    /// Byte offset in the file, just past a record's line end (0: the start).
    public var bytes: Int64
    /// Data records before `bytes` (the header not counted): the next record's ordinal minus 1.
    public var records: Int64
    /// 1-based line number at `bytes`.
    public var line: Int

    public init(bytes: Int64, records: Int64, line: Int) {
        self.bytes = bytes
        self.records = records
        self.line = line
    }

    /// The start of the file.
    public static let start = ResumePoint(bytes: 0, records: 0, line: 1)
}

/// The part of a source that may already have been sent (stored before any of it is sent, so
/// it covers records whose delivery was never confirmed): a later run checks that these bytes
/// are still the same before it trusts the checkpoint.
public struct SentPart: Equatable, Sendable {
    /// Bytes [0, bytes) may have been sent.
    public var bytes: Int64
    /// The last record that may have been sent ended at `bytes` without a line end, so bytes
    /// appended later may continue it.
    public var openEnd: Bool
    /// SHA-256 (hex) of bytes [0, bytes).
    public var hash: String
    /// Size of the chunks of `chunkDigests`, fixed when the source was first seen.
    public var chunkBytes: Int
    /// `SourceCheckpoint.digestBytes` bytes per full chunk inside [0, bytes): only to narrow
    /// down where a changed file differs (the SHA-256 above decides whether it does).
    public var chunkDigests: [UInt8]

    public init(bytes: Int64, openEnd: Bool, hash: String, chunkBytes: Int, chunkDigests: [UInt8]) {
        self.bytes = bytes
        self.openEnd = openEnd
        self.hash = hash
        self.chunkBytes = chunkBytes
        self.chunkDigests = chunkDigests
    }

    /// Nothing sent yet.
    public static func nothing(chunkBytes: Int) -> SentPart {
        SentPart(bytes: 0, openEnd: false, hash: Fingerprint.of(bytes: []), chunkBytes: chunkBytes, chunkDigests: [])
    }
}

/// How a source file compares with the part of it that was already sent.
public enum PrefixCheck: Equatable, Sendable {
    /// The sent bytes are unchanged: the file is the same or only grew.
    case unchanged
    /// Something in these bytes differs (the first difference lies inside them).
    case changed(bytes: Range<Int64>)
    /// The file is shorter than what was sent.
    case shorter(sent: Int64, now: Int64)
}

/// The pure rules of send checkpoints: no I/O, so each is unit-tested on its own.
public enum SourceCheckpoint {
    /// A new source's identity covers at most this many leading bytes.
    public static let leadingBytes = 65536
    /// Bytes kept per chunk digest (a truncated SHA-256: it only narrows a difference down).
    public static let digestBytes = 8

    /// Chunk size for a file first seen at `size` bytes: about 4,096 chunks, a power of two
    /// between 256 bytes and 1 MiB, so a difference is narrowed to a few records in a small
    /// file and the digests stay small for a large one.
    public static func chunkBytes(forSize size: Int64) -> Int {
        var chunk = 256
        while chunk < 1 << 20, Int64(chunk) * 4096 < size { chunk *= 2 }
        return chunk
    }

    /// A new source's identity (its record ids are `identity:ordinal`): SHA-256, as 64 hex
    /// digits, of its path, the SHA-256 of its leading bytes and `nonce` (the moment the source
    /// was registered), so a file loaded again after `pipectl reset --source` never reuses the
    /// ids of its earlier life, and a grown file keeps the identity it was given.
    public static func identity(path: String, leadingDigest: [UInt8], nonce: String) -> String {
        var hasher = SHA256()
        hasher.update(data: Array("pipectl source\n\(path)\n\(nonce)\n".utf8))
        hasher.update(data: leadingDigest)
        return Fingerprint.hex(hasher.finalize())
    }

    /// Compares a file with what was sent of it.
    /// - Parameters:
    ///   - size: the file's size now, in bytes.
    ///   - prefixHash: SHA-256 (hex) of the file's bytes [0, sent.bytes), nil if it is shorter.
    ///   - chunkDigests: the file's chunk digests now, in chunks of `sent.chunkBytes`.
    ///   - byteAtSentEnd: the file's byte at offset `sent.bytes`, nil if there is none.
    public static func check(sent: SentPart, size: Int64, prefixHash: String?, chunkDigests: [UInt8], byteAtSentEnd: UInt8?) -> PrefixCheck {
        if size >= sent.bytes, prefixHash == sent.hash {
            // The last sent record had no line end: appended bytes that are not a line end
            // lengthen that record, whose sent version is already stored.
            if sent.openEnd, let next = byteAtSentEnd, next != 0x0A, next != 0x0D {
                return .changed(bytes: max(0, sent.bytes - 1)..<sent.bytes)
            }
            return .unchanged
        }
        let full = min(sent.chunkDigests.count, chunkDigests.count) / digestBytes
        for k in 0..<full
        where !sent.chunkDigests[(k * digestBytes)..<((k + 1) * digestBytes)].elementsEqual(chunkDigests[(k * digestBytes)..<((k + 1) * digestBytes)]) {
            let from = Int64(k) * Int64(sent.chunkBytes)
            return .changed(bytes: from..<min(from + Int64(sent.chunkBytes), sent.bytes))
        }
        // An edit that shortened the file is placed by its chunk above; with every common chunk
        // equal, the file was cut short.
        if size < sent.bytes { return .shorter(sent: sent.bytes, now: size) }
        return .changed(bytes: min(Int64(full) * Int64(sent.chunkBytes), max(0, sent.bytes - 1))..<sent.bytes)
    }

    /// At most this many chunk digests are stored (512 KiB): a file first seen small that grew
    /// very large narrows a difference beyond them only to "after the last digest".
    public static let maxDigests = 65536

    /// The chunk digests of the first `bytes` bytes (full chunks only, at most `maxDigests`),
    /// from a file's digests.
    public static func digests(_ all: [UInt8], chunkBytes: Int, within bytes: Int64) -> [UInt8] {
        Array(all.prefix(Int(min(bytes / Int64(chunkBytes), Int64(maxDigests))) * digestBytes))
    }

    /// Where to start sending: at the checkpoint when it was taken against the topic as it is
    /// now (same topic ID), else at the start, because records sent to an earlier incarnation
    /// of the topic may be gone (record ids drop the ones that were stored).
    public static func resumePoint(checkpoint: ResumePoint, checkpointTopicID: String?, currentTopicID: String?) -> ResumePoint {
        guard let stored = checkpointTopicID, let current = currentTopicID, stored == current else { return .start }
        return checkpoint
    }

    /// How far the sent part moves ahead before a record ending at `recordEnd` is sent: past
    /// that record by max(1 MiB, size / 64), at most to the end of the file, so a file takes
    /// about 64 synchronous writes at most and a later edit beyond the sent part is not refused.
    public static func nextSentEnd(recordEnd: Int64, size: Int64) -> Int64 {
        min(size, recordEnd + max(1 << 20, size / 64))
    }
}
