//! The native JSON API (`/v1`) against a real server over real sockets:
//! every route, its answers, and every class of bad input (which must be
//! answered with a JSON error and leave the registry unchanged).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::TestServer;
use maxine::core::{Datacenter, Registry, RegistryConfig};
use maxine::http::{HttpState, ROUTES, router, serve};
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// One answer, decoded.
#[derive(Debug)]
struct Reply {
    status: u16,
    index: Option<u64>,
    body: Value,
}

async fn send(req: reqwest::RequestBuilder) -> Reply {
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let index = resp
        .headers()
        .get("x-maxine-index")
        .map(|v| v.to_str().unwrap().parse().expect("numeric index"));
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply {
        status,
        index,
        body,
    }
}

fn url(s: &TestServer, path: &str) -> String {
    format!("{}{path}", s.http_base())
}

async fn put(s: &TestServer, path: &str, body: Value) -> Reply {
    send(s.http.put(url(s, path)).json(&body)).await
}

async fn get(s: &TestServer, path: &str) -> Reply {
    send(s.http.get(url(s, path))).await
}

/// Everything the registry holds, to check that a rejected request changed nothing.
fn snapshot(s: &TestServer) -> (u64, Vec<String>) {
    let mut all = Vec::new();
    for snap in s.registry.services() {
        for (id, inst) in &snap.instances {
            all.push(format!(
                "{}/{}/{id}@{}:{}",
                snap.key.dc, snap.key.service, inst.address, inst.port
            ));
        }
    }
    (s.registry.index(), all)
}

/// Asserts a JSON error of the native shape with `status` whose text contains `needle`.
fn assert_error(r: &Reply, status: u16, needle: &str) {
    assert_eq!(r.status, status, "{r:?}");
    let text = r.body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error text: {r:?}"));
    assert!(
        text.to_lowercase().contains(&needle.to_lowercase()),
        "{text:?} does not mention {needle:?}"
    );
    assert!(r.body["kind"].is_string(), "{r:?}");
}

/// Sends a registration that must be refused, and checks that nothing changed.
async fn assert_register_rejected(body: Value, status: u16, needle: &str) {
    let s = TestServer::start().await;
    put(
        &s,
        "/v1/services/payments/instances/keep",
        json!({"address": "10.0.0.1", "port": 80}),
    )
    .await;
    let before = snapshot(&s);
    let r = put(&s, "/v1/services/payments/instances/p1", body).await;
    assert_error(&r, status, needle);
    assert_eq!(
        snapshot(&s),
        before,
        "a rejected registration changed the registry"
    );
}

fn payments_body() -> Value {
    json!({
        "address": "10.0.0.7",
        "port": 8080,
        "version": "2.1.0",
        "tags": ["blue"],
        "metadata": {"zone": "a"},
        "weight": 5,
        "ttl": "1m"
    })
}

// ---- probes ----

#[tokio::test]
async fn health_answers_ok() {
    let s = TestServer::start().await;
    let r = get(&s, "/v1/health").await;
    assert_eq!((r.status, r.body), (200, json!({"status": "ok"})));
}

#[tokio::test]
async fn ready_answers_200_once_the_app_serves() {
    let s = TestServer::start().await;
    let r = get(&s, "/v1/ready").await;
    assert_eq!((r.status, r.body), (200, json!({"status": "ready"})));
}

fn registry() -> Registry {
    Registry::new(
        RegistryConfig {
            local_dc: Datacenter::new("dc1").unwrap(),
            reap_after: Duration::from_secs(60),
        },
        Instant::now(),
    )
}

#[tokio::test]
async fn ready_answers_503_until_marked_ready_and_serve_stops_on_shutdown() {
    let ready = Arc::new(AtomicBool::new(false));
    let registry = registry();
    let state = HttpState {
        log: Arc::new(maxine::store::LocalLog::new(
            registry.clone(),
            Default::default(),
        )),
        registry,
        domain: "maxine".into(),
        max_body_bytes: 4096,
        ready: ready.clone(),
        durable: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(listener, router(state), None, shutdown.clone()));
    let client = reqwest::Client::new();
    let r = send(client.get(format!("http://{addr}/v1/ready"))).await;
    assert_eq!((r.status, r.body), (503, json!({"status": "not ready"})));
    ready.store(true, std::sync::atomic::Ordering::Release);
    let r = send(client.get(format!("http://{addr}/v1/ready"))).await;
    assert_eq!(r.status, 200);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
}

