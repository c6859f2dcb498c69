//! Passive health on a real Maxine: outcome reports eject instances from DNS
//! answers (probation, the cap, the panic threshold), and self-preservation
//! holds expiry back when many instances fall silent at once.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::api::{get, post, put};
use common::{TestServer, query};
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

/// Every A answer of `name`, over TCP (all of them, not a UDP window).
async fn addresses(s: &TestServer, name: &str) -> BTreeSet<String> {
    let r = s.tcp_raw(&[query(name, RecordType::A, None)]).await;
    let m = Message::from_vec(&r[0]).unwrap();
    m.answers.iter().map(|a| a.data.to_string()).collect()
}

fn failures(id: &str, n: u32) -> Value {
    json!({ "outcomes": [{ "id": id, "failures": n, "latency_ms": 12.5 }] })
}

#[tokio::test]
async fn reported_failures_eject_an_instance_until_it_returns_on_probation() {
    let s = TestServer::start_with(|c| {
        c.outlier.base_ejection_time = maxine::config::DurationValue(Duration::from_secs(1));
        c.outlier.max_ejection_time = maxine::config::DurationValue(Duration::from_secs(2));
    })
    .await;
    for i in 1..=10 {
        s.register(
            "shop",
            &format!("i{i}"),
            json!({"address": format!("10.7.0.{i}"), "port": 80}),
        )
        .await;
    }
    let all: BTreeSet<String> = (1..=10).map(|i| format!("10.7.0.{i}")).collect();
    assert_eq!(addresses(&s, "shop.maxine.").await, all);

    // Four failures: not yet. The fifth in a row ejects.
    let r = post(&s, "/v1/services/shop/outcomes", failures("i1", 4)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["ejected"], json!([]));
    let r = post(&s, "/v1/services/shop/outcomes", failures("i1", 1)).await;
    assert_eq!(r.body["ejected"], json!(["i1"]));
    let mut without_1 = all.clone();
    without_1.remove("10.7.0.1");
    assert_eq!(addresses(&s, "shop.maxine.").await, without_1);
    let r = get(&s, "/v1/services/shop").await;
    assert_eq!(r.body["ejected"], json!(["i1"]));
    let r = get(&s, "/v1/services").await;
    assert_eq!(r.body["services"][0]["datacenters"]["dc1"]["ejected"], 1);

    // 10% of 10 is one: a second failing instance stays in.
    let r = post(&s, "/v1/services/shop/outcomes", failures("i2", 5)).await;
    assert_eq!(r.body["ejected"], json!([]));
    assert!(addresses(&s, "shop.maxine.").await.contains("10.7.0.2"));

    // After its ejection time it returns, on probation ...
    assert_eventually!(
        addresses(&s, "shop.maxine.").await == all,
        "i1 returns after its ejection time"
    );
    // ... where one failure ejects it again at once.
    let r = post(&s, "/v1/services/shop/outcomes", failures("i1", 1)).await;
    assert_eq!(r.body["ejected"], json!(["i1"]), "{:?}", r.body);
    assert_eq!(addresses(&s, "shop.maxine.").await, without_1);

    // A panic threshold of 100%: one ejected is a panic, and the answer
    // holds everyone.
    let r = put(
        &s,
        "/v1/services/shop/config",
        json!({ "panic_threshold": 100 }),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(addresses(&s, "shop.maxine.").await, all);
    let r = get(&s, "/v1/services").await;
    assert_eq!(r.body["services"][0]["datacenters"]["dc1"]["panic"], true);
    let r = get(&s, "/v1/services/shop").await;
    assert_eq!(r.body["panic"], true);
}

#[tokio::test]
async fn outcome_reports_are_validated() {
    let s = TestServer::start().await;
    s.register("shop", "a", json!({"address": "10.8.0.1", "port": 80}))
        .await;
    let many: Vec<Value> = (0..1001).map(|i| json!({"id": format!("x{i}")})).collect();
    for (body, needle) in [
        (json!({ "outcomes": [] }), "1 to 1000"),
        (json!({ "outcomes": many }), "1 to 1000"),
        (
            json!({ "outcomes": [{"id": "a", "failures": -1}] }),
            "between 0 and",
        ),
        (
            json!({ "outcomes": [{"id": "a", "successes": 2_000_000}] }),
            "between 0 and",
        ),
        (
            json!({ "outcomes": [{"id": "a", "latency_ms": -3}] }),
            "latency_ms",
        ),
        (json!({ "outcomes": [{"id": "a"}, {"id": "a"}] }), "twice"),
        (json!({ "outcomes": [{"id": "Not A Label!"}] }), ""),
        (
            json!({ "outcomes": [{"id": "a", "extra": 1}] }),
            "unknown field",
        ),
        (json!({ "nope": [] }), ""),
    ] {
        let r = post(&s, "/v1/services/shop/outcomes", body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
        assert!(r.body.to_string().contains(needle), "{body}: {:?}", r.body);
    }
    let r = post(&s, "/v1/services/none/outcomes", failures("a", 1)).await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    let r = post(&s, "/v1/services/shop/outcomes", failures("ghost", 1)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["unknown"], json!(["ghost"]));
}

async fn heartbeat(s: &TestServer, id: &str) {
    let r = put(
        s,
        &format!("/v1/services/fleet/instances/{id}/heartbeat"),
        json!({}),
    )
    .await;
    assert_eq!(r.status, 200, "{id}: {:?}", r.body);
}

async fn passing(s: &TestServer) -> u64 {
    let r = get(s, "/v1/services").await;
    r.body["services"][0]["datacenters"]["dc1"]["passing"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test]
async fn self_preservation_holds_expiry_while_a_fifth_of_instances_fall_silent_at_once() {
    let s = TestServer::start().await;
    let ids: Vec<String> = (0..50).map(|i| format!("n{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        s.register(
            "fleet",
            id,
            json!({"address": format!("10.9.0.{}", i + 1), "port": 80, "ttl": 3}),
        )
        .await;
    }
    // Ten of fifty (20%) stop at once; the others go on.
    let alive = &ids[10..];
    let ready = |s: &TestServer| {
        let url = common::api::url(s, "/v1/ready");
        let http = s.http.clone();
        async move {
            let r = common::api::send(http.get(url)).await;
            assert_eq!(r.status, 200, "still ready: {:?}", r.body);
            r.body
        }
    };
    let mut held = false;
    // Three TTLs of heartbeats (bounded: 30 rounds).
    for _ in 0..30 {
        for id in alive {
            heartbeat(&s, id).await;
        }
        let body = ready(&s).await;
        if body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("self-preservation"))
        {
            held = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(held, "/v1/ready says why expiry is held");
    assert_eq!(
        passing(&s).await,
        50,
        "none of the silent instances expired"
    );
    let r = get(&s, "/v1/services").await;
    assert!(
        r.body["self_preservation"]["reason"]
            .as_str()
            .is_some_and(|t| t.contains("10 of 50")),
        "{:?}",
        r.body
    );

    // Heartbeats return: self-preservation ends.
    for id in &ids {
        heartbeat(&s, id).await;
    }
    assert_eventually!(
        ready(&s).await.get("reason").is_none(),
        "self-preservation ends once heartbeats return"
    );
    // And expiry is normal again: one instance (2%) that stops expires.
    let mut expired = false;
    for _ in 0..40 {
        for id in &ids[1..] {
            heartbeat(&s, id).await;
        }
        if passing(&s).await == 49 {
            expired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(expired, "a lone silent instance expires");
    assert!(ready(&s).await.get("reason").is_none());
}
