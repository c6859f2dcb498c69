//! Blocking reads (`?index=N&wait=`): a read that names an index answers
//! as soon as the registry (or the service) moves past it, or when its wait
//! runs out, with `X-Maxine-Index` telling where it stands.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use common::api::get;
use serde_json::json;

#[tokio::test]
async fn a_blocking_service_read_answers_at_the_next_change_of_that_service() {
    let s = TestServer::start().await;
    let first = s
        .register("payments", "a", json!({"address": "10.0.0.1", "port": 80}))
        .await["index"]
        .as_u64()
        .unwrap();
    let path = format!("/v1/services/payments?index={first}&wait=20s");
    let base = s.http_base();
    let http = s.http.clone();
    let started = Instant::now();
    let waiting = tokio::spawn(async move {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        let index: u64 = r.headers()["x-maxine-index"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body: serde_json::Value = r.json().await.unwrap();
        (index, body, started.elapsed())
    });
    // A change of another service does not wake it.
    s.register("billing", "b", json!({"address": "10.0.0.2", "port": 80}))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await; // the read is parked meanwhile
    assert!(
        !waiting.is_finished(),
        "billing's change must not answer a read of payments"
    );
    let second = s
        .register("payments", "c", json!({"address": "10.0.0.3", "port": 80}))
        .await["index"]
        .as_u64()
        .unwrap();
    let (index, body, took) = waiting.await.unwrap();
    assert_eq!(index, second);
    let ids: Vec<_> = body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["a", "c"], "the answer holds the change it waited for");
    assert!(
        took < Duration::from_secs(10),
        "answered at the change, not at the wait: {took:?}"
    );
}

#[tokio::test]
async fn a_blocking_read_without_a_change_answers_when_its_wait_runs_out() {
    let s = TestServer::start().await;
    let index = s
        .register("payments", "a", json!({"address": "10.0.0.1", "port": 80}))
        .await["index"]
        .as_u64()
        .unwrap();
    let started = Instant::now();
    let r = get(&s, &format!("/v1/services?index={index}&wait=300ms")).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!((r.status, r.index), (200, Some(index)));
    // An index already passed answers at once.
    let started = Instant::now();
    let r = get(
        &s,
        &format!("/v1/services/payments?index={}&wait=20s", index - 1),
    )
    .await;
    assert_eq!((r.status, r.index), (200, Some(index)));
    assert!(started.elapsed() < Duration::from_secs(10));
    // A wait that is no duration is a clear 400.
    let r = get(&s, "/v1/services?index=1&wait=soon").await;
    assert_eq!(r.status, 400);
    assert!(
        r.body["error"].as_str().unwrap().contains("wait"),
        "{}",
        r.body
    );
}
