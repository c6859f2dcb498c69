//! The journal: follows every registry change into the [`Store`], with group
//! commit, and tells waiting API requests when their change is durable.
//!
//! [`Journal`] is a registry [`Observer`]: under the registry's write lock it
//! only pushes the change onto a queue (so the queue is in index order). One
//! writer thread takes everything queued, encodes it, and commits it as one
//! batch: one fsync for all the changes that arrived while the previous batch
//! was being written. It then publishes, on a `watch` channel, the index up
//! to which every change is settled and the ranges that failed.
//!
//! When a commit fails, that batch and everything queued behind it fail
//! together: API changes (registrations, deregistrations, revivals) are
//! rolled back in the registry, unless a later change of the same instance
//! came in meanwhile, and their requests are answered 503; expiry changes
//! and roll-backs are queued again (memory is right, the disk must follow).
//! The store is then reopened (never fsync again on a descriptor whose fsync
//! failed). What the failed batch wrote may or may not be on disk, so its
//! records are deleted by a later batch; until then, the highest index of an
//! instance wins at start-up.
//!
//! Seams: [`durable`] (what waiting requests are told), [`load`] (reading
//! the store back at start-up), [`writer`] (the group-commit thread and
//! what it does when a commit fails).

mod durable;
mod load;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;

use super::{Store, StoreError, codec, record_key};
use crate::core::{
    AclKey, AclObject, Actor, Batch, EventKind, Instance, InstanceId, Observer, Registry,
    ServiceKey,
};
use crate::telemetry::LogEvery;

pub use durable::Durable;
use durable::Progress;
pub use load::LoadReport;
use writer::Writer;

/// Records decoded per hand-over at start-up.
const LOAD_CHUNK: usize = 4096;
/// How many failed ranges are remembered for requests still to look them up.
const FAILURES_KEPT: usize = 4096;
/// Bounds of the wait for a batch to fill up to the size of the last one
/// (the last commit's time, within these).
const GROUP_WAIT_MIN: Duration = Duration::from_micros(500);
const GROUP_WAIT_MAX: Duration = Duration::from_millis(1);
/// Retry pace for background changes (expiry) while the store is failing.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// At most one line per this long about a failing store, saying how many
/// more failures it stands for (a Redis outage fails every request).
const OUTAGE_LOG_EVERY: Duration = Duration::from_secs(10);

/// What a change is about: an instance, or an access-control object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Who {
    Instance(ServiceKey, InstanceId),
    Acl(AclKey),
}

/// A stored value.
#[derive(Clone, Debug)]
enum Value {
    Instance(Arc<Instance>),
    Acl(AclObject),
}

