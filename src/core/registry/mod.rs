//! The registry: datacenter -> service -> instances, in lock-free maps, and
//! the state machine that changes them.
//!
//! Reads (DNS answer building, API listings, discovery) never wait for a
//! writer: each service is an immutable [`ServiceSnapshot`] in a `papaya` map,
//! replaced whole on every change. Every change goes through one method,
//! [`Registry::apply`] (entries whose index a log assigned) or its local twin
//! [`Registry::apply_next`] (the single-node log: the next indexes of this
//! registry's own sequence). Both take one mutex, apply the changes in index
//! order and hand them to the observers (the DNS answer cache, the journal
//! and the change feed) before they return.
//!
//! Heartbeats of a passing instance only move an atomic deadline, off the
//! log. Expiry uses one ordered timer map for all instances, checked by a
//! single driver ([`Registry::expire`]), so a million instances cost a
//! million map entries, not a million timers.
//!
//! Seams: `snapshot` (one service at one index), `expiry` (timers,
//! heartbeats, what is due), `restore` (loading from storage, undoing what
//! storage refused); queries and answer plans are in [`crate::core::plan`].

mod acl;
mod expiry;
mod mirror;
mod restore;
mod snapshot;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::acl::{AclKey, AclObject};
use super::change::{
    Batch, Change, Context, Entry, Event, EventKind, InstanceDiff, Observer, Outcome,
};
use super::labels::{Datacenter, InstanceId, ServiceName};
use super::model::{Health, Instance, ModelError, Version};
use super::strategy::{Balancing, ServiceConfig, Settings};

pub use acl::AclRevert;
pub use expiry::{Heartbeat, SelfPreservation};
pub use mirror::Mirrored;
pub use restore::{RestoreReport, Restored, Restorer, Revert};
pub use snapshot::{Instances, InstancesIter, ServiceKey, ServiceSnapshot};

/// The hasher of Maxine's maps keyed by names: foldhash, seeded per process
/// (names come from clients, so no fixed seed: they cannot aim at one
/// bucket). SipHash, the standard one, was a tenth of a restore of many
/// small services.
pub type FastHash = foldhash::fast::RandomState;

/// The highest change index Maxine accepts: 2^53 - 1, the largest integer
/// every JSON client reads exactly. At a million changes a second it lasts
/// 285 years; an index above it in a store or a snapshot is damage (or a
/// hostile file), refused with a clear error rather than wrapped around.
pub const MAX_INDEX: u64 = (1 << 53) - 1;

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
    #[error("{0}")]
    Acl(#[from] super::acl::AclError),
    /// The actor holds as many instances as its token allows.
    #[error(
        "token {holder:?} may hold at most {limit} instances (its max_instances); deregister one first"
    )]
    Quota { limit: u32, holder: String },
    /// A blacklist entry refuses the registration (docs/security.md).
    #[error("refused by the blacklist entry for {entry}: {reason}")]
    Blacklisted { entry: String, reason: String },
    #[error("instance {id:?} of service {service:?} is not registered")]
    NotFound { service: String, id: String },
    #[error("instance {id:?} of service {service:?} has no check {check:?}")]
    NoCheck {
        service: String,
        id: String,
        check: String,
    },
    /// A log handed over an entry at or below the last applied index.
    #[error("change index {index} does not follow the last applied index {last}")]
    IndexOrder { index: u64, last: u64 },
    /// An index beyond [`MAX_INDEX`]: damaged data, or the sequence is used up.
    #[error("change index {0} is beyond the largest index Maxine accepts ({MAX_INDEX})")]
    IndexOutOfRange(u64),
}

/// Registry settings that the core needs.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    pub local_dc: Datacenter,
    /// How long a critical instance stays before it is removed.
    pub reap_after: Duration,
}

/// What an apply did: the index range it took and each change's outcome,
/// in the order given.
#[derive(Debug, Default)]
pub struct Applied {
    /// Index of the last entry applied (the registry's index afterwards);
    /// unchanged when nothing was applied.
    pub last_index: u64,
    /// Per change: its index (0 when it was refused and took none) and outcome.
    pub outcomes: Vec<(u64, Outcome)>,
}

