//! What DNS answers carry and in which order, on a real Maxine over real
//! sockets: TCP answers with every instance, and the load-balancing
//! strategies (round_robin, weighted, random, sticky, nearest).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{TestServer, query};
use hickory_proto::op::Message;
use hickory_proto::rr::{RData, RecordType};
use serde_json::json;

/// The SRV targets and the additional records' owners of a reply.
fn srv_targets(m: &Message) -> (Vec<String>, BTreeSet<String>) {
    let targets = m
        .answers
        .iter()
        .map(|a| match &a.data {
            RData::SRV(srv) => srv.target.to_string(),
            other => panic!("not an SRV answer: {other:?}"),
        })
        .collect();
    let glue = m
        .additionals
        .iter()
        .filter(|r| r.record_type() == RecordType::A)
        .map(|r| r.name.to_string())
        .collect();
    (targets, glue)
}

#[tokio::test]
async fn a_tcp_srv_query_for_a_300_instance_service_returns_all_300_with_their_addresses() {
    let s = TestServer::start().await;
    for i in 0..300 {
        s.register(
            "wide",
            &format!("i{i}"),
            json!({"address": format!("10.1.{}.{}", i / 250, i % 250 + 1), "port": 80}),
        )
        .await;
    }
    let q = query("_wide._tcp.maxine.", RecordType::SRV, None);
    let r = s.tcp_raw(std::slice::from_ref(&q)).await;
    let m = Message::from_vec(&r[0]).unwrap();
    assert!(!m.metadata.truncation, "{} bytes", r[0].len());
    let (targets, glue) = srv_targets(&m);
    let distinct: BTreeSet<_> = targets.iter().cloned().collect();
    assert_eq!(distinct.len(), 300, "every instance once");
    assert_eq!(targets.len(), 300);
    assert_eq!(
        glue, distinct,
        "every target's address in the additional section"
    );

    // Over UDP the answer is still the window of dns.max_records (32),
    // within the client's size.
    let r = s
        .udp_raw(&query("wide.maxine.", RecordType::A, Some((4096, 0))))
        .await
        .unwrap();
    let m = Message::from_vec(&r).unwrap();
    assert!(r.len() <= 1232);
    assert_eq!(m.answers.len(), 32);
    // 32 SRV records do not fit in 512 bytes: truncated.
    let r = s.udp_raw(&q).await.unwrap();
    assert!(r.len() <= 512);
    assert_eq!(r[2] & 0x02, 0x02, "TC set");

    // Address answers over TCP carry every instance too.
    let r = s
        .tcp_raw(&[query("wide.maxine.", RecordType::A, None)])
        .await;
    let m = Message::from_vec(&r[0]).unwrap();
    assert_eq!(m.answers.len(), 300);
}

/// Counts per first answer address over `n` UDP queries of `name`.
async fn first_addresses(s: &TestServer, name: &str, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let m = s.ask(name, RecordType::A).await;
        let first = m.answers.first().expect("an answer").data.to_string();
        *counts.entry(first).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn round_robin_spreads_first_answers_over_every_instance() {
    let s = TestServer::start().await;
    for i in 1..=4 {
        s.register(
            "rr",
            &format!("i{i}"),
            json!({"address": format!("10.2.0.{i}"), "port": 80}),
        )
        .await;
    }
    let counts = first_addresses(&s, "rr.maxine.", 40).await;
    assert_eq!(counts.len(), 4, "{counts:?}");
}

/// A query of `name` for A records carrying the EDNS client subnet
/// `a.b.c.0/24` (RFC 7871), as a recursor forwards it.
fn ecs_query(name: &str, rtype: RecordType, subnet: [u8; 3]) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&u16::from(rtype).to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    // OPT: root owner, type 41, UDP size 4096, TTL 0, one ECS option.
    q.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0]);
    let option = [&[0u8, 8, 0, 7, 0, 1, 24, 0][..], &subnet[..]].concat();
    q.extend_from_slice(&(option.len() as u16).to_be_bytes());
    q.extend_from_slice(&option);
    q
}

/// The A answers to `name` for a client in `subnet`, in order.
async fn order_for(s: &TestServer, name: &str, subnet: [u8; 3]) -> Vec<String> {
    let q = ecs_query(name, RecordType::A, subnet);
    for _ in 0..3 {
        if let Some(r) = s.udp_raw(&q).await {
            let m = Message::from_vec(&r).unwrap();
            return m.answers.iter().map(|a| a.data.to_string()).collect();
        }
    }
    panic!("no reply for {name}");
}

async fn set_strategy(s: &TestServer, service: &str, strategy: &str) {
    let r = common::api::put(
        s,
        &format!("/v1/services/{service}/config"),
        json!({ "strategy": strategy }),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["strategy"], strategy);
}

