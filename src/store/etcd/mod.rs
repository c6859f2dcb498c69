//! The etcd log (`--store etcd://host:port[,host:port...]/prefix`): several
//! Maxine nodes of one datacenter share one registry kept in an etcd
//! cluster, and every node answers from its own memory
//! (docs/adr/0005-several-nodes-and-datacenters.md, docs/cluster.md).
//!
//! ```text
//!   HTTP --propose--> decide against this node's state (Registry::check, plan_acl)
//!                       |  values to write, compares (mod_revision == of, ...)
//!                       v
//!                  batcher: one etcd transaction per batch (group commit),
//!                  each proposal a nested transaction with its compares
//!                       |  revision R
//!   every node: watch <prefix>/r/ --> Registry::apply_mirrored(R, values)
//!                       |
//!   proposer answers once its own node applied R (read-your-writes)
//! ```
//!
//! Durable first, applied when the watch delivers it: a write is
//! acknowledged only after etcd committed it and this node applied it. The
//! revision of the transaction is the index of every change in it, so
//! indexes are comparable across nodes. What each node persists locally
//! (its last applied revision and a snapshot, `<data_dir>/etcd/`) lets a
//! restart answer DNS at once and then catch up ([`sync`]). Heartbeats and
//! expiry: [`expiry`] and docs/adr/0009-heartbeats-and-expiry-on-etcd.md.
//!
//! Must not import: dns, http, config (app hands over [`EtcdSettings`]).

mod audit;
mod batch;
pub mod expiry;
#[doc(hidden)]
pub mod fill;
mod keys;
mod span;
mod sync;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, TxnOp};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::core::{
    AclChange, AclError, AclKey, AclObject, Applied, Change, Context, Health, Instance, InstanceId,
    InstanceSpec, KvChange, Outcome, Registry, RegistryError, ServiceKey, ServiceSnapshot, Version,
};
use crate::events::{ChangeFeed, Subscription};

use super::codec;
use super::log::{Log, LogError, NotSaved, Proposal};
pub use keys::Keys;

/// Largest message read from etcd: a watch catching up sends up to a
/// thousand revisions at once, each up to a full batch.
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// How often a change decided on a value that moved on meanwhile is
/// decided again (a check's definition).
const RETRIES: u32 = 3;

/// How to reach the etcd cluster, and this node's part in it.
#[derive(Clone, Debug)]
pub struct EtcdSettings {
    /// `host:port` of each member.
    pub endpoints: Vec<String>,
    /// Every key Maxine writes starts with it (`/maxine`).
    pub prefix: String,
    /// `etcds://`: TLS to every member.
    pub tls: bool,
    pub user: Option<String>,
    pub password: Option<String>,
    /// PEM CA certificates the members' certificates must be signed by.
    pub ca: Option<Vec<u8>>,
    /// PEM client certificate and key, for members that ask for one.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// A write etcd has not confirmed within this fails with 503.
    pub timeout: Duration,
    /// This node's name (its heartbeat summary key; the expiry leader's value).
    pub node: String,
    /// Where the last applied revision and a snapshot are kept.
    pub state_dir: PathBuf,
}

impl EtcdSettings {
    /// For logs: the members and the prefix, never a password.
    pub fn describe(&self) -> String {
        let scheme = if self.tls { "etcds" } else { "etcd" };
        format!("{scheme}://{}{}", self.endpoints.join(","), self.prefix)
    }

    fn connect_options(&self) -> ConnectOptions {
        let mut o = ConnectOptions::new()
            .with_connect_timeout(self.timeout)
            .with_timeout(self.timeout)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        if let (Some(u), Some(p)) = (&self.user, &self.password) {
            o = o.with_user(u.clone(), p.clone());
        }
        if self.tls {
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &self.ca {
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &self.identity {
                tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
            }
            o = o.with_tls(tls);
        }
        o
    }

    fn urls(&self) -> Vec<String> {
        let scheme = if self.tls { "https" } else { "http" };
        self.endpoints
            .iter()
            .map(|e| format!("{scheme}://{e}"))
            .collect()
    }
}

/// Where a node stands with the cluster, for `/v1/ready`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterState {
    /// Loading the registry from etcd, or replaying what changed while
    /// away: DNS answers from the last local state meanwhile.
    CatchingUp,
    /// Following the cluster; writes go through.
    Serving,
    /// etcd does not answer (quorum lost, or this node is cut off): DNS
    /// and reads go on from memory, writes fail with 503.
    ReadOnly(String),
}

