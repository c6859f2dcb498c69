//! The one change type and what travels with it.
//!
//! Every write to the registry is a [`Change`], proposed to a log (see
//! `store::Log`), given its index there, and applied by
//! [`Registry::apply`](super::Registry::apply) in index order on every node
//! that follows the log, the proposer included. What happened is published
//! as [`Event`]s, which carry the change's index, its actor and its origin.
//!
//! Room for what comes next: service settings, policy objects (tokens,
//! policies, intentions, blacklists), key/value entries and datacenters
//! replicated from peers become new variants of [`Change`] and new
//! [`EventKind`]s; every variant is applied by the same `apply`, journaled by
//! the same log and delivered by the same feed.

use std::net::IpAddr;
use std::sync::Arc;

use super::acl::{AclChange, AclKey, AclObject, Owner};
use super::check::{Check, CheckSpec};
use super::labels::{CheckName, Datacenter, InstanceId};
use super::model::{Health, HostAddress, Instance, InstanceSpec};
use super::registry::{ServiceKey, ServiceSnapshot};

/// One change to the registry, before it has an index.
#[derive(Clone, Debug)]
pub enum Change {
    /// Registers or replaces an instance: passing, with a full TTL from the
    /// time it is applied.
    Register {
        key: ServiceKey,
        id: InstanceId,
        spec: InstanceSpec,
    },
    /// Removes an instance on request.
    Deregister { key: ServiceKey, id: InstanceId },
    /// Moves an instance's health. Conditional: applied only while the
    /// instance's current value is still the one of index `of` (so that a
    /// decision taken on an older value, such as an expiry racing a
    /// re-registration, is dropped rather than applied to a newer one).
    SetHealth {
        key: ServiceKey,
        id: InstanceId,
        health: Health,
        of: u64,
    },
    /// Removes an instance critical for longer than the reap time.
    /// Conditional on the value of index `of`, like [`Change::SetHealth`].
    Reap {
        key: ServiceKey,
        id: InstanceId,
        of: u64,
    },
    /// Gives an instance registered by host name what the name resolved to
    /// (`host`: the name with its new resolution, one value shared by every
    /// instance of that name). Conditional on the value of index `of`, like
    /// [`Change::SetHealth`], and on the instance still having that host
    /// name; the value keeps its index (see [`Instance::index`]).
    ///
    /// Not journaled: the resolved addresses are not user data, they follow
    /// from the name and the resolver's answers, and after a restart every
    /// host name is resolved again (answers from before would be stale by
    /// then anyway). Only the change's index is written, so that indexes are
    /// never handed out twice.
    Resolve {
        key: ServiceKey,
        id: InstanceId,
        host: HostAddress,
        of: u64,
    },
    /// Moves one health check of an instance to `status`, as the health
    /// driver decided after the check's thresholds. Conditional on the
    /// value of index `of`, like [`Change::SetHealth`], and on the instance
    /// still having that check (`check`: the very definition, so a result
    /// of a replaced definition is dropped); a status it already has is
    /// no change. The value keeps its index, as with [`Change::Resolve`].
    ///
    /// Not journaled, like [`Change::Resolve`]: a check's status is derived
    /// from its runs, and after a restart every check runs again (checks
    /// start passing, so answers stay as they were until a check says
    /// otherwise). Only the index is written, so that indexes are never
    /// handed out twice.
    CheckStatus {
        key: ServiceKey,
        id: InstanceId,
        check: Arc<Check>,
        status: Health,
        of: u64,
    },
    /// Defines (`Some`: adds or replaces the check of that name) or removes
    /// (`None`: the check named `name`) one health check of an instance:
    /// a new value of the instance, journaled like a registration, with its
    /// health and heartbeat deadline kept.
    SetCheck {
        key: ServiceKey,
        id: InstanceId,
        name: CheckName,
        spec: Option<Box<CheckSpec>>,
    },
    /// Ejects an instance from answers (`ejected`) or returns it from an
    /// ejection, as outlier detection decided from reported outcomes.
    /// Conditional on the value of index `of`, like [`Change::SetHealth`];
    /// the value keeps its index, like [`Change::Resolve`].
    ///
    /// Not journaled: an ejection is derived, short-lived state (30 s to
    /// 5 min) that follows from outcomes the store never saw; after a
    /// restart every instance starts un-ejected, which errs towards
    /// answering. Only the change's index is written, so that indexes are
    /// never handed out twice.
    Eject {
        key: ServiceKey,
        id: InstanceId,
        ejected: bool,
        of: u64,
    },
    /// A change to a policy, token, sign-in user, the bootstrap mark, or a
    /// service's settings (they share the object table).
    Acl(AclChange),
    /// An instance of another datacenter as that datacenter holds it, from
    /// its change stream (`value: None`: removed there). Proposed with
    /// [`Origin::Replicated`]: never expired here (its TTL is the peer's),
    /// never counted in quotas, and not journaled (the federation's replica
    /// files keep it); only its index is written.
    Replica {
        key: ServiceKey,
        id: InstanceId,
        value: Option<Box<(InstanceSpec, Health)>>,
    },
    /// A change to the key/value store ([`super::kv`]).
    Kv(super::kv::KvChange),
}

