//! Outlier ejection: which instances to take out of answers, and when to
//! let them back, from the outcomes clients report. Pure decisions over
//! counters kept here, away from the registry's snapshots; the driver
//! (`crate::health::outlier`) turns them into [`Change::Eject`](super::Change::Eject)s.
//!
//! The rules are Envoy's consecutive-failure detection with its defaults:
//! - `consecutive_failures` (5) failures in a row eject an instance for
//!   `base_ejection_time` (30 s) times the number of times it has been
//!   ejected, at most `max_ejection_time` (300 s);
//! - at most `max_ejection_percent` (10%) of a service's instances are
//!   ejected at once, and at least one may always be (as Envoy: a small
//!   service can still shed its one bad instance);
//! - when its time is up the instance returns on probation (half-open): its
//!   next reported failure ejects it again at once, its next success ends
//!   the probation.
//!
//! A batch entry's successes are read as coming before its failures: an
//! entry that ends a batch with failures counts them towards the streak
//! (the pessimistic reading; clients that report often make it exact).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::labels::InstanceId;
use super::registry::ServiceKey;

/// The detector's settings (`[outlier]` in the configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutlierConfig {
    /// 0: never eject.
    pub consecutive_failures: u32,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u8,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
        }
    }
}

impl OutlierConfig {
    /// How many of `n` instances may be ejected at once: the percentage,
    /// rounded down, but at least one.
    pub fn max_ejected(&self, n: usize) -> usize {
        (n * usize::from(self.max_ejection_percent) / 100).max(1)
    }

    /// How long the `times`-th ejection lasts.
    pub fn ejection_time(&self, times: u32) -> Duration {
        self.base_ejection_time
            .saturating_mul(times.max(1))
            .min(self.max_ejection_time)
    }
}

/// One reported outcome count for one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub id: InstanceId,
    pub successes: u32,
    pub failures: u32,
}

/// What the detector keeps of one instance.
#[derive(Clone, Debug, Default)]
struct Counters {
    /// Failures in a row, as reported.
    streak: u32,
    /// How many times it was ejected (the multiplier of its ejection time).
    times: u32,
    /// Ejected until then (`None`: not ejected).
    until: Option<Instant>,
    /// Returned from an ejection and no success reported since.
    probation: bool,
}

/// What the detector decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Take the instance out of answers until `until`.
    Eject { id: InstanceId, until: Instant },
    /// Its ejection is over: back in answers, on probation.
    Return { id: InstanceId },
}

/// The counters of every instance that had outcomes reported, by service.
#[derive(Debug, Default)]
pub struct Detector {
    config: OutlierConfig,
    services: HashMap<ServiceKey, HashMap<InstanceId, Counters>>,
}

impl Detector {
    pub fn new(config: OutlierConfig) -> Self {
        Self {
            config,
            services: HashMap::new(),
        }
    }

    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    /// Takes a batch of outcomes for the service `key`, whose instances
    /// are `present` now (ids; outcomes of others are ignored, and the
    /// counters of instances no longer present are dropped). Returns the
    /// instances to eject.
    pub fn report(
        &mut self,
        key: &ServiceKey,
        present: &[&InstanceId],
        outcomes: &[Outcome],
        now: Instant,
    ) -> Vec<Verdict> {
        let cfg = self.config;
        let counters = self.services.entry(key.clone()).or_default();
        counters.retain(|id, _| present.contains(&id));
        let mut ejected = counters.values().filter(|c| c.until.is_some()).count();
        let cap = cfg.max_ejected(present.len());
        let mut out = Vec::new();
        for o in outcomes {
            if !present.contains(&&o.id) {
                continue;
            }
            let c = counters.entry(o.id.clone()).or_default();
            if c.until.is_some() {
                continue; // ejected: outcomes of stale clients do not count
            }
            if o.successes > 0 {
                c.streak = 0;
                if o.failures == 0 {
                    c.probation = false;
                }
            }
            c.streak = c.streak.saturating_add(o.failures);
            let trips = cfg.consecutive_failures > 0
                && ((c.probation && o.failures > 0) || c.streak >= cfg.consecutive_failures);
            if trips && ejected < cap {
                c.times = c.times.saturating_add(1);
                let until = now + cfg.ejection_time(c.times);
                c.until = Some(until);
                c.streak = 0;
                c.probation = false;
                ejected += 1;
                out.push(Verdict::Eject {
                    id: o.id.clone(),
                    until,
                });
            }
        }
        if counters.is_empty() {
            self.services.remove(key);
        }
        out
    }

    /// The ejections whose time is up at `now`: those instances return, on
    /// probation.
    pub fn due(&mut self, now: Instant) -> Vec<(ServiceKey, Verdict)> {
        let mut out = Vec::new();
        for (key, counters) in &mut self.services {
            for (id, c) in counters.iter_mut() {
                if c.until.is_some_and(|u| u <= now) {
                    c.until = None;
                    c.probation = true;
                    out.push((key.clone(), Verdict::Return { id: id.clone() }));
                }
            }
        }
        out
    }

    /// When the next ejection ends, if any is running.
    pub fn next_due(&self) -> Option<Instant> {
        self.services
            .values()
            .flat_map(|m| m.values())
            .filter_map(|c| c.until)
            .min()
    }

    /// Whether `id` of `key` is ejected by this detector.
    pub fn is_ejected(&self, key: &ServiceKey, id: &InstanceId) -> bool {
        self.services
            .get(key)
            .and_then(|m| m.get(id))
            .is_some_and(|c| c.until.is_some())
    }

