import CoreMetrics
import Metrics
import Prometheus

/// The realm's metrics, through swift-metrics into its own Prometheus registry (one per realm, so
/// several realms in one process, as in `coffer realm cluster`, keep separate figures).
public final class RealmMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let guesses: CoreMetrics.Counter
    let unlocks: CoreMetrics.Counter
    let failedUnlocks: CoreMetrics.Counter
    let lockouts: CoreMetrics.Counter
    let registrations: CoreMetrics.Counter
    let deletions: CoreMetrics.Counter
    let queries: CoreMetrics.Counter
    let headReads: CoreMetrics.Counter
    let headWrites: CoreMetrics.Counter
    let refusals: CoreMetrics.Counter
    let undecryptable: CoreMetrics.Counter
    let replays: CoreMetrics.Counter
    let busy: CoreMetrics.Counter
    let tokenRefusals: CoreMetrics.Counter
    /// Active registrations replaced on a `reset`-scoped token without proof of the current password.
    let resets: CoreMetrics.Counter
    /// R2 over an active registration refused for want of a replace proof (`replaceNotProven`).
    let replaceRefusals: CoreMetrics.Counter
    /// 1 while the store answered the last readiness probe.
    let storeUp: CoreMetrics.Gauge
    private let factory: PrometheusMetricsFactory

    public init() {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
            .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
        ]
        self.registry = registry
        self.factory = factory
        guesses = CoreMetrics.Counter(label: "coffer_realm_guesses_total", factory: factory)
        unlocks = CoreMetrics.Counter(label: "coffer_realm_unlocks_total", factory: factory)
        failedUnlocks = CoreMetrics.Counter(label: "coffer_realm_failed_unlocks_total", factory: factory)
        lockouts = CoreMetrics.Counter(label: "coffer_realm_lockouts_total", factory: factory)
        registrations = CoreMetrics.Counter(label: "coffer_realm_registrations_total", factory: factory)
        deletions = CoreMetrics.Counter(label: "coffer_realm_deletions_total", factory: factory)
        queries = CoreMetrics.Counter(label: "coffer_realm_queries_total", factory: factory)
        headReads = CoreMetrics.Counter(label: "coffer_realm_head_reads_total", factory: factory)
        headWrites = CoreMetrics.Counter(label: "coffer_realm_head_writes_total", factory: factory)
        refusals = CoreMetrics.Counter(label: "coffer_realm_refusals_total", factory: factory)
        undecryptable = CoreMetrics.Counter(label: "coffer_realm_undecryptable_requests_total", factory: factory)
        replays = CoreMetrics.Counter(label: "coffer_realm_replays_refused_total", factory: factory)
        busy = CoreMetrics.Counter(label: "coffer_realm_busy_total", factory: factory)
        tokenRefusals = CoreMetrics.Counter(label: "coffer_realm_token_refusals_total", factory: factory)
        resets = CoreMetrics.Counter(label: "coffer_realm_resets_total", factory: factory)
        replaceRefusals = CoreMetrics.Counter(label: "coffer_realm_replace_refusals_total", factory: factory)
        storeUp = CoreMetrics.Gauge(label: "coffer_realm_store_up", factory: factory)
    }

    /// Records one request's latency, by endpoint.
    func recordLatency(endpoint: String, nanoseconds: Int64) {
        CoreMetrics.Timer(label: "coffer_realm_request_duration_seconds", dimensions: [("endpoint", endpoint)], factory: factory)
            .recordNanoseconds(nanoseconds)
    }

    /// Records one store operation's latency (`op`: q0, q1, q2, r1, r2, delete, head_read,
    /// head_write, replay_check, sweep, ready, read).
    func recordStore(op: String, duration: Duration) {
        let c = duration.components
        CoreMetrics.Timer(label: "coffer_realm_store_duration_seconds", dimensions: [("op", op)], factory: factory)
            .recordNanoseconds(c.seconds * 1_000_000_000 + c.attoseconds / 1_000_000_000)
    }

    /// Counts a store operation that failed (not a refusal: the database could not be read or written).
    func storeError(op: String) {
        CoreMetrics.Counter(label: "coffer_realm_store_errors_total", dimensions: [("op", op)], factory: factory).increment()
    }

    /// 1 while the store answers the readiness probe, 0 when it does not (`GET /ready`).
    func setStoreUp(_ up: Bool) {
        storeUp.record(up ? 1 : 0)
    }

    /// The Prometheus text exposition.
    public func render() -> String { registry.emitToString() }
}
