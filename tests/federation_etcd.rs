//! Federation of a datacenter whose nodes share one registry on etcd
//! (docs/cluster.md, docs/federation.md): every node follows the peers
//! itself, and a peer following one node sees the writes made through any
//! node of that datacenter.

mod common;

use common::etcd::{EtcdCluster, skip_without_etcd};
use common::federation::{Dc, DcSpec};

/// Waits (bounded) for an async condition.
macro_rules! eventually {
    ($cond:expr, $($msg:tt)+) => {{
        let mut ok = false;
        for _ in 0..300 {
            if $cond { ok = true; break; }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(ok, $($msg)+);
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datacenter_on_etcd_federates_from_every_node_and_fails_over_on_each() {
    if skip_without_etcd() {
        return;
    }
    let cluster = EtcdCluster::start(1).await;
    let tmp = tempfile::tempdir().unwrap();
    let dc2 = Dc::lone(tmp.path(), "dc2").await;
    // Two nodes of dc1 on one etcd prefix, each following dc2, failing over to it.
    let store = cluster.url("/maxine/dc1");
    let node = |n: &str| {
        let spec = DcSpec {
            peers: vec![dc2.peer()],
            env: vec![
                ("MAXINE_STORE", store.clone()),
                ("MAXINE_STORE_TIMEOUT", "3s".into()),
                ("MAXINE_FAILOVER_DATACENTERS", "dc2".into()),
            ],
            ..Default::default()
        };
        let dir = tmp.path().join(n);
        async move { Dc::start("dc1", &dir, spec).await }
    };
    let a = node("dc1-a").await;
    let b = node("dc1-b").await;
    // dc3 follows node a only.
    let dc3 = Dc::start(
        "dc3",
        &tmp.path().join("dc3"),
        DcSpec {
            peers: vec![("dc1".into(), a.url())],
            ..Default::default()
        },
    )
    .await;

    // dc2's catalog reaches both nodes: each follows dc2's stream itself.
    dc2.register("payments", "p1", "10.2.0.1", 60).await;
    for (n, dc1) in [("a", &a), ("b", &b)] {
        eventually!(
            dc1.a("payments.dc2.maxine.").await == ["10.2.0.1"],
            "node {n} answers dc2's payments: {:?}",
            dc1.a("payments.dc2.maxine.").await
        );
        // No payments in dc1: the local name fails over to dc2 on each node.
        eventually!(
            dc1.a("payments.maxine.").await == ["10.2.0.1"],
            "node {n} fails over to dc2"
        );
    }

    // A write through node b is in node a's stream (a applied it from
    // etcd), so dc3, which follows only a, answers it.
    b.register("web", "w1", "10.1.0.1", 60).await;
    eventually!(
        dc3.a("web.dc1.maxine.").await == ["10.1.0.1"],
        "dc3 answers dc1's web, written through the node it does not follow: {:?}",
        dc3.a("web.dc1.maxine.").await
    );
    // Local instances win again, on both nodes, as soon as one passes.
    a.register("payments", "l1", "10.1.0.7", 60).await;
    for (n, dc1) in [("a", &a), ("b", &b)] {
        eventually!(
            dc1.a("payments.maxine.").await == ["10.1.0.7"],
            "node {n} answers the local instance again: {:?}",
            dc1.a("payments.maxine.").await
        );
    }
    b.deregister("web", "w1").await;
    eventually!(
        dc3.a("web.dc1.maxine.").await.is_empty(),
        "the removal through b reaches dc3"
    );
    // A node started now follows dc2 on its own and has dc1 from etcd.
    let c = node("dc1-c").await;
    eventually!(
        c.a("payments.dc2.maxine.").await == ["10.2.0.1"],
        "a new node follows dc2 on its own"
    );
    assert_eq!(
        c.a("payments.maxine.").await,
        ["10.1.0.7"],
        "and has the local instance from etcd"
    );
}
