//! Heartbeats and TTL expiry.
//!
//! A heartbeat of a passing instance moves its atomic deadline: no lock, no
//! change, nothing on the log. Turning critical (the TTL passed), passing
//! again (a heartbeat revived it) and reaped (critical for longer than the
//! reap time) are changes like any other ([`Change::SetHealth`],
//! [`Change::Reap`]), conditional on the value they were decided on.
//!
//! One ordered timer map holds exactly the current value of every instance
//! at the time it next needs a look; the single expiry driver calls
//! [`Registry::expire`], which turns what is due into changes and applies
//! them in the same lock hold, so no heartbeat can slip in between.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::super::change::{Change, Context};
use super::super::labels::InstanceId;
use super::super::model::{Health, Instance};
use super::{Registry, RegistryError, ServiceKey, WriteState, not_found};

/// What a heartbeat did.
#[derive(Debug)]
pub enum Heartbeat {
    /// The instance is passing; its deadline moved (not a change).
    Alive(Arc<Instance>),
    /// The instance is critical: reviving it is a change, to propose.
    Revive(Box<Change>),
}

impl Registry {
    /// Records a heartbeat: the instance gets a full TTL from `now`. A
    /// passing instance only has its deadline moved (no lock, no change
    /// index); a critical one needs the change this returns.
    pub fn heartbeat(
        &self,
        key: &ServiceKey,
        id: &InstanceId,
        now: Instant,
    ) -> Result<Heartbeat, RegistryError> {
        let inst = self
            .service(key)
            .and_then(|s| s.instances.get(id).cloned())
            .ok_or_else(|| not_found(key, id))?;
        // The TTL's own status: a check may hold the instance critical
        // while its heartbeats keep coming.
        if inst.health != Health::Critical {
            let deadline = self.ms(now) + inst.ttl().as_millis() as u64;
            inst.deadline_ms.fetch_max(deadline, Ordering::AcqRel);
            if let Some(sink) = self.inner.heard.get() {
                sink(&inst);
            }
            return Ok(Heartbeat::Alive(inst));
        }
        Ok(Heartbeat::Revive(Box::new(Change::SetHealth {
            key: key.clone(),
            id: id.clone(),
            health: Health::Passing,
            of: inst.index,
        })))
    }

    /// Turns instances whose TTL passed critical and removes those critical
    /// for longer than the reap time, as changes of the local sequence (see
    /// [`Registry::apply_next`]). Returns how many changes it made.
    pub fn expire(&self, now: Instant) -> usize {
        let mut w = self.lock();
        let due = self.due_locked(&mut w, now);
        if due.is_empty() {
            return 0;
        }
        match self.apply_locked(&mut w, due, super::Indexes::Next, &Context::system(), now) {
            Ok(applied) => applied
                .outcomes
                .iter()
                .filter(|(_, o)| matches!(o, super::Outcome::Applied(_)))
                .count(),
            Err(_) => 0,
        }
    }

    /// The changes expiry would make at `now`, without making them: what an
    /// elected expiry leader proposes to a shared log. Passing instances
    /// whose heartbeats moved their deadline are re-armed on the way.
    pub fn due(&self, now: Instant) -> Vec<Change> {
        let mut w = self.lock();
        self.due_locked(&mut w, now)
    }

    fn due_locked(&self, w: &mut WriteState, now: Instant) -> Vec<Change> {
        let now_ms = self.ms(now);
        // Grouped by service, so that each touched service is rebuilt once.
        let mut by_service: BTreeMap<ServiceKey, Vec<Arc<Instance>>> = BTreeMap::new();
        while let Some(entry) = w.timers.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let inst = entry.remove();
            by_service
                .entry(ServiceKey::new(
                    inst.datacenter.clone(),
                    inst.service.clone(),
                ))
                .or_default()
                .push(inst);
        }
        let reap_ms = self.inner.config.reap_after.as_millis() as u64;
        let mut changes = Vec::new();
        let preserving = self.preserving(w, now_ms, !by_service.is_empty());
        for (key, due) in by_service {
            let Some(snap) = self.service(&key) else {
                continue;
            };
            for inst in due {
                let current = snap
                    .instances
                    .get(&inst.id)
                    .is_some_and(|c| Arc::ptr_eq(c, &inst));
                if !current {
                    continue; // the timers only hold current values
                }
                let deadline = inst.deadline_ms();
                match inst.health {
                    // The TTL is never warning (see Instance::health).
                    Health::Passing | Health::Warning if deadline > now_ms => {
                        schedule(w, &inst, deadline)
                    }
                    // Self-preservation: not now; looked at again shortly.
                    Health::Passing | Health::Warning
                        if preserving && key.dc == *self.local_dc() =>
                    {
                        schedule(w, &inst, now_ms + RECHECK_MS)
                    }
                    Health::Passing | Health::Warning => changes.push(Change::SetHealth {
                        key: key.clone(),
                        id: inst.id.clone(),
                        health: Health::Critical,
                        of: inst.index,
                    }),
                    Health::Critical if deadline + reap_ms > now_ms => {
                        schedule(w, &inst, deadline + reap_ms)
                    }
                    Health::Critical => changes.push(Change::Reap {
                        key: key.clone(),
                        id: inst.id.clone(),
                        of: inst.index,
                    }),
                }
            }
        }
        changes
    }

    /// Whether expiry is held back now (Eureka's self-preservation): more
    /// than the threshold of the local datacenter's passing instances have
    /// been silent for half their TTL or more, so they would all expire
    /// within one TTL. That many instances failing together is far more
    /// likely a network failure between them and Maxine than the services
    /// failing; expiring them would empty the answers clients need most.
    /// Instances that resume heartbeats drop out of the count, and expiry
    /// resumes once the silent ones are within the threshold again.
    ///
    /// Counting scans the local instances: done at most once per
    /// [`RECHECK_MS`], and only when something is due.
    fn preserving(&self, w: &mut WriteState, now_ms: u64, anything_due: bool) -> bool {
        let Some(threshold) = w.preservation.threshold else {
            return false;
        };
        let fresh = w
            .preservation
            .checked_ms
            .is_some_and(|at| now_ms < at + RECHECK_MS);
        if !anything_due || fresh {
            return w.preservation.on.is_some();
        }
        w.preservation.checked_ms = Some(now_ms);
        let (mut total, mut silent) = (0usize, 0usize);
        for (key, snap) in self.inner.services.pin().iter() {
            if key.dc != *self.local_dc() {
                continue;
            }
            for inst in snap.instances.values().filter(|i| i.is_passing()) {
                total += 1;
                let half = inst.ttl().as_millis() as u64 / 2;
                if inst.deadline_ms() <= now_ms + half {
                    silent += 1;
                }
            }
        }
        let on = silent >= MIN_SILENT && silent * 100 > total * usize::from(threshold);
        let state = on.then(|| SelfPreservation {
            silent,
            total,
            threshold,
            since_ms: w.preservation.on.as_ref().map_or(now_ms, |p| p.since_ms),
        });
        w.preservation.on = state.clone();
        *self
            .inner
            .preservation
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = state;
        on
    }

    /// Turns self-preservation on with `threshold` percent (`None`: off,
    /// the default of a registry; the server's configuration turns it on).
    pub fn set_self_preservation(&self, threshold: Option<u8>) {
        self.lock().preservation.threshold = threshold;
    }

    /// Whether expiry is held back by self-preservation now, and why.
    pub fn self_preservation(&self) -> Option<SelfPreservation> {
        self.inner
            .preservation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// When [`Registry::expire`] next has work, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        let w = self.lock();
        w.timers
            .first_key_value()
            .map(|((ms, _, _), _)| self.inner.epoch + Duration::from_millis(*ms))
    }
}

