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
pub mod tcp;
#[doc(hidden)]
pub mod testing;
pub mod udp;
pub mod wire;
pub mod zone;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::core::Registry;

pub use answers::{AnswerBuilder, ReadyAnswers};
pub use zone::Zone;

/// Limits and settings of the DNS listeners.
#[derive(Clone, Debug)]
pub struct Limits {
    pub ttl: u32,
    pub max_records: usize,
    pub tcp: tcp::TcpLimits,
    /// UDP worker threads, each with its own socket on the port.
    pub udp_workers: usize,
    pub udp: udp::UdpConfig,
    /// Client networks and their zones (`dns.client_zones`), for `nearest`.
    pub client_zones: Arc<crate::core::ClientZones>,
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
    tcp_stats: Arc<tcp::TcpStats>,
    /// Where the workers count what they answer (`None`: metrics off).
    counters: Option<crate::telemetry::metrics::DnsCounters>,
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
            answers: ReadyAnswers::with_client_zones(
                zone,
                limits.max_records,
                limits.client_zones.clone(),
            ),
            limits,
            stats: Arc::default(),
            tcp_stats: Arc::default(),
            counters: None,
            udp,
            tcp,
        })
    }

    /// Counts every response into `counters` (each UDP worker its own slot).
    pub fn with_counters(mut self, counters: crate::telemetry::metrics::DnsCounters) -> Self {
        self.counters = Some(counters);
        self
    }

    pub fn answers(&self) -> &ReadyAnswers {
        &self.answers
    }

    /// Counters of the UDP workers (load shed, rate limited).
    pub fn stats(&self) -> Arc<udp::UdpStats> {
        self.stats.clone()
    }

    /// Counters of the TCP front end (open, evicted, refused).
    pub fn tcp_stats(&self) -> Arc<tcp::TcpStats> {
        self.tcp_stats.clone()
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
            let slot = self.counters.as_ref().map(|c| c.udp_worker());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("maxine-dns-udp-{n}"))
                    .spawn(move || udp::run_worker(sock, answers, cfg, stop, stats, slot))?,
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
        tasks.spawn(tcp::acceptor(
            tcp,
            self.answers,
            self.limits.tcp,
            self.tcp_stats,
            self.counters.as_ref().map(|c| c.tcp()),
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
