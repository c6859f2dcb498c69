//! Serving the router: one accept loop for plain HTTP and HTTPS
//! (tokio-rustls), each connection served by hyper-util's HTTP/1.1 + HTTP/2
//! builder, with every deadline and bound of [`Limits`]:
//!
//! ```text
//!   accept --EMFILE--> back off (10ms .. 1s), one coalesced warning
//!     | over max_connections / per-IP cap: closed at once, counted
//!     v
//!   TLS handshake (header_read_timeout) -> hyper auto builder
//!     | h1: max_buf_size, max_headers, Title-Case header names
//!     | h2: keep-alive pings, max_header_list_size
//!     | a request head begun but not whole within header_read_timeout: closed
//!     | no request in flight for idle_timeout: graceful close
//!     v
//!   head limits (414 / 431 as JSON) -> body deadline (408) -> router
//! ```
//!
//! hyper's own limits are set above Maxine's (twice as large), so that a
//! request just over a limit reaches [`check_head`] and is answered with the
//! API's JSON error; only a head beyond hyper's buffer gets hyper's bare
//! answer. Memory per connection stays bounded by hyper's buffer either way.
//!
//! On shutdown, accepting stops and open connections finish the requests in
//! flight.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, header};
use axum::response::IntoResponse;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ApiError;
use crate::telemetry::{Coalesced, LogEvery};

/// The deadlines and bounds of the HTTP server (from `[http]`, validated).
#[derive(Clone, Debug)]
pub struct Limits {
    /// The TLS handshake and each request head must arrive within this.
    pub header_read_timeout: Duration,
    /// Each request body must arrive whole within this (408 after).
    pub body_timeout: Duration,
    /// A connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// HTTP/2 ping interval, and how long a ping may go unanswered.
    pub h2_ping_interval: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Request line plus headers, in bytes (431 beyond).
    pub max_header_bytes: usize,
    /// Request target, in bytes (414 beyond).
    pub max_uri_bytes: usize,
    /// Headers per request (431 beyond).
    pub max_headers: usize,
}

/// How often a flood of one warning (refused connections, accept errors)
/// is logged.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// The back-off of accept when descriptors run out grows to this.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Connections refused by the caps since the start (all of them, logged or not).
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// How many connections the caps have refused since the process started.
pub fn refused_connections() -> u64 {
    REFUSED.load(Ordering::Relaxed)
}

