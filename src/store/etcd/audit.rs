//! The audit log on the etcd log: each node records the changes it
//! proposed (with their actor and client), once etcd committed them and
//! before the client is answered, so every change appears once, in the
//! audit log of the node that took it. The records of one etcd
//! transaction (batch.rs) are one append, and transactions that commit
//! while it is written share the next (one fsync), like the journal's
//! group commit.

use tokio::sync::{mpsc, oneshot};

use crate::audit::{AuditLog, Record};
use crate::core::{Change, Context};

/// The queue in front of the audit log's writer. Cloning copies a sender.
#[derive(Clone)]
pub struct Auditor {
    tx: mpsc::Sender<(Vec<Record>, oneshot::Sender<()>)>,
}

impl Auditor {
    /// Starts the writer task on `log`.
    pub fn start(log: AuditLog) -> Self {
        let (tx, mut rx) = mpsc::channel::<(Vec<Record>, oneshot::Sender<()>)>(4096);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                let (records, done): (Vec<Vec<Record>>, Vec<_>) = batch.into_iter().unzip();
                let log = log.clone();
                let records: Vec<Record> = records.into_iter().flatten().collect();
                let n = records.len();
                match tokio::task::spawn_blocking(move || log.append(records)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, records = n,
                        "cannot write the audit log; the changes are in etcd"),
                    Err(_) => {}
                }
                for d in done {
                    let _ = d.send(());
                }
            }
        });
        Self { tx }
    }

    /// Writes the records of one committed etcd transaction (one append,
    /// one fsync, shared with transactions whose records queued meanwhile)
    /// and waits until they are written.
    pub async fn write(&self, records: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        let (done, wait) = oneshot::channel();
        if self.tx.send((records, done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// What the audit log will record of `change` once etcd commits it
/// (index and time are set then): Maxine's own expiry is not recorded (as
/// on one node); access-control and key/value changes always are. `acl`:
/// the access-control object the change writes.
pub fn record_of(
    change: &Change,
    ctx: &Context,
    acl: Option<&crate::core::AclKey>,
) -> Option<Record> {
    let system = ctx.actor == crate::core::Actor::System;
    let (action, resource) = match change {
        Change::Acl(crate::core::AclChange::Delete(k)) => ("acl.delete", k.to_string()),
        Change::Acl(_) => ("acl.put", acl?.to_string()),
        Change::Kv(kv) => {
            let (action, key) = match kv {
                crate::core::KvChange::Put { key, .. } => ("kv.put", key),
                crate::core::KvChange::Delete { key, .. } => ("kv.delete", key),
            };
            (action, crate::core::AclKey::Kv(key.clone()).to_string())
        }
        _ if system => return None,
        Change::Resolve { .. } => return None,
        other => {
            let (key, id) = other.target()?;
            let action = match other {
                Change::Register { .. } => "registered",
                Change::Deregister { .. } => "deregistered",
                Change::SetHealth { .. } => "passing",
                Change::Reap { .. } => "reaped",
                Change::SetCheck { .. } => "checks_changed",
                _ => return None,
            };
            (
                action,
                format!(
                    "service:{}/instance:{}@{}",
                    key.service.as_str(),
                    id.as_str(),
                    key.dc.as_str()
                ),
            )
        }
    };
    Some(Record {
        time_ms: 0,
        index: None,
        actor: ctx.actor.name(),
        client: ctx.actor.client().map(|c| c.to_string()),
        action: action.to_string(),
        resource,
        outcome: "ok".into(),
        detail: None,
    })
}
