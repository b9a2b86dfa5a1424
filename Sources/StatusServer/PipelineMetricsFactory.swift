import CoreMetrics
import Foundation
import Metrics
import PipelineRuntime
import Prometheus

/// The swift-metrics backend pipectl bootstraps: every metric goes to a Prometheus registry
/// (with the `# HELP` text of `RuntimeMetric`, which swift-prometheus's own factory cannot
/// carry) and its current value is also kept in `MetricTotals`, which the progress line and
/// the status page read.
public struct PipelineMetricsFactory: MetricsFactory {
    /// The Prometheus registry every metric is registered in; `GET /metrics` renders it.
    public let registry: PrometheusCollectorRegistry
    /// Readable current values of the counters and gauges (not histograms), for the progress line
    /// and the status page.
    public let totals: MetricTotals

    /// Fresh registry and totals by default; pass shared ones to read them from elsewhere.
    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry(), totals: MetricTotals = MetricTotals()) {
        self.registry = registry
        self.totals = totals
    }

    func descriptor(_ label: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: label, unitName: "", helpText: RuntimeMetric(rawValue: label)?.help ?? "")
    }

    /// A Prometheus counter whose increments are also added to `totals` under `MetricKey(label, dimensions)`.
    public func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        TeeCounter(registry.makeCounter(descriptor: descriptor(label), labels: dimensions), totals, MetricKey(label, dimensions))
    }

    /// A plain Prometheus counter; its value is not kept in `totals`.
    public func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        // pipectl counts whole records only; Prometheus counters are doubles underneath anyway.
        registry.makeCounter(descriptor: descriptor(label), labels: dimensions)
    }

    /// `aggregate: true`: a Prometheus histogram with `RuntimeMetric.buckets` (not kept in `totals`);
    /// otherwise a gauge whose last value is also set in `totals` (a Double truncated to Int64).
    public func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        if aggregate {
            let buckets = RuntimeMetric(rawValue: label)?.buckets ?? [0.01, 0.1, 1, 10, 100, 1000]
            return registry.makeValueHistogram(descriptor: descriptor(label), labels: dimensions, buckets: buckets.isEmpty ? [1, 10, 100] : buckets)
        }
        return TeeGauge(registry.makeGauge(descriptor: descriptor(label), labels: dimensions), totals, MetricKey(label, dimensions))
    }

    /// A Prometheus gauge whose `set` also goes to `totals`; `increment`/`decrement` reach only
    /// the gauge.
    public func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        TeeGauge(registry.makeGauge(descriptor: descriptor(label), labels: dimensions), totals, MetricKey(label, dimensions))
    }

    /// A Prometheus duration histogram with buckets 1 ms, 10 ms, 100 ms, 1 s, 10 s; not kept in `totals`.
    public func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        registry.makeDurationHistogram(
            descriptor: descriptor(label), labels: dimensions,
            buckets: [.milliseconds(1), .milliseconds(10), .milliseconds(100), .seconds(1), .seconds(10)])
    }

    /// No-op: the registry keeps every metric for the life of the process.
    public func destroyCounter(_ handler: any CounterHandler) {}
    /// No-op: the registry keeps every metric for the life of the process.
    public func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {}
    /// No-op: the registry keeps every metric for the life of the process.
    public func destroyRecorder(_ handler: any RecorderHandler) {}
    /// No-op: the registry keeps every metric for the life of the process.
    public func destroyMeter(_ handler: any MeterHandler) {}
    /// No-op: the registry keeps every metric for the life of the process.
    public func destroyTimer(_ handler: any TimerHandler) {}
}

/// A metric's name and labels, sorted.
public struct MetricKey: Hashable, Sendable {
    /// The metric's label in swift-metrics, which is its Prometheus name
    /// (`pipectl_rows_written_total`, a `RuntimeMetric` raw value).
    public var name: String
    /// The dimensions as `key=value` strings, sorted, e.g. `["partition=0", "topic=orders"]`.
    public var labels: [String]
    init(_ name: String, _ dimensions: [(String, String)]) {
        self.name = name
        labels = dimensions.map { "\($0.0)=\($0.1)" }.sorted()
    }
}

/// Current values of the counters and gauges, readable (unlike Prometheus's own objects).
public final class MetricTotals: @unchecked Sendable {  // `values` under `lock`
    // NSLock-guarded: metrics are updated from the producer, consumer and writer threads.
    private let lock = NSLock()
    private var values: [MetricKey: Int64] = [:]

    /// Empty: no metric has a value until it is first updated.
    public init() {}

    func add(_ key: MetricKey, _ n: Int64) {
        lock.lock()
        values[key, default: 0] += n
        lock.unlock()
    }

    func set(_ key: MetricKey, _ n: Int64) {
        lock.lock()
        values[key] = n
        lock.unlock()
    }

    /// The sum of a metric over all its label sets.
    public func sum(_ metric: RuntimeMetric) -> Int64 {
        lock.lock()
        defer { lock.unlock() }
        return values.filter { $0.key.name == metric.rawValue }.values.reduce(0, +)
    }

    /// Every label set of a metric with its value.
    public func series(_ metric: RuntimeMetric) -> [(labels: [String], value: Int64)] {
        lock.lock()
        defer { lock.unlock() }
        return values.filter { $0.key.name == metric.rawValue }.map { ($0.key.labels, $0.value) }.sorted { $0.labels.lexicographicallyPrecedes($1.labels) }
    }
}

final class TeeCounter: CounterHandler, Sendable {
    let counter: Prometheus.Counter
    let totals: MetricTotals
    let key: MetricKey
    init(_ counter: Prometheus.Counter, _ totals: MetricTotals, _ key: MetricKey) {
        self.counter = counter
        self.totals = totals
        self.key = key
    }
    func increment(by amount: Int64) {
        counter.increment(by: amount)
        totals.add(key, amount)
    }
    func reset() { counter.reset() }
}

final class TeeGauge: RecorderHandler, MeterHandler, Sendable {
    let gauge: Prometheus.Gauge
    let totals: MetricTotals
    let key: MetricKey
    init(_ gauge: Prometheus.Gauge, _ totals: MetricTotals, _ key: MetricKey) {
        self.gauge = gauge
        self.totals = totals
        self.key = key
    }
    func record(_ value: Int64) { set(value) }
    func record(_ value: Double) { set(value) }
    func set(_ value: Int64) {
        gauge.set(value)
        totals.set(key, value)
    }
    func set(_ value: Double) {
        gauge.set(value)
        totals.set(key, Int64(value))
    }
    func increment(by amount: Double) { gauge.increment(by: amount) }
    func decrement(by amount: Double) { gauge.decrement(by: amount) }
}
