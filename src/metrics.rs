//! The Prometheus metrics of one server instance.
//!
//! Every metric is prefixed `keepalive_`, measured in base units (seconds, bytes, ratios), and
//! labelled only by bounded values (route templates, methods, status codes): never by a
//! session id or a raw URI. Each server owns its own registry, so tests can run several.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds, fine below a millisecond where keepalives live.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// All metrics of one instance.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by method, route template and status code.
    pub http_requests_total: IntCounterVec,
    /// HTTP request latency by method and route template.
    pub http_request_duration_seconds: HistogramVec,
    /// Sessions created.
    pub sessions_created_total: IntCounter,
    /// Keepalive requests by result (`extended`, `expired`).
    pub keepalives_total: IntCounterVec,
    /// Sessions ended by a logout.
    pub sessions_ended_total: IntCounter,
    /// Sessions the store holds live, set from the store's count at each scrape
    /// ([`set_sessions_live`](Self::set_sessions_live)).
    sessions_live: IntGauge,
    sessions_live_registered: std::sync::Once,
    /// `keepalives_total{result="extended"}`, looked up once: the keepalive path counts
    /// without hashing label values.
    pub keepalives_extended: IntCounter,
    /// `keepalives_total{result="expired"}`.
    pub keepalives_expired: IntCounter,
    /// Forward-authentication checks by outcome (`allowed`, `anonymous`, `expired`).
    pub forward_auth_total: IntCounterVec,
    /// Expired sessions removed by the purge.
    pub sessions_purged_total: IntCounter,
    /// Session changes written to the local store.
    pub store_writes_total: IntCounter,
    /// Duration of one batched commit of the local store.
    pub store_flush_seconds: Histogram,
    /// 1 for the current health status, 0 for the others.
    pub health_status: IntGaugeVec,
    /// Memory in use (working set), in bytes.
    pub memory_used_bytes: Gauge,
    /// Memory limit the use is measured against, in bytes.
    pub memory_limit_bytes: Gauge,
    /// 1 while the instance is ready for traffic.
    pub ready: IntGauge,
    /// Open HTTP connections.
    pub http_connections: IntGauge,
    /// Requests refused by the rate limits, by route.
    pub rate_limited_total: IntCounterVec,
    /// 1 while Redis answers, 0 while offline (absent without Redis).
    pub redis_up: IntGauge,
    /// 1 while this instance writes every local session back to Redis: in the background, or
    /// before serving from a Redis that lost them (absent without Redis).
    pub redis_writing_back: IntGauge,
    /// Latency of Redis operations by operation.
    pub redis_operation_duration_seconds: HistogramVec,
    /// Session operations served from the local store because Redis was offline.
    pub redis_fallbacks_total: IntCounter,
    /// Times Redis went offline.
    pub redis_outages_total: IntCounter,
    /// Sessions written back to Redis by a re-sync.
    pub redis_resynced_sessions_total: IntCounter,
    /// Logouts written back to Redis by a re-sync.
    pub redis_resynced_logouts_total: IntCounter,
    /// Local copies of sessions ended after another instance's logout: heard, or found by its
    /// marker after a time not listening.
    pub redis_remote_logouts_total: IntCounter,
    /// Local copies dropped, the least lately active first, to keep the local store within
    /// its budget (`redis_mirror_max_sessions`).
    pub redis_mirror_trimmed_total: IntCounter,
    /// Alert notices delivered to webhooks, by sink and result (`sent`, `failed`).
    pub alert_deliveries_total: IntCounterVec,
    /// Alert notices dropped because a webhook's outbox was full, by sink.
    pub alerts_dropped_total: IntCounterVec,
}

/// Registering a metric only fails on a duplicate name or an invalid definition, both bugs in
/// this file caught by its tests; there is no sensible way to run without metrics.
fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|err| panic!("invalid metric definition: {err}"));
    metric
}

#[cfg(target_os = "linux")]
fn register_process_metrics(registry: &Registry) {
    let collector = prometheus::process_collector::ProcessCollector::for_self();
    registry
        .register(Box::new(collector))
        .unwrap_or_else(|err| panic!("invalid metric definition: {err}"));
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("keepalive")
}