impl Applied {
    /// The first refusal, if any change was refused.
    pub fn refusal(&self) -> Option<&RegistryError> {
        self.outcomes.iter().find_map(|(_, o)| match o {
            Outcome::Refused(e) => Some(e),
            _ => None,
        })
    }
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
    /// Index of the latest applied change, readable without the lock.
    index: AtomicU64,
    write: Mutex<WriteState>,
    acl: acl::AclMaps,
    /// Told of every heartbeat this node hears (the etcd log's summaries).
    heard: std::sync::OnceLock<HeartbeatSink>,
    /// Which datacenters answer local names when the service has no
    /// passing instance here (empty in a single datacenter).
    failover: super::failover::FailoverPolicy,
    /// `dns.only_passing`: whether answers leave out warning instances.
    only_passing: std::sync::atomic::AtomicBool,
    /// The configuration's defaults for every service (strategy, panic
    /// threshold) and the zones of client networks; set once at start.
    balancing: std::sync::OnceLock<Balancing>,
    /// Self-preservation as last decided, readable without the write lock.
    preservation: Mutex<Option<SelfPreservation>>,
}

/// See [`Registry::set_heartbeat_sink`].
pub type HeartbeatSink = Arc<dyn Fn(&Arc<Instance>) + Send + Sync>;

struct WriteState {
    /// Timer map: (deadline in ms since the epoch, index, the value's
    /// address) -> the instance value to look at then. Exactly the current
    /// values are in it (each knows its place: [`Instance::timer_ms`]);
    /// the address keeps keys unique where values share an index (a shared
    /// log's revision): one pointer per instance, however deadlines spread.
    timers: std::collections::BTreeMap<(u64, u64, usize), Arc<Instance>>,
    observers: Vec<Arc<dyn Observer>>,
    datacenters: BTreeSet<Datacenter>,
    /// Labels no service may take (they name static zone data).
    reserved: BTreeSet<String>,
    /// Instances per owner, for quotas.
    holdings: acl::Holdings,
    /// Self-preservation of expiry (see `expiry`).
    preservation: expiry::Preservation,
}