/// The etcd log. Cloning copies one `Arc`.
#[derive(Clone)]
pub struct EtcdLog {
    inner: Arc<Shared>,
}

struct Shared {
    registry: Registry,
    feed: ChangeFeed,
    settings: EtcdSettings,
    keys: Keys,
    /// Set once connected (connecting waits for nothing: the first use does).
    client: watch::Sender<Option<Client>>,
    /// The last revision this node applied from the watch.
    applied: watch::Sender<u64>,
    state: watch::Sender<ClusterState>,
    batcher: batch::Batcher,
    /// The expiry leader's fencing: the leader key and its create revision.
    fence: Mutex<Option<(String, i64)>>,
    /// Instances this node heard heartbeats from since its last summary.
    heard: expiry::Heard,
    /// The audit log to open at [`EtcdLog::spawn`], and its writer then.
    audit_log: Mutex<Option<crate::audit::AuditLog>>,
    auditor: std::sync::OnceLock<audit::Auditor>,
    /// Commit latency, batch size and failures of the etcd batches.
    metrics: crate::telemetry::metrics::StoreMetrics,
}

impl EtcdLog {
    /// A log over `registry` (whose changes `feed` follows), restored from
    /// this node's local snapshot if it has one: DNS answers from it at
    /// once. Nothing talks to etcd before [`EtcdLog::spawn`].
    pub fn open(
        registry: Registry,
        feed: ChangeFeed,
        settings: EtcdSettings,
    ) -> anyhow::Result<Self> {
        let keys = Keys::new(&settings.prefix);
        let restored = sync::restore_local(&registry, &settings.state_dir)?;
        let batcher = batch::Batcher::new();
        let heard = expiry::Heard::default();
        registry.set_heartbeat_sink(heard.sink());
        Ok(Self {
            inner: Arc::new(Shared {
                registry,
                feed,
                keys,
                client: watch::Sender::new(None),
                applied: watch::Sender::new(restored),
                state: watch::Sender::new(ClusterState::CatchingUp),
                batcher,
                fence: Mutex::new(None),
                heard,
                audit_log: Mutex::new(None),
                auditor: std::sync::OnceLock::new(),
                metrics: Default::default(),
                settings,
            }),
        })
    }

    /// Records the changes this node proposes in `log` (from [`EtcdLog::spawn`] on).
    pub fn with_audit(self, log: Option<crate::audit::AuditLog>) -> Self {
        *self
            .inner
            .audit_log
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = log;
        self
    }

    /// Connects, loads or catches up, and follows the cluster until
    /// `stop`: the watch, the batcher, local snapshots, heartbeat summaries
    /// and the expiry election.
    pub fn spawn(&self, tasks: &TaskTracker, stop: CancellationToken) {
        let audit = self
            .inner
            .audit_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(a) = audit {
            let _ = self.inner.auditor.set(audit::Auditor::start(a));
        }
        let log = self.clone();
        let s = stop.clone();
        tasks.spawn(async move { log.connect_loop(s).await });
        tasks.spawn(sync::follow(self.clone(), stop.clone()));
        tasks.spawn(batch::run(self.clone(), stop.clone()));
        tasks.spawn(sync::persist_loop(self.clone(), stop.clone()));
        tasks.spawn(expiry::run(self.clone(), stop));
    }

    /// The batches' metrics (exported like the file store's).
    pub fn metrics(&self) -> &crate::telemetry::metrics::StoreMetrics {
        &self.inner.metrics
    }

    /// Where this node stands (`/v1/ready`).
    pub fn cluster_state(&self) -> ClusterState {
        self.inner.state.borrow().clone()
    }

    /// Writes the local snapshot now (at shutdown).
    pub fn persist_now(&self) {
        if let Err(e) = sync::persist(self) {
            tracing::warn!(error = %e, "cannot write the local etcd snapshot");
        }
    }

    pub fn describe(&self) -> String {
        self.inner.settings.describe()
    }

