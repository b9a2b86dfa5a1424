import Foundation
import KafkaAdapter
import Logging
import PipelineCompiler
import RecordFormats

/// Counts from one producer run.
public struct ProduceReport: Sendable {
    /// Records in the file: those before the checkpoint the run resumed from, plus those read.
    public var rowsRead = 0
    /// Records sent by this run.
    public var rowsSent = 0
    /// Records not sent because an earlier run's delivery of them was confirmed.
    public var rowsSkipped = 0
    /// Rows sent as error records (malformed CSV, too large): the consumer dead-letters them.
    public var rowsSentAsErrors = 0
    /// The source's identity: the `fingerprint` part of its record ids (`SourceCheckpoint.identity`).
    public var fingerprint = ""
    /// End offset of each partition once every record was delivered (from delivery reports).
    public var endOffsets: [Int32: Int64] = [:]
    /// The ID of the topic incarnation the records went to.
    public var topicID: String?
    /// Ctrl-C / SIGTERM stopped the producer before the end of the file.
    public var interrupted = false
}

/// A source file changed inside the part that was already sent: sending it under the same
/// identity would leave the stored rows of the old version in place (record ids match).
public struct SourceChangedError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// The CSV source and topic writer: streams the file, turns each record into a JSON object
/// carrying its record id, and sends micro-batches to the topic.
///
/// With a checkpoint store, a file is sent once: a run resumes after the records an earlier run
/// delivered (to the same topic incarnation), so a file that only grew sends its new records,
/// and a file changed where it was sent is refused (`SourceChangedError`) unless
/// `asNewSource`. See docs/reliability.md, "Files that grow or change".
public final class CSVProducer {
    let source: Source
    let topic: Topic
    let logger: Logger
    let checkpoints: SourceCheckpointStore?
    let asNewSource: Bool
    let topicID: String?
    /// Seconds between checkpoint writes while sending (and one at the end).
    var checkpointInterval = 0.5

    /// - Parameters:
    ///   - checkpoints: where send checkpoints live; nil sends the whole file under its
    ///     content fingerprint (no resume).
    ///   - asNewSource: a file changed where it was sent becomes a new source instead of an error.
    ///   - topicID: the topic incarnation the records go to (checkpoints belong to one).
    public init(
        source: Source, topic: Topic, checkpoints: SourceCheckpointStore? = nil, asNewSource: Bool = false, topicID: String? = nil,
        logger: Logger = Logger(label: "pipectl.producer")
    ) {
        self.source = source
        self.topic = topic
        self.logger = logger
        self.checkpoints = checkpoints
        self.asNewSource = asNewSource
        self.topicID = topicID
    }

    /// The checkpointed life of the source to send under, checked against the snapshot.
    /// - Throws: `SourceChangedError` when the sent part changed and `asNewSource` is off.
    func lineage(store: SourceCheckpointStore) throws -> (SourceLineage, SourceSnapshot) {
        try store.prepare()
        if let stored = try store.current() {
            let snapshot = try SourceSnapshot(
                path: source.resolvedPath, verifyBytes: stored.sent.bytes, chunkBytes: stored.sent.chunkBytes, wholeFingerprint: false)
            let check = SourceCheckpoint.check(
                sent: stored.sent, size: Int64(snapshot.size), prefixHash: snapshot.prefixHash,
                chunkDigests: snapshot.chunkDigests, byteAtSentEnd: snapshot.bytes(at: stored.sent.bytes, count: 1).first)
            if check == .unchanged { return (stored, snapshot) }
            let what = describe(check, snapshot: snapshot)
            guard asNewSource else {
                throw SourceChangedError(
                    message: "\(source.path) changed where it was already sent: \(what); "
                        + "run again with --as-new-source to load it as a new file (the rows loaded from it stay), "
                        + "or delete what it loaded with `pipectl reset --source \(source.path)` and run again")
            }
            logger.warning("\(source.path) changed where it was already sent (\(what)): sending it as a new source (--as-new-source)")
            // The same snapshot serves: its chunks use the old life's size, which is as good.
            return (try store.create(identity: newIdentity(snapshot), chunkBytes: snapshot.chunkBytes), snapshot)
        }
        // A file registered before checkpoints existed keeps its identity (its whole SHA-256).
        // Only such rows need that hash before sending; without any, the file is hashed once.
        let snapshot = try SourceSnapshot(path: source.resolvedPath, wholeFingerprint: try store.hasLegacySources())
        let identity: String
        if let whole = snapshot.fingerprint, try store.isLegacy(identity: whole) {
            identity = whole
        } else {
            identity = newIdentity(snapshot)
        }
        return (try store.create(identity: identity, chunkBytes: snapshot.chunkBytes), snapshot)
    }

