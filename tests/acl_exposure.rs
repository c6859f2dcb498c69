//! What keeps an API from being reachable by accident: plain HTTP off
//! loopback needs an explicit decision, and a loopback API answers only to
//! its own host names (DNS rebinding gets 421).

mod common;

use common::TestServer;
use common::api::{Reply, send};
use serde_json::json;

/// `maxine serve` on a non-loopback address without TLS and without
/// `--insecure-http` exits at once, saying what to do. (192.0.2.1 is a
/// documentation address: nothing is bound, whatever happens.)
#[tokio::test]
async fn serving_plain_http_off_loopback_without_a_decision_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = common::run_maxine(&[
        "serve",
        "--data-dir",
        &dir.path().display().to_string(),
        "--http-addr",
        "192.0.2.1:8080",
        "--dns-addr",
        "127.0.0.1:0",
    ])
    .await;
    assert!(!ok, "maxine started:\n{out}");
    for what in [
        "192.0.2.1:8080",
        "--tls-cert",
        "--tls-key",
        "--insecure-http",
        "acl.default_policy",
        "/v1/acl/bootstrap",
    ] {
        assert!(
            out.contains(what),
            "the refusal does not mention {what}:\n{out}"
        );
    }
    assert!(!out.contains("maxine is serving"), "{out}");
}

async fn with_host(s: &TestServer, path: &str, host: &str) -> Reply {
    send(
        s.http
            .get(format!("{}{path}", s.http_base()))
            .header(reqwest::header::HOST, host),
    )
    .await
}

#[tokio::test]
async fn a_loopback_api_answers_421_to_foreign_host_names() {
    let s = TestServer::start().await;
    let port = s.http_addr.port();
    // (Host, path, status): the API's own names pass, others do not, on
    // public routes too and before any credential is looked at.
    #[rustfmt::skip]
    let table: &[(String, &str, u16)] = &[
        (format!("127.0.0.1:{port}"),   "/v1/health", 200),
        (format!("localhost:{port}"),   "/v1/health", 200),
        ("LOCALHOST".into(),            "/v1/services", 200),
        ("evil.example".into(),         "/v1/health", 421),
        (format!("evil.example:{port}"), "/v1/services", 421),
        ("127.0.0.1.evil.example".into(), "/v1/health", 421),
        ("evil.example".into(),         "/api/actuator/health", 421),
    ];
    for (host, path, status) in table {
        let r = with_host(&s, path, host).await;
        assert_eq!(r.status, *status, "Host {host} {path}: {r:?}");
        if *status != 421 {
            continue;
        }
        // JSON in the format of the API the path belongs to, naming the fix.
        let text = if path.starts_with("/api/") {
            assert_eq!(r.body.as_object().unwrap().len(), 1, "{r:?}");
            r.body["message"].as_str()
        } else {
            assert_eq!(r.body["kind"], "misdirected_host", "{r:?}");
            r.body["error"].as_str()
        };
        let text = text.unwrap_or_else(|| panic!("no text: {r:?}"));
        assert!(text.contains("http.allowed_hosts"), "{text}");
    }
    // A refused host changes nothing, even with a write.
    let before = s.registry.index();
    let r = send(
        s.http
            .put(format!("{}/v1/services/web/instances/w1", s.http_base()))
            .header(reqwest::header::HOST, "evil.example")
            .json(&json!({"address": "10.0.0.1", "port": 80})),
    )
    .await;
    assert_eq!(r.status, 421, "{r:?}");
    assert_eq!(s.registry.index(), before);
}

#[tokio::test]
async fn allowed_hosts_admits_a_configured_name_and_only_those_listed() {
    let s = TestServer::start_with(|f| {
        // 127.0.0.1 stays listed: the harness itself uses it.
        f.http.allowed_hosts = vec!["maxine.internal".into(), "127.0.0.1".into()];
    })
    .await;
    let port = s.http_addr.port();
    #[rustfmt::skip]
    let table: &[(String, u16)] = &[
        ("maxine.internal".into(),           200),
        (format!("maxine.internal:{port}"),  200),
        ("MAXINE.internal".into(),           200),
        (format!("127.0.0.1:{port}"),        200),
        // The loopback names are no longer implied once a list is given.
        (format!("localhost:{port}"),        421),
        ("other.internal".into(),            421),
        ("maxine.internal.evil.example".into(), 421),
    ];
    for (host, status) in table {
        let r = with_host(&s, "/v1/health", host).await;
        assert_eq!(r.status, *status, "Host {host}: {r:?}");
    }
}
