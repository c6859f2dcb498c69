//! The registry and its names: what Maxine knows and how it is asked.
//!
//! Owns: the model (datacenter -> service -> instances), validated names, the
//! DNS naming grammar, change indexes and events, heartbeat expiry.
//! Must not import: any other Maxine module, or anything that does I/O
//! (hickory, axum, tokio, sockets, files). Time enters as a `now` parameter.

pub mod model;
pub mod names;
pub mod naming;
pub mod registry;

pub use model::{
    Address, CompatFields, Health, Instance, InstanceSpec, Metadata, ModelError, Tags, Text,
    Version,
};
pub use names::{Datacenter, InstanceId, NameError, ServiceName, VersionSelector};
pub use naming::NameTarget;
pub use registry::{
    Answer, Batch, Event, EventKind, FastHash, Observer, Query, Registry, RegistryConfig,
    RegistryError, RestoreReport, Restored, Restorer, Revert, ServiceKey, ServiceSnapshot,
};
