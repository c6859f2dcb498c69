//! Heartbeats and expiry on the etcd log
//! (docs/adr/0009-heartbeats-and-expiry-on-etcd.md).
//!
//! - Heartbeats stay off the log: each node moves the instance's deadline
//!   in its own memory ([`Registry::heartbeat`]) and notes who beat. Once a
//!   second it writes the set of instances heard since the last time, by
//!   service, under `<prefix>/hb/<node>/`, with its lease (one write per
//!   node per second, whatever the heartbeat rate). Every node watches
//!   those keys and moves the deadlines of what the others heard
//!   ([`Registry::touch`], which never echoes into its own summary).
//! - Exactly one node decides expiry: the holder of `<prefix>/leader`,
//!   created only when absent and kept by the node's lease. Its decisions
//!   (critical, reap) are conditional on the instance's value
//!   (`mod_revision == of`) and fenced by its leadership (the leader key's
//!   create revision must still be the one it won with), so a deposed
//!   leader cannot expire anything.
//! - Deadlines lag a summary interval behind heartbeats heard elsewhere,
//!   so the leader expires [`SLACK`] late, and starts with [`SLACK`] of grace.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchOptions};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::keys::range_end;
use super::{ClusterState, EtcdLog};
use crate::core::{Datacenter, Instance, InstanceId, Outcome, ServiceKey, ServiceName};

/// The node lease's time to live: a node that stops renewing loses its
/// summaries and, if leader, its leadership after this.
pub const LEASE_TTL: i64 = 3;
/// How often summaries are written and the lease renewed.
const SUMMARY_EVERY: Duration = Duration::from_secs(1);
/// How late the leader expires, to let the summaries of the other nodes in.
pub const SLACK: Duration = Duration::from_secs(2);
/// Bytes of one summary key.
const PART_BYTES: usize = 256 * 1024;
/// Summary parts written in one transaction.
const PARTS_PER_TXN: usize = 4;
/// At most this many heartbeats are kept between two summaries.
const MAX_HEARD: usize = 4_000_000;

/// Who beat since the last summary. Cloning copies an `Arc`.
#[derive(Clone, Default)]
pub struct Heard(Arc<Mutex<Vec<Arc<Instance>>>>);

impl Heard {
    /// What the registry calls on each heartbeat.
    pub fn sink(&self) -> crate::core::HeartbeatSink {
        let heard = self.clone();
        Arc::new(move |inst| {
            let mut v = heard.0.lock().unwrap_or_else(|p| p.into_inner());
            if v.len() < MAX_HEARD {
                v.push(inst.clone());
            }
        })
    }

