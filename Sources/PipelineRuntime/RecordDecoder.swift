import Foundation
import PipelineCompiler
import RecordFormats

/// Where a record came from: the source file's fingerprint and its ordinal in that file.
public struct RecordID: Hashable, Sendable {
    public var fingerprint: String
    public var ordinal: Int64

    /// Parses `"<fingerprint>:<ordinal>"`.
    init?(_ bytes: ArraySlice<UInt8>, lastFingerprint: inout String) {
        guard let colon = bytes.lastIndex(of: UInt8(ascii: ":")), colon + 1 < bytes.endIndex else { return nil }
        var ordinal: Int64 = 0
        for b in bytes[(colon + 1)...] {
            guard b &- 0x30 < 10, ordinal < (1 << 40) else { return nil }
            ordinal = ordinal * 10 + Int64(b - 0x30)
        }
        guard ordinal < (1 << 40) else { return nil }
        // Consecutive records share their file's fingerprint: reuse the string. Compared with
        // memcmp: a generic `elementsEqual` of the UTF-8 view took ~4% of the consumer's CPU.
        let same = bytes[..<colon].withUnsafeBufferPointer { b in
            lastFingerprint.utf8.withContiguousStorageIfAvailable { s in
                s.count == b.count && (b.isEmpty || memcmp(s.baseAddress!, b.baseAddress!, b.count) == 0)
            } ?? lastFingerprint.utf8.elementsEqual(b)
        }
        if !same {
            lastFingerprint = String(decoding: bytes[..<colon], as: UTF8.self)
        }
        fingerprint = lastFingerprint
        self.ordinal = ordinal
    }
}

/// Why a record did not become a row.
public struct RejectedRecord: Sendable {
    /// `source` (bad CSV row, sent as an error record), `parse` (bad JSON), `cast`, `constraint`.
    public var stage: String
    public var reason: String
    /// The raw payload to keep (the message, or the original CSV bytes for source errors).
    public var payload: [UInt8]
}

/// Turns one JSON message into one row of COPY text for the sink's table, applying the
/// transform (flatten, renames, null_if, casts, defaults) and checking every value. A chain of
/// transforms (`init(chain:)`) applies each to the previous one's output columns.
public struct RecordDecoder {
    let transform: Transform
    /// Decoders of the transforms after the first, in chain order; empty for one transform,
    /// which keeps the single-transform path byte for byte what it was.
    var next: [RecordDecoder] = []
    /// One stage's COPY text and the next stage's input record, reused between messages.
    var stageRow: [UInt8] = []
    var stageRecord: [UInt8] = []
    /// The record field each bound column reads, as bytes.
    let fieldKeys: [[UInt8]]
    /// Per bound column: whether the compiler resolved its key against the CSV header. When it
    /// did not, a message without the exact key is searched for a field whose normalised
    /// name is the wanted one (the second half of `FieldMatching`'s rule).
    let resolved: [Bool]
    /// Normalised forms of keys seen in messages, so each is computed once.
    var normalizedKeys: [[UInt8]: [UInt8]] = [:]
    let separator: [UInt8]?
    let nullIf: [[UInt8]]
    var json = JSONFlatRecord()
    var scratch: [UInt8] = []
    var castScratch: [UInt8] = []
    var lastFingerprint = ""
    /// Per bound column, what the per-record loop reads (plain values: no reference counting,
    /// unlike a copy of `ColumnBinding` with its strings, which cost ~10% of the consumer's CPU).
    let plans: [ColumnPlan]
    /// `fieldKeys` back to back (`plans[n].keyStart..<keyEnd`), read without retaining arrays.
    let keyBytes: [UInt8]

    /// One column's per-record facts, taken from its `ColumnBinding` once.
    struct ColumnPlan {
        var keyStart: Int
        var keyEnd: Int
        var resolved: Bool
        /// The column's type, and the explicit intermediate cast when it differs from it.
        var target: CastTarget
        var castTarget: CastTarget?
        var dateOrder: DateOrder
        /// `json` or `text` columns take a JSON array or object as its text.
        var takesRaw: Bool
    }

    static let recordKey = Array("_record".utf8)
    static let errorKey = Array("_error".utf8)
    static let rawKey = Array("_raw_b64".utf8)
    static let sentAtKey = Array("_sent_at".utf8)

