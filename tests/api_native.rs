//! The native JSON API (`/v1`) against a real server over real sockets:
//! every route, its answers, and every class of bad input (which must be
//! answered with a JSON error and leave the registry unchanged).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::TestServer;
use common::api::{
    Body, Refused, Reply, assert_all_refused, assert_error, delete, get, put, send, url,
};
use maxine::core::{Datacenter, Registry, RegistryConfig};
use maxine::http::{HttpState, ROUTES, router, serve};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

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
    let state = HttpState::standalone(registry, "maxine", 4096, ready.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(
        listener,
        router(state),
        None,
        maxine::app::http_limits(&maxine::config::Config::defaults().http),
        shutdown.clone(),
    ));
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
            "checks": [{"name": "ttl", "kind": "ttl", "status": "passing", "ttl": 60.0}],
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
async fn heartbeat_answers_a_short_ack_and_revives_a_critical_one() {
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
    // The revival is a change: the ack's index is its index.
    let index = s.registry.index();
    assert_eq!(
        r.body,
        json!({"id": "a1", "health": "passing", "ttl": 1.0, "index": index})
    );
    assert_eq!(r.index, Some(index));
    let r = get(&s, "/v1/services/api").await;
    assert_eq!(r.body["instances"][0]["health"], "passing");
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
    let r = delete(&s, "/v1/services/api/instances/a1").await;
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
async fn deregistering_the_last_instance_removes_the_service() {
    let s = TestServer::start().await;
    put(
        &s,
        "/v1/services/api/instances/a1",
        json!({"address": "10.0.0.1", "port": 80}),
    )
    .await;
    assert_eq!(
        delete(&s, "/v1/services/api/instances/a1").await.status,
        200
    );
    assert_error(&get(&s, "/v1/services/api").await, 404, "not_found", "api");
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
        ids(&get(&s, "/v1/services/api?dc=dc1&healthy=false").await),
        ["a1", "a2", "a3"]
    );
    let none = get(&s, "/v1/services/api?version=v9").await;
    assert_eq!((none.status, ids(&none).len()), (200, 0));
}

