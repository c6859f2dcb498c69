//! Slow and greedy HTTP clients: each is cut off within its deadline while
//! a normal client is served throughout; every 4xx of the HTTP layer is
//! JSON; snapshot streams are bounded and still verify.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::TestServer;
use maxine::config::DurationValue;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, timeout};

/// Attackers come from this loopback address, the normal client from
/// 127.0.0.1, so the per-client cap does not hit the normal client.
const ATTACKER: &str = "127.0.0.3";

async fn connect_from(src: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{src}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads until the server closes the connection (bounded by `within`);
/// returns what was read and when the close came.
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server did not close the connection within {within:?}; it sent {:?}",
        String::from_utf8_lossy(&out)
    );
    (out, start.elapsed())
}

async fn normal_client_is_served(s: &TestServer) {
    // A new connection each time: the server closes idle ones within a second.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let r = timeout(
        Duration::from_secs(5),
        client.get(format!("{}/v1/health", s.http_base())).send(),
    )
    .await
    .expect("a normal client is answered in time")
    .expect("a normal client is answered");
    assert_eq!(r.status(), 200);
}

/// The deadlines of the battery's server.
fn short_deadlines(c: &mut maxine::config::ConfigFile) {
    c.http.header_read_timeout = DurationValue(Duration::from_secs(1));
    c.http.idle_timeout = DurationValue(Duration::from_secs(2));
    c.http.body_timeout = DurationValue(Duration::from_secs(2));
    c.http.max_connections_per_ip = 4;
}

#[derive(Clone, Copy, Debug)]
enum Slow {
    UnfinishedHeaders,
    IdleKeepAliveHttp1,
    IdleHttp2PriorKnowledge,
    BodyOneBytePerSecond,
    OverThePerClientCap,
}

