import Foundation

/// The text encoding of a CSV source (`encoding:` in the spec). Everything after reading works
/// on UTF-8, so other encodings are converted when the file is read, by Foundation's
/// `String(data:encoding:)`, never by hand.
///
/// ```yaml
/// sources:
///   - { name: cities_csv, type: csv, path: ../data/cities.csv, encoding: utf-16le }
/// ```
public enum TextEncoding: String, Sendable, CaseIterable, Codable {
    case utf8 = "utf-8"
    /// Excel's "Unicode text" and most Windows tools: two bytes per character, low byte first.
    case utf16le = "utf-16le"
    case utf16be = "utf-16be"
    /// ISO 8859-1: every byte is the character with that number.
    case latin1
    /// Latin-1 plus `€`, curly quotes and dashes in 0x80-0x9F: what "ANSI" means on Windows.
    case windows1252 = "windows-1252"

    var foundation: String.Encoding {
        switch self {
        case .utf8: return .utf8
        case .utf16le: return .utf16LittleEndian
        case .utf16be: return .utf16BigEndian
        case .latin1: return .isoLatin1
        case .windows1252: return .windowsCP1252
        }
    }

    /// The names accepted in specs and on the command line, for messages.
    public static var names: String { allCases.map(\.rawValue).joined(separator: ", ") }

    /// What a file's first bytes look like, for a file that was expected to be UTF-8:
    /// `(encoding, why)` when it is something else, nil when it reads as UTF-8.
    /// A UTF-16 byte order mark or a NUL in every other byte means UTF-16; a first line that is
    /// not valid UTF-8 means a single-byte Windows encoding (`Größe` saved as `Gr\xF6\xDFe`).
    /// Only the first line is judged by its bytes: an invalid byte further down is one bad
    /// record, dead-lettered with its line, not a wrong encoding.
    public static func sniff(_ sample: [UInt8]) -> (encoding: TextEncoding, why: String)? {
        if sample.starts(with: [0xFF, 0xFE]) { return (.utf16le, "it starts with the UTF-16LE byte order mark FF FE") }
        if sample.starts(with: [0xFE, 0xFF]) { return (.utf16be, "it starts with the UTF-16BE byte order mark FE FF") }
        let pairs = sample.count / 2
        if pairs > 0 {
            var evenZeros = 0
            var oddZeros = 0
            for i in 0..<pairs {
                if sample[2 * i] == 0 { evenZeros += 1 }
                if sample[2 * i + 1] == 0 { oddZeros += 1 }
            }
            // ASCII text in UTF-16 has a NUL in every other byte; UTF-8 text has none at all.
            if oddZeros * 3 >= pairs, evenZeros * 10 < pairs { return (.utf16le, "every other byte is NUL (00), as in UTF-16LE text") }
            if evenZeros * 3 >= pairs, oddZeros * 10 < pairs { return (.utf16be, "every other byte is NUL (00), as in UTF-16BE text") }
        }
        var line = sample.prefix { $0 != 0x0A }
        if line.count == sample.count, sample.count >= 4 {
            // A sample cut inside a character is not evidence against UTF-8.
            line = line.dropLast(3)
        }
        if !JSONText.isValidUTF8(Array(line)), let bad = line.firstIndex(where: { $0 >= 0x80 }) {
            return (.windows1252, "its first line has the byte 0x\(String(line[bad], radix: 16, uppercase: true)), which is not UTF-8")
        }
        return nil
    }

    /// Converts `bytes` in this encoding to UTF-8; throws naming the problem when they do not
    /// decode (an odd number of bytes in UTF-16, a byte windows-1252 does not define).
    public func toUTF8(_ bytes: [UInt8]) throws -> [UInt8] {
        if self == .utf8 { return bytes }
        if self == .utf16le || self == .utf16be, bytes.count % 2 != 0 {
            throw CSVError(message: "has an odd number of bytes (\(bytes.count)), so it is not \(rawValue) text")
        }
        guard let text = String(data: Data(bytes), encoding: foundation) else {
            throw CSVError(message: "is not valid \(rawValue) text")
        }
        var out = Array(text.utf8)
        // Foundation keeps a UTF-16 byte order mark as U+FEFF; the CSV reader skips it in UTF-8.
        if out.starts(with: [0xEF, 0xBB, 0xBF]) == false, bytes.starts(with: [0xFF, 0xFE]) || bytes.starts(with: [0xFE, 0xFF]) {
            out.insert(contentsOf: [0xEF, 0xBB, 0xBF], at: 0)
        }
        return out
    }
}

