//! The health driver: runs every defined health check from one scheduler
//! and proposes what their results come to (docs/health.md).
//!
//! ```text
//!   change feed --events--> Schedule: one slot per defined check, one heap by due time
//!                              |  due checks, at most `max_in_flight` at once
//!                              v
//!                           kinds::Runner: http (pooled client), tcp, grpc, script
//!                              |  each run bounded by its check's timeout
//!                              v  (a FuturesUnordered driven by this one task)
//!   thresholds met -> Log::propose(Change::CheckStatus / Change::Reap) -> DNS answers rebuilt
//! ```
//!
//! Like the resolver driver it only proposes changes and follows the
//! registry's events; the core never calls it. No task or thread per
//! check: runs are futures in one `FuturesUnordered`, polled by the
//! driver's task; a run that hangs holds one place in flight until its
//! timeout, and never delays another check. Checks are only ever the ones
//! instances define: with none defined, the driver only waits for events.
//!
//! [`Stats`] says how the scheduler keeps up: a run that starts later than
//! it was due (all places in flight taken, or the task starved of CPU) is
//! lag; lag beyond [`LAG_WARNING`] is logged as a warning.
//!
//! Seams: [`scheduler`] (the schedule and thresholds, no I/O), [`kinds`]
//! (what a run does), and [`outlier`]: passive health, the driver of
//! outlier ejection (it lets `core::outlier` decide from the outcomes
//! clients report) and the panic log. Must not import: dns, http, config.

pub mod kinds;
pub mod outlier;
pub mod scheduler;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::core::{Change, CheckResult, Context};
use crate::events::{Delivery, Subscription};
use crate::store::Log;

use scheduler::{Schedule, Spread};

/// How often the scheduler reports its window of [`Stats`] (debug level).
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Lag beyond which the scheduler counts as behind (and says so in the log).
pub const LAG_WARNING: Duration = Duration::from_secs(1);

/// How the driver runs checks.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Most runs in flight.
    pub max_in_flight: usize,
    /// Script checks may run (`--enable-script-checks`).
    pub script_checks: bool,
}

/// The scheduler's counters, for metrics and the benchmark. Cloning the
/// `Arc` that holds it is how others read it.
#[derive(Debug, Default)]
pub struct Stats {
    /// Checks defined.
    pub checks: AtomicU64,
    /// Runs in flight.
    pub in_flight: AtomicU64,
    /// Runs finished since start.
    pub runs: AtomicU64,
    /// How late the latest run started after it was due, in microseconds.
    pub lag_us: AtomicU64,
    /// The largest such lag since the last [`Stats::take_window`].
    pub max_lag_us: AtomicU64,
    /// Whether the latest runs started more than [`LAG_WARNING`] late.
    pub behind: AtomicBool,
    /// Run durations: bucket `n` counts runs of `2^n` to `2^(n+1)` µs.
    latency: [AtomicU64; 32],
}

/// What [`Stats::take_window`] returns: one reporting window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Window {
    pub runs: u64,
    /// Upper bounds of the latency buckets the median and the 99th
    /// percentile fall in.
    pub p50: Duration,
    pub p99: Duration,
    pub max_lag: Duration,
}

impl Stats {
    fn record_run(&self, took: Duration) {
        let us = took.as_micros().max(1) as u64;
        let bucket = (63 - us.leading_zeros() as usize).min(31);
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        self.runs.fetch_add(1, Ordering::Relaxed);
    }

    fn record_lag(&self, lag: Duration) {
        let us = lag.as_micros() as u64;
        self.lag_us.store(us, Ordering::Relaxed);
        self.max_lag_us.fetch_max(us, Ordering::Relaxed);
    }

