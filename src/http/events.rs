//! Event streams: `GET /v1/events` (Server-Sent Events) and
//! `GET /v1/events/ws` (WebSocket), both following the change feed.
//!
//! ```text
//!   since=N (or Last-Event-ID: N) --subscribe_from--> feed
//!     N = 0, or older than the feed keeps: one `snapshot` (every service
//!     the caller may read, as of index I; its id is I), then the changes
//!   every change: one `change` with id = its index, in index order
//!   fell out of the feed while connected: one `resync`, then the stream ends
//! ```
//!
//! A stream holds only its place in the feed: a consumer that does not
//! read leaves its events in the feed's bounded ring, and its connection
//! waits on the socket with at most one delivery (in writes of at most
//! [`CHUNK`] bytes), so the server's memory stays bounded whatever
//! consumers do. Under a stream of changes each consumer is written at
//! most once per `http.event_write_interval`. Resuming with the
//! id of the last event seen delivers every later change exactly once.
//! Streams end when the server stops.
//!
//! An SSE consumer whose `Accept-Encoding` takes gzip (browsers, Go's and
//! Python's HTTP clients do by default) gets the stream gzipped: a shared
//! delivery is compressed once for all of them (`gzip`), so a hundred
//! consumers cost about one compression and a tenth of the bytes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message as WsMessage, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::HttpState;
use super::auth::Caller;
use super::error::{ApiError, ApiQuery};
use super::gzip::{self, Piece};
use super::native::view;
use crate::core::{
    Access, AclEvent, AclKey, AclObject, Event, InstanceId, ServiceKey, ServiceName,
    ServiceSnapshot,
};
use crate::events::{Delivery, SnapshotReason, Subscription};
use crate::policy::{self, Resource};
use hyper::body::Bytes;

/// The most bytes of several messages joined into one write (a single
/// larger message, such as a snapshot, goes alone).
const CHUNK: usize = 256 << 10;

/// A comment line sent when nothing else was for this long, so proxies
/// and clients see the stream is alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The query of both streams.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// The index of the last change the consumer has; 0 (the default): a
    /// snapshot first.
    since: Option<u64>,
    /// Only this service's changes (of every datacenter).
    service: Option<String>,
}

/// One message of a stream.
#[derive(Debug, Clone)]
pub enum Message {
    /// Every service the caller may read as of `index`.
    Snapshot { index: u64, body: Value },
    /// One instance change, encoded once for every stream ([`EncodedChanges`]).
    Change(Arc<EncodedChange>),
    /// One key/value change.
    Kv { index: u64, body: Value },
    /// The consumer fell behind what the feed keeps: it must start again
    /// from a snapshot (`since=0`). The stream ends after it.
    Resync { index: u64 },
}

impl Message {
    fn kind(&self) -> &'static str {
        match self {
            Message::Snapshot { .. } => "snapshot",
            Message::Change(_) | Message::Kv { .. } => "change",
            Message::Resync { .. } => "resync",
        }
    }

    fn index(&self) -> u64 {
        match self {
            Message::Snapshot { index, .. }
            | Message::Kv { index, .. }
            | Message::Resync { index } => *index,
            Message::Change(c) => c.index,
        }
    }

    /// The JSON of a message; a change is already encoded (`Err`).
    fn body(&self) -> Result<Value, &EncodedChange> {
        Ok(match self {
            Message::Snapshot { body, .. } | Message::Kv { body, .. } => body.clone(),
            Message::Change(c) => return Err(c),
            Message::Resync { index } => json!({
                "index": index,
                "reason": "this consumer fell behind what the server keeps; start again with since=0",
            }),
        })
    }

    /// As one Server-Sent Event: its id is the index to resume from.
    fn sse(&self) -> Bytes {
        match self.body() {
            Ok(body) => sse_frame(self.index(), self.kind(), &body.to_string()),
            Err(c) => c.sse.clone(),
        }
    }

    /// As one WebSocket text message.
    fn ws(&self) -> Utf8Bytes {
        match self.body() {
            Ok(body) => ws_text(self.index(), self.kind(), body),
            Err(c) => c.ws(),
        }
    }
}

