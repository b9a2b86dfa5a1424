import Foundation
import KafkaAdapter
import PipelineCompiler
import RecordFormats

/// Counts from one producer run.
public struct ProduceReport: Sendable {
    public var rowsRead = 0
    public var rowsSent = 0
    /// Rows sent as error records (malformed CSV, too large): the consumer dead-letters them.
    public var rowsSentAsErrors = 0
    public var fingerprint = ""
    /// End offset of each partition once every record was delivered (from delivery reports).
    public var endOffsets: [Int32: Int64] = [:]
    /// The ID of the topic incarnation the records went to.
    public var topicID: String?
}

/// The CSV source and topic writer: streams the file, turns each record into a JSON object
/// carrying its record id, and sends micro-batches to the topic.
public final class CSVProducer {
    let source: Source
    let topic: Topic
    let log: (String) -> Void

    public init(source: Source, topic: Topic, log: @escaping (String) -> Void = { print($0) }) {
        self.source = source
        self.topic = topic
        self.log = log
    }

    public static func kafkaSettings(_ topic: Topic) -> [String: String] {
        var settings = ["bootstrap.servers": topic.brokers]
        for (k, v) in topic.properties where !k.hasPrefix("consumer.") {
            settings[k.hasPrefix("producer.") ? String(k.dropFirst("producer.".count)) : k] = v
        }
        return settings
    }

