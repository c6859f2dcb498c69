//! The schedule of every defined check, apart from I/O: which check runs
//! next, and what a run's result comes to after its thresholds.
//!
//! One binary heap of (due time, slot) for all checks; a slot is one check
//! of one instance. Heap entries of slots that were removed or moved are
//! skipped when popped (no search on removal). Time enters as a parameter.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::core::{
    Change, Check, CheckResult, CheckSpec, Health, Instance, InstanceId, ServiceKey,
    ServiceSnapshot,
};

/// One check of one instance.
pub(super) struct Slot {
    pub key: ServiceKey,
    pub id: InstanceId,
    pub check: Arc<Check>,
    /// The index of the instance value it was last seen in (what a
    /// [`Change::CheckStatus`] is conditional on).
    of: u64,
    /// Its status as the registry has it (or as just proposed).
    status: Health,
    /// Results in a row that were passing / not passing.
    successes: u32,
    failures: u32,
    /// Since when it is critical, for `deregister_critical_after`.
    critical_since: Option<Instant>,
    /// When the next run is (or the running one was) due.
    pub due: Instant,
    running: bool,
    /// A deregistration was proposed.
    deregistering: bool,
}

impl Slot {
    pub fn spec(&self) -> &CheckSpec {
        &self.check.spec
    }
}

pub(super) struct Schedule {
    slots: HashMap<u64, Slot>,
    next_id: u64,
    by_instance: HashMap<(ServiceKey, InstanceId), Vec<u64>>,
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    /// xorshift state for start-time jitter.
    rng: u64,
}

/// How far a new check's first run is spread: over its whole interval when
/// many start at once (start-up), within a second for one just defined.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Spread {
    Interval,
    Soon,
}

impl Schedule {
    pub fn new(seed: u64) -> Self {
        Self {
            slots: HashMap::new(),
            next_id: 0,
            by_instance: HashMap::new(),
            heap: BinaryHeap::new(),
            rng: seed | 1,
        }
    }

