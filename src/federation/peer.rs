//! The receiving side: one task per peer that streams the peer's changes
//! and proposes them here as [`Change::Replica`] with
//! [`Origin::Replicated`], resuming from the peer's index it last applied.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::Federation;
use super::frame::{Frame, Reader};
use crate::config::PeerConfig;
use crate::core::{
    Actor, Change, Context, Datacenter, Durability, InstanceId, Origin, ServiceKey, ServiceName,
};
use crate::store::Log;
use crate::store::codec::Decoder;

/// Changes proposed at once while a snapshot arrives.
const BATCH: usize = 1024;

pub(super) struct Receiver {
    fed: Federation,
    peer: PeerConfig,
    log: Arc<dyn Log>,
    client: reqwest::Client,
    token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum PeerError {
    #[error("cannot read {0}: {1}")]
    File(String, std::io::Error),
    #[error("bad CA certificate in {0}: {1}")]
    Ca(String, reqwest::Error),
    #[error("cannot build the HTTPS client: {0}")]
    Client(reqwest::Error),
}

impl Receiver {
    pub(super) fn new(
        fed: Federation,
        peer: PeerConfig,
        log: Arc<dyn Log>,
    ) -> Result<Self, PeerError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .tcp_keepalive(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &peer.ca_file {
            let pem =
                std::fs::read(ca).map_err(|e| PeerError::File(ca.display().to_string(), e))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| PeerError::Ca(ca.display().to_string(), e))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(PeerError::Client)?;
        let token = match &peer.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| PeerError::File(path.display().to_string(), e))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        Ok(Self {
            fed,
            peer,
            log,
            client,
            token,
        })
    }

    pub(super) async fn run(self, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        let rtt = tokio::spawn(measure_rtt(
            self.fed.clone(),
            self.peer.name.clone(),
            self.request("/v1/health"),
            stop.clone(),
        ));
        loop {
            let started = Instant::now();
            let result = tokio::select! {
                _ = stop.cancelled() => break,
                r = self.stream_once() => r,
            };
            if let Err(why) = result {
                let denied = why.starts_with("refused");
                if denied {
                    tracing::error!(peer = %self.peer.name, error = %why, "federation peer refused our credential");
                } else {
                    tracing::warn!(peer = %self.peer.name, error = %why, "federation stream ended");
                }
                self.fed.update(&self.peer.name, |s| {
                    s.error = Some(why);
                    s.denied = denied;
                    s.reachable = false;
                });
            }
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(200);
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        rtt.abort();
    }

    fn request(&self, path: &str) -> reqwest::RequestBuilder {
        let r = self.client.get(format!("{}{path}", self.peer.url));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// One stream, from the index applied, until it breaks.
    async fn stream_once(&self) -> Result<(), String> {
        let since = self
            .fed
            .state()
            .peers
            .get(&self.peer.name)
            .map_or(0, |s| s.applied_index);
        let path = format!(
            "/v1/federation/stream?since={since}&dc={}",
            self.fed.local_dc()
        );
        let mut res = self
            .request(&path)
            .send()
            .await
            .map_err(|e| format!("cannot reach {}: {e}", self.peer.url))?;
        let status = res.status();
        if status == reqwest::StatusCode::FORBIDDEN || status == reqwest::StatusCode::UNAUTHORIZED {
            let body = res.text().await.unwrap_or_default();
            return Err(format!("refused with {status}: {}", body.trim()));
        }
        if !status.is_success() {
            return Err(format!("answered {status}"));
        }
        let mut reader = Reader::default();
        let mut apply = Applier::new(self, since);
        let stale_after = self.fed.inner.config.stale_after;
        loop {
            // A stream silent for longer than stale_after (no keep-alive)
            // is broken: connect again.
            let chunk = match tokio::time::timeout(
                stale_after.max(Duration::from_secs(1)) * 2,
                res.chunk(),
            )
            .await
            {
                Ok(Ok(Some(c))) => c,
                Ok(Ok(None)) => return Err("the peer closed the stream".into()),
                Ok(Err(e)) => return Err(format!("stream broke: {e}")),
                Err(_) => return Err("no keep-alive: stream abandoned".into()),
            };
            self.heard();
            reader.push(&chunk);
            while let Some(frame) = reader.next_frame().map_err(|e| e.to_string())? {
                apply.frame(frame).await?;
            }
        }
    }

    fn heard(&self) {
        let now = SystemTime::now();
        let mut stale = false;
        self.fed.update(&self.peer.name, |s| {
            s.last_contact = Some(now);
            s.contact_since.get_or_insert(now);
            s.error = None;
            s.denied = false;
            s.from_file = false;
            stale = s.stale;
        });
        // A stale peer may be fresh now (at once on a first contact):
        // decide without waiting for the monitor's next look.
        if stale {
            self.fed.check_staleness(now);
        }
    }
}

/// Round-trip times of a small request to the peer (`GET /v1/health` on
/// the same client, so on a kept-alive connection), smoothed: each
/// measurement moves the figure a quarter of the way.
async fn measure_rtt(
    fed: Federation,
    peer: Datacenter,
    request: reqwest::RequestBuilder,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(req) = request.try_clone() else {
            return;
        };
        let started = Instant::now();
        let ok = tokio::time::timeout(Duration::from_secs(5), req.send())
            .await
            .is_ok_and(|r| r.is_ok());
        if !ok {
            continue;
        }
        let took = started.elapsed();
        fed.update(&peer, |s| {
            s.rtt = Some(match s.rtt {
                Some(old) => (old * 3 + took) / 4,
                None => took,
            });
        });
    }
}

/// Applies the frames of one stream.
struct Applier<'a> {
    r: &'a Receiver,
    decoder: Decoder,
    pending: Vec<Change>,
    /// In a snapshot: the instances held from this peer that it has not
    /// sent again (removed once it ends).
    unseen: Option<BTreeSet<(ServiceKey, InstanceId)>>,
    /// The first frame after the hello: a snapshot, or a resume.
    first: bool,
    since: u64,
}

