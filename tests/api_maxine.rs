//! The Maxine-compatible API (the contract of the Node.js Maxine registry)
//! against a real server: register / re-register as heartbeat, discover
//! redirects, the servers snapshot, actuator health, and bad input.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use maxine::core::{Datacenter, InstanceId, ServiceKey, ServiceName};
use reqwest::header::{CONTENT_TYPE, LOCATION};
use serde_json::{Value, json};

#[derive(Debug)]
struct Reply {
    status: u16,
    index: Option<u64>,
    location: Option<String>,
    body: Value,
}

async fn send(req: reqwest::RequestBuilder) -> Reply {
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let header = |name| {
        resp.headers()
            .get(name)
            .map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap().to_string())
    };
    let index = header("x-maxine-index").map(|v| v.parse().expect("numeric index"));
    let location = header(LOCATION.as_str());
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply {
        status,
        index,
        location,
        body,
    }
}

const REGISTER: &str = "/api/maxine/serviceops/register";

async fn register(s: &TestServer, body: Value) -> Reply {
    send(
        s.http
            .post(format!("{}{REGISTER}", s.http_base()))
            .json(&body),
    )
    .await
}

async fn discover(s: &TestServer, query: &str) -> Reply {
    send(s.http.get(format!(
        "{}/api/maxine/serviceops/discover{query}",
        s.http_base()
    )))
    .await
}

fn key(service: &str) -> ServiceKey {
    ServiceKey::new(
        Datacenter::new("dc1").unwrap(),
        ServiceName::new(service).unwrap(),
    )
}

/// Everything the registry holds, to check that a rejected request changed nothing.
fn snapshot(s: &TestServer) -> (u64, Vec<String>) {
    let mut all = Vec::new();
    for snap in s.registry.services() {
        for (id, inst) in &snap.instances {
            all.push(format!(
                "{}/{id}@{}:{} {:?}",
                snap.key.service, inst.address, inst.port, inst.compat
            ));
        }
    }
    (s.registry.index(), all)
}

fn assert_message(r: &Reply, status: u16, needle: &str) {
    assert_eq!(r.status, status, "{r:?}");
    let obj = r
        .body
        .as_object()
        .unwrap_or_else(|| panic!("not a JSON object: {r:?}"));
    assert_eq!(
        obj.keys().collect::<Vec<_>>(),
        ["message"],
        "Maxine errors are {{\"message\"}} only: {r:?}"
    );
    let text = r.body["message"].as_str().unwrap();
    assert!(
        text.contains(needle),
        "{text:?} does not mention {needle:?}"
    );
}

