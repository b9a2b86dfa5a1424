import CRdKafka
import Foundation

/// One consumed record; the bytes stay valid until the message is released (deinit).
/// `@unchecked Sendable`: immutable after init; librdkafka messages may be read from any thread
/// and are destroyed once, by deinit.
public final class KafkaMessage: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<rd_kafka_message_t>
    init(_ pointer: UnsafeMutablePointer<rd_kafka_message_t>) { self.pointer = pointer }
    deinit { rd_kafka_message_destroy(pointer) }

    public var partition: Int32 { pointer.pointee.partition }
    public var offset: Int64 { pointer.pointee.offset }
    public var value: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: pointer.pointee.payload, count: pointer.pointee.len)
    }
}

/// Thrown by an assignment handler when the topic does not exist (yet); the consumer then
/// holds no partitions until `rejoin()`.
public struct TopicUnavailable: Error {
    public init() {}
}

/// What the consumer poll returned.
public enum ConsumerEvent: Sendable {
    case message(KafkaMessage)
    /// Reached the current end of a partition.
    case partitionEnd(partition: Int32, offset: Int64)
    case idle
    /// The broker does not know the subscribed topic (deleted, lost in a broker restart, or not
    /// created yet): librdkafka's `UNKNOWN_TOPIC_OR_PART` for a subscription.
    case topicUnavailable(String)
}

/// Rebalance handling is the caller's: it decides where each assigned partition starts
/// (from offsets kept in PostgreSQL, not in Kafka) and drops work for revoked ones.
/// `@unchecked Sendable`: passed to librdkafka as the opaque pointer; with
/// `rd_kafka_poll_set_consumer` every callback runs inside `poll` on the consumer's own thread,
/// the only thread that reads or writes these properties.
final class ConsumerCallbacks: @unchecked Sendable {
    /// Partitions assigned -> the offset to start each at (nil: from the beginning).
    var onAssign: ([Int32]) throws -> [Int32: Int64] = { _ in [:] }
    var onRevoke: ([Int32]) -> Void = { _ in }
    var assignError: Error?
    var lastError: String?
    var waitingForTopic = false
}

/// A consumer in a consumer group over one topic. Offsets are never committed to Kafka.
///
/// One owner: the thread that calls `poll` (the rebalance callbacks run on it, inside `poll`).
/// `@unchecked Sendable` only so that an owner may be handed to another thread before use;
/// the librdkafka handle itself is thread-safe.
public final class GroupConsumer: @unchecked Sendable {
    let handle: OpaquePointer
    let callbacks: ConsumerCallbacks
    let opaque: UnsafeMutableRawPointer
    public let topic: String
    /// The consumer group's id.
    public let group: String

    public var onAssign: ([Int32]) throws -> [Int32: Int64] {
        get { callbacks.onAssign }
        set { callbacks.onAssign = newValue }
    }
    public var onRevoke: ([Int32]) -> Void {
        get { callbacks.onRevoke }
        set { callbacks.onRevoke = newValue }
    }
    public var lastError: String? { callbacks.lastError }

