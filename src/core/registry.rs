//! The registry: datacenter -> service -> instances, in lock-free maps.
//!
//! Reads (DNS answer building, API listings, discovery) never wait for a
//! writer: each service is an immutable [`ServiceSnapshot`] in a `papaya` map,
//! replaced whole on every change. Writes go through one mutex, which gives
//! every change its place in a single, gap-free index order and lets
//! observers (the DNS answer cache, and later persistence and replication)
//! see the changes in that order, before the write returns.
//!
//! Heartbeats of a passing instance only move an atomic deadline. Expiry uses
//! one ordered timer map for all instances, checked by a single driver task
//! ([`Registry::expire`]), so a million instances cost a million map entries,
//! not a million timers.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::model::{Health, Instance, InstanceSpec, ModelError, Version};
use super::names::{Datacenter, InstanceId, ServiceName, VersionSelector};

/// The hasher of Maxine's maps keyed by names: foldhash, seeded per process
/// (names come from clients, so no fixed seed: they cannot aim at one
/// bucket). SipHash, the standard one, was a tenth of a restore of many
/// small services.
pub type FastHash = foldhash::fast::RandomState;

/// A service in a datacenter: the unit that answers are built for.
#[derive(Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord, Serialize)]
pub struct ServiceKey {
    pub dc: Datacenter,
    pub service: ServiceName,
}

impl ServiceKey {
    pub fn new(dc: Datacenter, service: ServiceName) -> Self {
        Self { dc, service }
    }
}

/// A service's instances, sorted by id: one pointer each (a map would add a
/// copy of the id and its share of B-tree nodes to every instance). Read it
/// as a `BTreeMap<InstanceId, Arc<Instance>>`; cloning copies the pointers.
#[derive(Clone, Default)]
pub struct Instances(Box<[Arc<Instance>]>);

/// The `(id, instance)` pairs of [`Instances`], in id order.
pub type InstancesIter<'a> = std::iter::Map<
    std::slice::Iter<'a, Arc<Instance>>,
    fn(&'a Arc<Instance>) -> (&'a InstanceId, &'a Arc<Instance>),
>;

impl Instances {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, id: &InstanceId) -> Option<&Arc<Instance>> {
        let at = self.0.binary_search_by(|i| i.id.cmp(id)).ok()?;
        Some(&self.0[at])
    }

    pub fn contains_key(&self, id: &InstanceId) -> bool {
        self.get(id).is_some()
    }

    /// The instances in id order.
    pub fn values(&self) -> std::slice::Iter<'_, Arc<Instance>> {
        self.0.iter()
    }

    /// The ids in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &InstanceId> + ExactSizeIterator {
        self.0.iter().map(|i| &i.id)
    }

    pub fn iter(&self) -> InstancesIter<'_> {
        self.0.iter().map(|i| (&i.id, i))
    }

    /// These instances with `changes` applied (of two changes of one id, the
    /// later wins), in one pass; with the values the result no longer holds
    /// and the new values it does.
    fn with_changes(
        &self,
        mut changes: Vec<(InstanceId, Option<Arc<Instance>>)>,
    ) -> (Self, Vec<Arc<Instance>>, Vec<Arc<Instance>>) {
        changes.sort_by(|a, b| a.0.cmp(&b.0)); // stable: the later change stays later
        let mut out = Vec::with_capacity(self.len() + changes.len());
        let (mut gone, mut added) = (Vec::new(), Vec::new());
        // Binary searches between the changes: a change to a large service
        // compares a few ids and copies the pointers around it.
        let mut old = &self.0[..];
        let mut changes = changes.into_iter().peekable();
        while let Some((id, new)) = changes.next() {
            if changes.peek().is_some_and(|(next, _)| *next == id) {
                continue;
            }
            let at = old.partition_point(|i| i.id < id);
            out.extend_from_slice(&old[..at]);
            old = &old[at..];
            if let Some((i, rest)) = old.split_first().filter(|(i, _)| i.id == id) {
                gone.push(i.clone());
                old = rest;
            }
            if let Some(new) = new {
                added.push(new.clone());
                out.push(new);
            }
        }
        out.extend_from_slice(old);
        (Self(out.into_boxed_slice()), gone, added)
    }
}

impl std::fmt::Debug for Instances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl std::ops::Index<&InstanceId> for Instances {
    type Output = Arc<Instance>;
    fn index(&self, id: &InstanceId) -> &Arc<Instance> {
        self.get(id).expect("no entry found for key")
    }
}

impl<'a> IntoIterator for &'a Instances {
    type Item = (&'a InstanceId, &'a Arc<Instance>);
    type IntoIter = InstancesIter<'a>;
    fn into_iter(self) -> InstancesIter<'a> {
        self.iter()
    }
}

/// One service's instances at one index. Immutable; cloning the `Arc` is free.
#[derive(Debug)]
pub struct ServiceSnapshot {
    pub key: ServiceKey,
    /// All instances, sorted by id.
    pub instances: Instances,
    /// For each version number some instance runs (`2.1.0` and `v2.1.0-rc1`
    /// are one), the positions of its instances in `instances`, in id order:
    /// four bytes per instance, however many selectors match it.
    groups: Box<[Box<[u32]>]>,
    /// Every version selector that matches some instance, sorted, with the
    /// groups it matches.
    by_selector: Box<[(VersionSelector, Box<[u32]>)]>,
    /// The distinct versions of the instances, sorted: the copies that new
    /// values of the service share.
    versions: Box<[Version]>,
    /// Index of the latest change to this service.
    pub index: u64,
    /// Shared by every snapshot of the service, so round robin survives writes.
    rr: Arc<AtomicUsize>,
}