    /// How many checks are defined.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn slot(&self, id: u64) -> Option<&Slot> {
        self.slots.get(&id)
    }

    fn jitter(&mut self, max: Duration) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let nanos = max.as_nanos() as u64;
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.rng % nanos)
    }

    /// Starts over from every service (a snapshot of the feed): checks
    /// still defined keep their slots; first runs spread over an interval.
    pub fn reset(&mut self, services: &[Arc<ServiceSnapshot>], now: Instant) {
        let mut seen: HashMap<(ServiceKey, InstanceId), ()> = HashMap::new();
        for snap in services {
            for inst in snap.instances.values() {
                seen.insert((snap.key.clone(), inst.id.clone()), ());
                self.observe(&snap.key, &inst.id, Some(inst), now, Spread::Interval);
            }
        }
        let gone: Vec<_> = self
            .by_instance
            .keys()
            .filter(|k| !seen.contains_key(*k))
            .cloned()
            .collect();
        for (key, id) in gone {
            self.observe(&key, &id, None, now, Spread::Interval);
        }
    }

    /// The instance's new value (`None`: removed): new checks get a slot,
    /// removed or redefined ones lose theirs, kept ones learn their status
    /// and the value's index.
    pub fn observe(
        &mut self,
        key: &ServiceKey,
        id: &InstanceId,
        instance: Option<&Arc<Instance>>,
        now: Instant,
        spread: Spread,
    ) {
        let k = (key.clone(), id.clone());
        let old = self.by_instance.remove(&k).unwrap_or_default();
        let Some(inst) = instance.filter(|i| !i.checks.is_empty()) else {
            for s in old {
                self.slots.remove(&s);
            }
            return;
        };
        let mut kept = Vec::with_capacity(inst.checks.len());
        let mut matched = vec![false; inst.checks.len()];
        for s in old {
            let Some(slot) = self.slots.get_mut(&s) else {
                continue;
            };
            let found = inst
                .checks
                .iter()
                .position(|e| Arc::ptr_eq(&e.check, &slot.check));
            match found {
                Some(at) => {
                    matched[at] = true;
                    let status = inst.checks[at].status;
                    slot.of = inst.index;
                    slot.status = status;
                    if status == Health::Critical {
                        slot.critical_since.get_or_insert(now);
                    } else {
                        slot.critical_since = None;
                        slot.deregistering = false;
                    }
                    kept.push(s);
                }
                None => {
                    self.slots.remove(&s);
                }
            }
        }
        for (at, entry) in inst.checks.iter().enumerate() {
            if matched[at] {
                continue;
            }
            let max = match spread {
                Spread::Interval => entry.check.spec.interval,
                Spread::Soon => entry.check.spec.interval.min(Duration::from_secs(1)),
            };
            let due = now + self.jitter(max);
            let sid = self.next_id;
            self.next_id += 1;
            self.slots.insert(
                sid,
                Slot {
                    key: key.clone(),
                    id: id.clone(),
                    check: entry.check.clone(),
                    of: inst.index,
                    status: entry.status,
                    successes: 0,
                    failures: 0,
                    critical_since: (entry.status == Health::Critical).then_some(now),
                    due,
                    running: false,
                    deregistering: false,
                },
            );
            self.heap.push(Reverse((due, sid)));
            kept.push(sid);
        }
        self.by_instance.insert(k, kept);
    }

    /// When the next check is due, if any (entries of removed slots are
    /// dropped on the way).
    pub fn next_due(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, sid))) = self.heap.peek().copied() {
            match self.slots.get(&sid) {
                Some(s) if !s.running && s.due == at => return Some(at),
                _ => {
                    self.heap.pop();
                }
            }
        }
        None
    }

    /// A check due at `now`, marked running; `None` when none is due.
    pub fn pop_due(&mut self, now: Instant) -> Option<u64> {
        let at = self.next_due()?;
        if at > now {
            return None;
        }
        let Reverse((_, sid)) = self.heap.pop()?;
        let slot = self.slots.get_mut(&sid)?;
        slot.running = true;
        Some(sid)
    }

    /// A run of slot `sid` finished with `result` at `now`: records it,
    /// schedules the next run (one interval after this one was due, so a
    /// late start does not shift the cadence; at once if that has passed),
    /// and returns the changes the result comes to: a status change once
    /// the thresholds are met, a deregistration once critical for longer
    /// than `deregister_critical_after`. A result that changes no status
    /// is no change.
    pub fn finished(&mut self, sid: u64, result: CheckResult, now: Instant) -> Vec<Change> {
        let Some(slot) = self.slots.get_mut(&sid) else {
            return Vec::new(); // removed while it ran
        };
        slot.running = false;
        let spec = &slot.check.spec;
        slot.due = (slot.due + spec.interval).max(now);
        self.heap.push(Reverse((slot.due, sid)));
        let got = result.status;
        slot.check.record(result);
        let mut changes = Vec::new();
        let want = if got == Health::Passing {
            slot.failures = 0;
            slot.successes = slot.successes.saturating_add(1);
            (slot.status != Health::Passing && slot.successes >= spec.success_before_passing)
                .then_some(Health::Passing)
        } else {
            slot.successes = 0;
            slot.failures = slot.failures.saturating_add(1);
            (slot.status != got && slot.failures >= spec.failures_before_critical).then_some(got)
        };
        if let Some(status) = want {
            changes.push(Change::CheckStatus {
                key: slot.key.clone(),
                id: slot.id.clone(),
                check: slot.check.clone(),
                status,
                of: slot.of,
            });
            // As proposed; the event of the change confirms it (or a
            // newer value corrects it).
            slot.status = status;
            if status == Health::Critical {
                slot.critical_since.get_or_insert(now);
            } else {
                slot.critical_since = None;
            }
        }
        if let (Some(after), Some(since)) = (spec.deregister_critical_after, slot.critical_since)
            && slot.status == Health::Critical
            && !slot.deregistering
            && now.saturating_duration_since(since) >= after
        {
            slot.deregistering = true;
            changes.push(Change::Reap {
                key: slot.key.clone(),
                id: slot.id.clone(),
                of: slot.of,
            });
        }
        changes
    }
}