    public init(topic: String, group: String, settings: [String: String]) throws {
        try KafkaLibrary.checkVersion()
        var all = [
            "group.id": group,
            "enable.auto.commit": "false",
            "enable.auto.offset.store": "false",
            // Partitions without a stored offset are assigned from the beginning explicitly;
            // a stored offset the log no longer has is an error, never a silent jump.
            "auto.offset.reset": "error",
            "enable.partition.eof": "true",
            // Tansu answers a JoinGroup after half the session timeout rounded up to a whole
            // second (measured with librdkafka 2.16 against Tansu 0.6: 3000 ms -> 2.0 s,
            // 2000/1500/1000/600 ms -> 1.0 s), and completes a first one only after the
            // rebalance timeout (max.poll.interval.ms): both short. 2 s is the longest session
            // timeout with a 1 s join; heartbeats every 500 ms leave four per session.
            "max.poll.interval.ms": "10000",
            "session.timeout.ms": "2000",
            "heartbeat.interval.ms": "500",
            // A fetch that finds no new record waits this long, and Tansu answers it only then
            // (a record produced meanwhile waits too): 50 ms put p50 send-to-commit latency at
            // ~30 ms on a 1,000 rows/s stream, 10 ms at ~15 ms. A heavy stream never waits.
            "fetch.wait.max.ms": "10",
            // Bounded prefetch, so memory stays flat. Once the queue is full librdkafka waits
            // fetch.queue.backoff.ms (1 s by default) before fetching again, which starved the
            // consumer against Tansu: 5 ms. At 16 MiB each, the queue and one fetch held ~65 MiB
            // of a 1M-row run's 200 MiB peak RSS (decompressed batches live while any of their
            // records is queued); 2 MiB each (~7,000 housing records) keep the consumer fed.
            "queued.max.messages.kbytes": "2048",
            "fetch.max.bytes": "2097152",
            "fetch.queue.backoff.ms": "5",
            "allow.auto.create.topics": "false",
        ]
        all.merge(settings) { _, new in new }
        let conf = try makeConf(all)
        self.topic = topic
        self.group = group
        callbacks = ConsumerCallbacks()
        opaque = Unmanaged.passRetained(callbacks).toOpaque()
        rd_kafka_conf_set_opaque(conf, opaque)
        rd_kafka_conf_set_rebalance_cb(conf) { rk, err, partitions, opaque in
            guard let rk, let opaque else { return }
            let callbacks = Unmanaged<ConsumerCallbacks>.fromOpaque(opaque).takeUnretainedValue()
            var ids: [Int32] = []
            if let partitions {
                for i in 0..<Int(partitions.pointee.cnt) { ids.append(partitions.pointee.elems[i].partition) }
            }
            if err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS, let partitions {
                do {
                    let starts = try callbacks.onAssign(ids)
                    for i in 0..<Int(partitions.pointee.cnt) {
                        let p = partitions.pointee.elems[i].partition
                        partitions.pointee.elems[i].offset = starts[p] ?? Int64(RD_KAFKA_OFFSET_BEGINNING)
                    }
                    rd_kafka_assign(rk, partitions)
                } catch is TopicUnavailable {
                    // The topic is being created again (broker restart): hold nothing for now
                    // and join again once it exists.
                    callbacks.waitingForTopic = true
                    rd_kafka_assign(rk, nil)
                } catch {
                    callbacks.assignError = error
                    rd_kafka_assign(rk, nil)
                }
            } else {
                callbacks.onRevoke(ids)
                rd_kafka_assign(rk, nil)
            }
        }
        rd_kafka_conf_set_error_cb(conf) { _, code, reason, opaque in
            guard let opaque else { return }
            let callbacks = Unmanaged<ConsumerCallbacks>.fromOpaque(opaque).takeUnretainedValue()
            callbacks.lastError = reason.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: strlen($0)), as: UTF8.self) } ?? "Kafka error \(code)"
        }
        var err = [CChar](repeating: 0, count: 512)
        guard let rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, &err, err.count) else {
            Unmanaged<ConsumerCallbacks>.fromOpaque(opaque).release()
            throw KafkaError("cannot create Kafka consumer: \(String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))")
        }
        handle = rk
        rd_kafka_poll_set_consumer(rk)
    }

    deinit {
        rd_kafka_destroy(handle)
        Unmanaged<ConsumerCallbacks>.fromOpaque(opaque).release()
    }

    public func subscribe() throws {
        let list = rd_kafka_topic_partition_list_new(1)
        defer { rd_kafka_topic_partition_list_destroy(list) }
        rd_kafka_topic_partition_list_add(list, topic, RD_KAFKA_PARTITION_UA)
        let rc = rd_kafka_subscribe(handle, list)
        guard rc == RD_KAFKA_RESP_ERR_NO_ERROR else {
            throw KafkaError("cannot subscribe to '\(topic)': \(errorString(rc))", code: rc.rawValue)
        }
    }

    /// Waits up to `timeoutMs` for the next event. Rebalance callbacks run inside this call.
    public func poll(timeoutMs: Int32) throws -> ConsumerEvent {
        let raw = rd_kafka_consumer_poll(handle, timeoutMs)
        if let error = callbacks.assignError {
            callbacks.assignError = nil
            throw error
        }
        guard let raw else { return .idle }
        let message = KafkaMessage(raw)
        let err = raw.pointee.err
        if err == RD_KAFKA_RESP_ERR_NO_ERROR { return .message(message) }
        if err == RD_KAFKA_RESP_ERR__PARTITION_EOF { return .partitionEnd(partition: raw.pointee.partition, offset: raw.pointee.offset) }
        let text = raw.pointee.payload.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: raw.pointee.len), as: UTF8.self) } ?? errorString(err)
        if err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC {
            callbacks.lastError = text
            return .topicUnavailable(text)
        }
        if err == RD_KAFKA_RESP_ERR__TRANSPORT || err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN {
            callbacks.lastError = text
            return .idle
        }
        if err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET || err == RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE {
            throw KafkaError(
                "the stored offset of \(topic)[\(raw.pointee.partition)] is outside the log (\(text)): the topic lost data, "
                    + "for example in a broker restart. Nothing was skipped. Re-send the data (`pipectl run` or `pipectl produce`) "
                    + "and consume with --restart-on-new-topic; record ids keep rows from loading twice.", code: err.rawValue)
        }
        throw KafkaError("Kafka consumer: \(errorString(err)): \(text)", code: err.rawValue)
    }

    /// True after an assignment was declined because the topic did not exist yet.
    public var waitingForTopic: Bool { callbacks.waitingForTopic }

    /// Leaves and joins the group again (after a declined assignment, once the topic exists).
    public func rejoin() throws {
        callbacks.waitingForTopic = false
        rd_kafka_unsubscribe(handle)
        try subscribe()
    }

    /// Stops fetching these partitions (while a write is retried) without leaving the group.
    public func pause(_ partitions: [Int32]) { setPaused(partitions, paused: true) }
    public func resume(_ partitions: [Int32]) { setPaused(partitions, paused: false) }

    private func setPaused(_ partitions: [Int32], paused: Bool) {
        guard !partitions.isEmpty else { return }
        let list = rd_kafka_topic_partition_list_new(Int32(partitions.count))
        defer { rd_kafka_topic_partition_list_destroy(list) }
        for p in partitions { rd_kafka_topic_partition_list_add(list, topic, p) }
        if paused { rd_kafka_pause_partitions(handle, list) } else { rd_kafka_resume_partitions(handle, list) }
    }

    /// Moves assigned partitions to new positions (a negative offset: the beginning). Messages
    /// already fetched for them are discarded by librdkafka (`rd_kafka_seek_partitions` bumps
    /// the partition's op version), so the next poll returns records from the new position.
    /// - Throws: `KafkaError` when librdkafka refuses a seek (for example an unassigned partition).
    public func seek(_ offsets: [Int32: Int64]) throws {
        guard !offsets.isEmpty else { return }
        guard let list = rd_kafka_topic_partition_list_new(Int32(offsets.count)) else { return }
        defer { rd_kafka_topic_partition_list_destroy(list) }
        for (p, offset) in offsets.sorted(by: { $0.key < $1.key }) {
            rd_kafka_topic_partition_list_add(list, topic, p)?.pointee.offset = offset >= 0 ? offset : Int64(RD_KAFKA_OFFSET_BEGINNING)
        }
        if let error = rd_kafka_seek_partitions(handle, list, 10_000) {
            let text = String(cString: rd_kafka_error_string(error))
            rd_kafka_error_destroy(error)
            throw KafkaError("cannot seek \(topic): \(text)")
        }
        for i in 0..<Int(list.pointee.cnt) where list.pointee.elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR {
            throw KafkaError("cannot seek \(topic)[\(list.pointee.elems[i].partition)]: \(errorString(list.pointee.elems[i].err))")
        }
    }

    /// The partition's high watermark (log end offset) from the last fetch response, or nil when
    /// none was fetched yet. Taken from fetches rather than ListOffsets, which Tansu 0.6 answers
    /// with the last batch's base offset (see FIELD-NOTES).
    public func cachedHighWatermark(_ partition: Int32) -> Int64? {
        var low: Int64 = -1
        var high: Int64 = -1
        let rc = rd_kafka_get_watermark_offsets(handle, topic, partition, &low, &high)
        return rc == RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0 ? high : nil
    }

    /// Leaves the group cleanly (revoking partitions through the callback).
    public func close() { rd_kafka_consumer_close(handle) }
}