    /// `store_timeout`.
    pub fn timeout(&self) -> Duration {
        self.inner.settings.timeout
    }

    async fn connect_loop(self, stop: CancellationToken) {
        let s = &self.inner.settings;
        loop {
            let attempt = Client::connect(s.urls(), Some(s.connect_options()));
            let res = tokio::select! {
                _ = stop.cancelled() => return,
                r = tokio::time::timeout(s.timeout, attempt) => r,
            };
            match res {
                Ok(Ok(client)) => {
                    self.inner.client.send_replace(Some(client));
                    return;
                }
                Ok(Err(e)) => {
                    tracing::warn!(store = %s.describe(), error = %e, "cannot connect to etcd")
                }
                Err(_) => tracing::warn!(store = %s.describe(), "connecting to etcd timed out"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// The client, once connected.
    async fn client(&self) -> Option<Client> {
        let mut rx = self.inner.client.subscribe();
        let got = rx.wait_for(|c| c.is_some()).await.ok()?;
        got.clone()
    }

    /// Waits (at most `limit`) until the node has loaded or replayed the
    /// registry; says whether it has.
    pub async fn wait_caught_up(&self, limit: Duration) -> bool {
        let mut rx = self.inner.state.subscribe();
        let done = rx.wait_for(|s| *s != ClusterState::CatchingUp);
        matches!(tokio::time::timeout(limit, done).await, Ok(Ok(_)))
    }

    fn set_state(&self, state: ClusterState) {
        let empty = self.inner.registry.index() == 0;
        self.inner.state.send_if_modified(|s| {
            // A node with nothing loaded yet stays "catching up" while etcd
            // is away: it has nothing to serve reads from.
            if *s == state
                || (empty && *s == ClusterState::CatchingUp && state != ClusterState::Serving)
            {
                return false;
            }
            match &state {
                ClusterState::ReadOnly(why) => {
                    tracing::warn!(reason = %why, "etcd is unavailable: read-only until it answers")
                }
                ClusterState::Serving => tracing::info!("following the etcd cluster"),
                ClusterState::CatchingUp => tracing::info!("catching up with the etcd cluster"),
            }
            *s = state;
            true
        });
    }

    /// A write or renewal went through: a read-only node serves again.
    fn note_reachable(&self) {
        if matches!(*self.inner.state.borrow(), ClusterState::ReadOnly(_)) {
            self.set_state(ClusterState::Serving);
        }
    }

    /// The watch has delivered what was there when it started.
    fn caught_up(&self) {
        if matches!(*self.inner.state.borrow(), ClusterState::CatchingUp) {
            self.set_state(ClusterState::Serving);
        }
    }

    fn set_fence(&self, fence: Option<(String, i64)>) {
        let mut f = self.inner.fence.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_some() && fence.is_none() {
            tracing::info!("this node no longer decides expiry");
        }
        *f = fence;
    }

    /// Drops the leadership when the leader key is no longer this node's.
    async fn check_fence(&self) {
        let Some((key, rev)) = self.inner.fence.lock().unwrap().clone() else {
            return;
        };
        let Some(mut c) = self.client().await else {
            return;
        };
        if let Ok(Ok(r)) = tokio::time::timeout(self.inner.settings.timeout, c.get(key, None)).await
            && r.kvs().first().map(|kv| kv.create_revision()) != Some(rev)
        {
            self.set_fence(None);
        }
    }

    /// Waits until this node applied `revision` (at most the store timeout).
    async fn applied(&self, revision: u64) -> Result<(), LogError> {
        let mut rx = self.inner.applied.subscribe();
        let wait = rx.wait_for(|a| *a >= revision);
        match tokio::time::timeout(self.inner.settings.timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(LogError::Unavailable(NotSaved::unconfirmed(format!(
                "etcd committed revision {revision}, but this node has not received it yet \
                 (its watch is behind or broken); the change is saved"
            )))),
        }
    }

    /// Decides `changes` against this node's state and turns them into
    /// conditional etcd writes; `fence`: the expiry leader's key and
    /// revision, which must still hold.
    fn plan(
        &self,
        changes: Vec<Change>,
        ctx: &Context,
        fence: Option<&(String, i64)>,
    ) -> Vec<Planned> {
        let reg = &self.inner.registry;
        let keys = &self.inner.keys;
        let now = tokio::time::Instant::now().into_std();
        changes
            .into_iter()
            .map(|change| {
                let mut p = Planned::new(change.clone());
                if let Some((k, rev)) = fence {
                    // Not under the mirrored range: never read back.
                    p.compares
                        .push(Compare::create_revision(k.clone(), CompareOp::Equal, *rev));
                }
                match change {
                    Change::Register { key, id, mut spec } => {
                        if let Err(e) = reg.check(
                            &Change::Register {
                                key: key.clone(),
                                id: id.clone(),
                                spec: spec.clone(),
                            },
                            ctx,
                            now,
                        ) {
                            p.result = Planned::refused(e);
                            return p;
                        }
                        spec.owner = ctx.actor.owner();
                        let (k, value) = registration(keys, &key, &id, spec);
                        p.put(k, value);
                    }
                    Change::Deregister { key, id } => {
                        let k = keys.instance(&key, &id);
                        if reg
                            .service(&key)
                            .and_then(|s| s.instances.get(&id).cloned())
                            .is_none()
                        {
                            p.result = Planned::refused(RegistryError::NotFound {
                                service: key.service.to_string(),
                                id: id.to_string(),
                            });
                            return p;
                        }
                        p.compare(
                            Compare::create_revision(k.clone(), CompareOp::Greater, 0),
                            &k,
                        );
                        p.otherwise = Some(Planned::refused(RegistryError::NotFound {
                            service: key.service.to_string(),
                            id: id.to_string(),
                        }));
                        p.delete(k);
                    }
                    Change::SetHealth {
                        key,
                        id,
                        health,
                        of,
                    } => {
                        let cur = reg
                            .service(&key)
                            .and_then(|s| s.instances.get(&id).cloned());
                        let Some(cur) = cur.filter(|c| c.index == of && c.health != health) else {
                            p.result = Some(Outcome::Skipped);
                            return p;
                        };
                        let k = keys.instance(&key, &id);
                        p.compare(
                            Compare::mod_revision(k.clone(), CompareOp::Equal, of as i64),
                            &k,
                        );
                        p.otherwise = Some(Some(Outcome::Skipped));
                        p.put(k, codec::encode(&cur.with_health(health, 0)));
                    }
                    Change::Reap { key, id, of } => {
                        let cur = reg
                            .service(&key)
                            .and_then(|s| s.instances.get(&id).cloned());
                        // Critical by its TTL or by a check (a check's
                        // `deregister_critical_after`, which every node's
                        // health driver decides on its own results).
                        if cur
                            .filter(|c| c.index == of && c.status() == Health::Critical)
                            .is_none()
                        {
                            p.result = Some(Outcome::Skipped);
                            return p;
                        }
                        // Only the expiry leader removes instances, fenced by
                        // its leadership: the others' drivers leave it to it.
                        if fence.is_none() {
                            match self.inner.fence.lock().unwrap().clone() {
                                Some((k, rev)) => {
                                    tracing::info!(service = %key.service, instance = %id,
                                        "removing an instance a check held critical (this node leads expiry)");
                                    p.compares.push(Compare::create_revision(
                                        k,
                                        CompareOp::Equal,
                                        rev,
                                    ))
                                }
                                None => {
                                    p.result = Some(Outcome::Skipped);
                                    return p;
                                }
                            }
                        }
                        let k = keys.instance(&key, &id);
                        p.compare(
                            Compare::mod_revision(k.clone(), CompareOp::Equal, of as i64),
                            &k,
                        );
                        p.otherwise = Some(Some(Outcome::Skipped));
                        p.delete(k);
                    }
                    // Resolved addresses are not user data and every node
                    // resolves host names itself: applied here only.
                    // Likewise a check's status and an ejection: each node
                    // runs the checks and sees the outcomes it is told of
                    // (docs/cluster.md).
                    // And a peer datacenter's instances: every node follows
                    // the federation's streams itself (not journaled on one
                    // node either; the replica files keep them).
                    change @ (Change::Resolve { .. }
                    | Change::CheckStatus { .. }
                    | Change::Eject { .. }
                    | Change::Replica { .. }) => {
                        p.result = Some(match reg.apply_local(vec![change], ctx, now) {
                            Ok(a) => a
                                .outcomes
                                .into_iter()
                                .next()
                                .map_or(Outcome::Skipped, |(_, o)| o),
                            Err(e) => Outcome::Refused(e),
                        });
                    }
                    // A check's definition is part of the instance's value:
                    // written like a registration, on the value it was
                    // decided on (retried on a newer one).
                    change @ Change::SetCheck { .. } => {
                        let (key, id) = change
                            .target()
                            .map(|(k, i)| (k.clone(), i.clone()))
                            .unwrap();
                        match reg.plan_instance(change, ctx, now) {
                            Err(e) => p.result = Planned::refused(e),
                            Ok(None) => p.result = Some(Outcome::Skipped),
                            Ok(Some((value, of))) => {
                                let k = keys.instance(&key, &id);
                                p.compare(
                                    Compare::mod_revision(k.clone(), CompareOp::Equal, of as i64),
                                    &k,
                                );
                                p.retry = true;
                                p.otherwise = Some(Planned::refused(RegistryError::Conflict(
                                    "the instance changed while its check was being set; try again"
                                        .into(),
                                )));
                                match value {
                                    Some(inst) => p.put(k, codec::encode(&inst)),
                                    None => p.delete(k),
                                }
                            }
                        }
                    }
                    // Compare-and-set in etcd: `cas` 0 is "the key does not
                    // exist", any other the revision that wrote it (a key/value
                    // entry's index is its mod revision).
                    Change::Kv(kv) => {
                        let made = match reg.plan_kv(&kv) {
                            Ok(made) => made,
                            Err(e) => {
                                p.result = Planned::refused(e);
                                return p;
                            }
                        };
                        let (name, cas, delete) = match &kv {
                            KvChange::Put { key, cas, .. } => (key, *cas, false),
                            KvChange::Delete { key, cas } => (key, *cas, true),
                        };
                        let k = keys.acl(&AclKey::Kv(name.clone()));
                        match cas {
                            Some(0) => p.compare(
                                Compare::create_revision(k.clone(), CompareOp::Equal, 0),
                                &k,
                            ),
                            Some(rev) => p.compare(
                                Compare::mod_revision(k.clone(), CompareOp::Equal, rev as i64),
                                &k,
                            ),
                            None if delete => p.compare(
                                Compare::create_revision(k.clone(), CompareOp::Greater, 0),
                                &k,
                            ),
                            None => {}
                        }
                        p.otherwise = Some(Planned::refused(match cas {
                            Some(want) => RegistryError::Acl(AclError::Conflict(format!(
                                "key {:?} is no longer at index {want} (cas): nothing was changed",
                                name.as_str()
                            ))),
                            None => RegistryError::Acl(AclError::NotFound(format!(
                                "key {:?}",
                                name.as_str()
                            ))),
                        }));
                        p.acl = Some(AclKey::Kv(name.clone()));
                        for (key, value) in made {
                            match value {
                                Some(obj) => p.put(keys.acl(&key), codec::encode_acl(&obj)),
                                None => p.delete(keys.acl(&key)),
                            }
                        }
                    }
                    Change::Acl(acl) => {
                        let made = match reg.plan_acl(&acl) {
                            Ok(made) => made,
                            Err(e) => {
                                p.result = Planned::refused(e);
                                return p;
                            }
                        };
                        match &acl {
                            AclChange::Bootstrap { .. } => {
                                let mark = keys.acl(&AclKey::Bootstrap);
                                p.compare(
                                    Compare::create_revision(mark.clone(), CompareOp::Equal, 0),
                                    &mark,
                                );
                                p.bootstrap = true;
                            }
                            AclChange::Delete(key) => {
                                let k = keys.acl(key);
                                p.compare(
                                    Compare::create_revision(k.clone(), CompareOp::Greater, 0),
                                    &k,
                                );
                                p.otherwise = Some(Planned::refused(RegistryError::Acl(
                                    AclError::NotFound(key.to_string()),
                                )));
                            }
                            // A token may only name policies that exist,
                            // also if another node removes one meanwhile.
                            AclChange::Put(AclObject::Token(t)) => {
                                for name in &t.policies {
                                    if crate::core::acl::is_builtin_policy(name) {
                                        continue;
                                    }
                                    let k = keys.acl(&AclKey::Policy(name.clone()));
                                    p.compare(
                                        Compare::create_revision(k.clone(), CompareOp::Greater, 0),
                                        &k,
                                    );
                                    p.otherwise = Some(Planned::refused(RegistryError::Acl(
                                        AclError::UnknownPolicy(name.clone()),
                                    )));
                                }
                            }
                            AclChange::Put(_) => {}
                        }
                        p.acl = made.first().map(|(k, _)| k.clone());
                        for (key, value) in made {
                            match value {
                                Some(obj) => p.put(keys.acl(&key), codec::encode_acl(&obj)),
                                None => p.delete(keys.acl(&key)),
                            }
                        }
                    }
                }
                p
            })
            .collect()
    }

    /// Proposes planned changes, answering once this node applied them.
    async fn run_planned(&self, planned: Vec<Planned>, ctx: &Context) -> Result<Applied, LogError> {
        let mut applied = Applied {
            last_index: self.inner.registry.index(),
            outcomes: Vec::with_capacity(planned.len()),
        };
        let mut refusal = None;
        for mut p in planned {
            let mut attempts = 1;
            let done = loop {
                if p.result.is_some() {
                    break None;
                }
                // Audited with its transaction, before it is answered.
                let audit = self
                    .inner
                    .auditor
                    .get()
                    .and_then(|_| audit::record_of(&p.change, ctx, p.acl.as_ref()));
                let done = self.inner.batcher.submit(self, p.txn(audit)).await?;
                self.applied(done.wait_for).await?;
                if done.succeeded || !p.retry || attempts == RETRIES {
                    break Some(done);
                }
                // The value moved on (this node now holds the newer one).
                attempts += 1;
                let change = p.change.clone();
                p = self
                    .plan(vec![change], ctx, None)
                    .pop()
                    .expect("one change, one plan");
            };
            if let Some(result) = p.result {
                if let Outcome::Refused(e) = &result {
                    refusal.get_or_insert(e.clone());
                }
                applied.outcomes.push((0, result));
                continue;
            }
            let done = done.expect("submitted when not decided without etcd");
            let outcome = if done.succeeded {
                applied.last_index = applied.last_index.max(done.revision);
                self.outcome_of(&p.change, p.acl.as_ref())
            } else if p.bootstrap {
                let by = self
                    .inner
                    .registry
                    .bootstrapped()
                    .map_or_else(String::new, |b| b.accessor.clone());
                Outcome::Refused(RegistryError::Acl(AclError::AlreadyBootstrapped(by)))
            } else {
                p.otherwise.flatten().unwrap_or(Outcome::Skipped)
            };
            if let Outcome::Refused(e) = &outcome {
                refusal.get_or_insert(e.clone());
            }
            let at = if done.succeeded { done.revision } else { 0 };
            applied.outcomes.push((at, outcome));
        }
        match refusal {
            Some(e) => Err(LogError::Refused(e)),
            None => Ok(applied),
        }
    }

    /// What a committed change came to, as this node now holds it.
    fn outcome_of(&self, change: &Change, acl: Option<&AclKey>) -> Outcome {
        let reg = &self.inner.registry;
        match change {
            Change::Acl(_) | Change::Kv(_) => Outcome::Acl(acl.and_then(|k| reg.acl_object(k))),
            other => match other.target() {
                Some((key, id)) => {
                    Outcome::Applied(reg.service(key).and_then(|s| s.instances.get(id).cloned()))
                }
                None => Outcome::Skipped,
            },
        }
    }

    /// Proposes the expiry leader's decisions, fenced by its leadership.
    async fn propose_fenced(&self, changes: Vec<Change>) -> Result<Applied, LogError> {
        let fence = self.inner.fence.lock().unwrap().clone();
        let Some(fence) = fence else {
            return Err(LogError::Unavailable(NotSaved::new(
                "this node is not the expiry leader",
            )));
        };
        let ctx = Context::system();
        let planned = self.plan(changes, &ctx, Some(&fence));
        self.run_planned(planned, &ctx).await
    }
}

/// One change turned into an etcd transaction.
struct Planned {
    change: Change,
    compares: Vec<Compare>,
    ops: Vec<TxnOp>,
    /// Keys written, so that one batch never writes a key twice.
    keys: Vec<Vec<u8>>,
    /// Mirrored keys the compares look at.
    compared: Vec<String>,
    /// Bytes of keys and values written.
    bytes: usize,
    /// Decided without etcd (refused, or nothing to do).
    result: Option<Outcome>,
    /// What a failed compare means (`None`: skipped).
    otherwise: Option<Option<Outcome>>,
    /// A bootstrap: a failed compare means it was done before.
    bootstrap: bool,
    /// The access-control object to report.
    acl: Option<AclKey>,
    /// A failed compare means the value moved on: decide again on the
    /// newer one (a few times).
    retry: bool,
}

impl Planned {
    fn new(change: Change) -> Self {
        Self {
            change,
            compares: Vec::new(),
            ops: Vec::new(),
            keys: Vec::new(),
            compared: Vec::new(),
            bytes: 0,
            result: None,
            otherwise: None,
            bootstrap: false,
            acl: None,
            retry: false,
        }
    }

    fn refused(e: RegistryError) -> Option<Outcome> {
        Some(Outcome::Refused(e))
    }

    fn compare(&mut self, c: Compare, key: &str) {
        self.compares.push(c);
        self.compared.push(key.to_string());
    }

    fn put(&mut self, key: String, value: Vec<u8>) {
        self.bytes += key.len() + value.len();
        self.keys.push(key.clone().into_bytes());
        self.ops.push(TxnOp::put(key, value, None));
    }

    fn delete(&mut self, key: String) {
        self.keys.push(key.clone().into_bytes());
        self.ops.push(TxnOp::delete(key, None));
    }

    /// The transaction to batch: its compares, its writes, and on failure
    /// a read of each compared key (whose revision this node then waits
    /// for, so the refusal is answered from what it is refused on); and
    /// `audit`, what the audit log records once it commits.
    fn txn(&self, audit: Option<crate::audit::Record>) -> batch::Sub {
        batch::Sub {
            compares: self.compares.clone(),
            ops: self.ops.clone(),
            keys: self.keys.clone(),
            reads: self.compared.clone(),
            bytes: self.bytes,
            audit,
        }
    }
}

impl Log for EtcdLog {
    fn propose(&self, changes: Vec<Change>, ctx: Context) -> Proposal {
        let planned = self.plan(changes, &ctx, None);
        let log = self.clone();
        Box::pin(async move { log.run_planned(planned, &ctx).await })
    }

    fn subscribe_from(&self, index: u64) -> Subscription {
        self.inner.feed.subscribe_from(index)
    }

    fn snapshot(&self) -> (u64, Vec<Arc<ServiceSnapshot>>) {
        self.inner.registry.snapshot()
    }

    fn last_index(&self) -> u64 {
        self.inner.registry.index()
    }

    fn status(&self) -> Option<(&'static str, String)> {
        match self.cluster_state() {
            ClusterState::Serving => None,
            ClusterState::CatchingUp => Some((
                "catching up",
                "loading or replaying the registry from etcd; DNS answers from the last local state"
                    .into(),
            )),
            ClusterState::ReadOnly(why) => Some((
                "read-only",
                format!("etcd is unavailable ({why}): DNS and reads go on from memory, writes fail"),
            )),
        }
    }
}

/// The etcd key and value a registration writes: the instance as the codec
/// encodes it, passing (its index is the revision that writes it). The one
/// place that makes them, for the proposer and for [`fill`].
fn registration(
    keys: &Keys,
    key: &ServiceKey,
    id: &InstanceId,
    mut spec: InstanceSpec,
) -> (String, Vec<u8>) {
    let version = Version::from(std::mem::take(&mut spec.version));
    let inst = Instance::from_spec(key, id.clone(), spec, version, Health::Passing, 0, 0);
    (keys.instance(key, id), codec::encode(&inst))
}

/// The message of a store failure that clients see: it names no address.
fn unavailable(detail: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(NotSaved::unconfirmed(format!("etcd: {detail}")))
}
