//! Authoritative DNS front end: UDP and TCP listeners that answer from the
//! ready answers in [`answers`]. It translates wire queries into lookups of
//! names that the registry's changes keep current; it holds no registry
//! logic of its own.
//!
//! Must not import: http (front ends never call each other), config (`app`
//! hands it [`Limits`] and a loaded [`Zone`]).

pub mod answers;
mod encoded;
pub mod rrl;
#[doc(hidden)]
pub mod testing;
pub mod udp;
pub mod wire;
pub mod zone;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::core::{QueryContext, Registry, Transport};

pub use answers::{AnswerBuilder, ReadyAnswers};
pub use zone::Zone;

/// Limits and settings of the DNS listeners.
#[derive(Clone, Debug)]
pub struct Limits {
    pub ttl: u32,
    pub max_records: usize,
    pub tcp_idle_timeout: Duration,
    pub tcp_max_connections: usize,
    pub tcp_max_connections_per_ip: usize,
    /// UDP worker threads, each with its own socket on the port.
    pub udp_workers: usize,
    pub udp: udp::UdpConfig,
}

/// Binds a UDP socket with a large receive buffer (bursts of queries).
/// `SO_REUSEPORT` lets each worker bind its own socket to the same port.
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_port(true)?;
    let _ = sock.set_recv_buffer_size(4 << 20);
    let _ = sock.set_send_buffer_size(4 << 20);
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

pub fn bind_tcp(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    Ok(sock.into())
}

/// The DNS server: its sockets and the answers they serve.
pub struct DnsServer {
    answers: ReadyAnswers,
    limits: Limits,
    stats: Arc<udp::UdpStats>,
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
}

impl DnsServer {
    pub fn new(
        zone: Zone,
        limits: Limits,
        udp: std::net::UdpSocket,
        tcp: std::net::TcpListener,
    ) -> std::io::Result<Self> {
        tracing::info!(source = %zone.source, "DNS zone {} loaded", zone.domain);
        Ok(Self {
            answers: ReadyAnswers::new(zone, limits.max_records),
            limits,
            stats: Arc::default(),
            udp,
            tcp,
        })
    }

    pub fn answers(&self) -> &ReadyAnswers {
        &self.answers
    }

    /// Counters of the UDP workers (load shed, rate limited).
    pub fn stats(&self) -> Arc<udp::UdpStats> {
        self.stats.clone()
    }

    /// The registry observer that keeps the answers current.
    pub fn observer(&self, registry: &Registry) -> AnswerBuilder {
        AnswerBuilder::new(self.answers.clone(), registry, self.limits.ttl)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.udp.local_addr().expect("bound socket has an address")
    }

    /// Starts the UDP worker threads and the TCP acceptor. The threads are
    /// owned by a task on `tasks` that stops and joins them at shutdown.
    pub fn spawn(self, tasks: &TaskTracker, shutdown: CancellationToken) -> std::io::Result<()> {
        let addr = self.local_addr();
        let mut sockets = vec![self.udp];
        for _ in 1..self.limits.udp_workers.max(1) {
            sockets.push(bind_udp(addr)?);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stats = self.stats.clone();
        let mut threads = Vec::new();
        for (n, sock) in sockets.into_iter().enumerate() {
            udp::prepare(&sock)?;
            let (answers, cfg, stop, stats) = (
                self.answers.clone(),
                self.limits.udp.clone(),
                stop.clone(),
                stats.clone(),
            );
            threads.push(
                std::thread::Builder::new()
                    .name(format!("maxine-dns-udp-{n}"))
                    .spawn(move || udp::run_worker(sock, answers, cfg, stop, stats))?,
            );
        }
        let udp_shutdown = shutdown.clone();
        tasks.spawn(async move {
            // Set on shutdown, and also if this task is dropped unrun (its
            // runtime ended first): the workers are threads, not tasks, and
            // would otherwise keep the port and answer from a dead registry.
            let stop = StopOnDrop(stop);
            udp_shutdown.cancelled().await;
            drop(stop);
            let _ = tokio::task::spawn_blocking(move || {
                for t in threads {
                    let _ = t.join();
                }
            })
            .await;
        });
        self.tcp.set_nonblocking(true)?;
        let tcp = tokio::net::TcpListener::from_std(self.tcp)?;
        tasks.spawn(tcp_acceptor(
            tcp,
            self.answers,
            self.limits,
            tasks.clone(),
            shutdown,
        ));
        Ok(())
    }
}

/// Tells the UDP workers to stop when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Open TCP connections, in total and per client (RFC 7766 6.2.2).
struct ConnectionLimits {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

struct ConnectionPermit {
    limits: Arc<Mutex<ConnectionLimits>>,
    ip: IpAddr,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut l = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        l.total -= 1;
        if let Some(n) = l.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                l.per_ip.remove(&self.ip);
            }
        }
    }
}

/// What the per-client cap counts: the IPv4 address, or the /64 of an IPv6
/// address (one host usually holds a whole /64).
fn client_key(ip: IpAddr) -> IpAddr {
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

async fn tcp_acceptor(
    listener: tokio::net::TcpListener,
    answers: ReadyAnswers,
    limits: Limits,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    let counts = Arc::new(Mutex::new(ConnectionLimits {
        total: 0,
        per_ip: HashMap::new(),
    }));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let client = client_key(peer.ip());
        let permit = {
            let mut l = counts.lock().unwrap_or_else(|p| p.into_inner());
            let per_ip = l.per_ip.get(&client).copied().unwrap_or(0);
            if l.total >= limits.tcp_max_connections || per_ip >= limits.tcp_max_connections_per_ip
            {
                None
            } else {
                l.total += 1;
                *l.per_ip.entry(client).or_default() += 1;
                Some(ConnectionPermit {
                    limits: counts.clone(),
                    ip: client,
                })
            }
        };
        let Some(permit) = permit else {
            tracing::debug!(%peer, "tcp connection refused: limit reached");
            drop(stream); // closes at once
            continue;
        };
        let answers = answers.clone();
        let idle = limits.tcp_idle_timeout;
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let ctx = QueryContext::new(Some(peer.ip()), Transport::Tcp);
            if let Err(e) = tcp_connection(stream, answers, ctx, idle, shutdown).await {
                tracing::trace!(error = %e, %peer, "tcp connection ended");
            }
        });
    }
}

/// Serves one connection: length-prefixed queries, answered in order, as
/// many as the client pipelines, until it goes idle or closes. Every read and
/// write is bounded by the idle timeout and by shutdown, so a client that
/// stops reading its replies cannot hold a connection (and its permit).
async fn tcp_connection(
    stream: TcpStream,
    answers: ReadyAnswers,
    ctx: QueryContext,
    idle: Duration,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let mut rd = tokio::io::BufReader::with_capacity(2048, rd);
    let mut msg = Vec::new();
    let mut out = Vec::with_capacity(1024);
    let mut framed = Vec::with_capacity(1024);
    let timed_out = |what| Error::new(ErrorKind::TimedOut, what);
    loop {
        let len = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = tokio::time::timeout(idle, rd.read_u16()) => match r {
                Err(_) => return Ok(()), // idle
                Ok(r) => r? as usize,
            },
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
                _ = shutdown.cancelled() => return Ok(()),
                r = tokio::time::timeout(idle, rd.read_exact(&mut msg)) => {
                    r.map_err(|_| timed_out("partial message"))??;
                }
            }
            if answers.respond(&msg, &mut out, ctx) {
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
                _ = shutdown.cancelled() => return Ok(()),
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