    public func run() throws -> ProduceReport {
        var report = ProduceReport()
        report.fingerprint = try Fingerprint.ofFile(atPath: source.resolvedPath)
        var settings = Self.kafkaSettings(topic)
        settings["linger.ms"] = settings["linger.ms"] ?? String(topic.lingerMs)
        settings["compression.type"] = settings["compression.type"] ?? topic.compression
        settings["batch.size"] = settings["batch.size"] ?? String(topic.batchBytes)
        settings["message.max.bytes"] = settings["message.max.bytes"] ?? String(topic.messageMaxBytes)
        let writer = try TopicWriter(topic: topic.name, settings: settings)

        let reader = try CSVReader(path: source.resolvedPath, delimiter: source.delimiter, quote: source.quote)
        var record = CSVRecord()
        var names: [[UInt8]] = []
        if source.header {
            if reader.next(into: &record) {
                names = CSVReader.normalizeHeader((0..<record.count).map { record.string($0) }).map { Array($0.utf8) }
            } else {
                log("warning: \(source.path) is empty (no header)")
            }
        }
        let headerRecords = source.header ? 1 : 0
        let fingerprintPrefix = Array(report.fingerprint.utf8)
        let nullBytes = Array(source.null.utf8)

        // Batches are reported in order once all their delivery reports are in.
        var outstanding: [Int: Int] = [:]
        var sizes: [Int: Int] = [:]
        var nextToReport = 0
        var deliveryError: KafkaError?
        var tooLarge: [Int: Int] = [:]
        // The end of each partition, from the delivery reports (Tansu's ListOffsets reports the
        // base offset of the last batch as the high watermark, so watermarks cannot tell).
        var ends: [Int32: Int64] = [:]
        writer.onDelivery = { token, error, partition, offset in
            if let error, deliveryError == nil { deliveryError = error }
            if error == nil, offset >= 0 { ends[partition] = max(ends[partition] ?? 0, offset + 1) }
            outstanding[token, default: 0] -= 1
        }
        func reportFinished() {
            while let left = outstanding[nextToReport], left <= 0, let size = sizes[nextToReport] {
                log("Sent batch of \(size) records to \(topic.name)")
                outstanding[nextToReport] = nil
                sizes[nextToReport] = nil
                nextToReport += 1
            }
        }

        var value: [UInt8] = []
        var key: [UInt8] = []
        var batch = 0
        var inBatch = 0
        let started = Date()
        let keyFields = topic.key.map { Array($0.utf8) }
        while !StopSignal.requested, reader.next(into: &record) {
            let ordinal = record.ordinal - Int64(headerRecords)
            report.rowsRead += 1
            if names.isEmpty, !source.header {
                names = (1...max(record.count, 1)).map { Array("column_\($0)".utf8) }
            }
            let recordID = fingerprintPrefix + [UInt8(ascii: ":")] + Array(String(ordinal).utf8)
            var problem = record.error
            var fieldCount = record.count
            if problem == nil, fieldCount == names.count + 1, record.range(fieldCount - 1).isEmpty, !record.quoted[fieldCount - 1] {
                fieldCount -= 1  // a trailing delimiter
            }
            if problem == nil, fieldCount != names.count {
                problem = "wrong number of fields on line \(record.line): expected \(names.count), found \(record.count)"
            }
            if problem == nil, !JSONText.isValidUTF8(record.bytes) {
                problem = "line \(record.line) is not valid UTF-8"
            }
            value.removeAll(keepingCapacity: true)
            value.append(contentsOf: "{\"_record\":\"".utf8)
            value.append(contentsOf: recordID)
            value.append(contentsOf: "\",\"_sent_at\":".utf8)
            value.append(contentsOf: String(Int64(Date().timeIntervalSince1970 * 1_000_000)).utf8)
            if let problem {
                Self.appendError(problem, line: record.line, raw: record.raw, to: &value)
            } else {
                for i in 0..<fieldCount {
                    value.append(UInt8(ascii: ","))
                    JSONText.appendString(names[i], to: &value)
                    value.append(UInt8(ascii: ":"))
                    let range = record.range(i)
                    if !record.quoted[i], record.bytes[range].elementsEqual(nullBytes) {
                        value.append(contentsOf: "null".utf8)
                    } else {
                        JSONText.appendString(record.bytes[range], to: &value)
                    }
                }
                value.append(UInt8(ascii: "}"))
            }
            if value.count > topic.messageMaxBytes {
                let size = value.count
                value.removeAll(keepingCapacity: true)
                value.append(contentsOf: "{\"_record\":\"".utf8)
                value.append(contentsOf: recordID)
                value.append(UInt8(ascii: "\""))
                Self.appendError("record on line \(record.line) is \(size) bytes as JSON, over the topic's message_max_bytes (\(topic.messageMaxBytes)); the dead-lettered payload is its first 64 KiB",
                                 line: record.line, raw: Array(record.raw.prefix(65536)), to: &value)
                tooLarge[batch, default: 0] += 1
                problem = "too large"
            }
            // The message key: the record id by default, else the named fields' values.
            key.removeAll(keepingCapacity: true)
            if keyFields == [Array(Topic.recordKey.utf8)] || problem != nil {
                key.append(contentsOf: recordID)
            } else {
                for (n, field) in keyFields.enumerated() {
                    if n > 0 { key.append(UInt8(ascii: "|")) }
                    if let i = names.firstIndex(of: field), i < record.count { key.append(contentsOf: record.bytes[record.range(i)]) }
                }
            }
            outstanding[batch, default: 0] += 1
            try value.withUnsafeBytes { v in
                try key.withUnsafeBytes { k in
                    try writer.send(value: v, key: k, token: batch)
                }
            }
            if problem != nil { report.rowsSentAsErrors += 1 }
            report.rowsSent += 1
            inBatch += 1
            if inBatch == source.batchSize {
                sizes[batch] = inBatch
                batch += 1
                inBatch = 0
                writer.poll(timeoutMs: 0)
                reportFinished()
                if let rate = source.rateLimit {
                    let due = started.addingTimeInterval(Double(report.rowsSent) / rate)
                    let wait = due.timeIntervalSinceNow
                    if wait > 0 { pollWhile(writer, seconds: wait) }
                    reportFinished()
                }
            }
            if let error = deliveryError ?? writer.fatalError { throw error }
        }
        if inBatch > 0 { sizes[batch] = inBatch }
        while writer.queued > 0 {
            if !writer.flush(timeoutMs: 1000) {
                reportFinished()
                if let error = deliveryError ?? writer.fatalError { throw error }
                if Date().timeIntervalSince(started) > 600 {
                    throw KafkaError("records still undelivered after 10 minutes: \(writer.lastTransientError ?? "no reply from the broker")")
                }
            }
        }
        writer.poll(timeoutMs: 0)
        reportFinished()
        if let error = deliveryError ?? writer.fatalError { throw error }
        report.endOffsets = ends
        return report
    }

    func pollWhile(_ writer: TopicWriter, seconds: Double) {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end, !StopSignal.requested {
            writer.poll(timeoutMs: Int32(max(1, min(100, end.timeIntervalSinceNow * 1000))))
        }
    }

    /// A stand-in for a record that cannot travel as itself: the consumer dead-letters it with
    /// the reason and the raw bytes (base64, since they may not be UTF-8).
    static func appendError(_ reason: String, line: Int, raw: [UInt8], to value: inout [UInt8]) {
        value.append(contentsOf: ",\"_error\":".utf8)
        JSONText.appendString(reason, to: &value)
        value.append(contentsOf: ",\"_line\":\(line),\"_raw_b64\":\"".utf8)
        value.append(contentsOf: Data(raw).base64EncodedString().utf8)
        value.append(contentsOf: "\"}".utf8)
    }
}
