import Crypto
import Foundation

/// A source file's content fingerprint: the SHA-256 of its bytes, as 64 lowercase hex digits.
/// Exactly-once rests on it (a record's id is the fingerprint plus its ordinal), so it is a
/// cryptographic hash (swift-crypto's `SHA256`, FIPS 180-4), not a home-made one.
public enum Fingerprint {
    /// The fingerprint of a whole file.
    /// - Throws: `CSVError` naming the path when it is not a readable regular file.
    public static func ofFile(atPath path: String) throws -> String {
        try SourceSnapshot(path: path).fingerprint
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
public final class SourceSnapshot {
    /// SHA-256 of the copied bytes (see `Fingerprint`).
    public let fingerprint: String
    /// Bytes copied.
    public let size: Int
    private let handle: FileHandle

    /// Copies `path` (as it is at this moment) and fingerprints the copy.
    /// - Throws: `CSVError` naming the path (unreadable, a folder, a read or write error).
    public init(path: String, temporaryDirectory: String = NSTemporaryDirectory()) throws {
        do {
            try SourceFile.checkReadable(path)
        } catch let error as SourceFile.Unreadable {
            throw CSVError(message: error.description)
        }
        let input = open(path, O_RDONLY)
        guard input >= 0 else { throw CSVError(message: "\(path): \(String(cString: strerror(errno)))") }
        defer { close(input) }
        var template = Array((temporaryDirectory.hasSuffix("/") ? temporaryDirectory : temporaryDirectory + "/").utf8CString.dropLast())
            + Array("pipectl-source-XXXXXX".utf8CString)
        let copy = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard copy >= 0 else { throw CSVError(message: "\(path): cannot create a temporary copy in \(temporaryDirectory): \(String(cString: strerror(errno)))") }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        let handle = FileHandle(fileDescriptor: copy, closeOnDealloc: true)
        var hasher = SHA256()
        var total = 0
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(input, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw CSVError(message: "\(path): read failed: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            try chunk.withUnsafeBytes { bytes in
                let part = UnsafeRawBufferPointer(rebasing: bytes[..<n])
                hasher.update(bufferPointer: part)
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
        self.fingerprint = Fingerprint.hex(hasher.finalize())
    }

    /// A CSV reader over the copy, from its first byte. Call once.
    public func reader(delimiter: UInt8, quote: UInt8) -> CSVReader {
        CSVReader(handle: handle, delimiter: delimiter, quote: quote)
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
        let bytes = Array(try handle.readToEnd() ?? Data())
        do {
            return CSVReader(bytes: try encoding.toUTF8(bytes), delimiter: delimiter, quote: quote)
        } catch let error as CSVError {
            throw CSVError(message: "\(path) \(error.message) (the source says 'encoding: \(encoding.rawValue)')")
        }
    }
}