    func newIdentity(_ snapshot: SourceSnapshot) -> String {
        SourceCheckpoint.identity(
            path: source.resolvedPath, leadingDigest: snapshot.leadingDigest,
            nonce: "\(Date().timeIntervalSince1970)-\(UUID().uuidString)")
    }

    /// `record 12 (line 13) differs` or `the first difference is in records 10-13 (lines 11-14)`,
    /// read from the file as it is now.
    func describe(_ check: PrefixCheck, snapshot: SourceSnapshot) -> String {
        let range: Range<Int64>
        switch check {
        case .unchanged: return "unchanged"
        case .shorter(let sent, let now): return "it is \(now) bytes long, shorter than the \(sent) bytes already sent"
        case .changed(let bytes): range = bytes
        }
        let reader = snapshot.scanningReader(delimiter: source.delimiter, quote: source.quote)
        var record = CSVRecord()
        var first: (ordinal: Int64, line: Int)?
        var last: (ordinal: Int64, line: Int)?
        var start: Int64 = 0
        let header: Int64 = source.header ? 1 : 0
        while reader.next(into: &record) {
            defer { start = record.endOffset }
            if record.endOffset <= range.lowerBound { continue }
            if start >= range.upperBound { break }
            let here = (record.ordinal - header, record.line)
            if first == nil { first = here }
            last = here
        }
        guard let first, let last else { return "bytes \(range.lowerBound)-\(range.upperBound - 1) differ" }
        func name(_ r: (ordinal: Int64, line: Int)) -> String { r.ordinal == 0 ? "the header" : "record \(r.ordinal)" }
        if first == last { return "\(name(first)) (line \(first.line)) differs" }
        return
            "the first difference is in \(first.ordinal == 0 ? "the header or " : "")records \(max(first.ordinal, 1))-\(last.ordinal) (lines \(first.line)-\(last.line))"
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
        let snapshot: SourceSnapshot
        var lineage: SourceLineage?
        var resume = ResumePoint.start
        if let store = checkpoints {
            let found = try self.lineage(store: store)
            lineage = found.0
            snapshot = found.1
            resume = SourceCheckpoint.resumePoint(checkpoint: found.0.checkpoint, checkpointTopicID: found.0.topicID, currentTopicID: topicID)
            if resume != found.0.checkpoint, found.0.checkpoint.records > 0 {
                logger.info("topic \(topic.name) is not the one \(source.path) was sent to: sending it from the start (record ids skip what was stored)")
            }
            report.fingerprint = found.0.identity
        } else {
            snapshot = try SourceSnapshot(path: source.resolvedPath)
            report.fingerprint = snapshot.fingerprint ?? ""  // always computed by default
        }
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
        // Byte offsets are file offsets only when the reader streams the copy itself (UTF-8);
        // a converted file resumes by skipping records and checkpoints only at its end.
        let streamsCopy = source.encoding == .utf8
        if resume.records > 0 || resume.bytes > 0 {
            if streamsCopy {
                if resume.bytes > reader.offset {
                    try reader.seek(toOffset: resume.bytes, records: resume.records + Int64(headerRecords), line: resume.line)
                }
            } else {
                var skipped: Int64 = 0
                while skipped < resume.records, reader.next(into: &record) { skipped += 1 }
            }
            report.rowsRead = Int(resume.records)
            report.rowsSkipped = Int(resume.records)
        }
        var sent = lineage?.sent ?? SentPart.nothing(chunkBytes: snapshot.chunkBytes)
        let prefixHasher = PrefixHasher(snapshot)
        let endsOpen = snapshot.endsOpen
        // Where each batch ends, to move the checkpoint once the batch is delivered.
        var batchEnds: [ResumePoint] = []
        var checkpoint = resume
        // The first delivered batch is checkpointed at once, later ones at most every `checkpointInterval`.
        var lastCheckpointWrite = Date.distantPast
        var checkpointDirty = false
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
        // Resuming in the same topic incarnation, the ends of the earlier runs still count: the
        // consumer of `run` waits for them too.
        var ends: [Int32: Int64] = topicID != nil && lineage?.topicID == topicID ? lineage?.endOffsets ?? [:] : [:]
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
                // Delivery of every record up to the end of the last finished batch is confirmed,
                // unless a delivery failed (a timed-out record also counts as reported): then the
                // checkpoint stays where it is and the producer stops with that error.
                let confirmed = batchEnds[done - 1]
                batchEnds.removeFirst(done)
                guard deliveryError == nil else { return }
                checkpoint = confirmed
                checkpointDirty = true
                if let store = checkpoints, let lineage, streamsCopy, Date().timeIntervalSince(lastCheckpointWrite) >= checkpointInterval {
                    store.recordCheckpoint(checkpoint, topicID: topicID, endOffsets: ends, sourceID: lineage.sourceID)
                    lastCheckpointWrite = Date()
                    checkpointDirty = false
                }
            }
        }

        var value: [UInt8] = []
        value.reserveCapacity(4096)
        var json = ByteBuffer(capacity: 4096)
        defer { json.deallocate() }
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
        // `,"name":` for each column, encoded once, back to back (column i is
        // `prefixBytes[prefixEnds[i]..<prefixEnds[i + 1]]`): one buffer read through a pointer
        // per record instead of an array retained and released per cell.
        var prefixBytes: [UInt8] = []
        var prefixEnds: [Int] = [0]
        func encodePrefixes() {
            prefixBytes.removeAll()
            prefixEnds = [0]
            for name in names {
                prefixBytes.append(UInt8(ascii: ","))
                JSONText.appendString(name, to: &prefixBytes)
                prefixBytes.append(UInt8(ascii: ":"))
                prefixEnds.append(prefixBytes.count)
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
            if let problem {
                value.append(contentsOf: "{\"_record\":\"".utf8)
                value.append(contentsOf: recordID)
                value.append(contentsOf: "\",\"_sent_at\":".utf8)
                JSONText.appendDecimal(Self.nowMicros(), to: &value)
                Self.appendError(problem, line: record.line, raw: record.raw, to: &value)
            } else {
                // The same bytes, written through a pointer and copied into `value` once.
                json.count = 0
                json.append("{\"_record\":\"")
                recordID.withUnsafeBufferPointer { json.append($0) }
                json.append("\",\"_sent_at\":")
                JSONText.appendDecimal(Self.nowMicros(), to: &json)
                record.bytes.withUnsafeBufferPointer { bytes in
                    prefixBytes.withUnsafeBufferPointer { prefixes in
                        nullBytes.withUnsafeBufferPointer { null in
                            var start = 0
                            for i in 0..<fieldCount {
                                json.append(UnsafeBufferPointer(rebasing: prefixes[prefixEnds[i]..<prefixEnds[i + 1]]))
                                let end = record.ends[i]
                                let cell = UnsafeBufferPointer(rebasing: bytes[start..<end])
                                if !record.quoted[i], cell.count == null.count, cell.elementsEqual(null) {
                                    json.append("null")
                                } else {
                                    JSONText.appendString(cell, to: &json)
                                }
                                start = end
                            }
                        }
                    }
                }
                json.append(UInt8(ascii: "}"))
                value.append(contentsOf: json.bytes)
            }
            if value.count > topic.messageMaxBytes {
                let size = value.count
                value.removeAll(keepingCapacity: true)
                value.append(contentsOf: "{\"_record\":\"".utf8)
                value.append(contentsOf: recordID)
                value.append(UInt8(ascii: "\""))
                Self.appendError(
                    "record on line \(record.line) is \(size) bytes as JSON, over the topic's message_max_bytes (\(topic.messageMaxBytes)); the dead-lettered payload is its first 64 KiB",
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
            // Nothing is sent before the store says it may have been: a later run then checks
            // these bytes before it trusts the checkpoint (a record re-sent with other content
            // under the same id would be skipped as already loaded).
            if let store = checkpoints, let lineage {
                let recordEnd = streamsCopy ? record.endOffset : Int64(snapshot.size)
                if recordEnd > sent.bytes || (record.endedAtEOF && endsOpen && !sent.openEnd) {
                    let end = streamsCopy ? SourceCheckpoint.nextSentEnd(recordEnd: recordEnd, size: Int64(snapshot.size)) : Int64(snapshot.size)
                    sent = SentPart(
                        bytes: end, openEnd: end == Int64(snapshot.size) && endsOpen, hash: prefixHasher.hash(upTo: end),
                        chunkBytes: sent.chunkBytes, chunkDigests: SourceCheckpoint.digests(snapshot.chunkDigests, chunkBytes: sent.chunkBytes, within: end))
                    try store.recordSent(sent, sourceID: lineage.sourceID)
                }
            }
            if batch - nextToReport == outstanding.count {
                outstanding.append(0)
                sizes.append(0)
                batchEnds.append(.start)
            }
            batchEnds[batch - nextToReport] = ResumePoint(bytes: record.endOffset, records: ordinal, line: reader.nextLine)
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
        if let store = checkpoints, let lineage {
            let finished = !StopSignal.requested
            if !streamsCopy {
                // Offsets in converted text are not file offsets: only a finished file checkpoints.
                checkpointDirty = finished
                checkpoint = ResumePoint(bytes: Int64(snapshot.size), records: Int64(report.rowsRead), line: reader.nextLine)
            }
            if checkpointDirty || finished {
                store.recordCheckpoint(
                    checkpoint, topicID: topicID, endOffsets: ends, sourceID: lineage.sourceID,
                    rows: finished ? Int64(report.rowsRead) : nil)
            }
        }
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
