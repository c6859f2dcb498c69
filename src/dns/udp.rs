//! UDP workers: one OS thread per socket, several sockets on the same port
//! (`SO_REUSEPORT`, so the kernel spreads clients over them), each moving
//! queries in batches with `recvmmsg` and replies with `sendmmsg`.
//!
//! Overload: every datagram carries the kernel's receive timestamp; a query
//! that waited in the socket buffer longer than `max_queue_delay` is dropped
//! unanswered (its client has likely given up), so a backlog drains at once
//! instead of being answered seconds late. Buffers are fixed per worker, so
//! memory stays bounded whatever the load.

use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg, setsockopt,
    sockopt,
};

use super::answers::ReadyAnswers;
use super::rrl::{Limiter, RrlConfig, Verdict};
use super::wire;
use crate::core::{QueryContext, Transport};
use crate::telemetry::LogEvery;
use crate::telemetry::metrics::DnsSlot;

/// Datagrams moved per system call.
const BATCH: usize = 32;
/// Largest query read; longer datagrams are truncated by the kernel and
/// then fail to parse (FORMERR or dropped).
const MAX_QUERY: usize = 4096;
/// At most one line per this long about failing receives (and sends).
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);
/// How often a blocked worker looks at the stop flag.
const POLL: Duration = Duration::from_millis(200);

/// Counters shared by the workers (read by tests and, later, metrics).
#[derive(Default, Debug)]
pub struct UdpStats {
    /// Queries dropped because they waited longer than `max_queue_delay`.
    pub shed: AtomicU64,
    /// Responses dropped or truncated by rate limiting.
    pub rate_limited: AtomicU64,
}

/// Settings of a UDP worker.
#[derive(Clone, Debug)]
pub struct UdpConfig {
    pub max_queue_delay: Duration,
    pub rrl: RrlConfig,
}

/// Prepares a socket for a worker: receive timestamps and a poll timeout.
pub fn prepare(sock: &UdpSocket) -> std::io::Result<()> {
    setsockopt(sock, sockopt::ReceiveTimestampns, &true).map_err(std::io::Error::from)?;
    sock.set_read_timeout(Some(POLL))?;
    sock.set_nonblocking(false)
}

/// Runs one worker until `stop` is set.
pub fn run_worker(
    sock: UdpSocket,
    answers: ReadyAnswers,
    cfg: UdpConfig,
    stop: Arc<AtomicBool>,
    stats: Arc<UdpStats>,
    counters: Option<Arc<DnsSlot>>,
) {
    let counters = counters.as_deref();
    let fd = sock.as_raw_fd();
    let mut inbufs = vec![[0u8; MAX_QUERY]; BATCH];
    let mut outbufs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(1232)).collect();
    let cmsg_space = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let mut rx_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, Some(cmsg_space));
    let mut tx_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut limiter = Limiter::new(cfg.rrl.clone(), Instant::now());
    let max_delay_ns = cfg.max_queue_delay.as_nanos() as i128;
    // (index into the batch, length, peer, kernel receive time in ns)
    let mut received: Vec<(usize, usize, Option<SockaddrStorage>, i128)> =
        Vec::with_capacity(BATCH);
    let mut to_send: Vec<(usize, SockaddrStorage)> = Vec::with_capacity(BATCH);
    let mut recv_errors = LogEvery::new(ERROR_LOG_EVERY);
    let mut send_errors = LogEvery::new(ERROR_LOG_EVERY);

    while !stop.load(Ordering::Relaxed) {
        received.clear();
        {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = inbufs
                .iter_mut()
                .map(|b| [IoSliceMut::new(&mut b[..])])
                .collect();
            let res = recvmmsg(
                fd,
                &mut rx_headers,
                iovs.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            );
            let results = match res {
                Ok(r) => r,
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    if let Some(more) = recv_errors.hit(Instant::now()) {
                        tracing::warn!(error = %e, coalesced = more.0, "DNS UDP receive failed{more}");
                    }
                    continue;
                }
            };
            for (i, msg) in results.enumerate() {
                let stamp = msg
                    .cmsgs()
                    .ok()
                    .and_then(|mut c| {
                        c.find_map(|m| match m {
                            ControlMessageOwned::ScmTimestampns(ts) => Some(
                                i128::from(ts.tv_sec()) * 1_000_000_000 + i128::from(ts.tv_nsec()),
                            ),
                            _ => None,
                        })
                    })
                    .unwrap_or(0);
                received.push((i, msg.bytes, msg.address, stamp));
            }
        }
        if received.is_empty() {
            continue;
        }
        let now_wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let now = Instant::now();
        to_send.clear();
        for &(i, len, addr, stamp) in &received {
            let Some(addr) = addr else { continue };
            if stamp > 0 && now_wall - stamp > max_delay_ns {
                stats.shed.fetch_add(1, Ordering::Relaxed);
                if let Some(c) = counters {
                    c.shed();
                }
                continue;
            }
            let out = &mut outbufs[i];
            let peer = peer_ip(&addr);
            let ctx = QueryContext::new(peer, Transport::Udp);
            if !answers.respond(&inbufs[i][..len.min(MAX_QUERY)], out, ctx) {
                continue;
            }
            if limiter.enabled() {
                match peer.map(|ip| limiter.check(ip, now)) {
                    Some(Verdict::Drop) => {
                        stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                        if let Some(c) = counters {
                            c.rate_limited();
                        }
                        continue;
                    }
                    Some(Verdict::Slip) => {
                        stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                        if let Some(c) = counters {
                            c.rate_limited();
                        }
                        wire::make_truncated(out);
                    }
                    _ => {}
                }
            }
            if let Some(c) = counters {
                c.answered(out);
            }
            to_send.push((i, addr));
        }
        if to_send.is_empty() {
            continue;
        }
        let slices: Vec<[IoSlice<'_>; 1]> = to_send
            .iter()
            .map(|(i, _)| [IoSlice::new(&outbufs[*i])])
            .collect();
        let addrs: Vec<Option<SockaddrStorage>> = to_send.iter().map(|(_, a)| Some(*a)).collect();
        let mut sent = 0;
        while sent < slices.len() {
            match sendmmsg(
                fd,
                &mut tx_headers,
                &slices[sent..],
                &addrs[sent..],
                [],
                MsgFlags::empty(),
            ) {
                Ok(r) => {
                    let n = r.count();
                    if n == 0 {
                        break;
                    }
                    sent += n;
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    // One bad destination must not cost the rest of the batch.
                    if let Some(more) = send_errors.hit(Instant::now()) {
                        tracing::warn!(error = %e, coalesced = more.0, "DNS UDP send failed{more}");
                    }
                    sent += 1;
                }
            }
        }
    }
}

fn peer_ip(addr: &SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(IpAddr::V4(v4.ip()));
    }
    addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
}
