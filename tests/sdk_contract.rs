//! The contract of the Node.js Maxine's SDKs (Node, Python, Java and the
//! Java Spring starter) with the server: for every exchange, the request
//! as the SDK sends it (method, path, query encoding, the headers its HTTP
//! library adds, the body's shape) and what the SDK reads from the answer
//! (status, fields, and header names exactly as written).
//!
//! Requests go over a plain TCP socket as HTTP/1.1 bytes, and answers are
//! read as bytes, so header names are seen as the server wrote them: the
//! Python SDK looks `Location` and `Content-Type` up in a plain dict.

mod common;

use std::net::SocketAddr;

use common::TestServer;
use common::acl::users_file;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tracing_subscriber::layer::SubscriberExt;

const ADMIN: (&str, &str) = ("admin", "admin-password");

/// The HTTP client library of each SDK, by the headers it sends of its own
/// accord.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sdk {
    /// The Node SDK: axios over Node's `http`. `Content-Type:
    /// application/json` when there is a body; the token on every request
    /// once signed in.
    Node,
    /// The Python SDK: `urllib.request`, which writes header names as
    /// `str.capitalize` makes them (`Content-type`), sends
    /// `Content-type: application/json` on every request (GETs too) and
    /// the token only on the calls that need one.
    Python,
    /// The Java SDK and its Spring starter: `java.net.http.HttpClient`,
    /// which on plain http asks for an h2c upgrade on a GET, sends
    /// `Content-Type: application/json` on every request, and the token
    /// only on the calls that need one.
    Java,
}

const SDKS: [Sdk; 3] = [Sdk::Node, Sdk::Python, Sdk::Java];

/// One request as `sdk` writes it on the wire.
fn request(
    sdk: Sdk,
    addr: SocketAddr,
    method: &str,
    target: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Vec<u8> {
    let body = body.map(|b| b.to_string());
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    let mut line = |name: &str, value: &str| head.push_str(&format!("{name}: {value}\r\n"));
    match sdk {
        Sdk::Node => {
            line("Accept", "application/json, text/plain, */*");
            if body.is_some() {
                line("Content-Type", "application/json");
            }
            if let Some(t) = token {
                line("Authorization", &format!("Bearer {t}"));
            }
            line("User-Agent", "axios/1.7.9");
            if let Some(b) = &body {
                line("Content-Length", &b.len().to_string());
            }
            line("Accept-Encoding", "gzip, compress, deflate, br");
            line("Host", &addr.to_string());
            line("Connection", "keep-alive");
        }
        Sdk::Python => {
            line("Accept-Encoding", "identity");
            if let Some(b) = &body {
                line("Content-Length", &b.len().to_string());
            }
            line("Host", &addr.to_string());
            line("User-Agent", "Python-urllib/3.12");
            line("Content-type", "application/json");
            if let Some(t) = token {
                line("Authorization", &format!("Bearer {t}"));
            }
            line("Connection", "close");
        }
        Sdk::Java => {
            if body.is_none() {
                line("Connection", "Upgrade, HTTP2-Settings");
            }
            if let Some(b) = &body {
                line("Content-Length", &b.len().to_string());
            }
            line("Host", &addr.to_string());
            if body.is_none() {
                line("HTTP2-Settings", "AAEAAEAAAAIAAAABAAMAAABkAAQBAAAAAAUAAEAA");
                line("Upgrade", "h2c");
            }
            line("User-Agent", "Java-http-client/21.0.5");
            line("Content-Type", "application/json");
            if let Some(t) = token {
                line("Authorization", &format!("Bearer {t}"));
            }
        }
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    if let Some(b) = body {
        bytes.extend(b.into_bytes());
    }
    bytes
}

/// One answer as the server wrote it.
#[derive(Debug)]
struct Raw {
    status: u16,
    /// The head (status line and headers) as sent.
    head: String,
    /// Header names as sent, with their values.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    /// The header named exactly `name`: the lookup of a plain dict (the
    /// Python SDK's), which misses `location` when it asks for `Location`.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("a UTF-8 body")
    }

    /// The body as the SDKs decode it: JSON, whatever the status.
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}\n{}", self.text(), self.head))
    }
}

