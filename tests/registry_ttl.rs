//! Heartbeats and TTL expiry, seen through DNS and the API of a real server.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, lines, query};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use serde_json::json;

/// Asks over UDP from a blocking thread. While it runs, a paused tokio clock
/// does not auto-advance, so the answer reflects exactly the time the test set.
async fn ask_blocking(s: &TestServer, name: &str, rtype: RecordType) -> Message {
    let addr = s.dns_addr;
    let q = query(name, rtype, None);
    tokio::task::spawn_blocking(move || {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        sock.send_to(&q, addr).unwrap();
        let mut buf = [0u8; 4096];
        let (n, _) = sock.recv_from(&mut buf).expect("reply");
        Message::from_vec(&buf[..n]).unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn expiry_with_paused_time_turns_critical_then_reaps() {
    let s = TestServer::start_with(|c| {
        c.registry.reap_after = maxine::config::DurationValue(Duration::from_secs(300));
        // Paused time advances whenever the runtime idles, as it would while
        // waiting for a store's fsync on another thread.
        c.store = "memory".into();
    })
    .await;
    s.register(
        "orders",
        "o-1",
        json!({"address": "10.1.0.1", "port": 80, "ttl": "60s"}),
    )
    .await;
    s.register(
        "orders",
        "o-2",
        json!({"address": "10.1.0.2", "port": 80, "ttl": "600s"}),
    )
    .await;
    assert_eq!(
        ask_blocking(&s, "orders.maxine.", RecordType::A)
            .await
            .answers
            .len(),
        2
    );

    tokio::time::advance(Duration::from_secs(61)).await;
    let mut left = 0;
    for _ in 0..100 {
        left = ask_blocking(&s, "orders.maxine.", RecordType::A)
            .await
            .answers
            .len();
        if left == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(left, 1, "o-1 left the answers when its TTL passed");
    // The instance is still registered, critical, until the reap time.
    let m = ask_blocking(&s, "o-1.orders.dc1.maxine.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);

    tokio::time::advance(Duration::from_secs(301)).await;
    let mut code = ResponseCode::NoError;
    for _ in 0..100 {
        code = ask_blocking(&s, "o-1.orders.dc1.maxine.", RecordType::A)
            .await
            .metadata
            .response_code;
        if code == ResponseCode::NXDomain {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(code, ResponseCode::NXDomain, "reaped after reap_after");
}

/// Heartbeats move the deadline; expiry is driven explicitly
/// (`Registry::expire` with a chosen moment), not waited for on the clock.
#[tokio::test]
async fn heartbeats_keep_an_instance_and_revive_a_critical_one() {
    // Long enough that the server's own expiry (on the wall clock) never
    // comes first, however slow the machine.
    let ttl = Duration::from_secs(60);
    let s = TestServer::start().await;
    s.register(
        "pinger",
        "p",
        json!({"address": "10.2.0.1", "port": 80, "ttl": ttl.as_secs()}),
    )
    .await;
    // The current deadline is no later than `renewed + ttl`.
    let mut renewed = Instant::now();
    let beat = || async {
        s.http
            .put(format!(
                "{}/v1/services/pinger/instances/p/heartbeat",
                s.http_base()
            ))
            .send()
            .await
            .unwrap()
            .status()
    };
    let answer = || async { lines(&s.ask("pinger.maxine.", RecordType::A).await.answers) };
    let passing = ["pinger.maxine. 5 IN A 10.2.0.1"];
    assert_eq!(answer().await, passing);
    // Three heartbeats, each some milliseconds after the previous deadline
    // was set: a moment just past that deadline then leaves the instance
    // passing, which it would not be had the heartbeat not moved it. The
    // short pause is what is tested (a later heartbeat, a later deadline),
    // not a wait for the server.
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(beat().await, 200, "heartbeat {round}");
        s.registry.expire(renewed + ttl + Duration::from_millis(10));
        assert_eq!(answer().await, passing, "heartbeat {round} kept it");
        renewed = Instant::now();
    }
    // Past the last deadline it turns critical: the name stays (NODATA),
    // no address, no SRV; the instance's own name still resolves.
    s.registry.expire(renewed + ttl + Duration::from_millis(10));
    let m = s.ask("pinger.maxine.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty(), "{:?}", m.answers);
    let m = s.ask("_pinger._tcp.maxine.", RecordType::SRV).await;
    assert!(m.answers.is_empty() && m.metadata.response_code == ResponseCode::NoError);
    let m = s.ask("p.pinger.dc1.maxine.", RecordType::A).await;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NoError,
        "not reaped"
    );
    // One heartbeat brings it back at once.
    assert_eq!(beat().await, 200);
    assert_eq!(answer().await, passing);
}
