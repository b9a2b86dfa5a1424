import Crypto
import Foundation

/// A source file's content fingerprint: the SHA-256 of its bytes, as 64 lowercase hex digits.
/// Exactly-once rests on it (a record's id is the fingerprint plus its ordinal), so it is a
/// cryptographic hash (swift-crypto's `SHA256`, FIPS 180-4), not a home-made one.
public enum Fingerprint {
    /// The fingerprint of a whole file.
    /// - Throws: `CSVError` naming the path when it is not a readable regular file.
    public static func ofFile(atPath path: String) throws -> String {
        let snapshot = try SourceSnapshot(path: path)
        return snapshot.fingerprint ?? Fingerprint.hex(snapshot.runningHash.state.finalize())
    }

    public static func of(bytes: [UInt8]) -> String {
        hex(SHA256.hash(data: bytes))
    }

    static func hex(_ digest: SHA256.Digest) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(64)
        for byte in digest {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// One read of a source file: its bytes are hashed and copied, in the same pass, into a private
/// temporary file (unlinked at once, so nothing is left behind after a crash), and records are
/// then read from that copy. The fingerprint therefore describes exactly the bytes the records
/// come from, even when the file is appended to or rewritten while it is being sent.
///
/// The same pass also produces what a send checkpoint is checked against (`SourceCheckpoint`):
/// the SHA-256 of the first `verifyBytes` bytes, an 8-byte digest of every full chunk, and the
/// SHA-256 of the leading `SourceCheckpoint.leadingBytes` bytes (part of a new source's identity).
///
/// Every byte goes through at most two SHA-256 computations here: the chunk digests, and one
/// running SHA-256 from the first byte (`runningHash`), which gives the prefix hash at
/// `verifyBytes` and, when `wholeFingerprint` is asked for, the whole file's `fingerprint`.
/// Without it the running hash stops at `verifyBytes` and `PrefixHasher` goes on from there
/// while the records are sent: a new file is hashed once before its first record is sent.
public final class SourceSnapshot {
    /// SHA-256 of all the copied bytes (see `Fingerprint`): the identity sources had before
    /// checkpoints, still used to recognise them. Nil unless `wholeFingerprint` was asked for.
    public let fingerprint: String?
    /// The running SHA-256 of bytes [0, bytes) of the copy (`bytes` is the size when the whole
    /// fingerprint was computed, else min(size, verifyBytes)), for `PrefixHasher` to go on from.
    public let runningHash: (state: SHA256, bytes: Int64)
    /// Bytes copied.
    public let size: Int
    /// SHA-256 of the first min(size, 64 KiB) bytes.
    public let leadingDigest: [UInt8]
    /// SHA-256 (hex) of bytes [0, verifyBytes), or nil when the copy is shorter than that.
    public let prefixHash: String?
    /// Chunk size of `chunkDigests`, in bytes.
    public let chunkBytes: Int
    /// `SourceCheckpoint.digestBytes` bytes per full chunk of `chunkBytes`, in file order.
    public let chunkDigests: [UInt8]
    private let handle: FileHandle

    /// Copies `path` (as it is at this moment) and fingerprints the copy.
    /// - Parameters:
    ///   - verifyBytes: also hash bytes [0, verifyBytes) (a stored checkpoint's sent part).
    ///   - chunkBytes: the chunk size for `chunkDigests`; nil chooses one from the file's size
    ///     (`SourceCheckpoint.chunkBytes(forSize:)`).
    ///   - wholeFingerprint: also compute `fingerprint` (the SHA-256 of every byte) in this pass.
    /// - Throws: `CSVError` naming the path (unreadable, a folder, a read or write error).
    public init(
        path: String, temporaryDirectory: String = NSTemporaryDirectory(), verifyBytes: Int64 = 0, chunkBytes: Int? = nil,
        wholeFingerprint: Bool = true
    ) throws {
        do {
            try SourceFile.checkReadable(path)
        } catch let error as SourceFile.Unreadable {
            throw CSVError(message: error.description)
        }
        let input = open(path, O_RDONLY)
        guard input >= 0 else { throw CSVError(message: "\(path): \(String(cString: strerror(errno)))") }
        defer { close(input) }
        var template =
            Array((temporaryDirectory.hasSuffix("/") ? temporaryDirectory : temporaryDirectory + "/").utf8CString.dropLast())
            + Array("pipectl-source-XXXXXX".utf8CString)
        let copy = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard copy >= 0 else {
            throw CSVError(message: "\(path): cannot create a temporary copy in \(temporaryDirectory): \(String(cString: strerror(errno)))")
        }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        let handle = FileHandle(fileDescriptor: copy, closeOnDealloc: true)
        var info = stat()
        let chunkSize = chunkBytes ?? SourceCheckpoint.chunkBytes(forSize: fstat(input, &info) == 0 ? Int64(info.st_size) : 0)
        // One running SHA-256 from the first byte: its state at `verifyBytes` is the prefix
        // hash, at the end the whole fingerprint (`finalize` leaves the running state as it is).
        var hasher = SHA256()
        var hashed: Int64 = 0
        let hashUpTo: Int64 = wholeFingerprint ? Int64.max : verifyBytes
        var leading = SHA256()
        var prefixHash: String? = verifyBytes == 0 ? Fingerprint.hex(hasher.finalize()) : nil
        var chunk = SHA256()
        var inChunk = 0
        var digests: [UInt8] = []
        var total = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(input, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw CSVError(message: "\(path): read failed: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            try buffer.withUnsafeBytes { bytes in
                let part = UnsafeRawBufferPointer(rebasing: bytes[..<n])
                if total < SourceCheckpoint.leadingBytes {
                    leading.update(bufferPointer: UnsafeRawBufferPointer(rebasing: part[..<min(n, SourceCheckpoint.leadingBytes - total)]))
                }
                var at = 0
                while at < n, hashed < hashUpTo {
                    // Up to the prefix's end first (its hash is taken there), then on.
                    let stop = prefixHash == nil ? verifyBytes : hashUpTo
                    let take = Int(min(Int64(n - at), stop - hashed))
                    hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: part[at..<(at + take)]))
                    at += take
                    hashed += Int64(take)
                    if prefixHash == nil, hashed == verifyBytes { prefixHash = Fingerprint.hex(hasher.finalize()) }
                }
                at = 0
                while at < n {
                    let take = min(n - at, chunkSize - inChunk)
                    chunk.update(bufferPointer: UnsafeRawBufferPointer(rebasing: part[at..<(at + take)]))
                    inChunk += take
                    at += take
                    if inChunk == chunkSize {
                        digests.append(contentsOf: chunk.finalize().prefix(SourceCheckpoint.digestBytes))
                        chunk = SHA256()
                        inChunk = 0
                    }
                }
                var written = 0
                while written < n {
                    let w = write(copy, part.baseAddress! + written, n - written)
                    if w < 0 {
                        if errno == EINTR { continue }
                        throw CSVError(message: "\(path): cannot write its temporary copy: \(String(cString: strerror(errno)))")
                    }
                    written += w
                }
            }
            total += n
        }
        lseek(copy, 0, SEEK_SET)
        self.handle = handle
        self.size = total
        self.fingerprint = wholeFingerprint ? Fingerprint.hex(hasher.finalize()) : nil
        self.runningHash = (hasher, hashed)
        self.leadingDigest = Array(leading.finalize())
        self.prefixHash = prefixHash
        self.chunkBytes = chunkSize
        self.chunkDigests = digests
    }

