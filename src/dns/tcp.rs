//! DNS over TCP (RFC 7766): the acceptor, the table of open connections
//! that keeps them fair under pressure, and the per-connection loop.
//!
//! Fairness (RFC 7766 6.2.3). Clients are counted by prefix, the same
//! prefixes as response rate limiting ([`client_prefix`]): a prefix may hold
//! at most `per_prefix` connections (and one address at most `per_ip`). At
//! the total cap a newcomer is not simply refused, or a few prefixes that
//! keep their connections busy would lock everyone else out of TCP (and so
//! out of every truncated answer). Instead, if the newcomer's prefix holds
//! fewer connections than the largest prefix, the longest-idle connection of
//! the largest prefix (of the largest ones, when several tie) is closed to
//! make room. A prefix never loses a connection to one that holds as many
//! as it does, so the spread between prefixes never grows and greedy
//! prefixes cannot push out small ones, however active they keep their
//! connections. While more than 3/4 of the total cap is open, the idle
//! timeout is the shorter `busy_idle_timeout`.
//!
//! Cost: the table is locked per connection event (accept, close), never
//! per query. Per query a connection stamps its "last active" time into an
//! atomic of its own, and reads the number of open connections (an atomic)
//! to pick its idle timeout.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::answers::ReadyAnswers;
use super::rrl::client_prefix;
use crate::core::{QueryContext, Transport};
use crate::telemetry::LogEvery;

/// The TCP limits, as [`super::Limits`] carries them.
#[derive(Clone, Debug)]
pub struct TcpLimits {
    pub idle_timeout: Duration,
    /// Idle timeout while more than 3/4 of `max_connections` are open.
    pub busy_idle_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_prefix: usize,
    pub max_connections_per_ip: usize,
    /// Prefix lengths that count as one client (those of rate limiting).
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
}

impl TcpLimits {
    /// Above this many open connections the server counts as busy.
    fn busy_above(&self) -> usize {
        self.max_connections - self.max_connections / 4
    }
}

/// Counters of the TCP front end (read by tests and, later, metrics).
#[derive(Default, Debug)]
pub struct TcpStats {
    /// Connections open now.
    pub open: AtomicUsize,
    /// Connections closed to make room for a client of a smaller prefix.
    pub evicted: AtomicU64,
    /// Connections refused: their prefix or address was at its cap, or the
    /// total was and their prefix was among the largest.
    pub refused: AtomicU64,
}

/// One open connection, as the table sees it.
struct Slot {
    prefix: u128,
    addr: IpAddr,
    /// Milliseconds since [`Shared::epoch`] when it last finished a query
    /// (or was accepted).
    last_active: AtomicU64,
    /// Cancelled to close it (evicted), and on shutdown (a child token).
    stop: CancellationToken,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    conns: HashMap<u64, Arc<Slot>>,
    per_prefix: HashMap<u128, usize>,
    per_addr: HashMap<IpAddr, usize>,
}

/// What the table decides for a newcomer.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    Accept,
    /// Accept, after closing this connection.
    Evict(u64),
    Refuse(&'static str),
}

impl Table {
    fn decide(&self, prefix: u128, addr: IpAddr, limits: &TcpLimits) -> Admit {
        let mine = self.per_prefix.get(&prefix).copied().unwrap_or(0);
        if mine >= limits.max_connections_per_prefix {
            return Admit::Refuse("the client prefix is at its cap");
        }
        if self.per_addr.get(&addr).copied().unwrap_or(0) >= limits.max_connections_per_ip {
            return Admit::Refuse("the client address is at its cap");
        }
        if self.conns.len() < limits.max_connections {
            return Admit::Accept;
        }
        let largest = self.per_prefix.values().copied().max().unwrap_or(0);
        if mine >= largest {
            return Admit::Refuse("at the total cap, and the client prefix is among the largest");
        }
        self.conns
            .iter()
            .filter(|(_, s)| self.per_prefix.get(&s.prefix) == Some(&largest))
            .min_by_key(|(id, s)| (s.last_active.load(Ordering::Relaxed), **id))
            .map_or(Admit::Refuse("nothing to evict"), |(id, _)| {
                Admit::Evict(*id)
            })
    }