/// Registers a valid node, then sends `body`, which must be refused with
/// `status` and leave the registry as it was.
async fn assert_rejected(body: Value, status: u16, needle: &str) {
    let s = TestServer::start().await;
    let ok = register(
        &s,
        json!({"hostName": "10.0.0.9", "nodeName": "keep", "serviceName": "keep"}),
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let before = snapshot(&s);
    let r = register(&s, body).await;
    assert_message(&r, status, needle);
    assert_eq!(
        snapshot(&s),
        before,
        "a rejected registration changed the registry"
    );
}

// ---- register ----

#[tokio::test]
async fn register_accepts_the_fields_of_newer_sdks() {
    let s = TestServer::start().await;
    let r = register(
        &s,
        json!({
            "hostName": "10.0.0.8",
            "nodeName": "n1",
            "serviceName": "orders",
            "port": 8080,
            "version": "2.1.0",
            "namespace": "shop",
            "metadata": {"zone": "a", "replicas": 3}
        }),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let key = maxine::core::ServiceKey::new(
        s.registry.local_dc().clone(),
        maxine::core::ServiceName::new("orders").unwrap(),
    );
    let snap = s.registry.service(&key).expect("registered");
    let inst = &snap.instances[&maxine::core::InstanceId::new("n1").unwrap()];
    assert_eq!(inst.version, "2.1.0");
    assert_eq!(inst.metadata["namespace"], "shop");
    assert_eq!(inst.metadata["zone"], "a");
    assert_eq!(inst.metadata["replicas"], "3");
    // The version is served over DNS like any other.
    let m = s
        .ask("v2.orders.maxine.", hickory_proto::rr::RecordType::A)
        .await;
    assert_eq!(m.answers.len(), 1);
}

#[tokio::test]
async fn register_answers_200_with_maxine_fields_and_the_dns_name() {
    let s = TestServer::start().await;
    let r = register(
        &s,
        json!({
            "hostName": "10.0.0.7",
            "nodeName": "Node-X_1",
            "serviceName": "Payment_Service",
            "port": 8080,
            "ssl": false,
            "timeOut": 10,
            "weight": 2,
            "path": "api/"
        }),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let registered_at = r.body["registeredAt"]
        .as_str()
        .expect("registeredAt")
        .to_string();
    assert!(
        humantime::parse_rfc3339(&registered_at).is_ok(),
        "{registered_at}"
    );
    assert_eq!(
        r.body,
        json!({
            "hostName": "10.0.0.7",
            "nodeName": "Node-X_1",
            "serviceName": "Payment_Service",
            "timeOut": 10,
            "weight": 2,
            "address": "http://10.0.0.7:8080/api",
            "registeredAt": registered_at,
            "dnsName": "payment-service.maxine"
        })
    );
    assert_eq!(r.index, Some(s.registry.index()));

    // Stored under the normalized DNS names, with the original names kept.
    let snap = s
        .registry
        .service(&key("payment-service"))
        .expect("service registered");
    let inst = &snap.instances[&InstanceId::new("node-x-1").unwrap()];
    assert_eq!(inst.port, 8080);
    assert_eq!(inst.weight, 2);
    assert_eq!(
        inst.ttl,
        Duration::from_millis(10_500),
        "ttl = timeOut + 0.5 s"
    );
    let compat = inst.compat.as_ref().expect("compat fields");
    assert_eq!(
        (
            compat.service_name.as_str(),
            compat.node_name.as_str(),
            compat.host_name.as_str(),
            compat.ssl,
            compat.path.as_str()
        ),
        ("Payment_Service", "Node-X_1", "10.0.0.7", false, "/api")
    );
}

#[tokio::test]
async fn register_defaults_to_timeout_5_weight_1_and_the_port_of_the_scheme() {
    let s = TestServer::start().await;
    let r = register(
        &s,
        json!({"hostName": "10.0.0.7", "nodeName": "n1", "serviceName": "web"}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        (r.body["timeOut"].clone(), r.body["weight"].clone()),
        (json!(5), json!(1))
    );
    assert_eq!(r.body["address"], "http://10.0.0.7");
    let inst =
        s.registry.service(&key("web")).unwrap().instances[&InstanceId::new("n1").unwrap()].clone();
    assert_eq!((inst.port, inst.ttl), (80, Duration::from_millis(5_500)));

    let r = register(
        &s,
        json!({"hostName": "10.0.0.8", "nodeName": "n2", "serviceName": "web", "ssl": true}),
    )
    .await;
    assert_eq!(r.body["address"], "https://10.0.0.8");
    let inst =
        s.registry.service(&key("web")).unwrap().instances[&InstanceId::new("n2").unwrap()].clone();
    assert_eq!(inst.port, 443);
}

#[tokio::test]
async fn register_accepts_numbers_sent_as_strings_like_maxine() {
    let s = TestServer::start().await;
    let r = register(
        &s,
        json!({"hostName": "10.0.0.7", "nodeName": "n1", "serviceName": "web", "port": "8081", "timeOut": "7", "weight": "3"}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["address"], "http://10.0.0.7:8081");
    assert_eq!(
        (r.body["timeOut"].clone(), r.body["weight"].clone()),
        (json!(7), json!(3))
    );
}

#[tokio::test]
async fn register_takes_the_scheme_from_a_host_name_with_one() {
    let s = TestServer::start().await;
    let r = register(
        &s,
        json!({"hostName": "https://api.example.com", "nodeName": "n1", "serviceName": "api", "port": 8443, "path": "/v1"}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["hostName"], "https://api.example.com");
    assert_eq!(r.body["address"], "https://api.example.com:8443/v1");
}

#[tokio::test]
async fn register_accepts_ipv6_hosts_and_brackets_them_in_the_address() {
    let s = TestServer::start().await;
    let r = register(
        &s,
        json!({"hostName": "::1", "nodeName": "n1", "serviceName": "api", "port": 8080}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["address"], "http://[::1]:8080");
}

#[tokio::test]
async fn re_register_is_a_heartbeat_that_makes_no_change() {
    let s = TestServer::start().await;
    let body = json!({"hostName": "10.0.0.7", "nodeName": "n1", "serviceName": "web", "port": 8080, "timeOut": 2});
    register(&s, body.clone()).await;
    let index = s.registry.index();
    let before = s.registry.service(&key("web")).unwrap().instances
        [&InstanceId::new("n1").unwrap()]
        .deadline_ms();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let r = register(&s, body).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(s.registry.index(), index, "a heartbeat is not a change");
    let after = s.registry.service(&key("web")).unwrap().instances[&InstanceId::new("n1").unwrap()]
        .deadline_ms();
    assert!(
        after > before,
        "the TTL was refreshed ({before} -> {after})"
    );
}

#[tokio::test]
async fn re_register_brings_an_expired_node_back() {
    let s = TestServer::start().await;
    let body =
        json!({"hostName": "10.0.0.7", "nodeName": "n1", "serviceName": "web", "timeOut": 5});
    register(&s, body.clone()).await;
    s.registry.expire(Instant::now() + Duration::from_secs(10));
    assert_eq!(discover(&s, "?serviceName=web").await.status, 503);
    assert_eq!(register(&s, body).await.status, 200);
    let r = discover(&s, "?serviceName=web").await;
    assert_eq!(r.status, 302, "{r:?}");
}

#[tokio::test]
async fn re_register_with_other_data_replaces_the_node() {
    let s = TestServer::start().await;
    register(
        &s,
        json!({"hostName": "10.0.0.7", "nodeName": "n1", "serviceName": "web", "port": 8080}),
    )
    .await;
    let index = s.registry.index();
    let r = register(
        &s,
        json!({"hostName": "10.0.0.8", "nodeName": "n1", "serviceName": "web", "port": 9090}),
    )
    .await;
    assert_eq!(r.body["address"], "http://10.0.0.8:9090");
    assert!(s.registry.index() > index);
    let snap = s.registry.service(&key("web")).unwrap();
    assert_eq!(snap.instances.len(), 1);
    assert_eq!(
        discover(&s, "?serviceName=web").await.location.as_deref(),
        Some("http://10.0.0.8:9090")
    );
}

// ---- register: bad input ----

#[tokio::test]
async fn register_without_host_name_is_400_and_changes_nothing() {
    assert_rejected(
        json!({"nodeName": "n1", "serviceName": "web"}),
        400,
        "hostName is missing",
    )
    .await;
}

#[tokio::test]
async fn register_with_empty_service_name_is_400_and_changes_nothing() {
    assert_rejected(
        json!({"hostName": "10.0.0.1", "nodeName": "n1", "serviceName": ""}),
        400,
        "serviceName is missing",
    )
    .await;
}

#[tokio::test]
async fn register_with_a_name_without_letters_or_digits_is_400_and_changes_nothing() {
    assert_rejected(
        json!({"hostName": "10.0.0.1", "nodeName": "n1", "serviceName": "!!!"}),
        400,
        "\"!!!\"",
    )
    .await;
    assert_rejected(
        json!({"hostName": "10.0.0.1", "nodeName": "__", "serviceName": "web"}),
        400,
        "nodeName",
    )
    .await;
}

#[tokio::test]
async fn register_with_weight_above_10_is_400_and_changes_nothing() {
    assert_rejected(
        json!({"hostName": "10.0.0.1", "nodeName": "n1", "serviceName": "web", "weight": 11}),
        400,
        "weight must be between 1 and 10",
    )
    .await;
}

#[tokio::test]
async fn register_with_weight_zero_is_400_and_changes_nothing() {
    assert_rejected(
        json!({"hostName": "10.0.0.1", "nodeName": "n1", "serviceName": "web", "weight": 0}),
        400,
        "weight",
    )
    .await;
}

#[tokio::test]
async fn register_with_timeout_out_of_range_is_400_and_changes_nothing() {
    for t in [json!(0), json!(-3), json!(86400)] {
        assert_rejected(
            json!({"hostName": "10.0.0.1", "nodeName": "n1", "serviceName": "web", "timeOut": t}),
            400,
            "timeOut must be between",
        )
        .await;
    }
}

#[tokio::test]
async fn register_with_port_out_of_range_is_400_and_changes_nothing() {
    for p in [json!(0), json!(65536), json!("70000")] {
        assert_rejected(
            json!({"hostName": "10.0.0.1", "nodeName": "n1", "serviceName": "web", "port": p}),
            400,
            "port must be between 1 and 65535",
        )
        .await;
    }
}

#[tokio::test]
async fn register_with_a_non_numeric_port_is_400_and_changes_nothing() {
    assert_rejected(
        json!({"hostName": "10.0.0.1", "nodeName": "n1", "serviceName": "web", "port": "http"}),
        400,
        "not a whole number",
    )
    .await;
}

#[tokio::test]
async fn register_with_a_bad_host_name_is_400_and_changes_nothing() {
    assert_rejected(
        json!({"hostName": "not a host", "nodeName": "n1", "serviceName": "web"}),
        400,
        "hostName \"not a host\"",
    )
    .await;
}

#[tokio::test]
async fn register_with_a_path_containing_spaces_is_400_and_changes_nothing() {
    assert_rejected(
        json!({"hostName": "10.0.0.1", "nodeName": "n1", "serviceName": "web", "path": "/a b"}),
        400,
        "path",
    )
    .await;
}

#[tokio::test]
async fn register_with_an_unknown_field_is_400_and_changes_nothing() {
    assert_rejected(
        json!({"hostName": "10.0.0.1", "nodeName": "n1", "serviceName": "web", "colour": "red"}),
        400,
        "unknown field `colour`",
    )
    .await;
}

#[tokio::test]
async fn register_with_a_service_name_of_a_datacenter_is_400_and_changes_nothing() {
    assert_rejected(
        json!({"hostName": "10.0.0.1", "nodeName": "n1", "serviceName": "DC1"}),
        400,
        "datacenter",
    )
    .await;
}

#[tokio::test]
async fn register_with_a_name_colliding_after_normalization_is_409_and_changes_nothing() {
    // "keep" is registered by assert_rejected; "KEEP!" maps to the same DNS name.
    assert_rejected(
        json!({"hostName": "10.0.0.1", "nodeName": "n1", "serviceName": "KEEP!"}),
        409,
        "keep",
    )
    .await;
}

#[tokio::test]
async fn register_with_malformed_json_is_400_and_changes_nothing() {
    let s = TestServer::start().await;
    let before = snapshot(&s);
    let r = send(
        s.http
            .post(format!("{}{REGISTER}", s.http_base()))
            .header(CONTENT_TYPE, "application/json")
            .body("{\"hostName\": "),
    )
    .await;
    assert_message(&r, 400, "malformed JSON");
    assert_eq!(snapshot(&s), before);
}

#[tokio::test]
async fn register_without_json_content_type_is_415_and_changes_nothing() {
    let s = TestServer::start().await;
    let before = snapshot(&s);
    let r = send(
        s.http
            .post(format!("{}{REGISTER}", s.http_base()))
            .body(r#"{"hostName": "10.0.0.1", "nodeName": "n1", "serviceName": "web"}"#),
    )
    .await;
    assert_message(&r, 415, "application/json");
    assert_eq!(snapshot(&s), before);
}

#[tokio::test]
async fn register_with_a_body_over_the_limit_is_413_and_changes_nothing() {
    let s = TestServer::start().await;
    let before = snapshot(&s);
    let limit = s.config.http.max_body_bytes;
    let r = register(&s, json!({"hostName": "10.0.0.1", "nodeName": "n1", "serviceName": "web", "path": "x".repeat(limit)})).await;
    assert_message(&r, 413, "limit");
    assert_eq!(snapshot(&s), before);
}

// ---- discover ----

#[tokio::test]
async fn discover_redirects_round_robin_across_two_nodes() {
    let s = TestServer::start().await;
    for (node, port) in [("node-1", 8081), ("node-2", 8082)] {
        let r = register(&s, json!({"hostName": "10.0.0.7", "nodeName": node, "serviceName": "Payment_Service", "port": port})).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    let mut seen = Vec::new();
    for _ in 0..4 {
        let r = discover(&s, "?serviceName=Payment_Service&endPoint=info").await;
        assert_eq!(r.status, 302, "{r:?}");
        assert!(r.index.is_some());
        seen.push(r.location.expect("Location"));
    }
    let mut first_two = seen[..2].to_vec();
    first_two.sort();
    assert_eq!(
        first_two,
        ["http://10.0.0.7:8081/info", "http://10.0.0.7:8082/info"]
    );
    assert_eq!(seen[2], seen[0], "round robin repeats in order");
    assert_eq!(seen[3], seen[1]);
}

#[tokio::test]
async fn discover_keeps_the_path_and_adds_the_end_point() {
    let s = TestServer::start().await;
    register(&s, json!({"hostName": "10.0.0.7", "nodeName": "n1", "serviceName": "web", "port": 8080, "path": "/api"})).await;
    let r = discover(&s, "?serviceName=web&endPoint=/users/1").await;
    assert_eq!(
        r.location.as_deref(),
        Some("http://10.0.0.7:8080/api/users/1")
    );
    let r = discover(&s, "?serviceName=web").await;
    assert_eq!(r.location.as_deref(), Some("http://10.0.0.7:8080/api"));
}

#[tokio::test]
async fn discover_finds_natively_registered_instances_too() {
    let s = TestServer::start().await;
    s.register("web", "w1", json!({"address": "10.0.0.5", "port": 9000}))
        .await;
    let r = discover(&s, "?serviceName=web").await;
    assert_eq!(
        (r.status, r.location.as_deref()),
        (302, Some("http://10.0.0.5:9000"))
    );
}

#[tokio::test]
async fn discover_without_service_name_is_400() {
    let s = TestServer::start().await;
    assert_message(
        &discover(&s, "").await,
        400,
        "Please provide the serviceName.",
    );
    assert_message(
        &discover(&s, "?serviceName=").await,
        400,
        "Please provide the serviceName.",
    );
}

#[tokio::test]
async fn discover_of_an_unknown_service_is_503_service_unavailable() {
    let s = TestServer::start().await;
    let r = discover(&s, "?serviceName=nothing").await;
    assert_eq!(r.body, json!({"message": "Service Unavailable"}));
    assert_eq!(r.status, 503);
    assert_eq!(discover(&s, "?serviceName=%21%21").await.status, 503);
}

#[tokio::test]
async fn discover_when_every_node_expired_is_503() {
    let s = TestServer::start().await;
    register(
        &s,
        json!({"hostName": "10.0.0.7", "nodeName": "n1", "serviceName": "web", "timeOut": 1}),
    )
    .await;
    s.registry.expire(Instant::now() + Duration::from_secs(3));
    assert_message(
        &discover(&s, "?serviceName=web").await,
        503,
        "Service Unavailable",
    );
}

// ---- servers, actuator ----

#[tokio::test]
async fn servers_lists_passing_nodes_in_maxine_shape_one_per_unit_of_weight() {
    let s = TestServer::start().await;
    let empty = send(
        s.http
            .get(format!("{}/api/maxine/serviceops/servers", s.http_base())),
    )
    .await;
    assert_eq!((empty.status, empty.body), (200, json!({})));

    register(&s, json!({"hostName": "10.0.0.7", "nodeName": "Node-A", "serviceName": "Payment_Service", "port": 8080, "weight": 2, "timeOut": 9})).await;
    register(&s, json!({"hostName": "10.0.0.8", "nodeName": "Node-B", "serviceName": "Payment_Service", "port": 8080, "timeOut": 1})).await;
    s.register(
        "web",
        "w1",
        json!({"address": "10.0.0.5", "port": 9000, "ttl": 3600}),
    )
    .await;
    // Node-B expires: Maxine drops expired nodes from the snapshot.
    s.registry.expire(Instant::now() + Duration::from_secs(3));

    let r = send(
        s.http
            .get(format!("{}/api/maxine/serviceops/servers", s.http_base())),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.index, Some(s.registry.index()));
    assert_eq!(
        r.body,
        json!({
            "Payment_Service": {
                "offset": 0,
                "dnsName": "payment-service.maxine",
                "nodes": {
                    "Node-A-0": {"nodeName": "Node-A-0", "parentNode": "Node-A", "address": "http://10.0.0.7:8080", "timeOut": 9},
                    "Node-A-1": {"nodeName": "Node-A-1", "parentNode": "Node-A", "address": "http://10.0.0.7:8080", "timeOut": 9}
                }
            },
            "web": {
                "offset": 0,
                "dnsName": "web.maxine",
                "nodes": {
                    "w1-0": {"nodeName": "w1-0", "parentNode": "w1", "address": "http://10.0.0.5:9000", "timeOut": 3600}
                }
            }
        })
    );
}

#[tokio::test]
async fn actuator_health_is_up() {
    let s = TestServer::start().await;
    let r = send(s.http.get(format!("{}/api/actuator/health", s.http_base()))).await;
    assert_eq!((r.status, r.body), (200, json!({"status": "UP"})));
    assert!(r.index.is_none());
}

#[tokio::test]
async fn routing_errors_under_api_are_in_maxine_format() {
    let s = TestServer::start().await;
    let r = send(
        s.http
            .get(format!("{}/api/maxine/serviceops/nothing", s.http_base())),
    )
    .await;
    assert_message(&r, 404, "no route for GET /api/maxine/serviceops/nothing");
    let r = send(s.http.get(format!("{}{REGISTER}", s.http_base()))).await;
    assert_message(&r, 405, "method GET is not allowed");
}
