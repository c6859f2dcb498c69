//! Federation: every peer datacenter's catalog replicated here, and this
//! datacenter's catalog streamed to peers (docs/federation.md,
//! docs/adr/0005-several-nodes-and-datacenters.md).
//!
//! ```text
//!   peer dc2 --GET /v1/federation/stream?since=I--> receiver task (peer.rs)
//!      frames: snapshot or deltas, keep-alives      | Change::Replica, Origin::Replicated{dc2, index}
//!                                                   v
//!                                 store::Log::propose -> Registry (dc2's keys)
//!                                                   -> DNS answers, payments.dc2.<zone>
//!   this dc's ChangeFeed --stream.rs--> peers that stream from here
//!   replica files: <data_dir>/federation/<peer>.replica (store snapshot format)
//! ```
//!
//! Owns: the peers' state (reachability with hysteresis, round-trip time,
//! replication lag, credentials refused), which peer each remote
//! datacenter's data comes from (relays: nothing applied twice), the
//! failover order's nearest peers and staleness (`core::failover` holds
//! the outcome), and the replica files. With no peer configured nothing
//! of it runs.
//!
//! Must not import: dns, http.

pub mod frame;
mod peer;
mod replica;
pub mod stream;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::FederationConfig;
use crate::core::{Datacenter, Registry};
use crate::events::ChangeFeed;
use crate::store::Log;

/// The federation of this datacenter. Cloning copies one `Arc`.
#[derive(Clone)]
pub struct Federation {
    inner: Arc<Inner>,
}

struct Inner {
    local: Datacenter,
    registry: Registry,
    feed: ChangeFeed,
    config: FederationConfig,
    data_dir: PathBuf,
    state: Mutex<State>,
    /// Snapshots this datacenter sent to peers streaming from it.
    snapshots_sent: AtomicU64,
    /// Ends the streams peers read from here (at shutdown: they would
    /// otherwise hold the API's drain open forever).
    streams: CancellationToken,
}

#[derive(Default)]
struct State {
    peers: BTreeMap<Datacenter, PeerStatus>,
    /// Remote datacenter -> the peer its data comes from (itself when it is
    /// a peer; a relay otherwise). A datacenter's data is taken from one
    /// peer only, so a relayed copy never applies twice.
    sources: BTreeMap<Datacenter, Datacenter>,
}

/// What is known of one peer (or a datacenter relayed through one).
#[derive(Clone, Debug, Default)]
pub struct PeerStatus {
    /// Connected and heard from within `stale_after` (with hysteresis).
    pub reachable: bool,
    pub stale: bool,
    /// Smoothed round-trip time of requests to the peer.
    pub rtt: Option<Duration>,
    /// The peer's change index up to which everything is applied here.
    pub applied_index: u64,
    /// The latest change index the peer reported.
    pub peer_index: u64,
    pub last_contact: Option<SystemTime>,
    /// Since when `applied_index` has been behind `peer_index`.
    pub behind_since: Option<SystemTime>,
    /// Heard from continuously since then (fresh again after a while).
    pub contact_since: Option<SystemTime>,
    pub snapshots_received: u64,
    /// Reconnections that resumed from the index applied (no snapshot).
    pub resumes: u64,
    /// The last error, for operators (a refused credential says so).
    pub error: Option<String>,
    /// The peer refused our credential (401/403).
    pub denied: bool,
    /// The replica changed since it was last written to its file.
    pub dirty: bool,
    /// Loaded from its replica file and not reached since.
    pub from_file: bool,
    /// It has been fresh since the start (the first contact needs no
    /// hysteresis: there was no flapping yet).
    pub was_fresh: bool,
}

