//! Loading the registry back from storage, and undoing what storage refused.
//!
//! A restore builds every instance first and each service's snapshot once,
//! then hands observers one batch with every service and no events: nothing
//! changed, the registry only learnt what was already true. Every index it
//! is given is checked against [`MAX_INDEX`].
//!
//! An undo ([`Registry::revert`]) belongs to the single-node log: a change
//! applied before its commit failed is put back, as a change of its own, so
//! that every observer sees the instance return to its durable value.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::super::change::{Actor, Batch, Event, EventKind, Origin};
use super::super::labels::InstanceId;
use super::super::model::{Health, Instance, InstanceSpec, Version};
use super::expiry::{due_ms, schedule_all, unschedule};
use super::{FastHash, Instances, MAX_INDEX, Registry, RegistryError, ServiceKey, ServiceSnapshot};

/// An instance as storage gives it back, for [`Registry::restore`].
#[derive(Debug)]
pub struct Restored {
    pub key: ServiceKey,
    pub id: InstanceId,
    pub spec: InstanceSpec,
    pub health: Health,
    /// Index of the change that produced this value.
    pub index: u64,
}

/// What [`Registry::restore`] did.
#[derive(Debug, Default)]
pub struct RestoreReport {
    /// Instances now in the registry from the restore.
    pub loaded: usize,
    /// Indexes of values dropped because the same instance came with a higher index.
    pub superseded: Vec<u64>,
}

/// A restore in progress; see [`Registry::restorer`].
pub struct Restorer<'r> {
    registry: &'r Registry,
    now_ms: u64,
    by_service: HashMap<ServiceKey, Vec<Arc<Instance>>, FastHash>,
    /// One copy of each version string (shared across services too).
    versions: HashSet<Version, FastHash>,
    max_index: u64,
}

impl Restorer<'_> {
    /// Adds one stored value. Refused when its index is 0 or beyond
    /// [`MAX_INDEX`] (damaged data: such a value cannot be ordered).
    pub fn add(&mut self, mut r: Restored) -> Result<(), RegistryError> {
        if r.index == 0 || r.index > MAX_INDEX {
            return Err(RegistryError::IndexOutOfRange(r.index));
        }
        self.max_index = self.max_index.max(r.index);
        let deadline = self.now_ms + r.spec.ttl.as_millis() as u64;
        let version = match self.versions.get(r.spec.version.as_str()) {
            Some(v) => v.clone(),
            None => {
                let v = Version::from(std::mem::take(&mut r.spec.version));
                self.versions.insert(v.clone());
                v
            }
        };
        let instance = Arc::new(Instance::from_spec(
            &r.key, r.id, r.spec, version, r.health, r.index, deadline,
        ));
        self.by_service.entry(r.key).or_default().push(instance);
        Ok(())
    }

    /// Publishes what was added. Of two values of one instance, the one with
    /// the higher index wins. The change index goes on after `last_index`
    /// (or the highest instance index, if higher). Refused, with nothing
    /// published, when `last_index` is beyond [`MAX_INDEX`].
    pub fn finish(self, last_index: u64) -> Result<RestoreReport, RegistryError> {
        let reg = self.registry;
        if last_index > MAX_INDEX {
            return Err(RegistryError::IndexOutOfRange(last_index));
        }
        let reap_ms = reg.inner.config.reap_after.as_millis() as u64;
        let mut w = reg.lock();
        reg.inner
            .index
            .fetch_max(self.max_index.max(last_index), Ordering::AcqRel);
        let mut report = RestoreReport::default();
        let mut published = Vec::with_capacity(self.by_service.len());
        let mut timers = Vec::new();
        let services = reg.inner.services.pin();
        // One resize up front instead of a dozen on the way.
        services.reserve(self.by_service.len());
        for (key, mut list) in self.by_service {
            // By id, the highest index first.
            list.sort_unstable_by(|a, b| a.id.cmp(&b.id).then(b.index.cmp(&a.index)));
            let mut fresh: Vec<Arc<Instance>> = Vec::with_capacity(list.len());
            for inst in list {
                if let Some(kept) = fresh.last()
                    && kept.id == inst.id
                {
                    // The same record twice (a store may list one twice) is
                    // not an older value to delete.
                    if kept.index != inst.index {
                        report.superseded.push(inst.index);
                    }
                    continue;
                }
                fresh.push(inst);
            }
            report.loaded += fresh.len();
            super::hold(&mut w.holdings, &[], &fresh);
            w.datacenters.insert(key.dc.clone());
            timers.extend(fresh.iter().map(|i| (due_ms(i, reap_ms), i.clone())));
            let (instances, rr) = match services.get(&key) {
                Some(s) => {
                    let changes = fresh.into_iter().map(|i| (i.id.clone(), Some(i)));
                    let (all, gone, _) = s.instances.with_changes(changes.collect());
                    for old in &gone {
                        unschedule(&mut w, old);
                    }
                    super::hold(&mut w.holdings, &gone, &[]);
                    (all, s.rr.clone())
                }
                None => (
                    Instances(fresh.into_boxed_slice()),
                    Arc::new(AtomicUsize::new(0)),
                ),
            };
            let index = instances.values().map(|i| i.index).max().unwrap_or(0);
            let settings = self.registry.settings_of(&key);
            let snap = Arc::new(ServiceSnapshot::build(
                key.clone(),
                instances,
                index,
                rr,
                reg.only_passing(),
                settings,
                Box::default(),
            ));
            services.insert(key.clone(), snap.clone());
            published.push((key, Some(snap)));
        }
        drop(services);
        schedule_all(&mut w, timers);
        let batch = Batch {
            events: &[],
            services: &published,
            acl: &[],
            instances: None,
        };
        for o in &w.observers {
            o.applied(&batch);
        }
        Ok(report)
    }
}

