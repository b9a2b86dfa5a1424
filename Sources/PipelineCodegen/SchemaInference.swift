import Foundation
import PipelineCompiler
import RecordFormats

/// Infers column types from a CSV sample, for `pipectl infer` and `pipectl init`.
public struct SchemaInference {
    public struct InferredColumn: Equatable, Sendable {
        public var name: String
        /// The header cell as written, before normalisation.
        public var header: String
        public var type: SQLType
        public var nullable: Bool
    }

    public var delimiter: UInt8 = UInt8(ascii: ",")
    public var quote: UInt8 = UInt8(ascii: "\"")
    public var header = true
    public var null = ""
    /// How many records to look at.
    public var sampleSize = 10_000

    public init() {}

    /// Candidate types, narrowest first; a column keeps the narrowest one all its values fit.
    struct Candidates {
        var integer = true, bigint = true, double = true, numeric = true, boolean = true, date = true, timestamp = true
        var nullable = false
        var seen = 0
        var maxSignificant = 0

        mutating func observe(_ value: UnsafeBufferPointer<UInt8>) {
            seen += 1
            var out: [UInt8] = []
            if integer { integer = ValueCaster.append(value, as: .integer, to: &out) == nil && !value.contains(UInt8(ascii: ".")) }
            if bigint, !integer { out.removeAll(); bigint = ValueCaster.append(value, as: .bigint, to: &out) == nil && !value.contains(UInt8(ascii: ".")) }
            if double || numeric {
                let text = String(decoding: value, as: UTF8.self).trimmingCharacters(in: .whitespaces)
                out.removeAll()
                let isNumber = text.lowercased().rangeOfCharacter(from: CharacterSet(charactersIn: "ni")) == nil
                    && ValueCaster.append(value, as: .numeric(precision: nil, scale: nil), to: &out) == nil
                if !isNumber { double = false; numeric = false } else {
                    maxSignificant = max(maxSignificant, text.filter(\.isNumber).drop(while: { $0 == "0" }).count)
                }
            }
            if boolean {
                let word = String(decoding: value, as: UTF8.self).trimmingCharacters(in: .whitespaces).lowercased()
                boolean = ["true", "false", "yes", "no", "t", "f", "y", "n"].contains(word)
            }
            if date { out.removeAll(); date = ValueCaster.append(value, as: .date, to: &out) == nil }
            if timestamp { out.removeAll(); timestamp = ValueCaster.append(value, as: .timestamp, to: &out) == nil }
        }

        var type: SQLType {
            if seen == 0 { return .text }
            if integer { return .integer }
            if bigint { return .bigint }
            if double || numeric { return maxSignificant > 15 ? .numeric(precision: nil, scale: nil) : .doublePrecision }
            if boolean { return .boolean }
            if date { return .date }
            if timestamp { return .timestamp }
            return .text
        }
    }

    public func infer(path: String) throws -> [InferredColumn] {
        try infer(reader: CSVReader(path: path, delimiter: delimiter, quote: quote))
    }

    public func infer(reader: CSVReader) throws -> [InferredColumn] {
        reader.keepRaw = false
        var record = CSVRecord()
        var headers: [String] = []
        if header {
            guard reader.next(into: &record) else { throw CSVError(message: "the file is empty: no header to name the columns") }
            if let error = record.error { throw CSVError(message: "header: \(error)") }
            headers = (0..<record.count).map { record.string($0) }
        }
        var candidates: [Candidates] = Array(repeating: Candidates(), count: headers.count)
        var read = 0
        let nullBytes = Array(null.utf8)
        while read < sampleSize, reader.next(into: &record) {
            read += 1
            if record.error != nil { continue }
            while candidates.count < record.count {
                candidates.append(Candidates())
                headers.append("column_\(candidates.count)")
            }
            for i in 0..<record.count {
                let range = record.range(i)
                let isNull = !record.quoted[i] && record.bytes[range].elementsEqual(nullBytes)
                if isNull || range.isEmpty {
                    candidates[i].nullable = true
                    continue
                }
                record.bytes[range].withUnsafeBufferPointer { candidates[i].observe($0) }
            }
            if record.count < candidates.count {
                for i in record.count..<candidates.count { candidates[i].nullable = true }
            }
        }
        let names = CSVReader.normalizeHeader(headers)
        return candidates.indices.map { i in
            InferredColumn(name: names[i], header: headers[i], type: candidates[i].type, nullable: candidates[i].nullable)
        }
    }

    /// `schemas/NAME.yaml` for the inferred columns.
    public static func schemaYAML(name: String, columns: [InferredColumn], from csv: String) -> String {
        // The surrogate key and load time take names the CSV does not use.
        let taken = Set(columns.map(\.name))
        func free(_ candidates: [String]) -> String {
            candidates.first { !taken.contains($0) } ?? candidates.last! + "_\(taken.count)"
        }
        let idName = free(["id", "row_id", "pipectl_id"])
        let loadedName = free(["loaded_at", "pipectl_loaded_at"])
        var out = """
        # Inferred by `pipectl init` from \(yamlComment(csv)); review the types before loading.
        version: 1
        name: \(name)
        columns:
          - { name: \(idName), type: bigserial, primary_key: true }

        """
        for c in columns {
            let renamed = c.header == c.name ? "" : "  # header: \(yamlComment(c.header))"
            out += "  - { name: \(c.name), type: \(c.type)\(c.nullable ? "" : ", nullable: false") }\(renamed)\n"
        }
        out += "  - { name: \(loadedName), type: timestamptz, default: current_timestamp }\n"
        return out
    }

    /// A header cell for a `# header:` comment. YAML ends a comment at any line break, and
    /// U+2028, U+2029 and U+0085 are line breaks too: escaping only `\n` and `\r` let a header
    /// add columns to the schema. Every line break and control character is escaped.
    static func yamlComment(_ s: String) -> String { GeneratedText.comment(s) }

    /// `pipelines/NAME.yaml` loading the CSV into table NAME.
    public static func pipelineYAML(name: String, csvPath: String, delimiter: UInt8, columns: [InferredColumn]) -> String {
        let delim = delimiter == UInt8(ascii: ",") ? "\",\"" : yamlQuoted(String(decoding: [delimiter], as: UTF8.self))
        return """
        # Made by `pipectl init`: loads \(yamlComment(csvPath)) into table \(name).
        version: 1
        name: \(name)

        sources:
          - name: \(name)_csv
            type: csv
            path: \(yamlQuoted(csvPath))
            header: true
            delimiter: \(delim)
            batch_size: 100

        topics:
          - name: \(name)-data
            from: \(name)_csv
            brokers: ${KAFKA_BROKERS:-127.0.0.1:9092}
            partitions: 1

        schemas:
          - ../schemas/\(name).yaml

        transforms:
          - name: \(name)_rows
            from: \(name)-data
            schema: \(name)

        sinks:
          - name: \(name)_db
            type: postgres
            from: \(name)_rows
            url: ${DATABASE_URL:-postgresql://postgres@127.0.0.1:55432/postgres}
            table: \(name)
            batch_size: 5000

        """
    }

    /// A YAML double-quoted scalar; line breaks and control characters become YAML escapes
    /// (`\n`, `\uXXXX`), so the value stays on its line.
    static func yamlQuoted(_ s: String) -> String {
        "\"" + GeneratedText.comment(s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")) + "\""
    }
}