/// Sends `request` on a new connection and reads one answer (by its
/// `Content-Length`, or its chunks).
async fn exchange(addr: SocketAddr, request: &[u8]) -> Raw {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut r = BufReader::new(tcp);
    let mut head = String::new();
    loop {
        let n = r.read_line(&mut head).await.unwrap();
        assert!(n > 0, "the connection closed inside the head: {head:?}");
        if head.ends_with("\r\n\r\n") {
            break;
        }
    }
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status = status_line[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').expect("name: value");
            (n.to_string(), v.trim().to_string())
        })
        .collect();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if let Some(len) = find("content-length") {
        body.resize(len.parse().unwrap(), 0);
        r.read_exact(&mut body).await.unwrap();
    } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).await.unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk).await.unwrap();
            if size == 0 {
                break;
            }
            body.extend(&chunk[..size]);
        }
    }
    Raw {
        status,
        head,
        headers,
        body,
    }
}

/// One call of `sdk`.
async fn call(
    s: &TestServer,
    sdk: Sdk,
    method: &str,
    target: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Raw {
    exchange(
        s.http_addr,
        &request(sdk, s.http_addr, method, target, token, body),
    )
    .await
}

/// `POST /api/maxine/serviceops/register` as `sdk` posts it (also its
/// heartbeat).
async fn register(s: &TestServer, sdk: Sdk, token: Option<&str>, body: &Value) -> Raw {
    let path = "/api/maxine/serviceops/register";
    call(s, sdk, "POST", path, token, Some(body)).await
}

/// A server with the users file's `admin` (role admin).
async fn server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path(), &[(ADMIN.0, "admin", ADMIN.1)]);
    let s = TestServer::start_with(|f| f.acl.users_file = Some(users)).await;
    (s, dir)
}

/// `POST /api/maxine/signin {"userName", "password"}`: every SDK reads
/// `accessToken` and sends it as `Authorization: Bearer` from then on.
async fn sign_in(s: &TestServer, sdk: Sdk) -> String {
    let body = json!({"userName": ADMIN.0, "password": ADMIN.1});
    let r = call(s, sdk, "POST", "/api/maxine/signin", None, Some(&body)).await;
    assert_eq!(r.status, 200, "{sdk:?}: {r:?}");
    r.json()["accessToken"]
        .as_str()
        .expect("accessToken")
        .to_string()
}

/// What each SDK's users register with: the Python and Node READMEs'
/// shape, and the Spring starter's (its nodeName is
/// `<service>-<host>-<port>`, `path` "" unless a context path is set).
fn registration(sdk: Sdk) -> Value {
    match sdk {
        Sdk::Node | Sdk::Python => json!({
            "hostName": "127.0.0.1", "nodeName": format!("{sdk:?}-node"), "serviceName": "orders-service",
            "port": 8081, "ssl": false, "timeOut": 10, "weight": 1
        }),
        Sdk::Java => json!({
            "hostName": "app-host-1", "nodeName": "orders-service-app-host-1-8081", "serviceName": "orders-service",
            "port": 8081, "ssl": false, "path": "", "timeOut": 5, "weight": 1
        }),
    }
}

// ---- header names ----

#[tokio::test]
async fn a_discover_redirect_writes_location_in_title_case() {
    let (s, _dir) = server().await;
    let body = registration(Sdk::Python);
    assert_eq!(register(&s, Sdk::Python, None, &body).await.status, 200);
    let r = call(
        &s,
        Sdk::Python,
        "GET",
        "/api/maxine/serviceops/discover?serviceName=orders-service&endPoint=%2Fhealth",
        None,
        None,
    )
    .await;
    assert!(r.head.starts_with("HTTP/1.1 302 Found\r\n"), "{}", r.head);
    assert!(
        r.head
            .contains("\r\nLocation: http://127.0.0.1:8081/health\r\n"),
        "{}",
        r.head
    );
    assert!(!r.head.contains("\r\nlocation:"), "{}", r.head);
    // Every name, not only Location: the index header too.
    assert!(r.head.contains("\r\nX-Maxine-Index: "), "{}", r.head);
    for (name, _) in &r.headers {
        let title = name
            .split('-')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("-");
        assert_eq!(name, &title, "{}", r.head);
    }
    assert_eq!(r.header("Location"), Some("http://127.0.0.1:8081/health"));
}

#[tokio::test]
async fn json_answers_and_errors_name_content_type_in_title_case() {
    let (s, _dir) = server().await;
    for target in [
        "/api/actuator/health",
        "/api/maxine/serviceops/discover?serviceName=nothing-here",
        "/api/maxine/serviceops/servers",
        "/api/no-such-route",
    ] {
        let r = call(&s, Sdk::Python, "GET", target, None, None).await;
        let ct = r.header("Content-Type");
        assert!(
            ct.is_some_and(|v| v.starts_with("application/json")),
            "{target}: {}",
            r.head
        );
        assert!(r.json().is_object(), "{target}");
    }
}

