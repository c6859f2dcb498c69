//! The audit log on the etcd log: each node records the changes it
//! proposed (with their actor and client), once etcd committed them and
//! before the client is answered, so every change appears once, in the
//! audit log of the node that took it. Records of concurrent proposals
//! share one append (one fsync), like the journal's group commit.

use tokio::sync::{mpsc, oneshot};

use crate::audit::{AuditLog, Record};
use crate::core::{Change, Context, Outcome};

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

    /// Records `change`, committed at `index` with `outcome`, and waits
    /// until it is written. Maxine's own expiry is not recorded (as on one
    /// node); access-control changes always are.
    pub async fn record(&self, change: &Change, ctx: &Context, index: u64, outcome: &Outcome) {
        let Some(record) = record_of(change, ctx, index, outcome) else {
            return;
        };
        let (done, wait) = oneshot::channel();
        if self.tx.send((vec![record], done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

fn record_of(change: &Change, ctx: &Context, index: u64, outcome: &Outcome) -> Option<Record> {
    let system = ctx.actor == crate::core::Actor::System;
    let (action, resource) = match change {
        Change::Acl(_) => {
            let Outcome::Acl(obj) = outcome else {
                return None;
            };
            let (action, key) = match (obj, change) {
                (Some(o), _) => ("acl.put", o.key().to_string()),
                (None, Change::Acl(crate::core::AclChange::Delete(k))) => {
                    ("acl.delete", k.to_string())
                }
                _ => return None,
            };
            (action, key)
        }
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
        time_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        index: Some(index),
        actor: ctx.actor.name(),
        client: ctx.actor.client().map(|c| c.to_string()),
        action: action.to_string(),
        resource,
        outcome: "ok".into(),
        detail: None,
    })
}