/// Serves `router` on `listener` (over TLS when `tls` is given) until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    router: super::Api,
    tls: Option<Arc<ServerConfig>>,
    limits: Limits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let acceptor = tls.map(TlsAcceptor::from);
    // Floods of one failure log one line per interval, with a count.
    let mut accept_log = LogEvery::new(WARN_EVERY);
    let mut refused_log = LogEvery::new(WARN_EVERY);
    let slots = Arc::new(Slots::new(&limits));
    let limits = Arc::new(limits);
    let builder = Arc::new(builder(&limits));
    let connections = TaskTracker::new();
    let mut backoff = Duration::ZERO;
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    backoff = Duration::ZERO;
                    a
                }
                Err(e) => {
                    if !out_of_resources(&e) {
                        // The peer gave up before we took it (ECONNABORTED and the like).
                        tracing::debug!(error = %e, "accepting an HTTP connection failed");
                        continue;
                    }
                    // Out of descriptors: wait for some to be closed, do not spin.
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_BACKOFF);
                    if let Some(Coalesced(coalesced)) = accept_log.hit(now()) {
                        tracing::warn!(error = %e, coalesced, ?backoff, "cannot accept HTTP connections: out of file descriptors; backing off");
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => continue,
                    }
                }
            },
        };
        let Some(slot) = slots.admit(peer.ip()) else {
            // Closed at once: a client over its share holds nothing.
            drop(tcp);
            let total = REFUSED.fetch_add(1, Ordering::Relaxed) + 1;
            if let Some(Coalesced(coalesced)) = refused_log.hit(now()) {
                tracing::warn!(%peer, coalesced, total, max = limits.max_connections, per_ip = limits.max_connections_per_ip, "refused an HTTP connection: too many open connections");
            }
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let conn = Conn {
            router: router.clone(),
            limits: limits.clone(),
            builder: builder.clone(),
            peer,
            shutdown: shutdown.clone(),
        };
        let acceptor = acceptor.clone();
        connections.spawn(async move {
            conn.run(tcp, acceptor).await;
            drop(slot);
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Errors that mean the process or system is out of something accept
/// needs; anything else concerns one connection only.
fn out_of_resources(e: &io::Error) -> bool {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    const ENOBUFS: i32 = 105;
    const ENOMEM: i32 = 12;
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM))
}

fn builder(l: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        // Header names go out as the Node.js Maxine writes them
        // (`Location`, `Content-Type`): some of its SDKs look them up
        // case-sensitively. Names are read case-insensitively either way;
        // HTTP/2 names are lowercase by the protocol.
        .title_case_headers(true)
        // hyper's own head deadline also runs while a kept-alive
        // connection waits for its next request, which would make every
        // HTTP/1 connection's idle time header_read_timeout instead of
        // idle_timeout. [`Activity`] starts the deadline at the head's
        // first byte instead.
        .header_read_timeout(None)
        .max_buf_size((l.max_header_bytes * 2).max(8192))
        .max_headers(l.max_headers * 2);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(l.h2_ping_interval)
        .keep_alive_timeout(l.h2_ping_interval)
        .max_header_list_size(u32::try_from(l.max_header_bytes * 2).unwrap_or(u32::MAX));
    b
}

/// The connection caps: a semaphore for all, a count per client address.
struct Slots {
    total: Arc<Semaphore>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    per_ip_max: usize,
}

/// One admitted connection; dropping it frees its place.
struct Slot {
    slots: Arc<Slots>,
    ip: IpAddr,
    _permit: OwnedSemaphorePermit,
}

impl Slots {
    fn new(l: &Limits) -> Self {
        Self {
            total: Arc::new(Semaphore::new(l.max_connections)),
            per_ip: Mutex::new(HashMap::new()),
            per_ip_max: l.max_connections_per_ip,
        }
    }

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let permit = self.total.clone().try_acquire_owned().ok()?;
        let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= self.per_ip_max {
            return None;
        }
        *n += 1;
        Some(Slot {
            slots: self.clone(),
            ip,
            _permit: permit,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.slots.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// One accepted connection and what serving it needs.
struct Conn {
    router: super::Api,
    limits: Arc<Limits>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    peer: SocketAddr,
    shutdown: CancellationToken,
}

impl Conn {
    async fn run(self, tcp: TcpStream, acceptor: Option<TlsAcceptor>) {
        let Some(acceptor) = acceptor else {
            return self.serve(tcp).await;
        };
        let peer = self.peer;
        let handshake = tokio::time::timeout(self.limits.header_read_timeout, acceptor.accept(tcp));
        let stream = tokio::select! {
            _ = self.shutdown.cancelled() => return,
            r = handshake => match r {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            },
        };
        self.serve(stream).await
    }

    async fn serve<IO>(self, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            router,
            limits,
            builder,
            peer,
            shutdown,
        } = self;
        let activity = Activity::default();
        let inner = TowerToHyperService::new(router);
        let service = {
            let activity = activity.clone();
            let limits = limits.clone();
            hyper::service::service_fn(move |req: Request<Incoming>| {
                let busy = activity.busy();
                let refused = check_head(&req, &limits);
                let call = refused.is_none().then(|| {
                    let mut req = req.map(|b| {
                        if hyper::body::Body::is_end_stream(&b) {
                            Body::new(b) // no body: nothing to time
                        } else {
                            Body::new(DeadlineBody::new(b, limits.body_timeout))
                        }
                    });
                    // Who asks, for handlers and policy (`Peer`).
                    req.extensions_mut().insert(ConnectInfo(peer));
                    hyper::service::Service::call(&inner, req)
                });
                async move {
                    let res = match (refused, call) {
                        (Some(res), _) => res,
                        (None, Some(call)) => call.await?,
                        (None, None) => unreachable!("either refused or called"),
                    };
                    // A streamed body keeps the request in flight until it is
                    // sent (or dropped); a complete one is written at once.
                    if hyper::body::Body::size_hint(res.body()).exact().is_some() {
                        drop(busy);
                        return Ok::<_, std::convert::Infallible>(res);
                    }
                    Ok(res.map(|inner| Body::new(HoldBody { inner, _busy: busy })))
                }
            })
        };
        // hyper's own empty error answers become JSON ones.
        let io = super::hyper_errors::JsonErrors::new(Watched {
            inner: io,
            activity: activity.clone(),
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);
        // Before the first request the head deadline applies (it also
        // covers a client that sends nothing, before hyper picks a protocol).
        let first = limits.header_read_timeout.min(limits.idle_timeout);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = shutdown.cancelled() => {
                // Finish the requests in flight, accept no new ones.
                conn.as_mut().graceful_shutdown();
                conn.await
            }
            _ = activity.head_overdue(limits.header_read_timeout) => {
                tracing::debug!(%peer, "closing an HTTP connection: request head not received in time");
                Ok(())
            }
            _ = activity.idle(first, limits.idle_timeout) => {
                tracing::debug!(%peer, "closing an idle HTTP connection");
                conn.as_mut().graceful_shutdown();
                // Nothing is in flight: the close handshake (HTTP/2 GOAWAY and
                // PING) gets the head deadline, for a client that never answers.
                match tokio::time::timeout(limits.header_read_timeout, conn.as_mut()).await {
                    Ok(r) => r,
                    Err(_) => Ok(()),
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
        }
    }
}

/// Requests in flight on one connection, to find when it is idle. Per
/// request it costs two atomic updates and a clock read: the watcher
/// sleeps until the last request's end plus the idle time and looks again,
/// instead of being woken by every request.
#[derive(Clone)]
struct Activity(Arc<ActivityState>);

struct ActivityState {
    /// The connection's start: times are milliseconds since it.
    epoch: tokio::time::Instant,
    in_flight: AtomicU64,
    /// Requests started (0: none yet).
    started: AtomicU64,
    /// When the last request ended, in ms since `epoch`.
    last_end_ms: AtomicU64,
    /// HTTP/1 only: when the first byte of a request head not yet whole
    /// arrived, in ms since `epoch` plus one (0: no head begun).
    head_since_ms: AtomicU64,
    /// Wakes [`Activity::head_overdue`] when a head begins.
    head_begun: Notify,
    /// The connection speaks HTTP/2 (its preface was read): frames such as
    /// pings arrive between requests, and no head deadline applies.
    h2: AtomicBool,
    /// The first bytes read, to recognise the HTTP/2 preface.
    probe: Mutex<Vec<u8>>,
}

impl Default for Activity {
    fn default() -> Self {
        Self(Arc::new(ActivityState {
            epoch: tokio::time::Instant::now(),
            in_flight: AtomicU64::new(0),
            started: AtomicU64::new(0),
            last_end_ms: AtomicU64::new(0),
            head_since_ms: AtomicU64::new(0),
            head_begun: Notify::new(),
            h2: AtomicBool::new(false),
            probe: Mutex::new(Vec::new()),
        }))
    }
}

/// One request in flight; dropping it ends it.
struct Busy(Arc<ActivityState>);

impl Activity {
    fn busy(&self) -> Busy {
        // The head is whole: its deadline is met.
        self.0.head_since_ms.store(0, Ordering::Release);
        self.0.started.fetch_add(1, Ordering::Relaxed);
        self.0.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(self.0.clone())
    }

    /// Resolves once no request has been in flight for `first` (before any
    /// request) or `then` (after one).
    async fn idle(&self, first: Duration, then: Duration) {
        let s = &self.0;
        loop {
            let in_flight = s.in_flight.load(Ordering::Acquire);
            let started = s.started.load(Ordering::Relaxed);
            let since = Duration::from_millis(s.last_end_ms.load(Ordering::Acquire));
            let wait = if started == 0 { first } else { then };
            let until = s.epoch + since + wait;
            if in_flight > 0 {
                // Busy: look again once it could have become idle.
                tokio::time::sleep(wait).await;
                continue;
            }
            if tokio::time::Instant::now() >= until
                && s.started.load(Ordering::Relaxed) == started
                && s.in_flight.load(Ordering::Acquire) == 0
            {
                return;
            }
            tokio::time::sleep_until(until).await;
        }
    }

    /// Bytes were read from the client: on HTTP/1 with no request in
    /// flight they begin a request head, and its deadline starts.
    fn read(&self, bytes: &[u8]) {
        let s = &self.0;
        if bytes.is_empty() || s.h2.load(Ordering::Relaxed) {
            return;
        }
        if s.started.load(Ordering::Relaxed) == 0 {
            let mut probe = s.probe.lock().unwrap_or_else(|e| e.into_inner());
            if probe.len() < H2_PREFACE.len() {
                let take = bytes.len().min(H2_PREFACE.len() - probe.len());
                probe.extend_from_slice(&bytes[..take]);
                if H2_PREFACE.starts_with(&probe) {
                    if probe.len() == H2_PREFACE.len() {
                        s.h2.store(true, Ordering::Relaxed);
                        s.head_since_ms.store(0, Ordering::Release);
                    }
                    // Not known yet: the "before the first request"
                    // deadline of `idle` covers a preface sent slowly.
                    return;
                }
            }
        }
        if s.in_flight.load(Ordering::Acquire) > 0 {
            return; // a body, or a pipelined request hyper reads later
        }
        let now = s.epoch.elapsed().as_millis() as u64 + 1;
        if s.head_since_ms
            .compare_exchange(0, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            s.head_begun.notify_one();
        }
    }

    /// Resolves once a request head has been begun and not finished for
    /// `timeout` (HTTP/1).
    async fn head_overdue(&self, timeout: Duration) {
        let s = &self.0;
        loop {
            let begun = s.head_begun.notified();
            tokio::pin!(begun);
            begun.as_mut().enable();
            let since = s.head_since_ms.load(Ordering::Acquire);
            if since == 0 {
                begun.await;
                continue;
            }
            let until = s.epoch + Duration::from_millis(since - 1) + timeout;
            if tokio::time::Instant::now() >= until {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                // A new head (the old one finished): look again.
                _ = begun => {}
            }
        }
    }
}

/// What an HTTP/2 client sends first (RFC 9113 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection's byte stream, telling [`Activity`] what is read.
struct Watched<IO> {
    inner: IO,
    activity: Activity,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            this.activity.read(&buf.filled()[before..]);
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let ms = self.0.epoch.elapsed().as_millis() as u64;
        self.0.last_end_ms.fetch_max(ms, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight until the
/// body is sent or dropped (so a long download is not "idle").
struct HoldBody {
    inner: Body,
    _busy: Busy,
}

impl hyper::body::Body for HoldBody {
    type Data = hyper::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Enforces Maxine's limits on a request head before any handler runs,
/// answering in the API's JSON error format (`None`: within the limits).
fn check_head(req: &Request<Incoming>, l: &Limits) -> Option<Response<Body>> {
    let path = req.uri().path();
    let target = req
        .uri()
        .path_and_query()
        .map_or(path.len(), |p| p.as_str().len());
    let head_bytes = req.method().as_str().len()
        + target
        + req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    let err = if target > l.max_uri_bytes {
        ApiError::UriTooLong(format!(
            "the request target is {target} bytes, more than the limit of {}",
            l.max_uri_bytes
        ))
    } else if req.headers().len() > l.max_headers {
        ApiError::HeadersTooLarge(format!(
            "the request has {} headers, more than the limit of {}",
            req.headers().len(),
            l.max_headers
        ))
    } else if head_bytes > l.max_header_bytes {
        ApiError::HeadersTooLarge(format!(
            "the request head is {head_bytes} bytes, more than the limit of {}",
            l.max_header_bytes
        ))
    } else {
        return None;
    };
    let mut res = super::routing_error(path, err);
    // The rest of the request is not read: do not keep the connection.
    res.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    Some(res.into_response())
}

/// The error a request body fails with when it did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(pub Duration);

/// A request body that fails with [`BodyTimeout`] once its deadline passes
/// (a whole-body deadline, not one per frame: a trickle cannot extend it).
struct DeadlineBody {
    inner: Incoming,
    limit: Duration,
    /// From when the body was asked for.
    started: tokio::time::Instant,
    /// Made only when the body is not all there at the first read: a
    /// body that arrives with its head costs no timer.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl DeadlineBody {
    fn new(inner: Incoming, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            started: tokio::time::Instant::now(),
            deadline: None,
        }
    }
}

impl hyper::body::Body for DeadlineBody {
    type Data = hyper::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        let (started, limit) = (this.started, this.limit);
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(started + limit)));
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout(this.limit)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