impl Change {
    /// The service and instance the change is about (`None`: an
    /// access-control change).
    pub fn target(&self) -> Option<(&ServiceKey, &InstanceId)> {
        match self {
            Change::Register { key, id, .. }
            | Change::Deregister { key, id }
            | Change::SetHealth { key, id, .. }
            | Change::Reap { key, id, .. }
            | Change::Resolve { key, id, .. }
            | Change::Replica { key, id, .. }
            | Change::CheckStatus { key, id, .. }
            | Change::SetCheck { key, id, .. }
            | Change::Eject { key, id, .. } => Some((key, id)),
            Change::Acl(_) | Change::Kv(_) => None,
        }
    }
}

/// A change with its place in the log.
#[derive(Clone, Debug)]
pub struct Entry {
    pub index: u64,
    pub change: Change,
}

/// Who made a change: recorded on every event, for the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// Maxine itself: expiry, reaping, undoing a write the store refused.
    System,
    /// A request that carried no credential (the anonymous token).
    Anonymous { client: Option<IpAddr> },
    /// A request with an ACL token, by its accessor id.
    Token {
        accessor: Owner,
        client: Option<IpAddr>,
    },
    /// A request with a JWT from the configured identity provider.
    Jwt {
        subject: Arc<str>,
        client: Option<IpAddr>,
    },
    /// A user signed in through the Maxine-compatible sign-in.
    User {
        name: Arc<str>,
        client: Option<IpAddr>,
    },
}

impl Actor {
    /// How the audit log names the actor: `token:<accessor>`,
    /// `jwt:<subject>`, `user:<name>`, `anonymous` or `system`.
    pub fn name(&self) -> String {
        match self {
            Actor::System => "system".into(),
            Actor::Anonymous { .. } => "anonymous".into(),
            Actor::Token { accessor, .. } => format!("token:{}", accessor.as_str()),
            Actor::Jwt { subject, .. } => format!("jwt:{subject}"),
            Actor::User { name, .. } => format!("user:{name}"),
        }
    }

    /// The client address of the request, if the actor is one.
    pub fn client(&self) -> Option<IpAddr> {
        match self {
            Actor::System => None,
            Actor::Anonymous { client }
            | Actor::Token { client, .. }
            | Actor::Jwt { client, .. }
            | Actor::User { client, .. } => *client,
        }
    }

    /// Who holds the instances this actor registers: the token's accessor,
    /// `jwt:<subject>` or `user:<name>`; `None` for requests without a
    /// credential (they count against the anonymous token's quota).
    pub fn owner(&self) -> Option<Owner> {
        match self {
            Actor::Token { accessor, .. } => Some(accessor.clone()),
            Actor::Jwt { subject, .. } => Some(Owner::new(&format!("jwt:{subject}"))),
            Actor::User { name, .. } => Some(Owner::new(&format!("user:{name}"))),
            Actor::System | Actor::Anonymous { .. } => None,
        }
    }
}

/// Where a change comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Proposed on this datacenter's log.
    Local,
    /// Replicated from another datacenter's log, at that log's `index`.
    /// Such changes are applied but never expired or journaled as local
    /// TTLs (docs/adr/0005-several-nodes-and-datacenters.md).
    Replicated { dc: Datacenter, index: u64 },
}

/// What a proposer waits for before it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Applied locally; the store follows in the background (expiry).
    Applied,
    /// Applied locally and on stable storage (every API write).
    Durable,
}

/// What travels with a batch of changes.
#[derive(Clone, Debug)]
pub struct Context {
    pub actor: Actor,
    pub origin: Origin,
    pub durability: Durability,
}

impl Context {
    /// A write through the API by a client without credentials.
    pub fn anonymous(client: Option<IpAddr>) -> Self {
        Self::by(Actor::Anonymous { client })
    }

    /// A durable local write by `actor` (every API write).
    pub fn by(actor: Actor) -> Self {
        Self {
            actor,
            origin: Origin::Local,
            durability: Durability::Durable,
        }
    }

    /// A change Maxine makes itself that must be on disk before it goes on
    /// (a management token from the configuration).
    pub fn system_durable() -> Self {
        Self::by(Actor::System)
    }

    /// A change Maxine makes itself (expiry, undo).
    pub fn system() -> Self {
        Self {
            actor: Actor::System,
            origin: Origin::Local,
            durability: Durability::Applied,
        }
    }
}

