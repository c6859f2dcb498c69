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
