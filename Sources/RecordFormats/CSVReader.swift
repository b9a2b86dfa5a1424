import Foundation

/// One CSV record, reused between calls to `CSVReader.next()`: copy what you keep.
public struct CSVRecord: Sendable {
    /// The fields' bytes, unquoted and unescaped, back to back.
    public var bytes: [UInt8] = []
    /// End offset of each field in `bytes`.
    public var ends: [Int] = []
    /// Whether each field was quoted (a quoted empty field is an empty string, not NULL).
    public var quoted: [Bool] = []
    /// 1-based line where the record starts.
    public var line: Int = 0
    /// 1-based ordinal among data records (blank lines and the header not counted).
    public var ordinal: Int64 = 0
    /// The record's raw text as read (for dead letters), only kept when asked for.
    public var raw: [UInt8] = []
    /// Set when the record is malformed; the fields are then unreliable.
    public var error: String?
    /// Byte offset in the input just past the record and its line end (where the next record
    /// may start): a checkpoint position. Only meaningful for a reader over a file or copy.
    public var endOffset: Int64 = 0
    /// The input ended inside the record, before any line end: bytes appended later would
    /// continue this record rather than start a new one.
    public var endedAtEOF = false

    public init() {}

    public var count: Int { ends.count }

    public func range(_ i: Int) -> Range<Int> { (i == 0 ? 0 : ends[i - 1])..<ends[i] }

    public func string(_ i: Int) -> String { String(decoding: bytes[range(i)], as: UTF8.self) }

    mutating func reset() {
        bytes.removeAll(keepingCapacity: true)
        ends.removeAll(keepingCapacity: true)
        quoted.removeAll(keepingCapacity: true)
        raw.removeAll(keepingCapacity: true)
        error = nil
        endedAtEOF = false
    }
}

public struct CSVError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

/// A streaming RFC 4180 reader over a file: bounded memory whatever the file's size.
/// Handles quoted fields spanning lines, doubled quotes, CRLF, a UTF-8 BOM and blank lines.
public final class CSVReader {
    public let delimiter: UInt8
    public let quote: UInt8
    private let handle: FileHandle?
    private var buffer: [UInt8] = []
    private var position = 0
    /// Input bytes before `buffer[0]`, so `consumedBefore + position` is the offset in the input.
    private var consumedBefore: Int64 = 0
    /// How far into the input the reader is, in bytes (for progress and ETA).
    public var bytesRead: Int { Int(consumedBefore) + position }
    private var eof = false
    private var line = 1
    private var ordinal: Int64 = 0
    private var atStart = true
    private let chunkSize: Int
    /// Keep each record's raw text in `CSVRecord.raw` (for dead letters).
    public var keepRaw = true
    /// Why reading stopped early (an I/O error after the file was opened); nil at a normal end.
    public private(set) var readError: String?