impl ServiceSnapshot {
    fn build(key: ServiceKey, instances: Instances, index: u64, rr: Arc<AtomicUsize>) -> Self {
        // A service runs few versions: parse each distinct one once and fill
        // one list per version number, in id order. (Every write rebuilds
        // this, so per-instance parsing and hashing add up.)
        let mut versions: Vec<(&Version, Option<usize>)> = Vec::new();
        let mut version_at: HashMap<&str, usize> = HashMap::new();
        let mut group_of: HashMap<VersionSelector, usize> = HashMap::new();
        let mut groups: Vec<(Vec<VersionSelector>, Vec<u32>)> = Vec::new();
        for (pos, inst) in instances.values().enumerate() {
            let known = if versions.len() <= 8 {
                versions.iter().position(|(v, _)| **v == inst.version)
            } else {
                version_at.get(&*inst.version).copied()
            };
            let at = known.unwrap_or_else(|| {
                // The longest selector names the version number exactly.
                let selectors = VersionSelector::all_for(&inst.version);
                let group = selectors.last().map(|exact| {
                    *group_of.entry(*exact).or_insert_with(|| {
                        groups.push((selectors.clone(), Vec::new()));
                        groups.len() - 1
                    })
                });
                versions.push((&inst.version, group));
                version_at.insert(inst.version.as_str(), versions.len() - 1);
                versions.len() - 1
            });
            if let Some(g) = versions[at].1 {
                groups[g].1.push(pos as u32);
            }
        }
        let mut by_selector: BTreeMap<VersionSelector, Vec<u32>> = BTreeMap::new();
        for (g, (selectors, _)) in groups.iter().enumerate() {
            for sel in selectors {
                by_selector.entry(*sel).or_default().push(g as u32);
            }
        }
        let mut versions: Box<[Version]> = versions.into_iter().map(|(v, _)| v.clone()).collect();
        versions.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        Self {
            key,
            groups: groups.into_iter().map(|(_, p)| p.into()).collect(),
            by_selector: by_selector
                .into_iter()
                .map(|(s, g)| (s, g.into()))
                .collect(),
            versions,
            instances,
            index,
            rr,
        }
    }

    /// This service's copy of `version`, if an instance runs it.
    fn version(&self, version: &str) -> Option<&Version> {
        let at = self
            .versions
            .binary_search_by(|v| v.as_str().cmp(version))
            .ok()?;
        Some(&self.versions[at])
    }

    /// The version selectors that match at least one instance.
    pub fn selectors(&self) -> impl Iterator<Item = &VersionSelector> {
        self.by_selector.iter().map(|(s, _)| s)
    }

    /// The version groups `sel` matches; `None` when no instance matches it.
    fn groups_of(&self, sel: &VersionSelector) -> Option<&[u32]> {
        let at = self
            .by_selector
            .binary_search_by(|(s, _)| s.cmp(sel))
            .ok()?;
        Some(&self.by_selector[at].1)
    }

    /// Instances matching `version` (all when `None`), passing ones only when
    /// `healthy_only`, in id order.
    pub fn select(
        &self,
        version: Option<&VersionSelector>,
        healthy_only: bool,
    ) -> Vec<Arc<Instance>> {
        self.select_positions(version, healthy_only)
            .into_iter()
            .map(|p| self.instances.0[p as usize].clone())
            .collect()
    }

    /// What [`ServiceSnapshot::select`] returns, as positions in
    /// `instances` (id order), without touching the instances' reference
    /// counts: for builders that keep their own data in the same order.
    pub fn select_positions(
        &self,
        version: Option<&VersionSelector>,
        healthy_only: bool,
    ) -> Vec<u32> {
        let keep = |p: &u32| !healthy_only || self.instances.0[*p as usize].is_passing();
        let Some(sel) = version else {
            return (0..self.instances.0.len() as u32).filter(keep).collect();
        };
        match self.groups_of(sel) {
            None => Vec::new(),
            Some([g]) => self.groups[*g as usize]
                .iter()
                .copied()
                .filter(keep)
                .collect(),
            Some(gs) => {
                // Several version numbers (v2: 2.1.0 and 2.2.0): back to id order.
                let mut positions: Vec<u32> = gs
                    .iter()
                    .flat_map(|g| self.groups[*g as usize].iter().copied())
                    .filter(keep)
                    .collect();
                positions.sort_unstable();
                positions
            }
        }
    }

    pub fn passing_count(&self) -> usize {
        self.instances.values().filter(|i| i.is_passing()).count()
    }
}

/// A question any front end (DNS, HTTP, gateway) asks the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// `None` means the local datacenter.
    pub dc: Option<Datacenter>,
    pub service: ServiceName,
    pub version: Option<VersionSelector>,
    pub healthy_only: bool,
}

/// The registry's answer to a [`Query`].
#[derive(Clone, Debug, Default)]
pub struct Answer {
    /// The service is registered (with any health) in that datacenter, and
    /// some instance matches the version, if one was asked for.
    pub exists: bool,
    pub instances: Vec<Arc<Instance>>,
    pub index: u64,
}

/// What happened to an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Registered,
    Deregistered,
    /// Its TTL passed without a heartbeat.
    Critical,
    /// A heartbeat brought a critical instance back.
    Passing,
    /// Critical for longer than the reap time, so removed.
    Reaped,
    /// A change that could not be made durable was undone: the instance is
    /// back to its value before that change (`instance`), or gone again.
    Reverted,
}

/// One change, with its place in the index order.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub index: u64,
    pub key: ServiceKey,
    pub id: InstanceId,
    pub kind: EventKind,
    /// The instance after the change (`None` once removed).
    pub instance: Option<Arc<Instance>>,
    /// The instance before the change (`None`: it was not registered). The
    /// store deletes it and rolls back to it; not part of the event stream.
    #[serde(skip)]
    pub previous: Option<Arc<Instance>>,
}

/// The changes of one write, and the services they touched as they now are
/// (`None`: the service has no instances left).
pub struct Batch<'a> {
    pub events: &'a [Event],
    pub services: &'a [(ServiceKey, Option<Arc<ServiceSnapshot>>)],
}