    /// Up to `count` bytes of the copy from `offset` (fewer at its end).
    public func bytes(at offset: Int64, count: Int) -> [UInt8] {
        guard count > 0, offset < Int64(size) else { return [] }
        var out = [UInt8](repeating: 0, count: min(count, size - Int(offset)))
        var got = 0
        while got < out.count {
            let n = out.withUnsafeMutableBytes { pread(handle.fileDescriptor, $0.baseAddress! + got, $0.count - got, off_t(offset) + off_t(got)) }
            if n < 0, errno == EINTR { continue }
            if n <= 0 { break }
            got += n
        }
        return Array(out.prefix(got))
    }

    /// Whether the copy's last byte is not a line end: its last record may be continued by bytes
    /// appended later.
    public var endsOpen: Bool {
        guard size > 0, let last = bytes(at: Int64(size - 1), count: 1).first else { return false }
        return last != 0x0A && last != 0x0D
    }

    /// A reader over the copy from its first byte that owns a duplicate of the descriptor (used
    /// to name the records of a byte range before the records are sent; the shared file
    /// position is rewound by `reader` afterwards).
    public func scanningReader(delimiter: UInt8, quote: UInt8) -> CSVReader {
        lseek(handle.fileDescriptor, 0, SEEK_SET)
        let reader = CSVReader(handle: FileHandle(fileDescriptor: dup(handle.fileDescriptor), closeOnDealloc: true), delimiter: delimiter, quote: quote)
        reader.keepRaw = false
        return reader
    }

