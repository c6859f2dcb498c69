//! DNS over TCP stays fair under pressure (RFC 7766 6.2.3): clients that
//! fill every connection slot and keep them busy cannot lock out another
//! client prefix, one prefix cannot take more than its cap, and the idle
//! timeout is shorter near the cap. Several 127.x.y.z source addresses play
//! several clients.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{TestServer, query};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use maxine::config::DurationValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// A connection to `server` from the source address `from`.
async fn connect_from(from: &str, server: SocketAddr) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    sock.connect(server).await.unwrap()
}

/// Sends one SOA query and reads its answer; `None` if the server closed
/// the connection (or said nothing within 2 s).
async fn ask_soa(c: &mut TcpStream) -> Option<Message> {
    let q = query("maxine.", RecordType::SOA, None);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend(q);
    c.write_all(&framed).await.ok()?;
    let read = async {
        let len = c.read_u16().await.ok()? as usize;
        let mut buf = vec![0; len];
        c.read_exact(&mut buf).await.ok()?;
        Message::from_vec(&buf).ok()
    };
    tokio::time::timeout(Duration::from_secs(2), read)
        .await
        .ok()
        .flatten()
}

/// Whether the server closes `c` within `within` (EOF or reset).
async fn closed_within(c: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1];
    matches!(
        tokio::time::timeout(within, c.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn busy_prefixes_that_fill_every_slot_cannot_lock_out_another_prefix() {
    let s = TestServer::start_with(|c| {
        c.dns.tcp_max_connections = 64;
        c.dns.tcp_max_connections_per_prefix = 16;
        c.dns.tcp_idle_timeout = DurationValue(Duration::from_secs(10));
    })
    .await;
    // Four prefixes, 16 connections each (one per address), each asking
    // every 300 ms: never idle for the busy idle timeout (2 s).
    let stop = CancellationToken::new();
    let answered = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let mut greedy = Vec::new();
    for net in 1..=4 {
        for host in 1..=16 {
            let mut c = connect_from(&format!("127.0.{net}.{host}"), s.dns_addr).await;
            let (stop, answered, closed) = (stop.clone(), answered.clone(), closed.clone());
            greedy.push(tokio::spawn(async move {
                // At most 60 s of asking.
                for _ in 0..200 {
                    if ask_soa(&mut c).await.is_none() {
                        closed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    answered.fetch_add(1, Ordering::Relaxed);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                    }
                }
            }));
        }
    }
    assert_eventually!(
        s.dns_tcp_stats.open.load(Ordering::Relaxed) == 64
            && answered.load(Ordering::Relaxed) >= 64,
        "all 64 slots are held and answering"
    );
    assert_eq!(closed.load(Ordering::Relaxed), 0, "none closed yet");
    // Another prefix still connects and gets its answer over TCP.
    let mut newcomer = connect_from("127.0.9.1", s.dns_addr).await;
    let m = ask_soa(&mut newcomer)
        .await
        .expect("the newcomer is answered");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    // One greedy connection was closed to make room, and only one.
    assert_eventually!(
        closed.load(Ordering::Relaxed) == 1,
        "one greedy connection is closed"
    );
    assert_eq!(s.dns_tcp_stats.evicted.load(Ordering::Relaxed), 1);
    assert_eq!(s.dns_tcp_stats.open.load(Ordering::Relaxed), 64);
    stop.cancel();
    for g in greedy {
        g.await.unwrap();
    }
}

#[tokio::test]
async fn one_prefix_cannot_take_more_than_its_cap() {
    let s = TestServer::start_with(|c| c.dns.tcp_max_connections_per_prefix = 4).await;
    let mut held = Vec::new();
    for host in 1..=4 {
        let mut c = connect_from(&format!("127.0.5.{host}"), s.dns_addr).await;
        assert!(ask_soa(&mut c).await.is_some(), "connection {host} served");
        held.push(c);
    }
    // A fifth from another address of the same /24 is closed unanswered.
    let mut fifth = connect_from("127.0.5.200", s.dns_addr).await;
    assert!(ask_soa(&mut fifth).await.is_none(), "the fifth is refused");
    // Another /24 is not affected.
    let mut other = connect_from("127.0.6.1", s.dns_addr).await;
    assert!(ask_soa(&mut other).await.is_some());
    for c in &mut held {
        assert!(ask_soa(c).await.is_some(), "the four keep being served");
    }
}

#[tokio::test]
async fn the_idle_timeout_is_shorter_above_three_quarters_of_the_cap() {
    let s = TestServer::start_with(|c| {
        c.dns.tcp_max_connections = 8;
        c.dns.tcp_idle_timeout = DurationValue(Duration::from_secs(10));
        c.dns.tcp_busy_idle_timeout = DurationValue(Duration::from_millis(300));
    })
    .await;
    // Four of eight open: the long timeout applies, they stay open.
    let mut conns = Vec::new();
    for host in 1..=4 {
        conns.push(connect_from(&format!("127.0.7.{host}"), s.dns_addr).await);
    }
    assert_eventually!(
        s.dns_tcp_stats.open.load(Ordering::Relaxed) == 4,
        "four are open"
    );
    assert!(!closed_within(&mut conns[0], Duration::from_secs(1)).await);
    // Seven of eight (above 3/4): idle ones are closed after the busy
    // timeout, not the 10 s one, also those that went idle before the
    // server was busy, until no more than 3/4 are open.
    for host in 5..=7 {
        conns.push(connect_from(&format!("127.0.7.{host}"), s.dns_addr).await);
    }
    let start = std::time::Instant::now();
    assert_eventually!(
        s.dns_tcp_stats.open.load(Ordering::Relaxed) <= 6,
        "back to 3/4 of the cap"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // At 3/4 the long timeout applies again: the rest stay open.
    assert!(!closed_within(&mut conns[6], Duration::from_secs(1)).await);
    assert_eq!(s.dns_tcp_stats.open.load(Ordering::Relaxed), 6);
}