    /// The latency distribution and largest lag since the last call, and
    /// starts a new window.
    pub fn take_window(&self) -> Window {
        let counts: Vec<u64> = self
            .latency
            .iter()
            .map(|b| b.swap(0, Ordering::Relaxed))
            .collect();
        let runs: u64 = counts.iter().sum();
        let at = |q: f64| {
            let want = ((runs as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (n, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= want {
                    return Duration::from_micros(1u64 << (n + 1));
                }
            }
            Duration::ZERO
        };
        Window {
            runs,
            p50: if runs == 0 { Duration::ZERO } else { at(0.5) },
            p99: if runs == 0 { Duration::ZERO } else { at(0.99) },
            max_lag: Duration::from_micros(self.max_lag_us.swap(0, Ordering::Relaxed)),
        }
    }
}

/// The driver: owns the schedule, the runs in flight and its place in
/// the change feed.
pub struct Driver {
    schedule: Schedule,
    runner: kinds::Runner,
    settings: Settings,
    log: Arc<dyn Log>,
    feed: Subscription,
    stats: Arc<Stats>,
}

/// A run's result: the slot, when it started, the outcome.
type Done = (u64, Instant, kinds::Outcome);

impl Driver {
    /// A driver following `feed` (subscribe it from 0: it starts from a
    /// snapshot) and proposing to `log`.
    pub fn new(settings: Settings, log: Arc<dyn Log>, feed: Subscription) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Self {
            schedule: Schedule::new(seed),
            runner: kinds::Runner::new(settings.script_checks),
            settings,
            log,
            feed,
            stats: Arc::default(),
        }
    }

    /// The scheduler's counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Runs until `shutdown`; runs in flight are dropped then (script
    /// checks' processes are killed with them).
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut in_flight: FuturesUnordered<
            std::pin::Pin<Box<dyn std::future::Future<Output = Done> + Send>>,
        > = FuturesUnordered::new();
        let max = self.settings.max_in_flight.max(1);
        let mut last_warning: Option<Instant> = None;
        // A report of the last window, at debug level (the benchmark reads it).
        let mut report = tokio::time::interval_at(Instant::now() + REPORT_EVERY, REPORT_EVERY);
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let now = Instant::now();
            while in_flight.len() < max {
                let Some(sid) = self.schedule.pop_due(now) else {
                    break;
                };
                let Some(slot) = self.schedule.slot(sid) else {
                    continue;
                };
                let lag = now.saturating_duration_since(slot.due);
                self.stats.record_lag(lag);
                let behind = lag > LAG_WARNING;
                self.stats.behind.store(behind, Ordering::Relaxed);
                if behind && last_warning.is_none_or(|t| now - t > Duration::from_secs(10)) {
                    last_warning = Some(now);
                    tracing::warn!(
                        lag_ms = lag.as_millis() as u64,
                        checks = self.schedule.len(),
                        in_flight = in_flight.len(),
                        max_in_flight = max,
                        "health checks are starting late: the scheduler is behind"
                    );
                }
                let run = self.runner.run(slot.spec());
                in_flight.push(Box::pin(async move {
                    let outcome = run.await;
                    (sid, now, outcome)
                }));
            }
            self.stats
                .in_flight
                .store(in_flight.len() as u64, Ordering::Relaxed);
            let due = if in_flight.len() < max {
                self.schedule.next_due()
            } else {
                None
            };
            let changes = tokio::select! {
                _ = shutdown.cancelled() => return,
                delivery = self.feed.next() => self.delivered(delivery),
                Some((sid, started, (status, output))) = in_flight.next(), if !in_flight.is_empty() => {
                    let now = Instant::now();
                    self.stats.record_run(now.saturating_duration_since(started));
                    let result = CheckResult::new(status, &output, unix_ms());
                    let mut changes = self.schedule.finished(sid, result, now);
                    // Take every other run that is already done, in one go.
                    while let Some(Some((sid, started, (status, output)))) =
                        futures_util::FutureExt::now_or_never(in_flight.next())
                    {
                        self.stats.record_run(now.saturating_duration_since(started));
                        let result = CheckResult::new(status, &output, unix_ms());
                        changes.extend(self.schedule.finished(sid, result, now));
                    }
                    changes
                }
                _ = sleep_until(due), if due.is_some() => Vec::new(),
                _ = report.tick() => {
                    self.report();
                    Vec::new()
                }
            };
            self.stats
                .checks
                .store(self.schedule.len() as u64, Ordering::Relaxed);
            self.propose(changes).await;
        }
    }

    fn report(&self) {
        if self.schedule.len() == 0 {
            return;
        }
        let w = self.stats.take_window();
        tracing::debug!(
            checks = self.schedule.len(),
            runs_per_s = w.runs as f64 / REPORT_EVERY.as_secs_f64(),
            p50_us = w.p50.as_micros() as u64,
            p99_us = w.p99.as_micros() as u64,
            max_lag_ms = w.max_lag.as_millis() as u64,
            in_flight = self.stats.in_flight.load(Ordering::Relaxed),
            "health check scheduler report"
        );
    }

    fn delivered(&mut self, delivery: Delivery) -> Vec<Change> {
        let now = Instant::now();
        match delivery {
            Delivery::Snapshot { services, .. } => self.schedule.reset(&services, now),
            Delivery::Changes { events, .. } => {
                for e in &events {
                    self.schedule
                        .observe(&e.key, &e.id, e.instance.as_ref(), now, Spread::Soon);
                }
            }
        }
        Vec::new()
    }

    async fn propose(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        for c in &changes {
            match c {
                Change::CheckStatus {
                    key,
                    id,
                    check,
                    status,
                    ..
                } => tracing::info!(
                    service = %key.service,
                    instance = %id,
                    check = %check.spec.name,
                    status = status.as_str(),
                    "health check changed status"
                ),
                Change::Reap { key, id, .. } => tracing::warn!(
                    service = %key.service,
                    instance = %id,
                    "deregistering: a health check was critical for longer than its deregister_critical_after"
                ),
                _ => {}
            }
        }
        // Status changes are not stored (Change::CheckStatus); a
        // deregistration is, in the background (`Context::system`).
        if let Err(e) = self.log.propose(changes, Context::system()).await {
            tracing::warn!(error = %e, "a health check's result could not be applied");
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