    /// A CSV reader over the copy, from its first byte. Call once.
    public func reader(delimiter: UInt8, quote: UInt8) -> CSVReader {
        lseek(handle.fileDescriptor, 0, SEEK_SET)
        return CSVReader(handle: handle, delimiter: delimiter, quote: quote)
    }

    /// A reader over the copy's text as UTF-8 (see `SourceText.reader`): a copy declared UTF-8
    /// is checked and streamed; one in another encoding is converted whole, in memory.
    /// - Throws: `CSVError` naming `path` when the bytes are not in the declared encoding.
    public func reader(path: String, encoding: TextEncoding, delimiter: UInt8, quote: UInt8) throws -> CSVReader {
        if encoding == .utf8 {
            var sample = [UInt8](repeating: 0, count: min(size, SourceText.sampleBytes))
            let n = sample.withUnsafeMutableBytes { pread(handle.fileDescriptor, $0.baseAddress, $0.count, 0) }
            try SourceText.checkDeclaredUTF8(path: path, sample: Array(sample.prefix(max(n, 0))))
            return reader(delimiter: delimiter, quote: quote)
        }
        lseek(handle.fileDescriptor, 0, SEEK_SET)
        let bytes = Array(try handle.readToEnd() ?? Data())
        do {
            return CSVReader(bytes: try encoding.toUTF8(bytes), delimiter: delimiter, quote: quote)
        } catch let error as CSVError {
            throw CSVError(message: "\(path) \(error.message) (the source says 'encoding: \(encoding.rawValue)')")
        }
    }
}

/// SHA-256 of the copy's bytes [0, n) for growing n, reading each byte once (the sent part of a
/// checkpoint moves forward as records are sent).
public final class PrefixHasher {
    let snapshot: SourceSnapshot
    var hasher: SHA256
    public private(set) var hashed: Int64

    /// Goes on from the snapshot's running hash (the sent part of a resumed file is not hashed
    /// again).
    public init(_ snapshot: SourceSnapshot) {
        self.snapshot = snapshot
        (hasher, hashed) = snapshot.runningHash
    }

    /// The hex SHA-256 of bytes [0, end); `end` must not go back.
    public func hash(upTo end: Int64) -> String {
        if end < hashed {
            // Behind the snapshot's running hash (it covered the whole file): start over.
            hasher = SHA256()
            hashed = 0
        }
        while hashed < end {
            let part = snapshot.bytes(at: hashed, count: Int(min(end - hashed, 1 << 20)))
            if part.isEmpty { break }
            hasher.update(data: part)
            hashed += Int64(part.count)
        }
        // `finalize` leaves the running state as it is, so hashing can go on afterwards.
        return Fingerprint.hex(hasher.finalize())
    }
}
