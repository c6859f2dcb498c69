//! The MQTT publisher: every registry change, and each service's current
//! healthy set, published to a broker (docs/operations.md#mqtt).
//!
//! ```text
//!   change feed --subscribe_from(resume)--> publisher --QoS 1--> broker
//!     each change:        <prefix>/<dc>/services/<service>          (an event)
//!     after its changes:  <prefix>/<dc>/services/<service>/healthy  (retained;
//!                         at most once per healthy_interval, its latest state;
//!                         empty once the service is gone, which clears it)
//! ```
//!
//! The publisher holds only its place in the feed: `resume`, the index up
//! to which the broker acknowledged (PUBACK) everything. At most
//! [`WINDOW`] messages are unacknowledged at once; while the window is full
//! or the broker is away it reads nothing from the feed, whose ring is
//! bounded, so memory stays bounded whatever the broker does. After a
//! reconnect it subscribes from `resume` again: the changes after it are
//! published again (a message acknowledged in part may come twice, as QoS 1
//! allows), or, when the feed no longer keeps them, the healthy set of
//! every service (a snapshot).
//!
//! Writes are paced: at most one per `write_interval`, carrying every
//! message ready by then (a change after a quiet spell goes out at once).
//! The connection itself, around rumqttc's packet codec, is in `link`.
//!
//! Must not import: dns, http, store, config.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use link::{Connection, Incoming, Link};
use sets::Sets;
use tokio_util::bytes::Bytes;

use crate::core::{Event, Registry, ServiceKey};
use crate::events::{ChangeFeed, Delivery, Encoding};

mod link;
mod sets;

/// Most messages published and not yet acknowledged by the broker. With
/// writes paced at the default 50 ms, room for about 80,000 messages a
/// second.
pub const WINDOW: usize = 4096;

/// A ping when nothing was written for this long; the connection is
/// lost when the broker does not answer it within as long again.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// The largest message sent; a healthy set that would be larger is left
/// out (with a warning) rather than failing the connection.
pub const MAX_PACKET: usize = 4 << 20;

/// The first wait before connecting again, doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where and how to publish.
#[derive(Clone, Debug)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    /// Without a trailing `/`.
    pub topic_prefix: String,
    /// User name and password.
    pub credentials: Option<(String, String)>,
    /// A service's healthy set is published at most this often.
    pub healthy_interval: Duration,
    /// The shortest time between two writes to the broker: each carries
    /// every message ready by then (0: each delivery of the feed at once).
    pub write_interval: Duration,
}

/// The publisher; [`Publisher::run`] drives it until the token is cancelled.
pub struct Publisher {
    settings: Settings,
    registry: Registry,
    feed: ChangeFeed,
    encoding: Arc<dyn Encoding>,
}

/// One message to publish, and where to resume from while it is not
/// acknowledged.
struct Pending {
    what: What,
    resume: u64,
}

/// A message sent and not yet acknowledged.
struct Sent {
    pkid: u16,
    /// Where to resume from while it is not acknowledged.
    resume: u64,
    acked: bool,
}

enum What {
    Change(Event),
    /// The service's healthy set as it is when the message is sent.
    Healthy(ServiceKey),
}

/// Why a session ended.
enum End {
    Stopped,
    Lost(String),
}

impl Publisher {
    pub fn new(
        settings: Settings,
        registry: Registry,
        feed: ChangeFeed,
        encoding: Arc<dyn Encoding>,
    ) -> Self {
        Self {
            settings,
            registry,
            feed,
            encoding,
        }
    }

    /// `<prefix>/<dc>/services/<service>`, then `suffix`.
    fn topic(&self, key: &ServiceKey, suffix: &str) -> String {
        [
            self.settings.topic_prefix.as_str(),
            "/",
            key.dc.as_str(),
            "/services/",
            key.service.as_str(),
            suffix,
        ]
        .concat()
    }

