//! Prometheus metrics: every metric Maxine exports is declared here, once,
//! with its help text (docs/operations.md lists them), and `GET /metrics`
//! encodes them in the Prometheus text format.
//!
//! ```text
//!   DNS workers -- own slots, plain stores --> DnsCounters  \
//!   HTTP route layer --> HttpMetrics (per route and status)  |
//!   store writer thread --> StoreMetrics (per batch)          +--> Metrics --scrape--> text
//!   answer cache observer --> RebuildMetrics (per apply)      |
//!   registry (read at scrape) --> RegistryCollector         |
//!   health check scheduler (read at scrape) --> HealthCollector /
//! ```
//!
//! Only the DNS counters are on a hot path; the others change once per
//! request, batch or registry change.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::Method;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::core::{Batch, Observer, Registry};

pub use super::dns_counters::{DnsCounters, DnsSlot};

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every exported metric. Cloning copies one `Arc`.
#[derive(Clone, Default)]
pub struct Metrics {
    registry: Arc<Mutex<prometheus_client::registry::Registry>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, prometheus_client::registry::Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register(&self, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
        self.lock().register(name, help, metric);
    }

    /// Adds a collector read at every scrape.
    pub fn collect(&self, collector: impl Collector) {
        self.lock().register_collector(Box::new(collector));
    }

    /// The DNS front end's counters, summed at every scrape.
    pub fn dns(&self) -> DnsCounters {
        let counters = DnsCounters::default();
        self.collect(counters.clone());
        counters
    }

    /// The registry's size and index, read at every scrape.
    pub fn registry(&self, registry: Registry) {
        self.collect(RegistryCollector { registry });
    }

    /// The health check scheduler's counters, read at every scrape.
    pub fn health(&self, stats: Arc<crate::health::Stats>) {
        self.collect(HealthCollector { stats });
    }

    /// Everything, in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.lock());
        text
    }
}

/// Labels of an HTTP request: all static strings and a number, so counting
/// a request allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
    method: &'static str,
}

/// HTTP API metrics. Cloning copies two `Arc`s.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
}

impl Default for HttpMetrics {
    /// Metrics that nothing exports (an API without a [`Metrics`]).
    fn default() -> Self {
        Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }
}

fn latency_histogram() -> Histogram {
    // 100 µs to about 26 s.
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
}

impl HttpMetrics {
    pub fn new(metrics: &Metrics) -> Self {
        let m = Self::default();
        metrics.register(
            "maxine_http_requests",
            "HTTP API requests answered, by route (the route table's path), method and status.",
            m.requests.clone(),
        );
        metrics.register(
            "maxine_http_request_duration_seconds",
            "Time from an HTTP API request's arrival to its response's headers, by route and method.",
            m.latency.clone(),
        );
        m
    }

    /// One request of `route` answered with `status` after `started`.
    pub fn observe(&self, route: &'static str, method: &Method, status: u16, started: Instant) {
        let method = method_label(method);
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route, method })
            .observe(started.elapsed().as_secs_f64());
    }
}

/// The method as a label: the route table only has these (any other is
/// answered 405 before it reaches a route).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The store writer's metrics. Cloning copies three `Arc`s.
#[derive(Clone, Debug)]
pub struct StoreMetrics {
    commit: Histogram,
    batch: Histogram,
    failures: Counter,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        Self {
            commit: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            batch: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            failures: Counter::default(),
        }
    }
}

impl StoreMetrics {
    /// Exports `self` (made by the journal) through `metrics`.
    pub fn export(&self, metrics: &Metrics) {
        metrics.register(
            "maxine_store_commit_duration_seconds",
            "Time of one group commit of the store (with its audit records), successful or not.",
            self.commit.clone(),
        );
        metrics.register(
            "maxine_store_batch_changes",
            "Changes written by one group commit of the store.",
            self.batch.clone(),
        );
        metrics.register(
            "maxine_store_commit_failures",
            "Group commits the store refused (their changes were undone and answered 503).",
            self.failures.clone(),
        );
    }

    /// One commit of `changes` that took `started.elapsed()`.
    pub fn committed(&self, changes: usize, started: Instant, ok: bool) {
        self.commit.observe(started.elapsed().as_secs_f64());
        if ok {
            self.batch.observe(changes as f64);
        } else {
            self.failures.inc();
        }
    }
}

/// How often and for how long the DNS ready answers were rebuilt.
#[derive(Clone, Debug)]
pub struct RebuildMetrics {
    services: Counter,
    duration: Histogram,
}