fn sse_frame(index: u64, kind: &str, data: &str) -> Bytes {
    format!("id: {index}\nevent: {kind}\ndata: {data}\n\n").into()
}

fn ws_text(index: u64, kind: &str, mut body: Value) -> Utf8Bytes {
    if let Value::Object(m) = &mut body {
        m.insert("type".into(), kind.into());
        m.insert("index".into(), index.into());
    }
    body.to_string().into()
}

/// One instance change as every stream sends it.
#[derive(Debug)]
pub struct EncodedChange {
    index: u64,
    key: ServiceKey,
    id: InstanceId,
    /// The `change` event's data (the MQTT event's payload too).
    data: Bytes,
    sse: Bytes,
    /// Made by the first WebSocket that sends it: most deployments
    /// follow with SSE or MQTT alone.
    ws: std::sync::OnceLock<Utf8Bytes>,
}

impl EncodedChange {
    /// The WebSocket message: the same object with its type first.
    fn ws(&self) -> Utf8Bytes {
        self.ws
            .get_or_init(|| {
                let data = std::str::from_utf8(&self.data).unwrap_or("{}");
                format!(
                    "{{\"type\":\"change\",{}",
                    data.strip_prefix('{').unwrap_or("}")
                )
                .into()
            })
            .clone()
    }
}

/// The latest changes, each encoded once for all streams: without it,
/// every consumer would build and serialize the same documents, and a
/// hundred consumers would cost a hundred times one. A fixed number of
/// slots, each holding the change whose index maps to it: memory is
/// bounded, and a consumer far behind just encodes its change again.
pub struct EncodedChanges {
    slots: Box<[Mutex<Option<Arc<EncodedChange>>>]>,
}

impl Default for EncodedChanges {
    fn default() -> Self {
        Self {
            slots: (0..ENCODED_SLOTS).map(|_| Mutex::new(None)).collect(),
        }
    }
}

/// Slots of [`EncodedChanges`] (a power of two).
const ENCODED_SLOTS: usize = 4096;

impl EncodedChanges {
    /// `e` as every stream sends it.
    pub fn get(&self, st: &HttpState, e: &Event) -> Arc<EncodedChange> {
        let slot = &self.slots[(e.index as usize) & (ENCODED_SLOTS - 1)];
        if let Some(c) = slot.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
            && c.index == e.index
            && c.key == e.key
            && c.id == e.id
        {
            return c.clone();
        }
        // The event's data is written inside its SSE frame, and is a
        // slice of it.
        let mut frame = Vec::with_capacity(640);
        frame.extend_from_slice(b"id: ");
        frame.extend_from_slice(itoa::Buffer::new().format(e.index).as_bytes());
        frame.extend_from_slice(b"\nevent: change\ndata: ");
        let start = frame.len();
        change_json(st, e, &mut frame);
        let end = frame.len();
        frame.extend_from_slice(b"\n\n");
        let sse = Bytes::from(frame);
        let c = Arc::new(EncodedChange {
            index: e.index,
            key: e.key.clone(),
            id: e.id.clone(),
            data: sse.slice(start..end),
            sse,
            ws: Default::default(),
        });
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
        c
    }
}