#[tokio::test]
async fn slow_clients_are_closed_within_their_deadlines_while_others_are_served() {
    let s = TestServer::start_with(short_deadlines).await;
    let addr = s.http_addr;
    // (case, the deadline it must be closed by, and no sooner than)
    let table = [
        (Slow::UnfinishedHeaders, Duration::from_secs(1)),
        // HTTP/1 kept alive: the idle deadline, not the head one (that
        // starts at a head's first byte).
        (Slow::IdleKeepAliveHttp1, Duration::from_secs(2)),
        // Idle before its first request (1 s), then the graceful close (GOAWAY,
        // a PING this client never answers) gets the head deadline again.
        (Slow::IdleHttp2PriorKnowledge, Duration::from_secs(2)),
        (Slow::BodyOneBytePerSecond, Duration::from_secs(2)),
        (Slow::OverThePerClientCap, Duration::ZERO),
    ];
    for (case, deadline) in table {
        let margin = Duration::from_secs(2);
        let mut held = Vec::new();
        if let Slow::OverThePerClientCap = case {
            // Fill the cap (4) from the attacker's address; the fifth is refused.
            for _ in 0..4 {
                held.push(connect_from(ATTACKER, addr).await);
            }
        }
        let mut conn = connect_from(ATTACKER, addr).await;
        match case {
            Slow::UnfinishedHeaders => {
                conn.write_all(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1")
                    .await
                    .unwrap();
            }
            Slow::IdleKeepAliveHttp1 => {
                conn.write_all(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    .await
                    .unwrap();
            }
            Slow::IdleHttp2PriorKnowledge => {
                // The preface and an empty SETTINGS frame, then nothing.
                conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
                    .await
                    .unwrap();
            }
            Slow::BodyOneBytePerSecond => {
                let head = "PUT /v1/services/web/instances/a HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                            Content-Type: application/json\r\nContent-Length: 60\r\n\r\n";
                conn.write_all(head.as_bytes()).await.unwrap();
            }
            Slow::OverThePerClientCap => {}
        }
        let (mut rd, mut wr) = conn.into_split();
        // Kept open (dropping it would half-close the connection) unless it trickles.
        let mut idle_writer = None;
        let mut trickle = None;
        if let Slow::BodyOneBytePerSecond = case {
            trickle = Some(tokio::spawn(async move {
                for _ in 0..60 {
                    if wr.write_all(b" ").await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }));
        } else {
            idle_writer = Some(wr);
        }
        let closed = tokio::spawn(async move {
            let start = Instant::now();
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            timeout(deadline + margin + margin, async {
                loop {
                    match rd.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => out.extend_from_slice(&buf[..n]),
                    }
                }
            })
            .await
            .map(|_| (out, start.elapsed()))
        });
        normal_client_is_served(&s).await;
        let (out, took) = closed
            .await
            .unwrap()
            .unwrap_or_else(|_| panic!("{case:?}: not closed within {deadline:?} + margin"));
        assert!(
            took <= deadline + margin,
            "{case:?}: closed after {took:?}, deadline {deadline:?}"
        );
        if case_has_minimum(case) {
            assert!(
                took + Duration::from_millis(200) >= deadline,
                "{case:?}: closed too early, after {took:?}: {:?}",
                String::from_utf8_lossy(&out)
            );
        }
        if let Slow::BodyOneBytePerSecond = case {
            let text = String::from_utf8_lossy(&out);
            assert!(text.starts_with("HTTP/1.1 408"), "{case:?}: {text}");
            assert!(text.contains("\"kind\":\"request_timeout\""), "{text}");
        }
        if let Some(t) = trickle {
            t.abort();
        }
        drop((held, idle_writer));
        normal_client_is_served(&s).await;
    }
    assert!(maxine::http::refused_connections() >= 1);
    s.stop().await;
}

fn case_has_minimum(case: Slow) -> bool {
    matches!(
        case,
        Slow::UnfinishedHeaders | Slow::IdleKeepAliveHttp1 | Slow::BodyOneBytePerSecond
    )
}

/// One request on an open HTTP/1.1 connection; its status.
async fn get_status(conn: &mut TcpStream) -> u16 {
    conn.write_all(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let answered = timeout(Duration::from_secs(5), async {
        loop {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before answering: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .expect("a content-length");
                if got.len() >= end + 4 + len {
                    return text[9..12].parse().unwrap();
                }
            }
        }
    })
    .await;
    answered.expect("answered within 5 s")
}

/// A kept-alive HTTP/1.1 connection that waits longer than the head
/// deadline (1 s), but less than the idle one (2 s), between two requests is
/// still served: clients with connection pools reuse such connections.
#[tokio::test]
async fn a_kept_alive_connection_outlives_the_head_deadline_between_requests() {
    let s = TestServer::start_with(short_deadlines).await;
    let mut conn = TcpStream::connect(s.http_addr).await.unwrap();
    assert_eq!(get_status(&mut conn).await, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(get_status(&mut conn).await, 200);
    // A head begun then stalled is still cut at its own deadline.
    conn.write_all(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let (_, took) = read_until_closed(&mut conn, Duration::from_secs(4)).await;
    assert!(
        took >= Duration::from_millis(800) && took <= Duration::from_millis(1900),
        "a stalled head was closed after {took:?}, its deadline is 1 s"
    );
    s.stop().await;
}

/// One raw request, then the status and JSON body of the answer.
async fn raw(addr: SocketAddr, request: Vec<u8>) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before all of an oversized request is written.
    let _ = s.write_all(&request).await;
    let (out, _) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let json = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("status {status}: body {body:?} is not JSON: {e}"));
    (status, json)
}

#[tokio::test]
async fn every_4xx_of_the_http_layer_has_a_json_body() {
    let s = TestServer::start().await;
    let long = "a".repeat(9000);
    let big = "b".repeat(20_000);
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let huge = "c".repeat(70_000);
    let table: Vec<(&str, String, u16, serde_json::Value)> = vec![
        // hyper answers these itself, before any handler: a request line
        // it cannot parse, and a head beyond its own buffer.
        (
            "unparsable request line",
            "GARBAGE\r\n\r\n".to_string(),
            400,
            json!({"kind": "bad_request"}),
        ),
        (
            "request line without a version",
            "GET /v1/services\r\nHost: 127.0.0.1\r\n\r\n".to_string(),
            400,
            json!({"kind": "bad_request"}),
        ),
        (
            "head beyond hyper's buffer",
            format!("GET /v1/services HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: {huge}\r\n\r\n"),
            431,
            json!({"kind": "headers_too_large"}),
        ),
        (
            "huge URI",
            format!("GET /v1/services?x={long} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
            414,
            json!({"kind": "uri_too_long"}),
        ),
        (
            "huge URI, Maxine API",
            format!(
                "GET /api/maxine/serviceops/discover?x={long} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            ),
            414,
            json!({"message": null}),
        ),
        (
            "huge header",
            format!("GET /v1/services HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {big}\r\n\r\n"),
            431,
            json!({"kind": "headers_too_large"}),
        ),
        (
            "too many headers",
            format!("GET /v1/services HTTP/1.1\r\nHost: 127.0.0.1\r\n{many}\r\n"),
            431,
            json!({"kind": "headers_too_large"}),
        ),
        (
            "oversized body",
            format!(
                "PUT /v1/services/web/instances/a HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                 Connection: close\r\nContent-Type: application/json\r\n\
                 Content-Length: 100000\r\n\r\n{}",
                " ".repeat(100_000)
            ),
            413,
            json!({"kind": "payload_too_large"}),
        ),
    ];
    for (name, request, status, want) in table {
        eprintln!("case: {name}");
        let (got, body) = raw(s.http_addr, request.into_bytes()).await;
        assert_eq!(got, status, "{name}: {body}");
        match want.get("kind") {
            Some(kind) => {
                assert_eq!(&body["kind"], kind, "{name}: {body}");
                assert!(body["error"].is_string(), "{name}: {body}");
            }
            None => assert!(body["message"].is_string(), "{name}: {body}"),
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn snapshot_streams_beyond_the_bound_get_503_and_the_stream_verifies() {
    let s = TestServer::start_with(|c| {
        c.store = "memory".into();
        c.http.max_snapshot_streams = 1;
    })
    .await;
    // Enough instances that the file does not fit in the socket buffers of
    // a client that reads nothing, so its stream holds its place.
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..8 {
        let http = s.http.clone();
        let base = s.http_base();
        writers.spawn(async move {
            for i in 0..600 {
                let r = http
                    .put(format!("{base}/v1/services/svc{w}/instances/i{i}"))
                    .json(&json!({"address": "10.0.0.7", "port": 8080}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        });
    }
    while let Some(r) = writers.join_next().await {
        r.unwrap();
    }
    // A reader that stalls: over HTTP/2 with a tiny stream window it never
    // opens, the server sends at most that much and keeps the stream (and
    // its place) open.
    let stalling = reqwest::Client::builder()
        .http2_prior_knowledge()
        .http2_initial_stream_window_size(1024)
        .build()
        .unwrap();
    let stalled = stalling
        .get(format!("{}/v1/snapshot", s.http_base()))
        .send()
        .await
        .unwrap();
    assert_eq!(stalled.status(), 200);
    // More requests at once than places: some are turned away.
    let mut many = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let http = s.http.clone();
        let url = format!("{}/v1/snapshot", s.http_base());
        many.spawn(async move {
            let r = http.get(url).send().await.unwrap();
            let status = r.status();
            let retry = r.headers().contains_key("retry-after");
            let body = r.bytes().await.unwrap();
            (status, retry, body)
        });
    }
    let mut refused = 0;
    while let Some(r) = many.join_next().await {
        let (status, retry, body) = r.unwrap();
        match status.as_u16() {
            503 => {
                refused += 1;
                assert!(retry, "a 503 says when to retry");
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(json["kind"], "unavailable");
            }
            200 => {
                maxine::store::snapshot::decode(&body).expect("each streamed snapshot verifies");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(refused > 0, "the stalled stream holds the only place");
    drop(stalled);
    // Its place is free again once the stalled stream is gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    let bytes = loop {
        let r = s
            .http
            .get(format!("{}/v1/snapshot", s.http_base()))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break r.bytes().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the place of the dropped stream was not freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let snap = maxine::store::snapshot::decode(&bytes).expect("the streamed snapshot verifies");
    assert_eq!(snap.records.len(), 8 * 600);
    s.stop().await;
}

#[tokio::test]
async fn an_idle_http2_connection_over_tls_is_closed_within_its_deadline() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let pki = tempfile::tempdir().unwrap();
    let (cert, key) = (pki.path().join("cert.pem"), pki.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    // The API alone (TestServer waits for readiness over plain HTTP).
    let mut file = maxine::config::ConfigFile::default();
    short_deadlines(&mut file);
    let limits = maxine::app::http_limits(&maxine::config::Config::validate(file).unwrap().http);
    let registry = maxine::core::Registry::new(
        maxine::core::RegistryConfig {
            local_dc: maxine::core::Datacenter::new("dc1").unwrap(),
            reap_after: Duration::from_secs(60),
        },
        std::time::Instant::now(),
    );
    let state = maxine::http::HttpState::standalone(
        registry,
        "maxine",
        64 * 1024,
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(maxine::http::serve(
        listener,
        maxine::http::router(state),
        Some(maxine::http::load_tls(&cert, &key).unwrap()),
        limits,
        shutdown.clone(),
    ));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = connect_from(ATTACKER, addr).await;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    // Idle before its first request (1 s), then the close handshake (1 s).
    timeout(Duration::from_secs(5), async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the idle HTTP/2 connection over TLS is closed");
    let took = start.elapsed();
    assert!(took <= Duration::from_secs(4), "closed after {took:?}");
    assert!(!server.is_finished(), "still serving");
    shutdown.cancel();
    server.await.unwrap().unwrap();
}