impl RebuildMetrics {
    pub fn new(metrics: &Metrics) -> Self {
        let m = Self {
            services: Counter::default(),
            duration: Histogram::new(exponential_buckets(0.000_001, 4.0, 12)),
        };
        metrics.register(
            "maxine_dns_answer_rebuilds",
            "Services whose ready DNS answers were rebuilt after a registry change.",
            m.services.clone(),
        );
        metrics.register(
            "maxine_dns_answer_rebuild_duration_seconds",
            "Time to rebuild the ready DNS answers of one registry apply (inside the write lock).",
            m.duration.clone(),
        );
        m
    }

    /// Wraps `observer` (the answer cache) so that each apply is timed.
    pub fn timed<O: Observer>(&self, observer: O) -> Timed<O> {
        Timed {
            inner: observer,
            metrics: self.clone(),
        }
    }
}

/// An observer whose every apply is counted and timed.
pub struct Timed<O> {
    inner: O,
    metrics: RebuildMetrics,
}

impl<O: Observer> Observer for Timed<O> {
    fn applied(&self, batch: &Batch<'_>) {
        let t = Instant::now();
        self.inner.applied(batch);
        if !batch.services.is_empty() {
            self.metrics.duration.observe(t.elapsed().as_secs_f64());
            self.metrics.services.inc_by(batch.services.len() as u64);
        }
    }

    fn acl_restored(&self) {
        self.inner.acl_restored()
    }
}

/// The registry's size, read at scrape time (lock-free reads of the maps).
#[derive(Clone)]
struct RegistryCollector {
    registry: Registry,
}

impl std::fmt::Debug for RegistryCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistryCollector")
    }
}

impl Collector for RegistryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let services = self.registry.services();
        let mut by_health: Vec<(String, i64)> = Vec::new();
        for s in &services {
            for i in s.instances.values() {
                // Its status (the worst of its checks), by name, whatever
                // states the model grows.
                let name = format!("{:?}", i.status()).to_ascii_lowercase();
                match by_health.iter_mut().find(|(h, _)| *h == name) {
                    Some((_, n)) => *n += 1,
                    None => by_health.push((name, 1)),
                }
            }
        }
        for h in ["passing", "warning", "critical"] {
            if !by_health.iter().any(|(n, _)| n == h) {
                by_health.push((h.to_string(), 0));
            }
        }
        by_health.sort();
        ConstGauge::new(services.len() as i64).encode(encoder.encode_descriptor(
            "maxine_registry_services",
            "Services with at least one instance, in every datacenter this node knows.",
            None,
            MetricType::Gauge,
        )?)?;
        let mut m = encoder.encode_descriptor(
            "maxine_registry_instances",
            "Registered instances, by health.",
            None,
            MetricType::Gauge,
        )?;
        for (health, n) in &by_health {
            ConstGauge::new(*n).encode(m.encode_family(&[("health", health.as_str())])?)?;
        }
        ConstGauge::new(self.registry.index() as i64).encode(encoder.encode_descriptor(
            "maxine_registry_index",
            "The index of the latest change applied to the registry.",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}

/// The health check scheduler's counters, read at scrape time.
#[derive(Debug)]
struct HealthCollector {
    stats: Arc<crate::health::Stats>,
}

impl Collector for HealthCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.stats;
        let gauge = |encoder: &mut DescriptorEncoder, name, help, v: i64| {
            ConstGauge::new(v).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Gauge,
            )?)
        };
        gauge(
            &mut encoder,
            "maxine_health_checks",
            "Active health checks defined (http, tcp, grpc, script).",
            s.checks.load(Relaxed) as i64,
        )?;
        gauge(
            &mut encoder,
            "maxine_health_checks_in_flight",
            "Health check runs in progress.",
            s.in_flight.load(Relaxed) as i64,
        )?;
        ConstCounter::new(s.runs.load(Relaxed)).encode(encoder.encode_descriptor(
            "maxine_health_check_runs",
            "Health check runs finished since start.",
            None,
            MetricType::Counter,
        )?)?;
        ConstGauge::new(s.lag_us.load(Relaxed) as f64 / 1e6).encode(encoder.encode_descriptor(
            "maxine_health_scheduler_lag_seconds",
            "How late the latest health check run started after it was due.",
            None,
            MetricType::Gauge,
        )?)?;
        gauge(
            &mut encoder,
            "maxine_health_scheduler_behind",
            "1 while health check runs start more than a second late (the scheduler falls behind), else 0.",
            i64::from(s.behind.load(Relaxed)),
        )
    }
}
