import Foundation
import PipelineCompiler
import RecordFormats

/// Infers column types from a CSV sample, for `pipectl infer` and `pipectl init`.
public struct SchemaInference {
    /// One column guessed from the sample, in file order.
    public struct InferredColumn: Equatable, Sendable {
        /// The column name: the header cell normalised (`Zip Code` -> `zip_code`, `CSVReader.normalizeHeader`),
        /// or `column_N` (1-based) without a header or past its end.
        public var name: String
        /// The header cell as written, before normalisation.
        public var header: String
        /// The narrowest type every non-null sampled value fits, tried in the order integer, bigint,
        /// double precision (numeric beyond 15 significant digits), boolean, date, timestamp
        /// (timestamptz when a value carried a zone), else text; text when the column had no value.
        public var type: SQLType
        /// Whether a sampled record had the column empty, equal to `null`, or missing (short record).
        public var nullable: Bool
        /// The order assumed for `03/05/2011`-style values, when the column had any; the
        /// schema says so (`date_order:`) and the runtime reads the dates the same way.
        public var dateOrder: DateOrder? = nil
    }

    /// The field delimiter, one ASCII byte (`--delimiter`); default `,`.
    public var delimiter: UInt8 = UInt8(ascii: ",")
    /// The quote character, one ASCII byte; default `"`.
    public var quote: UInt8 = UInt8(ascii: "\"")
    /// Whether the first record names the columns (default true); when false they are named
    /// `column_1`, `column_2`, ...
    public var header = true
    /// The unquoted cell text that means NULL (default `""`); an empty cell always counts as null.
    public var null = ""
    /// How many records to look at.
    public var sampleSize = 10_000
    /// How `03/05/2011` is read (`--date-order`); month first unless told otherwise.
    public var dateOrder = DateOrder.mdy
    /// The file's text encoding (`--encoding`, or detected); the sample is converted to UTF-8.
    public var encoding: TextEncoding = .utf8

    /// Defaults: `,`, `"`, a header, the empty cell as NULL, 10,000 records, `mdy`, UTF-8.
    public init() {}

    /// Candidate types, narrowest first; a column keeps the narrowest one all its values fit.
    struct Candidates {
        var integer = true, bigint = true, double = true, numeric = true, boolean = true, date = true, timestamp = true
        var nullable = false
        var seen = 0
        var maxSignificant = 0
        /// A value carried `Z` or an offset: the column is timestamptz, or the zone would be lost.
        var zoned = false
        /// A value was written `NN/NN/YYYY`, so the date order mattered.
        var slashDate = false
        let order: DateOrder

        init(order: DateOrder) { self.order = order }

        /// `007`, `-01`, `00.5`: a leading zero is part of an identifier (ZIP codes, parameter
        /// codes), which a number would destroy. `0`, `0.5` and `-0.5` are numbers.
        static func hasLeadingZero(_ value: UnsafeBufferPointer<UInt8>) -> Bool {
            var i = 0
            while i < value.count, value[i] == 0x20 || value[i] == 0x09 { i += 1 }
            if i < value.count, value[i] == UInt8(ascii: "-") || value[i] == UInt8(ascii: "+") { i += 1 }
            return i + 1 < value.count && value[i] == UInt8(ascii: "0") && value[i + 1] &- 0x30 < 10
        }

        mutating func observe(_ value: UnsafeBufferPointer<UInt8>) {
            seen += 1
            var out: [UInt8] = []
            if integer || bigint || double || numeric, Self.hasLeadingZero(value) {
                integer = false
                bigint = false
                double = false
                numeric = false
            }
            if integer { integer = ValueCaster.append(value, as: .integer, to: &out) == nil && !value.contains(UInt8(ascii: ".")) }
            if bigint, !integer {
                out.removeAll()
                bigint = ValueCaster.append(value, as: .bigint, to: &out) == nil && !value.contains(UInt8(ascii: "."))
            }
            if double || numeric {
                let text = String(decoding: value, as: UTF8.self).trimmingCharacters(in: .whitespaces)
                out.removeAll()
                let isNumber =
                    text.lowercased().rangeOfCharacter(from: CharacterSet(charactersIn: "ni")) == nil
                    && ValueCaster.append(value, as: .numeric(precision: nil, scale: nil), to: &out) == nil
                if !isNumber {
                    double = false
                    numeric = false
                } else {
                    maxSignificant = max(maxSignificant, text.filter(\.isNumber).drop(while: { $0 == "0" }).count)
                }
            }
            if boolean {
                let word = String(decoding: value, as: UTF8.self).trimmingCharacters(in: .whitespaces).lowercased()
                boolean = ["true", "false", "yes", "no", "t", "f", "y", "n"].contains(word)
            }
            if date {
                out.removeAll()
                date = ValueCaster.append(value, as: .date, dateOrder: order, to: &out) == nil
            }
            if timestamp {
                out.removeAll()
                timestamp = ValueCaster.append(value, as: .timestamp, dateOrder: order, to: &out) == nil
                if timestamp, let scanned = ValueCaster.scanTimestamp(value[...].trimmingBlanks, order: order), !scanned.zone.isEmpty {
                    zoned = true
                }
            }
            if date || timestamp, value.count >= 10 {
                let v = value[...].trimmingBlanks
                if v.count >= 10, v[v.startIndex + 2] == UInt8(ascii: "/"), v[v.startIndex + 5] == UInt8(ascii: "/") { slashDate = true }
            }
        }

