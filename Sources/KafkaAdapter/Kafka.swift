import CRdKafka
import Foundation

/// A failure talking to Kafka, with librdkafka's reason.
///
/// `KafkaError("text")` is a failure pipectl found itself (code -1, `Kind.local`); errors from
/// librdkafka carry its `rd_kafka_resp_err_t` in `code`, and callers switch on `kind`.
public struct KafkaError: Error, Sendable, CustomStringConvertible {
    /// The librdkafka error codes pipectl acts on (`rdkafka.h`, `rd_kafka_resp_err_t`).
    public enum Kind: Sendable, Hashable {
        /// `MSG_SIZE_TOO_LARGE`: the record is larger than the broker or the producer accepts.
        case messageTooLarge
        /// `UNKNOWN_TOPIC_OR_PART` / `_UNKNOWN_TOPIC` / `_UNKNOWN_PARTITION`: no such topic.
        case unknownTopic
        /// `_TRANSPORT` / `_ALL_BROKERS_DOWN`: the broker cannot be reached.
        case brokerUnreachable
        /// `_TIMED_OUT` / `REQUEST_TIMED_OUT` / `_MSG_TIMED_OUT`: no answer in time.
        case timedOut
        /// Another librdkafka code (the raw `rd_kafka_resp_err_t`).
        case other(Int32)
        /// pipectl's own error, not librdkafka's (code -1).
        case local

        public init(code: Int32) {
            switch code {
            case -1: self = .local
            case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE.rawValue: self = .messageTooLarge
            case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART.rawValue, RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC.rawValue,
                RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION.rawValue:
                self = .unknownTopic
            case RD_KAFKA_RESP_ERR__TRANSPORT.rawValue, RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN.rawValue: self = .brokerUnreachable
            case RD_KAFKA_RESP_ERR__TIMED_OUT.rawValue, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT.rawValue,
                RD_KAFKA_RESP_ERR__MSG_TIMED_OUT.rawValue:
                self = .timedOut
            default: self = .other(code)
            }
        }
    }

    /// The text shown (tests and users match on it).
    public var message: String
    /// librdkafka's `rd_kafka_resp_err_t`, or -1 for pipectl's own errors.
    public var code: Int32
    public init(_ message: String, code: Int32 = -1) {
        self.message = message
        self.code = code
    }
    public var description: String { message }

    /// What kind of failure `code` is.
    public var kind: Kind { Kind(code: code) }

    /// The record is larger than the broker or the producer accepts.
    public var isMessageTooLarge: Bool { kind == .messageTooLarge }
}

/// The librdkafka actually loaded (not the one compiled against).
public enum KafkaLibrary {
    public static var version: String { String(cString: rd_kafka_version_str()) }
    /// 2.2.0 is the first release that skips tagged fields correctly (Debian's 2.0.2 cannot talk
    /// to Tansu); 2.3.0 added DescribeTopics, which gives the topic IDs offsets are tied to.
    public static let minimumVersion: Int32 = 0x0203_0000

    public static func checkVersion() throws {
        if rd_kafka_version() < minimumVersion {
            throw KafkaError(
                "librdkafka \(version) is loaded, but pipectl needs 2.3 or newer: releases before 2.2 mis-read tagged fields "
                    + "(rd_kafka_buf_skip_tags) and fail against Tansu and newer brokers with 'Read underflow', and topic IDs "
                    + "(DescribeTopics) arrived in 2.3. "
                    + "Run `make deps` (it links librdkafka 2.16 from the confluent-kafka wheel into .deps/rdkafka) "
                    + "or point LD_LIBRARY_PATH at a folder holding a newer librdkafka.so.1.")
        }
    }
}

/// Where librdkafka's own log lines go, instead of its default of printing them to stderr.
public enum KafkaLog {
    /// Called from librdkafka's threads with the syslog level (0 emergency … 7 debug), the
    /// facility (`FAIL`, `CGRPSTATE`, …) and the text. Set once, before any client is made.
    // Unsafe: written once in `main` before any client (and so any librdkafka thread) exists.
    nonisolated(unsafe) public static var handler: (@Sendable (_ level: Int32, _ facility: String, _ message: String) -> Void)?
}

/// librdkafka configuration from key/value pairs.
func makeConf(_ settings: [String: String]) throws -> OpaquePointer {
    let conf = rd_kafka_conf_new()!
    if KafkaLog.handler != nil {
        rd_kafka_conf_set_log_cb(conf) { _, level, facility, message in
            KafkaLog.handler?(level, facility.map { String(cString: $0) } ?? "", message.map { String(cString: $0) } ?? "")
        }
    }
    var err = [CChar](repeating: 0, count: 512)
    for (key, value) in settings.sorted(by: { $0.key < $1.key }) {
        if rd_kafka_conf_set(conf, key, value, &err, err.count) != RD_KAFKA_CONF_OK {
            rd_kafka_conf_destroy(conf)
            throw KafkaError("Kafka setting '\(key)': \(String(errorBuffer: err))")
        }
    }
    return conf
}

func errorString(_ code: rd_kafka_resp_err_t) -> String { String(cString: rd_kafka_err2str(code)) }

/// Reads topic metadata and creates topics. Wraps its own producer handle.
public final class KafkaAdmin: @unchecked Sendable {  // an immutable rd_kafka_t handle: librdkafka handles are thread-safe (INTRODUCTION.md, "Threads")
    let handle: OpaquePointer

