//! The registry and its names: what Maxine knows and how it is asked.
//!
//! Owns: the model (datacenter -> service -> instances), the
//! access-control objects ([`acl`]: policies, tokens; what they allow is
//! decided in `crate::policy`), validated names
//! ([`labels`]), the DNS naming grammar ([`naming`]), the one change type
//! and its context ([`change`]), the state machine that applies changes in
//! log order ([`registry`]), and the answer plans that every front end
//! encodes ([`plan`]).
//! Must not import: any other Maxine module, or anything that does I/O
//! (hickory, axum, tokio, sockets, files). Time enters as a `now` parameter.

pub mod acl;
pub mod blacklist;
pub mod change;
pub mod check;
pub mod failover;
pub mod intention;
pub mod kv;
pub mod labels;
pub mod model;
pub mod naming;
pub mod outlier;
pub mod plan;
pub mod registry;
pub mod strategy;
pub mod tsig;

pub use acl::{
    ANONYMOUS, Access, AclChange, AclError, AclKey, AclObject, Bootstrap, Owner, Policy, Rules,
    Token, User,
};
pub use blacklist::{BlacklistEntry, BlacklistTarget};
pub use change::{
    AclEvent, Actor, Batch, Change, Context, Durability, Entry, Event, EventKind, InstanceDiff,
    Observer, Origin, Outcome,
};
pub use check::{Check, CheckEntry, CheckKind, CheckResult, CheckSpec, Checks};
pub use failover::FailoverPolicy;
pub use intention::{Cidr, CidrTable, DnsClient, Intention, IntentionAction, Side};
pub use kv::{KvChange, KvEntry, KvKey};
pub use labels::{CheckName, Datacenter, InstanceId, NameError, ServiceName, VersionSelector};
pub use model::{
    Address, CompatFields, Health, HostAddress, Instance, InstanceSpec, Metadata, ModelError,
    Resolution, Resolved, Tags, Text, Version,
};
pub use naming::NameTarget;
pub use plan::{
    AskerClass, Balance, ClientSubnet, Plan, Query, QueryContext, RemoteTier, Selection, Tier,
    Transport,
};
pub use registry::{
    AclRevert, Applied, FastHash, Heartbeat, HeartbeatSink, MAX_INDEX, Mirrored, Registry,
    RegistryConfig, RegistryError, RestoreReport, Restored, Restorer, Revert, SelfPreservation,
    ServiceKey, ServiceSnapshot,
};
pub use strategy::{Balancing, ClientZones, ServiceConfig, Settings, Strategy};
pub use tsig::TsigKey;