/// The log end offsets (high watermarks) of a topic's partitions, as a fetch reports them.
///
/// Why not ListOffsets: Tansu 0.6 answers a "latest offset" request with the base offset of the
/// last record batch plus one, not the end of the log (FIELD-NOTES). A fetch response carries the
/// true high watermark, so this assigns the partitions to a throw-away consumer (no group, no
/// commits), lets it fetch once, and reads librdkafka's cached watermarks.
/// - Returns: partition -> high watermark, for the partitions that answered within `timeoutMs`.
/// - Throws: `KafkaError` when the consumer cannot be created.
public func fetchHighWatermarks(topic: String, partitions: [Int32], settings: [String: String], timeoutMs: Int = 3000) throws -> [Int32: Int64] {
    guard !partitions.isEmpty else { return [:] }
    try KafkaLibrary.checkVersion()
    var all = [
        "group.id": "pipectl-watermarks", "enable.auto.commit": "false", "enable.partition.eof": "true",
        "fetch.wait.max.ms": "50", "allow.auto.create.topics": "false", "log_level": "3",
    ]
    all.merge(settings) { _, new in new }
    let conf = try makeConf(all)
    var err = [CChar](repeating: 0, count: 512)
    guard let rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, &err, err.count) else {
        throw KafkaError("cannot create Kafka consumer: \(String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))")
    }
    defer { rd_kafka_destroy(rk) }
    rd_kafka_poll_set_consumer(rk)
    guard let list = rd_kafka_topic_partition_list_new(Int32(partitions.count)) else { return [:] }
    defer { rd_kafka_topic_partition_list_destroy(list) }
    for p in partitions { rd_kafka_topic_partition_list_add(list, topic, p)?.pointee.offset = Int64(RD_KAFKA_OFFSET_END) }
    rd_kafka_assign(rk, list)
    var found: [Int32: Int64] = [:]
    let deadline = Date().addingTimeInterval(Double(timeoutMs) / 1000)
    while found.count < partitions.count, Date() < deadline {
        if let message = rd_kafka_consumer_poll(rk, 50) { rd_kafka_message_destroy(message) }
        for p in partitions where found[p] == nil {
            var low: Int64 = -1
            var high: Int64 = -1
            if rd_kafka_get_watermark_offsets(rk, topic, p, &low, &high) == RD_KAFKA_RESP_ERR_NO_ERROR, high >= 0 { found[p] = high }
        }
    }
    rd_kafka_assign(rk, nil)
    return found
}
