//! Applying what a shared store holds: the etcd log's way in.
//!
//! On a shared log the proposer decides a change against its own state and
//! the store commits the resulting values (conditional writes compare
//! revisions there). Every node, the proposer included, then learns the
//! committed values from the store's watch and mirrors them here, at the
//! store's revision: nothing is decided again, so every node that follows
//! the store holds the same values, whatever raced (ADR 0005).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::super::acl::{AclKey, AclObject};
use super::super::change::{AclEvent, Actor, Event, EventKind, Origin};
use super::super::labels::InstanceId;
use super::super::model::{Health, Instance, Version};
use super::{MAX_INDEX, Registry, RegistryError, Restored, ServiceKey};

/// One key of a shared store as it now is.
#[derive(Debug)]
pub enum Mirrored {
    /// An instance's value (`None`: the key was deleted).
    Instance {
        key: ServiceKey,
        id: InstanceId,
        value: Option<Restored>,
    },
    /// An access-control object (`None`: deleted).
    Acl {
        key: AclKey,
        value: Option<AclObject>,
    },
}

impl Registry {
    /// Makes the registry hold `items`, all committed at `index` (one store
    /// revision: several keys may share it), and tells observers. What
    /// event each instance change is (registered, critical, passing,
    /// deregistered, reaped) is read from the values before and after: a
    /// removal of a critical instance is a reap. New values get a full TTL
    /// from `now` (a critical one keeps its deadline). Returns how many
    /// changes were made.
    pub fn apply_mirrored(
        &self,
        index: u64,
        items: Vec<Mirrored>,
        now: Instant,
    ) -> Result<usize, RegistryError> {
        if index > MAX_INDEX {
            return Err(RegistryError::IndexOutOfRange(index));
        }
        let mut w = self.lock();
        let last = self.index();
        if index <= last {
            return Err(RegistryError::IndexOrder { index, last });
        }
        let now_ms = self.ms(now);
        let mut by_service: BTreeMap<ServiceKey, Vec<(InstanceId, Option<Restored>)>> =
            BTreeMap::new();
        let mut acl = Vec::new();
        for item in items {
            match item {
                Mirrored::Instance { key, id, value } => {
                    by_service.entry(key).or_default().push((id, value))
                }
                Mirrored::Acl { key, value } => acl.push((key, value)),
            }
        }
        self.inner.index.store(index, Ordering::Release);
        let mut made = 0;
        for (key, items) in by_service {
            let current = self.service(&key);
            let mut changes: Vec<(InstanceId, Option<Arc<Instance>>)> = Vec::new();
            let mut events = Vec::new();
            for (id, value) in items {
                let before = changes
                    .iter()
                    .rev()
                    .find(|(i, _)| *i == id)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| current.as_ref()?.instances.get(&id).cloned());
                let (after, kind) = match value {
                    None => {
                        let Some(b) = &before else { continue };
                        // Critical by its TTL or by a check: a reap.
                        let kind = match b.status() {
                            Health::Critical => EventKind::Reaped,
                            _ => EventKind::Deregistered,
                        };
                        (None, kind)
                    }
                    Some(mut r) => {
                        let revived = matches!(&before, Some(b) if b.health != Health::Passing
                            && r.health == Health::Passing && same_spec(b, &r));
                        let version = match current
                            .as_ref()
                            .and_then(|s| s.version(&r.spec.version).cloned())
                        {
                            Some(v) => v,
                            None => Version::from(std::mem::take(&mut r.spec.version)),
                        };
                        let health = r.health;
                        let mut inst =
                            Instance::from_spec(&key, r.id, r.spec, version, health, index, 0);
                        // Check statuses are this node's own (each node runs
                        // the checks): the same checks keep theirs.
                        let mut checks_changed = false;
                        if let Some(b) = &before {
                            let specs = inst.checks.specs();
                            checks_changed = specs != b.checks.specs();
                            inst.checks = super::super::check::Checks::build(specs, &b.checks);
                        }
                        let kind = match &before {
                            Some(b)
                                if b.health == Health::Passing && health == Health::Critical =>
                            {
                                EventKind::Critical
                            }
                            Some(_) if revived => EventKind::Passing,
                            Some(b)
                                if checks_changed
                                    && b.health == health
                                    && b.port == inst.port
                                    && b.ttl() == inst.ttl()
                                    && b.version == inst.version =>
                            {
                                EventKind::ChecksChanged
                            }
                            _ => EventKind::Registered,
                        };
                        // A new value lives a full TTL from now; a new check
                        // definition keeps the heartbeat deadline, a critical
                        // value the deadline it had.
                        let deadline = match (&kind, &before) {
                            (EventKind::ChecksChanged, Some(b)) => b.deadline_ms(),
                            _ if health == Health::Passing => {
                                now_ms + inst.ttl().as_millis() as u64
                            }
                            (_, Some(b)) => b.deadline_ms(),
                            _ => now_ms,
                        };
                        inst.deadline_ms.store(deadline, Ordering::Release);
                        (Some(Arc::new(inst)), kind)
                    }
                };
                if after.is_some() {
                    w.datacenters.insert(key.dc.clone());
                }
                events.push(Event {
                    index,
                    key: key.clone(),
                    id: id.clone(),
                    kind,
                    instance: after.clone(),
                    previous: before,
                    actor: Actor::System,
                    origin: Origin::Local,
                });
                changes.push((id, after));
            }
            if !events.is_empty() {
                made += events.len();
                self.commit(&mut w, key, current, changes, Vec::new(), index, events);
            }
        }
        let acl: Vec<AclEvent> = acl
            .into_iter()
            .filter_map(|(key, value)| {
                let previous = self.acl_object(&key);
                if previous.is_none() && value.is_none() {
                    return None;
                }
                Some(AclEvent {
                    index,
                    previous,
                    key,
                    value: value.map(|v| v.at(index)),
                    actor: Actor::System,
                    origin: Origin::Local,
                })
            })
            .collect();
        made += acl.len();
        self.commit_acl(&mut w, acl);
        Ok(made)
    }

    /// Records a heartbeat another node heard (it reached this node in
    /// that node's summary): moves the deadline of a passing instance like
    /// [`Registry::heartbeat`], without telling this node's heartbeat sink
    /// (so summaries never echo between nodes). Unknown or critical
    /// instances are left alone: reviving is the hearing node's proposal.
    pub fn touch(&self, key: &ServiceKey, id: &InstanceId, now: Instant) -> bool {
        let Some(inst) = self.service(key).and_then(|s| s.instances.get(id).cloned()) else {
            return false;
        };
        // Its TTL health: a check's status is this node's own business.
        if inst.health != Health::Passing {
            return false;
        }
        let deadline = self.ms(now) + inst.ttl().as_millis() as u64;
        inst.deadline_ms.fetch_max(deadline, Ordering::AcqRel);
        true
    }

    /// Tells `sink` of every instance [`Registry::heartbeat`] keeps alive
    /// from now on (the etcd log's heartbeat summaries). Set once; later
    /// calls are ignored.
    pub fn set_heartbeat_sink(&self, sink: super::HeartbeatSink) {
        let _ = self.inner.heard.set(sink);
    }

    /// Applies changes that a shared log does not carry, at the current
    /// index and without moving it: the resolution of a host name
    /// ([`Change::Resolve`](super::super::change::Change::Resolve)), which
    /// every node makes for itself and which keeps the value's index.
    pub fn apply_local(
        &self,
        changes: Vec<super::super::change::Change>,
        ctx: &super::super::change::Context,
        now: Instant,
    ) -> Result<super::Applied, RegistryError> {
        let mut w = self.lock();
        let at = vec![self.index(); changes.len()];
        self.apply_locked(&mut w, changes, super::Indexes::Given(&at), ctx, now)
    }

    /// Applies changes of derived state that no log carries (outlier
    /// ejections): on one node as the next entries of the registry's own
    /// sequence ([`Registry::apply_next`]); on a shared log, whose
    /// revisions are the indexes, at the current index without moving it
    /// ([`Registry::apply_local`]).
    pub fn apply_derived(
        &self,
        changes: Vec<super::super::change::Change>,
        ctx: &super::super::change::Context,
        now: Instant,
    ) -> Result<super::Applied, RegistryError> {
        if self.follows_shared_log() {
            self.apply_local(changes, ctx, now)
        } else {
            self.apply_next(changes, ctx, now)
        }
    }

    /// Whether a shared log (etcd) feeds this registry: it is the one that
    /// sets the heartbeat sink.
    pub fn follows_shared_log(&self) -> bool {
        self.inner.heard.get().is_some()
    }

    /// What an instance change would make of the instance against the
    /// current state, without making it: the value to write (`None`: the
    /// instance is removed) and the index of the value it replaces (0:
    /// none); `Ok(None)`: nothing to do. What a proposer to a shared log
    /// writes for changes whose value it cannot build alone (a check's
    /// definition).
    #[allow(clippy::type_complexity)]
    pub fn plan_instance(
        &self,
        change: super::super::change::Change,
        ctx: &super::super::change::Context,
        now: Instant,
    ) -> Result<Option<(Option<Arc<Instance>>, u64)>, RegistryError> {
        let w = self.lock();
        let Some((key, id)) = change.target().map(|(k, i)| (k.clone(), i.clone())) else {
            return Ok(None);
        };
        let mut group = super::Group::new(self.service(&key));
        let of = group.current(&id).map_or(0, |c| c.index);
        match self.decide(&w, &mut group, change, Some(self.index() + 1), ctx, now) {
            super::Decision::Refuse(e) => Err(e),
            super::Decision::Skip => Ok(None),
            super::Decision::Make { value, .. } => Ok(Some((value, of))),
        }
    }

    /// What an access-control change would make against the current table
    /// (the objects to put, or `None` to remove, by key), without making
    /// it: what a proposer to a shared log writes.
    pub fn plan_acl(
        &self,
        change: &super::super::acl::AclChange,
    ) -> Result<Vec<(AclKey, Option<AclObject>)>, RegistryError> {
        let _w = self.lock();
        self.decide_acl(change, self.index() + 1)
    }

    /// What a key/value change would make against the current entries
    /// (like [`Registry::plan_acl`]): the entry to put, or `None` to remove.
    pub fn plan_kv(
        &self,
        change: &super::super::kv::KvChange,
    ) -> Result<Vec<(AclKey, Option<AclObject>)>, RegistryError> {
        let _w = self.lock();
        self.decide_kv(change, self.index() + 1)
    }

    /// Puts the current value of `id` back into the timer map, to be looked
    /// at again at `at`: for an expiry decision taken with [`Registry::due`]
    /// that could not be made (the shared store refused or was away).
    pub fn recheck(&self, key: &ServiceKey, id: &InstanceId, at: Instant) {
        let mut w = self.lock();
        if let Some(inst) = self.service(key).and_then(|s| s.instances.get(id).cloned()) {
            super::expiry::unschedule(&mut w, &inst);
            super::expiry::schedule(&mut w, &inst, self.ms(at));
        }
    }
}

/// Whether `r` is the value of `b` with another health (a revival).
fn same_spec(b: &Instance, r: &Restored) -> bool {
    b.port == r.spec.port && b.ttl() == r.spec.ttl && b.version.as_str() == r.spec.version
}