    fn take(&self) -> Vec<Arc<Instance>> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A summary part: instance ids by datacenter and service.
#[derive(Serialize, Deserialize, Default)]
struct Summary {
    services: Vec<(String, String, Vec<String>)>,
}

/// Encodes who beat into parts of at most [`PART_BYTES`].
fn summarize(heard: Vec<Arc<Instance>>) -> Vec<Vec<u8>> {
    let mut by: BTreeMap<(String, String), std::collections::BTreeSet<String>> = BTreeMap::new();
    for i in heard {
        by.entry((i.datacenter.to_string(), i.service.to_string()))
            .or_default()
            .insert(i.id.to_string());
    }
    let mut parts = Vec::new();
    let mut cur = Summary::default();
    let mut size = 0;
    for ((dc, svc), ids) in by {
        let mut list = Vec::new();
        for id in ids {
            size += id.len() + 2;
            list.push(id);
            if size > PART_BYTES {
                cur.services
                    .push((dc.clone(), svc.clone(), std::mem::take(&mut list)));
                parts.push(postcard::to_allocvec(&std::mem::take(&mut cur)).unwrap_or_default());
                size = 0;
            }
        }
        if !list.is_empty() {
            size += dc.len() + svc.len();
            cur.services.push((dc, svc, list));
        }
    }
    if !cur.services.is_empty() {
        parts.push(postcard::to_allocvec(&cur).unwrap_or_default());
    }
    parts
}

/// Moves the deadlines of what another node heard.
fn merge(log: &EtcdLog, bytes: &[u8]) {
    let Ok(s) = postcard::from_bytes::<Summary>(bytes) else {
        return;
    };
    let now = tokio::time::Instant::now().into_std();
    for (dc, svc, ids) in s.services {
        let (Ok(dc), Ok(svc)) = (Datacenter::new(&dc), ServiceName::new(&svc)) else {
            continue;
        };
        let key = ServiceKey::new(dc, svc);
        for id in ids {
            if let Ok(id) = InstanceId::new(&id) {
                log.inner.registry.touch(&key, &id, now);
            }
        }
    }
}

/// The node's lease, summaries, the election and the leader's expiry, until `stop`.
pub async fn run(log: EtcdLog, stop: CancellationToken) {
    let client = tokio::select! {
        _ = stop.cancelled() => return,
        c = log.client() => match c { Some(c) => c, None => return },
    };
    tokio::spawn(watch_summaries(log.clone(), client.clone(), stop.clone()));
    while !stop.is_cancelled() {
        if let Err(e) = with_lease(&log, &client, &stop).await {
            log.set_fence(None);
            if !matches!(*log.inner.state.borrow(), ClusterState::CatchingUp) {
                log.set_state(ClusterState::ReadOnly(e.to_string()));
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(SUMMARY_EVERY) => {}
            }
        }
    }
    log.set_fence(None);
}

/// One lease's life: renew it, write summaries, campaign, and expire while leader.
async fn with_lease(
    log: &EtcdLog,
    client: &Client,
    stop: &CancellationToken,
) -> Result<(), etcd_client::Error> {
    let timeout = log.inner.settings.timeout;
    let mut c = client.clone();
    let grant = tokio::time::timeout(timeout, c.lease_grant(LEASE_TTL, None))
        .await
        .map_err(|_| etcd_client::Error::InvalidArgs("lease grant timed out".into()))??;
    let lease = grant.id();
    let (mut keeper, mut answers) = c.lease_keep_alive(lease).await?;
    let keys = log.inner.keys.clone();
    let node = log.inner.settings.node.clone();
    let mut renewed = Instant::now();
    let mut leader_since: Option<Instant> = None;
    let mut tick = tokio::time::interval(SUMMARY_EVERY);
    let mut expire = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = c.lease_revoke(lease).await;
                return Ok(());
            }
            _ = expire.tick() => {
                if let Some(since) = leader_since
                    && since.elapsed() >= SLACK
                {
                    expire_due(log).await;
                }
            }
            _ = tick.tick() => {
                // Renew; a lease not renewed for most of its life is given up
                // here before etcd drops it (no decision on a lost lease).
                let renew = async {
                    keeper.keep_alive().await?;
                    answers.message().await
                };
                match tokio::time::timeout(SUMMARY_EVERY, renew).await {
                    Ok(Ok(Some(a))) if a.ttl() > 0 => renewed = Instant::now(),
                    Ok(Ok(_)) => return Err(etcd_client::Error::InvalidArgs("the lease expired".into())),
                    Ok(Err(_)) => {
                        // The stream broke (its member went away): a new one
                        // on the same lease, through another member.
                        if let Ok(Ok((k, a))) =
                            tokio::time::timeout(SUMMARY_EVERY, c.lease_keep_alive(lease)).await
                        {
                            keeper = k;
                            answers = a;
                        }
                    }
                    Err(_) => {}
                }
                if renewed.elapsed() > Duration::from_secs(LEASE_TTL as u64) * 2 / 3 {
                    log.set_fence(None);
                    leader_since = None;
                }
                if renewed.elapsed() > Duration::from_secs(LEASE_TTL as u64) {
                    return Err(etcd_client::Error::InvalidArgs("cannot renew the lease".into()));
                }
                // The summary of who beat here since the last one.
                let parts = summarize(log.inner.heard.take());
                let mut ops: Vec<TxnOp> = parts
                    .into_iter()
                    .enumerate()
                    .map(|(n, v)| {
                        TxnOp::put(keys.heartbeat_part(&node, n), v, Some(PutOptions::new().with_lease(lease)))
                    })
                    .collect();
                let count = ops.len();
                if count > 0 {
                    let stale = keys.heartbeat_part(&node, count);
                    ops.push(TxnOp::delete(
                        stale,
                        Some(etcd_client::DeleteOptions::new().with_range(range_end(&keys.heartbeat_node(&node)))),
                    ));
                }
                // And a try for leadership while there is none.
                let campaign = leader_since.is_none();
                let mut kv = c.kv_client();
                // A few parts per transaction, within etcd's request limit
                // (1.5 MiB by default); the stale-part removal goes last.
                while !ops.is_empty() {
                    let rest = ops.split_off(ops.len().min(PARTS_PER_TXN));
                    let chunk = std::mem::replace(&mut ops, rest);
                    let r = tokio::time::timeout(timeout, kv.txn(Txn::new().and_then(chunk))).await;
                    match r {
                        Ok(Ok(_)) => log.note_reachable(),
                        Ok(Err(e)) => {
                            log.set_state(ClusterState::ReadOnly(e.to_string()));
                            break;
                        }
                        Err(_) => {
                            log.set_state(ClusterState::ReadOnly("no answer within store_timeout".into()));
                            break;
                        }
                    }
                }
                if campaign {
                    let key = keys.leader();
                    let txn = Txn::new()
                        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(key.clone(), node.clone(), Some(PutOptions::new().with_lease(lease)))])
                        .or_else([TxnOp::get(key.clone(), None)]);
                    match tokio::time::timeout(timeout, kv.txn(txn)).await {
                        Ok(Ok(r)) => {
                            log.note_reachable();
                            // Won now, or still held under this node's lease
                            // (it stepped back while renewals were slow).
                            let won = if r.succeeded() {
                                Some(r.header().map_or(0, |h| h.revision()))
                            } else {
                                r.op_responses().into_iter().find_map(|o| match o {
                                    etcd_client::TxnOpResponse::Get(g) => g
                                        .kvs()
                                        .first()
                                        .filter(|kv| kv.lease() == lease && kv.value() == node.as_bytes())
                                        .map(|kv| kv.create_revision()),
                                    _ => None,
                                })
                            };
                            if let Some(rev) = won {
                                tracing::info!(node = %node, revision = rev, "this node decides expiry now");
                                log.set_fence(Some((key, rev)));
                                leader_since = Some(Instant::now());
                            }
                        }
                        Ok(Err(e)) => log.set_state(ClusterState::ReadOnly(e.to_string())),
                        Err(_) => log.set_state(ClusterState::ReadOnly("no answer within store_timeout".into())),
                    }
                }
            }
        }
    }
}