impl Federation {
    /// The federation of `registry`'s datacenter; `feed` is what peers
    /// stream from here.
    pub fn new(
        registry: Registry,
        feed: ChangeFeed,
        config: FederationConfig,
        data_dir: PathBuf,
    ) -> Self {
        let mut state = State::default();
        for p in &config.peers {
            state.peers.insert(p.name.clone(), PeerStatus::default());
            state.sources.insert(p.name.clone(), p.name.clone());
        }
        Self {
            inner: Arc::new(Inner {
                local: registry.local_dc().clone(),
                registry,
                feed,
                config,
                data_dir,
                state: Mutex::new(state),
                snapshots_sent: AtomicU64::new(0),
                streams: CancellationToken::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn local_dc(&self) -> &Datacenter {
        &self.inner.local
    }

    pub fn relay(&self) -> bool {
        self.inner.config.relay
    }

    pub fn keepalive(&self) -> Duration {
        self.inner.config.keepalive
    }

    pub fn feed(&self) -> &ChangeFeed {
        &self.inner.feed
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Ends every stream peers read from here.
    pub fn close_streams(&self) {
        self.inner.streams.cancel();
    }

    pub(crate) fn streams_closed(&self) -> CancellationToken {
        self.inner.streams.clone()
    }

    /// Counts a snapshot sent to a peer.
    pub(crate) fn snapshot_sent(&self) {
        self.inner.snapshots_sent.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshots_sent(&self) -> u64 {
        self.inner.snapshots_sent.load(Ordering::Relaxed)
    }

    /// Every datacenter known here but this one, with its status.
    pub fn peers(&self) -> Vec<(Datacenter, PeerStatus, Option<Datacenter>)> {
        let st = self.state();
        let mut out: Vec<_> = st
            .peers
            .iter()
            .map(|(d, s)| (d.clone(), s.clone(), st.sources.get(d).cloned()))
            .collect();
        for dc in self.inner.registry.datacenters() {
            if dc != self.inner.local && !st.peers.contains_key(&dc) {
                let via = st.sources.get(&dc).cloned();
                let status = via
                    .as_ref()
                    .and_then(|v| st.peers.get(v))
                    .cloned()
                    .unwrap_or_default();
                out.push((dc, status, via));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Whether `peer` may deliver data of datacenter `dc`: its own, or a
    /// datacenter no one else delivers (which it then does from now on).
    fn may_deliver(&self, peer: &Datacenter, dc: &Datacenter) -> bool {
        if dc == &self.inner.local {
            return false; // never our own data back
        }
        let mut st = self.state();
        match st.sources.get(dc) {
            Some(src) => src == peer,
            None => {
                st.sources.insert(dc.clone(), peer.clone());
                true
            }
        }
    }

    /// The remote datacenters whose data comes from `peer`.
    fn delivered_by(&self, peer: &Datacenter) -> Vec<Datacenter> {
        self.state()
            .sources
            .iter()
            .filter(|(_, p)| *p == peer)
            .map(|(d, _)| d.clone())
            .collect()
    }

    fn update(&self, peer: &Datacenter, f: impl FnOnce(&mut PeerStatus)) {
        if let Some(s) = self.state().peers.get_mut(peer) {
            f(s);
        }
    }

    /// Starts the receivers, the health monitor and the replica writer, and
    /// loads the replica files. Nothing runs without peers.
    pub async fn start(&self, log: Arc<dyn Log>, tasks: &TaskTracker, stop: CancellationToken) {
        self.load_overrides();
        if self.inner.config.peers.is_empty() {
            return;
        }
        for p in &self.inner.config.peers {
            if let Err(e) = self.inner.registry.add_datacenter(p.name.clone()) {
                tracing::error!(peer = %p.name, error = %e, "peer datacenter not added");
            }
        }
        replica::load_all(self, log.as_ref()).await;
        self.update_order();
        for p in self.inner.config.peers.clone() {
            let receiver = peer::Receiver::new(self.clone(), p, log.clone());
            match receiver {
                Ok(r) => {
                    tasks.spawn(r.run(stop.clone()));
                }
                Err(e) => {
                    tracing::error!(error = %e, "federation peer not started");
                }
            }
        }
        tasks.spawn(self.clone().monitor(stop.clone()));
        tasks.spawn(replica::writer(self.clone(), stop));
    }

    /// Writes every replica that changed (at shutdown).
    pub fn flush(&self) {
        replica::write_all(self);
    }

    /// Marks staleness with hysteresis and keeps the nearest-peer order:
    /// a peer is stale once not heard from for `stale_after`; it is fresh
    /// again only after it has been heard from continuously for half of
    /// `stale_after` (at least two keep-alives), so that a flapping link
    /// does not flap answers. The first contact since the start makes it
    /// fresh at once.
    async fn monitor(self, stop: CancellationToken) {
        let every = (self.inner.config.stale_after / 8).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.check_staleness(SystemTime::now());
            self.update_order();
        }
    }

    fn check_staleness(&self, now: SystemTime) {
        let stale_after = self.inner.config.stale_after;
        let recover = (stale_after / 2).max(self.inner.config.keepalive * 2);
        let mut changes = Vec::new();
        {
            let mut st = self.state();
            for (dc, s) in st.peers.iter_mut() {
                let heard = s
                    .last_contact
                    .and_then(|t| now.duration_since(t).ok())
                    .is_some_and(|ago| ago < stale_after);
                let steady = s
                    .contact_since
                    .and_then(|t| now.duration_since(t).ok())
                    .is_some_and(|d| d >= recover);
                let stale = if s.stale {
                    !(heard && (steady || !s.was_fresh))
                } else {
                    !heard
                };
                if !stale {
                    s.was_fresh = true;
                }
                if !heard {
                    s.contact_since = None;
                }
                s.reachable = heard && !s.denied;
                if stale != s.stale {
                    s.stale = stale;
                    changes.push((dc.clone(), stale));
                }
            }
            // Relayed datacenters are as fresh as the peer they come through.
            let relayed: Vec<(Datacenter, bool)> = st
                .sources
                .iter()
                .filter(|(d, p)| d != p)
                .filter_map(|(d, p)| st.peers.get(p).map(|s| (d.clone(), s.stale)))
                .collect();
            for (d, stale) in relayed {
                if self.inner.registry.failover().is_stale(&d) != stale {
                    changes.push((d, stale));
                }
            }
        }
        for (dc, stale) in changes {
            if stale {
                tracing::warn!(datacenter = %dc, "peer datacenter is stale: not heard from");
            } else {
                tracing::info!(datacenter = %dc, "peer datacenter is fresh again");
            }
            self.inner.registry.failover().set_stale(&dc, stale);
        }
    }

    /// With `failover.nearest = N`: the N reachable peers of lowest
    /// round-trip time become the failover order.
    fn update_order(&self) {
        let n = self.inner.config.failover_nearest;
        if n == 0 {
            return;
        }
        let mut by_rtt: Vec<(Duration, Datacenter)> = self
            .state()
            .peers
            .iter()
            .filter_map(|(d, s)| s.rtt.map(|r| (r, d.clone())))
            .collect();
        by_rtt.sort();
        let order: Vec<Datacenter> = by_rtt.into_iter().take(n).map(|(_, d)| d).collect();
        self.inner.registry.failover().set_order(order);
    }

    /// Sets (or removes) `service`'s failover order and writes every
    /// override to `<data_dir>/federation/failover.json`.
    pub fn set_override(
        &self,
        service: crate::core::ServiceName,
        order: Option<Vec<Datacenter>>,
    ) -> std::io::Result<()> {
        let policy = self.inner.registry.failover();
        let before = policy.overrides();
        policy.set_override(service, order);
        let all: BTreeMap<String, Vec<String>> = policy
            .overrides()
            .into_iter()
            .map(|(s, o)| (s.to_string(), o.iter().map(|d| d.to_string()).collect()))
            .collect();
        let text = serde_json::to_vec_pretty(&all).expect("plain JSON");
        let written = replica::write_file(&self.overrides_path(), &text);
        if written.is_err() {
            for (s, o) in before {
                policy.set_override(s, Some(o));
            }
        }
        written
    }

    fn overrides_path(&self) -> PathBuf {
        self.inner
            .data_dir
            .join(replica::DIR_NAME)
            .join("failover.json")
    }

    /// Reads the per-service failover orders saved by `set_override`.
    fn load_overrides(&self) {
        let Ok(text) = std::fs::read(self.overrides_path()) else {
            return;
        };
        let Ok(all) = serde_json::from_slice::<BTreeMap<String, Vec<String>>>(&text) else {
            tracing::warn!(
                "federation/failover.json does not parse: per-service failover orders not loaded"
            );
            return;
        };
        for (s, order) in all {
            let (Ok(s), Ok(order)) = (
                crate::core::ServiceName::new(&s),
                order
                    .iter()
                    .map(|d| Datacenter::new(d))
                    .collect::<Result<Vec<_>, _>>(),
            ) else {
                continue;
            };
            self.inner.registry.failover().set_override(s, Some(order));
        }
    }
}