        var type: SQLType {
            if seen == 0 { return .text }
            if integer { return .integer }
            if bigint { return .bigint }
            if double || numeric { return maxSignificant > 15 ? .numeric(precision: nil, scale: nil) : .doublePrecision }
            if boolean { return .boolean }
            if date { return .date }
            if timestamp { return zoned ? .timestamptz : .timestamp }
            return .text
        }
    }

    /// Infers the columns of the CSV file at `path`, read in `encoding`.
    /// - Throws: `CSVError` when the file is empty or its header is malformed, or the error of
    /// opening or decoding the file.
    public func infer(path: String) throws -> [InferredColumn] {
        try infer(reader: SourceText.reader(path: path, encoding: encoding, delimiter: delimiter, quote: quote))
    }

    /// Infers the columns from the first `sampleSize` records of `reader` (after the header when
    /// `header` is set); malformed records are skipped. Sets `reader.keepRaw` to false.
    /// - Throws: `CSVError` when there is no header record or the header is malformed.
    public func infer(reader: CSVReader) throws -> [InferredColumn] {
        reader.keepRaw = false
        var record = CSVRecord()
        var headers: [String] = []
        if header {
            guard reader.next(into: &record) else { throw CSVError(message: "the file is empty: no header to name the columns") }
            if let error = record.error { throw CSVError(message: "header: \(error)") }
            headers = (0..<record.count).map { record.string($0) }
        }
        var candidates: [Candidates] = Array(repeating: Candidates(order: dateOrder), count: headers.count)
        var read = 0
        let nullBytes = Array(null.utf8)
        while read < sampleSize, reader.next(into: &record) {
            read += 1
            if record.error != nil { continue }
            while candidates.count < record.count {
                candidates.append(Candidates(order: dateOrder))
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
            let type = candidates[i].type
            let dated = [.date, .timestamp, .timestamptz].contains(type) && candidates[i].slashDate
            return InferredColumn(
                name: names[i], header: headers[i], type: type, nullable: candidates[i].nullable,
                dateOrder: dated ? dateOrder : nil)
        }
    }

    /// The encoding to read `path` with: `declared` when given, else what the file's first bytes
    /// look like (`TextEncoding.sniff`), else UTF-8. Returns the reason when it was detected.
    public static func encoding(of path: String, declared: TextEncoding?) throws -> (TextEncoding, detected: String?) {
        if let declared { return (declared, nil) }
        if let (guess, why) = TextEncoding.sniff(try SourceText.sample(path: path)) { return (guess, why) }
        return (.utf8, nil)
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
            let order = c.dateOrder.map { ", date_order: \($0.rawValue)" } ?? ""
            out += "  - { name: \(c.name), type: \(c.type)\(c.nullable ? "" : ", nullable: false")\(order) }\(renamed)\n"
        }
        out += "  - { name: \(loadedName), type: timestamptz, default: current_timestamp }\n"
        return out
    }

    /// A header cell for a `# header:` comment. YAML ends a comment at any line break, and
    /// U+2028, U+2029 and U+0085 are line breaks too: escaping only `\n` and `\r` let a header
    /// add columns to the schema. Every line break and control character is escaped.
    static func yamlComment(_ s: String) -> String { GeneratedText.comment(s) }

    /// `pipelines/NAME.yaml` loading the CSV into table NAME.
    public static func pipelineYAML(
        name: String, csvPath: String, delimiter: UInt8, encoding: TextEncoding = .utf8,
        columns: [InferredColumn]
    ) -> String {
        let delim = delimiter == UInt8(ascii: ",") ? "\",\"" : yamlQuoted(String(decoding: [delimiter], as: UTF8.self))
        // Only a file that is not UTF-8 says so: the line is the one thing that makes it load right.
        let encodingLine = encoding == .utf8 ? "" : "\n    encoding: \(encoding.rawValue)"
        return """
            # Made by `pipectl init`: loads \(yamlComment(csvPath)) into table \(name).
            version: 1
            name: \(name)

            sources:
              - name: \(name)_csv
                type: csv
                path: \(yamlQuoted(csvPath))
                header: true
                delimiter: \(delim)\(encodingLine)
                batch_size: 100         # rows per micro-batch (checkpointed as delivered; many in flight)

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
                batch_size: 10000       # rows per transaction at most; fewer commit within max_delay_ms
                max_delay_ms: 200

            """
    }

    /// A YAML double-quoted scalar; line breaks and control characters become YAML escapes
    /// (`\n`, `\uXXXX`), so the value stays on its line.
    static func yamlQuoted(_ s: String) -> String {
        "\"" + GeneratedText.comment(s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")) + "\""
    }
}

extension Slice where Base == UnsafeBufferPointer<UInt8> {
    /// Without surrounding blanks, as the caster reads numbers and dates.
    var trimmingBlanks: Slice<UnsafeBufferPointer<UInt8>> {
        var v = self
        while let f = v.first, f == 0x20 || f == 0x09 { v = v.dropFirst() }
        while let l = v.last, l == 0x20 || l == 0x09 { v = v.dropLast() }
        return v
    }
}
