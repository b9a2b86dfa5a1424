import CRdKafka
import Foundation

/// State the producer callbacks reach through librdkafka's opaque pointer. It exists before the
/// handle does, so it can be passed to `rd_kafka_new`.
final class ProducerCallbacks: @unchecked Sendable {
    var onDelivery: (_ token: Int, _ error: KafkaError?, _ partition: Int32, _ offset: Int64) -> Void = { _, _, _, _ in }
    var fatalError: KafkaError?
    var lastTransientError: String?
}

/// An idempotent producer (acks=all, enable.idempotence) writing records to one topic.
/// Delivery reports arrive through `onDelivery` while `poll` or `flush` runs on the caller's thread.
public final class TopicWriter: @unchecked Sendable {
    let handle: OpaquePointer
    let callbacks: ProducerCallbacks
    let opaque: UnsafeMutableRawPointer
    public let topic: String

    /// Called once per record with the token passed to `send`, the error if delivery failed,
    /// and the partition and offset it was stored at.
    public var onDelivery: (_ token: Int, _ error: KafkaError?, _ partition: Int32, _ offset: Int64) -> Void {
        get { callbacks.onDelivery }
        set { callbacks.onDelivery = newValue }
    }
    /// The first fatal error reported by librdkafka (for example, idempotence broken).
    public var fatalError: KafkaError? { callbacks.fatalError }
    /// The last broker connectivity complaint, for messages when a flush does not finish.
    public var lastTransientError: String? { callbacks.lastTransientError }

    public init(topic: String, settings: [String: String]) throws {
        try KafkaLibrary.checkVersion()
        var all = [
            "enable.idempotence": "true",
            "acks": "all",
            "queue.buffering.max.messages": "100000",
            // Bounded queues keep memory flat whatever the file's size. 4 MiB still holds four
            // full 1 MB batches (batch.size) and ~14,000 housing records, so the producer keeps
            // sending the next micro-batches while earlier ones are delivered; 8 MiB added
            // ~4 MiB to a 1M-row run's peak RSS with no gain in speed (bench/results.md).
            "queue.buffering.max.kbytes": "4096",
            // A lost topic must not come back with the broker's default partition count.
            "allow.auto.create.topics": "false",
            // Fail records of a topic that vanished (broker restart) soon, so the caller can
            // create it again and re-send, instead of waiting out message.timeout.ms.
            "topic.metadata.propagation.max.ms": "5000",
            "message.timeout.ms": "60000",
        ]
        all.merge(settings) { _, new in new }
        let conf = try makeConf(all)
        self.topic = topic
        callbacks = ProducerCallbacks()
        opaque = Unmanaged.passRetained(callbacks).toOpaque()
        rd_kafka_conf_set_opaque(conf, opaque)
        rd_kafka_conf_set_dr_msg_cb(conf) { _, message, opaque in
            guard let message, let opaque else { return }
            let callbacks = Unmanaged<ProducerCallbacks>.fromOpaque(opaque).takeUnretainedValue()
            let token = Int(bitPattern: message.pointee._private)
            let error =
                message.pointee.err == RD_KAFKA_RESP_ERR_NO_ERROR
                ? nil : KafkaError(errorString(message.pointee.err), code: message.pointee.err.rawValue)
            callbacks.onDelivery(token, error, message.pointee.partition, message.pointee.offset)
        }
        rd_kafka_conf_set_error_cb(conf) { rk, code, reason, opaque in
            guard let opaque else { return }
            let callbacks = Unmanaged<ProducerCallbacks>.fromOpaque(opaque).takeUnretainedValue()
            let text = reason.map { String(cString: $0) } ?? ""
            if code == RD_KAFKA_RESP_ERR__FATAL.rawValue, let rk {
                var buf = [CChar](repeating: 0, count: 512)
                _ = rd_kafka_fatal_error(rk, &buf, buf.count)
                callbacks.fatalError = callbacks.fatalError ?? KafkaError("Kafka producer failed: \(String(errorBuffer: buf))", code: code)
            } else {
                callbacks.lastTransientError = text
            }
        }
        var err = [CChar](repeating: 0, count: 512)
        guard let rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, &err, err.count) else {
            Unmanaged<ProducerCallbacks>.fromOpaque(opaque).release()
            throw KafkaError("cannot create Kafka producer: \(String(errorBuffer: err))")
        }
        handle = rk
    }

    deinit {
        rd_kafka_destroy(handle)
        Unmanaged<ProducerCallbacks>.fromOpaque(opaque).release()
    }

    /// Queues one record; waits (serving delivery reports) while librdkafka's queue is full.
    /// Throws for records that cannot be sent at all, such as ones over message.max.bytes.
    public func send(value: UnsafeRawBufferPointer, key: UnsafeRawBufferPointer?, token: Int, partition: Int32 = -1) throws {
        while true {
            let rc = pipectl_produce(
                handle, topic, partition, value.baseAddress, value.count,
                key?.baseAddress, key?.count ?? 0, UnsafeMutableRawPointer(bitPattern: token))
            if rc == RD_KAFKA_RESP_ERR_NO_ERROR { return }
            if rc == RD_KAFKA_RESP_ERR__QUEUE_FULL {
                poll(timeoutMs: 20)
                if let fatalError { throw fatalError }
                continue
            }
            throw KafkaError(errorString(rc), code: rc.rawValue)
        }
    }

    /// Serves delivery reports.
    public func poll(timeoutMs: Int32 = 0) { rd_kafka_poll(handle, timeoutMs) }

    /// Waits until every queued record is delivered (or failed); false on timeout.
    public func flush(timeoutMs: Int32) -> Bool { rd_kafka_flush(handle, timeoutMs) == RD_KAFKA_RESP_ERR_NO_ERROR }

    /// Records queued or in flight.
    public var queued: Int { Int(rd_kafka_outq_len(handle)) }
}
