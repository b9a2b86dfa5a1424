import Foundation
import KafkaAdapter
import Logging
import PipelineCompiler

/// `pipectl produce`: every CSV source sent to its topic, each from its send checkpoint.
public enum SourceSend {
    /// What one source's send did.
    public struct Sent: Sendable {
        /// The source whose file was sent.
        public var source: Source
        /// The topic it was sent to.
        public var topic: Topic
        /// What the send did: records read and sent, the file's fingerprint, whether it was interrupted.
        public var report: ProduceReport
    }

    /// Creates each source's topic if needed and sends the source to it, in `Pipeline.sends` order, with
    /// its checkpoint in the database of the topic's first sink (`url` or `DATABASE_URL` from
    /// `environment`). `sent` is called after each source; the sends stop after one that was
    /// interrupted (Ctrl-C / SIGTERM), since the next would stop at once too.
    /// - Parameter asNewSource: a file changed where it was already sent is sent as a new
    ///   file instead of refused (always so for topics only upsert sinks read).
    /// - Throws: `KafkaError`, `PostgresError`, `SourceChangedError`; or what `sent` throws.
    public static func run(
        _ pipeline: Pipeline, asNewSource: Bool, environment: [String: String],
        sent: (Sent) throws -> Void
    ) throws {
        // Every (source, topic) pair once: a topic fed by several sources (`from: [a, b]`) gets
        // each of them, as `run` sends them.
        for send in pipeline.sends {
            let (source, topic) = (send.source, send.topic)
            let report = try withRetries(source, to: topic, pipeline: pipeline, asNewSource: asNewSource, environment: environment)
            try sent(Sent(source: source, topic: topic, report: report))
            if report.interrupted { return }
        }
    }

    /// Sends `source` to `topic` (`once`) and checks afterwards that the topic still has the ID it
    /// was sent to; Kafka trouble (a broker restarting, the topic re-created meanwhile) gets up to
    /// `attempts` tries, 1 s, 2 s, … apart, each resuming from the file's checkpoint. `produce`
    /// and `run` both send this way. Ctrl-C ends the tries.
    /// - Parameter createdTopic: called when the topic had to be created.
    /// - Returns: the last try's report, its `topicID` set.
    /// - Throws: the last `KafkaError`, or at once any other error (`PostgresError`,
    ///   `SourceChangedError`, a file that cannot be read), which another try would not change.
    static func withRetries(
        _ source: Source, to topic: Topic, pipeline: Pipeline, asNewSource: Bool, environment: [String: String],
        attempts: Int = 5, logger: Logger = Logger(label: "pipectl.producer"), createdTopic: () -> Void = {}
    ) throws -> ProduceReport {
        var attempt = 1
        while true {
            do {
                var (report, topicID, admin) = try once(
                    source, to: topic, pipeline: pipeline, asNewSource: asNewSource, environment: environment, logger: logger,
                    createdTopic: createdTopic)
                // A topic that changed under the producer means some records may be gone.
                if try admin.topicID(topic.name) != topicID {
                    throw KafkaError("topic \(topic.name) was re-created while sending")
                }
                report.topicID = topicID
                return report
            } catch let error as KafkaError where attempt < attempts && !StopSignal.requested {
                logger.info("producer: \(error); sending \(source.path) again from its checkpoint (attempt \(attempt + 1) of \(attempts))")
                Thread.sleep(forTimeInterval: Double(attempt))
                attempt += 1
            }
        }
    }

    /// One try of `withRetries`: creates the topic if it is missing, reads its ID, and sends the
    /// file from its checkpoint, which lives in the database of the topic's first sink and
    /// belongs to this incarnation of the topic.
    /// - Parameter createdTopic: called when the topic had to be created.
    /// - Returns: the producer's report, the topic ID it sent to, and the admin client (to check
    ///   the ID again afterwards).
    /// - Throws: `KafkaError`, `PostgresError`, `SourceChangedError`.
    private static func once(
        _ source: Source, to topic: Topic, pipeline: Pipeline, asNewSource: Bool, environment: [String: String],
        logger: Logger = Logger(label: "pipectl.producer"), createdTopic: () -> Void = {}
    ) throws -> (report: ProduceReport, topicID: String, admin: KafkaAdmin) {
        let admin = try KafkaAdmin(settings: CSVProducer.kafkaSettings(topic))
        if try admin.ensureTopic(topic.name, partitions: topic.partitions, replicationFactor: topic.replicationFactor) { createdTopic() }
        let topicID = try admin.topicID(topic.name)
        let store = try SourceCheckpointStore.forSource(source, topic: topic, pipeline: pipeline, environment: environment, logger: logger)
        let report = try CSVProducer(
            source: source, topic: topic, checkpoints: store,
            asNewSource: asNewSource || pipeline.onlyUpserts(topic: topic.name), topicID: topicID, logger: logger
        ).run()
        return (report, topicID, admin)
    }
}
