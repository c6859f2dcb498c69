//! Event streams: `GET /v1/events` (Server-Sent Events, resumable with
//! `Last-Event-ID`) and `GET /v1/events/ws` (WebSocket), against a real
//! Maxine over real sockets.

mod common;

use std::time::Duration;

use common::TestServer;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one event may take to arrive before the test fails.
const BOUND: Duration = Duration::from_secs(10);

/// One parsed Server-Sent Event.
#[derive(Debug, Clone)]
struct Sse {
    id: Option<u64>,
    event: String,
    data: Value,
}

/// Reads events off an SSE response (gzipped when it asked for gzip).
struct SseReader {
    res: reqwest::Response,
    buf: String,
    /// The gzip decoder of a gzipped stream (flate2's, not Maxine's).
    gzip: Option<flate2::write::GzDecoder<Vec<u8>>>,
    /// Everything read so far, decoded.
    log: String,
}

impl SseReader {
    async fn open(s: &TestServer, query: &str, last_event_id: Option<u64>) -> Self {
        Self::open_with(s, query, last_event_id, None).await
    }

    async fn open_with(
        s: &TestServer,
        query: &str,
        last_event_id: Option<u64>,
        accept_encoding: Option<&str>,
    ) -> Self {
        Self::open_via(&s.http, s, query, last_event_id, accept_encoding).await
    }

    /// As `open_with`, through `http` (a client bound to another address).
    async fn open_via(
        http: &reqwest::Client,
        s: &TestServer,
        query: &str,
        last_event_id: Option<u64>,
        accept_encoding: Option<&str>,
    ) -> Self {
        let mut req = http.get(format!("{}/v1/events{query}", s.http_base()));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        if let Some(a) = accept_encoding {
            req = req.header("Accept-Encoding", a);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        assert_eq!(res.headers()["vary"], "accept-encoding");
        assert!(res.headers().contains_key("x-maxine-index"));
        let gzip = res.headers().get("content-encoding").map(|v| {
            assert_eq!(v, "gzip");
            flate2::write::GzDecoder::new(Vec::new())
        });
        Self {
            res,
            buf: String::new(),
            gzip,
            log: String::new(),
        }
    }

    /// The next event (comments and `retry:` skipped).
    async fn next(&mut self) -> Sse {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::new(), None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.parse().unwrap());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).unwrap());
                    }
                }
                if let Some(data) = data {
                    return Sse { id, event, data };
                }
                continue;
            }
            let chunk = tokio::time::timeout(BOUND, self.res.chunk())
                .await
                .expect("an event within the bound")
                .unwrap()
                .expect("the stream goes on");
            self.take(&chunk);
        }
    }

    fn take(&mut self, chunk: &[u8]) {
        use std::io::Write;
        let text = match &mut self.gzip {
            None => String::from_utf8(chunk.to_vec()).unwrap(),
            Some(d) => {
                d.write_all(chunk).unwrap();
                d.flush().unwrap();
                String::from_utf8(std::mem::take(d.get_mut())).unwrap()
            }
        };
        self.buf.push_str(&text);
        self.log.push_str(&text);
    }

    /// Reads to the end of the stream; a gzipped one must end with a
    /// trailer that matches everything in it. Returns everything read.
    async fn end(mut self) -> String {
        while let Some(chunk) = tokio::time::timeout(BOUND, self.res.chunk())
            .await
            .expect("the end within the bound")
            .unwrap()
        {
            self.take(&chunk);
        }
        if let Some(d) = self.gzip.take() {
            let rest = d.finish().expect("a gzip trailer matching the stream");
            self.log.push_str(std::str::from_utf8(&rest).unwrap());
        }
        self.log
    }
}