/// A change to undo, for [`Registry::revert`].
#[derive(Debug)]
pub struct Revert {
    pub key: ServiceKey,
    pub id: InstanceId,
    /// The value to go back to (`None`: the instance was not registered).
    pub to: Option<Arc<Instance>>,
}

impl Registry {
    /// Loads instances read back from storage, all at once: see
    /// [`Registry::restorer`], which this wraps.
    pub fn restore(
        &self,
        items: Vec<Restored>,
        last_index: u64,
        now: Instant,
    ) -> Result<RestoreReport, RegistryError> {
        let mut r = self.restorer(now);
        for item in items {
            r.add(item)?;
        }
        r.finish(last_index)
    }

    /// Starts loading instances read back from storage: [`Restorer::add`]
    /// each (no lock is taken meanwhile), then [`Restorer::finish`] builds
    /// each service's snapshot once and hands observers one batch with every
    /// service and no events (nothing changed). Instances keep their index
    /// and health, and get one full TTL from `now` to heartbeat again (a
    /// critical one: its TTL plus the reap time before it is removed).
    pub fn restorer(&self, now: Instant) -> Restorer<'_> {
        Restorer {
            registry: self,
            now_ms: self.ms(now),
            by_service: HashMap::default(),
            versions: HashSet::default(),
            max_index: 0,
        }
    }

    /// Undoes changes that could not be made durable. `still_current(key,
    /// id)` is asked under the write lock: it must say whether the failed
    /// change is still the latest change of that instance, so that a later
    /// change is never undone. Each undo is a change of its own (kind
    /// [`EventKind::Reverted`], a new index); a restored instance keeps the
    /// later of its own heartbeat deadline and that of the value it replaces.
    /// Returns how many changes were undone.
    pub fn revert(
        &self,
        reverts: Vec<Revert>,
        still_current: &dyn Fn(&ServiceKey, &InstanceId) -> bool,
    ) -> usize {
        let mut w = self.lock();
        let mut by_service: BTreeMap<ServiceKey, Vec<Revert>> = BTreeMap::new();
        for r in reverts {
            by_service.entry(r.key.clone()).or_default().push(r);
        }
        let mut undone = 0;
        for (key, reverts) in by_service {
            let current = self.service(&key);
            let mut changes = Vec::new();
            let mut events = Vec::new();
            for r in reverts {
                if !still_current(&key, &r.id) {
                    continue;
                }
                let now_value = current
                    .as_ref()
                    .and_then(|s| s.instances.get(&r.id).cloned());
                if r.to.is_none() && now_value.is_none() {
                    continue;
                }
                let Some(index) = self.index().checked_add(1).filter(|i| *i <= MAX_INDEX) else {
                    break;
                };
                self.inner.index.store(index, Ordering::Release);
                let restored = r.to.map(|to| {
                    let v = Arc::new(to.with_health(to.health, index));
                    if let Some(n) = &now_value {
                        v.deadline_ms.fetch_max(n.deadline_ms(), Ordering::AcqRel);
                    }
                    v
                });
                events.push(Event {
                    index,
                    key: key.clone(),
                    id: r.id.clone(),
                    kind: EventKind::Reverted,
                    instance: restored.clone(),
                    previous: now_value,
                    actor: Actor::System,
                    origin: Origin::Local,
                });
                changes.push((r.id, restored));
            }
            if let Some(last) = events.last().map(|e| e.index) {
                undone += events.len();
                self.commit(&mut w, key, current, changes, Vec::new(), last, events);
            }
        }
        undone
    }
}