/// One change as a `change` event's data (and an MQTT event's payload),
/// written straight from the registry's values:
/// `{"index","kind","service","datacenter","id","instance"}`, the instance
/// as the API shows it (`null` once it is gone).
fn change_json(st: &HttpState, e: &Event, out: &mut Vec<u8>) {
    let string = |out: &mut Vec<u8>, s: &str| {
        let _ = serde_json::to_writer(&mut *out, s);
    };
    out.extend_from_slice(b"{\"index\":");
    out.extend_from_slice(itoa::Buffer::new().format(e.index).as_bytes());
    out.extend_from_slice(b",\"kind\":");
    string(out, e.kind.as_str());
    out.extend_from_slice(b",\"service\":");
    string(out, e.key.service.as_str());
    out.extend_from_slice(b",\"datacenter\":");
    string(out, e.key.dc.as_str());
    out.extend_from_slice(b",\"id\":");
    string(out, e.id.as_str());
    out.extend_from_slice(b",\"instance\":");
    match e.instance.as_deref() {
        Some(i) => view(st, i).write(out),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
}

/// The streams' encoding, for consumers outside the API.
pub struct Json(pub HttpState);

impl crate::events::Encoding for Json {
    fn change(&self, event: &Event) -> Bytes {
        self.0.encoded_changes.get(&self.0, event).data.clone()
    }

    fn instance_encoder<'a>(&'a self, key: &ServiceKey) -> crate::events::InstanceEncoder<'a> {
        let names = super::dns_names(&self.0, &key.dc, &key.service);
        Box::new(move |instance, out| {
            super::native::view_named(std::borrow::Cow::Borrowed(&names), instance).write(out);
        })
    }
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One consumer's follower: its place in the feed, what it may see.
struct Follow {
    st: HttpState,
    sub: Subscription,
    caller: Caller,
    service: Option<ServiceName>,
    /// A delivery was made (a later snapshot is a resync).
    started: bool,
    /// The snapshot of a consumer from index 0, taken when it subscribed.
    first: Option<Delivery>,
    /// The shortest time between two deliveries (`http.event_write_interval`).
    interval: Duration,
    /// When the last delivery was made: the next waits until
    /// `interval` after it, and takes everything that came meanwhile.
    last: Option<tokio::time::Instant>,
    /// The consumer sees every change (no `?service=`, reads every
    /// service and key): it takes [`SharedDeliveries`] while no intention
    /// can hold it back ([`Caller::held_to_intentions`]).
    everything: bool,
}

/// What a consumer is sent next.
enum Delivered {
    /// Its own messages.
    Own(Vec<Message>),
    /// Messages every consumer that sees everything is sent alike, from
    /// the one at this position on (the consumer already had those
    /// before it).
    Shared(Arc<SharedDelivery>, usize),
}

impl Delivered {
    fn messages(&self) -> &[Message] {
        match self {
            Delivered::Own(m) => m,
            Delivered::Shared(d, skip) => &d.messages[*skip..],
        }
    }
}

/// The changes after one index as every consumer that sees everything is
/// sent them: encoded and joined once, not once per consumer.
pub struct SharedDelivery {
    /// The first index wanted (the consumers' position + 1).
    from: u64,
    /// The index of the last change in it.
    last: u64,
    messages: Vec<Message>,
    /// The SSE writes of `messages`, made by the first SSE stream that
    /// sends them.
    sse: std::sync::OnceLock<Vec<Bytes>>,
    /// The same writes compressed, made by the first gzip stream.
    sse_gzip: std::sync::OnceLock<Vec<Piece>>,
}

impl SharedDelivery {
    fn sse(&self) -> &[Bytes] {
        self.sse.get_or_init(|| sse_writes(&self.messages))
    }

    fn sse_gzip(&self) -> &[Piece] {
        self.sse_gzip
            .get_or_init(|| self.sse().iter().map(|w| Piece::of(w)).collect())
    }
}

/// The latest [`SharedDelivery`]. Consumers that see everything are
/// written at the same instants (multiples of `http.event_write_interval`
/// since the API started), so under a stream of changes all of them that
/// are caught up want the same changes at once: the first builds the
/// delivery, the others take it.
#[derive(Default)]
pub struct SharedDeliveries {
    latest: Mutex<Option<Arc<SharedDelivery>>>,
}

impl SharedDeliveries {
    /// The latest delivery if it holds the change at `from` and has
    /// nothing before that the consumer lacks, with the position in it of
    /// the first message from `from` on. A consumer that takes a delivery
    /// in its middle (it connected, or last took one, at another moment)
    /// ends where every other taker ends: from then on they are at the
    /// same position at the same instants.
    fn get(&self, from: u64) -> Option<(Arc<SharedDelivery>, usize)> {
        let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        let d = latest
            .as_ref()
            .filter(|d| d.from <= from && from <= d.last)?;
        let skip = d.messages.partition_point(|m| m.index() < from);
        (skip < d.messages.len()).then(|| (d.clone(), skip))
    }

