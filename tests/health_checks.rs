//! Active health checks against real targets in this process: HTTP servers
//! that flip between 200, 500, 429 and hanging, a gRPC health server, a
//! closed TCP port and scripts. Every checked instance is registered on a
//! loopback address where the test's own target listens.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use common::TestServer;
use common::api::{delete, get, put};
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

const OK: u8 = 0;
const FAIL: u8 = 1;
const BUSY: u8 = 2;
const HANG: u8 = 3;

/// An HTTP target on `ip`: answers by its mode, counts the requests.
struct Target {
    addr: std::net::SocketAddr,
    mode: Arc<AtomicU8>,
    hits: Arc<AtomicU64>,
}

impl Target {
    async fn start(ip: &str) -> Self {
        let mode = Arc::new(AtomicU8::new(OK));
        let hits = Arc::new(AtomicU64::new(0));
        let (m, h) = (mode.clone(), hits.clone());
        let app = axum::Router::new().route(
            "/health",
            axum::routing::get(move || {
                let (m, h) = (m.clone(), h.clone());
                async move {
                    h.fetch_add(1, Ordering::Relaxed);
                    match m.load(Ordering::Relaxed) {
                        OK => (axum::http::StatusCode::OK, "fine"),
                        FAIL => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "broken"),
                        BUSY => (axum::http::StatusCode::TOO_MANY_REQUESTS, "busy"),
                        _ => std::future::pending().await,
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(format!("{ip}:0"))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, mode, hits }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::Relaxed);
    }

    fn url(&self) -> String {
        format!("http://{}/health", self.addr)
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

/// Registers `id` of `service` at the target's address with `checks`.
async fn register(s: &TestServer, service: &str, id: &str, ip: &str, checks: Value) {
    s.register(
        service,
        id,
        json!({ "address": ip, "port": 80, "ttl": "1h", "checks": checks }),
    )
    .await;
}

async fn instance(s: &TestServer, service: &str, id: &str) -> Value {
    let r = get(s, &format!("/v1/services/{service}")).await;
    r.body["instances"]
        .as_array()
        .and_then(|all| all.iter().find(|i| i["id"] == id).cloned())
        .unwrap_or(Value::Null)
}

async fn health(s: &TestServer, service: &str, id: &str) -> String {
    instance(s, service, id).await["health"]
        .as_str()
        .unwrap_or("gone")
        .to_string()
}

async fn check(s: &TestServer, service: &str, id: &str, name: &str) -> Value {
    let inst = instance(s, service, id).await;
    inst["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name).cloned())
        .unwrap_or(Value::Null)
}

async fn a_records(s: &TestServer, name: &str) -> Vec<String> {
    let m = s.ask(name, RecordType::A).await;
    let mut out: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            hickory_proto::rr::RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

/// Instances `a` (127.0.0.2) and `b` (127.0.0.3) of service `web`, each
/// with an HTTP check every second against its own target, listening on
/// the instance's address.
async fn two_checked_instances(s: &TestServer) -> (Target, Target) {
    let (a, b) = (
        Target::start("127.0.0.2").await,
        Target::start("127.0.0.3").await,
    );
    for (id, ip, t) in [("a", "127.0.0.2", &a), ("b", "127.0.0.3", &b)] {
        register(
            s,
            "web",
            id,
            ip,
            json!([{ "name": "http", "http": t.url(), "interval": "1s" }]),
        )
        .await;
    }
    (a, b)
}

#[tokio::test]
async fn an_http_check_takes_the_instance_out_of_dns_and_brings_it_back() {
    let s = TestServer::start().await;
    let (a, b) = two_checked_instances(&s).await;
    assert_eq!(
        a_records(&s, "web.maxine.").await,
        ["127.0.0.2", "127.0.0.3"]
    );
    assert_eventually!(a.hits() > 0 && b.hits() > 0, "the checks never ran");

    a.set(FAIL);
    assert_eventually!(
        health(&s, "web", "a").await == "critical",
        "500 never made it critical"
    );
    let c = check(&s, "web", "a", "http").await;
    assert_eq!(c["status"], "critical", "{c}");
    assert!(c["output"].as_str().unwrap().contains("500"), "{c}");
    assert_eq!(a_records(&s, "web.maxine.").await, ["127.0.0.3"]);
    // The implicit ttl check is listed and passing.
    assert_eq!(check(&s, "web", "a", "ttl").await["status"], "passing");

    // 429: warning, which DNS still answers with by default.
    a.set(BUSY);
    assert_eventually!(
        health(&s, "web", "a").await == "warning",
        "429 never made it warning"
    );
    assert_eq!(
        a_records(&s, "web.maxine.").await,
        ["127.0.0.2", "127.0.0.3"]
    );

    a.set(OK);
    assert_eventually!(
        health(&s, "web", "a").await == "passing",
        "200 never brought it back"
    );
    assert_eq!(
        a_records(&s, "web.maxine.").await,
        ["127.0.0.2", "127.0.0.3"]
    );
}

#[tokio::test]
async fn with_only_passing_a_warning_instance_leaves_the_answers() {
    let s = TestServer::start_with(|f| f.dns.only_passing = true).await;
    let (a, _b) = two_checked_instances(&s).await; // b keeps serving
    a.set(BUSY);
    assert_eventually!(
        health(&s, "web", "a").await == "warning",
        "429 never made it warning"
    );
    assert_eq!(a_records(&s, "web.maxine.").await, ["127.0.0.3"]);
}

#[tokio::test]
async fn a_hanging_target_does_not_delay_a_healthy_targets_checks() {
    let s = TestServer::start().await;
    let (stuck, fine) = (
        Target::start("127.0.0.2").await,
        Target::start("127.0.0.3").await,
    );
    stuck.set(HANG);
    register(
        &s,
        "web",
        "stuck",
        "127.0.0.2",
        json!([{ "name": "http", "http": stuck.url(), "interval": "1s", "timeout": "900ms" }]),
    )
    .await;
    register(
        &s,
        "web",
        "fine",
        "127.0.0.3",
        json!([{ "name": "http", "http": fine.url(), "interval": "1s" }]),
    )
    .await;
    assert_eventually!(
        health(&s, "web", "stuck").await == "critical",
        "a hang never timed out"
    );
    let out = check(&s, "web", "stuck", "http").await["output"].clone();
    assert!(out.as_str().unwrap().contains("timed out"), "{out}");
    // While the stuck target holds its runs, the other keeps being checked.
    let before = fine.hits();
    assert_eventually!(
        fine.hits() >= before + 3,
        "the healthy target's checks stalled"
    );
    assert_eq!(health(&s, "web", "fine").await, "passing");
}

#[tokio::test]
async fn tcp_checks_pass_on_a_listening_port_and_fail_on_a_closed_one() {
    let s = TestServer::start().await;
    let open = tokio::net::TcpListener::bind("127.0.0.4:0").await.unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.5:0").unwrap();
        l.local_addr().unwrap()
    };
    register(
        &s,
        "db",
        "up",
        "127.0.0.4",
        json!([{ "name": "tcp", "tcp": open.local_addr().unwrap().to_string(), "interval": "1s" }]),
    )
    .await;
    register(
        &s,
        "db",
        "down",
        "127.0.0.5",
        json!([{ "name": "tcp", "tcp": closed.to_string(), "interval": "1s" }]),
    )
    .await;
    assert_eventually!(
        health(&s, "db", "down").await == "critical",
        "a closed port never failed"
    );
    let out = check(&s, "db", "down", "tcp").await["output"].clone();
    assert!(out.as_str().unwrap().contains("connecting"), "{out}");
    assert_eventually!(
        check(&s, "db", "up", "tcp").await["output"]
            .as_str()
            .is_some_and(|o| o.contains("connected")),
        "the open port was never checked"
    );
    assert_eq!(health(&s, "db", "up").await, "passing");
    assert_eq!(a_records(&s, "db.maxine.").await, ["127.0.0.4"]);
}

#[tokio::test]
async fn grpc_checks_follow_the_serving_status_of_a_health_server() {
    use tonic_health::ServingStatus;
    let s = TestServer::start().await;
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("pay", ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.6:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap()
    });
    register(
        &s,
        "pay",
        "p1",
        "127.0.0.6",
        json!([{ "name": "grpc", "grpc": addr.to_string(), "grpc_service": "pay", "interval": "1s" }]),
    )
    .await;
    assert_eventually!(
        check(&s, "pay", "p1", "grpc").await["output"]
            .as_str()
            .is_some_and(|o| o.contains("SERVING")),
        "the gRPC check never ran"
    );
    assert_eq!(health(&s, "pay", "p1").await, "passing");
    reporter
        .set_service_status("pay", ServingStatus::NotServing)
        .await;
    assert_eventually!(
        health(&s, "pay", "p1").await == "critical",
        "NOT_SERVING never made it critical"
    );
    reporter
        .set_service_status("pay", ServingStatus::Serving)
        .await;
    assert_eventually!(
        health(&s, "pay", "p1").await == "passing",
        "SERVING never brought it back"
    );
}

#[tokio::test]
async fn script_checks_are_refused_unless_enabled() {
    let s = TestServer::start().await;
    let r = put(
        &s,
        "/v1/services/job/instances/j1",
        json!({ "address": "127.0.0.7", "port": 80,
                "checks": [{ "name": "script", "args": ["/bin/true"] }] }),
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .contains("--enable-script-checks"),
        "{r:?}"
    );
}

fn alive(pid: i32) -> bool {
    // A zombie is dead: only its exit status is left.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|st| {
            !st.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn a_script_check_is_killed_with_its_process_group_at_the_timeout() {
    let s = TestServer::start_with(|f| f.health.enable_script_checks = true).await;
    let dir = tempfile::tempdir().unwrap();
    let (mode, pids) = (dir.path().join("mode"), dir.path().join("pids"));
    std::fs::write(&mode, "0").unwrap();
    // Exit with the code in `mode`; "hang": start a child and wait forever.
    let script = format!(
        "m=$(cat {m}); if [ \"$m\" = hang ]; then sleep 1000 & echo \"$$ $!\" > {p}; wait; fi; exit $m",
        m = mode.display(),
        p = pids.display()
    );
    s.register(
        "job",
        "j1",
        json!({ "address": "127.0.0.7", "port": 80, "ttl": "1h",
                "checks": [{ "name": "script", "args": ["/bin/sh", "-c", script],
                             "interval": "1s", "timeout": "500ms" }] }),
    )
    .await;
    assert_eventually!(
        check(&s, "job", "j1", "script").await["output"]
            .as_str()
            .is_some_and(|o| o.contains("exit")),
        "the script never ran"
    );
    assert_eq!(health(&s, "job", "j1").await, "passing");
    std::fs::write(&mode, "1").unwrap();
    assert_eventually!(
        health(&s, "job", "j1").await == "warning",
        "exit 1 never made it warning"
    );
    std::fs::write(&mode, "hang").unwrap();
    assert_eventually!(
        health(&s, "job", "j1").await == "critical",
        "a hanging script never timed out"
    );
    let out = check(&s, "job", "j1", "script").await["output"].clone();
    assert!(out.as_str().unwrap().contains("killed"), "{out}");
    // Stop the next runs from hanging, then look for what the hung one left.
    std::fs::write(&mode, "2").unwrap();
    let text = std::fs::read_to_string(&pids).unwrap();
    let pids: Vec<i32> = text
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "{text}");
    assert_eventually!(
        !pids.iter().any(|p| alive(*p)),
        "processes of the script live on: {pids:?}"
    );
    // The group is gone too: nothing of it can be signalled.
    let group = nix::unistd::Pid::from_raw(pids[0]);
    assert_eventually!(
        nix::sys::signal::killpg(group, None).is_err(),
        "the script's process group is still there"
    );
}

#[tokio::test]
async fn checks_are_defined_and_removed_later_and_bad_ones_get_400() {
    let s = TestServer::start().await;
    let t = Target::start("127.0.0.8").await;
    s.register(
        "api",
        "i1",
        json!({ "address": "127.0.0.8", "port": 80, "ttl": "1h" }),
    )
    .await;
    let path = "/v1/services/api/instances/i1/checks/http";
    let r = put(&s, path, json!({ "http": t.url(), "interval": "1s" })).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["checks"][1]["name"], "http", "{r:?}");
    assert_eventually!(t.hits() > 0, "a check defined later never ran");
    t.set(FAIL);
    assert_eventually!(
        health(&s, "api", "i1").await == "critical",
        "it never failed"
    );
    // Removed: the instance is back to its ttl check alone, and passing.
    let r = delete(&s, path).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["checks"].as_array().unwrap().len(), 1, "{r:?}");
    assert_eq!(health(&s, "api", "i1").await, "passing");
    let hits = t.hits();
    assert_eq!(delete(&s, path).await.status, 404);
    for (body, needle) in [
        (json!({ "interval": "1s" }), "exactly one of"),
        (
            json!({ "http": t.url(), "tcp": "127.0.0.1:1" }),
            "exactly one of",
        ),
        (json!({ "http": "ftp://127.0.0.1/" }), "http://"),
        (json!({ "http": "not a url" }), "not a URL"),
        (json!({ "http": t.url(), "interval": 0 }), "interval"),
        (json!({ "http": t.url(), "timeout": "1m" }), "timeout"),
        (
            json!({ "http": t.url(), "failures_before_critical": 0 }),
            "failures_before_critical",
        ),
        (
            json!({ "http": t.url(), "deregister_critical_after": "30d" }),
            "deregister_critical_after",
        ),
        (json!({ "http": t.url(), "name": "other" }), "path"),
        (json!({ "tcp": "localhost:80" }), "IP address and port"),
        (json!({ "ttl": "10s" }), "implicit"),
        (json!({ "http": t.url(), "method": "get me" }), "method"),
        (json!({ "http": t.url(), "bogus": 1 }), "unknown field"),
    ] {
        let r = put(&s, path, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {r:?}");
        let err = r.body["error"].as_str().unwrap_or_default();
        assert!(err.contains(needle), "{body}: {err}");
    }
    let r = put(
        &s,
        "/v1/services/api/instances/i1/checks/Not_A_Label",
        json!({ "http": t.url() }),
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    let r = put(
        &s,
        "/v1/services/api/instances/nope/checks/http",
        json!({ "http": t.url() }),
    )
    .await;
    assert_eq!(r.status, 404, "{r:?}");
    let many: Vec<Value> = (0..9)
        .map(|n| json!({ "name": format!("c{n}"), "tcp": "127.0.0.8:1" }))
        .collect();
    let r = put(
        &s,
        "/v1/services/api/instances/i2",
        json!({ "address": "127.0.0.8", "port": 80, "checks": many }),
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    // Nothing defined runs no more.
    assert!(t.hits() <= hits + 1, "a removed check kept running");
}

#[tokio::test]
async fn a_check_critical_for_deregister_critical_after_removes_the_instance() {
    let s = TestServer::start().await;
    let t = Target::start("127.0.0.9").await;
    t.set(FAIL);
    register(
        &s,
        "gone",
        "g1",
        "127.0.0.9",
        json!([{ "name": "http", "http": t.url(), "interval": "1s", "deregister_critical_after": "2s" }]),
    )
    .await;
    assert_eventually!(
        health(&s, "gone", "g1").await == "critical",
        "it never failed"
    );
    assert_eventually!(
        get(&s, "/v1/services/gone").await.status == 404,
        "a critical instance was never deregistered"
    );
    // Stored as a removal: still gone after a restart.
    let s = s.restart().await;
    assert_eq!(get(&s, "/v1/services/gone").await.status, 404);
}

#[tokio::test]
async fn check_definitions_survive_a_restart_and_run_again() {
    let s = TestServer::start().await;
    let t = Target::start("127.0.0.10").await;
    register(&s, "keep", "k1", "127.0.0.10", json!([{ "name": "http", "http": t.url(), "interval": "1s", "failures_before_critical": 2 }]))
        .await;
    let s = s.restart().await;
    let c = check(&s, "keep", "k1", "http").await;
    assert_eq!(
        (c["http"].as_str(), c["failures_before_critical"].as_u64()),
        (Some(t.url().as_str()), Some(2)),
        "{c}"
    );
    t.set(FAIL);
    assert_eventually!(
        health(&s, "keep", "k1").await == "critical",
        "the check did not run after the restart"
    );
}

#[tokio::test]
async fn a_maxine_health_check_path_is_an_http_check_of_the_instance() {
    let s = TestServer::start().await;
    let t = Target::start("127.0.0.11").await;
    // Failing from the start: its default interval is 10 s, and its first
    // run comes within a second of the registration.
    t.set(FAIL);
    let r = common::api::post(
        &s,
        "/api/maxine/serviceops/register",
        json!({ "hostName": "127.0.0.11", "nodeName": "n1", "serviceName": "legacy",
                "port": t.addr.port(), "healthCheckPath": "/health" }),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let c = check(&s, "legacy", "n1", "health-check-path").await;
    assert_eq!(
        c["http"],
        format!("http://127.0.0.11:{}/health", t.addr.port()),
        "{c}"
    );
    assert_eventually!(
        health(&s, "legacy", "n1").await == "critical",
        "a failing path never made it critical"
    );
    assert!(t.hits() > 0);
}