// ---- register and heartbeat ----

#[tokio::test]
async fn register_as_each_sdk_sends_it_answers_the_fields_of_the_original() {
    let (s, _dir) = server().await;
    for sdk in SDKS {
        // The Node SDK sends its token on every call once signed in; the
        // Python one names the body's type `Content-type`.
        let token = match sdk {
            Sdk::Node => Some(sign_in(&s, sdk).await),
            _ => None,
        };
        let body = registration(sdk);
        let r = register(&s, sdk, token.as_deref(), &body).await;
        assert_eq!(r.status, 200, "{sdk:?}: {r:?}");
        assert!(
            r.header("Content-Type")
                .unwrap()
                .starts_with("application/json")
        );
        let got = r.json();
        for field in ["hostName", "nodeName", "serviceName", "timeOut", "weight"] {
            assert_eq!(got[field], body[field], "{sdk:?} {field}");
        }
        let want_address = match sdk {
            Sdk::Java => "http://app-host-1:8081",
            _ => "http://127.0.0.1:8081",
        };
        assert_eq!(got["address"], want_address, "{sdk:?}");
        assert_eq!(got["healthCheckPath"], "", "{sdk:?}");
        assert!(got["registeredAt"].is_string(), "{sdk:?}");
    }
    // Three nodes of one service.
    let r = get_native(&s, "/v1/services/orders-service").await;
    assert_eq!(r["instances"].as_array().unwrap().len(), 3, "{r}");
}