    /// Offers a delivery that a consumer built for itself: it becomes the
    /// latest only when it starts after the latest ends. A consumer behind
    /// the others (a slow reader taking its delivery late) keeps its own,
    /// so the consumers in step still share theirs; it would otherwise
    /// become the latest, and every other consumer would send its tail
    /// encoded (and compressed) again for itself.
    fn offer(&self, d: &Arc<SharedDelivery>) {
        let mut latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        if latest.as_ref().is_none_or(|l| d.from > l.last) {
            *latest = Some(d.clone());
        }
    }
}

impl Follow {
    /// Whether the consumer is shown `service`: its rules read it and the
    /// intentions let it discover it, as the listing routes decide.
    fn may_read(&self, service: &ServiceName) -> bool {
        self.service.as_ref().is_none_or(|s| s == service)
            && self
                .caller
                .may(&self.st, Resource::Service(service.as_str()), Access::Read)
            && self.caller.may_discover(&self.st, service)
    }

    fn service_body(&self, s: &ServiceSnapshot) -> Value {
        json!({
            "service": s.key.service.as_str(),
            "datacenter": s.key.dc.as_str(),
            "index": s.index,
            "instances": s.instances.values().map(|i| view(&self.st, i)).collect::<Vec<_>>(),
        })
    }

    /// Key/value changes are shown to streams of every service (not to
    /// a stream of one service), for the keys the caller may read.
    fn may_read_key(&self, key: &str) -> bool {
        self.service.is_none() && self.caller.may(&self.st, Resource::Key(key), Access::Read)
    }

    fn kv_body(&self, e: &AclEvent) -> Option<Value> {
        let AclKey::Kv(key) = &e.key else {
            return None;
        };
        if !self.may_read_key(key.as_str()) {
            return None;
        }
        let value = match &e.value {
            Some(AclObject::Kv(entry)) => Some(base64_of(&entry.value)),
            _ => None,
        };
        Some(json!({
            "index": e.index,
            "kind": if value.is_some() { "kv.put" } else { "kv.delete" },
            "key": key.as_str(),
            "value": value,
        }))
    }

    /// The next messages (waits for a change when there is none).
    ///
    /// Deliveries are paced: under a stream of changes a consumer gets
    /// one write per `interval` holding every change since the last,
    /// instead of a wake-up, a read of the feed and a system call per
    /// change, which with a hundred consumers would cost more than the
    /// registrations themselves. A change after a quiet spell goes out at
    /// once. Dropping this future loses nothing (its place stays in `sub`).
    async fn next(&mut self) -> Delivered {
        if let Some(last) = self.last
            && tokio::time::Instant::now() < last + self.interval
        {
            // The first write instant after the last write: the same
            // for every consumer (see `SharedDeliveries`).
            let epoch = self.st.started;
            let step = self.interval.as_nanos();
            let ticks = last.saturating_duration_since(epoch).as_nanos() / step + 1;
            let at = epoch + Duration::from_nanos(u64::try_from(ticks * step).unwrap_or(u64::MAX));
            tokio::time::sleep_until(at).await;
        }
        // Intentions may come (or an anonymous caller's address gain an
        // identity) while it follows: checked at each delivery.
        let shared = self.everything && !self.caller.held_to_intentions(&self.st);
        let delivered = if shared && self.first.is_none() {
            self.take_shared().await
        } else {
            Delivered::Own(self.take().await)
        };
        if !self.interval.is_zero() {
            self.last = Some(tokio::time::Instant::now());
        }
        delivered
    }

    /// The next changes of a consumer that sees everything: the shared
    /// delivery from its position when there is one, else its own, shared.
    async fn take_shared(&mut self) -> Delivered {
        loop {
            self.sub.ready().await;
            let from = self.sub.position() + 1;
            if let Some((d, skip)) = self.st.shared_deliveries.get(from) {
                self.sub.skip_to(d.last);
                self.started = true;
                return Delivered::Shared(d, skip);
            }
            let Some(delivery) = self.sub.try_next() else {
                continue;
            };
            // A snapshot (or resync) is this consumer's alone, and so is a
            // delivery coalesced for a consumer far behind: another taker
            // would miss the changes it leaves out.
            let own = matches!(
                delivery,
                Delivery::Snapshot { .. }
                    | Delivery::Changes {
                        coalesced: true,
                        ..
                    }
            );
            self.first = Some(delivery);
            let messages = self.take().await;
            if own || messages.is_empty() {
                return Delivered::Own(messages);
            }
            let d = Arc::new(SharedDelivery {
                from,
                last: self.sub.position(),
                messages,
                sse: Default::default(),
                sse_gzip: Default::default(),
            });
            self.st.shared_deliveries.offer(&d);
            return Delivered::Shared(d, 0);
        }
    }