    public init(settings: [String: String]) throws {
        try KafkaLibrary.checkVersion()
        var all = ["allow.auto.create.topics": "false"]
        all.merge(settings) { _, new in new }
        let conf = try makeConf(all)
        var err = [CChar](repeating: 0, count: 512)
        guard let rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, &err, err.count) else {
            throw KafkaError("cannot create Kafka client: \(String(errorBuffer: err))")
        }
        handle = rk
    }

    deinit { rd_kafka_destroy(handle) }

    /// Partition count of `topic`, or nil if the broker does not have it.
    public func partitionCount(_ topic: String, timeoutMs: Int32 = 10_000) throws -> Int? {
        // All-topics metadata: asking for one topic by name lets a broker auto-create it
        // with its own default partition count.
        var metadata: UnsafePointer<rd_kafka_metadata>?
        let rc = rd_kafka_metadata(handle, 1, nil, &metadata, timeoutMs)
        guard rc == RD_KAFKA_RESP_ERR_NO_ERROR, let md = metadata else {
            throw KafkaError("cannot read metadata from the Kafka brokers (\(errorString(rc))); is the broker running?", code: rc.rawValue)
        }
        defer { rd_kafka_metadata_destroy(md) }
        guard let t = (0..<Int(md.pointee.topic_cnt)).map({ md.pointee.topics[$0] }).first(where: { String(cString: $0.topic) == topic }) else {
            return nil
        }
        if t.err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART { return nil }
        if t.err != RD_KAFKA_RESP_ERR_NO_ERROR {
            throw KafkaError("topic '\(topic)': \(errorString(t.err))", code: t.err.rawValue)
        }
        return Int(t.partition_cnt)
    }

    /// Creates `topic` unless it exists; returns true when it was created.
    @discardableResult
    public func ensureTopic(_ topic: String, partitions: Int, replicationFactor: Int, timeoutMs: Int32 = 15_000) throws -> Bool {
        if let existing = try partitionCount(topic) {
            if existing < partitions {
                throw KafkaError(
                    "topic '\(topic)' exists with \(existing) partitions; the spec asks for \(partitions). "
                        + "Add partitions with your Kafka tools, or lower 'partitions' in the spec.")
            }
            return false
        }
        var err = [CChar](repeating: 0, count: 512)
        guard let newTopic = rd_kafka_NewTopic_new(topic, Int32(partitions), Int32(replicationFactor), &err, err.count) else {
            throw KafkaError("cannot describe new topic '\(topic)': \(String(errorBuffer: err))")
        }
        defer { rd_kafka_NewTopic_destroy(newTopic) }
        let queue = rd_kafka_queue_new(handle)
        defer { rd_kafka_queue_destroy(queue) }
        var topics: [OpaquePointer?] = [newTopic]
        rd_kafka_CreateTopics(handle, &topics, 1, nil, queue)
        guard let event = rd_kafka_queue_poll(queue, timeoutMs) else {
            throw KafkaError("timed out creating topic '\(topic)'")
        }
        defer { rd_kafka_event_destroy(event) }
        if rd_kafka_event_error(event) != RD_KAFKA_RESP_ERR_NO_ERROR {
            throw KafkaError("cannot create topic '\(topic)': \(String(cString: rd_kafka_event_error_string(event)))")
        }
        let result = rd_kafka_event_CreateTopics_result(event)
        var count = 0
        if let results = rd_kafka_CreateTopics_result_topics(result, &count), count > 0, let r = results[0] {
            let code = rd_kafka_topic_result_error(r)
            if code != RD_KAFKA_RESP_ERR_NO_ERROR, code != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS {
                let message = rd_kafka_topic_result_error_string(r).map { String(cString: $0) } ?? errorString(code)
                throw KafkaError("cannot create topic '\(topic)': \(message)", code: code.rawValue)
            }
        }
        // The topic can take a moment to show in metadata.
        for _ in 0..<50 {
            if try partitionCount(topic) != nil { return true }
            usleep(100_000)
        }
        return true
    }

    /// The ID of the topic's current incarnation, or nil when the broker does not have the topic.
    /// - Throws: `KafkaError` when the broker cannot be asked (down, unreachable).
    public func currentTopicID(_ topic: String) throws -> String? {
        guard try partitionCount(topic) != nil else { return nil }
        return try topicID(topic)
    }

    /// The topic's ID: it changes when a topic is deleted and created again.
    public func topicID(_ topic: String, timeoutMs: Int32 = 10_000) throws -> String {
        var out = [CChar](repeating: 0, count: 64)
        var err = [CChar](repeating: 0, count: 512)
        if pipectl_topic_id(handle, topic, timeoutMs, &out, out.count, &err, err.count) != 0 {
            throw KafkaError("cannot read the ID of topic '\(topic)': \(String(errorBuffer: err))")
        }
        return String(errorBuffer: out)
    }
}

extension String {
    /// The NUL-terminated text librdkafka wrote into a caller's `[CChar]` buffer (error strings,
    /// topic IDs); an unterminated buffer is read to its end.
    init(errorBuffer buffer: [CChar]) {
        let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        self = String(decoding: bytes, as: UTF8.self)
    }
}