/// Opens a CSV file in its declared encoding: what the producer, `infer` and the compiler's
/// header check all call, so every reader sees the same UTF-8 text.
public enum SourceText {
    /// How much of the file is looked at to judge its encoding and read its header.
    public static let sampleBytes = 65536

    /// The first bytes of the file (at most `sampleBytes`).
    public static func sample(path: String) throws -> [UInt8] {
        do {
            try SourceFile.checkReadable(path)
        } catch let error as SourceFile.Unreadable {
            throw CSVError(message: error.description)
        }
        guard let handle = FileHandle(forReadingAtPath: path) else { throw CSVError(message: "\(path): cannot be opened for reading") }
        defer { try? handle.close() }
        // `read(upToCount:)` throws where `readData(ofLength:)` would trap.
        return Array(try handle.read(upToCount: sampleBytes) ?? Data())
    }

    /// Refuses a file declared UTF-8 whose bytes say otherwise, naming the file, the encoding
    /// it looks like and the option to set.
    public static func checkDeclaredUTF8(path: String, sample: [UInt8]) throws {
        if let (guess, why) = TextEncoding.sniff(sample) {
            throw CSVError(
                message: "\(path) does not look like UTF-8 text (\(why)); it looks like \(guess.rawValue): set 'encoding: \(guess.rawValue)' on the source")
        }
    }

    /// A reader over the file's text as UTF-8. UTF-8 files are streamed as they are (after the
    /// check above); other encodings are converted whole, in memory, before reading.
    public static func reader(path: String, encoding: TextEncoding, delimiter: UInt8, quote: UInt8) throws -> CSVReader {
        if encoding == .utf8 {
            if FileManager.default.isReadableFile(atPath: path) { try checkDeclaredUTF8(path: path, sample: try sample(path: path)) }
            return try CSVReader(path: path, delimiter: delimiter, quote: quote)
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            return try CSVReader(path: path, delimiter: delimiter, quote: quote)  // its own error: no such file, a folder, ...
        }
        do {
            return CSVReader(bytes: try encoding.toUTF8(Array(data)), delimiter: delimiter, quote: quote)
        } catch let error as CSVError {
            throw CSVError(message: "\(path) \(error.message) (the source says 'encoding: \(encoding.rawValue)')")
        }
    }

    /// The header cells of the file, decoded from its encoding; nil when the file cannot be
    /// read (the compiler then leaves the check to `run`). Reads at most `sampleBytes`.
    public static func header(path: String, encoding: TextEncoding, delimiter: UInt8, quote: UInt8) throws -> [String]? {
        guard FileManager.default.isReadableFile(atPath: path), let raw = try? sample(path: path) else { return nil }
        var bytes = raw
        if encoding == .utf8 {
            try checkDeclaredUTF8(path: path, sample: raw)
        } else {
            if encoding == .utf16le || encoding == .utf16be {
                bytes.removeLast(bytes.count % 2)
                // Do not cut a surrogate pair in half at the end of the sample.
                if bytes.count >= 2 {
                    let last = encoding == .utf16le ? bytes[bytes.count - 1] : bytes[bytes.count - 2]
                    if (0xD8...0xDB).contains(last) { bytes.removeLast(2) }
                }
            }
            do {
                bytes = try encoding.toUTF8(bytes)
            } catch let error as CSVError {
                throw CSVError(message: "\(path) \(error.message) (the source says 'encoding: \(encoding.rawValue)')")
            }
        }
        let reader = CSVReader(bytes: bytes, delimiter: delimiter, quote: quote)
        var record = CSVRecord()
        guard reader.next(into: &record), record.error == nil else { return nil }
        return (0..<record.count).map { record.string($0) }
    }
}