    fn insert(&mut self, slot: Arc<Slot>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        *self.per_prefix.entry(slot.prefix).or_default() += 1;
        *self.per_addr.entry(slot.addr).or_default() += 1;
        self.conns.insert(id, slot);
        id
    }

    /// Forgets a connection; `None` if it was already gone (evicted).
    fn remove(&mut self, id: u64) -> Option<Arc<Slot>> {
        let slot = self.conns.remove(&id)?;
        fn dec<K: std::hash::Hash + Eq>(m: &mut HashMap<K, usize>, k: K) {
            if let Some(n) = m.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&k);
                }
            }
        }
        dec(&mut self.per_prefix, slot.prefix);
        dec(&mut self.per_addr, slot.addr);
        Some(slot)
    }
}

/// State shared by the acceptor and every connection.
struct Shared {
    limits: TcpLimits,
    table: Mutex<Table>,
    stats: Arc<TcpStats>,
    /// Where responses are counted (`None`: metrics off).
    counters: Option<Arc<crate::telemetry::metrics::DnsSlot>>,
    epoch: Instant,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn millis(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// The idle timeout right now: shorter while busy.
    fn idle_timeout(&self) -> Duration {
        if self.stats.open.load(Ordering::Relaxed) > self.limits.busy_above() {
            self.limits.busy_idle_timeout
        } else {
            self.limits.idle_timeout
        }
    }

    /// Admits a newcomer, closing another connection if the rule says so.
    fn admit(
        self: &Arc<Self>,
        peer: IpAddr,
        stop: CancellationToken,
    ) -> Result<Permit, &'static str> {
        let prefix = client_prefix(peer, self.limits.ipv4_prefix, self.limits.ipv6_prefix);
        let addr = client_address(peer);
        let mut t = self.lock();
        match t.decide(prefix, addr, &self.limits) {
            Admit::Refuse(why) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                return Err(why);
            }
            Admit::Evict(id) => {
                if let Some(victim) = t.remove(id) {
                    victim.stop.cancel();
                    self.stats.open.fetch_sub(1, Ordering::Relaxed);
                    self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                }
            }
            Admit::Accept => {}
        }
        let slot = Arc::new(Slot {
            prefix,
            addr,
            last_active: AtomicU64::new(self.millis(Instant::now())),
            stop,
        });
        let id = t.insert(slot.clone());
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        Ok(Permit {
            shared: self.clone(),
            id,
            slot,
        })
    }
}

/// A connection's place in the table; dropping it frees the place.
struct Permit {
    shared: Arc<Shared>,
    id: u64,
    slot: Arc<Slot>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.shared.lock().remove(self.id).is_some() {
            self.shared.stats.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// What the per-address cap counts: the IPv4 address, or the /64 of an IPv6
/// address (one host usually holds a whole /64).
fn client_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

/// Accept back-off after running out of descriptors: doubles from the
/// first to the last, and starts again after a successful accept.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));
/// At most one line per this long about failing accepts.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);

/// Whether an accept error means the process or system is out of
/// descriptors or memory (waiting helps; retrying at once does not).
fn is_exhaustion(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc_errno::EMFILE | libc_errno::ENFILE | libc_errno::ENOBUFS | libc_errno::ENOMEM)
    )
}

mod libc_errno {
    pub const EMFILE: i32 = nix::errno::Errno::EMFILE as i32;
    pub const ENFILE: i32 = nix::errno::Errno::ENFILE as i32;
    pub const ENOBUFS: i32 = nix::errno::Errno::ENOBUFS as i32;
    pub const ENOMEM: i32 = nix::errno::Errno::ENOMEM as i32;
}

