import Foundation
import KafkaAdapter
import PipelineCompiler

/// `pipectl produce`: every CSV source sent to its topic, each from its send checkpoint.
public enum SourceSend {
    /// What one source's send did.
    public struct Sent: Sendable {
        public var source: Source
        public var topic: Topic
        public var report: ProduceReport
    }

    /// Creates each source's topic if needed and sends the source to it (`Pipeline.sends`: topic
    /// order, then each topic's `from:` order), with
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
        // Every source of every topic (`from: [a, b]` too), as `run` sends them; `topic.from`
        // alone is only the first (review finding R7: `produce` skipped the others).
        for send in pipeline.sends {
            let (topic, source) = (send.topic, send.source)
            let admin = try KafkaAdmin(settings: CSVProducer.kafkaSettings(topic))
            try admin.ensureTopic(topic.name, partitions: topic.partitions, replicationFactor: topic.replicationFactor)
            // The checkpoint lives in the database of the topic's first sink and belongs to
            // this incarnation of the topic.
            let store = try SourceCheckpointStore.forSource(source, topic: topic, pipeline: pipeline, environment: environment)
            let topicID = try admin.topicID(topic.name)
            let report = try CSVProducer(
                source: source, topic: topic, checkpoints: store,
                asNewSource: asNewSource || pipeline.onlyUpserts(topic: topic.name), topicID: topicID
            ).run()
            try sent(Sent(source: source, topic: topic, report: report))
            if report.interrupted { return }
        }
    }
}