/// Something that must see every change, in order, before it is acknowledged.
/// Called with the registry's write lock held: keep it quick and never block
/// on I/O (hand slow work to a task through a channel).
pub trait Observer: Send + Sync {
    fn applied(&self, batch: &Batch<'_>);
}

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
    pub fn add(&mut self, mut r: Restored) {
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
    }

    /// Publishes what was added. Of two values of one instance, the one with
    /// the higher index wins. The change index goes on after `last_index`
    /// (or the highest instance index, if higher).
    pub fn finish(self, last_index: u64) -> RestoreReport {
        let reg = self.registry;
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
            w.datacenters.insert(key.dc.clone());
            timers.extend(fresh.iter().map(|i| (due_ms(i, reap_ms), i.clone())));
            let (instances, rr) = match services.get(&key) {
                Some(s) => {
                    let changes = fresh.into_iter().map(|i| (i.id.clone(), Some(i)));
                    let (all, gone, _) = s.instances.with_changes(changes.collect());
                    for old in &gone {
                        unschedule(&mut w, old);
                    }
                    (all, s.rr.clone())
                }
                None => (
                    Instances(fresh.into_boxed_slice()),
                    Arc::new(AtomicUsize::new(0)),
                ),
            };
            let index = instances.values().map(|i| i.index).max().unwrap_or(0);
            let snap = Arc::new(ServiceSnapshot::build(key.clone(), instances, index, rr));
            services.insert(key.clone(), snap.clone());
            published.push((key, Some(snap)));
        }
        drop(services);
        schedule_all(&mut w, timers);
        let batch = Batch {
            events: &[],
            services: &published,
        };
        for o in &w.observers {
            o.applied(&batch);
        }
        report
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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Invalid(#[from] ModelError),
    #[error(
        "service name {0:?} is also the name of a datacenter, so DNS names using it would be ambiguous"
    )]
    NameIsDatacenter(String),
    #[error("{0}")]
    Conflict(String),
    #[error("instance {id:?} of service {service:?} is not registered")]
    NotFound { service: String, id: String },
}

/// Registry settings that the core needs.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    pub local_dc: Datacenter,
    /// How long a critical instance stays before it is removed.
    pub reap_after: Duration,
}

/// Handle to the registry. Cloning copies one `Arc`.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    config: RegistryConfig,
    epoch: Instant,
    services: papaya::HashMap<ServiceKey, Arc<ServiceSnapshot>, FastHash>,
    /// Index of the latest change, readable without the lock.
    index: AtomicU64,
    write: Mutex<WriteState>,
}

struct WriteState {
    /// Timer map: (deadline in ms since the epoch, index) -> the instance
    /// value to look at then. Exactly the current values are in it (each
    /// knows its place: [`Instance::timer_ms`]), and the index keeps keys
    /// unique: one pointer per instance, however deadlines spread.
    timers: BTreeMap<(u64, u64), Arc<Instance>>,
    observers: Vec<Arc<dyn Observer>>,
    datacenters: BTreeSet<Datacenter>,
    /// Labels no service may take (they name static zone data).
    reserved: BTreeSet<String>,
}

impl Registry {
    /// An empty registry; `now` is its epoch (time only ever enters as a parameter).
    pub fn new(config: RegistryConfig, now: Instant) -> Self {
        let mut datacenters = BTreeSet::new();
        datacenters.insert(config.local_dc.clone());
        Self {
            inner: Arc::new(Inner {
                config,
                epoch: now,
                services: papaya::HashMap::with_hasher(FastHash::default()),
                index: AtomicU64::new(0),
                write: Mutex::new(WriteState {
                    timers: BTreeMap::new(),
                    observers: Vec::new(),
                    datacenters,
                    reserved: BTreeSet::new(),
                }),
            }),
        }
    }

    pub fn local_dc(&self) -> &Datacenter {
        &self.inner.config.local_dc
    }

    /// Index of the latest change.
    pub fn index(&self) -> u64 {
        self.inner.index.load(Ordering::Acquire)
    }

    /// Adds an observer; it first sees every existing service as one batch.
    pub fn subscribe(&self, observer: Arc<dyn Observer>) {
        let mut w = self.lock();
        let services: Vec<_> = self
            .inner
            .services
            .pin()
            .iter()
            .map(|(k, s)| (k.clone(), Some(s.clone())))
            .collect();
        observer.applied(&Batch {
            events: &[],
            services: &services,
        });
        w.observers.push(observer);
    }

    /// Names a datacenter as known (federation peers), so no service may take
    /// its name. Refused when a local service already has that name.
    pub fn add_datacenter(&self, dc: Datacenter) -> Result<(), RegistryError> {
        let mut w = self.lock();
        self.check_new_datacenter(&w, &dc)?;
        w.datacenters.insert(dc);
        Ok(())
    }

    /// Keeps service names away from labels that static zone data uses, so a
    /// service never shadows (or is shadowed by) an operator's record.
    pub fn reserve_service_names(&self, labels: impl IntoIterator<Item = String>) {
        self.lock().reserved.extend(labels);
    }

    /// A datacenter name must not be a local service's name: `x.<zone>` and
    /// `svc.x.<zone>` would otherwise be read two ways.
    fn check_new_datacenter(&self, w: &WriteState, dc: &Datacenter) -> Result<(), RegistryError> {
        if w.datacenters.contains(dc) {
            return Ok(());
        }
        if let Ok(svc) = ServiceName::new(dc.as_str())
            && self
                .service(&ServiceKey::new(self.local_dc().clone(), svc))
                .is_some()
        {
            return Err(RegistryError::Conflict(format!(
                "datacenter name {:?} is also the name of a service in the local datacenter",
                dc.as_str()
            )));
        }
        Ok(())
    }

    pub fn is_datacenter(&self, name: &str) -> bool {
        self.lock().datacenters.iter().any(|d| d.as_str() == name)
    }

    pub fn datacenters(&self) -> Vec<Datacenter> {
        self.lock().datacenters.iter().cloned().collect()
    }

