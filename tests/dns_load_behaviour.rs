//! How the DNS server behaves under load: response rate limiting with slip,
//! and shedding of queries that waited too long, over real sockets.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{TestServer, query};
use hickory_proto::rr::RecordType;
use serde_json::json;

#[tokio::test]
async fn rate_limiting_drops_excess_responses_and_slips_truncated_ones() {
    let s = TestServer::start_with(|c| {
        c.dns.udp_workers = 1;
        c.dns.rrl.responses_per_second = 20;
        c.dns.rrl.slip = 2;
        c.dns.rrl.exempt_loopback = false;
        // Nothing shed, however slow the machine: every query reaches the limiter.
        c.dns.max_queue_delay = maxine::config::DurationValue(Duration::from_secs(30));
    })
    .await;
    s.register("payments", "a", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let q = query("payments.maxine.", RecordType::A, None);
    let start = Instant::now();
    for _ in 0..200 {
        sock.send_to(&q, s.dns_addr).await.unwrap();
    }
    let (mut full, mut truncated) = (0u64, 0u64);
    let limited = || s.dns_stats.rate_limited.load(Ordering::Relaxed);
    let mut last_full = start;
    let mut buf = [0u8; 1500];
    // Read until the server has decided on all 200 and nothing more comes.
    loop {
        match tokio::time::timeout(Duration::from_millis(300), sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) if buf[2] & 0x02 != 0 => {
                assert_eq!(n, q.len(), "a slipped reply is header and question only");
                truncated += 1;
            }
            Ok(Ok(_)) => {
                full += 1;
                last_full = Instant::now();
            }
            _ if full + limited() >= 200 || start.elapsed() > Duration::from_secs(20) => break,
            _ => {}
        }
    }
    assert_eq!(full + limited(), 200, "each query answered or limited");
    // A budget of 20, plus what refills (20/s) until the last full answer
    // was sent, then every second limited response slips.
    let elapsed = (last_full - start).as_secs_f64();
    let most = 20.0 + 20.0 * elapsed + 1.0;
    assert!(
        full >= 20 && full as f64 <= most,
        "full answers: {full} (at most {most:.0} in {elapsed:.2} s)"
    );
    assert_eq!(truncated, limited() / 2, "every second limited reply slips");
    assert!(truncated > 50, "truncated answers: {truncated}");
}

#[tokio::test]
async fn loopback_clients_are_not_rate_limited_by_default() {
    let s = TestServer::start_with(|c| c.dns.rrl.responses_per_second = 5).await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let q = query("maxine.", RecordType::SOA, None);
    let mut answered = 0;
    let mut buf = [0u8; 1500];
    for _ in 0..50 {
        sock.send_to(&q, s.dns_addr).await.unwrap();
        if let Ok(Ok((_, _))) =
            tokio::time::timeout(Duration::from_secs(1), sock.recv_from(&mut buf)).await
            && buf[2] & 0x02 == 0
        {
            answered += 1;
        }
    }
    assert_eq!(answered, 50);
}

#[tokio::test]
async fn queries_that_waited_too_long_are_shed_not_answered_late() {
    // One worker and a 10 ms limit. Four threads send until the worker,
    // competing with them for two cores, leaves queries waiting longer
    // than that (or 20 s pass, and the test fails).
    let s = TestServer::start_with(|c| {
        c.dns.udp_workers = 1;
        c.dns.max_queue_delay = maxine::config::DurationValue(Duration::from_millis(10));
    })
    .await;
    let q = query("nothing.maxine.", RecordType::A, None);
    let addr = s.dns_addr;
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let (q, stats) = (q.clone(), s.dns_stats.clone());
            std::thread::spawn(move || {
                let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                let start = Instant::now();
                let mut sent = 0u64;
                while stats.shed.load(Ordering::Relaxed) == 0
                    && start.elapsed() < Duration::from_secs(20)
                {
                    for _ in 0..1000 {
                        if sock.send_to(&q, addr).is_ok() {
                            sent += 1;
                        }
                    }
                }
                sent
            })
        })
        .collect();
    let sent: u64 =
        tokio::task::spawn_blocking(move || senders.into_iter().map(|t| t.join().unwrap()).sum())
            .await
            .unwrap();
    assert!(
        s.dns_stats.shed.load(Ordering::Relaxed) > 0,
        "some of {sent} queries were shed"
    );
    // And the server answers again once the backlog is gone. A query sent
    // while the burst is still queued is itself shed, and so can one on a
    // machine busy enough to keep the worker off its core for 10 ms: ask
    // until an answer comes.
    let soa = query("maxine.", RecordType::SOA, None);
    let mut reply = None;
    assert_eventually!(
        {
            reply = s.udp_raw(&soa).await;
            reply.is_some()
        },
        "an answer after the burst"
    );
    let m = hickory_proto::op::Message::from_vec(&reply.unwrap()).expect("a well-formed reply");
    assert_eq!(m.answers.len(), 1);
}