async fn register(s: &TestServer, service: &str, id: &str) -> u64 {
    s.register(
        service,
        id,
        json!({"address": "10.0.0.1", "port": 80, "ttl": "10m"}),
    )
    .await["index"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn an_sse_consumer_that_resumes_with_last_event_id_misses_nothing_and_sees_nothing_twice() {
    let s = TestServer::start().await;
    let first = register(&s, "pay", "a").await;
    let mut sse = SseReader::open(&s, "", None).await;
    // since=0: the whole registry first.
    let snap = sse.next().await;
    assert_eq!(snap.event, "snapshot");
    assert_eq!(snap.id, Some(first));
    assert_eq!(snap.data["services"][0]["service"], "pay");
    assert_eq!(snap.data["services"][0]["instances"][0]["id"], "a");

    let b = register(&s, "pay", "b").await;
    let e = sse.next().await;
    assert_eq!(
        (e.event.as_str(), e.id, &e.data["id"], &e.data["kind"]),
        ("change", Some(b), &json!("b"), &json!("registered"))
    );
    let last_seen = e.id.unwrap();
    drop(sse);

    // Changes made while it is away.
    let mut missed = Vec::new();
    for id in ["c", "d", "e"] {
        missed.push((register(&s, "web", id).await, id.to_string()));
    }
    let r = s
        .http
        .delete(format!("{}/v1/services/pay/instances/a", s.http_base()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deregistered: u64 = r.headers()["x-maxine-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    missed.push((deregistered, "a".to_string()));

    let mut sse = SseReader::open(&s, "?since=0", Some(last_seen)).await;
    let mut got = Vec::new();
    for _ in 0..missed.len() {
        let e = sse.next().await;
        assert_eq!(e.event, "change", "{e:?}");
        got.push((e.id.unwrap(), e.data["id"].as_str().unwrap().to_string()));
    }
    assert_eq!(
        got, missed,
        "exactly the changes after Last-Event-ID, in order"
    );
    // And then what comes next, nothing before it.
    let f = register(&s, "web", "f").await;
    let e = sse.next().await;
    assert_eq!(
        (e.id, e.data["kind"].as_str()),
        (Some(f), Some("registered"))
    );
    s.stop().await;
}

#[tokio::test]
async fn event_streams_leave_out_what_the_intentions_keep_the_caller_from() {
    const WEB: &str = "127.0.0.21";
    let s = TestServer::start().await;
    let at = |addr: &str| json!({"address": addr, "port": 80, "ttl": "10m"});
    s.register("web", "web-1", at(WEB)).await;
    s.register("db", "db-1", at("127.0.0.23")).await;
    let r = common::api::put(&s, "/v1/intentions/web/db", json!({"action": "deny"})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // A consumer at web's address has web's identity, as on DNS.
    let web = reqwest::Client::builder()
        .local_address(WEB.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let refused = web
        .get(format!("{}/v1/events?service=db", s.http_base()))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let why = refused.text().await.unwrap();
    assert!(why.contains("web") && why.contains("db"), "{why}");

    let mut as_web = SseReader::open_via(&web, &s, "", None, None).await;
    let mut stranger = SseReader::open(&s, "", None).await;
    let names = |e: &Sse| -> Vec<String> {
        e.data["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["service"].as_str().unwrap().to_string())
            .collect()
    };
    let (w, o) = (as_web.next().await, stranger.next().await);
    assert_eq!(
        (w.event.as_str(), names(&w)),
        ("snapshot", vec!["web".into()])
    );
    assert_eq!(names(&o), ["db", "web"], "no identity: nothing left out");
    // Changes of db are left out of web's stream, not of the other.
    let db = register(&s, "db", "db-2").await;
    let api = register(&s, "api", "api-1").await;
    let e = as_web.next().await;
    assert_eq!((e.id, e.data["service"].as_str()), (Some(api), Some("api")));
    let e = stranger.next().await;
    assert_eq!((e.id, e.data["service"].as_str()), (Some(db), Some("db")));
    // Allowed again: the next change of db reaches web's stream.
    let r = common::api::put(&s, "/v1/intentions/web/db", json!({"action": "allow"})).await;
    assert_eq!(r.status, 200);
    let db = register(&s, "db", "db-3").await;
    let e = as_web.next().await;
    assert_eq!((e.id, e.data["service"].as_str()), (Some(db), Some("db")));
    s.stop().await;
}

#[tokio::test]
async fn an_sse_stream_of_one_service_shows_only_its_changes() {
    let s = TestServer::start().await;
    let at = register(&s, "other", "x").await;
    let mut sse = SseReader::open(&s, &format!("?since={at}&service=pay"), None).await;
    register(&s, "other", "y").await;
    let mine = register(&s, "pay", "a").await;
    let e = sse.next().await;
    assert_eq!(
        (e.id, e.data["service"].as_str()),
        (Some(mine), Some("pay"))
    );
    s.stop().await;
}

#[tokio::test]
async fn event_streams_refuse_bad_parameters_with_400() {
    let s = TestServer::start().await;
    for (query, header) in [
        ("?since=abc", None),
        ("?service=Not_A_Name", None),
        ("?bogus=1", None),
        ("", Some("not-a-number")),
    ] {
        let mut req = s.http.get(format!("{}/v1/events{query}", s.http_base()));
        if let Some(h) = header {
            req = req.header("Last-Event-ID", h);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 400, "{query} {header:?}");
    }
    // Not an upgrade request.
    let r = s
        .http
        .get(format!("{}/v1/events/ws", s.http_base()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    s.stop().await;
}

/// A minimal WebSocket client: the opening handshake, then the server's
/// (unmasked) text frames.
struct Ws(tokio::net::TcpStream);

impl Ws {
    async fn connect(s: &TestServer, query: &str) -> Self {
        let mut tcp = tokio::net::TcpStream::connect(s.http_addr).await.unwrap();
        let req = format!(
            "GET /v1/events/ws{query} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n",
            s.http_addr
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            tcp.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        Self(tcp)
    }

    /// The next text message, as JSON.
    async fn next(&mut self) -> Value {
        loop {
            let mut h = [0u8; 2];
            tokio::time::timeout(BOUND, self.0.read_exact(&mut h))
                .await
                .expect("a message within the bound")
                .unwrap();
            let opcode = h[0] & 0x0f;
            let mut len = u64::from(h[1] & 0x7f);
            if len == 126 {
                len = u64::from(self.0.read_u16().await.unwrap());
            } else if len == 127 {
                len = self.0.read_u64().await.unwrap();
            }
            let mut payload = vec![0u8; len as usize];
            self.0.read_exact(&mut payload).await.unwrap();
            match opcode {
                1 => return serde_json::from_slice(&payload).unwrap(),
                8 => panic!("the server closed the WebSocket"),
                _ => continue,
            }
        }
    }
}

#[tokio::test]
async fn a_websocket_consumer_sees_a_registration() {
    let s = TestServer::start().await;
    let mut ws = Ws::connect(&s, "?since=0").await;
    let snap = ws.next().await;
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["services"], json!([]));
    let index = register(&s, "pay", "a").await;
    let m = ws.next().await;
    assert_eq!(m["type"], "change");
    assert_eq!(m["index"], index);
    assert_eq!(m["kind"], "registered");
    assert_eq!(m["instance"]["id"], "a");
    assert_eq!(m["instance"]["port"], 80);
    s.stop().await;
}

#[tokio::test]
async fn key_value_changes_are_in_the_stream_in_index_order() {
    let s = TestServer::start().await;
    let kv = |key: &str| format!("{}/v1/kv/{key}", s.http_base());
    let r = s.http.put(kv("app/a")).body("one").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut sse = SseReader::open(&s, "", None).await;
    let snap = sse.next().await;
    assert_eq!(snap.event, "snapshot");
    assert_eq!(snap.data["kv"][0]["key"], "app/a");
    assert_eq!(snap.data["kv"][0]["value"], "b25l"); // "one"
    let reg = register(&s, "pay", "a").await;
    let r = s.http.put(kv("app/b")).body("two").send().await.unwrap();
    let put: u64 = r.json::<Value>().await.unwrap()["index"].as_u64().unwrap();
    let r = s.http.delete(kv("app/a")).send().await.unwrap();
    let del: u64 = r.json::<Value>().await.unwrap()["index"].as_u64().unwrap();
    let got: Vec<(Option<u64>, String)> = [sse.next().await, sse.next().await, sse.next().await]
        .into_iter()
        .map(|e| (e.id, e.data["kind"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        got,
        [
            (Some(reg), "registered".to_string()),
            (Some(put), "kv.put".to_string()),
            (Some(del), "kv.delete".to_string()),
        ]
    );
    s.stop().await;
}

/// Consumers that see everything are sent one shared encoding of each
/// delivery: under a burst of concurrent registrations each of them, and a
/// consumer that only starts reading after the burst, still gets every
/// change exactly once and in index order, and a stream of one service
/// (not shared) only its own.
#[tokio::test]
async fn consumers_sharing_deliveries_each_get_every_change_once_in_order() {
    let s = std::sync::Arc::new(TestServer::start().await);
    let start = register(&s, "warmup", "w").await;
    let mut readers = Vec::new();
    for _ in 0..4 {
        readers.push(SseReader::open(&s, "", Some(start)).await);
    }
    let late = SseReader::open(&s, "", Some(start)).await;
    let mut one = SseReader::open(&s, &format!("?service=svc3&since={start}"), None).await;

    const WRITERS: usize = 8;
    const EACH: usize = 40;
    let registered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (s, registered) = (s.clone(), registered.clone());
        writers.push(tokio::spawn(async move {
            let mut made = Vec::new();
            for n in 0..EACH {
                let id = format!("svc{w}/i{n}");
                made.push((register(&s, &format!("svc{w}"), &format!("i{n}")).await, id));
                registered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            made
        }))
    }
    // A consumer that connects in the middle of the burst, from a
    // snapshot: at another position than the others.
    let mid = {
        let s = s.clone();
        tokio::spawn(async move {
            while registered.load(std::sync::atomic::Ordering::Relaxed) < WRITERS * EACH / 3 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let mut r = SseReader::open(&s, "", None).await;
            let snap = r.next().await;
            assert_eq!(snap.event, "snapshot");
            let mut seen = Vec::new();
            // Each writer's last registration is its latest change: once
            // all of them are in, everything after the snapshot is.
            let mut lasts = 0;
            while lasts < WRITERS {
                let e = r.next().await;
                assert_eq!(e.event, "change", "{e:?}");
                let id = format!(
                    "{}/{}",
                    e.data["service"].as_str().unwrap(),
                    e.data["id"].as_str().unwrap()
                );
                lasts += usize::from(id.ends_with(&format!("/i{}", EACH - 1)));
                seen.push((e.id.unwrap(), id));
            }
            (snap.id.unwrap(), seen)
        })
    };
    // Read while the burst goes on.
    let read_all = |mut r: SseReader| async move {
        let mut seen = Vec::new();
        while seen.len() < WRITERS * EACH {
            let e = r.next().await;
            assert_eq!(e.event, "change", "{e:?}");
            seen.push((
                e.id.unwrap(),
                format!(
                    "{}/{}",
                    e.data["service"].as_str().unwrap(),
                    e.data["id"].as_str().unwrap()
                ),
            ));
        }
        seen
    };
    let tasks: Vec<_> = readers
        .into_iter()
        .map(|r| tokio::spawn(read_all(r)))
        .collect();
    let mut made = Vec::new();
    for w in writers {
        made.extend(w.await.unwrap());
    }
    let mut all = Vec::new();
    for t in tasks {
        all.push(t.await.unwrap());
    }
    all.push(read_all(late).await);
    let mut want: Vec<String> = (0..WRITERS)
        .flat_map(|w| (0..EACH).map(move |n| format!("svc{w}/i{n}")))
        .collect();
    want.sort();
    for seen in &all {
        assert!(
            seen.windows(2).all(|p| p[0].0 < p[1].0),
            "index order: {seen:?}"
        );
        let mut ids: Vec<String> = seen.iter().map(|(_, id)| id.clone()).collect();
        ids.sort();
        assert_eq!(ids, want, "every change exactly once");
        assert_eq!(seen, &all[0], "the same changes with the same indexes");
    }
    let (snapshot, seen) = mid.await.unwrap();
    let mut after: Vec<(u64, String)> = made.into_iter().filter(|(i, _)| *i > snapshot).collect();
    after.sort();
    assert_eq!(
        seen, after,
        "after its snapshot, every change once and in order"
    );
    // The stream of one service: its 40 changes, nothing else.
    for n in 0..EACH {
        let e = one.next().await;
        assert_eq!(e.data["service"], "svc3", "{e:?}");
        assert_eq!(e.data["id"], format!("i{n}"));
    }
}

/// A consumer that asks for gzip gets the stream it would get plain, byte
/// for byte, compressed: shared deliveries (compressed once for all) and a
/// stream of one service alike; the stream ends with a gzip trailer that a
/// real decoder checks. A consumer that refuses gzip gets it plain.
#[tokio::test]
async fn a_consumer_that_asks_for_gzip_gets_the_same_stream_compressed() {
    let s = std::sync::Arc::new(TestServer::start().await);
    let start = register(&s, "warmup", "w").await;
    let mut plain = SseReader::open(&s, "", Some(start)).await;
    let mut gzipped = Vec::new();
    for accept in ["gzip", "br;q=1.0, gzip;q=0.8", "*"] {
        gzipped.push(SseReader::open_with(&s, "", Some(start), Some(accept)).await);
    }
    let refused = SseReader::open_with(&s, "", Some(start), Some("gzip;q=0, identity")).await;
    assert!(refused.gzip.is_none(), "gzip;q=0 refuses gzip");
    for r in &gzipped {
        assert!(r.gzip.is_some());
    }
    let query = format!("?service=svc1&since={start}");
    let mut one = SseReader::open_with(&s, &query, None, Some("gzip")).await;

    const WRITERS: usize = 4;
    const EACH: usize = 30;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                for n in 0..EACH {
                    register(&s, &format!("svc{w}"), &format!("i{n}")).await;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    for _ in 0..WRITERS * EACH {
        assert_eq!(plain.next().await.event, "change");
    }
    for r in &mut gzipped {
        for _ in 0..WRITERS * EACH {
            assert_eq!(r.next().await.event, "change");
        }
    }
    for n in 0..EACH {
        let e = one.next().await;
        assert_eq!(
            (e.data["service"].as_str(), e.data["id"].as_str()),
            (Some("svc1"), Some(format!("i{n}").as_str()))
        );
    }
    assert!(plain.log.contains("\nevent: change\n"), "{}", plain.log);
    for r in &gzipped {
        assert_eq!(r.log, plain.log, "the same stream, decoded");
    }

    // The server stops: every stream ends, a gzipped one with its trailer.
    let s = std::sync::Arc::into_inner(s).unwrap();
    let stop = tokio::spawn(s.stop());
    let plain = plain.end().await;
    for r in gzipped {
        assert_eq!(r.end().await, plain);
    }
    assert!(one.end().await.ends_with("\n\n"));
    stop.await.unwrap();
}