/// What happened to an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Registered,
    Deregistered,
    /// Its TTL passed without a heartbeat.
    Critical,
    /// One of its health checks changed status ([`Change::CheckStatus`]):
    /// not journaled. The instance's status is in the event's value.
    Checked,
    /// A health check was defined or removed ([`Change::SetCheck`]).
    ChecksChanged,
    /// A heartbeat brought a critical instance back.
    Passing,
    /// Critical for longer than the reap time, or a check critical for
    /// longer than its `deregister_critical_after`, so removed.
    Reaped,
    /// A change that could not be made durable was undone: the instance is
    /// back to its value before that change (`instance`), or gone again.
    Reverted,
    /// Its host name resolved to other addresses, or stopped resolving
    /// ([`Change::Resolve`]): not journaled.
    Resolved,
    /// Outlier detection took it out of answers ([`Change::Eject`]): not
    /// journaled.
    Ejected,
    /// Its ejection ended: back in answers, on probation. Not journaled.
    Returned,
}

impl EventKind {
    /// Whether the change is journaled: every kind but the derived state
    /// of [`Change::Resolve`], [`Change::CheckStatus`] and [`Change::Eject`].
    pub fn is_stored(self) -> bool {
        !matches!(
            self,
            EventKind::Resolved | EventKind::Checked | EventKind::Ejected | EventKind::Returned
        )
    }

    /// The name used on the wire (event streams, the audit log).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Registered => "registered",
            EventKind::Deregistered => "deregistered",
            EventKind::Critical => "critical",
            EventKind::Passing => "passing",
            EventKind::Reaped => "reaped",
            EventKind::Reverted => "reverted",
            EventKind::Resolved => "resolved",
            EventKind::Checked => "checked",
            EventKind::ChecksChanged => "checks_changed",
            EventKind::Ejected => "ejected",
            EventKind::Returned => "returned",
        }
    }
}

/// One applied change, with its place in the index order.
#[derive(Clone, Debug)]
pub struct Event {
    pub index: u64,
    pub key: ServiceKey,
    pub id: InstanceId,
    pub kind: EventKind,
    /// The instance after the change (`None` once removed).
    pub instance: Option<Arc<Instance>>,
    /// The instance before the change (`None`: it was not registered). The
    /// journal deletes its record and the local log rolls back to it.
    pub previous: Option<Arc<Instance>>,
    pub actor: Actor,
    pub origin: Origin,
}

/// One applied access-control change.
#[derive(Clone, Debug)]
pub struct AclEvent {
    pub index: u64,
    pub key: AclKey,
    /// The object after the change (`None`: removed).
    pub value: Option<AclObject>,
    /// The object before (`None`: it did not exist).
    pub previous: Option<AclObject>,
    pub actor: Actor,
    pub origin: Origin,
}

/// The changes of one apply, and the services they touched as they now are
/// (`None`: the service has no instances left).
pub struct Batch<'a> {
    pub events: &'a [Event],
    pub services: &'a [(ServiceKey, Option<Arc<ServiceSnapshot>>)],
    /// Access-control changes (they touch no service).
    pub acl: &'a [AclEvent],
    /// For a batch of one service's changes (the one in `services`): the
    /// instance values it took out and put in, so an observer can follow
    /// the difference instead of walking the whole service. `None` where
    /// services are published whole (restore, subscribe, new settings):
    /// then only `services` says what they now hold.
    pub instances: Option<InstanceDiff<'a>>,
}

/// The instance values one service's commit removed or replaced (`gone`)
/// and the values it added (`added`); a replaced instance is in both.
#[derive(Clone, Copy)]
pub struct InstanceDiff<'a> {
    pub gone: &'a [Arc<Instance>],
    pub added: &'a [Arc<Instance>],
}

/// Something that must see every change, in order, before it is
/// acknowledged: the DNS answer cache (read-your-writes) and the change feed
/// that every other consumer reads. Called with the registry's write lock
/// held: keep it quick and never block on I/O.
pub trait Observer: Send + Sync {
    fn applied(&self, batch: &Batch<'_>);

    /// Access-control objects were loaded from storage
    /// ([`Registry::restore_acl`](super::Registry::restore_acl)): not
    /// changes, so no batch carries them; observers that derive state from
    /// the objects (DNS asker classes) read them again. Under the write
    /// lock, like [`Observer::applied`].
    fn acl_restored(&self) {}
}

/// A shared observer (one that is also reached from elsewhere, as the DNS
/// answer builder is by the failover policy).
impl<O: Observer + ?Sized> Observer for Arc<O> {
    fn applied(&self, batch: &Batch<'_>) {
        (**self).applied(batch)
    }

    fn acl_restored(&self) {
        (**self).acl_restored()
    }
}

/// What one change of an apply came to.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Applied: the instance's new value (`None`: removed).
    Applied(Option<Arc<Instance>>),
    /// A conditional change whose condition no longer held: nothing to do.
    Skipped,
    /// Refused: the change contradicts the registry (unknown instance, a
    /// name conflict). Nothing changed.
    Refused(super::registry::RegistryError),
    /// An access-control change applied: the object's new value (`None`:
    /// removed).
    Acl(Option<AclObject>),
}

impl Outcome {
    /// Whether the change was made (and took an index).
    pub fn is_made(&self) -> bool {
        matches!(self, Outcome::Applied(_) | Outcome::Acl(_))
    }
}