impl<'a> Applier<'a> {
    fn new(r: &'a Receiver, since: u64) -> Self {
        Self {
            r,
            decoder: Decoder::default(),
            pending: Vec::new(),
            unseen: None,
            first: true,
            since,
        }
    }

    fn peer(&self) -> &Datacenter {
        &self.r.peer.name
    }

    async fn frame(&mut self, frame: Frame) -> Result<(), String> {
        match frame {
            Frame::Hello { dc, index } => {
                if dc != self.peer().as_str() {
                    return Err(format!(
                        "the peer says it is datacenter {dc:?}, not {:?}",
                        self.peer().as_str()
                    ));
                }
                self.r.fed.update(self.peer(), |s| s.peer_index = index);
            }
            Frame::SnapshotStart { .. } => {
                self.first = false;
                let mut held = BTreeSet::new();
                for dc in self.r.fed.delivered_by(self.peer()) {
                    for s in self.r.fed.registry().services() {
                        if s.key.dc == dc {
                            for id in s.instances.keys() {
                                held.insert((s.key.clone(), id.clone()));
                            }
                        }
                    }
                }
                self.unseen = Some(held);
            }
            Frame::Put { record } => {
                let restored = self
                    .decoder
                    .decode(0, &record)
                    .map_err(|e| format!("a record does not decode: {e}"))?;
                if let Some(unseen) = &mut self.unseen {
                    unseen.remove(&(restored.key.clone(), restored.id.clone()));
                }
                if self.r.fed.may_deliver(self.peer(), &restored.key.dc) {
                    // Checks run where the instance lives (the sender sends
                    // their outcome as its health): none run here.
                    let mut spec = restored.spec;
                    spec.checks.clear();
                    if let Some(c) = spec.compat.as_mut() {
                        c.health_check_path = Default::default();
                    }
                    self.pending.push(Change::Replica {
                        key: restored.key,
                        id: restored.id,
                        value: Some(Box::new((spec, restored.health))),
                    });
                }
                if self.pending.len() >= BATCH {
                    self.propose(None).await?;
                }
            }
            Frame::Remove { dc, service, id } => {
                let (Ok(dc), Ok(service), Ok(id)) = (
                    Datacenter::new(&dc),
                    ServiceName::new(&service),
                    InstanceId::new(&id),
                ) else {
                    return Err("a removal names an invalid instance".into());
                };
                if self.r.fed.may_deliver(self.peer(), &dc) {
                    self.pending.push(Change::Replica {
                        key: ServiceKey::new(dc, service),
                        id,
                        value: None,
                    });
                }
            }
            Frame::Mark {
                index,
                snapshot_end,
            } => {
                if self.first {
                    self.first = false;
                    if self.since > 0 {
                        self.r.fed.update(self.peer(), |s| s.resumes += 1);
                    }
                }
                if snapshot_end && let Some(unseen) = self.unseen.take() {
                    for (key, id) in unseen {
                        self.pending.push(Change::Replica {
                            key,
                            id,
                            value: None,
                        });
                    }
                }
                self.propose(Some(index)).await?;
                let now = SystemTime::now();
                self.r.fed.update(self.peer(), |s| {
                    if snapshot_end {
                        s.snapshots_received += 1;
                    }
                    s.applied_index = index;
                    s.peer_index = s.peer_index.max(index);
                    if s.applied_index < s.peer_index {
                        s.behind_since.get_or_insert(now);
                    } else {
                        s.behind_since = None;
                    }
                    s.dirty = true;
                });
            }
            Frame::KeepAlive { index } => {
                if self.first && self.since > 0 && index == self.since {
                    self.first = false;
                    self.r.fed.update(self.peer(), |s| s.resumes += 1);
                }
                let now = SystemTime::now();
                self.r.fed.update(self.peer(), |s| {
                    s.peer_index = s.peer_index.max(index);
                    if s.applied_index >= s.peer_index {
                        s.behind_since = None;
                    } else {
                        s.behind_since.get_or_insert(now);
                    }
                });
            }
        }
        Ok(())
    }

    /// Proposes what is pending, as replicated from the peer at `index`.
    async fn propose(&mut self, index: Option<u64>) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let changes = std::mem::take(&mut self.pending);
        let ctx = Context {
            actor: Actor::System,
            origin: Origin::Replicated {
                dc: self.peer().clone(),
                index: index.unwrap_or(0),
            },
            durability: Durability::Applied,
        };
        match self.r.log.propose(changes, ctx).await {
            Ok(_) => Ok(()),
            // A change the registry refuses (a name conflict) is skipped;
            // the rest of the batch is applied.
            Err(crate::store::LogError::Refused(e)) => {
                tracing::warn!(peer = %self.peer(), error = %e, "a replicated change was refused");
                Ok(())
            }
            Err(e) => Err(format!("cannot apply replicated changes: {e}")),
        }
    }
}