    public init(transform: Transform) {
        self.transform = transform
        let inverse = Dictionary(transform.renames.map { ($0.value, $0.key) }, uniquingKeysWith: { a, _ in a })
        fieldKeys = transform.bindings.map { binding in
            if let key = binding.key { return Array(key.utf8) }
            let field = inverse[binding.field] ?? binding.field
            return transform.drops.contains(field) ? [] : Array(field.utf8)
        }
        resolved = transform.bindings.map { $0.key != nil }
        separator = transform.flattenSeparator.map { Array($0.utf8) }
        nullIf = transform.nullIf.map { Array($0.utf8) }
        var keyBytes: [UInt8] = []
        var plans: [ColumnPlan] = []
        for (n, binding) in transform.bindings.enumerated() {
            let start = keyBytes.count
            keyBytes.append(contentsOf: fieldKeys[n])
            let castTarget = binding.castType.flatMap { $0 != binding.column.type ? $0.castTarget : nil }
            plans.append(
                ColumnPlan(
                    keyStart: start, keyEnd: keyBytes.count, resolved: resolved[n], target: binding.column.type.castTarget,
                    castTarget: castTarget, dateOrder: binding.column.dateOrder,
                    takesRaw: binding.column.type.family == .json || binding.column.type.family == .text))
        }
        self.keyBytes = keyBytes
        self.plans = plans
    }

    /// The decoder of a chain of transforms, topic side first: `chain[0]` reads the topic's
    /// records, each next transform reads the previous one's output columns (by column name,
    /// with its own renames, drops, casts and defaults), and the last one's columns are the row.
    /// - Precondition: `chain` is not empty (the compiler gives every sink a transform).
    public init(chain: [Transform]) {
        precondition(!chain.isEmpty, "a flow has at least one transform")
        self.init(transform: chain[0])
        next = chain.dropFirst().map { RecordDecoder(transform: $0) }
    }

    /// The COPY column list (quoted) of the chain's last transform, the record-id column last
    /// (the compiler's `Sink.columnList`).
    public var columnList: String {
        let last = next.last?.transform ?? transform
        return (last.bindings.map { SQL.quote($0.column.name) } + [SQL.quote(Sink.recordColumn)]).joined(separator: ", ")
    }

    public enum Outcome {
        /// A row was appended to the output; `recordID` when the message carried one.
        case row(RecordID?, sentAtMicros: Int64?)
        case rejected(RecordID?, RejectedRecord)
    }

    /// Decodes `payload` and appends its row (without the record-id column and newline) to `out`.
    /// A rejected record leaves `out` as it was; its payload is the message as it arrived.
    public mutating func decode(_ payload: UnsafeRawBufferPointer, into out: inout [UInt8]) -> Outcome {
        if next.isEmpty { return decodeRecord(payload, into: &out) }
        return decodeChain(payload, into: &out)
    }

    /// Runs the chain: each stage's row becomes the next stage's record, a JSON object of the
    /// stage's output columns (COPY `\N` as null, every other value as a string) carrying the
    /// record id and send time, so the last stage reports them as the first one read them.
    mutating func decodeChain(_ payload: UnsafeRawBufferPointer, into out: inout [UInt8]) -> Outcome {
        // Borrowed from `self` for the call (their capacity is kept for the next message).
        var row: [UInt8] = []
        var record: [UInt8] = []
        swap(&row, &stageRow)
        swap(&record, &stageRecord)
        defer {
            swap(&row, &stageRow)
            swap(&record, &stageRecord)
        }
        row.removeAll(keepingCapacity: true)
        let first = decodeRecord(payload, into: &row)
        guard case .row(let id, let sentAt) = first else { return first }
        var columns = transform.bindings.map(\.column.name)
        for i in next.indices {
            record.removeAll(keepingCapacity: true)
            Self.appendRecord(row: row, columns: columns, id: id, sentAt: sentAt, to: &record)
            row.removeAll(keepingCapacity: true)
            let outcome = record.withUnsafeBytes { next[i].decodeRecord($0, into: &row) }
            if case .rejected(_, let rejected) = outcome {
                let reason = "transform '\(next[i].transform.name)': \(rejected.reason)"
                return .rejected(id, RejectedRecord(stage: rejected.stage, reason: reason, payload: Array(payload.bindMemory(to: UInt8.self))))
            }
            columns = next[i].transform.bindings.map(\.column.name)
        }
        out.append(contentsOf: row)
        return .row(id, sentAtMicros: sentAt)
    }