    async fn take(&mut self) -> Vec<Message> {
        loop {
            let delivery = match self.first.take() {
                Some(d) => d,
                None => self.sub.next().await,
            };
            let first = !self.started;
            self.started = true;
            match delivery {
                Delivery::Snapshot {
                    index, services, ..
                } if first => {
                    let services: Vec<Value> = services
                        .iter()
                        .filter(|s| self.may_read(&s.key.service))
                        .map(|s| self.service_body(s))
                        .collect();
                    let mut body = json!({ "index": index, "services": services });
                    if self.service.is_none() {
                        // The entries as of the snapshot's index: changes
                        // after it follow in the stream.
                        let kv: Vec<Value> = self
                            .st
                            .registry
                            .kv_list("")
                            .iter()
                            .filter(|e| e.index <= index && self.may_read_key(e.key.as_str()))
                            .map(|e| json!({ "key": e.key.as_str(), "value": base64_of(&e.value), "index": e.index }))
                            .collect();
                        body["kv"] = kv.into();
                    }
                    return vec![Message::Snapshot { index, body }];
                }
                Delivery::Snapshot { index, reason, .. } => {
                    debug_assert_eq!(reason, SnapshotReason::Resync);
                    return vec![Message::Resync { index }];
                }
                Delivery::Changes { events, .. } => {
                    let mut out: Vec<Message> = events
                        .iter()
                        .filter(|e| self.may_read(&e.key.service))
                        .map(|e| Message::Change(self.st.encoded_changes.get(&self.st, e)))
                        .collect();
                    let kv = self.sub.take_kv();
                    if !kv.is_empty() {
                        out.extend(kv.iter().filter_map(|e| {
                            Some(Message::Kv {
                                index: e.index,
                                body: self.kv_body(e)?,
                            })
                        }));
                        out.sort_by_key(Message::index);
                    }
                    if !out.is_empty() {
                        return out;
                    }
                }
            }
        }
    }
}

/// Where a stream starts: `Last-Event-ID` (an SSE client resuming) wins
/// over `since`; an index the registry has not reached (a consumer of
/// another server, or of a store that was replaced) starts from a snapshot.
fn start(st: &HttpState, q: &EventsQuery, headers: &HeaderMap) -> Result<u64, ApiError> {
    let mut since = q.since.unwrap_or(0);
    if let Some(v) = headers.get("last-event-id") {
        since = v
            .to_str()
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .ok_or_else(|| {
                ApiError::BadRequest(
                    "Last-Event-ID must be the id of an event of this stream (an index)".into(),
                )
            })?;
    }
    Ok(if since > st.feed.index() { 0 } else { since })
}

fn follow(
    st: &HttpState,
    caller: Caller,
    q: &EventsQuery,
    headers: &HeaderMap,
) -> Result<Follow, ApiError> {
    let service = match q.service.as_deref() {
        None | Some("") => None,
        Some(s) => Some(ServiceName::new(s)?),
    };
    if let Some(s) = &service {
        caller.require(st, Resource::Service(s.as_str()), Access::Read)?;
        caller.require_intention(st, s)?;
    }
    let since = start(st, q, headers)?;
    let everything = service.is_none() && policy::reads_everything(&caller.grants, st.auth.default);
    // From 0: the registry as it is, then what follows it (the feed
    // alone would skip the snapshot when it holds every change so far).
    let (sub, first) = if since == 0 {
        let (index, services) = st.registry.snapshot();
        let snapshot = Delivery::Snapshot {
            index,
            services,
            reason: SnapshotReason::Start,
        };
        (st.feed.subscribe_with_kv_from(index), Some(snapshot))
    } else {
        (st.feed.subscribe_with_kv_from(since), None)
    };
    Ok(Follow {
        st: st.clone(),
        sub,
        caller,
        service,
        started: false,
        first,
        interval: st.event_write_interval,
        last: None,
        everything,
    })
}