#[tokio::test]
async fn a_health_check_path_is_kept_and_shown_in_the_listings() {
    let (s, _dir) = server().await;
    let token = sign_in(&s, Sdk::Python).await;
    // The path becomes an HTTP check on the instance: give it something
    // that passes, or the instance may fail its check (and leave the
    // listing of passing instances) before the listing is read.
    let app = axum::Router::new().route("/health", axum::routing::get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut body = registration(Sdk::Python);
    body["port"] = json!(port);
    body["healthCheckPath"] = json!("/health");
    let r = register(&s, Sdk::Python, None, &body).await;
    assert_eq!(
        (r.status, &r.json()["healthCheckPath"]),
        (200, &json!("/health"))
    );
    let r = call(
        &s,
        Sdk::Python,
        "GET",
        "/api/maxine/serviceops/servers",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(
        r.json()["orders-service"]["nodes"]["Python-node-0"]["healthCheckPath"],
        "/health"
    );
    let native = get_native(&s, "/v1/services/orders-service").await;
    assert_eq!(
        native["instances"][0]["compat"]["healthCheckPath"],
        "/health"
    );
}

#[tokio::test]
async fn the_heartbeat_is_the_same_post_again_and_changes_nothing() {
    let (s, _dir) = server().await;
    for sdk in SDKS {
        let body = registration(sdk);
        assert_eq!(register(&s, sdk, None, &body).await.status, 200);
        let index = s.registry.index();
        // The SDKs post every timeOut / 2 seconds (at least one).
        for _ in 0..3 {
            let r = register(&s, sdk, None, &body).await;
            assert_eq!(r.status, 200, "{sdk:?}: {r:?}");
            assert_eq!(r.json()["nodeName"], body["nodeName"]);
        }
        assert_eq!(
            s.registry.index(),
            index,
            "{sdk:?}: a heartbeat changed the registry"
        );
    }
    // A node whose heartbeats stopped, then resumed, is passing again.
    s.registry
        .expire(std::time::Instant::now() + std::time::Duration::from_secs(60));
    let listed = get_native(&s, "/v1/services/orders-service?healthy=true").await;
    assert_eq!(listed["instances"].as_array().unwrap().len(), 0, "{listed}");
    let body = registration(Sdk::Java);
    let r = register(&s, Sdk::Java, None, &body).await;
    assert_eq!(r.status, 200);
    let listed = get_native(&s, "/v1/services/orders-service?healthy=true").await;
    assert_eq!(listed["instances"].as_array().unwrap().len(), 1, "{listed}");
}

// ---- discover and servers ----

#[tokio::test]
async fn discover_answers_302_with_location_to_each_sdk() {
    let (s, _dir) = server().await;
    let body = registration(Sdk::Node);
    register(&s, Sdk::Node, None, &body).await;
    // The SDKs encode the end point's '/' (encodeURIComponent, urlencode,
    // URLEncoder); without one, they leave endPoint out.
    for sdk in SDKS {
        for (query, location) in [
            (
                "serviceName=orders-service&endPoint=%2Fapi%2Forders",
                "http://127.0.0.1:8081/api/orders",
            ),
            ("serviceName=orders-service", "http://127.0.0.1:8081"),
        ] {
            let target = format!("/api/maxine/serviceops/discover?{query}");
            let r = call(&s, sdk, "GET", &target, None, None).await;
            assert_eq!(r.status, 302, "{sdk:?} {query}: {r:?}");
            assert_eq!(r.header("Location"), Some(location), "{sdk:?}: {}", r.head);
        }
    }
    // 503 and 400 are answers the SDKs expect too, with a JSON message.
    for (query, status, message) in [
        ("serviceName=ghost", 503, "Service Unavailable"),
        ("serviceName=", 400, "Please provide the serviceName."),
    ] {
        let target = format!("/api/maxine/serviceops/discover?{query}");
        let r = call(&s, Sdk::Python, "GET", &target, None, None).await;
        assert_eq!(r.status, status, "{r:?}");
        assert!(
            r.header("Content-Type")
                .unwrap()
                .contains("application/json")
        );
        assert_eq!(r.json(), json!({ "message": message }));
    }
}

#[tokio::test]
async fn servers_with_the_sign_in_token_is_the_registry_by_maxine_name() {
    let (s, _dir) = server().await;
    for sdk in SDKS {
        let body = registration(sdk);
        register(&s, sdk, None, &body).await;
    }
    for sdk in SDKS {
        let token = sign_in(&s, sdk).await;
        let r = call(
            &s,
            sdk,
            "GET",
            "/api/maxine/serviceops/servers",
            Some(&token),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{sdk:?}: {r:?}");
        let nodes = &r.json()["orders-service"]["nodes"];
        let node = &nodes["orders-service-app-host-1-8081-0"];
        assert_eq!(
            node["parentNode"], "orders-service-app-host-1-8081",
            "{nodes}"
        );
        assert_eq!(node["address"], "http://app-host-1:8081");
        assert_eq!(node["timeOut"], 5);
        assert_eq!(nodes.as_object().unwrap().len(), 3, "{nodes}");
        // Without the token (the Java SDK sends none before sign-in).
        let r = call(&s, sdk, "GET", "/api/maxine/serviceops/servers", None, None).await;
        assert_eq!(
            (r.status, r.json()),
            (401, json!({"message": "Unauthorized"}))
        );
    }
}

// ---- sign-in and change-password ----

#[tokio::test]
async fn sign_in_and_change_password_as_each_sdk() {
    for sdk in SDKS {
        let (s, _dir) = server().await;
        let token = sign_in(&s, sdk).await;
        let body = json!({"password": ADMIN.1, "newPassword": "a-new-password-1"});
        let r = call(
            &s,
            sdk,
            "PUT",
            "/api/maxine/change-password",
            Some(&token),
            Some(&body),
        )
        .await;
        assert_eq!(r.status, 200, "{sdk:?}: {r:?}");
        assert_eq!(
            r.json(),
            json!({"message": "successfully updated password"})
        );
        // The old token is spent; the new password signs in.
        let r = call(
            &s,
            sdk,
            "GET",
            "/api/maxine/serviceops/servers",
            Some(&token),
            None,
        )
        .await;
        assert_eq!(r.status, 401, "{sdk:?}");
        let body = json!({"userName": ADMIN.0, "password": "a-new-password-1"});
        let r = call(&s, sdk, "POST", "/api/maxine/signin", None, Some(&body)).await;
        assert_eq!(r.status, 200, "{sdk:?}: {r:?}");
        assert!(r.json()["accessToken"].is_string());
    }
}

// ---- actuator ----

#[tokio::test]
async fn the_actuator_answers_without_a_credential_in_the_original_shapes() {
    let (s, _dir) = server().await;
    for sdk in SDKS {
        let health = call(&s, sdk, "GET", "/api/actuator/health", None, None).await;
        assert_eq!(
            (health.status, health.json()),
            (200, json!({"status": "UP"}))
        );

        let info = call(&s, sdk, "GET", "/api/actuator/info", None, None).await;
        assert_eq!(info.status, 200, "{sdk:?}: {info:?}");
        let build = &info.json()["build"];
        assert_eq!(build["name"], "maxine");
        assert_eq!(build["version"], env!("CARGO_PKG_VERSION"));
        assert!(build["description"].is_string());

        let metrics = call(&s, sdk, "GET", "/api/actuator/metrics", None, None).await;
        assert_eq!(metrics.status, 200, "{sdk:?}: {metrics:?}");
        let m = metrics.json();
        assert!(m["uptime"].as_f64().is_some_and(|u| u >= 0.0), "{m}");
        assert!(m["mem"]["rss"].as_u64().is_some_and(|b| b > 0), "{m}");

        // As the original without a report URL: the SDKs' call fails with 404.
        let perf = call(&s, sdk, "GET", "/api/actuator/performance", None, None).await;
        assert_eq!(
            (perf.status, perf.json()),
            (
                404,
                json!({"message": "Performance report URL is not configured."})
            )
        );
    }
}

// ---- logs ----

#[tokio::test]
async fn the_log_routes_show_download_and_clear_the_servers_recent_lines() {
    // The server's lines reach the ring through this thread's subscriber:
    // the test runtime runs every task of the server on this thread.
    //
    // A second dispatcher stays alive meanwhile: with a single one in the
    // process, tracing-core works out whether a call site is wanted from
    // the thread that first reaches it, and a server of another test (a
    // thread without a subscriber) would switch "maxine is serving" off
    // for every thread.
    let _second = tracing::Dispatch::new(tracing_subscriber::registry());
    let ring = maxine::telemetry::RecentLogs::new(maxine::telemetry::recent::DEFAULT_LINES);
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::INFO)
        .with(ring.layer());
    let _guard = tracing::subscriber::set_default(subscriber);
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path(), &[(ADMIN.0, "admin", ADMIN.1)]);
    // Deny by default, so that no credential means no operator rights.
    let s = TestServer::start_with_logs(ring, |f| {
        f.acl.users_file = Some(users);
        f.acl.default_policy = Some("deny".into());
    })
    .await;

    for sdk in SDKS {
        let token = sign_in(&s, sdk).await;
        let recent = call(&s, sdk, "GET", "/api/logs/recent", Some(&token), None).await;
        assert_eq!(recent.status, 200, "{sdk:?}: {recent:?}");
        let logs = recent.json()["logs"]
            .as_str()
            .expect("logs is a string")
            .to_string();
        assert!(logs.contains("maxine is serving"), "{sdk:?}: {logs}");

        let files = call(&s, sdk, "GET", "/api/logs/download", Some(&token), None).await;
        assert_eq!(files.status, 200, "{sdk:?}: {files:?}");
        let files = files.json();
        let link = files["maxine-recent.log"].as_str().expect("a link");
        assert_eq!(files.as_object().unwrap().len(), 1, "{files}");
        let file = call(&s, sdk, "GET", link, Some(&token), None).await;
        assert_eq!(file.status, 200);
        assert_eq!(
            file.header("Content-Type"),
            Some("text/plain; charset=utf-8")
        );
        assert!(file.text().contains("maxine is serving"), "{}", file.text());

        // A GET, answered 200 with no body; the first new line says who.
        let clear = call(&s, sdk, "GET", "/api/logs/recent/clear", Some(&token), None).await;
        assert_eq!(
            (clear.status, clear.body.len()),
            (200, 0),
            "{sdk:?}: {clear:?}"
        );
        let recent = call(&s, sdk, "GET", "/api/logs/recent", Some(&token), None).await;
        let logs = recent.json()["logs"].as_str().unwrap().to_string();
        assert!(!logs.contains("maxine is serving"), "{logs}");
        assert!(
            logs.lines()
                .next()
                .is_some_and(|l| l.contains("the recent log lines were cleared")
                    && l.contains("by=user:admin")),
            "{logs}"
        );
        // Put a line back for the next SDK's look.
        tracing::info!("maxine is serving (a line of the test)");
    }

    // Without a credential, the anonymous token, which lacks
    // operator:read and operator:write: 403 (the original: 401, as it
    // wanted a signed-in user).
    for target in [
        "/api/logs/recent",
        "/api/logs/download",
        "/api/logs/recent/clear",
    ] {
        let r = call(&s, Sdk::Python, "GET", target, None, None).await;
        assert_eq!(r.status, 403, "{target}: {r:?}");
        assert!(
            r.json()["message"]
                .as_str()
                .unwrap()
                .contains("lacks operator:")
        );
    }
}

/// `GET` on the native API through reqwest (not part of any SDK's contract).
async fn get_native(s: &TestServer, target: &str) -> Value {
    let r = s
        .http
        .get(format!("{}{target}", s.http_base()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{target}");
    r.json().await.unwrap()
}
