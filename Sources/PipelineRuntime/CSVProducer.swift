import Foundation
import Logging
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
    /// Ctrl-C / SIGTERM stopped the producer before the end of the file.
    public var interrupted = false
}

/// The CSV source and topic writer: streams the file, turns each record into a JSON object
/// carrying its record id, and sends micro-batches to the topic.
public final class CSVProducer {
    let source: Source
    let topic: Topic
    let logger: Logger

    public init(source: Source, topic: Topic, logger: Logger = Logger(label: "pipectl.producer")) {
        self.source = source
        self.topic = topic
        self.logger = logger
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
        // One read: the records come from the very bytes the fingerprint describes, so a file
        // appended to or rewritten while it is sent cannot lend its id to other content.
        let snapshot = try SourceSnapshot(path: source.resolvedPath)
        report.fingerprint = snapshot.fingerprint
        var settings = Self.kafkaSettings(topic)
        settings["linger.ms"] = settings["linger.ms"] ?? String(topic.lingerMs)
        settings["compression.type"] = settings["compression.type"] ?? topic.compression
        settings["batch.size"] = settings["batch.size"] ?? String(topic.batchBytes)
        settings["message.max.bytes"] = settings["message.max.bytes"] ?? String(topic.messageMaxBytes)
        let writer = try TopicWriter(topic: topic.name, settings: settings)

        let reader = try snapshot.reader(path: source.resolvedPath, encoding: source.encoding, delimiter: source.delimiter, quote: source.quote)
        var record = CSVRecord()
        var names: [[UInt8]] = []
        if source.header {
            if reader.next(into: &record) {
                // Fields keep the header's spelling; the consumer matches them to columns (FieldMatching).
                names = FieldMatching.fieldNames(header: (0..<record.count).map { record.string($0) }).map { Array($0.utf8) }
            } else {
                logger.warning("\(source.path) is empty (no header)")
            }
        }
        let headerRecords = source.header ? 1 : 0
        let fingerprintPrefix = Array(report.fingerprint.utf8)
        let nullBytes = Array(source.null.utf8)

        // Batches are reported in order once all their delivery reports are in: `outstanding`
        // and `sizes` are indexed by batch number minus `nextToReport`.
        var outstanding: [Int] = []
        var sizes: [Int] = []
        var nextToReport = 0
        var deliveryError: KafkaError?
        // The end of each partition, from the delivery reports (Tansu's ListOffsets reports the
        // base offset of the last batch as the high watermark, so watermarks cannot tell).
        var ends: [Int32: Int64] = [:]
        writer.onDelivery = { token, error, partition, offset in
            if let error, deliveryError == nil { deliveryError = error }
            if error == nil, offset >= 0, offset + 1 > ends[partition] ?? 0 { ends[partition] = offset + 1 }
            outstanding[token - nextToReport] -= 1
        }
        func reportFinished() {
            var done = 0
            while done < sizes.count, outstanding[done] <= 0, sizes[done] > 0 {
                Emit.count(.sourceRowsRead, sizes[done], [("source", source.name)])
                Emit.gauge(.sourceBytesRead, Int64(reader.bytesRead), [("source", source.name)])
                Emit.count(.recordsProduced, sizes[done], [("topic", topic.name)])
                // The seed producer printed this line per micro-batch; now it is detail (--verbose).
                logger.debug("Sent batch of \(sizes[done]) records to \(topic.name)")
                done += 1
            }
            if done > 0 {
                outstanding.removeFirst(done)
                sizes.removeFirst(done)
                nextToReport += done
            }
        }

        var value: [UInt8] = []
        value.reserveCapacity(4096)
        var key: [UInt8] = []
        var recordID: [UInt8] = []
        var batch = 0
        var inBatch = 0
        var started = Date()
        Emit.gauge(.sourceSize, Int64(snapshot.size), [("source", source.name)])
        let keyIsRecordID = topic.key == [Topic.recordKey]
        // Key fields by the matching rule: exact header name, else normalised (`sku` finds `SKU`).
        var keyIndices: [Int?] = []
        func resolveKeys() {
            let fields = names.map { String(decoding: $0, as: UTF8.self) }
            let normalized = source.header ? FieldMatching.normalized(header: fields) : fields
            keyIndices = topic.key.map { FieldMatching.index(of: $0, in: fields, normalized: normalized) }
        }
        resolveKeys()
        // `,"name":` for each column, encoded once.
        var fieldPrefixes: [[UInt8]] = []
        func encodePrefixes() {
            fieldPrefixes = names.map { name in
                var p: [UInt8] = [UInt8(ascii: ",")]
                JSONText.appendString(name, to: &p)
                p.append(UInt8(ascii: ":"))
                return p
            }
        }
        encodePrefixes()
        while !StopSignal.requested, reader.next(into: &record) {
            let ordinal = record.ordinal - Int64(headerRecords)
            report.rowsRead += 1
            if names.isEmpty, !source.header {
                names = (1...max(record.count, 1)).map { Array("column_\($0)".utf8) }
                encodePrefixes()
                resolveKeys()
            }
            recordID.removeAll(keepingCapacity: true)
            recordID.append(contentsOf: fingerprintPrefix)
            recordID.append(UInt8(ascii: ":"))
            JSONText.appendDecimal(ordinal, to: &recordID)
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
            JSONText.appendDecimal(Self.nowMicros(), to: &value)
            if let problem {
                Self.appendError(problem, line: record.line, raw: record.raw, to: &value)
            } else {
                record.bytes.withUnsafeBufferPointer { bytes in
                    var start = 0
                    for i in 0..<fieldCount {
                        value.append(contentsOf: fieldPrefixes[i])
                        let end = record.ends[i]
                        let cell = UnsafeBufferPointer(rebasing: bytes[start..<end])
                        if !record.quoted[i], cell.elementsEqual(nullBytes) {
                            value.append(contentsOf: "null".utf8)
                        } else {
                            JSONText.appendString(cell, to: &value)
                        }
                        start = end
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
                problem = "too large"
            }
            // The message key: the record id by default, else the named fields' values.
            key.removeAll(keepingCapacity: true)
            if keyIsRecordID || problem != nil {
                key.append(contentsOf: recordID)
            } else {
                for (n, index) in keyIndices.enumerated() {
                    if n > 0 { key.append(UInt8(ascii: "|")) }
                    if let i = index, i < record.count { key.append(contentsOf: record.bytes[record.range(i)]) }
                }
            }
            if batch - nextToReport == outstanding.count {
                outstanding.append(0)
                sizes.append(0)
            }
            outstanding[batch - nextToReport] += 1
            try value.withUnsafeBytes { v in
                try key.withUnsafeBytes { k in
                    try writer.send(value: v, key: k, token: batch)
                }
            }
            if problem != nil { report.rowsSentAsErrors += 1 }
            report.rowsSent += 1
            if report.rowsSent == 1, source.rateLimit != nil {
                // A paced source waits for its first delivery (broker connection and producer ID
                // ready) before it starts the clock, so rows do not queue up behind start-up.
                let deadline = Date().addingTimeInterval(10)
                while outstanding.first ?? 0 > 0, Date() < deadline { writer.poll(timeoutMs: 5) }
                started = Date().addingTimeInterval(-1 / (source.rateLimit ?? 1))
            }
            inBatch += 1
            if inBatch == source.batchSize {
                sizes[batch - nextToReport] = inBatch
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
        report.interrupted = StopSignal.requested
        if let error = reader.readError {
            throw CSVError(message: "\(source.path): reading stopped after \(report.rowsRead) records: \(error)")
        }
        if inBatch > 0 { sizes[batch - nextToReport] = inBatch }
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

    static func nowMicros() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000
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