/// `GET /v1/events`: the change feed as Server-Sent Events.
pub async fn sse(
    State(st): State<HttpState>,
    caller: Caller,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let f = follow(&st, caller, &q, &headers)?;
    let gzip = gzip::accepted(
        headers
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok()),
    );
    let mut stream = SseStream {
        f,
        stop: st.streams_stop.clone(),
        ready: Default::default(),
        gzip: gzip.then(gzip::Stream::default),
        ended: false,
    };
    // `retry:` asks clients to reconnect after a second.
    stream.queue(&[Bytes::from_static(RETRY)], Some(&*RETRY_PIECE));
    let body = futures_util::stream::unfold(stream, SseStream::step);
    let mut res = (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::VARY, HeaderValue::from_static("accept-encoding")),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response();
    if gzip {
        res.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Ok(res)
}

const RETRY: &[u8] = b"retry: 1000\n\n";
const KEEP_ALIVE_COMMENT: &[u8] = b": keep-alive\n\n";
static RETRY_PIECE: std::sync::LazyLock<Piece> = std::sync::LazyLock::new(|| Piece::of(RETRY));
static KEEP_ALIVE_PIECE: std::sync::LazyLock<Piece> =
    std::sync::LazyLock::new(|| Piece::of(KEEP_ALIVE_COMMENT));

/// One SSE stream's body, polled by its connection when the socket takes
/// more: no task or queue of its own, so a consumer that does not read
/// holds only its place in the feed and one write, whatever it falls
/// behind, and a delivery costs one wake-up of the connection.
struct SseStream {
    f: Follow,
    stop: tokio_util::sync::CancellationToken,
    /// Writes of the last delivery not yet taken by the connection.
    ready: std::collections::VecDeque<Bytes>,
    /// Where the stream is gzipped: what it sent (its trailer is the last
    /// write).
    gzip: Option<gzip::Stream>,
    /// A `resync` was sent or the server stops: the stream ends after its
    /// writes.
    ended: bool,
}

impl SseStream {
    async fn step(mut self) -> Option<(Result<Bytes, std::convert::Infallible>, Self)> {
        loop {
            if let Some(chunk) = self.ready.pop_front() {
                return Some((Ok(chunk), self));
            }
            if self.ended {
                // A gzip stream ends with its trailer, so that the
                // consumer can check it got everything.
                let trailer = self.gzip.take()?.end();
                return Some((Ok(trailer), self));
            }
            let messages = tokio::select! {
                _ = self.stop.cancelled() => {
                    self.ended = true;
                    continue;
                }
                m = tokio::time::timeout(KEEP_ALIVE, self.f.next()) => m,
            };
            let Ok(delivered) = messages else {
                self.queue(
                    &[Bytes::from_static(KEEP_ALIVE_COMMENT)],
                    Some(&*KEEP_ALIVE_PIECE),
                );
                continue;
            };
            match delivered {
                Delivered::Own(messages) => {
                    self.ended = messages.iter().any(|m| matches!(m, Message::Resync { .. }));
                    self.queue(&sse_writes(&messages), None);
                }
                Delivered::Shared(d, 0) => match &mut self.gzip {
                    None => self.ready.extend(d.sse().iter().cloned()),
                    Some(g) => {
                        for p in d.sse_gzip() {
                            self.ready.extend(g.send(p));
                        }
                    }
                },
                Delivered::Shared(d, skip) => self.queue(&sse_writes(&d.messages[skip..]), None),
            }
        }
    }

    /// Queues `writes` (compressed in a gzip stream, or `piece` when it is
    /// given: the same writes compressed already).
    fn queue(&mut self, writes: &[Bytes], piece: Option<&Piece>) {
        match (&mut self.gzip, piece) {
            (None, _) => self.ready.extend(writes.iter().cloned()),
            (Some(g), Some(p)) => self.ready.extend(g.send(p)),
            (Some(g), None) => {
                for w in writes {
                    self.ready.extend(g.send(&Piece::of(w)));
                }
            }
        }
    }
}