/// Where the indexes of an apply come from.
enum Indexes<'a> {
    /// The registry's own sequence: the single-node log.
    Next,
    /// Assigned by a log (etcd, replication), one per change, increasing.
    Given(&'a [u64]),
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
                    timers: Default::default(),
                    observers: Vec::new(),
                    datacenters,
                    reserved: BTreeSet::new(),
                    holdings: Default::default(),
                    preservation: Default::default(),
                }),
                acl: acl::AclMaps::new(),
                heard: std::sync::OnceLock::new(),
                failover: Default::default(),
                only_passing: Default::default(),
                balancing: std::sync::OnceLock::new(),
                preservation: Mutex::new(None),
            }),
        }
    }

    /// The failover order of local names (docs/federation.md).
    pub fn failover(&self) -> &super::failover::FailoverPolicy {
        &self.inner.failover
    }

    /// Makes answers leave out warning instances (`dns.only_passing`). Set
    /// it before anything is registered or restored: snapshots take it when
    /// they are built.
    pub fn set_only_passing(&self, only_passing: bool) {
        self.inner
            .only_passing
            .store(only_passing, Ordering::Release);
    }

    /// Whether answers leave out warning instances.
    pub fn only_passing(&self) -> bool {
        self.inner.only_passing.load(Ordering::Acquire)
    }

    pub fn local_dc(&self) -> &Datacenter {
        &self.inner.config.local_dc
    }

    /// Sets the configuration's service defaults and client zones, before
    /// anything is registered or restored (snapshots copy their settings
    /// when built). A second call is ignored.
    pub fn set_balancing(&self, b: Balancing) {
        let _ = self.inner.balancing.set(b);
    }

    /// The configuration's service defaults and client zones.
    pub fn balancing(&self) -> &Balancing {
        static DEFAULT: std::sync::OnceLock<Balancing> = std::sync::OnceLock::new();
        self.inner
            .balancing
            .get()
            .unwrap_or_else(|| DEFAULT.get_or_init(Balancing::default_settings))
    }

    /// What an operator set for a service, if anything.
    pub fn service_config(&self, key: &ServiceKey) -> Option<Arc<ServiceConfig>> {
        match self.acl_object(&AclKey::Service(key.clone()))? {
            AclObject::Service(c) => Some(c),
            _ => None,
        }
    }

    /// Rebuilds the snapshots of these services with the settings they
    /// have now, at the given indexes (under the write lock): what a change
    /// of a service's configuration publishes. Services without instances
    /// have no snapshot; their settings wait in the object table.
    fn resettle(
        &self,
        keys: impl Iterator<Item = (ServiceKey, u64)>,
    ) -> Vec<(ServiceKey, Option<Arc<ServiceSnapshot>>)> {
        let services = self.inner.services.pin();
        let mut out = Vec::new();
        for (key, index) in keys {
            let Some(snap) = services.get(&key) else {
                continue;
            };
            let next = Arc::new(snap.with_settings(self.settings_of(&key), index));
            services.insert(key.clone(), next.clone());
            out.push((key, Some(next)));
        }
        out
    }

    /// The settings a service has now: its own, else the defaults.
    pub fn settings_of(&self, key: &ServiceKey) -> Settings {
        self.balancing()
            .settings(self.service_config(key).as_deref())
    }

    /// Index of the latest applied change.
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
            acl: &[],
            instances: None,
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

    /// Every service as of one index: taken under the write lock, so no
    /// change is half in (for backups and for the change feed's snapshots).
    pub fn snapshot(&self) -> (u64, Vec<Arc<ServiceSnapshot>>) {
        let _w = self.lock();
        let mut all: Vec<_> = self.inner.services.pin().values().cloned().collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        (self.index(), all)
    }

    /// Everything a backup holds, as of one index: every service and every
    /// access-control object, taken under the write lock.
    /// Replicas of other datacenters are left out: they are the peers'
    /// (and the federation's replica files keep them).
    pub fn backup(&self) -> (u64, Vec<Arc<ServiceSnapshot>>, Vec<super::acl::AclObject>) {
        let _w = self.lock();
        let local = self.local_dc();
        let mut all: Vec<_> = self
            .inner
            .services
            .pin()
            .values()
            .filter(|s| &s.key.dc == local)
            .cloned()
            .collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        (self.index(), all, self.acl_objects())
    }

    /// Whether `change` would be applied against the current state: what a
    /// proposer checks before it sends a change to a log that applies it
    /// later (the answer may change by then; `apply` decides).
    pub fn check(&self, change: &Change, ctx: &Context, now: Instant) -> Result<(), RegistryError> {
        let w = self.lock();
        let Some((key, _)) = change.target() else {
            return match change {
                Change::Acl(c) => self.decide_acl(c, self.index() + 1).map(|_| ()),
                Change::Kv(c) => self.decide_kv(c, self.index() + 1).map(|_| ()),
                _ => Ok(()),
            };
        };
        let mut group = Group::new(self.service(key));
        match self.decide(&w, &mut group, change.clone(), None, ctx, now) {
            Decision::Refuse(e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Applies entries whose indexes a log assigned (each above the last
    /// applied), in order. A change that contradicts the registry is
    /// refused (its index is passed over: every node that follows the log
    /// decides alike). Observers have seen the changes when this returns.
    pub fn apply(
        &self,
        entries: Vec<Entry>,
        ctx: &Context,
        now: Instant,
    ) -> Result<Applied, RegistryError> {
        let mut last = self.index();
        for e in &entries {
            if e.index > MAX_INDEX {
                return Err(RegistryError::IndexOutOfRange(e.index));
            }
            if e.index <= last {
                return Err(RegistryError::IndexOrder {
                    index: e.index,
                    last,
                });
            }
            last = e.index;
        }
        let (indexes, changes): (Vec<u64>, Vec<Change>) =
            entries.into_iter().map(|e| (e.index, e.change)).unzip();
        let mut w = self.lock();
        self.apply_locked(&mut w, changes, Indexes::Given(&indexes), ctx, now)
    }

    /// Applies `changes` as the next entries of this registry's own
    /// sequence: the single-node log, whose order is the order of this
    /// lock. A refused change takes no index.
    pub fn apply_next(
        &self,
        changes: Vec<Change>,
        ctx: &Context,
        now: Instant,
    ) -> Result<Applied, RegistryError> {
        let mut w = self.lock();
        self.apply_locked(&mut w, changes, Indexes::Next, ctx, now)
    }

    /// Registers or replaces one instance: [`Registry::apply_next`] of one
    /// [`Change::Register`] by [`Actor::System`](super::change::Actor), for
    /// tests, benchmarks and tools that own the registry. The server's
    /// writes go through its log.
    pub fn register(
        &self,
        key: ServiceKey,
        id: InstanceId,
        spec: super::model::InstanceSpec,
        now: Instant,
    ) -> Result<Arc<Instance>, RegistryError> {
        let change = Change::Register { key, id, spec };
        match self.apply_one(change, now)?.1 {
            Outcome::Applied(Some(inst)) => Ok(inst),
            other => unreachable!("a registration either applies or is refused: {other:?}"),
        }
    }

    /// Removes one instance, like [`Registry::register`]; returns the
    /// removal's index.
    pub fn deregister(&self, key: &ServiceKey, id: &InstanceId) -> Result<u64, RegistryError> {
        let change = Change::Deregister {
            key: key.clone(),
            id: id.clone(),
        };
        // The removal's own index: by the time this returns, a store
        // failure may already have undone it with a later change.
        Ok(self.apply_one(change, self.inner.epoch)?.0)
    }

    fn apply_one(&self, change: Change, now: Instant) -> Result<(u64, Outcome), RegistryError> {
        let applied = self.apply_next(vec![change], &Context::system(), now)?;
        match applied.outcomes.into_iter().next() {
            Some((_, Outcome::Refused(e))) => Err(e),
            Some(done) => Ok(done),
            None => unreachable!("one change, one outcome"),
        }
    }

    fn apply_locked(
        &self,
        w: &mut WriteState,
        changes: Vec<Change>,
        indexes: Indexes<'_>,
        ctx: &Context,
        now: Instant,
    ) -> Result<Applied, RegistryError> {
        let mut applied = Applied {
            last_index: self.index(),
            outcomes: Vec::with_capacity(changes.len()),
        };
        // Consecutive changes of one service are one rebuild of it.
        let mut group: Option<(ServiceKey, Group)> = None;
        for (n, change) in changes.into_iter().enumerate() {
            let index = match indexes {
                Indexes::Given(given) => given[n],
                Indexes::Next => applied.last_index.saturating_add(1),
            };
            let key = change.target().map(|(k, _)| k.clone());
            let other_service = group.as_ref().is_some_and(|(k, _)| Some(k) != key.as_ref());
            if (other_service || index > MAX_INDEX)
                && let Some((k, g)) = group.take()
            {
                self.commit_group(w, k, g);
            }
            if index > MAX_INDEX {
                // The sequence is used up: nothing more can be applied.
                return Err(RegistryError::IndexOutOfRange(index));
            }
            let Some(key) = key else {
                let made = match &change {
                    Change::Acl(acl) => self.decide_acl(acl, index),
                    Change::Kv(kv) => self.decide_kv(kv, index),
                    _ => unreachable!("only access-control and key/value changes have no service"),
                };
                self.apply_acl(w, made, index, ctx, &indexes, &mut applied);
                continue;
            };
            let (_, g) = group.get_or_insert_with(|| (key.clone(), Group::new(self.service(&key))));
            let not_made = |applied: &mut Applied, outcome: Outcome| {
                // A log's entry passes its index whatever it came to; the
                // local sequence gives none to a change not made.
                let at = match indexes {
                    Indexes::Given(_) => {
                        applied.last_index = index;
                        self.inner.index.store(index, Ordering::Release);
                        index
                    }
                    Indexes::Next => 0,
                };
                applied.outcomes.push((at, outcome));
            };
            match self.decide(w, g, change, Some(index), ctx, now) {
                Decision::Refuse(e) => not_made(&mut applied, Outcome::Refused(e)),
                Decision::Skip => not_made(&mut applied, Outcome::Skipped),
                Decision::Make { id, value, kind } => {
                    g.changes.push((id.clone(), value.clone()));
                    g.events.push(Event {
                        index,
                        key: key.clone(),
                        id,
                        kind,
                        instance: value.clone(),
                        previous: g.current_of_last.take(),
                        actor: ctx.actor.clone(),
                        origin: ctx.origin.clone(),
                    });
                    g.index = index;
                    applied.last_index = index;
                    self.inner.index.store(index, Ordering::Release);
                    applied.outcomes.push((index, Outcome::Applied(value)));
                }
            }
        }
        if let Some((k, g)) = group.take() {
            self.commit_group(w, k, g);
        }
        Ok(applied)
    }

    /// Applies one access-control change at `index` (it touches no service).
    fn apply_acl(
        &self,
        w: &mut WriteState,
        made: Result<Vec<(super::acl::AclKey, Option<super::acl::AclObject>)>, RegistryError>,
        index: u64,
        ctx: &Context,
        indexes: &Indexes<'_>,
        applied: &mut Applied,
    ) {
        // A change that makes several objects (the bootstrap: a token and
        // the mark) gives each its own index in the local sequence, because
        // an index is also a record's key in the file and Redis stores. A
        // log that gives one index per change keys records by path (etcd).
        let made = made.and_then(|made| {
            let extra = match indexes {
                Indexes::Next => made.len().saturating_sub(1) as u64,
                Indexes::Given(_) => 0,
            };
            match index.checked_add(extra).filter(|last| *last <= MAX_INDEX) {
                Some(_) => Ok(made),
                None => Err(RegistryError::IndexOutOfRange(index.saturating_add(extra))),
            }
        });
        match made {
            Ok(made) => {
                let step = u64::from(matches!(indexes, Indexes::Next));
                let events: Vec<_> = made
                    .into_iter()
                    .enumerate()
                    .map(|(k, (key, value))| {
                        let at = index + k as u64 * step;
                        super::change::AclEvent {
                            index: at,
                            previous: self.acl_object(&key),
                            key,
                            value: value.map(|v| if v.index() == at { v } else { v.at(at) }),
                            actor: ctx.actor.clone(),
                            origin: ctx.origin.clone(),
                        }
                    })
                    .collect();
                let first = events.first().and_then(|e| e.value.clone());
                let last = events.last().map_or(index, |e| e.index);
                applied.last_index = last;
                self.inner.index.store(last, Ordering::Release);
                self.commit_acl(w, events);
                applied.outcomes.push((last, Outcome::Acl(first)));
            }
            Err(e) => {
                let at = match indexes {
                    Indexes::Given(_) => {
                        applied.last_index = index;
                        self.inner.index.store(index, Ordering::Release);
                        index
                    }
                    Indexes::Next => 0,
                };
                applied.outcomes.push((at, Outcome::Refused(e)));
            }
        }
    }

    /// What `change` does to the service as `group` holds it: the one place
    /// where the rules of every kind of instance change are (access-control
    /// changes: [`Registry::decide_acl`]). `index`: the change's, or `None`
    /// for a check that makes nothing.
    fn decide(
        &self,
        w: &WriteState,
        group: &mut Group,
        change: Change,
        index: Option<u64>,
        ctx: &Context,
        now: Instant,
    ) -> Decision {
        match change {
            Change::Register { key, id, mut spec } => {
                if let Err(e) = spec.validate() {
                    return Decision::Refuse(e.into());
                }
                if let Some(b) = self.blacklisted(&key.service, &id, spec.address.addresses()) {
                    return Decision::Refuse(RegistryError::Blacklisted {
                        entry: b.target.to_string(),
                        reason: b.reason.clone(),
                    });
                }
                if w.datacenters
                    .iter()
                    .any(|d| d.as_str() == key.service.as_str())
                {
                    return Decision::Refuse(RegistryError::NameIsDatacenter(
                        key.service.to_string(),
                    ));
                }
                if w.reserved.contains(key.service.as_str()) {
                    return Decision::Refuse(RegistryError::Conflict(format!(
                        "service name {:?} is taken by static records in the zone file",
                        key.service.as_str()
                    )));
                }
                if let Err(e) = self.check_new_datacenter(w, &key.dc) {
                    return Decision::Refuse(e);
                }
                if let (Some(c), Some(snap)) = (&spec.compat, &group.snapshot)
                    && let Err(e) = check_compat_names(c, &id, snap, &group.changes)
                {
                    return Decision::Refuse(e);
                }
                let current = group.current(&id);
                let current_owner = current.as_ref().map(|c| c.owner.as_ref());
                if let Err(e) = acl::check_quota(self, w, ctx, current_owner) {
                    return Decision::Refuse(e);
                }
                spec.owner = ctx.actor.owner();
                let Some(index) = index else {
                    return Decision::Skip; // a check only
                };
                let deadline = self.ms(now) + spec.ttl.as_millis() as u64;
                let version = match group.version(&spec.version) {
                    Some(v) => v,
                    None => Version::from(std::mem::take(&mut spec.version)),
                };
                // The same checks again keep their statuses and results.
                let checks = current
                    .as_ref()
                    .map(|c| super::check::Checks::build(spec.all_checks(), &c.checks));
                let mut instance = Instance::from_spec(
                    &key,
                    id.clone(),
                    spec,
                    version,
                    Health::Passing,
                    index,
                    deadline,
                );
                if let Some(checks) = checks {
                    instance.checks = checks;
                }
                let instance = Arc::new(instance);
                group.current_of_last = current;
                group.new_dc = Some(key.dc);
                Decision::Make {
                    id,
                    value: Some(instance),
                    kind: EventKind::Registered,
                }
            }
            Change::Deregister { key, id } => {
                let Some(cur) = group.current(&id) else {
                    return Decision::Refuse(not_found(&key, &id));
                };
                group.current_of_last = Some(cur);
                Decision::Make {
                    id,
                    value: None,
                    kind: EventKind::Deregistered,
                }
            }
            Change::SetHealth { id, health, of, .. } => {
                let Some(cur) = group.current(&id).filter(|c| c.index == of) else {
                    return Decision::Skip;
                };
                let Some(index) = index.filter(|_| cur.health != health) else {
                    return Decision::Skip;
                };
                let next = Arc::new(cur.with_health(health, index));
                let kind = match health {
                    Health::Passing => {
                        // Revived: a full TTL from now.
                        let deadline = self.ms(now) + next.ttl().as_millis() as u64;
                        next.deadline_ms.store(deadline, Ordering::Release);
                        EventKind::Passing
                    }
                    Health::Critical => EventKind::Critical,
                    // The TTL is passing or critical, never warning.
                    Health::Warning => return Decision::Skip,
                };
                group.current_of_last = Some(cur);
                Decision::Make {
                    id,
                    value: Some(next),
                    kind,
                }
            }
            Change::Resolve { id, host, of, .. } => {
                let Some(cur) = group.current(&id).filter(|c| c.index == of) else {
                    return Decision::Skip;
                };
                // Only for the name it was resolved for, and only when the
                // answer differs: a re-resolution with the same outcome is
                // not a change (no rebuild, no event).
                let Some(has) = cur.address.host().filter(|h| **h == host) else {
                    return Decision::Skip;
                };
                let same =
                    has.resolution().map(|r| &r.outcome) == host.resolution().map(|r| &r.outcome);
                if index.is_none() || same {
                    return Decision::Skip;
                }
                let next = Arc::new(cur.with_host(host));
                group.current_of_last = Some(cur);
                Decision::Make {
                    id,
                    value: Some(next),
                    kind: EventKind::Resolved,
                }
            }
            Change::Replica { key, id, value } => {
                if key.dc == *self.local_dc() {
                    return Decision::Refuse(RegistryError::Conflict(format!(
                        "a replica of datacenter {:?}, which is this one",
                        key.dc.as_str()
                    )));
                }
                let current = group.current(&id);
                let Some(value) = value else {
                    let Some(cur) = current else {
                        return Decision::Skip;
                    };
                    group.current_of_last = Some(cur);
                    return Decision::Make {
                        id,
                        value: None,
                        kind: EventKind::Deregistered,
                    };
                };
                let (mut spec, health) = *value;
                if let Err(e) = spec.validate() {
                    return Decision::Refuse(e.into());
                }
                if let Err(e) = self.check_new_datacenter(w, &key.dc) {
                    return Decision::Refuse(e);
                }
                let Some(index) = index else {
                    return Decision::Skip;
                };
                // Quotas are the origin's business.
                spec.owner = None;
                let version = match group.version(&spec.version) {
                    Some(v) => v,
                    None => Version::from(std::mem::take(&mut spec.version)),
                };
                let kind = match (&current, health) {
                    (Some(c), Health::Passing) if !c.is_passing() => EventKind::Passing,
                    (Some(c), Health::Critical) if c.is_passing() => EventKind::Critical,
                    _ => EventKind::Registered,
                };
                // The deadline is never looked at: replicas have no timer.
                let instance = Arc::new(Instance::from_spec(
                    &key,
                    id.clone(),
                    spec,
                    version,
                    health,
                    index,
                    u64::MAX / 4,
                ));
                group.current_of_last = current;
                group.new_dc = Some(key.dc);
                Decision::Make {
                    id,
                    value: Some(instance),
                    kind,
                }
            }
            Change::CheckStatus {
                id,
                check,
                status,
                of,
                ..
            } => {
                let Some(cur) = group.current(&id).filter(|c| c.index == of) else {
                    return Decision::Skip;
                };
                let name = check.spec.name.as_str();
                // Only for the definition it was decided on.
                let same = cur
                    .checks
                    .get(name)
                    .is_some_and(|e| Arc::ptr_eq(&e.check, &check));
                let next = cur.checks.with_status(name, status).filter(|_| same);
                let (Some(checks), Some(_)) = (next, index) else {
                    return Decision::Skip;
                };
                let next = Arc::new(cur.with_checks(checks, cur.index));
                group.current_of_last = Some(cur);
                Decision::Make {
                    id,
                    value: Some(next),
                    kind: EventKind::Checked,
                }
            }
            Change::SetCheck {
                key,
                id,
                name,
                spec,
            } => {
                let Some(cur) = group.current(&id) else {
                    return Decision::Refuse(not_found(&key, &id));
                };
                let derived = cur
                    .compat
                    .as_ref()
                    .is_some_and(|c| !c.health_check_path.is_empty());
                if derived && name.as_str() == super::check::COMPAT_CHECK {
                    return Decision::Refuse(RegistryError::Conflict(format!(
                        "check {:?} is the instance's healthCheckPath: register it again to change it",
                        name.as_str()
                    )));
                }
                let mut specs: Vec<_> = cur.checks.specs();
                let had = specs.len();
                specs.retain(|s| s.name != name);
                match spec {
                    Some(spec) => {
                        if spec.name != name {
                            return Decision::Refuse(RegistryError::Invalid(ModelError::Invalid(
                                "the check's name is not the one of its path".into(),
                            )));
                        }
                        specs.push(*spec);
                    }
                    None if specs.len() == had => {
                        return Decision::Refuse(RegistryError::NoCheck {
                            service: key.service.to_string(),
                            id: id.to_string(),
                            check: name.to_string(),
                        });
                    }
                    None => {}
                }
                // Validated as a registration's checks are (the derived
                // `healthCheckPath` check counts and keeps its name).
                if let Err(e) = super::check::validate_all(&specs) {
                    return Decision::Refuse(e.into());
                }
                let Some(index) = index else {
                    return Decision::Skip; // a check only
                };
                let checks = super::check::Checks::build(specs, &cur.checks);
                let next = Arc::new(cur.with_checks(checks, index));
                group.current_of_last = Some(cur);
                Decision::Make {
                    id,
                    value: Some(next),
                    kind: EventKind::ChecksChanged,
                }
            }
            Change::Eject {
                id, ejected, of, ..
            } => {
                let Some(cur) = group.current(&id).filter(|c| c.index == of) else {
                    return Decision::Skip;
                };
                if index.is_none() || group.is_ejected(of, &id) == ejected {
                    return Decision::Skip;
                }
                // The value stays the same; the snapshot's set of ejected
                // values changes (see ServiceSnapshot::ejected).
                group.ejections.push((of, id.clone(), ejected));
                group.current_of_last = Some(cur.clone());
                Decision::Make {
                    id,
                    value: Some(cur),
                    kind: if ejected {
                        EventKind::Ejected
                    } else {
                        EventKind::Returned
                    },
                }
            }
            Change::Acl(_) | Change::Kv(_) => {
                unreachable!(
                    "access-control and key/value changes are decided by decide_acl and decide_kv"
                )
            }
            Change::Reap { id, of, .. } => {
                // Critical by its TTL (expiry) or by a check
                // (`deregister_critical_after`); a warning is no reason.
                let Some(cur) = group
                    .current(&id)
                    .filter(|c| c.index == of && c.status() == Health::Critical)
                else {
                    return Decision::Skip;
                };
                group.current_of_last = Some(cur);
                Decision::Make {
                    id,
                    value: None,
                    kind: EventKind::Reaped,
                }
            }
        }
    }

    fn commit_group(&self, w: &mut WriteState, key: ServiceKey, g: Group) {
        if g.events.is_empty() {
            return;
        }
        if let Some(dc) = g.new_dc {
            w.datacenters.insert(dc);
        }
        self.commit(
            w,
            key,
            g.snapshot,
            g.changes,
            g.ejections,
            g.index,
            g.events,
        );
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

    /// Builds the service's next snapshot, publishes it, then tells observers.
    #[allow(clippy::too_many_arguments)] // the parts of one service's group
    fn commit(
        &self,
        w: &mut WriteState,
        key: ServiceKey,
        current: Option<Arc<ServiceSnapshot>>,
        changes: Vec<(InstanceId, Option<Arc<Instance>>)>,
        ejections: Vec<(u64, InstanceId, bool)>,
        index: u64,
        events: Vec<Event>,
    ) {
        let (instances, rr) = match &current {
            Some(s) => (&s.instances, s.rr.clone()),
            None => (&Instances::default(), Default::default()),
        };
        let (instances, gone, added) = instances.with_changes(changes);
        let ejected = ejected_after(current.as_deref(), &ejections, &instances);
        // Replaced and removed values leave the timer map; new ones enter it.
        // Replicas of other datacenters have no timer and hold no quota:
        // their TTLs and quotas are their datacenter's.
        if key.dc == *self.local_dc() {
            let reap_ms = self.inner.config.reap_after.as_millis() as u64;
            for old in &gone {
                expiry::unschedule(w, old);
            }
            for new in &added {
                expiry::schedule(w, new, expiry::due_ms(new, reap_ms));
            }
            hold(&mut w.holdings, &gone, &added);
        }
        let services = self.inner.services.pin();
        let published = if instances.is_empty() {
            services.remove(&key);
            None
        } else {
            let settings = self.settings_of(&key);
            let snap = Arc::new(ServiceSnapshot::build(
                key.clone(),
                instances,
                index,
                rr,
                self.only_passing(),
                settings,
                ejected,
            ));
            services.insert(key.clone(), snap.clone());
            Some(snap)
        };
        drop(services);
        let batch = Batch {
            events: &events,
            services: &[(key, published)],
            acl: &[],
            instances: Some(InstanceDiff {
                gone: &gone,
                added: &added,
            }),
        };
        for o in &w.observers {
            o.applied(&batch);
        }
    }
}

/// Counts replaced and removed instances out of their owners' holdings,
/// and new ones in.
pub(super) fn hold(holdings: &mut acl::Holdings, gone: &[Arc<Instance>], added: &[Arc<Instance>]) {
    for old in gone {
        if let Some(n) = holdings.get_mut(&old.owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                holdings.remove(&old.owner);
            }
        }
    }
    for new in added {
        *holdings.entry(new.owner.clone()).or_default() += 1;
    }
}

/// The ejected values of a service after `ejections` (index and id of the
/// value, ejected or returned), of those still among `instances`: sorted.
fn ejected_after(
    current: Option<&ServiceSnapshot>,
    ejections: &[(u64, InstanceId, bool)],
    instances: &Instances,
) -> Box<[(u64, InstanceId)]> {
    let before = current.map_or(&[][..], |s| &s.ejected[..]);
    if before.is_empty() && ejections.is_empty() {
        return Box::default();
    }
    let mut set: std::collections::BTreeSet<(u64, InstanceId)> = before.iter().cloned().collect();
    for (of, id, ejected) in ejections {
        if *ejected {
            set.insert((*of, id.clone()));
        } else {
            set.remove(&(*of, id.clone()));
        }
    }
    set.into_iter()
        .filter(|(at, id)| instances.get(id).is_some_and(|i| i.index == *at))
        .collect()
}

/// The pending changes of one service within an apply.
struct Group {
    snapshot: Option<Arc<ServiceSnapshot>>,
    changes: Vec<(InstanceId, Option<Arc<Instance>>)>,
    /// Ejections and returns (index and id of the value, ejected).
    ejections: Vec<(u64, InstanceId, bool)>,
    events: Vec<Event>,
    index: u64,
    /// The value the change being decided replaces (for its event).
    current_of_last: Option<Arc<Instance>>,
    /// A datacenter a registration names, recorded once the group commits.
    new_dc: Option<Datacenter>,
}

impl Group {
    fn new(snapshot: Option<Arc<ServiceSnapshot>>) -> Self {
        Self {
            snapshot,
            changes: Vec::new(),
            ejections: Vec::new(),
            events: Vec::new(),
            index: 0,
            current_of_last: None,
            new_dc: None,
        }
    }

    /// The instance's value with this group's earlier changes applied.
    fn current(&self, id: &InstanceId) -> Option<Arc<Instance>> {
        if let Some((_, v)) = self.changes.iter().rev().find(|(i, _)| i == id) {
            return v.clone();
        }
        self.snapshot.as_ref()?.instances.get(id).cloned()
    }

    /// Whether the instance value of index `of` is ejected, with this
    /// group's earlier ejections and returns.
    fn is_ejected(&self, of: u64, id: &InstanceId) -> bool {
        if let Some((_, _, e)) = self
            .ejections
            .iter()
            .rev()
            .find(|(i, at, _)| *i == of && at == id)
        {
            return *e;
        }
        self.snapshot.as_ref().is_some_and(|s| {
            s.ejected
                .binary_search_by(|(at, i)| (*at, i).cmp(&(of, id)))
                .is_ok()
        })
    }

    /// The service's shared copy of `version`, if an instance runs it.
    fn version(&self, version: &str) -> Option<Version> {
        let pending = self
            .changes
            .iter()
            .filter_map(|(_, v)| v.as_ref())
            .find(|i| i.version == version);
        match pending {
            Some(i) => Some(i.version.clone()),
            None => self.snapshot.as_ref()?.version(version).cloned(),
        }
    }
}

enum Decision {
    Make {
        id: InstanceId,
        value: Option<Arc<Instance>>,
        kind: EventKind,
    },
    /// A conditional change whose condition no longer holds (or a check).
    Skip,
    Refuse(RegistryError),
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
    pending: &[(InstanceId, Option<Arc<Instance>>)],
) -> Result<(), RegistryError> {
    let current = snap
        .instances
        .values()
        .chain(pending.iter().filter_map(|(_, v)| v.as_ref()));
    for inst in current {
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

/// The registry unit tests start from: datacenter `dc1`, reaped 60 s
/// after turning critical, its clock started at `now`.
#[cfg(test)]
pub(crate) fn test_registry(now: Instant) -> Registry {
    Registry::new(
        RegistryConfig {
            local_dc: Datacenter::new("dc1").unwrap(),
            reap_after: Duration::from_secs(60),
        },
        now,
    )
}

#[cfg(test)]
mod tests;