    /// The current snapshot of one service.
    pub fn service(&self, key: &ServiceKey) -> Option<Arc<ServiceSnapshot>> {
        self.inner.services.pin().get(key).cloned()
    }

    /// Every service, sorted by datacenter and name.
    pub fn services(&self) -> Vec<Arc<ServiceSnapshot>> {
        let mut all: Vec<_> = self.inner.services.pin().values().cloned().collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }

    /// Answers a query from the current snapshot.
    pub fn answer(&self, q: &Query) -> Answer {
        let key = ServiceKey::new(
            q.dc.clone().unwrap_or_else(|| self.local_dc().clone()),
            q.service.clone(),
        );
        let Some(snap) = self.service(&key) else {
            return Answer::default();
        };
        let exists = match &q.version {
            None => true,
            Some(sel) => snap.groups_of(sel).is_some(),
        };
        Answer {
            exists,
            instances: snap.select(q.version.as_ref(), q.healthy_only),
            index: snap.index,
        }
    }

    /// Picks one passing instance in round-robin order.
    pub fn pick(&self, q: &Query) -> Option<Arc<Instance>> {
        let key = ServiceKey::new(
            q.dc.clone().unwrap_or_else(|| self.local_dc().clone()),
            q.service.clone(),
        );
        let snap = self.service(&key)?;
        let candidates = snap.select(q.version.as_ref(), true);
        if candidates.is_empty() {
            return None;
        }
        let n = snap.rr.fetch_add(1, Ordering::Relaxed);
        Some(candidates[n % candidates.len()].clone())
    }

    /// Registers or replaces an instance; it is passing, with a full TTL.
    /// Observers have seen the change when this returns.
    pub fn register(
        &self,
        key: ServiceKey,
        id: InstanceId,
        mut spec: InstanceSpec,
        now: Instant,
    ) -> Result<Arc<Instance>, RegistryError> {
        spec.validate()?;
        let mut w = self.lock();
        if w.datacenters
            .iter()
            .any(|d| d.as_str() == key.service.as_str())
        {
            return Err(RegistryError::NameIsDatacenter(key.service.to_string()));
        }
        if w.reserved.contains(key.service.as_str()) {
            return Err(RegistryError::Conflict(format!(
                "service name {:?} is taken by static records in the zone file",
                key.service.as_str()
            )));
        }
        self.check_new_datacenter(&w, &key.dc)?;
        let current = self.service(&key);
        if let (Some(c), Some(snap)) = (&spec.compat, &current) {
            check_compat_names(c, &id, snap)?;
        }
        let index = self.next_index();
        let deadline = self.ms(now) + spec.ttl.as_millis() as u64;
        let version = match current.as_ref().and_then(|s| s.version(&spec.version)) {
            Some(v) => v.clone(),
            None => Version::from(std::mem::take(&mut spec.version)),
        };
        let instance = Arc::new(Instance::from_spec(
            &key,
            id.clone(),
            spec,
            version,
            Health::Passing,
            index,
            deadline,
        ));
        w.datacenters.insert(key.dc.clone());
        let event = Event {
            index,
            key: key.clone(),
            id: id.clone(),
            kind: EventKind::Registered,
            instance: Some(instance.clone()),
            previous: current.as_ref().and_then(|s| s.instances.get(&id).cloned()),
        };
        self.commit(
            &mut w,
            key,
            current,
            vec![(id, Some(instance.clone()))],
            index,
            vec![event],
        );
        Ok(instance)
    }

    /// Removes an instance. Returns the index of the removal.
    pub fn deregister(&self, key: &ServiceKey, id: &InstanceId) -> Result<u64, RegistryError> {
        let mut w = self.lock();
        let current = self.service(key);
        let Some(previous) = current.as_ref().and_then(|s| s.instances.get(id).cloned()) else {
            return Err(not_found(key, id));
        };
        let index = self.next_index();
        let event = Event {
            index,
            key: key.clone(),
            id: id.clone(),
            kind: EventKind::Deregistered,
            instance: None,
            previous: Some(previous),
        };
        self.commit(
            &mut w,
            key.clone(),
            current,
            vec![(id.clone(), None)],
            index,
            vec![event],
        );
        Ok(index)
    }

    /// Records a heartbeat: the instance gets a full TTL from `now`. A passing
    /// instance only has its deadline moved (no lock, no change index); a
    /// critical one turns passing again, which is a change.
    pub fn heartbeat(
        &self,
        key: &ServiceKey,
        id: &InstanceId,
        now: Instant,
    ) -> Result<Arc<Instance>, RegistryError> {
        let deadline_of = |inst: &Instance| self.ms(now) + inst.ttl.as_millis() as u64;
        let inst = self
            .service(key)
            .and_then(|s| s.instances.get(id).cloned())
            .ok_or_else(|| not_found(key, id))?;
        if inst.is_passing() {
            inst.deadline_ms
                .fetch_max(deadline_of(&inst), Ordering::AcqRel);
            return Ok(inst);
        }
        let mut w = self.lock();
        let current = self.service(key);
        let Some(inst) = current.as_ref().and_then(|s| s.instances.get(id).cloned()) else {
            return Err(not_found(key, id));
        };
        if inst.is_passing() {
            // Revived by a concurrent heartbeat while we waited for the lock.
            inst.deadline_ms
                .fetch_max(deadline_of(&inst), Ordering::AcqRel);
            return Ok(inst);
        }
        let index = self.next_index();
        let revived = Arc::new(inst.with_health(Health::Passing, index));
        let deadline = deadline_of(&revived);
        revived.deadline_ms.store(deadline, Ordering::Release);
        let event = Event {
            index,
            key: key.clone(),
            id: id.clone(),
            kind: EventKind::Passing,
            instance: Some(revived.clone()),
            previous: Some(inst),
        };
        self.commit(
            &mut w,
            key.clone(),
            current,
            vec![(id.clone(), Some(revived.clone()))],
            index,
            vec![event],
        );
        Ok(revived)
    }

