//! Group commit into etcd: proposals that arrive while transactions are in
//! flight go out together as one transaction, each proposal a nested
//! transaction with its own compares (so one failed condition fails only
//! its proposal). One etcd transaction is one Raft entry and one fsync per
//! member, however many proposals it carries: the file store's batching of
//! fsyncs, on the cluster.
//!
//! Limits: etcd refuses a transaction with more than `--max-txn-ops`
//! (128 by default) operations at one level and requests over
//! `--max-request-bytes` (1.5 MiB): a batch stays within both. One batch
//! never writes a key twice (etcd refuses that too): a proposal touching a
//! key already in the batch waits for the next one.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use etcd_client::{Compare, GetOptions, Txn, TxnOp, TxnOpResponse};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{ClusterState, EtcdLog, unavailable};
use crate::store::log::LogError;

/// Nested transactions in one batch (etcd's default `--max-txn-ops`).
const MAX_SUBS: usize = 128;
/// Bytes of values in one batch, below etcd's default request limit.
const MAX_BYTES: usize = 1024 * 1024;
/// Transactions in flight at once: while one is, the next batch fills.
///
/// One, because etcd's cost is per transaction as much as per key: on a
/// busy cluster more transactions in flight split the same proposals into
/// smaller batches, which cost etcd more and commit later (measured with
/// `benches/etcd-cluster.sh`, three nodes on one three-member cluster:
/// with 4 in flight 2.8 proposals per transaction, with one 7.2, and more
/// registrations per second; docs/adr/0012-etcd-group-commit.md). One
/// transaction carries up to [`MAX_SUBS`] proposals, so one in flight still
/// allows `MAX_SUBS / commit latency` proposals per second and node.
const IN_FLIGHT: usize = 1;

/// One proposal's transaction.
pub struct Sub {
    pub compares: Vec<Compare>,
    pub ops: Vec<TxnOp>,
    pub keys: Vec<Vec<u8>>,
    /// Read back when a compare fails.
    pub reads: Vec<String>,
    /// Bytes of the keys and values written.
    pub bytes: usize,
    /// What the audit log records once it is committed (audit.rs).
    pub audit: Option<crate::audit::Record>,
}

/// What became of a proposal's transaction.
pub struct Done {
    /// The revision of the batch.
    pub revision: u64,
    /// Its compares held and its writes are in.
    pub succeeded: bool,
    /// The revision this node must have applied before answering: the
    /// batch's when it succeeded, else that of the keys it was refused on.
    pub wait_for: u64,
}

struct Pending {
    sub: Sub,
    size: usize,
    reply: oneshot::Sender<Result<Done, LogError>>,
}

/// The queue in front of the committing task.
pub struct Batcher {
    tx: mpsc::Sender<Pending>,
    rx: Mutex<Option<mpsc::Receiver<Pending>>>,
}

impl Batcher {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel(16 * 1024);
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }

    /// Queues `sub` and waits for its batch, at most about the store timeout.
    pub async fn submit(&self, log: &EtcdLog, sub: Sub) -> Result<Done, LogError> {
        let size = sub.bytes + 256;
        let (reply, rx) = oneshot::channel();
        let timeout = log.inner.settings.timeout;
        let wait = async {
            self.tx
                .send(Pending { sub, size, reply })
                .await
                .map_err(|_| unavailable("the log is shutting down"))?;
            rx.await
                .map_err(|_| unavailable("the log is shutting down"))?
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => Err(unavailable(format!(
                "no answer from etcd within store_timeout ({}); the change may still be applied",
                humantime::format_duration(timeout)
            ))),
        }
    }
}