impl Value {
    /// The store key of the value (its change index).
    fn key(&self) -> u64 {
        match self {
            Value::Instance(i) => record_key(i),
            Value::Acl(o) => o.index(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            Value::Instance(i) => codec::encode(i),
            Value::Acl(o) => codec::encode_acl(o),
        }
    }
}

/// One queued change.
#[derive(Clone)]
struct Entry {
    index: u64,
    who: Who,
    /// The value to store, under its [`record_key`].
    put: Option<Value>,
    /// The record key of the stored value this change replaces, to delete.
    delete: Option<u64>,
    /// The value to roll back to when the change fails (API changes only).
    previous: Option<Value>,
    /// An API change: rolled back on failure. Others are written again.
    revertible: bool,
    /// What the audit log records of it.
    action: &'static str,
    actor: Actor,
}

#[derive(Default)]
struct Queue {
    entries: Vec<Entry>,
    /// Records to delete that no live value uses (left by failed batches,
    /// or older values found at start-up).
    cleanup: Vec<u64>,
    /// Index of the latest queued change of each instance not yet settled.
    latest: HashMap<Who, u64>,
    /// The highest index of a change with nothing to store (a host name's
    /// resolution, [`EventKind::Resolved`]) not yet settled: settled with the
    /// next batch, whose commit records it as the last index so that no
    /// index is handed out twice after a restart. Such changes are not
    /// instances' changes here: a failed registration is still undone when
    /// a resolution of it came after.
    passed: Option<u64>,
    closing: bool,
    /// Wake the writer once this many changes are queued (`usize::MAX`
    /// while it commits: it looks at the queue again when it is done).
    want: usize,
}

impl Queue {
    /// How many changes wait for the writer.
    fn pending(&self) -> usize {
        self.entries.len() + usize::from(self.passed.is_some())
    }
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    progress: watch::Sender<Progress>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Follows the registry into a store. Dropping it (or [`Journal::close`])
/// writes what is queued and stops the writer.
pub struct Journal {
    shared: Arc<Shared>,
    metrics: crate::telemetry::metrics::StoreMetrics,
    writer: Mutex<Option<JoinHandle<()>>>,
    durable: Durable,
}

/// The registry side: queues changes under the registry's lock.
struct Follower(Arc<Shared>);

impl Observer for Follower {
    fn applied(&self, batch: &Batch<'_>) {
        if batch.events.is_empty() && batch.acl.is_empty() {
            return;
        }
        let mut q = self.0.lock();
        for e in batch.events {
            if !e.kind.is_stored() || e.origin != crate::core::Origin::Local {
                // Resolved addresses, check statuses and ejections are not
                // stored (Change::Resolve, Change::CheckStatus and
                // Change::Eject say why). Replicas of other datacenters are
                // kept by the federation's replica files, not journaled as
                // local registrations.
                q.passed = Some(q.passed.map_or(e.index, |p| p.max(e.index)));
                continue;
            }
            let who = Who::Instance(e.key.clone(), e.id.clone());
            let put = e.instance.clone();
            let put_key = put.as_deref().map(record_key);
            let revertible = matches!(
                e.kind,
                EventKind::Registered
                    | EventKind::Deregistered
                    | EventKind::Passing
                    | EventKind::ChecksChanged
            );
            q.latest.insert(who.clone(), e.index);
            q.entries.push(Entry {
                index: e.index,
                who,
                put: put.map(Value::Instance),
                delete: e
                    .previous
                    .as_ref()
                    .map(|p| record_key(p))
                    .filter(|k| Some(*k) != put_key),
                previous: if revertible {
                    e.previous.clone().map(Value::Instance)
                } else {
                    None
                },
                revertible,
                action: e.kind.as_str(),
                actor: e.actor.clone(),
            });
        }
        for e in batch.acl {
            let who = Who::Acl(e.key.clone());
            let put_key = e.value.as_ref().map(AclObject::index);
            // An undo (by the system) is written again on failure, like expiry.
            let revertible = e.actor != Actor::System;
            q.latest.insert(who.clone(), e.index);
            q.entries.push(Entry {
                index: e.index,
                who,
                put: e.value.clone().map(Value::Acl),
                delete: e
                    .previous
                    .as_ref()
                    .map(AclObject::index)
                    .filter(|k| Some(*k) != put_key),
                previous: if revertible {
                    e.previous.clone().map(Value::Acl)
                } else {
                    None
                },
                revertible,
                action: match (&e.key, e.value.is_some()) {
                    (AclKey::Kv(_), true) => "kv.put",
                    (AclKey::Kv(_), false) => "kv.delete",
                    (_, true) => "acl.put",
                    (_, false) => "acl.delete",
                },
                actor: e.actor.clone(),
            });
        }
        let wake = q.pending() >= q.want;
        drop(q);
        if wake {
            self.0.wake.notify_one();
        }
    }
}

impl Journal {
    /// Loads what `store` holds into `registry` (which should be empty and
    /// already have its other observers, so DNS is built once), then follows
    /// every later change of the registry into the store. Restored instances
    /// get a full TTL from `now`.
    ///
    /// With `audit`, every change a client made (not Maxine's own expiry)
    /// is recorded there before its batch is committed, fsynced in the same
    /// group commit, so no change is acknowledged without its record.
    pub fn start(
        mut store: Box<dyn Store>,
        registry: &Registry,
        now: std::time::Instant,
        audit: Option<crate::audit::AuditLog>,
    ) -> Result<(Self, LoadReport), StoreError> {
        let (report, superseded) = load::load(&mut store, registry, now)?;
        let settled = registry.index();
        let (tx, rx) = watch::channel(Progress {
            settled,
            ..Progress::default()
        });
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                cleanup: superseded,
                ..Queue::default()
            }),
            wake: Condvar::new(),
            progress: tx,
        });
        registry.subscribe(Arc::new(Follower(shared.clone())));
        let mut writer = Writer {
            shared: shared.clone(),
            store,
            audit,
            registry: registry.clone(),
            last_index: settled,
            broken: false,
            backoff: BACKOFF_MIN,
            last_try: false,
            last_batch: 0,
            last_commit: Duration::ZERO,
            outage_log: LogEvery::new(OUTAGE_LOG_EVERY),
            rollback_log: LogEvery::new(OUTAGE_LOG_EVERY),
            metrics: crate::telemetry::metrics::StoreMetrics::default(),
        };
        let metrics = writer.metrics.clone();
        let handle = std::thread::Builder::new()
            .name("maxine-store".into())
            .spawn(move || {
                let shared = writer.shared.clone();
                let run = std::panic::AssertUnwindSafe(|| writer.run());
                if std::panic::catch_unwind(run).is_err() {
                    // Fail every waiting and later write instead of hanging them.
                    tracing::error!("the store writer panicked: changes are no longer saved");
                    shared.progress.send_modify(|p| p.stopped = true);
                }
            })
            .map_err(|e| StoreError::Io(format!("cannot start the store writer: {e}")))?;
        Ok((
            Self {
                shared,
                metrics,
                writer: Mutex::new(Some(handle)),
                durable: Durable { rx },
            },
            report,
        ))
    }

    /// The writer's commit metrics (to export).
    pub fn metrics(&self) -> &crate::telemetry::metrics::StoreMetrics {
        &self.metrics
    }

    /// The handle API requests wait on.
    pub fn durable(&self) -> Durable {
        self.durable.clone()
    }

    /// Writes everything queued, then stops the writer and closes the store.
    /// Blocks; call it after the API has stopped taking requests.
    pub fn close(&self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_all();
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle
            && h.join().is_err()
        {
            tracing::error!("the store writer panicked");
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}