#[tokio::test]
async fn sticky_gives_a_subnet_a_stable_order_and_a_removal_moves_only_its_clients() {
    let s = TestServer::start().await;
    for i in 1..=6 {
        s.register(
            "sticky",
            &format!("i{i}"),
            json!({"address": format!("10.3.0.{i}"), "port": 80}),
        )
        .await;
    }
    set_strategy(&s, "sticky", "sticky").await;
    let subnets: Vec<[u8; 3]> = (0..48u8).map(|i| [192, i, 2]).collect();
    let mut before = Vec::new();
    for sn in &subnets {
        let first = order_for(&s, "sticky.maxine.", *sn).await;
        assert_eq!(first.len(), 6);
        // The same subnet gets the same order, query after query.
        for _ in 0..3 {
            assert_eq!(order_for(&s, "sticky.maxine.", *sn).await, first);
        }
        before.push(first);
    }
    let firsts: BTreeSet<&String> = before.iter().map(|o| &o[0]).collect();
    assert!(
        firsts.len() >= 4,
        "subnets spread over the instances: {firsts:?}"
    );

    // Remove i3: only the subnets whose first answer was it move.
    common::api::delete(&s, "/v1/services/sticky/instances/i3").await;
    for (sn, old) in subnets.iter().zip(&before) {
        let now = order_for(&s, "sticky.maxine.", *sn).await;
        let kept: Vec<String> = old.iter().filter(|a| *a != "10.3.0.3").cloned().collect();
        assert_eq!(now, kept, "subnet {sn:?}: the others keep their order");
    }
}

#[tokio::test]
async fn weighted_first_answers_converge_to_the_weights() {
    let s = TestServer::start_with(|c| c.dns.udp_workers = 1).await;
    let weights = [1u32, 2, 3, 4];
    for (i, w) in weights.iter().enumerate() {
        s.register(
            "weighted",
            &format!("i{i}"),
            json!({"address": format!("10.4.0.{}", i + 1), "port": 80, "weight": w}),
        )
        .await;
    }
    set_strategy(&s, "weighted", "weighted").await;
    // One worker, so the queries walk its counter through every order.
    let n = 640;
    let counts = first_addresses(&s, "weighted.maxine.", n).await;
    let total: u32 = weights.iter().sum();
    let mut chi2 = 0.0;
    for (i, w) in weights.iter().enumerate() {
        let expected = n as f64 * f64::from(*w) / f64::from(total);
        let seen = *counts.get(&format!("10.4.0.{}", i + 1)).unwrap_or(&0) as f64;
        chi2 += (seen - expected).powi(2) / expected;
    }
    // 3 degrees of freedom: 16.27 is the 0.1% critical value.
    assert!(chi2 < 16.27, "chi-square {chi2:.2} for {counts:?}");
}

#[tokio::test]
async fn nearest_answers_same_zone_instances_first() {
    let s = TestServer::start_with(|c| {
        c.dns.client_zones = vec!["192.0.0.0/16=eu-1".into(), "198.51.0.0/16=us-1".into()];
    })
    .await;
    for (i, zone) in ["eu-1", "us-1", "eu-1", "us-1", "ap-1"].iter().enumerate() {
        s.register(
            "near",
            &format!("i{i}"),
            json!({"address": format!("10.5.0.{}", i + 1), "port": 80, "metadata": {"zone": zone}}),
        )
        .await;
    }
    set_strategy(&s, "near", "nearest").await;
    let eu = ["10.5.0.1", "10.5.0.3"];
    let us = ["10.5.0.2", "10.5.0.4"];
    let mut eu_firsts = BTreeSet::new();
    for _ in 0..8 {
        let order = order_for(&s, "near.maxine.", [192, 0, 7]).await;
        assert_eq!(order.len(), 5);
        let head: BTreeSet<&str> = order[..2].iter().map(String::as_str).collect();
        assert_eq!(head, eu.into_iter().collect(), "{order:?}");
        eu_firsts.insert(order[0].clone());
        let order = order_for(&s, "near.maxine.", [198, 51, 100]).await;
        let head: BTreeSet<&str> = order[..2].iter().map(String::as_str).collect();
        assert_eq!(head, us.into_iter().collect(), "{order:?}");
    }
    assert_eq!(eu_firsts.len(), 2, "answers rotate within the zone");
}

#[tokio::test]
async fn service_config_is_validated_kept_without_instances_and_survives_a_restart() {
    let s = TestServer::start().await;
    for (body, needle) in [
        (json!({"strategy": "fastest"}), "not one of"),
        (json!({"panic_threshold": 300}), "0 to 100"),
        (json!({"strategy": 7}), ""),
        (json!({"other": 1}), "unknown field"),
    ] {
        let r = common::api::put(&s, "/v1/services/pay/config", body).await;
        assert_eq!(r.status, 400, "{:?}", r.body);
        assert!(r.body.to_string().contains(needle), "{:?}", r.body);
    }
    let r = common::api::get(&s, "/v1/services/pay/config").await;
    assert_eq!(r.body["strategy"], "round_robin");
    assert_eq!(r.body["configured"]["strategy"], serde_json::Value::Null);
    // Set before the service has instances.
    let r = common::api::put(
        &s,
        "/v1/services/pay/config",
        json!({"strategy": "sticky", "panic_threshold": 30}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    s.register("pay", "a", json!({"address": "10.6.0.1", "port": 80}))
        .await;
    let r = common::api::get(&s, "/v1/services/pay").await;
    assert_eq!(r.body["strategy"], "sticky");
    let s = s.restart().await;
    let r = common::api::get(&s, "/v1/services/pay/config").await;
    assert_eq!(r.body["strategy"], "sticky", "{:?}", r.body);
    assert_eq!(r.body["panic_threshold"], 30);
    assert_eq!(r.body["configured"]["panic_threshold"], 30);
    let r = common::api::get(&s, "/v1/services/pay").await;
    assert_eq!(r.body["strategy"], "sticky", "restored instances take it");
}