/// One write for a whole delivery, in pieces of at most [`CHUNK`] bytes
/// (a larger message alone): each write to a socket costs a system call
/// and a wake-up of the reader. Nothing after a `resync`.
fn sse_writes(messages: &[Message]) -> Vec<Bytes> {
    let mut writes = Vec::new();
    let mut frames: Vec<Bytes> = Vec::new();
    let mut size = 0;
    for m in messages {
        let frame = m.sse();
        if size + frame.len() > CHUNK && size > 0 {
            writes.extend(joined(&mut frames));
            size = 0;
        }
        size += frame.len();
        frames.push(frame);
        if matches!(m, Message::Resync { .. }) {
            break;
        }
    }
    writes.extend(joined(&mut frames));
    writes
}

/// `frames` as one write (none when empty), leaving `frames` empty.
fn joined(frames: &mut Vec<Bytes>) -> Option<Bytes> {
    let chunk = match frames.len() {
        0 => None,
        1 => frames.pop(),
        _ => Some(frames.concat().into()),
    };
    frames.clear();
    chunk
}

/// `GET /v1/events/ws`: the same messages over a WebSocket, one JSON text
/// message each with `type` (`snapshot`, `change`, `resync`) and `index`.
pub async fn ws(
    State(st): State<HttpState>,
    caller: Caller,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    // Who may read first: a refused caller learns nothing more.
    let f = follow(&st, caller, &q, &headers)?;
    let upgrade = upgrade.map_err(|e| {
        ApiError::BadRequest(format!(
            "GET /v1/events/ws is a WebSocket: send an upgrade request ({e})"
        ))
    })?;
    let stop = st.streams_stop.clone();
    Ok(upgrade
        .max_message_size(64 << 10)
        .on_upgrade(move |socket| ws_follow(socket, f, stop)))
}

async fn ws_follow(
    mut socket: WebSocket,
    mut f: Follow,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let messages = tokio::select! {
            _ = stop.cancelled() => {
                let _ = socket.send(WsMessage::Close(None)).await;
                return;
            }
            incoming = socket.recv() => match incoming {
                // Pings are answered by the library; anything else is ignored.
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            },
            m = f.next() => m,
        };
        // One message per change, written to the socket together.
        for m in messages.messages() {
            let end = matches!(m, Message::Resync { .. });
            if socket.feed(WsMessage::Text(m.ws())).await.is_err() {
                return;
            }
            if end {
                let _ = socket.send(WsMessage::Close(None)).await;
                return;
            }
        }
        if socket.flush().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A delivery of the changes `from..=last` (their content does not
    /// matter to sharing: only their indexes).
    fn delivery(from: u64, last: u64) -> Arc<SharedDelivery> {
        Arc::new(SharedDelivery {
            from,
            last,
            messages: (from..=last)
                .map(|index| Message::Resync { index })
                .collect(),
            sse: Default::default(),
            sse_gzip: Default::default(),
        })
    }

    #[test]
    fn a_laggards_own_delivery_leaves_the_others_sharing_theirs() {
        let shared = SharedDeliveries::default();
        // The consumers in step built 11..=20 and share it.
        shared.offer(&delivery(11, 20));
        // A laggard took its delivery late, from 5: it keeps it to itself.
        shared.offer(&delivery(5, 15));
        let (d, skip) = shared.get(11).expect("the in-step delivery stays");
        assert_eq!((d.from, d.last, skip), (11, 20, 0));
        // One that connected meanwhile joins it in the middle.
        let (d, skip) = shared.get(14).expect("a later position inside it");
        assert_eq!((d.from, skip), (11, 3));
        // The laggard (at 5) is not handed a delivery with a gap before it.
        assert!(shared.get(5).is_none());
        // Nor is a consumer already past it.
        assert!(shared.get(21).is_none());
        // The next in-step delivery replaces it.
        shared.offer(&delivery(21, 30));
        assert_eq!(shared.get(21).map(|(d, _)| d.from), Some(21));
        assert!(shared.get(11).is_none());
    }
}
