import Foundation
import Metrics

/// The metrics the runtime reports through swift-metrics. Names follow Prometheus conventions
/// (`_total` for counters, base units in the name) and the field's terms, as in Kafka Connect's
/// sink task metrics and kafka-lag-exporter. Whoever bootstraps the metrics system (the CLI's
/// `--http`) exports them; without it they cost a no-op call.
public enum RuntimeMetric: String, CaseIterable, Sendable {
    case sourceRowsRead = "pipectl_source_rows_read_total"
    case sourceBytesRead = "pipectl_source_read_bytes"
    case sourceSize = "pipectl_source_size_bytes"
    case recordsProduced = "pipectl_records_produced_total"
    case recordsConsumed = "pipectl_records_consumed_total"
    case rowsWritten = "pipectl_rows_written_total"
    case rowsUpdated = "pipectl_rows_updated_total"
    case recordsAlreadyLoaded = "pipectl_records_already_loaded_total"
    case deadLetters = "pipectl_dead_letters_total"
    case consumerLag = "pipectl_consumer_lag"
    case commitDuration = "pipectl_commit_duration_seconds"
    case batchRows = "pipectl_batch_rows"

    /// The `# HELP` text of each metric.
    public var help: String {
        switch self {
        case .sourceRowsRead: return "CSV records read from a source file (label source: the source stage)."
        case .sourceBytesRead: return "How far the producer has read into the source file, in bytes (label source)."
        case .sourceSize: return "The source file's size as read (its one-read snapshot), in bytes (label source)."
        case .recordsProduced: return "Records delivered to a Kafka topic, by delivery report (label topic)."
        case .recordsConsumed:
            return "Records polled from the topic by the consumer (label topic), including ones read again after a lost PostgreSQL connection."
        case .rowsWritten: return "Rows inserted into the sink's table, counted once their commit is durable (label sink)."
        case .rowsUpdated: return "Rows updated by a newer version of their key (mode upsert), counted once durable (label sink)."
        case .recordsAlreadyLoaded:
            return "Records skipped because their record id was already in the table (mode insert: a re-sent file), counted once durable (label sink)."
        case .deadLetters: return "Records set aside in the dead-letter table, counted once durable (labels sink, stage: source, parse, cast, constraint)."
        case .consumerLag: return "Records on the topic past the stored next offset, from the last fetch's high watermark (labels topic, partition)."
        case .commitDuration: return "Time to commit one batch (rows, dead letters and offsets in one PostgreSQL transaction), in seconds."
        case .batchRows: return "Records per committed batch."
        }
    }

    /// Histograms' buckets (seconds for durations, records for sizes).
    public var buckets: [Double] {
        switch self {
        case .commitDuration: return [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
        case .batchRows: return [1, 10, 100, 500, 1_000, 2_000, 5_000, 10_000, 50_000]
        default: return []
        }
    }
}

/// Shorthands for emitting the runtime's metrics.
enum Emit {
    static func count(_ metric: RuntimeMetric, _ n: Int, _ dimensions: [(String, String)]) {
        guard n > 0 else { return }
        Counter(label: metric.rawValue, dimensions: dimensions).increment(by: n)
    }

    static func gauge(_ metric: RuntimeMetric, _ value: Int64, _ dimensions: [(String, String)]) {
        Gauge(label: metric.rawValue, dimensions: dimensions).record(value)
    }

    static func record(_ metric: RuntimeMetric, _ value: Double, _ dimensions: [(String, String)] = []) {
        Recorder(label: metric.rawValue, dimensions: dimensions, aggregate: true).record(value)
    }
}