    /// Turns instances whose TTL passed critical and removes those critical
    /// for longer than the reap time. Returns how many changes it made.
    pub fn expire(&self, now: Instant) -> usize {
        let now_ms = self.ms(now);
        let mut w = self.lock();
        // Group by service so each touched service is rebuilt once.
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
        let mut changes_made = 0;
        for (key, due) in by_service {
            let current = self.service(&key);
            let Some(snap) = current.clone() else {
                continue;
            };
            let mut changes = Vec::new();
            let mut events = Vec::new();
            let mut last_index = snap.index;
            for inst in due {
                let id = &inst.id;
                if !snap
                    .instances
                    .get(id)
                    .is_some_and(|c| Arc::ptr_eq(c, &inst))
                {
                    continue; // not current (timers only hold current values)
                }
                let deadline = inst.deadline_ms();
                match inst.health {
                    Health::Passing if deadline > now_ms => {
                        schedule(&mut w, &inst, deadline);
                    }
                    Health::Passing => {
                        let index = self.next_index();
                        let critical = Arc::new(inst.with_health(Health::Critical, index));
                        events.push(Event {
                            index,
                            key: key.clone(),
                            id: id.clone(),
                            kind: EventKind::Critical,
                            instance: Some(critical.clone()),
                            previous: Some(inst.clone()),
                        });
                        changes.push((id.clone(), Some(critical)));
                        last_index = index;
                    }
                    Health::Critical if deadline + reap_ms > now_ms => {
                        schedule(&mut w, &inst, deadline + reap_ms);
                    }
                    Health::Critical => {
                        let index = self.next_index();
                        events.push(Event {
                            index,
                            key: key.clone(),
                            id: id.clone(),
                            kind: EventKind::Reaped,
                            instance: None,
                            previous: Some(inst.clone()),
                        });
                        changes.push((id.clone(), None));
                        last_index = index;
                    }
                }
            }
            if !changes.is_empty() {
                changes_made += changes.len();
                self.commit(&mut w, key, current, changes, last_index, events);
            }
        }
        changes_made
    }

    /// When [`Registry::expire`] next has work, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        let w = self.lock();
        w.timers
            .first_key_value()
            .map(|((ms, _), _)| self.inner.epoch + Duration::from_millis(*ms))
    }

    /// Every service as of one index: taken under the write lock, so no
    /// change is half in (for backups).
    pub fn snapshot(&self) -> (u64, Vec<Arc<ServiceSnapshot>>) {
        let _w = self.lock();
        let mut all: Vec<_> = self.inner.services.pin().values().cloned().collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        (self.index(), all)
    }

    /// Loads instances read back from storage, all at once: see
    /// [`Registry::restorer`], which this wraps.
    pub fn restore(&self, items: Vec<Restored>, last_index: u64, now: Instant) -> RestoreReport {
        let mut r = self.restorer(now);
        for item in items {
            r.add(item);
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
                let index = self.next_index();
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
                });
                changes.push((r.id, restored));
            }
            if let Some(last) = events.last().map(|e| e.index) {
                undone += events.len();
                self.commit(&mut w, key, current, changes, last, events);
            }
        }
        undone
    }

    // ---- internals ----

    fn lock(&self) -> MutexGuard<'_, WriteState> {
        // A panic under the lock leaves the maps consistent (every write
        // replaces whole snapshots), so a poisoned lock is still usable.
        self.inner.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.inner.epoch).as_millis() as u64
    }

    fn next_index(&self) -> u64 {
        self.inner.index.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Builds the service's next snapshot, publishes it, then tells observers.
    fn commit(
        &self,
        w: &mut WriteState,
        key: ServiceKey,
        current: Option<Arc<ServiceSnapshot>>,
        changes: Vec<(InstanceId, Option<Arc<Instance>>)>,
        index: u64,
        events: Vec<Event>,
    ) {
        let (instances, rr) = match &current {
            Some(s) => (&s.instances, s.rr.clone()),
            None => (&Instances::default(), Arc::new(AtomicUsize::new(0))),
        };
        let (instances, gone, added) = instances.with_changes(changes);
        // Replaced and removed values leave the timer map; new ones enter it.
        let reap_ms = self.inner.config.reap_after.as_millis() as u64;
        for old in &gone {
            unschedule(w, old);
        }
        for new in &added {
            schedule(w, new, due_ms(new, reap_ms));
        }
        let services = self.inner.services.pin();
        let published = if instances.is_empty() {
            services.remove(&key);
            None
        } else {
            let snap = Arc::new(ServiceSnapshot::build(key.clone(), instances, index, rr));
            services.insert(key.clone(), snap.clone());
            Some(snap)
        };
        drop(services);
        let batch = Batch {
            events: &events,
            services: &[(key, published)],
        };
        for o in &w.observers {
            o.applied(&batch);
        }
    }
}

/// When an instance value next needs a look: at its deadline while passing,
/// that plus the reap time once critical.
fn due_ms(inst: &Instance, reap_ms: u64) -> u64 {
    match inst.health {
        Health::Passing => inst.deadline_ms(),
        Health::Critical => inst.deadline_ms() + reap_ms,
    }
}

/// Puts `inst` in the timer map at `at_ms`. Its index makes the key unique;
/// should two values share one (restored from a store with a duplicate), the
/// later one is looked at a millisecond later.
fn schedule(w: &mut WriteState, inst: &Arc<Instance>, mut at_ms: u64) {
    while let Some(other) = w.timers.get(&(at_ms, inst.index)) {
        if Arc::ptr_eq(other, inst) {
            return;
        }
        at_ms += 1;
    }
    inst.timer_ms.store(at_ms, Ordering::Relaxed);
    w.timers.insert((at_ms, inst.index), inst.clone());
}

