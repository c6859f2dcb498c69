//! The Maxine-compatible API (the contract of the Node.js Maxine registry)
//! against a real server: register / re-register as heartbeat, discover
//! redirects, the servers snapshot, actuator health, and bad input.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use common::api::{Refused, Reply, assert_all_refused, assert_message, get, post, send};
use maxine::core::{Datacenter, InstanceId, ServiceKey, ServiceName};
use reqwest::Method;
use serde_json::{Value, json};

const REGISTER: &str = "/api/maxine/serviceops/register";

async fn register(s: &TestServer, body: Value) -> Reply {
    post(s, REGISTER, body).await
}

async fn discover(s: &TestServer, query: &str) -> Reply {
    get(s, &format!("/api/maxine/serviceops/discover{query}")).await
}

fn key(service: &str) -> ServiceKey {
    ServiceKey::new(
        Datacenter::new("dc1").unwrap(),
        ServiceName::new(service).unwrap(),
    )
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
    let answers: Vec<_> = m.answers.iter().map(|r| r.to_string()).collect();
    assert_eq!(answers, ["v2.orders.maxine. 5 IN A 10.0.0.8"]);
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
    // The time of the registration: parseable, and now (not the epoch, not a
    // fixed value).
    let at = humantime::parse_rfc3339(&registered_at).expect("registeredAt is RFC 3339");
    let off = std::time::SystemTime::now()
        .duration_since(at)
        .unwrap_or_else(|e| e.duration());
    assert!(off < Duration::from_secs(60), "{registered_at} is not now");
    assert_eq!(
        r.body,
        json!({
            "hostName": "10.0.0.7",
            "nodeName": "Node-X_1",
            "serviceName": "Payment_Service",
            "timeOut": 10,
            "weight": 2,
            "address": "http://10.0.0.7:8080/api",
            "healthCheckPath": "",
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
        inst.ttl(),
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
async fn register_keeps_the_health_check_path_and_the_listings_show_it() {
    let s = TestServer::start().await;
    // The path becomes an HTTP check of the instance's address: a loopback
    // address, where nothing listens (tests send nothing off the machine).
    let body = json!({"hostName": "127.0.0.9", "nodeName": "n1", "serviceName": "orders",
                      "port": 8080, "healthCheckPath": "/actuator/health"});
    let r = register(&s, body.clone()).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["healthCheckPath"], "/actuator/health");
    let native = get(&s, "/v1/services/orders").await;
    assert_eq!(
        native.body["instances"][0]["compat"]["healthCheckPath"], "/actuator/health",
        "{native:?}"
    );
    // Its check fails (nothing listens there); once that has changed the
    // registry, the same post again is a heartbeat; another path is a change.
    assert_eventually!(
        get(&s, "/v1/services/orders").await.body["instances"][0]["health"] == "critical",
        "the healthCheckPath check never ran"
    );
    let before = s.registry.index();
    assert_eq!(register(&s, body.clone()).await.status, 200);
    assert_eq!(s.registry.index(), before, "a re-post changed the registry");
    let mut moved = body;
    moved["healthCheckPath"] = json!("/ready");
    let r = register(&s, moved).await;
    assert_eq!(r.body["healthCheckPath"], "/ready");
    assert!(s.registry.index() > before);
    // Kept across a restart, as every other field.
    let s = s.restart().await;
    let native = get(&s, "/v1/services/orders").await;
    assert_eq!(
        native.body["instances"][0]["compat"]["healthCheckPath"],
        "/ready"
    );
    for bad in [
        json!("/a b"),
        json!("/x\n"),
        json!("/".repeat(1025)),
        json!(5),
    ] {
        let r = register(
            &s,
            json!({"hostName": "127.0.0.9", "nodeName": "n2", "serviceName": "orders", "healthCheckPath": bad}),
        )
        .await;
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        assert!(r.body["message"].is_string(), "{r:?}");
    }
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
    assert_eq!((inst.port, inst.ttl()), (80, Duration::from_millis(5_500)));

    let r = register(
        &s,
        json!({"hostName": "10.0.0.8", "nodeName": "n2", "serviceName": "web", "ssl": true}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
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
    let mut s = TestServer::start().await;
    let body = json!({"hostName": "10.0.0.7", "nodeName": "n1", "serviceName": "web", "port": 8080, "timeOut": 60});
    assert_eq!(register(&s, body.clone()).await.status, 200);
    let registered = common::next_events(&mut s.events).await;
    let index = s.registry.index();
    assert_eq!(
        registered.iter().map(|e| e.index).collect::<Vec<_>>(),
        [index]
    );
    let node = |s: &TestServer| {
        s.registry.service(&key("web")).unwrap().instances[&InstanceId::new("n1").unwrap()].clone()
    };
    // The deadline is updated in place: keep the number, not the instance.
    let before = node(&s);
    let deadline = before.deadline_ms();
    let fields = (
        before.index,
        before.port,
        before.ttl(),
        before.compat.clone(),
    );
    // Re-register until the registry's millisecond clock has moved, so that
    // a refreshed deadline can be told from the old one.
    assert_eventually!(
        {
            let r = register(&s, body.clone()).await;
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(s.registry.index(), index, "a heartbeat is not a change");
            node(&s).deadline_ms() > deadline
        },
        "the TTL was refreshed (deadline {deadline})"
    );
    let after = node(&s);
    assert_eq!(
        (after.index, after.port, after.ttl(), after.compat.clone()),
        fields,
        "nothing but the deadline moved"
    );
    assert!(
        s.events.try_next().is_none(),
        "a heartbeat publishes no event"
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

// ---- refused requests: status, Maxine error, registry unchanged ----

/// A registration of node `n1` of `web` on 10.0.0.1 with `extra` fields merged in.
fn with(extra: Value) -> Value {
    let mut body = json!({"hostName": "10.0.0.1", "nodeName": "n1", "serviceName": "web"});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

#[tokio::test]
async fn refused_registrations_answer_a_maxine_error_and_change_nothing() {
    let s = TestServer::start().await;
    // Long-lived, so that no expiry changes the registry during the table.
    let ok = register(
        &s,
        json!({"hostName": "10.0.0.9", "nodeName": "keep", "serviceName": "keep", "timeOut": 3600}),
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let limit = s.config.http.max_body_bytes;
    let bad =
        |case, body, fragment: &str| Refused::post(case, REGISTER, body).message(400, fragment);
    let raw = |case, content_type, text: &str| {
        Refused::raw(case, Method::POST, REGISTER, content_type, text)
    };
    let rows = vec![
        bad(
            "without hostName",
            json!({"nodeName": "n1", "serviceName": "web"}),
            "hostName is missing",
        ),
        bad(
            "empty serviceName",
            with(json!({"serviceName": ""})),
            "serviceName is missing",
        ),
        bad(
            "serviceName without letters or digits",
            with(json!({"serviceName": "!!!"})),
            "\"!!!\"",
        ),
        bad(
            "nodeName without letters or digits",
            with(json!({"nodeName": "__"})),
            "nodeName",
        ),
        bad(
            "weight 11",
            with(json!({"weight": 11})),
            "weight must be between 1 and 10",
        ),
        bad("weight 0", with(json!({"weight": 0})), "weight"),
        bad(
            "timeOut 0",
            with(json!({"timeOut": 0})),
            "timeOut must be between",
        ),
        bad(
            "timeOut -3",
            with(json!({"timeOut": -3})),
            "timeOut must be between",
        ),
        bad(
            "timeOut 86400",
            with(json!({"timeOut": 86400})),
            "timeOut must be between",
        ),
        bad(
            "port 0",
            with(json!({"port": 0})),
            "port must be between 1 and 65535",
        ),
        bad(
            "port 65536",
            with(json!({"port": 65536})),
            "port must be between 1 and 65535",
        ),
        bad(
            "port \"70000\"",
            with(json!({"port": "70000"})),
            "port must be between 1 and 65535",
        ),
        bad(
            "non-numeric port",
            with(json!({"port": "http"})),
            "not a whole number",
        ),
        bad(
            "bad hostName",
            with(json!({"hostName": "not a host"})),
            "hostName \"not a host\"",
        ),
        bad("path with spaces", with(json!({"path": "/a b"})), "path"),
        bad(
            "unknown field",
            with(json!({"colour": "red"})),
            "unknown field `colour`",
        ),
        bad(
            "serviceName of a datacenter",
            with(json!({"serviceName": "DC1"})),
            "datacenter",
        ),
        // "KEEP!" maps to the DNS name of the registered "keep".
        Refused::post(
            "name colliding after normalization",
            REGISTER,
            with(json!({"serviceName": "KEEP!"})),
        )
        .message(409, "keep"),
        raw(
            "malformed JSON",
            Some("application/json"),
            "{\"hostName\": ",
        )
        .message(400, "malformed JSON"),
        raw(
            "no JSON content type",
            None,
            r#"{"hostName": "10.0.0.1", "nodeName": "n1", "serviceName": "web"}"#,
        )
        .message(415, "application/json"),
        Refused::post(
            "body over the limit",
            REGISTER,
            with(json!({"path": "x".repeat(limit)})),
        )
        .message(413, "limit"),
    ];
    assert_all_refused(&s, rows).await;
}

#[tokio::test]
async fn refused_discovery_and_routes_answer_a_maxine_error_and_change_nothing() {
    let s = TestServer::start().await;
    let ok = register(
        &s,
        json!({"hostName": "10.0.0.9", "nodeName": "keep", "serviceName": "keep", "timeOut": 3600}),
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let discover = "/api/maxine/serviceops/discover";
    let rows = vec![
        Refused::get("discover without serviceName", discover)
            .exact_message(400, "Please provide the serviceName."),
        Refused::get(
            "discover with an empty serviceName",
            format!("{discover}?serviceName="),
        )
        .exact_message(400, "Please provide the serviceName."),
        Refused::get(
            "discover an unknown service",
            format!("{discover}?serviceName=nothing"),
        )
        .exact_message(503, "Service Unavailable"),
        Refused::get(
            "discover a name that maps to no label",
            format!("{discover}?serviceName=%21%21"),
        )
        .exact_message(503, "Service Unavailable"),
        Refused::get("unknown route under /api", "/api/maxine/serviceops/nothing")
            .message(404, "no route for GET /api/maxine/serviceops/nothing"),
        Refused::get("GET of the register route", REGISTER).message(
            405,
            "method GET is not allowed on /api/maxine/serviceops/register",
        ),
    ];
    assert_all_refused(&s, rows).await;
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
        assert_eq!(r.index, Some(s.registry.index()));
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
    // As in the Node.js Maxine, the servers snapshot needs a signed-in user.
    let users = tempfile::tempdir().unwrap();
    let file = common::acl::users_file(users.path(), &[("admin", "admin", "admin-password")]);
    let s = TestServer::start_with(|f| f.acl.users_file = Some(file)).await;
    let token = common::acl::sign_in(&s.http, &s.http_base(), "admin", "admin-password").await;
    let servers = || {
        s.http
            .get(format!("{}/api/maxine/serviceops/servers", s.http_base()))
            .bearer_auth(&token)
    };
    let empty = send(servers()).await;
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

    let r = send(servers()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.index, Some(s.registry.index()));
    assert_eq!(
        r.body,
        json!({
            "Payment_Service": {
                "offset": 0,
                "dnsName": "payment-service.maxine",
                "nodes": {
                    "Node-A-0": {"nodeName": "Node-A-0", "parentNode": "Node-A", "address": "http://10.0.0.7:8080", "timeOut": 9, "healthCheckPath": ""},
                    "Node-A-1": {"nodeName": "Node-A-1", "parentNode": "Node-A", "address": "http://10.0.0.7:8080", "timeOut": 9, "healthCheckPath": ""}
                }
            },
            "web": {
                "offset": 0,
                "dnsName": "web.maxine",
                "nodes": {
                    "w1-0": {"nodeName": "w1-0", "parentNode": "w1", "address": "http://10.0.0.5:9000", "timeOut": 3600, "healthCheckPath": ""}
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

/// Names longer than a DNS label are cut to the limits of service names (62,
/// room for the `_` of the SRV name) and instance ids (63), and every DNS
/// name of the instance answers.
#[tokio::test]
async fn long_names_are_cut_to_answerable_dns_names() {
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;
    let s = TestServer::start().await;
    for (n, service, node) in [
        (0, "s".repeat(62), "n".repeat(63)),
        (1, "t".repeat(63), "m".repeat(64)),
    ] {
        let r = register(
            &s,
            json!({ "hostName": "10.0.0.9", "port": 8080, "serviceName": service, "nodeName": node }),
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let svc = &service[..62];
        let id = &node[..63];
        assert_eq!(r.body["dnsName"], format!("{svc}.maxine"), "case {n}");
        for (name, rtype) in [
            (format!("{svc}.maxine."), RecordType::A),
            (format!("_{svc}._tcp.maxine."), RecordType::SRV),
            (format!("{id}.{svc}.dc1.maxine."), RecordType::A),
        ] {
            let m = s.ask(&name, rtype).await;
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
            assert_eq!(m.answers.len(), 1, "{name} {rtype}: {:?}", m.answers);
        }
    }
    s.stop().await;
}

// ---- control/config ----

const CONTROL: &str = "/api/maxine/control/config";

async fn put_control(s: &TestServer, body: Value) -> Reply {
    send(s.http.put(common::api::url(s, CONTROL)).json(&body)).await
}

#[tokio::test]
async fn control_config_reads_maxine_settings_in_maxine_shape() {
    let s = TestServer::start().await;
    let r = get(&s, CONTROL).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["heartBeatTimeout"], 5);
    assert_eq!(r.body["serverSelectionStrategy"]["name"], "RR");
    assert_eq!(r.body["serverSelectionStrategy"]["message"], "Round Robin");
    assert_eq!(r.body["logFormat"]["name"], "PLAIN");
    assert_eq!(r.body["logAsync"], true);
    assert_eq!(r.body["actuatorEnabled"], true);
    assert_eq!(r.body["port"], s.http_addr.port());
}

#[tokio::test]
async fn control_config_answers_each_field_as_maxine_does() {
    let s = TestServer::start().await;
    let r = put_control(
        &s,
        json!({
            "heartBeatTimeout": "7",
            "logAsync": "yes",
            "logJsonPrettify": true,
            "serverSelectionStrategy": "LC",
            "logFormat": "JSON",
            "somethingElse": 1,
        }),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.body,
        json!({
            "heartBeatTimeout": "Type Error",
            "logAsync": "Type Error",
            "logJsonPrettify": "Success",
            "serverSelectionStrategy": "Wrong value Or Invalid value",
            "logFormat": "Wrong value Or Invalid value",
        })
    );
    let r = put_control(&s, json!({"heartBeatTimeout": 0, "logFormat": "PLAIN"})).await;
    assert_eq!(
        r.body,
        json!({"heartBeatTimeout": "Wrong value Or Invalid value", "logFormat": "Success"})
    );
    // Nothing was changed by refused values.
    let r = get(&s, CONTROL).await;
    assert_eq!(r.body["heartBeatTimeout"], 5);
    assert_eq!(r.body["serverSelectionStrategy"]["name"], "RR");

    for bad in [json!([1, 2]), json!("x"), json!(null)] {
        let r = put_control(&s, bad.clone()).await;
        assert_message(&r, 400, "JSON object");
    }
}

/// The heartbeat timeout applies to registrations that send no `timeOut`;
/// the strategy to discover calls of services with no strategy of their own.
#[tokio::test]
async fn control_config_changes_the_default_timeout_and_discover_strategy() {
    let s = TestServer::start().await;
    let r = put_control(
        &s,
        json!({"heartBeatTimeout": 30, "serverSelectionStrategy": "CH"}),
    )
    .await;
    assert_eq!(
        r.body,
        json!({"heartBeatTimeout": "Success", "serverSelectionStrategy": "Success"})
    );
    let r = get(&s, CONTROL).await;
    assert_eq!(r.body["heartBeatTimeout"], 30);
    assert_eq!(r.body["serverSelectionStrategy"]["name"], "CH");
    assert_eq!(
        r.body["serverSelectionStrategy"]["message"],
        "Consistent Hashing"
    );

    let r = register(
        &s,
        json!({"hostName": "10.0.0.1", "nodeName": "a", "serviceName": "Sticky_Svc", "port": 8080}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["timeOut"], 30);
    let with_own = register(
        &s,
        json!({"hostName": "10.0.0.2", "nodeName": "b", "serviceName": "Sticky_Svc", "port": 8080, "timeOut": 9}),
    )
    .await;
    assert_eq!(with_own.body["timeOut"], 9);
    let inst =
        &s.registry.service(&key("sticky-svc")).unwrap().instances[&InstanceId::new("a").unwrap()];
    assert_eq!(inst.ttl(), Duration::from_millis(30_500));

    // Sticky by the client's address: one client is always sent to the
    // same instance (round robin would alternate between the two).
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let r = discover(&s, "?serviceName=Sticky_Svc").await;
        assert_eq!(r.status, 302, "{r:?}");
        seen.insert(r.location.clone().expect("Location"));
    }
    assert_eq!(seen.len(), 1, "{seen:?}");
    // Back to round robin: both instances are handed out.
    put_control(&s, json!({"serverSelectionStrategy": "RR"})).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let r = discover(&s, "?serviceName=Sticky_Svc").await;
        seen.insert(r.location.clone().expect("Location"));
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

/// With ACLs on: operator write to change, and each change is audited.
#[tokio::test]
async fn control_config_needs_operator_write_and_is_audited() {
    const ADMIN: &str = "control-config-admin-secret-0123456789";
    let s = TestServer::start_with(|f| {
        f.acl.default_policy = Some("deny".into());
        f.acl.bootstrap_token = Some(ADMIN.into());
    })
    .await;
    let url = common::api::url(&s, CONTROL);
    let r = send(s.http.put(&url).json(&json!({"heartBeatTimeout": 12}))).await;
    assert_message(&r, 403, "operator");
    let r = send(
        s.http
            .put(&url)
            .bearer_auth(ADMIN)
            .json(&json!({"heartBeatTimeout": 12})),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["heartBeatTimeout"], "Success");
    let audit = send(
        s.http
            .get(common::api::url(&s, "/v1/audit?limit=1000"))
            .bearer_auth(ADMIN),
    )
    .await;
    let records = audit.body["records"].as_array().unwrap();
    let set = records
        .iter()
        .find(|r| r["action"] == "maxine.config.set")
        .unwrap_or_else(|| panic!("no audit record: {records:?}"));
    assert_eq!(set["resource"], "maxine-config:heartBeatTimeout");
    assert_eq!(set["outcome"], "ok");
    assert_eq!(set["detail"], "5 -> 12");
    assert!(
        set["actor"].as_str().unwrap().starts_with("token:"),
        "{set}"
    );
}