#[allow(clippy::new_without_default)]
impl Metrics {
    /// A fresh registry with every metric at zero.
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        let build_info = register(
            r,
            IntGaugeVec::new(
                opts("build_info", "Version of the running keepalive, always 1."),
                &["version"],
            )
            .expect("valid metric"),
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let health_status = register(
            r,
            IntGaugeVec::new(
                opts("health_status", "1 for the current health status (healthy, degraded, critical), 0 for the others."),
                &["status"],
            )
            .expect("valid metric"),
        );
        for status in ["healthy", "degraded", "critical"] {
            health_status.with_label_values(&[status]).set(0);
        }
        let keepalives_total = register(
            r,
            IntCounterVec::new(
                opts(
                    "keepalives_total",
                    "Keepalive requests by result: extended or expired.",
                ),
                &["result"],
            )
            .expect("valid metric"),
        );
        let keepalives_extended = keepalives_total.with_label_values(&["extended"]);
        let keepalives_expired = keepalives_total.with_label_values(&["expired"]);
        let forward_auth_total = register(
            r,
            IntCounterVec::new(
                opts(
                    "forward_auth_total",
                    "Forward-authentication checks by outcome: allowed, anonymous or expired.",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
        );
        for outcome in ["allowed", "anonymous", "expired"] {
            forward_auth_total.with_label_values(&[outcome]);
        }
        // The process's CPU time, resident and virtual memory, open and maximum file
        // descriptors and start time, under the `process_` names every Prometheus client uses
        // (read from /proc at each scrape).
        #[cfg(target_os = "linux")]
        register_process_metrics(r);
        Self {
            http_requests_total: register(
                r,
                IntCounterVec::new(
                    opts("http_requests_total", "HTTP requests by method, route template and status code."),
                    &["method", "route", "status"],
                )
                .expect("valid metric"),
            ),
            http_request_duration_seconds: register(
                r,
                HistogramVec::new(
                    HistogramOpts::from(opts("http_request_duration_seconds", "HTTP request latency by method and route template."))
                        .buckets(LATENCY_BUCKETS.to_vec()),
                    &["method", "route"],
                )
                .expect("valid metric"),
            ),
            sessions_created_total: register(r, IntCounter::with_opts(opts("sessions_created_total", "Sessions created.")).expect("valid metric")),
            keepalives_total,
            keepalives_extended,
            keepalives_expired,
            forward_auth_total,
            sessions_ended_total: register(r, IntCounter::with_opts(opts("sessions_ended_total", "Sessions ended by a logout.")).expect("valid metric")),
            // Registered by `set_sessions_live` only: absent for a store that keeps no count.
            sessions_live_registered: std::sync::Once::new(),
            sessions_live: IntGauge::with_opts(opts(
                "sessions_live",
                "Sessions live in this instance's store: every session without Redis; with Redis, the ones this instance created or served within their idle timeout (its local copies).",
            ))
            .expect("valid metric"),
            sessions_purged_total: register(
                r,
                IntCounter::with_opts(opts("sessions_purged_total", "Expired sessions removed from the local store.")).expect("valid metric"),
            ),
            store_writes_total: register(
                r,
                IntCounter::with_opts(opts("store_writes_total", "Session changes written to the local store.")).expect("valid metric"),
            ),
            store_flush_seconds: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::from(opts("store_flush_seconds", "Duration of one batched, durable commit of the local store."))
                        .buckets(LATENCY_BUCKETS.to_vec()),
                )
                .expect("valid metric"),
            ),
            health_status,
            memory_used_bytes: register(r, Gauge::with_opts(opts("memory_used_bytes", "Memory in use (working set), in bytes.")).expect("valid metric")),
            memory_limit_bytes: register(
                r,
                Gauge::with_opts(opts("memory_limit_bytes", "Memory limit the use is measured against (container limit, else host memory), in bytes."))
                    .expect("valid metric"),
            ),
            ready: register(r, IntGauge::with_opts(opts("ready", "1 while the instance is ready for traffic.")).expect("valid metric")),
            http_connections: register(r, IntGauge::with_opts(opts("http_connections", "Open HTTP connections.")).expect("valid metric")),
            rate_limited_total: register(
                r,
                IntCounterVec::new(opts("rate_limited_total", "Requests refused by the rate limits (429), by route."), &["route"]).expect("valid metric"),
            ),
            // Registered by `track_redis` only: without Redis the metric is absent, not 0.
            redis_up: IntGauge::with_opts(opts("redis_up", "1 while Redis answers, 0 while it is offline.")).expect("valid metric"),
            redis_writing_back: IntGauge::with_opts(opts("redis_writing_back", "1 while this instance writes every local session back to Redis: in the background after it stopped without a clean stop or Redis evicted keys, or before serving from a Redis that lost its data.")).expect("valid metric"),
            redis_operation_duration_seconds: register(
                r,
                HistogramVec::new(
                    HistogramOpts::from(opts("redis_operation_duration_seconds", "Latency of Redis operations by operation."))
                        .buckets(LATENCY_BUCKETS.to_vec()),
                    &["operation"],
                )
                .expect("valid metric"),
            ),
            redis_fallbacks_total: register(
                r,
                IntCounter::with_opts(opts("redis_fallbacks_total", "Session operations served from the local store because Redis was offline."))
                    .expect("valid metric"),
            ),
            redis_outages_total: register(r, IntCounter::with_opts(opts("redis_outages_total", "Times Redis went offline.")).expect("valid metric")),
            redis_resynced_sessions_total: register(
                r,
                IntCounter::with_opts(opts("redis_resynced_sessions_total", "Sessions written back to Redis by a re-sync.")).expect("valid metric"),
            ),
            alert_deliveries_total: register(
                r,
                IntCounterVec::new(opts("alert_deliveries_total", "Alert notices delivered to webhooks, by sink and result."), &["sink", "result"])
                    .expect("valid metric"),
            ),
            alerts_dropped_total: register(
                r,
                IntCounterVec::new(opts("alerts_dropped_total", "Alert notices dropped because a webhook's outbox was full, by sink."), &["sink"])
                    .expect("valid metric"),
            ),
            redis_resynced_logouts_total: register(
                r,
                IntCounter::with_opts(opts("redis_resynced_logouts_total", "Logouts written back to Redis by a re-sync.")).expect("valid metric"),
            ),
            redis_remote_logouts_total: register(
                r,
                IntCounter::with_opts(opts("redis_remote_logouts_total", "Local copies of sessions ended after another instance's logout: heard, or found by its marker after a time not listening.")).expect("valid metric"),
            ),
            redis_mirror_trimmed_total: register(
                r,
                IntCounter::with_opts(opts("redis_mirror_trimmed_total", "Local copies of sessions dropped, the least lately active first, to keep the local store within redis_mirror_max_sessions (Redis holds the sessions).")).expect("valid metric"),
            ),
            registry,
        }
    }