pub(super) async fn acceptor(
    listener: tokio::net::TcpListener,
    answers: ReadyAnswers,
    limits: TcpLimits,
    stats: Arc<TcpStats>,
    counters: Option<Arc<crate::telemetry::metrics::DnsSlot>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    let shared = Arc::new(Shared {
        limits,
        table: Mutex::default(),
        stats,
        counters,
        epoch: Instant::now(),
    });
    let mut failures = LogEvery::new(ACCEPT_LOG_EVERY);
    let mut backoff = ACCEPT_BACKOFF.0;
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    let exhausted = is_exhaustion(&e);
                    if let Some(more) = failures.hit(Instant::now().into_std()) {
                        tracing::warn!(
                            error = %e, coalesced = more.0,
                            "DNS TCP accept failed{more}"
                        );
                    }
                    let wait = if exhausted {
                        let w = backoff;
                        backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                        w
                    } else {
                        ACCEPT_BACKOFF.0
                    };
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    continue;
                }
            },
        };
        if backoff != ACCEPT_BACKOFF.0 {
            backoff = ACCEPT_BACKOFF.0;
            let more = failures.reset();
            tracing::info!(coalesced = more.0, "DNS TCP accepts again{more}");
        }
        let stop = shutdown.child_token();
        let permit = match shared.admit(peer.ip(), stop.clone()) {
            Ok(p) => p,
            Err(why) => {
                tracing::debug!(%peer, why, "tcp connection refused");
                drop(stream); // closes at once
                continue;
            }
        };
        let answers = answers.clone();
        tasks.spawn(async move {
            let ctx = QueryContext::new(Some(peer.ip()), Transport::Tcp);
            if let Err(e) = connection(stream, answers, ctx, &permit, stop).await {
                tracing::trace!(error = %e, %peer, "tcp connection ended");
            }
            drop(permit);
        });
    }
}

/// Serves one connection: length-prefixed queries, answered in order, as
/// many as the client pipelines, until it goes idle, closes, or `stop`
/// (eviction or shutdown). Every read and write is bounded by the idle
/// timeout, so a client that stops reading its replies cannot hold a
/// connection (and its place in the table).
async fn connection(
    stream: TcpStream,
    answers: ReadyAnswers,
    ctx: QueryContext,
    permit: &Permit,
    stop: CancellationToken,
) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    let shared = &permit.shared;
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let mut rd = tokio::io::BufReader::with_capacity(2048, rd);
    let mut msg = Vec::new();
    let mut out = Vec::with_capacity(1024);
    let mut framed = Vec::with_capacity(1024);
    let timed_out = |what| Error::new(ErrorKind::TimedOut, what);
    // One future for the connection's life, not one per query.
    let stopped = stop.cancelled_owned();
    tokio::pin!(stopped);
    loop {
        // Idle: wait for the first byte of the next message. The timeout is
        // looked at again at least every `busy_idle_timeout`, so a
        // connection that went idle before the server became busy gets the
        // shorter timeout too.
        let idle_since = Instant::now();
        permit
            .slot
            .last_active
            .store(shared.millis(idle_since), Ordering::Relaxed);
        loop {
            let deadline = idle_since + shared.idle_timeout();
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            let wait = (deadline - now).min(shared.limits.busy_idle_timeout);
            let more = async { rd.fill_buf().await.map(|b| !b.is_empty()) };
            tokio::select! {
                _ = &mut stopped => return Ok(()),
                r = tokio::time::timeout(wait, more) => match r {
                    Err(_) => continue,
                    Ok(r) => if r? { break } else { return Ok(()) },
                },
            }
        }
        let idle = shared.limits.idle_timeout;
        let len = tokio::select! {
            _ = &mut stopped => return Ok(()),
            r = tokio::time::timeout(idle, rd.read_u16()) => {
                r.map_err(|_| timed_out("partial length"))?? as usize
            }
        };
        if len == 0 {
            return Ok(());
        }
        framed.clear();
        let mut next = Some(len);
        // Answer this query and every further one the client has already
        // sent (pipelining), then write all replies at once.
        while let Some(len) = next {
            msg.resize(len, 0);
            // The rest of a message must follow promptly.
            tokio::select! {
                _ = &mut stopped => return Ok(()),
                r = tokio::time::timeout(idle, rd.read_exact(&mut msg)) => {
                    r.map_err(|_| timed_out("partial message"))??;
                }
            }
            if answers.respond(&msg, &mut out, ctx) {
                if let Some(c) = &shared.counters {
                    c.answered(&out);
                }
                framed.extend_from_slice(&(out.len() as u16).to_be_bytes());
                framed.extend_from_slice(&out);
            }
            next = buffered_frame(rd.buffer());
            if next.is_some() {
                rd.consume(2);
            }
        }
        if !framed.is_empty() {
            tokio::select! {
                _ = &mut stopped => return Ok(()),
                r = tokio::time::timeout(idle, wr.write_all(&framed)) => {
                    r.map_err(|_| timed_out("client is not reading"))??;
                }
            }
        }
    }
}