/// Takes queued proposals and commits them in batches until `stop`.
pub async fn run(log: EtcdLog, stop: CancellationToken) {
    let Some(mut rx) = log.inner.batcher.rx.lock().unwrap().take() else {
        return;
    };
    let client = tokio::select! {
        _ = stop.cancelled() => return,
        c = log.client() => match c { Some(c) => c, None => return },
    };
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => tokio::select! {
                _ = stop.cancelled() => return,
                p = rx.recv() => match p { Some(p) => p, None => return },
            },
        };
        // While every slot is busy, more proposals queue up for this batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut keys: HashSet<Vec<u8>> = first.sub.keys.iter().cloned().collect();
        let mut bytes = first.size;
        let mut batch = vec![first];
        while batch.len() < MAX_SUBS && bytes < MAX_BYTES {
            let Ok(p) = rx.try_recv() else { break };
            if p.sub.keys.iter().any(|k| keys.contains(k)) {
                carry = Some(p);
                break;
            }
            keys.extend(p.sub.keys.iter().cloned());
            bytes += p.size;
            batch.push(p);
        }
        let log = log.clone();
        let client = client.clone();
        tokio::spawn(commit(log, client, batch, slot));
    }
}

/// Commits `batch` as one transaction; `slot` is free again once etcd has
/// answered, while the batch's audit records are written and before its
/// proposals are answered.
async fn commit(
    log: EtcdLog,
    client: etcd_client::Client,
    batch: Vec<Pending>,
    slot: tokio::sync::OwnedSemaphorePermit,
) {
    let subs: Vec<TxnOp> = batch
        .iter()
        .map(|p| {
            let reads: Vec<TxnOp> = p
                .sub
                .reads
                .iter()
                .map(|k| TxnOp::get(k.clone(), None::<GetOptions>))
                .collect();
            TxnOp::txn(
                Txn::new()
                    .when(p.sub.compares.clone())
                    .and_then(p.sub.ops.clone())
                    .or_else(reads),
            )
        })
        .collect();
    let txn = Txn::new().and_then(subs);
    let timeout = log.inner.settings.timeout;
    let mut kv = client.kv_client();
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(timeout, kv.txn(txn)).await;
    drop(slot);
    log.inner
        .metrics
        .committed(batch.len(), started, matches!(result, Ok(Ok(_))));
    let resp = match result {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            let why = e.to_string();
            log.set_state(ClusterState::ReadOnly(why.clone()));
            for p in batch {
                let _ = p.reply.send(Err(unavailable(&why)));
            }
            return;
        }
        Err(_) => {
            log.set_state(ClusterState::ReadOnly(
                "no answer within store_timeout".into(),
            ));
            for p in batch {
                let _ = p.reply.send(Err(unavailable(format!(
                    "no answer from etcd within store_timeout ({}); the change may still be applied",
                    humantime::format_duration(timeout)
                ))));
            }
            return;
        }
    };
    log.note_reachable();
    let revision = resp.header().map_or(0, |h| h.revision()) as u64;
    let answers = resp.op_responses();
    let mut done = Vec::with_capacity(batch.len());
    let mut records = Vec::new();
    let time_ms = crate::store::unix_ms();
    for (mut p, answer) in batch.into_iter().zip(answers) {
        let this = match answer {
            TxnOpResponse::Txn(sub) if sub.succeeded() => {
                if let Some(mut r) = p.sub.audit.take() {
                    r.index = Some(revision);
                    r.time_ms = time_ms;
                    records.push(r);
                }
                Done {
                    revision,
                    succeeded: true,
                    wait_for: revision,
                }
            }
            TxnOpResponse::Txn(sub) => {
                let seen = sub
                    .op_responses()
                    .into_iter()
                    .filter_map(|r| match r {
                        TxnOpResponse::Get(g) => g.kvs().iter().map(|kv| kv.mod_revision()).max(),
                        _ => None,
                    })
                    .max()
                    .unwrap_or(0);
                Done {
                    revision,
                    succeeded: false,
                    wait_for: seen.max(0) as u64,
                }
            }
            _ => Done {
                revision,
                succeeded: false,
                wait_for: 0,
            },
        };
        done.push((p.reply, this));
    }
    if let Some(a) = log.inner.auditor.get() {
        a.write(records).await;
    }
    for (reply, this) in done {
        let _ = reply.send(Ok(this));
    }
}