    public init(path: String, delimiter: UInt8 = UInt8(ascii: ","), quote: UInt8 = UInt8(ascii: "\""), chunkSize: Int = 1 << 20) throws {
        // A folder opens fine and then traps on the first read: check before opening.
        do {
            try SourceFile.checkReadable(path)
        } catch let error as SourceFile.Unreadable {
            throw CSVError(message: error.description)
        }
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw CSVError(message: "\(path): cannot be opened for reading")
        }
        self.handle = handle
        self.delimiter = delimiter
        self.quote = quote
        self.chunkSize = chunkSize
    }

    /// Reads an open file from its current position (a `SourceSnapshot`); closes it at the end.
    public init(handle: FileHandle, delimiter: UInt8 = UInt8(ascii: ","), quote: UInt8 = UInt8(ascii: "\""), chunkSize: Int = 1 << 20) {
        self.handle = handle
        self.delimiter = delimiter
        self.quote = quote
        self.chunkSize = chunkSize
    }

    /// Reads from memory (tests, `infer` on a string).
    public init(bytes: [UInt8], delimiter: UInt8 = UInt8(ascii: ","), quote: UInt8 = UInt8(ascii: "\"")) {
        self.handle = nil
        self.buffer = bytes
        self.eof = true
        self.delimiter = delimiter
        self.quote = quote
        self.chunkSize = 0
    }

    deinit { try? handle?.close() }

    /// Makes sure at least one byte past `position` is buffered; false at end of input.
    @inline(__always)
    private func fill() -> Bool {
        if position < buffer.count { return true }
        return refill()
    }

    private func refill() -> Bool {
        guard !eof, let handle else { return false }
        consumedBefore += Int64(buffer.count)
        buffer.removeAll(keepingCapacity: true)
        position = 0
        // `readData(ofLength:)` traps on a read error (`try!` inside Foundation); this throws.
        let data: Data
        do {
            data = try handle.read(upToCount: chunkSize) ?? Data()
        } catch {
            readError = "\(error.localizedDescription)"
            eof = true
            return false
        }
        if data.isEmpty {
            eof = true
            return false
        }
        buffer.append(contentsOf: data)
        return true
    }

    @inline(__always) private func peek() -> UInt8? { fill() ? buffer[position] : nil }

    /// The input offset of the next unread byte.
    public var offset: Int64 { consumedBefore + Int64(position) }

    /// Continues reading at byte `offset` of the input, as if `records` records had been read
    /// and the next one started on line `line` (a resume from a checkpoint, taken at a record
    /// boundary, so quoted newlines before it are already counted in `line`). Only for a
    /// reader over a file handle; the BOM check is skipped after it.
    public func seek(toOffset offset: Int64, records: Int64, line: Int) throws {
        guard let handle else { throw CSVError(message: "cannot seek a reader over memory") }
        try handle.seek(toOffset: UInt64(offset))
        buffer.removeAll(keepingCapacity: true)
        position = 0
        consumedBefore = offset
        eof = false
        atStart = false
        ordinal = records
        self.line = line
    }

    /// Reads the next record into `record`; false at the end of the file.
    public func next(into record: inout CSVRecord) -> Bool {
        if atStart {
            atStart = false
            if fill(), buffer.count - position >= 3 || !eof {
                // A UTF-8 byte order mark is not part of the first field.
                if peek() == 0xEF {
                    let save = position
                    var bom = true
                    for expected: UInt8 in [0xEF, 0xBB, 0xBF] {
                        guard let b = peek(), b == expected else {
                            bom = false
                            break
                        }
                        position += 1
                    }
                    if !bom { position = save }
                }
            }
        }
        while true {
            // Skip blank lines (a lone LF or CRLF) between records.
            guard let first = peek() else { return false }
            if first == 0x0A {
                position += 1
                line += 1
                continue
            }
            if first == 0x0D {
                position += 1
                if peek() == 0x0A { position += 1 }
                line += 1
                continue
            }
            break
        }
        record.reset()
        record.line = line
        ordinal += 1
        record.ordinal = ordinal
        if readUnquotedLine(into: &record) {
            line += 1
            record.endOffset = offset
            return true
        }
        var fieldQuoted = false
        var inQuotes = false
        var afterQuote = false
        let delimiter = self.delimiter
        let quote = self.quote
        while true {
            if position >= buffer.count, !refill() { break }
            // Fast path: copy the run of ordinary bytes up to the next one that matters, in bulk.
            // The run is copied from the buffer's memory, not from an `ArraySlice` of it: a slice
            // retains and releases the buffer per field (~10% of the producer's CPU).
            let start = position
            let keepRaw = self.keepRaw
            if !inQuotes && !afterQuote {
                let end = buffer.withUnsafeBufferPointer { buf -> Int in
                    var i = start
                    while i < buf.count {
                        let c = buf[i]
                        if c == delimiter || c == quote || c == 0x0A || c == 0x0D { break }
                        i += 1
                    }
                    if i > start {
                        let run = UnsafeBufferPointer(rebasing: buf[start..<i])
                        record.bytes.append(contentsOf: run)
                        if keepRaw { record.raw.append(contentsOf: run) }
                    }
                    return i
                }
                if end > start {
                    position = end
                    continue
                }
            } else if inQuotes {
                var newlines = 0
                let end = buffer.withUnsafeBufferPointer { buf -> Int in
                    var i = start
                    while i < buf.count {
                        let c = buf[i]
                        if c == quote { break }
                        if c == 0x0A { newlines += 1 }
                        i += 1
                    }
                    if i > start {
                        let run = UnsafeBufferPointer(rebasing: buf[start..<i])
                        record.bytes.append(contentsOf: run)
                        if keepRaw { record.raw.append(contentsOf: run) }
                    }
                    return i
                }
                if end > start {
                    line += newlines
                    position = end
                    continue
                }
            }
            let b = buffer[position]
            position += 1
            if keepRaw { record.raw.append(b) }
            if inQuotes {
                if b == quote {
                    if peek() == quote {
                        position += 1
                        if keepRaw { record.raw.append(b) }
                        record.bytes.append(quote)
                    } else {
                        inQuotes = false
                        afterQuote = true
                    }
                }
                continue
            }
            if b == delimiter {
                record.ends.append(record.bytes.count)
                record.quoted.append(fieldQuoted)
                fieldQuoted = false
                afterQuote = false
                continue
            }
            if b == 0x0A || b == 0x0D {
                if b == 0x0D, peek() == 0x0A { position += 1 }
                if keepRaw { record.raw.removeLast() }
                line += 1
                finish(&record, quoted: fieldQuoted)
                record.endOffset = offset
                return true
            }
            if b == quote, !fieldQuoted, record.bytes.count == (record.ends.last ?? 0) {
                inQuotes = true
                fieldQuoted = true
                continue
            }
            if afterQuote, record.error == nil {
                record.error = "unexpected character after a closing quote in field \(record.ends.count + 1) (line \(line))"
            }
            record.bytes.append(b)
        }
        if inQuotes {
            record.error = "unclosed quote: the quoted field starting on line \(record.line) runs to the end of the file"
        }
        finish(&record, quoted: fieldQuoted)
        record.endOffset = offset
        record.endedAtEOF = true
        return true
    }

    /// The common record, read in one pass over the buffer's memory: no quote character and
    /// its line end inside the buffer. Fills `record` exactly as the byte-by-byte reader below
    /// would (fields unquoted, raw text without the line end) and moves past the line end;
    /// false, with nothing read, for any other record (quotes, or a line the buffer cuts).
    private func readUnquotedLine(into record: inout CSVRecord) -> Bool {
        let start = position
        let delimiter = self.delimiter
        let quote = self.quote
        let keepRaw = self.keepRaw
        let atEOF = eof
        let next: Int? = buffer.withUnsafeBufferPointer { buf -> Int? in
            var end = start
            while end < buf.count {
                let c = buf[end]
                if c == 0x0A || c == 0x0D { break }
                if c == quote { return nil }
                end += 1
            }
            guard end < buf.count else { return nil }
            var next = end + 1
            if buf[end] == 0x0D {
                if next < buf.count {
                    if buf[next] == 0x0A { next += 1 }
                } else if !atEOF {
                    return nil  // the LF of a CRLF may be in the next chunk
                }
            }
            var fieldStart = start
            for k in start..<end where buf[k] == delimiter {
                record.bytes.append(contentsOf: UnsafeBufferPointer(rebasing: buf[fieldStart..<k]))
                record.ends.append(record.bytes.count)
                record.quoted.append(false)
                fieldStart = k + 1
            }
            record.bytes.append(contentsOf: UnsafeBufferPointer(rebasing: buf[fieldStart..<end]))
            record.ends.append(record.bytes.count)
            record.quoted.append(false)
            if keepRaw { record.raw.append(contentsOf: UnsafeBufferPointer(rebasing: buf[start..<end])) }
            return next
        }
        guard let next else { return false }
        position = next
        return true
    }

    /// The line the next record will start on (blank lines before it not yet skipped).
    public var nextLine: Int { line }

    private func finish(_ record: inout CSVRecord, quoted: Bool) {
        record.ends.append(record.bytes.count)
        record.quoted.append(quoted)
    }
}