    /// Instances with counters (bounded by the registered instances that
    /// had outcomes reported).
    pub fn tracked(&self) -> usize {
        self.services.values().map(HashMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Datacenter, ServiceName};

    fn key() -> ServiceKey {
        ServiceKey::new(
            Datacenter::new("dc1").unwrap(),
            ServiceName::new("pay").unwrap(),
        )
    }

    fn ids(n: usize) -> Vec<InstanceId> {
        (0..n)
            .map(|i| InstanceId::new(&format!("i{i}")).unwrap())
            .collect()
    }

    /// One step of a table: at second `at`, instance `who` reports
    /// (successes, failures); `None`: only time passes.
    struct Step {
        at: u64,
        report: Option<(usize, u32, u32)>,
        /// Which instances are ejected after the step.
        ejected: &'static [usize],
    }

    fn step(at: u64, who: usize, ok: u32, failed: u32, ejected: &'static [usize]) -> Step {
        Step {
            at,
            report: Some((who, ok, failed)),
            ejected,
        }
    }

    fn wait(at: u64, ejected: &'static [usize]) -> Step {
        Step {
            at,
            report: None,
            ejected,
        }
    }

    fn run(name: &str, n: usize, cfg: OutlierConfig, steps: &[Step]) {
        let t0 = Instant::now();
        let ids = ids(n);
        let present: Vec<&InstanceId> = ids.iter().collect();
        let mut d = Detector::new(cfg);
        for (k, s) in steps.iter().enumerate() {
            let now = t0 + Duration::from_secs(s.at);
            d.due(now);
            if let Some((who, ok, failed)) = s.report {
                let o = Outcome {
                    id: ids[who].clone(),
                    successes: ok,
                    failures: failed,
                };
                d.report(&key(), &present, &[o], now);
            }
            let ejected: Vec<usize> = (0..n).filter(|i| d.is_ejected(&key(), &ids[*i])).collect();
            assert_eq!(ejected, s.ejected, "{name}: step {k} (t={}s)", s.at);
        }
    }

    #[test]
    fn ejection_probation_and_the_cap_as_a_table() {
        let cfg = OutlierConfig::default();
        run(
            "five failures in a row eject for 30 s",
            20,
            cfg,
            &[
                step(0, 0, 0, 4, &[]),
                step(1, 0, 0, 1, &[0]),
                wait(30, &[0]),
                wait(31, &[]),
            ],
        );
        run(
            "a success breaks the streak",
            20,
            cfg,
            &[
                step(0, 0, 0, 4, &[]),
                step(1, 0, 1, 0, &[]),
                step(2, 0, 0, 4, &[]),
                step(3, 0, 0, 1, &[0]),
            ],
        );
        run(
            "a batch's failures after its successes count",
            20,
            cfg,
            &[step(0, 0, 10, 5, &[0])],
        );
        run(
            "on probation one failure ejects again, for twice as long",
            20,
            cfg,
            &[
                step(0, 0, 0, 5, &[0]),
                wait(30, &[]),
                step(31, 0, 0, 1, &[0]),
                wait(90, &[0]),
                wait(91, &[]),
            ],
        );
        run(
            "a success ends the probation",
            20,
            cfg,
            &[
                step(0, 0, 0, 5, &[0]),
                wait(30, &[]),
                step(31, 0, 1, 0, &[]),
                step(32, 0, 0, 1, &[]),
            ],
        );
        run(
            "10% of 20 instances: two at once, the third waits",
            20,
            cfg,
            &[
                step(0, 0, 0, 5, &[0]),
                step(0, 1, 0, 5, &[0, 1]),
                step(0, 2, 0, 5, &[0, 1]),
                wait(30, &[]),
                step(31, 2, 0, 1, &[2]),
            ],
        );
        run(
            "at least one of a small service may be ejected",
            3,
            cfg,
            &[step(0, 0, 0, 5, &[0]), step(0, 1, 0, 5, &[0])],
        );
        run(
            "ejection times grow to the cap",
            20,
            OutlierConfig {
                max_ejection_time: Duration::from_secs(60),
                ..cfg
            },
            &[
                step(0, 0, 0, 5, &[0]),
                wait(30, &[]),
                step(30, 0, 0, 1, &[0]),
                wait(90, &[]),
                step(90, 0, 0, 1, &[0]),
                wait(149, &[0]),
                wait(150, &[]),
            ],
        );
        run(
            "zero consecutive failures turns ejection off",
            20,
            OutlierConfig {
                consecutive_failures: 0,
                ..cfg
            },
            &[step(0, 0, 0, 100, &[])],
        );
    }

    #[test]
    fn counters_of_instances_gone_are_dropped() {
        let t0 = Instant::now();
        let ids = ids(3);
        let mut d = Detector::new(OutlierConfig::default());
        let all: Vec<&InstanceId> = ids.iter().collect();
        let o = |i: usize| Outcome {
            id: ids[i].clone(),
            successes: 0,
            failures: 1,
        };
        d.report(&key(), &all, &[o(0), o(1)], t0);
        assert_eq!(d.tracked(), 2);
        d.report(&key(), &all[1..], &[o(0)], t0);
        assert_eq!(d.tracked(), 1, "i0 is gone and its outcome ignored");
    }

    #[test]
    fn cap_rounds_down_but_allows_one() {
        let c = OutlierConfig::default();
        assert_eq!(c.max_ejected(1), 1);
        assert_eq!(c.max_ejected(19), 1);
        assert_eq!(c.max_ejected(20), 2);
        assert_eq!(c.max_ejected(100), 10);
    }
}