/// The leader's round: propose what is due (late by [`SLACK`]), and look
/// again at what could not be decided.
async fn expire_due(log: &EtcdLog) {
    let now = tokio::time::Instant::now().into_std();
    let Some(at) = now.checked_sub(SLACK) else {
        return;
    };
    let due = log.inner.registry.due(at);
    if due.is_empty() {
        return;
    }
    let targets: Vec<(ServiceKey, InstanceId)> = due
        .iter()
        .filter_map(|c| c.target().map(|(k, i)| (k.clone(), i.clone())))
        .collect();
    let again = now + SUMMARY_EVERY;
    let retry = |log: &EtcdLog, which: &[(ServiceKey, InstanceId)]| {
        for (k, i) in which {
            log.inner.registry.recheck(k, i, again);
        }
    };
    // One proposal per decision: each is its own nested transaction.
    let mut pending = Vec::new();
    for change in due {
        let log = log.clone();
        pending.push(tokio::spawn(async move {
            log.propose_fenced(vec![change]).await
        }));
    }
    let mut lost_fence = false;
    for (n, p) in pending.into_iter().enumerate() {
        let made = match p.await {
            Ok(Ok(applied)) => applied
                .outcomes
                .iter()
                .any(|(_, o)| matches!(o, Outcome::Applied(_))),
            Ok(Err(_)) | Err(_) => false,
        };
        if !made {
            retry(log, &targets[n..=n]);
            lost_fence = true;
        }
    }
    if lost_fence {
        log.check_fence().await;
    }
}

/// Applies the summaries other nodes write, until `stop`.
async fn watch_summaries(log: EtcdLog, client: Client, stop: CancellationToken) {
    let keys = log.inner.keys.clone();
    let own = log.inner.settings.node.clone();
    loop {
        let mut wc = client
            .watch_client()
            .max_decoding_message_size(super::MAX_MESSAGE);
        let opts = WatchOptions::new().with_range(range_end(&keys.heartbeats()));
        if let Ok(mut stream) = wc.watch(keys.heartbeats(), Some(opts)).await {
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => return,
                    m = stream.message() => m,
                };
                let Ok(Some(resp)) = msg else { break };
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    if ev.event_type() != EventType::Put {
                        continue;
                    }
                    let key = String::from_utf8_lossy(kv.key());
                    if keys.heartbeat_owner(&key) == Some(own.as_str()) {
                        continue;
                    }
                    merge(&log, kv.value());
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
    }
}