    /// Publishes until `stop` is cancelled, connecting again (with backoff)
    /// whenever the broker goes away.
    pub async fn run(self, stop: CancellationToken) {
        let broker = format!("{}:{}", self.settings.host, self.settings.port);
        // From 0: the broker gets the whole registry first.
        let mut resume = 0;
        // Services with a retained healthy set on the broker (published by
        // this process), to clear those a snapshot no longer has, and
        // their last encodings.
        let mut sets = Sets::default();
        let mut backoff = MIN_BACKOFF;
        let mut failures = 0u64;
        loop {
            if stop.is_cancelled() {
                return;
            }
            let mut session = Session {
                p: &self,
                pending: VecDeque::new(),
                inflight: VecDeque::new(),
                sub: self.feed.subscribe_from(resume),
                sets: &mut sets,
                connected: false,
                dirty: HashMap::new(),
                flush_at: None,
            };
            let end = session.run(&stop).await;
            let connected = session.connected;
            resume = session.resume();
            drop(session);
            match end {
                End::Stopped => return,
                End::Lost(why) => {
                    if connected {
                        backoff = MIN_BACKOFF;
                        failures = 0;
                        tracing::warn!(broker = %broker, error = %why, resume, "MQTT broker connection lost; reconnecting");
                    } else {
                        failures += 1;
                        // Once, then every 50th attempt: the broker may be away for long.
                        if failures == 1 || failures.is_multiple_of(50) {
                            tracing::warn!(broker = %broker, error = %why, attempts = failures, "cannot connect to the MQTT broker; retrying");
                        }
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// One connection to the broker.
struct Session<'a> {
    p: &'a Publisher,
    /// Messages of the current delivery not yet sent.
    pending: VecDeque<Pending>,
    /// The messages sent and not yet acknowledged, in the order sent
    /// (brokers acknowledge QoS 1 messages in that order; one
    /// acknowledged out of order waits for those before it).
    inflight: VecDeque<Sent>,
    sub: crate::events::Subscription,
    sets: &'a mut Sets,
    connected: bool,
    /// Services changed since their healthy set was last queued, each
    /// with where to resume from while that set is not published (before
    /// its first change since).
    dirty: HashMap<ServiceKey, u64>,
    /// When the dirty services' healthy sets are queued (`None`: none is
    /// dirty). Each service's set goes out at most once per
    /// `healthy_interval`, with the state as it is then: under a stream of
    /// registrations a set of N instances is encoded once a second, not
    /// once per change.
    flush_at: Option<tokio::time::Instant>,
}

impl Session<'_> {
    /// Where to resume after this session: before the first message not
    /// acknowledged, or after the last change delivered.
    fn resume(&self) -> u64 {
        self.inflight
            .iter()
            .filter(|s| !s.acked)
            .map(|s| s.resume)
            .chain(self.pending.iter().map(|p| p.resume))
            .chain(self.dirty.values().copied())
            .min()
            .unwrap_or_else(|| self.sub.position())
    }

    async fn run(&mut self, stop: &CancellationToken) -> End {
        let s = &self.p.settings;
        let connection = Connection {
            host: &s.host,
            port: s.port,
            client_id: &s.client_id,
            keep_alive: KEEP_ALIVE,
            credentials: s.credentials.as_ref(),
            max_outgoing: MAX_PACKET + (64 << 10),
        };
        let mut link = tokio::select! {
            _ = stop.cancelled() => return End::Stopped,
            r = Link::connect(&connection) => match r {
                Ok(link) => link,
                Err(e) => return End::Lost(e),
            },
        };
        self.connected = true;
        tracing::info!(
            broker = %format!("{}:{}", s.host, s.port),
            from = self.sub.position(),
            "publishing registry changes to the MQTT broker"
        );
        let interval = s.write_interval;
        // When messages were last written (the next write waits until
        // `interval` after it), when anything was, and when a ping
        // not answered yet was sent.
        let mut last_write: Option<Instant> = None;
        let mut last_sent = Instant::now();
        let mut ping_sent: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if last_write.is_none_or(|t| now >= t + interval) && self.inflight.len() < WINDOW {
                // Everything the feed holds now, as far as the window
                // goes, in one write.
                while self.pending.len() + self.inflight.len() < WINDOW
                    && let Some(d) = self.sub.try_next()
                {
                    self.expand(d);
                }
                let before = self.inflight.len();
                if let Err(e) = self.send(&mut link) {
                    return End::Lost(e);
                }
                if self.inflight.len() > before {
                    last_write = Some(now);
                }
            }
            if link.has_queued() {
                if let Err(e) = link.flush().await {
                    return End::Lost(e);
                }
                last_sent = now;
            }
            let may_write = last_write.is_none_or(|t| now >= t + interval);
            let room = self.inflight.len() < WINDOW;
            let keep_alive_at = ping_sent.unwrap_or(last_sent) + KEEP_ALIVE;
            tokio::select! {
                _ = stop.cancelled() => {
                    link.disconnect().await;
                    return End::Stopped;
                }
                got = link.recv() => match got {
                    Ok(Incoming::PubAck(pkid)) => {
                        self.acked(pkid);
                        ping_sent = None;
                    }
                    Ok(Incoming::PingResp) => ping_sent = None,
                    Err(e) => return End::Lost(e),
                },
                _ = self.sub.ready(), if may_write && room && self.pending.is_empty() => {}
                _ = sleep_until_some(last_write.map(|t| t + interval)), if !may_write => {}
                _ = sleep_until_some(self.flush_at), if self.flush_at.is_some() => self.flush(),
                _ = tokio::time::sleep_until(keep_alive_at) => {
                    if ping_sent.is_some() {
                        return End::Lost("the broker did not answer a ping".into());
                    }
                    if let Err(e) = link.ping() {
                        return End::Lost(e);
                    }
                    ping_sent = Some(Instant::now());
                }
            }
        }
    }

    /// Queues the pending messages the window has room for.
    fn send(&mut self, link: &mut Link) -> Result<(), String> {
        while self.inflight.len() < WINDOW
            && let Some(next) = self.pending.pop_front()
        {
            let Some((topic, retain, payload)) = self.message(&next.what) else {
                continue;
            };
            match link.queue(topic, retain, payload) {
                Ok(pkid) => self.inflight.push_back(Sent {
                    pkid,
                    resume: next.resume,
                    acked: false,
                }),
                Err(e) => {
                    self.pending.push_front(next);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// The broker has the message with this packet id.
    fn acked(&mut self, pkid: u16) {
        if let Some(sent) = self
            .inflight
            .iter_mut()
            .find(|s| s.pkid == pkid && !s.acked)
        {
            sent.acked = true;
        }
        while self.inflight.front().is_some_and(|s| s.acked) {
            self.inflight.pop_front();
        }
    }

    /// The messages of one delivery.
    fn expand(&mut self, d: Delivery) {
        match d {
            Delivery::Changes { events, .. } => {
                // Each change now; the healthy sets of their services at
                // the next flush (resuming from before a change whose set
                // is not published publishes both again).
                for e in &events {
                    let resume = e.index.saturating_sub(1);
                    self.pending.push_back(Pending {
                        what: What::Change(e.clone()),
                        resume,
                    });
                    // Most changes are of a service already dirty: no
                    // key is cloned for them.
                    if !self.dirty.contains_key(&e.key) {
                        self.dirty.insert(e.key.clone(), resume);
                    }
                }
                if !self.dirty.is_empty() && self.flush_at.is_none() {
                    self.flush_at =
                        Some(tokio::time::Instant::now() + self.p.settings.healthy_interval);
                }
            }
            Delivery::Snapshot { services, .. } => {
                // The whole state: every healthy set, and an empty one for
                // each service gone meanwhile. Not acknowledged in full, it
                // is sent again from the start.
                let now: HashSet<&ServiceKey> = services.iter().map(|s| &s.key).collect();
                let mut gone: Vec<ServiceKey> = self
                    .sets
                    .retained()
                    .filter(|k| !now.contains(k))
                    .cloned()
                    .collect();
                gone.sort();
                for key in services.iter().map(|s| s.key.clone()).chain(gone) {
                    self.pending.push_back(Pending {
                        what: What::Healthy(key),
                        resume: 0,
                    });
                }
            }
        }
    }

    /// Queues the healthy set of every dirty service, in the order of
    /// their first changes.
    fn flush(&mut self) {
        let mut due: Vec<(ServiceKey, u64)> = self.dirty.drain().collect();
        due.sort_by_key(|(_, resume)| *resume);
        for (key, resume) in due {
            self.pending.push_back(Pending {
                what: What::Healthy(key),
                resume,
            });
        }
        self.flush_at = None;
    }

    /// Topic, retain flag and payload of a message; `None`: not sent.
    fn message(&mut self, what: &What) -> Option<(String, bool, Bytes)> {
        let p = self.p;
        match what {
            What::Change(e) => Some((p.topic(&e.key, ""), false, p.encoding.change(e))),
            What::Healthy(key) => {
                let topic = p.topic(key, "/healthy");
                let Some(s) = p.registry.service(key).filter(|s| !s.instances.is_empty()) else {
                    self.sets.cleared(key);
                    return Some((topic, true, Bytes::new()));
                };
                // A busy registry publishes a thousand sets a second, each
                // with every healthy instance: only what changed is encoded.
                let payload = self.sets.encode(key, &s, &*p.encoding);
                if payload.len() + topic.len() > MAX_PACKET {
                    self.sets.not_sent(key);
                    tracing::warn!(
                        topic,
                        bytes = payload.len(),
                        "a healthy set is too large for one MQTT message; not published"
                    );
                    return None;
                }
                Some((topic, true, payload))
            }
        }
    }
}

/// Sleeps until `at` (`None`: never; the select that polls it is off then).
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