    /// Exports `keepalive_redis_up`: called when Redis is configured, so that an instance
    /// without Redis never reports it down.
    pub fn track_redis(&self) {
        for gauge in [&self.redis_up, &self.redis_writing_back] {
            if let Err(err) = self.registry.register(Box::new(gauge.clone())) {
                tracing::debug!(error = %err, "a Redis gauge is already registered");
            }
        }
    }

    /// Sets `keepalive_sessions_live`, registering it on first use: a store that keeps no
    /// count never calls this, and the metric stays absent rather than a false 0.
    pub fn set_sessions_live(&self, live: u64) {
        self.sessions_live_registered.call_once(|| {
            if let Err(err) = self.registry.register(Box::new(self.sessions_live.clone())) {
                tracing::error!(error = %err, "cannot register keepalive_sessions_live");
            }
        });
        self.sessions_live
            .set(i64::try_from(live).unwrap_or(i64::MAX));
    }

    /// The metrics in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid metric families, which `new` cannot build.
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %err, "encoding metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_metrics() {
        let metrics = Metrics::new();
        metrics.sessions_created_total.inc();
        let text = metrics.render();
        assert!(
            text.contains("keepalive_sessions_created_total 1"),
            "{text}"
        );
        assert!(text.contains("keepalive_build_info{version="), "{text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            // The process collector's metrics keep the names every Prometheus client gives them.
            assert!(
                line.starts_with("keepalive_") || line.starts_with("process_"),
                "{line}"
            );
        }
    }
}