/// Takes `inst` out of the timer map, if it is there.
fn unschedule(w: &mut WriteState, inst: &Arc<Instance>) {
    let at = (inst.timer_ms.load(Ordering::Relaxed), inst.index);
    if w.timers.get(&at).is_some_and(|t| Arc::ptr_eq(t, inst)) {
        w.timers.remove(&at);
    }
}

/// [`schedule`] for many values at once (a restore): a tree built in bulk
/// has full nodes, where one built by random inserts has about 30% unused.
fn schedule_all(w: &mut WriteState, mut timers: Vec<(u64, Arc<Instance>)>) {
    timers.sort_unstable_by_key(|(at, i)| (*at, i.index));
    let mut bulk: Vec<((u64, u64), Arc<Instance>)> = Vec::with_capacity(timers.len());
    let mut clashing = Vec::new();
    for (at, inst) in timers {
        let key = (at, inst.index);
        if bulk.last().is_some_and(|(k, _)| *k == key) || w.timers.contains_key(&key) {
            clashing.push((at, inst));
        } else {
            inst.timer_ms.store(at, Ordering::Relaxed);
            bulk.push((key, inst));
        }
    }
    let mut built = BTreeMap::from_iter(bulk);
    w.timers.append(&mut built);
    for (at, inst) in clashing {
        schedule(w, &inst, at);
    }
}

fn not_found(key: &ServiceKey, id: &InstanceId) -> RegistryError {
    RegistryError::NotFound {
        service: key.service.to_string(),
        id: id.to_string(),
    }
}