    /// `{"_record":"<fingerprint>:<ordinal>","_sent_at":<µs>,"<column>":"<value>"|null,...}`
    /// from one row of COPY text (tab-separated, `\N` for null, backslash escapes).
    static func appendRecord(row: [UInt8], columns: [String], id: RecordID?, sentAt: Int64?, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "{"))
        var first = true
        func key(_ name: String) {
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
            JSONText.appendString(name, to: &out)
            out.append(UInt8(ascii: ":"))
        }
        if let id {
            key("_record")
            JSONText.appendString("\(id.fingerprint):\(id.ordinal)", to: &out)
        }
        if let sentAt {
            key("_sent_at")
            JSONText.appendDecimal(sentAt, to: &out)
        }
        var start = row.startIndex
        for (n, column) in columns.enumerated() {
            let end = row[start...].firstIndex(of: 0x09) ?? row.endIndex
            let value = row[start..<end]
            key(column)
            if value.elementsEqual([0x5C, UInt8(ascii: "N")]) {
                out.append(contentsOf: "null".utf8)
            } else if value.contains(0x5C) {
                JSONText.appendString(ValueCaster.unescapeCopy(Array(value)), to: &out)
            } else {
                JSONText.appendString(value, to: &out)
            }
            start = n + 1 < columns.count ? min(end + 1, row.endIndex) : end
        }
        out.append(UInt8(ascii: "}"))
    }

    /// One transform: the message's fields to the columns' COPY text.
    mutating func decodeRecord(_ payload: UnsafeRawBufferPointer, into out: inout [UInt8]) -> Outcome {
        let bytes = payload.bindMemory(to: UInt8.self)
        do {
            try JSONScanner.parse(bytes, flattenWith: separator, into: &json)
        } catch let failure as JSONScanner.Failure {
            return .rejected(nil, RejectedRecord(stage: "parse", reason: failure.message, payload: Array(bytes)))
        } catch {
            return .rejected(nil, RejectedRecord(stage: "parse", reason: "\(error)", payload: Array(bytes)))
        }
        var id: RecordID?
        if let i = json.index(of: Self.recordKey, hint: 0) {
            id = RecordID(json.scratch[json.fields[i].valueStart..<json.fields[i].valueEnd], lastFingerprint: &lastFingerprint)
        }
        var sentAt: Int64?
        if let i = json.index(of: Self.sentAtKey, hint: 1), json.fields[i].kind == .number {
            sentAt = Self.parseInt64(json.scratch[json.fields[i].valueStart..<json.fields[i].valueEnd])
        }
        if let e = json.index(of: Self.errorKey, hint: 2) {
            let reason = String(decoding: json.scratch[json.fields[e].valueStart..<json.fields[e].valueEnd], as: UTF8.self)
            var raw = Array(bytes)
            if let r = json.index(of: Self.rawKey, hint: 4),
                let data = Data(base64Encoded: String(decoding: json.scratch[json.fields[r].valueStart..<json.fields[r].valueEnd], as: UTF8.self))
            {
                raw = Array(data)
            }
            return .rejected(id, RejectedRecord(stage: "source", reason: reason, payload: raw))
        }
        let start = out.count
        for n in 0..<plans.count {
            if n > 0 { out.append(0x09) }
            if let problem = appendValue(n, to: &out) {
                out.removeSubrange(start...)
                return .rejected(id, RejectedRecord(stage: "cast", reason: problem, payload: Array(bytes)))
            }
        }
        return .row(id, sentAtMicros: sentAt)
    }

    /// `Int64(String(decoding: bytes, as: UTF8.self))` without the String: an optional sign,
    /// then only digits; nil for anything else or out of range.
    static func parseInt64(_ bytes: ArraySlice<UInt8>) -> Int64? {
        var i = bytes.startIndex
        guard i < bytes.endIndex else { return nil }
        let negative = bytes[i] == UInt8(ascii: "-")
        if negative || bytes[i] == UInt8(ascii: "+") { i += 1 }
        guard i < bytes.endIndex else { return nil }
        // Accumulated as negative so Int64.min fits.
        var acc: Int64 = 0
        while i < bytes.endIndex {
            let d = bytes[i] &- 0x30
            guard d < 10 else { return nil }
            let (m, o1) = acc.multipliedReportingOverflow(by: 10)
            let (v, o2) = m.subtractingReportingOverflow(Int64(d))
            if o1 || o2 { return nil }
            acc = v
            i += 1
        }
        if negative { return acc }
        return acc == .min ? nil : -acc
    }

    /// Appends one column's COPY text; returns the reason when the record cannot fill it.
    mutating func appendValue(_ n: Int, to out: inout [UInt8]) -> String? {
        let plan = plans[n]
        let hasKey = plan.keyEnd > plan.keyStart
        var index: Int? = nil
        if hasKey {
            index = keyBytes.withUnsafeBufferPointer { json.index(of: UnsafeBufferPointer(rebasing: $0[plan.keyStart..<plan.keyEnd]), hint: n + 2) }
            if index == nil, !plan.resolved { index = normalizedIndex(of: fieldKeys[n]) }
        }
        var isNull = true
        if let index {
            let f = json.fields[index]
            isNull = f.kind == .null
            if !isNull, f.kind == .string, !nullIf.isEmpty {
                let value = json.scratch[f.valueStart..<f.valueEnd]
                isNull = nullIf.contains { $0.elementsEqual(value) }
            }
            if !isNull, f.kind == .raw, !plan.takesRaw {
                let binding = transform.bindings[n]
                return
                    "field '\(binding.field)' holds a JSON \(json.scratch[f.valueStart] == UInt8(ascii: "[") ? "array" : "object"), not a \(binding.column.type)"
            }
        }
        if isNull { return appendNull(transform.bindings[n], to: &out, why: index == nil ? "is missing" : "is null") }
        let f = json.fields[index!]
        let error: CastError? = json.scratch.withUnsafeBufferPointer { all in
            let value = UnsafeBufferPointer(rebasing: all[f.valueStart..<f.valueEnd])
            if let castTarget = plan.castTarget {
                castScratch.removeAll(keepingCapacity: true)
                if let e = ValueCaster.append(value, castingTo: castTarget, dateOrder: plan.dateOrder, to: &castScratch) { return e }
                let canonical = ValueCaster.unescapeCopyBytes(castScratch)
                return canonical.withUnsafeBufferPointer { ValueCaster.append($0, castingTo: plan.target, to: &out) }
            }
            return ValueCaster.append(value, castingTo: plan.target, dateOrder: plan.dateOrder, to: &out)
        }
        guard let error else { return nil }
        let binding = transform.bindings[n]
        switch binding.onCastError {
        case .deadLetter: return "column '\(binding.column.name)': \(error.message)"
        case .null:
            out.append(contentsOf: "\\N".utf8)
            return nil
        case .default: return appendNull(binding, to: &out, why: "could not be cast")
        }
    }

    /// The first field whose normalised name is `wanted` (and which is not dropped).
    mutating func normalizedIndex(of wanted: [UInt8]) -> Int? {
        for i in json.fields.indices {
            let raw = Array(json.scratch[json.fields[i].keyStart..<json.fields[i].keyEnd])
            let normalized: [UInt8]
            if let cached = normalizedKeys[raw] {
                normalized = cached
            } else {
                normalized = Array(FieldMatching.normalized(String(decoding: raw, as: UTF8.self)).utf8)
                if normalizedKeys.count < 10_000 { normalizedKeys[raw] = normalized }  // bounded: keys of other producers vary
            }
            if normalized == wanted, !transform.drops.contains(String(decoding: raw, as: UTF8.self)) { return i }
        }
        return nil
    }

    func appendNull(_ binding: ColumnBinding, to out: inout [UInt8], why: String) -> String? {
        if let d = binding.defaultValue {
            let error: CastError? = Array(d.utf8).withUnsafeBufferPointer {
                ValueCaster.append($0, as: binding.column.type, dateOrder: binding.column.dateOrder, to: &out)
            }
            return error.map { "default for '\(binding.column.name)': \($0.message)" }
        }
        if !binding.column.nullable {
            return "column '\(binding.column.name)' is not nullable and field '\(binding.field)' \(why)"
        }
        out.append(contentsOf: "\\N".utf8)
        return nil
    }
}

extension ValueCaster {
    /// COPY text back to plain bytes (for a second cast step).
    static func unescapeCopyBytes(_ bytes: [UInt8]) -> [UInt8] {
        guard bytes.contains(0x5C) else { return bytes }
        return Array(unescapeCopy(bytes).utf8)
    }
}