extension CSVReader {
    /// Turns header cells into safe, unique identifiers: lower case, `_` for anything else,
    /// a leading `_` before a digit, `_2`, `_3` ... for repeats, `column_N` for empty cells.
    public static func normalizeHeader(_ names: [String]) -> [String] {
        var used: [String: Int] = [:]
        var result: [String] = []
        for (index, raw) in names.enumerated() {
            var name = ""
            for scalar in raw.lowercased().unicodeScalars {
                if scalar.isASCII, scalar.properties.isAlphabetic || ("0"..."9").contains(scalar) {
                    name.unicodeScalars.append(scalar)
                } else if !name.hasSuffix("_") {
                    name += "_"
                }
            }
            while name.hasSuffix("_"), name.count > 1 { name.removeLast() }
            while name.hasPrefix("_"), name.count > 1 { name.removeFirst() }
            if name.isEmpty || name == "_" { name = "column_\(index + 1)" }
            if let first = name.unicodeScalars.first, ("0"..."9").contains(first) { name = "_" + name }
            if name.utf8.count > 60 { name = String(name.utf8.prefix(60))! }
            var candidate = name
            var n = used[name, default: 1]
            while used[candidate] != nil {
                n += 1
                candidate = "\(name)_\(n)"
            }
            used[name] = n
            used[candidate] = 1
            result.append(candidate)
        }
        return result
    }
}
