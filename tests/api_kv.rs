//! The key/value store (`/v1/kv/{key}`) against a real Maxine: raw values
//! with their index, compare-and-set, listings, blocking reads, the size
//! limit, persistence across a restart and `key_prefix` rules.

mod common;

use std::time::Duration;

use common::TestServer;
use common::acl::{Cred, call, create_token, put_policy};
use reqwest::Method;
use serde_json::{Value, json};

fn kv(s: &TestServer, key: &str) -> String {
    format!("{}/v1/kv/{key}", s.http_base())
}

fn index_of(r: &reqwest::Response) -> u64 {
    r.headers()["x-maxine-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn put(s: &TestServer, key: &str, value: &[u8]) -> u64 {
    let r = s
        .http
        .put(kv(s, key))
        .body(value.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let body: Value = r.json().await.unwrap();
    body["index"].as_u64().unwrap()
}

#[tokio::test]
async fn a_value_is_stored_raw_and_read_back_with_its_index() {
    let s = TestServer::start().await;
    let value = b"timeout=30s\n\x00\xffbinary";
    let index = put(&s, "app/payments/config", value).await;
    let r = s
        .http
        .get(kv(&s, "app/payments/config"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(index_of(&r), index);
    assert_eq!(r.bytes().await.unwrap().as_ref(), value);

    put(&s, "app/web/config", b"x").await;
    put(&s, "other", b"y").await;
    let r = s.http.get(kv(&s, "app/?recurse")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let list: Value = r.json().await.unwrap();
    let keys: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, ["app/payments/config", "app/web/config"]);

    let r = s.http.delete(kv(&s, "other")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = s.http.get(kv(&s, "other")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers().contains_key("x-maxine-index"));
    for bad in ["a//b", "a%20b", "a/b%3F"] {
        let r = s.http.put(kv(&s, bad)).body("v").send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    s.stop().await;
}

#[tokio::test]
async fn values_over_512_kib_are_refused_with_413_and_nothing_changes() {
    let s = TestServer::start().await;
    let at_limit = vec![b'a'; 512 * 1024];
    put(&s, "big", &at_limit).await;
    let r = s
        .http
        .put(kv(&s, "big"))
        .body(vec![b'b'; 512 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = s.http.get(kv(&s, "big")).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), 512 * 1024);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_concurrent_compare_and_set_writes_exactly_one_wins() {
    let s = TestServer::start().await;
    let index = put(&s, "leader", b"none").await;
    let mut racers = Vec::new();
    for n in 0..8 {
        let (http, url) = (s.http.clone(), format!("{}?cas={index}", kv(&s, "leader")));
        racers.push(tokio::spawn(async move {
            let r = http
                .put(url)
                .body(format!("node-{n}"))
                .send()
                .await
                .unwrap();
            (n, r.status().as_u16())
        }));
    }
    let mut winners = Vec::new();
    for r in racers {
        let (n, status) = r.await.unwrap();
        match status {
            200 => winners.push(n),
            409 => {}
            other => panic!("racer {n}: {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let r = s.http.get(kv(&s, "leader")).send().await.unwrap();
    let text = r.text().await.unwrap();
    assert_eq!(text, format!("node-{}", winners[0]));
    // cas=0: only when absent.
    let r = s
        .http
        .put(format!("{}?cas=0", kv(&s, "leader")))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = s
        .http
        .put(format!("{}?cas=0", kv(&s, "fresh")))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.stop().await;
}

#[tokio::test]
async fn a_blocking_read_of_a_key_answers_at_its_next_change() {
    let s = TestServer::start().await;
    let index = put(&s, "flag", b"off").await;
    let (http, url) = (
        s.http.clone(),
        format!("{}?index={index}&wait=20s", kv(&s, "flag")),
    );
    let waiting = tokio::spawn(async move {
        let r = http.get(url).send().await.unwrap();
        (index_of(&r), r.text().await.unwrap())
    });
    put(&s, "other", b"x").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiting.is_finished(),
        "another key's change does not wake it"
    );
    let next = put(&s, "flag", b"on").await;
    assert_eq!(waiting.await.unwrap(), (next, "on".to_string()));
    s.stop().await;
}

#[tokio::test]
async fn keys_survive_a_restart() {
    let s = TestServer::start().await;
    put(&s, "app/a", b"one").await;
    let index = put(&s, "app/b", b"two").await;
    put(&s, "gone", b"x").await;
    let r = s.http.delete(kv(&s, "gone")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let s = s.restart().await;
    let r = s.http.get(kv(&s, "app/b")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(index_of(&r), index);
    assert_eq!(r.text().await.unwrap(), "two");
    let r = s.http.get(kv(&s, "app/a")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "one");
    let r = s.http.get(kv(&s, "gone")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    s.stop().await;
}

#[tokio::test]
async fn key_prefix_rules_decide_who_may_read_and_write() {
    let mgmt = "b1a7c4a2-0000-4000-8000-00000000kv01";
    let s = TestServer::start_with(|f| {
        f.acl.default_policy = Some("deny".into());
        f.acl.bootstrap_token = Some(mgmt.into());
    })
    .await;
    let admin = Cred::Token(mgmt.into());
    let base = s.http_base();
    put_policy(
        &s.http,
        &base,
        &admin,
        "payments-config",
        json!({"key_prefix": {"app/payments/": "write", "app/": "read", "app/secret/": "deny"}}),
    )
    .await;
    let (_, secret) = create_token(
        &s.http,
        &base,
        &admin,
        json!({"policies": ["payments-config"]}),
    )
    .await;
    let token = Cred::Token(secret);
    let r = admin
        .apply(s.http.put(kv(&s, "app/secret/x")))
        .body("s")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cases = [
        (Method::PUT, "app/payments/timeout", 200),
        (Method::GET, "app/payments/timeout", 200),
        (Method::PUT, "app/web/timeout", 403),
        (Method::GET, "app/secret/x", 403),
        (Method::DELETE, "app/secret/x", 403),
        (Method::GET, "elsewhere", 403),
    ];
    for (method, key, want) in cases {
        let r = call(&s.http, method.clone(), &kv(&s, key), &token, None).await;
        assert_eq!(r.status, want, "{method} {key}: {r:?}");
        if want == 403 {
            assert!(r.body["error"].as_str().unwrap().contains("key:"), "{r:?}");
        }
    }
    // A listing shows only what the token may read.
    let r = call(&s.http, Method::GET, &kv(&s, "app/?recurse"), &token, None).await;
    assert_eq!(r.status, 200);
    let keys: Vec<_> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].clone())
        .collect();
    assert_eq!(keys, [json!("app/payments/timeout")]);
    s.stop().await;
}