/// How often self-preservation counts silent instances again, and when an
/// instance whose expiry it held back is looked at again (ms).
pub(super) const RECHECK_MS: u64 = 1000;

/// Self-preservation needs at least this many silent instances: a few
/// instances of a small registry (a developer's machine, a test) stopping
/// is not a network failure, and they expire as usual.
pub(super) const MIN_SILENT: usize = 10;

/// Expiry is held back: `silent` of `total` passing local instances have
/// not sent a heartbeat for half their TTL, more than `threshold` percent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelfPreservation {
    pub silent: usize,
    pub total: usize,
    pub threshold: u8,
    /// Since when (ms since the registry's epoch).
    pub since_ms: u64,
}

impl SelfPreservation {
    /// A sentence for logs and the API.
    pub fn reason(&self) -> String {
        format!(
            "self-preservation: {} of {} instances stopped sending heartbeats at once              (more than {}%), which looks like a network failure; instances are not expired              until heartbeats return",
            self.silent, self.total, self.threshold
        )
    }
}

/// Self-preservation's state, under the write lock.
#[derive(Debug, Default)]
pub(super) struct Preservation {
    pub(super) threshold: Option<u8>,
    /// When silent instances were last counted.
    pub(super) checked_ms: Option<u64>,
    pub(super) on: Option<SelfPreservation>,
}

/// When an instance value next needs a look: at its deadline while passing,
/// that plus the reap time once critical.
pub(super) fn due_ms(inst: &Instance, reap_ms: u64) -> u64 {
    match inst.health {
        Health::Passing | Health::Warning => inst.deadline_ms(),
        Health::Critical => inst.deadline_ms() + reap_ms,
    }
}

/// Puts `inst` in the timer map at `at_ms` (see [`timer_key`]).
pub(super) fn schedule(w: &mut WriteState, inst: &Arc<Instance>, at_ms: u64) {
    inst.timer_ms.store(at_ms, Ordering::Relaxed);
    w.timers.insert(timer_key(inst, at_ms), inst.clone());
}

/// An instance value's place in the timer map: its deadline, then its
/// index, then the value's address. Values of a shared log share indexes
/// (every value of one etcd transaction has its revision: thousands for a
/// bulk write, a whole registry after a reload), so index alone does not
/// keep keys unique; the address does, as the map holds the value.
fn timer_key(inst: &Arc<Instance>, at_ms: u64) -> (u64, u64, usize) {
    (at_ms, inst.index, Arc::as_ptr(inst) as usize)
}

/// Takes `inst` out of the timer map, if it is there.
pub(super) fn unschedule(w: &mut WriteState, inst: &Arc<Instance>) {
    w.timers
        .remove(&timer_key(inst, inst.timer_ms.load(Ordering::Relaxed)));
}

/// [`schedule`] for many values at once (a restore): a tree built in bulk
/// has full nodes, where one built by random inserts has about 30% unused.
pub(super) fn schedule_all(w: &mut WriteState, timers: Vec<(u64, Arc<Instance>)>) {
    let mut built: BTreeMap<_, _> = timers
        .into_iter()
        .map(|(at, inst)| {
            inst.timer_ms.store(at, Ordering::Relaxed);
            (timer_key(&inst, at), inst)
        })
        .collect();
    w.timers.append(&mut built);
}