// ---- register, heartbeat, deregister ----

#[tokio::test]
async fn register_answers_the_stored_instance_with_its_dns_names_and_index() {
    let s = TestServer::start().await;
    let r = put(
        &s,
        "/v1/services/payments/instances/payments-1",
        payments_body(),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let index = r.body["index"].as_u64().expect("index");
    assert_eq!(
        r.index,
        Some(index),
        "X-Maxine-Index is the index of the write"
    );
    assert_eq!(
        r.body,
        json!({
            "id": "payments-1",
            "service": "payments",
            "datacenter": "dc1",
            "address": "10.0.0.7",
            "port": 8080,
            "version": "2.1.0",
            "tags": ["blue"],
            "metadata": {"zone": "a"},
            "weight": 5,
            "ttl": 60.0,
            "health": "passing",
            "index": index,
            "dns": {
                "name": "payments.maxine",
                "srv": "_payments._tcp.maxine",
                "instance": "payments-1.payments.dc1.maxine"
            }
        })
    );
    let key = maxine::core::ServiceKey::new(
        Datacenter::new("dc1").unwrap(),
        maxine::core::ServiceName::new("payments").unwrap(),
    );
    let snap = s
        .registry
        .service(&key)
        .expect("registered in the registry");
    assert_eq!(snap.instances.len(), 1);
}

#[tokio::test]
async fn register_with_only_address_and_port_takes_the_defaults() {
    let s = TestServer::start().await;
    let r = put(
        &s,
        "/v1/services/api/instances/a1",
        json!({"address": "::1", "port": 443}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["address"], "::1");
    assert_eq!(r.body["weight"], 1);
    assert_eq!(r.body["ttl"], 30.0);
    assert_eq!(r.body["version"], "");
    assert_eq!(r.body["tags"], json!([]));
    assert_eq!(r.body["metadata"], json!({}));
}

#[tokio::test]
async fn register_accepts_ttl_as_seconds_or_duration_string() {
    let s = TestServer::start().await;
    for (ttl, secs) in [
        (json!(45), 45.0),
        (json!(2.5), 2.5),
        (json!("90"), 90.0),
        (json!("1m 30s"), 90.0),
        (json!("500ms 1s"), 1.5),
    ] {
        let r = put(
            &s,
            "/v1/services/api/instances/a1",
            json!({"address": "10.0.0.1", "port": 80, "ttl": ttl}),
        )
        .await;
        assert_eq!(r.status, 200, "ttl {ttl}: {r:?}");
        assert_eq!(r.body["ttl"], secs, "ttl {ttl}");
    }
}

#[tokio::test]
async fn register_again_replaces_the_instance_with_a_new_index() {
    let s = TestServer::start().await;
    let first = put(
        &s,
        "/v1/services/api/instances/a1",
        json!({"address": "10.0.0.1", "port": 80}),
    )
    .await;
    let second = put(
        &s,
        "/v1/services/api/instances/a1",
        json!({"address": "10.0.0.2", "port": 81}),
    )
    .await;
    assert_eq!(second.status, 200);
    assert!(second.body["index"].as_u64() > first.body["index"].as_u64());
    let r = get(&s, "/v1/services/api").await;
    let instances = r.body["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0]["address"], "10.0.0.2");
    assert_eq!(instances[0]["port"], 81);
}

#[tokio::test]
async fn names_are_case_insensitive_and_stored_lowercase() {
    let s = TestServer::start().await;
    let r = put(
        &s,
        "/v1/services/Payments/instances/P1",
        json!({"address": "10.0.0.1", "port": 80}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        (r.body["service"].as_str(), r.body["id"].as_str()),
        (Some("payments"), Some("p1"))
    );
}

#[tokio::test]
async fn heartbeat_answers_the_instance_and_revives_a_critical_one() {
    let s = TestServer::start().await;
    put(
        &s,
        "/v1/services/api/instances/a1",
        json!({"address": "10.0.0.1", "port": 80, "ttl": 1}),
    )
    .await;
    // Let the core see a moment after the TTL, as its expiry driver would.
    s.registry.expire(Instant::now() + Duration::from_secs(3));
    let r = get(&s, "/v1/services/api").await;
    assert_eq!(r.body["instances"][0]["health"], "critical");

    let r = send(
        s.http
            .put(url(&s, "/v1/services/api/instances/a1/heartbeat")),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["health"], "passing");
    assert_eq!(r.body["id"], "a1");
    assert_eq!(r.index, Some(s.registry.index()));
}

#[tokio::test]
async fn heartbeat_of_unknown_instance_is_404() {
    let s = TestServer::start().await;
    let r = send(
        s.http
            .put(url(&s, "/v1/services/api/instances/ghost/heartbeat")),
    )
    .await;
    assert_error(&r, 404, "not registered");
    assert_eq!(r.body["kind"], "not_found");
    assert!(
        r.index.is_some(),
        "error answers of registry routes carry the index too"
    );
}

#[tokio::test]
async fn deregister_answers_the_index_of_the_removal() {
    let s = TestServer::start().await;
    put(
        &s,
        "/v1/services/api/instances/a1",
        json!({"address": "10.0.0.1", "port": 80}),
    )
    .await;
    put(
        &s,
        "/v1/services/api/instances/a2",
        json!({"address": "10.0.0.2", "port": 80}),
    )
    .await;
    let r = send(s.http.delete(url(&s, "/v1/services/api/instances/a1"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    let index = s.registry.index();
    assert_eq!(r.body, json!({"index": index}));
    assert_eq!(r.index, Some(index));
    let r = get(&s, "/v1/services/api").await;
    let ids: Vec<_> = r.body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!("a2")]);
}

#[tokio::test]
async fn deregister_of_unknown_instance_is_404_and_changes_nothing() {
    let s = TestServer::start().await;
    put(
        &s,
        "/v1/services/api/instances/a1",
        json!({"address": "10.0.0.1", "port": 80}),
    )
    .await;
    let before = snapshot(&s);
    let r = send(s.http.delete(url(&s, "/v1/services/api/instances/ghost"))).await;
    assert_error(&r, 404, "ghost");
    assert_eq!(snapshot(&s), before);
}

#[tokio::test]
async fn deregistering_the_last_instance_removes_the_service() {
    let s = TestServer::start().await;
    put(
        &s,
        "/v1/services/api/instances/a1",
        json!({"address": "10.0.0.1", "port": 80}),
    )
    .await;
    send(s.http.delete(url(&s, "/v1/services/api/instances/a1"))).await;
    assert_eq!(get(&s, "/v1/services/api").await.status, 404);
    assert_eq!(get(&s, "/v1/services").await.body["services"], json!([]));
}

// ---- reads ----

#[tokio::test]
async fn list_services_counts_total_and_passing_per_datacenter() {
    let s = TestServer::start().await;
    let empty = get(&s, "/v1/services").await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.body["services"], json!([]));

    put(
        &s,
        "/v1/services/api/instances/a1",
        json!({"address": "10.0.0.1", "port": 80, "ttl": 1}),
    )
    .await;
    put(
        &s,
        "/v1/services/api/instances/a2",
        json!({"address": "10.0.0.2", "port": 80, "ttl": 3600}),
    )
    .await;
    put(
        &s,
        "/v1/services/web/instances/w1",
        json!({"address": "10.0.0.3", "port": 80}),
    )
    .await;
    s.registry.expire(Instant::now() + Duration::from_secs(3));

    let r = get(&s, "/v1/services").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.index, Some(s.registry.index()));
    assert_eq!(r.body["index"], s.registry.index());
    assert_eq!(
        r.body["services"],
        json!([
            {"name": "api", "datacenters": {"dc1": {"total": 2, "passing": 1}}},
            {"name": "web", "datacenters": {"dc1": {"total": 1, "passing": 1}}}
        ])
    );
}

#[tokio::test]
async fn get_service_lists_instances_with_filters_for_version_and_health() {
    let s = TestServer::start().await;
    for (id, ip, version, ttl) in [
        ("a1", "10.0.0.1", "2.1.0", 1),
        ("a2", "10.0.0.2", "2.2.0", 3600),
        ("a3", "10.0.0.3", "3.0.0", 3600),
    ] {
        put(
            &s,
            &format!("/v1/services/api/instances/{id}"),
            json!({"address": ip, "port": 80, "version": version, "ttl": ttl}),
        )
        .await;
    }
    s.registry.expire(Instant::now() + Duration::from_secs(3));
    let ids = |r: &Reply| -> Vec<String> {
        r.body["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect()
    };

    let all = get(&s, "/v1/services/api").await;
    assert_eq!(all.status, 200, "{all:?}");
    assert_eq!(ids(&all), ["a1", "a2", "a3"]);
    assert_eq!(all.body["service"], "api");
    assert_eq!(all.body["datacenter"], "dc1");
    assert_eq!(
        all.body["dns"],
        json!({"name": "api.maxine", "srv": "_api._tcp.maxine"})
    );
    assert_eq!(all.body["instances"][0]["health"], "critical");
    assert_eq!(
        all.body["instances"][1]["dns"]["instance"],
        "a2.api.dc1.maxine"
    );
    assert_eq!(all.index, all.body["index"].as_u64());

    assert_eq!(
        ids(&get(&s, "/v1/services/api?healthy=true").await),
        ["a2", "a3"]
    );
    assert_eq!(
        ids(&get(&s, "/v1/services/api?version=v2").await),
        ["a1", "a2"]
    );
    assert_eq!(ids(&get(&s, "/v1/services/api?version=v2-1").await), ["a1"]);
    assert_eq!(
        ids(&get(&s, "/v1/services/api?version=v2&healthy=true").await),
        ["a2"]
    );
    assert_eq!(
        ids(&get(&s, "/v1/services/api?dc=dc1&healthy=false").await).len(),
        3
    );
    let none = get(&s, "/v1/services/api?version=v9").await;
    assert_eq!((none.status, ids(&none).len()), (200, 0));
}

#[tokio::test]
async fn get_unknown_service_is_404() {
    let s = TestServer::start().await;
    let r = get(&s, "/v1/services/nothing").await;
    assert_error(&r, 404, "nothing");
    assert!(r.index.is_some());
    let r = get(&s, "/v1/services/nothing?dc=dc2").await;
    assert_error(&r, 404, "dc2");
}

#[tokio::test]
async fn get_service_with_bad_filters_is_400() {
    let s = TestServer::start().await;
    put(
        &s,
        "/v1/services/api/instances/a1",
        json!({"address": "10.0.0.1", "port": 80}),
    )
    .await;
    assert_error(
        &get(&s, "/v1/services/api?version=2.0").await,
        400,
        "selector",
    );
    assert_error(
        &get(&s, "/v1/services/api?dc=Not_A_Dc").await,
        400,
        "not_a_dc",
    );
    assert_error(
        &get(&s, "/v1/services/api?healthy=maybe").await,
        400,
        "query",
    );
    assert_error(&get(&s, "/v1/services/api?colour=red").await, 400, "colour");
    assert_error(&get(&s, "/v1/services/bad_name").await, 400, "bad_name");
}

// ---- bad input: status, JSON error, registry unchanged ----

#[tokio::test]
async fn register_with_malformed_json_is_rejected_and_changes_nothing() {
    let s = TestServer::start().await;
    let before = snapshot(&s);
    let r = send(
        s.http
            .put(url(&s, "/v1/services/api/instances/a1"))
            .header(CONTENT_TYPE, "application/json")
            .body("{\"address\": \"10.0.0.1\", \"port\": "),
    )
    .await;
    assert_error(&r, 400, "malformed JSON");
    assert_eq!(snapshot(&s), before);
}

#[tokio::test]
async fn register_with_unknown_field_is_rejected_and_changes_nothing() {
    assert_register_rejected(
        json!({"address": "10.0.0.1", "port": 80, "colour": "red"}),
        400,
        "unknown field `colour`",
    )
    .await;
}

#[tokio::test]
async fn register_without_port_is_rejected_and_changes_nothing() {
    assert_register_rejected(json!({"address": "10.0.0.1"}), 400, "missing field `port`").await;
}

#[tokio::test]
async fn register_with_a_wrongly_typed_field_is_rejected_and_changes_nothing() {
    assert_register_rejected(
        json!({"address": "10.0.0.1", "port": 80, "tags": "blue"}),
        400,
        "tags",
    )
    .await;
}

#[tokio::test]
async fn register_with_port_zero_is_rejected_and_changes_nothing() {
    assert_register_rejected(
        json!({"address": "10.0.0.1", "port": 0}),
        400,
        "port must be between 1 and 65535",
    )
    .await;
}

#[tokio::test]
async fn register_with_port_above_65535_is_rejected_and_changes_nothing() {
    assert_register_rejected(
        json!({"address": "10.0.0.1", "port": 65536}),
        400,
        "port must be between 1 and 65535",
    )
    .await;
}

#[tokio::test]
async fn register_with_a_host_name_as_address_is_rejected_and_changes_nothing() {
    assert_register_rejected(
        json!({"address": "api.example.com", "port": 80}),
        400,
        "not an IP address",
    )
    .await;
}

#[tokio::test]
async fn register_with_a_garbage_address_is_rejected_and_changes_nothing() {
    assert_register_rejected(
        json!({"address": "10.0.0.300", "port": 80}),
        400,
        "10.0.0.300",
    )
    .await;
}

#[tokio::test]
async fn register_with_weight_out_of_range_is_rejected_and_changes_nothing() {
    assert_register_rejected(
        json!({"address": "10.0.0.1", "port": 80, "weight": 0}),
        400,
        "weight",
    )
    .await;
    assert_register_rejected(
        json!({"address": "10.0.0.1", "port": 80, "weight": 65536}),
        400,
        "weight",
    )
    .await;
}

#[tokio::test]
async fn register_with_ttl_out_of_range_is_rejected_and_changes_nothing() {
    for ttl in [json!(0), json!("500ms"), json!("25h"), json!(86401)] {
        assert_register_rejected(
            json!({"address": "10.0.0.1", "port": 80, "ttl": ttl}),
            400,
            "ttl must be between",
        )
        .await;
    }
}

#[tokio::test]
async fn register_with_unreadable_ttl_is_rejected_and_changes_nothing() {
    assert_register_rejected(
        json!({"address": "10.0.0.1", "port": 80, "ttl": "soon"}),
        400,
        "soon",
    )
    .await;
    assert_register_rejected(
        json!({"address": "10.0.0.1", "port": 80, "ttl": -5}),
        400,
        "negative",
    )
    .await;
}

#[tokio::test]
async fn register_with_too_many_tags_is_rejected_and_changes_nothing() {
    let tags: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
    assert_register_rejected(
        json!({"address": "10.0.0.1", "port": 80, "tags": tags}),
        400,
        "tags",
    )
    .await;
}

#[tokio::test]
async fn register_with_a_service_name_that_is_not_a_dns_label_is_rejected_and_changes_nothing() {
    let s = TestServer::start().await;
    let before = snapshot(&s);
    let r = put(
        &s,
        "/v1/services/pay_ments/instances/p1",
        json!({"address": "10.0.0.1", "port": 80}),
    )
    .await;
    assert_error(&r, 400, "service name \"pay_ments\" is not a DNS label");
    let r = put(
        &s,
        "/v1/services/payments/instances/v2",
        json!({"address": "10.0.0.1", "port": 80}),
    )
    .await;
    assert_error(&r, 400, "instance id \"v2\" looks like a version selector");
    let long = "a".repeat(64);
    let r = put(
        &s,
        &format!("/v1/services/{long}/instances/p1"),
        json!({"address": "10.0.0.1", "port": 80}),
    )
    .await;
    assert_error(&r, 400, "longer than 63");
    assert_eq!(snapshot(&s), before);
}

#[tokio::test]
async fn register_with_a_service_named_like_a_datacenter_is_rejected_and_changes_nothing() {
    assert_register_rejected_at("/v1/services/dc1/instances/p1", 400, "datacenter").await;
}

async fn assert_register_rejected_at(path: &str, status: u16, needle: &str) {
    let s = TestServer::start().await;
    let before = snapshot(&s);
    let r = put(&s, path, json!({"address": "10.0.0.1", "port": 80})).await;
    assert_error(&r, status, needle);
    assert_eq!(snapshot(&s), before);
}

#[tokio::test]
async fn register_with_a_body_over_the_limit_is_413_and_changes_nothing() {
    let s = TestServer::start().await;
    let before = snapshot(&s);
    let limit = s.config.http.max_body_bytes;
    let big =
        json!({"address": "10.0.0.1", "port": 80, "metadata": {"blob": "x".repeat(limit + 1)}});
    let r = put(&s, "/v1/services/api/instances/a1", big).await;
    assert_error(&r, 413, &format!("limit of {limit} bytes"));
    assert_eq!(r.body["kind"], "payload_too_large");
    assert_eq!(snapshot(&s), before);
}

#[tokio::test]
async fn register_with_wrong_content_type_is_415_and_changes_nothing() {
    let s = TestServer::start().await;
    let before = snapshot(&s);
    let body = r#"{"address": "10.0.0.1", "port": 80}"#;
    let r = send(
        s.http
            .put(url(&s, "/v1/services/api/instances/a1"))
            .header(CONTENT_TYPE, "text/plain")
            .body(body),
    )
    .await;
    assert_error(&r, 415, "application/json");
    let r = send(
        s.http
            .put(url(&s, "/v1/services/api/instances/a1"))
            .body(body),
    )
    .await;
    assert_error(&r, 415, "application/json");
    assert_eq!(snapshot(&s), before);
}

// ---- routing ----

#[tokio::test]
async fn unknown_route_is_a_json_404() {
    let s = TestServer::start().await;
    let r = get(&s, "/v2/nothing").await;
    assert_error(&r, 404, "no route for GET /v2/nothing");
    assert_eq!(r.body["kind"], "no_route");
}

#[tokio::test]
async fn wrong_method_is_a_json_405() {
    let s = TestServer::start().await;
    let r = send(s.http.post(url(&s, "/v1/health"))).await;
    assert_error(&r, 405, "method POST is not allowed on /v1/health");
    let r = send(s.http.delete(url(&s, "/v1/services/api"))).await;
    assert_eq!(r.status, 405);
}

// ---- the OpenAPI document ----

/// The (method, path) pairs the document describes.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    out
}

#[tokio::test]
async fn openapi_document_describes_exactly_the_route_table() {
    let s = TestServer::start().await;
    let r = get(&s, "/v1/openapi.json").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["openapi"], "3.1.0");
    let table: BTreeSet<_> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    assert_eq!(documented(&r.body), table);
    // Every $ref resolves.
    let text = r.body.to_string();
    for piece in text.split("\"$ref\":\"#/components/").skip(1) {
        let reference = &piece[..piece.find('"').unwrap()];
        let mut node = &r.body["components"];
        for part in reference.split('/') {
            node = &node[part];
        }
        assert!(!node.is_null(), "dangling $ref {reference}");
    }
}

#[tokio::test]
async fn every_route_in_the_openapi_document_is_served() {
    let s = TestServer::start().await;
    let doc = get(&s, "/v1/openapi.json").await.body;
    for (method, path) in documented(&doc) {
        let concrete = path
            .replace("{service}", "probe")
            .replace("{id}", "probe-1");
        let req = s
            .http
            .request(method.parse().unwrap(), url(&s, &concrete))
            .json(&json!({}));
        let r = send(req).await;
        assert_ne!(
            r.status, 405,
            "{method} {path} is documented but not routed: {r:?}"
        );
        let no_route = r.body["kind"] == "no_route"
            || r.body["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("no route for"));
        assert!(
            !(r.status == 404 && no_route),
            "{method} {path} is documented but not routed: {r:?}"
        );
    }
}

#[tokio::test]
async fn registry_routes_carry_the_index_header_and_others_do_not() {
    let s = TestServer::start().await;
    put(
        &s,
        "/v1/services/api/instances/a1",
        json!({"address": "10.0.0.1", "port": 80}),
    )
    .await;
    for r in ROUTES {
        let concrete = r.path.replace("{service}", "api").replace("{id}", "a1");
        let req = s
            .http
            .request(r.method.parse().unwrap(), url(&s, &concrete))
            .json(&json!({"address": "10.0.0.1", "port": 80}));
        let reply = send(req).await;
        assert_eq!(
            reply.index.is_some(),
            r.registry,
            "{} {}: {reply:?}",
            r.method,
            r.path
        );
    }
}
