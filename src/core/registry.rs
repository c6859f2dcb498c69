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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::model::{Health, Instance, InstanceSpec, ModelError};
use super::names::{Datacenter, InstanceId, ServiceName, VersionSelector};

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

/// One service's instances at one index. Immutable; cloning the `Arc` is free.
#[derive(Debug)]
pub struct ServiceSnapshot {
    pub key: ServiceKey,
    /// All instances, sorted by id.
    pub instances: BTreeMap<InstanceId, Arc<Instance>>,
    /// Instances by every version selector that matches them (O(1) lookup).
    by_selector: HashMap<VersionSelector, Vec<Arc<Instance>>>,
    /// Index of the latest change to this service.
    pub index: u64,
    /// Shared by every snapshot of the service, so round robin survives writes.
    rr: Arc<AtomicUsize>,
}

impl ServiceSnapshot {
    fn build(
        key: ServiceKey,
        instances: BTreeMap<InstanceId, Arc<Instance>>,
        index: u64,
        rr: Arc<AtomicUsize>,
    ) -> Self {
        let mut by_selector: HashMap<VersionSelector, Vec<Arc<Instance>>> = HashMap::new();
        for inst in instances.values() {
            for sel in VersionSelector::all_for(&inst.version) {
                by_selector.entry(sel).or_default().push(inst.clone());
            }
        }
        Self {
            key,
            instances,
            by_selector,
            index,
            rr,
        }
    }

    /// The version selectors that match at least one instance.
    pub fn selectors(&self) -> impl Iterator<Item = &VersionSelector> {
        self.by_selector.keys()
    }

    /// Instances matching `version` (all when `None`), passing ones only when
    /// `healthy_only`, in id order.
    pub fn select(
        &self,
        version: Option<&VersionSelector>,
        healthy_only: bool,
    ) -> Vec<Arc<Instance>> {
        let keep = |i: &&Arc<Instance>| !healthy_only || i.is_passing();
        match version {
            None => self.instances.values().filter(keep).cloned().collect(),
            Some(sel) => self
                .by_selector
                .get(sel)
                .map(|v| v.iter().filter(keep).cloned().collect())
                .unwrap_or_default(),
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
    services: papaya::HashMap<ServiceKey, Arc<ServiceSnapshot>>,
    /// Index of the latest change, readable without the lock.
    index: AtomicU64,
    write: Mutex<WriteState>,
}

struct WriteState {
    /// Timer map: deadline (ms since epoch) -> instances to look at then,
    /// each with the index of the instance value it was scheduled for.
    timers: BTreeMap<u64, Vec<(ServiceKey, InstanceId, u64)>>,
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
                services: papaya::HashMap::new(),
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
            Some(sel) => snap.by_selector.contains_key(sel),
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
        spec: InstanceSpec,
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
        let instance = Arc::new(Instance {
            id: id.clone(),
            service: key.service.clone(),
            datacenter: key.dc.clone(),
            address: spec.address,
            port: spec.port,
            version: spec.version,
            tags: spec.tags,
            metadata: spec.metadata,
            weight: spec.weight,
            ttl: spec.ttl,
            health: Health::Passing,
            index,
            compat: spec.compat,
            deadline_ms: AtomicU64::new(deadline),
        });
        w.datacenters.insert(key.dc.clone());
        schedule(&mut w, deadline, &key, &id, index);
        let event = Event {
            index,
            key: key.clone(),
            id: id.clone(),
            kind: EventKind::Registered,
            instance: Some(instance.clone()),
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
        if !current
            .as_ref()
            .is_some_and(|s| s.instances.contains_key(id))
        {
            return Err(not_found(key, id));
        }
        let index = self.next_index();
        let event = Event {
            index,
            key: key.clone(),
            id: id.clone(),
            kind: EventKind::Deregistered,
            instance: None,
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
        schedule(&mut w, deadline, key, id, index);
        let event = Event {
            index,
            key: key.clone(),
            id: id.clone(),
            kind: EventKind::Passing,
            instance: Some(revived.clone()),
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
        let mut due = Vec::new();
        while let Some(entry) = w.timers.first_entry() {
            if *entry.key() > now_ms {
                break;
            }
            due.extend(entry.remove());
        }
        if due.is_empty() {
            return 0;
        }
        // Group by service so each touched service is rebuilt once.
        let mut by_service: BTreeMap<ServiceKey, Vec<(InstanceId, u64)>> = BTreeMap::new();
        for (key, id, idx) in due {
            by_service.entry(key).or_default().push((id, idx));
        }
        let reap_ms = self.inner.config.reap_after.as_millis() as u64;
        let mut changes_made = 0;
        for (key, entries) in by_service {
            let current = self.service(&key);
            let Some(snap) = current.clone() else {
                continue;
            };
            let mut changes = Vec::new();
            let mut events = Vec::new();
            let mut last_index = snap.index;
            for (id, scheduled_for) in entries {
                let Some(inst) = snap.instances.get(&id) else {
                    continue;
                };
                if inst.index != scheduled_for {
                    continue; // replaced since; its new value has its own timer
                }
                let deadline = inst.deadline_ms();
                match inst.health {
                    Health::Passing if deadline > now_ms => {
                        schedule(&mut w, deadline, &key, &id, inst.index);
                    }
                    Health::Passing => {
                        let index = self.next_index();
                        let critical = Arc::new(inst.with_health(Health::Critical, index));
                        schedule(&mut w, deadline + reap_ms, &key, &id, index);
                        events.push(Event {
                            index,
                            key: key.clone(),
                            id: id.clone(),
                            kind: EventKind::Critical,
                            instance: Some(critical.clone()),
                        });
                        changes.push((id, Some(critical)));
                        last_index = index;
                    }
                    Health::Critical if deadline + reap_ms > now_ms => {
                        schedule(&mut w, deadline + reap_ms, &key, &id, inst.index);
                    }
                    Health::Critical => {
                        let index = self.next_index();
                        events.push(Event {
                            index,
                            key: key.clone(),
                            id: id.clone(),
                            kind: EventKind::Reaped,
                            instance: None,
                        });
                        changes.push((id, None));
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
            .map(|(ms, _)| self.inner.epoch + Duration::from_millis(*ms))
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
        let (mut instances, rr) = match &current {
            Some(s) => (s.instances.clone(), s.rr.clone()),
            None => (BTreeMap::new(), Arc::new(AtomicUsize::new(0))),
        };
        for (id, inst) in changes {
            match inst {
                Some(i) => instances.insert(id, i),
                None => instances.remove(&id),
            };
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

fn schedule(w: &mut WriteState, at_ms: u64, key: &ServiceKey, id: &InstanceId, index: u64) {
    w.timers
        .entry(at_ms)
        .or_default()
        .push((key.clone(), id.clone(), index));
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
}