/// The length of the next message when all of it is already buffered.
fn buffered_frame(buf: &[u8]) -> Option<usize> {
    let len = u16::from_be_bytes([*buf.first()?, *buf.get(1)?]) as usize;
    (len > 0 && buf.len() >= 2 + len).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_prefix: usize, per_ip: usize) -> TcpLimits {
        TcpLimits {
            idle_timeout: Duration::from_secs(10),
            busy_idle_timeout: Duration::from_secs(2),
            max_connections: total,
            max_connections_per_prefix: per_prefix,
            max_connections_per_ip: per_ip,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
        }
    }

    fn shared(l: TcpLimits) -> Arc<Shared> {
        Arc::new(Shared {
            limits: l,
            table: Mutex::default(),
            stats: Arc::default(),
            counters: None,
            epoch: Instant::now(),
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn at_the_total_cap_the_largest_prefix_gives_up_its_longest_idle_connection() {
        let s = shared(limits(6, 4, 4));
        let mut permits = Vec::new();
        // 192.0.2.0/24 holds four, 198.51.100.0/24 two: the table is full.
        for host in 1..=4 {
            permits.push(
                s.admit(ip(&format!("192.0.2.{host}")), CancellationToken::new())
                    .unwrap(),
            );
        }
        for host in 1..=2 {
            permits.push(
                s.admit(ip(&format!("198.51.100.{host}")), CancellationToken::new())
                    .unwrap(),
            );
        }
        // The third connection of the big prefix is the longest idle.
        for (n, p) in permits.iter().enumerate() {
            p.slot
                .last_active
                .store(if n == 2 { 1 } else { 100 }, Ordering::Relaxed);
        }
        // The small prefix may not take from the big one's peers when it is
        // not smaller... but it is (2 < 4): the big one's idlest goes.
        let newcomer = s
            .admit(ip("203.0.113.9"), CancellationToken::new())
            .unwrap();
        assert!(
            permits[2].slot.stop.is_cancelled(),
            "the idlest of the largest is closed"
        );
        assert!(
            permits
                .iter()
                .enumerate()
                .all(|(n, p)| n == 2 || !p.slot.stop.is_cancelled())
        );
        assert_eq!(s.stats.open.load(Ordering::Relaxed), 6);
        assert_eq!(s.stats.evicted.load(Ordering::Relaxed), 1);
        // The evicted connection's permit later frees nothing twice.
        drop(permits.remove(2));
        assert_eq!(s.stats.open.load(Ordering::Relaxed), 6);
        drop(newcomer);
        assert_eq!(s.stats.open.load(Ordering::Relaxed), 5);
    }

    #[tokio::test]
    async fn a_prefix_never_takes_from_one_that_holds_no_more_than_it() {
        let s = shared(limits(4, 2, 2));
        let _held: Vec<_> = ["192.0.2.1", "192.0.2.2", "198.51.100.1", "198.51.100.2"]
            .iter()
            .map(|a| s.admit(ip(a), CancellationToken::new()).unwrap())
            .collect();
        // Each prefix is at its own cap: refused without evicting.
        assert!(s.admit(ip("192.0.2.3"), CancellationToken::new()).is_err());
        let s = shared(limits(4, 3, 3));
        let held: Vec<_> = ["192.0.2.1", "192.0.2.2", "198.51.100.1", "198.51.100.2"]
            .iter()
            .map(|a| s.admit(ip(a), CancellationToken::new()).unwrap())
            .collect();
        // Full, two prefixes of two: a third from either would take from an
        // equal, so it is refused; a new prefix takes one.
        assert!(s.admit(ip("192.0.2.3"), CancellationToken::new()).is_err());
        assert_eq!(s.stats.evicted.load(Ordering::Relaxed), 0);
        let _new = s
            .admit(ip("203.0.113.1"), CancellationToken::new())
            .unwrap();
        assert_eq!(
            held.iter().filter(|p| p.slot.stop.is_cancelled()).count(),
            1
        );
    }

    #[tokio::test]
    async fn the_per_address_cap_still_applies_inside_a_prefix() {
        let s = shared(limits(100, 10, 2));
        let _a = s.admit(ip("192.0.2.1"), CancellationToken::new()).unwrap();
        let _b = s
            .admit(ip("::ffff:192.0.2.1"), CancellationToken::new())
            .unwrap();
        assert!(s.admit(ip("192.0.2.1"), CancellationToken::new()).is_err());
        assert!(s.admit(ip("192.0.2.2"), CancellationToken::new()).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_timeout_is_shorter_above_three_quarters_of_the_cap() {
        let s = shared(limits(8, 8, 8));
        let mut held: Vec<_> = (1..=6)
            .map(|h| {
                s.admit(ip(&format!("192.0.2.{h}")), CancellationToken::new())
                    .unwrap()
            })
            .collect();
        assert_eq!(
            s.idle_timeout(),
            Duration::from_secs(10),
            "6 of 8 is not above 3/4"
        );
        held.push(s.admit(ip("192.0.2.7"), CancellationToken::new()).unwrap());
        assert_eq!(s.idle_timeout(), Duration::from_secs(2));
        held.pop();
        assert_eq!(s.idle_timeout(), Duration::from_secs(10));
    }

    /// With tokio's paused clock: how long (in server time) an idle
    /// connection lives with `open` connections held, of a cap of 8.
    async fn idle_lifetime_with(open: usize) -> Duration {
        let (_registry, answers) = crate::dns::testing::sample(1, 1, 8);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tasks, shutdown) = (TaskTracker::new(), CancellationToken::new());
        let stats = Arc::new(TcpStats::default());
        tasks.spawn(acceptor(
            listener,
            answers,
            limits(8, 8, 8),
            stats.clone(),
            None,
            tasks.clone(),
            shutdown.clone(),
        ));
        let mut held = Vec::new();
        for _ in 0..open {
            held.push(TcpStream::connect(addr).await.unwrap());
        }
        while stats.open.load(Ordering::Relaxed) < open {
            tokio::task::yield_now().await;
        }
        let start = Instant::now();
        let mut buf = [0u8; 1];
        let n = held[0].read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0, "closed by the server");
        shutdown.cancel();
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_live_the_idle_timeout_or_the_busy_one_near_the_cap() {
        let quiet = idle_lifetime_with(2).await;
        assert!(
            quiet >= Duration::from_secs(10) && quiet < Duration::from_secs(11),
            "{quiet:?}"
        );
        let busy = idle_lifetime_with(7).await;
        assert!(
            busy >= Duration::from_secs(2) && busy < Duration::from_secs(3),
            "{busy:?}"
        );
    }
}