/// An instance is written the same, byte for byte, in every answer that
/// holds it: a registration's, a read's and a blocking read's
/// (the keys in one order, `id` first, not sorted).
#[tokio::test]
async fn an_instance_reads_the_same_in_every_answer() {
    let s = TestServer::start().await;
    let text = |r: reqwest::Response| async move { r.text().await.unwrap() };
    let base = s.http_base();
    let registered = text(
        s.http
            .put(format!("{base}/v1/services/payments/instances/web-1"))
            .json(&payments_body())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        registered.starts_with("{\"id\":\"web-1\",\"version\""),
        "{registered}"
    );
    let read = text(
        s.http
            .get(format!("{base}/v1/services/payments"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        read.contains(&format!("\"instances\":[{registered}]")),
        "{read}\n{registered}"
    );
    let index: u64 = serde_json::from_str::<Value>(&registered).unwrap()["index"]
        .as_u64()
        .unwrap();

    // A blocking read, answered by the next change.
    let blocked = {
        let (http, base) = (s.http.clone(), base.clone());
        tokio::spawn(async move {
            let url = format!("{base}/v1/services/payments?index={index}&wait=10s");
            http.get(url).send().await.unwrap().text().await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut body = payments_body();
    body["port"] = json!(9090);
    let replaced = text(
        s.http
            .put(format!("{base}/v1/services/payments/instances/web-1"))
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let blocked = blocked.await.unwrap();
    assert!(
        blocked.contains(&format!("\"instances\":[{replaced}]")),
        "{blocked}\n{replaced}"
    );
}

// ---- refused requests: status, JSON error, registry unchanged ----

/// A registration with `address`/`port` and `extra` fields merged in.
fn with(extra: Value) -> Value {
    let mut body = json!({"address": "10.0.0.1", "port": 80});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

#[tokio::test]
async fn refused_registrations_answer_a_json_error_and_change_nothing() {
    let s = TestServer::start().await;
    s.register(
        "payments",
        "keep",
        json!({"address": "10.0.0.1", "port": 80, "ttl": "1h"}),
    )
    .await;
    let p1 = "/v1/services/payments/instances/p1";
    let limit = s.config.http.max_body_bytes;
    let tags: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
    let bad = |case, body, fragment: &str| {
        Refused::put(case, p1, body).error(400, "bad_request", fragment)
    };
    let rows = vec![
        // The body: fields, types and ranges.
        bad(
            "unknown field",
            with(json!({"colour": "red"})),
            "unknown field `colour`",
        ),
        bad(
            "without port",
            json!({"address": "10.0.0.1"}),
            "missing field `port`",
        ),
        bad("wrongly typed field", with(json!({"tags": "blue"})), "tags"),
        bad(
            "port zero",
            with(json!({"port": 0})),
            "port must be between 1 and 65535",
        ),
        bad(
            "port above 65535",
            with(json!({"port": 65536})),
            "port must be between 1 and 65535",
        ),
        bad(
            "host name as address",
            with(json!({"address": "api.example.com"})),
            "not an IP address",
        ),
        bad(
            "garbage address",
            with(json!({"address": "10.0.0.300"})),
            "10.0.0.300",
        ),
        bad("weight 0", with(json!({"weight": 0})), "weight"),
        bad("weight 65536", with(json!({"weight": 65536})), "weight"),
        bad("ttl 0", with(json!({"ttl": 0})), "ttl must be between"),
        bad(
            "ttl 500ms",
            with(json!({"ttl": "500ms"})),
            "ttl must be between",
        ),
        bad(
            "ttl 25h",
            with(json!({"ttl": "25h"})),
            "ttl must be between",
        ),
        bad(
            "ttl 86401",
            with(json!({"ttl": 86401})),
            "ttl must be between",
        ),
        bad("unreadable ttl", with(json!({"ttl": "soon"})), "soon"),
        bad("negative ttl", with(json!({"ttl": -5})), "negative"),
        bad("33 tags", with(json!({"tags": tags})), "tags"),
        // The names in the path.
        Refused::put(
            "service name not a DNS label",
            "/v1/services/pay_ments/instances/p1",
            with(json!({})),
        )
        .error(
            400,
            "bad_request",
            "service name \"pay_ments\" is not a DNS label",
        ),
        Refused::put(
            "instance id like a version selector",
            "/v1/services/payments/instances/v2",
            with(json!({})),
        )
        .error(
            400,
            "bad_request",
            "instance id \"v2\" looks like a version selector",
        ),
        Refused::put(
            "service name of 63 characters",
            format!("/v1/services/{}/instances/p1", "a".repeat(63)),
            with(json!({})),
        )
        .error(400, "bad_request", "longer than 62"),
        Refused::put(
            "service named like a datacenter",
            "/v1/services/dc1/instances/p1",
            with(json!({})),
        )
        .error(400, "bad_request", "datacenter"),
        // How the body is sent.
        Refused::raw(
            "malformed JSON",
            Method::PUT,
            "/v1/services/api/instances/a1",
            Some("application/json"),
            "{\"address\": \"10.0.0.1\", \"port\": ",
        )
        .error(400, "bad_request", "malformed JSON"),
        Refused::put(
            "body over the limit",
            "/v1/services/api/instances/a1",
            with(json!({"metadata": {"blob": "x".repeat(limit + 1)}})),
        )
        .error(413, "payload_too_large", format!("limit of {limit} bytes")),
        Refused::raw(
            "content type text/plain",
            Method::PUT,
            "/v1/services/api/instances/a1",
            Some("text/plain"),
            r#"{"address": "10.0.0.1", "port": 80}"#,
        )
        .error(415, "unsupported_media_type", "application/json"),
        Refused::raw(
            "no content type",
            Method::PUT,
            "/v1/services/api/instances/a1",
            None,
            r#"{"address": "10.0.0.1", "port": 80}"#,
        )
        .error(415, "unsupported_media_type", "application/json"),
    ];
    assert_all_refused(&s, rows).await;
}

#[tokio::test]
async fn refused_reads_heartbeats_deregistrations_and_routes_answer_a_json_error() {
    let s = TestServer::start().await;
    s.register(
        "api",
        "a1",
        json!({"address": "10.0.0.1", "port": 80, "ttl": "1h"}),
    )
    .await;
    let rows = vec![
        Refused::get("unknown service", "/v1/services/nothing").error(404, "not_found", "nothing"),
        Refused::get("unknown datacenter", "/v1/services/nothing?dc=dc2").error(
            404,
            "not_found",
            "dc2",
        ),
        Refused::get(
            "version that is no selector",
            "/v1/services/api?version=2.0",
        )
        .error(400, "bad_request", "selector"),
        Refused::get(
            "datacenter that is no label",
            "/v1/services/api?dc=Not_A_Dc",
        )
        .error(400, "bad_request", "not_a_dc"),
        Refused::get(
            "healthy neither true nor false",
            "/v1/services/api?healthy=maybe",
        )
        .error(400, "bad_request", "query"),
        Refused::get("unknown filter", "/v1/services/api?colour=red").error(
            400,
            "bad_request",
            "colour",
        ),
        Refused::get("service name that is no label", "/v1/services/bad_name").error(
            400,
            "bad_request",
            "bad_name",
        ),
        Refused::new(
            "heartbeat of an unknown instance",
            Method::PUT,
            "/v1/services/api/instances/ghost/heartbeat",
            Body::None,
        )
        .error(404, "not_found", "not registered"),
        Refused::new(
            "deregister an unknown instance",
            Method::DELETE,
            "/v1/services/api/instances/ghost",
            Body::None,
        )
        .error(404, "not_found", "ghost"),
        Refused::get("unknown route", "/v2/nothing").error(
            404,
            "no_route",
            "no route for GET /v2/nothing",
        ),
        Refused::new(
            "POST to a GET route",
            Method::POST,
            "/v1/health",
            Body::None,
        )
        .error(
            405,
            "method_not_allowed",
            "method POST is not allowed on /v1/health",
        ),
        Refused::new(
            "DELETE of a service",
            Method::DELETE,
            "/v1/services/api",
            Body::None,
        )
        .error(
            405,
            "method_not_allowed",
            "method DELETE is not allowed on /v1/services/api",
        ),
    ];
    assert_all_refused(&s, rows).await;
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
        // A catch-all segment (`{*key}`) is a plain parameter in OpenAPI.
        .map(|r| (r.method.to_string(), r.path.replace("{*", "{")))
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

// ---- names at the length limits ----

/// Every DNS name of an instance registered with the longest names answers:
/// the address name, the SRV name (`_` plus the service name is one label of
/// 63 octets) and the instance name.
#[tokio::test]
async fn names_at_the_length_limits_are_answerable_by_dns() {
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;
    let s = TestServer::start().await;
    let svc = "s".repeat(62);
    let id = "i".repeat(63);
    let r = put(
        &s,
        &format!("/v1/services/{svc}/instances/{id}"),
        json!({ "address": "10.0.0.9", "port": 8080 }),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    for (name, rtype) in [
        (format!("{svc}.maxine."), RecordType::A),
        (format!("_{svc}._tcp.maxine."), RecordType::SRV),
        (format!("_{svc}._tcp.dc1.maxine."), RecordType::SRV),
        (format!("{id}.{svc}.dc1.maxine."), RecordType::A),
    ] {
        let m = s.ask(&name, rtype).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        assert_eq!(m.answers.len(), 1, "{name} {rtype}: {:?}", m.answers);
    }
    // One character more is refused, naming the limit.
    let r = put(
        &s,
        &format!("/v1/services/{}/instances/p1", "s".repeat(63)),
        json!({ "address": "10.0.0.9", "port": 8080 }),
    )
    .await;
    assert_error(&r, 400, "bad_request", "longer than 62 characters");
    let r = put(
        &s,
        &format!("/v1/services/{svc}/instances/{}", "i".repeat(64)),
        json!({ "address": "10.0.0.9", "port": 8080 }),
    )
    .await;
    assert_error(&r, 400, "bad_request", "longer than 63 characters");
    s.stop().await;
}
