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
//! Must not import: dns, http, store, config.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::core::{Event, Registry, ServiceKey, plan};
use crate::events::{ChangeFeed, Delivery, Encoding};

/// Most messages published and not yet acknowledged by the broker.
pub const WINDOW: usize = 64;

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

    fn options(&self) -> MqttOptions {
        let s = &self.settings;
        let mut o = MqttOptions::new(s.client_id.clone(), s.host.clone(), s.port);
        o.set_keep_alive(Duration::from_secs(10))
            .set_clean_session(true)
            .set_inflight((2 * WINDOW) as u16)
            .set_max_packet_size(64 << 10, MAX_PACKET + (64 << 10));
        if let Some((user, password)) = &s.credentials {
            o.set_credentials(user.clone(), password.clone());
        }
        o
    }

    fn topic(&self, key: &ServiceKey) -> String {
        format!(
            "{}/{}/services/{}",
            self.settings.topic_prefix,
            key.dc.as_str(),
            key.service.as_str()
        )
    }

    /// Publishes until `stop` is cancelled, connecting again (with backoff)
    /// whenever the broker goes away.
    pub async fn run(self, stop: CancellationToken) {
        let broker = format!("{}:{}", self.settings.host, self.settings.port);
        // From 0: the broker gets the whole registry first.
        let mut resume = 0;
        // Services with a retained healthy set on the broker (published by
        // this process), to clear those a snapshot no longer has.
        let mut retained: HashSet<ServiceKey> = HashSet::new();
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
                retained: &mut retained,
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
    /// `resume` of each message sent and not yet acknowledged, in order
    /// (the broker acknowledges QoS 1 messages in the order received).
    inflight: VecDeque<u64>,
    sub: crate::events::Subscription,
    retained: &'a mut HashSet<ServiceKey>,
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
            .copied()
            .chain(self.pending.iter().map(|p| p.resume))
            .chain(self.dirty.values().copied())
            .min()
            .unwrap_or_else(|| self.sub.position())
    }

    async fn run(&mut self, stop: &CancellationToken) -> End {
        let (client, mut eventloop) = AsyncClient::new(self.p.options(), WINDOW);
        // The event loop runs on its own task (its poll is not safe to
        // cancel in a select); it passes on what the publisher needs.
        let (tx, mut rx) = mpsc::channel::<Result<(), String>>(2 * WINDOW);
        let (ack_tx, mut acks) = mpsc::unbounded_channel::<()>();
        let pump = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        if tx.send(Ok(())).await.is_err() {
                            return;
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::PubAck(_))) => {
                        // At most WINDOW are outstanding: bounded.
                        if ack_tx.send(()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string())).await;
                        return;
                    }
                }
            }
        });
        let _abort = AbortOnDrop(pump);
        // Connected first, then publishing.
        tokio::select! {
            _ = stop.cancelled() => return End::Stopped,
            r = rx.recv() => match r {
                Some(Ok(())) => {}
                Some(Err(e)) => return End::Lost(e),
                None => return End::Lost("the connection closed".into()),
            },
        }
        self.connected = true;
        tracing::info!(
            broker = %format!("{}:{}", self.p.settings.host, self.p.settings.port),
            from = self.sub.position(),
            "publishing registry changes to the MQTT broker"
        );
        loop {
            while self.inflight.len() < WINDOW
                && let Some(next) = self.pending.pop_front()
            {
                if let Some((topic, retain, payload)) = self.message(&next.what) {
                    if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, retain, payload) {
                        self.pending.push_front(next);
                        return End::Lost(e.to_string());
                    }
                    self.inflight.push_back(next.resume);
                }
            }
            let more = self.pending.is_empty() && self.inflight.len() < WINDOW;
            tokio::select! {
                _ = stop.cancelled() => {
                    let _ = client.try_disconnect();
                    return End::Stopped;
                }
                Some(()) = acks.recv() => {
                    self.inflight.pop_front();
                }
                r = rx.recv() => match r {
                    Some(Ok(())) => {}
                    Some(Err(e)) => return End::Lost(e),
                    None => return End::Lost("the connection closed".into()),
                },
                d = self.sub.next(), if more => self.expand(d),
                _ = sleep_until_some(self.flush_at), if self.flush_at.is_some() => self.flush(),
            }
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
                    self.dirty.entry(e.key.clone()).or_insert(resume);
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
                    .retained
                    .iter()
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
    fn message(&mut self, what: &What) -> Option<(String, bool, Vec<u8>)> {
        let p = self.p;
        match what {
            What::Change(e) => {
                let payload = p.encoding.change(e);
                Some((p.topic(&e.key), false, payload))
            }
            What::Healthy(key) => {
                let topic = format!("{}/healthy", p.topic(key));
                let Some(s) = p.registry.service(key).filter(|s| !s.instances.is_empty()) else {
                    self.retained.remove(key);
                    return Some((topic, true, Vec::new()));
                };
                // Written straight out: a busy registry publishes a
                // thousand sets a second, each with every healthy instance.
                let mut payload = Vec::with_capacity(64 + 320 * s.instances.len());
                payload.extend_from_slice(b"{\"service\":");
                let _ = serde_json::to_writer(&mut payload, key.service.as_str());
                payload.extend_from_slice(b",\"datacenter\":");
                let _ = serde_json::to_writer(&mut payload, key.dc.as_str());
                payload.extend_from_slice(
                    format!(",\"index\":{},\"instances\":[", s.index).as_bytes(),
                );
                let healthy = s.instances.values().filter(|i| plan::healthy(&s, i));
                for (n, i) in healthy.enumerate() {
                    if n > 0 {
                        payload.push(b',');
                    }
                    p.encoding.instance(i, &mut payload);
                }
                payload.extend_from_slice(b"]}");
                if payload.len() + topic.len() > MAX_PACKET {
                    tracing::warn!(
                        topic,
                        bytes = payload.len(),
                        "a healthy set is too large for one MQTT message; not published"
                    );
                    return None;
                }
                self.retained.insert(key.clone());
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

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