/// Two Maxine names that normalize to the same DNS label must not merge
/// silently into one service or one instance.
fn check_compat_names(
    c: &super::model::CompatFields,
    id: &InstanceId,
    snap: &ServiceSnapshot,
) -> Result<(), RegistryError> {
    for inst in snap.instances.values() {
        let Some(other) = &inst.compat else { continue };
        if other.service_name != c.service_name {
            return Err(RegistryError::Conflict(format!(
                "serviceName {:?} maps to the DNS name {:?}, which {:?} already uses",
                c.service_name,
                snap.key.service.as_str(),
                other.service_name
            )));
        }
        if &inst.id == id && other.node_name != c.node_name {
            return Err(RegistryError::Conflict(format!(
                "nodeName {:?} maps to the instance id {:?}, which {:?} already uses",
                c.node_name,
                id.as_str(),
                other.node_name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::Address;

    fn reg(now: Instant) -> Registry {
        Registry::new(
            RegistryConfig {
                local_dc: Datacenter::new("dc1").unwrap(),
                reap_after: Duration::from_secs(60),
            },
            now,
        )
    }

    fn key(s: &str) -> ServiceKey {
        ServiceKey::new(
            Datacenter::new("dc1").unwrap(),
            ServiceName::new(s).unwrap(),
        )
    }

    fn spec(ip: &str, version: &str, ttl: u64) -> InstanceSpec {
        let mut s = InstanceSpec::new(Address::parse(ip).unwrap(), 8080);
        s.version = version.into();
        s.ttl = Duration::from_secs(ttl);
        s
    }

    fn id(s: &str) -> InstanceId {
        InstanceId::new(s).unwrap()
    }

    struct Recorder(Mutex<Vec<(u64, EventKind)>>);
    impl Observer for Recorder {
        fn applied(&self, b: &Batch<'_>) {
            self.0
                .lock()
                .unwrap()
                .extend(b.events.iter().map(|e| (e.index, e.kind)));
        }
    }

    #[test]
    fn version_queries_select_by_major_and_minor() {
        let t0 = Instant::now();
        let r = reg(t0);
        r.register(key("pay"), id("a"), spec("10.0.0.1", "2.1.0", 30), t0)
            .unwrap();
        r.register(key("pay"), id("b"), spec("10.0.0.2", "2.2.0", 30), t0)
            .unwrap();
        r.register(key("pay"), id("c"), spec("10.0.0.3", "3.0.0", 30), t0)
            .unwrap();
        let q = |v: &str| Query {
            dc: None,
            service: ServiceName::new("pay").unwrap(),
            version: VersionSelector::parse(v),
            healthy_only: true,
        };
        assert_eq!(r.answer(&q("v2")).instances.len(), 2);
        assert_eq!(r.answer(&q("v2-1")).instances.len(), 1);
        let missing = r.answer(&q("v4"));
        assert!(!missing.exists && missing.instances.is_empty());
    }

    #[test]
    fn selectors_matching_several_versions_answer_in_id_order() {
        let t0 = Instant::now();
        let r = reg(t0);
        for (n, v) in [
            ("a", "2.2.0"),
            ("b", "2.1.0"),
            ("c", "v2.1.0-rc1"),
            ("d", ""),
        ] {
            r.register(key("pay"), id(n), spec("10.0.0.1", v, 30), t0)
                .unwrap();
        }
        r.register(key("pay"), id("e"), spec("10.0.0.1", "2.2.0", 30), t0)
            .unwrap();
        let snap = r.service(&key("pay")).unwrap();
        let ids = |v: &str| -> Vec<String> {
            let sel = VersionSelector::parse(v).unwrap();
            let picked = snap.select(Some(&sel), false);
            picked.iter().map(|i| i.id.to_string()).collect()
        };
        assert_eq!(ids("v2"), ["a", "b", "c", "e"]);
        assert_eq!(ids("v2-1"), ["b", "c"]);
        assert_eq!(
            ids("v2-1-0"),
            ["b", "c"],
            "a suffix is the same version number"
        );
        assert_eq!(ids("v2-2-0"), ["a", "e"]);
        assert!(ids("v3").is_empty());
        let mut sels: Vec<String> = snap.selectors().map(|s| s.to_string()).collect();
        sels.sort();
        assert_eq!(sels, ["v2", "v2-1", "v2-1-0", "v2-2", "v2-2-0"]);
        assert_eq!(snap.select(None, false).len(), 5);
        // Instances of one service that run one version share its string.
        let (a, e) = (&snap.instances[&id("a")], &snap.instances[&id("e")]);
        assert_eq!(a.version.as_ptr(), e.version.as_ptr());
    }

    #[test]
    fn instances_apply_a_batch_of_changes_in_one_pass_the_later_of_two_winning() {
        let k = key("pay");
        let inst = |n: &str, index: u64| {
            let v = Version::from("1.0.0");
            let spec = spec("10.0.0.1", "1.0.0", 30);
            Arc::new(Instance::from_spec(
                &k,
                id(n),
                spec,
                v,
                Health::Passing,
                index,
                0,
            ))
        };
        let (base, gone, added) = Instances::default().with_changes(vec![
            (id("c"), Some(inst("c", 1))),
            (id("a"), Some(inst("a", 2))),
            (id("e"), Some(inst("e", 3))),
        ]);
        assert!(gone.is_empty() && added.len() == 3);
        let (next, gone, added) = base.with_changes(vec![
            (id("e"), None),
            (id("b"), Some(inst("b", 4))),
            (id("a"), Some(inst("a", 5))),
            (id("b"), Some(inst("b", 6))),
            (id("x"), None),
        ]);
        let seen: Vec<_> = next
            .iter()
            .map(|(id, i)| (id.to_string(), i.index))
            .collect();
        assert_eq!(seen, [("a".into(), 5), ("b".into(), 6), ("c".into(), 1)]);
        let indexes = |v: &[Arc<Instance>]| v.iter().map(|i| i.index).collect::<Vec<_>>();
        assert_eq!(indexes(&gone), [2, 3], "a replaced, e removed");
        assert_eq!(indexes(&added), [5, 6], "b's first value never took effect");
        assert!(next.contains_key(&id("c")) && !next.contains_key(&id("e")));
        assert_eq!(next[&id("b")].index, 6);
    }

    #[test]
    fn the_timer_map_holds_exactly_the_current_values() {
        let t0 = Instant::now();
        let r = reg(t0);
        let timers = || r.lock().timers.len();
        for round in 0..50 {
            let at = t0 + Duration::from_millis(round);
            r.register(key("pay"), id("a"), spec("10.0.0.1", "", 10), at)
                .unwrap();
            r.register(key("pay"), id("b"), spec("10.0.0.2", "", 10), at)
                .unwrap();
        }
        assert_eq!(timers(), 2, "replaced values left the map");
        r.deregister(&key("pay"), &id("b")).unwrap();
        assert_eq!(timers(), 1);
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(r.expire(at(11)), 1, "a turns critical");
        assert_eq!(timers(), 1, "its critical value waits for the reap time");
        r.heartbeat(&key("pay"), &id("a"), at(12)).unwrap();
        assert_eq!(timers(), 1, "the revived value replaced it");
        r.heartbeat(&key("pay"), &id("a"), at(20)).unwrap();
        assert_eq!(r.expire(at(22)), 0, "the heartbeat moved the deadline");
        assert_eq!(timers(), 1);
        assert_eq!(r.next_deadline(), Some(at(30)));
        assert_eq!(r.expire(at(30)), 1);
        assert_eq!(r.expire(at(30 + 60)), 1, "reaped");
        assert_eq!(timers(), 0);
        assert!(r.service(&key("pay")).is_none());
    }

    #[test]
    fn restored_values_with_one_index_still_each_expire() {
        let t0 = Instant::now();
        let r = reg(t0);
        let report = r.restore(
            vec![
                restored("pay", "a", 7, Health::Passing),
                restored("web", "b", 7, Health::Passing),
            ],
            7,
            t0,
        );
        assert_eq!(report.loaded, 2);
        assert_eq!(r.lock().timers.len(), 2);
        assert_eq!(r.expire(t0 + Duration::from_secs(11)), 2);
    }

    #[test]
    fn ttl_expiry_turns_critical_then_reaps_and_heartbeats_postpone_it() {
        let t0 = Instant::now();
        let r = reg(t0);
        let rec = Arc::new(Recorder(Mutex::new(Vec::new())));
        r.subscribe(rec.clone());
        r.register(key("pay"), id("a"), spec("10.0.0.1", "", 10), t0)
            .unwrap();
        r.register(key("pay"), id("b"), spec("10.0.0.2", "", 10), t0)
            .unwrap();
        let at = |s: u64| t0 + Duration::from_secs(s);
        r.heartbeat(&key("pay"), &id("a"), at(8)).unwrap();
        assert_eq!(r.expire(at(11)), 1, "only b expired");
        let snap = r.service(&key("pay")).unwrap();
        assert!(snap.instances[&id("a")].is_passing());
        assert_eq!(snap.instances[&id("b")].health, Health::Critical);
        // a heartbeat revives b; a expires at 18.
        r.heartbeat(&key("pay"), &id("b"), at(12)).unwrap();
        assert_eq!(r.expire(at(19)), 1);
        assert_eq!(
            r.expire(at(19 + 61)),
            2,
            "b expired, a reaped after reap_after"
        );
        assert!(
            !r.service(&key("pay"))
                .unwrap()
                .instances
                .contains_key(&id("a"))
        );
        let kinds: Vec<_> = rec.0.lock().unwrap().iter().map(|e| e.1).collect();
        use EventKind::*;
        assert_eq!(
            kinds,
            [
                Registered, Registered, Critical, Passing, Critical, Critical, Reaped
            ]
        );
        let idx: Vec<_> = rec.0.lock().unwrap().iter().map(|e| e.0).collect();
        assert_eq!(
            idx,
            (1..=7).collect::<Vec<_>>(),
            "indexes are gap-free and ordered"
        );
    }

    #[test]
    fn service_named_like_a_datacenter_is_rejected() {
        let t0 = Instant::now();
        let r = reg(t0);
        let err = r
            .register(key("dc1"), id("a"), spec("10.0.0.1", "", 10), t0)
            .unwrap_err();
        assert!(matches!(err, RegistryError::NameIsDatacenter(_)));
        assert!(r.services().is_empty());
    }

    #[test]
    fn datacenter_named_like_a_local_service_is_rejected() {
        let t0 = Instant::now();
        let r = reg(t0);
        r.register(key("eu"), id("a"), spec("10.0.0.1", "", 10), t0)
            .unwrap();
        let remote = ServiceKey::new(
            Datacenter::new("eu").unwrap(),
            ServiceName::new("x").unwrap(),
        );
        assert!(matches!(
            r.register(remote, id("a"), spec("10.0.0.2", "", 10), t0),
            Err(RegistryError::Conflict(_))
        ));
        assert!(r.add_datacenter(Datacenter::new("eu").unwrap()).is_err());
        assert!(!r.is_datacenter("eu"));
        r.reserve_service_names(["ns".to_string()]);
        assert!(matches!(
            r.register(key("ns"), id("a"), spec("10.0.0.1", "", 10), t0),
            Err(RegistryError::Conflict(_))
        ));
    }

    #[test]
    fn deregister_unknown_is_not_found_and_last_removal_drops_the_service() {
        let t0 = Instant::now();
        let r = reg(t0);
        assert!(matches!(
            r.deregister(&key("pay"), &id("a")),
            Err(RegistryError::NotFound { .. })
        ));
        r.register(key("pay"), id("a"), spec("10.0.0.1", "", 10), t0)
            .unwrap();
        r.deregister(&key("pay"), &id("a")).unwrap();
        assert!(r.service(&key("pay")).is_none());
    }

    #[test]
    fn round_robin_cycles_through_passing_instances() {
        let t0 = Instant::now();
        let r = reg(t0);
        for (n, ip) in [("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")] {
            r.register(key("pay"), id(n), spec(ip, "", 10), t0).unwrap();
        }
        let q = Query {
            dc: None,
            service: ServiceName::new("pay").unwrap(),
            version: None,
            healthy_only: true,
        };
        let picks: Vec<_> = (0..6).map(|_| r.pick(&q).unwrap().id.to_string()).collect();
        assert_eq!(picks, ["a", "b", "c", "a", "b", "c"]);
    }

    struct Batches(Mutex<Vec<(usize, usize)>>);
    impl Observer for Batches {
        fn applied(&self, b: &Batch<'_>) {
            self.0
                .lock()
                .unwrap()
                .push((b.events.len(), b.services.len()));
        }
    }

    fn restored(service: &str, name: &str, index: u64, health: Health) -> Restored {
        Restored {
            key: key(service),
            id: id(name),
            spec: spec("10.0.0.1", "", 10),
            health,
            index,
        }
    }

    #[test]
    fn restore_builds_each_service_once_keeps_indexes_and_continues_after_the_last() {
        let t0 = Instant::now();
        let r = reg(t0);
        let seen = Arc::new(Batches(Mutex::new(Vec::new())));
        r.subscribe(seen.clone());
        let report = r.restore(
            vec![
                restored("pay", "a", 7, Health::Passing),
                restored("pay", "b", 9, Health::Critical),
                restored("web", "c", 3, Health::Passing),
                restored("pay", "a", 5, Health::Passing), // older value of a
                restored("web", "c", 3, Health::Passing), // listed twice
            ],
            20,
            t0,
        );
        assert_eq!(report.loaded, 3);
        assert_eq!(report.superseded, [5]);
        assert_eq!(
            seen.0.lock().unwrap().last(),
            Some(&(0, 2)),
            "one batch, no events"
        );
        let pay = r.service(&key("pay")).unwrap();
        assert_eq!(pay.instances[&id("a")].index, 7);
        assert_eq!(pay.instances[&id("b")].health, Health::Critical);
        assert_eq!(r.index(), 20);
        let next = r
            .register(key("web"), id("d"), spec("10.0.0.2", "", 10), t0)
            .unwrap();
        assert_eq!(next.index, 21);
        // One full TTL from start-up, then critical; the critical one is
        // reaped after its TTL plus the reap time.
        assert_eq!(
            r.expire(t0 + Duration::from_secs(11)),
            3,
            "a, c, d turn critical"
        );
        assert_eq!(r.expire(t0 + Duration::from_secs(69)), 0);
        assert_eq!(
            r.expire(t0 + Duration::from_secs(71)),
            4,
            "b, a, c, d reaped"
        );
    }

    #[test]
    fn revert_undoes_a_change_only_while_it_is_the_latest() {
        let t0 = Instant::now();
        let r = reg(t0);
        let rec = Arc::new(Recorder(Mutex::new(Vec::new())));
        r.subscribe(rec.clone());
        let v1 = r
            .register(key("pay"), id("a"), spec("10.0.0.1", "", 10), t0)
            .unwrap();
        r.register(key("pay"), id("a"), spec("10.0.0.2", "", 10), t0)
            .unwrap();
        let undo = || {
            vec![Revert {
                key: key("pay"),
                id: id("a"),
                to: Some(v1.clone()),
            }]
        };
        assert_eq!(r.revert(undo(), &|_, _| false), 0, "a later change is kept");
        assert_eq!(r.revert(undo(), &|_, _| true), 1);
        let now = r.service(&key("pay")).unwrap().instances[&id("a")].clone();
        assert_eq!(now.address, v1.address);
        assert_eq!(
            (now.index, r.index()),
            (3, 3),
            "an undo is a change of its own"
        );
        assert_eq!(
            rec.0.lock().unwrap().last(),
            Some(&(3, EventKind::Reverted))
        );
        // Undoing a registration removes the instance.
        r.register(key("pay"), id("b"), spec("10.0.0.3", "", 10), t0)
            .unwrap();
        let gone = vec![Revert {
            key: key("pay"),
            id: id("b"),
            to: None,
        }];
        assert_eq!(r.revert(gone, &|_, _| true), 1);
        assert!(
            !r.service(&key("pay"))
                .unwrap()
                .instances
                .contains_key(&id("b"))
        );
    }
}
