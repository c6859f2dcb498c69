//! Outlier ejection's driver: takes the outcomes clients report, lets the
//! pure detector (`core::outlier`) decide, and applies its verdicts as
//! [`Change::Eject`]s; a timer returns ejected instances when their time is
//! up. Also logs services entering and leaving a panic ([`PanicLog`]).
//!
//! Ejections are applied like expiry, as changes of the registry's own
//! sequence by Maxine itself: derived state, not journaled (see
//! [`Change::Eject`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::core::outlier::{Detector, Outcome, OutlierConfig, Verdict};
use crate::core::{Batch, Change, Context, InstanceId, Observer, Registry, ServiceKey};

/// The detector and what it needs. Cloning copies an `Arc`.
#[derive(Clone)]
pub struct Outliers {
    inner: Arc<Shared>,
}

struct Shared {
    registry: Registry,
    detector: Mutex<Detector>,
    /// Wakes the return timer when a new ejection may end sooner.
    wake: tokio::sync::Notify,
}

/// What a report came to.
#[derive(Debug, Default)]
pub struct Reported {
    /// Instances ejected by this report.
    pub ejected: Vec<InstanceId>,
    /// Ids in the report that are not instances of the service (ignored).
    pub unknown: Vec<InstanceId>,
}

impl Outliers {
    pub fn new(registry: Registry, config: OutlierConfig) -> Self {
        Self {
            inner: Arc::new(Shared {
                registry,
                detector: Mutex::new(Detector::new(config)),
                wake: tokio::sync::Notify::new(),
            }),
        }
    }

    fn detector(&self) -> std::sync::MutexGuard<'_, Detector> {
        self.inner
            .detector
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a batch of outcomes for `key` (`None`: the service has no
    /// instances) and ejects the instances the detector says to.
    pub fn report(&self, key: &ServiceKey, outcomes: &[Outcome], now: Instant) -> Option<Reported> {
        let reg = &self.inner.registry;
        let snap = reg.service(key)?;
        let present: Vec<&InstanceId> = snap.instances.keys().collect();
        let unknown = outcomes
            .iter()
            .filter(|o| !snap.instances.contains_key(&o.id))
            .map(|o| o.id.clone())
            .collect();
        let verdicts = self.detector().report(key, &present, outcomes, now);
        let changes: Vec<Change> = verdicts
            .iter()
            .filter_map(|v| match v {
                Verdict::Eject { id, until } => {
                    let inst = snap.instances.get(id)?;
                    tracing::warn!(
                        service = %key.service, instance = %id,
                        for_secs = until.saturating_duration_since(now).as_secs(),
                        "outlier ejected: consecutive failures reported"
                    );
                    Some(Change::Eject {
                        key: key.clone(),
                        id: id.clone(),
                        ejected: true,
                        of: inst.index,
                    })
                }
                Verdict::Return { .. } => None,
            })
            .collect();
        let ejected: Vec<InstanceId> = changes
            .iter()
            .filter_map(|c| c.target().map(|(_, id)| id.clone()))
            .collect();
        if !changes.is_empty() {
            let _ = reg.apply_next(changes, &Context::system(), now);
            self.inner.wake.notify_one();
        }
        Some(Reported { ejected, unknown })
    }

    /// Returns the instances whose ejection is over at `now` (on
    /// probation). Returns how many came back.
    pub fn return_due(&self, now: Instant) -> usize {
        let due = self.detector().due(now);
        let reg = &self.inner.registry;
        let changes: Vec<Change> = due
            .into_iter()
            .filter_map(|(key, v)| {
                let Verdict::Return { id } = v else {
                    return None;
                };
                let inst = reg.service(&key)?.instances.get(&id)?.clone();
                tracing::info!(service = %key.service, instance = %id, "outlier returned on probation");
                Some(Change::Eject {
                    key,
                    id,
                    ejected: false,
                    of: inst.index,
                })
            })
            .collect();
        let n = changes.len();
        if n > 0 {
            let _ = reg.apply_next(changes, &Context::system(), now);
        }
        n
    }

    /// The return timer: sleeps until the next ejection ends (at most a
    /// second), then returns what is due.
    pub async fn run(self, shutdown: CancellationToken) {
        use std::time::Duration;
        loop {
            let now = tokio::time::Instant::now();
            let max = now + Duration::from_secs(1);
            let next = self
                .detector()
                .next_due()
                .map(|d| tokio::time::Instant::from_std(d).clamp(now, max))
                .unwrap_or(max);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(next) => {}
                _ = self.inner.wake.notified() => {}
            }
            self.return_due(tokio::time::Instant::now().into_std());
        }
    }
}

/// Logs services entering and leaving a panic (fewer healthy instances
/// than their panic threshold: answers hold all of them). An observer: it
/// sees every changed service under the registry's lock, and keeps only
/// the names of services in a panic.
#[derive(Default)]
pub struct PanicLog {
    in_panic: Mutex<HashSet<ServiceKey>>,
}

impl Observer for PanicLog {
    fn applied(&self, batch: &Batch<'_>) {
        if batch.services.is_empty() {
            return;
        }
        let mut set = self.in_panic.lock().unwrap_or_else(|p| p.into_inner());
        for (key, snap) in batch.services {
            let now = snap.as_ref().is_some_and(|s| s.in_panic());
            let was = set.contains(key);
            if now && !was {
                let s = snap.as_ref().expect("in a panic, so present");
                tracing::warn!(
                    service = %key.service, datacenter = %key.dc,
                    threshold = s.settings.panic_threshold,
                    "panic: fewer healthy instances than the panic threshold; answering with all of them"
                );
                set.insert(key.clone());
            } else if was && !now {
                tracing::info!(service = %key.service, datacenter = %key.dc, "panic over: answering with healthy instances only");
                set.remove(key);
            }
        }
    }
}
