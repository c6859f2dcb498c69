//! Federation and failover across real Maxine processes on loopback: dc2's
//! catalog answered by dc1 under `.dc2.`, resumable streams, relays,
//! replica files, and failover of local names (docs/federation.md).

mod common;

use common::federation::{Dc, DcSpec, secret_of};

/// Waits (bounded, like `assert_eventually!`) for an async condition.
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

#[tokio::test]
async fn dc2_registrations_answer_in_dc1_under_dc2_and_removals_and_expiry_follow() {
    let tmp = tempfile::tempdir().unwrap();
    let dc2 = Dc::lone(tmp.path(), "dc2").await;
    let dc1 = Dc::following(tmp.path(), "dc1", &[&dc2]).await;
    dc2.register("payments", "p1", "10.2.0.1", 30).await;
    dc2.register("payments", "p2", "10.2.0.2", 30).await;
    eventually!(
        dc1.a("payments.dc2.maxine.").await == ["10.2.0.1", "10.2.0.2"],
        "dc1 answers dc2's payments: {:?}",
        dc1.a("payments.dc2.maxine.").await
    );
    assert_eq!(
        dc1.a("v2.payments.dc2.maxine.").await,
        ["10.2.0.1", "10.2.0.2"]
    );
    let srv = dc1.srv("_payments._tcp.dc2.maxine.").await;
    assert_eq!(srv.len(), 2, "{srv:?}");
    assert!(srv[0].1.starts_with("p1.payments.dc2.maxine"), "{srv:?}");
    // Not a local service: without failover the local name has nothing.
    assert!(dc1.a("payments.maxine.").await.is_empty());
    let (status, body) = dc1.get("/v1/services/payments?dc=dc2").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["instances"].as_array().unwrap().len(), 2);
    let (_, list) = dc1.get("/v1/services?dc=dc2").await;
    assert_eq!(list["services"][0]["name"], "payments", "{list}");

    dc2.deregister("payments", "p1").await;
    eventually!(
        dc1.a("payments.dc2.maxine.").await == ["10.2.0.2"],
        "a deregistration in dc2 reaches dc1"
    );
    // Expiry is dc2's: a 1 s TTL without heartbeats goes critical there,
    // and so here; dc1 never expires it by itself.
    dc2.register("payments", "p3", "10.2.0.3", 1).await;
    eventually!(
        dc1.a("payments.dc2.maxine.").await == ["10.2.0.2"],
        "dc2's expiry of p3 reaches dc1"
    );
    let st = dc1.dc_status("dc2").await;
    assert_eq!(st["reachable"], true, "{st}");
    assert_eq!(st["snapshots_received"], 1, "{st}");
    assert!(st["applied_index"].as_u64().unwrap() > 0, "{st}");
}

#[tokio::test]
async fn a_receiver_restart_resumes_and_a_down_peer_answers_from_the_replica_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dc2 = Dc::lone(tmp.path(), "dc2").await;
    let spec = DcSpec {
        peers: vec![dc2.peer()],
        ..Default::default()
    };
    let dc1 = Dc::start("dc1", &tmp.path().join("dc1"), spec.clone()).await;
    dc2.register("payments", "p1", "10.2.0.1", 60).await;
    eventually!(
        dc1.a("payments.dc2.maxine.").await == ["10.2.0.1"],
        "replicated"
    );
    dc1.p.stop().await;
    // Changed while dc1 was away: delivered as deltas from its index.
    dc2.register("payments", "p2", "10.2.0.2", 60).await;
    let dc1 = Dc::start("dc1", &tmp.path().join("dc1"), spec.clone()).await;
    eventually!(
        dc1.a("payments.dc2.maxine.").await == ["10.2.0.1", "10.2.0.2"],
        "caught up after the restart"
    );
    let st = dc1.dc_status("dc2").await;
    assert_eq!(st["snapshots_received"], 0, "resumed, no snapshot: {st}");
    assert_eq!(st["resumes"], 1, "{st}");

    // dc2 down, dc1 restarted: dc2's names answer from the replica file.
    dc2.p.stop().await;
    dc1.p.stop().await;
    let dc1 = Dc::start("dc1", &tmp.path().join("dc1"), spec).await;
    assert_eq!(
        dc1.a("payments.dc2.maxine.").await,
        ["10.2.0.1", "10.2.0.2"]
    );
    let st = dc1.dc_status("dc2").await;
    assert_eq!(st["stale"], true, "{st}");
    assert_eq!(st["reachable"], false, "{st}");
    assert_eq!(st["from_file"], true, "{st}");
}

#[tokio::test]
async fn a_relay_delivers_dc3_to_dc1_through_dc2_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dc3 = Dc::lone(tmp.path(), "dc3").await;
    let dc2 = Dc::start(
        "dc2",
        &tmp.path().join("dc2"),
        DcSpec {
            peers: vec![dc3.peer()],
            env: vec![("MAXINE_FEDERATION_RELAY", "true".into())],
            ..Default::default()
        },
    )
    .await;
    let dc1 = Dc::following(tmp.path(), "dc1", &[&dc2]).await;
    dc3.register("search", "s1", "10.3.0.1", 60).await;
    dc2.register("payments", "p1", "10.2.0.1", 60).await;
    dc1.register("web", "w1", "10.1.0.1", 60).await;
    eventually!(
        dc1.a("search.dc3.maxine.").await == ["10.3.0.1"],
        "dc3 reaches dc1 through dc2"
    );
    eventually!(
        dc1.a("payments.dc2.maxine.").await == ["10.2.0.1"],
        "dc2's own data too"
    );
    dc3.deregister("search", "s1").await;
    eventually!(
        dc1.a("search.dc3.maxine.").await.is_empty(),
        "a removal in dc3 is relayed"
    );
    let st = dc1.dc_status("dc3").await;
    assert_eq!(st["via"], "dc2", "{st}");
    // dc1's data never reaches dc2 (dc1 is no peer of dc2 here).
    let (status, _) = dc2.get("/v1/services/web?dc=dc1").await;
    assert_eq!(status, 404, "dc1's data never loops to dc2");
}

#[tokio::test]
async fn a_peer_with_a_wrong_token_is_refused_with_403_and_nothing_is_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let dc2 = Dc::lone(tmp.path(), "dc2").await;
    dc2.register("payments", "p1", "10.2.0.1", 60).await;
    let dc1 = Dc::start(
        "dc1",
        &tmp.path().join("dc1"),
        DcSpec {
            peers: vec![dc2.peer()],
            token: Some("not-the-secret-of-dc2-at-all-0123456789".into()),
            ..Default::default()
        },
    )
    .await;
    eventually!(
        dc1.dc_status("dc2").await["denied"] == true,
        "dc1 reports the refusal: {}",
        dc1.dc_status("dc2").await
    );
    let st = dc1.dc_status("dc2").await;
    assert!(st["error"].as_str().unwrap().contains("403"), "{st}");
    assert!(dc1.a("payments.dc2.maxine.").await.is_empty());
    // The stream itself: 403 without a credential, and with a wrong one.
    let anon = reqwest::get(format!("{}/v1/federation/stream?since=0", dc2.url()))
        .await
        .unwrap();
    assert_eq!(anon.status(), 403);
    assert!(dc1.p.log_text().contains("refused"), "logged");
    assert!(
        dc2.p.log_text().contains("federation stream refused"),
        "logged by dc2 too"
    );
    let _ = secret_of("dc2");
}

/// The SRV answer to `name` as dnspython parses it: (priority, target,
/// ttl), sorted. The interpreter is the venv `.ci/run` installs dnspython
/// into (`target/test-venv`), else `python3` (`pip install dnspython`).
fn dnspython_srv(dns: std::net::SocketAddr, name: &str) -> Vec<(u16, String, u32)> {
    let venv =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/python3");
    let python = if venv.exists() {
        venv
    } else {
        "python3".into()
    };
    let script = r#"
import sys, dns.message, dns.query, dns.rdatatype
q = dns.message.make_query(sys.argv[3], dns.rdatatype.SRV, use_edns=0, payload=4096)
r = dns.query.udp(q, sys.argv[1], port=int(sys.argv[2]), timeout=2)
for rrset in r.answer:
    for rr in rrset:
        print(rr.priority, rr.target.to_text(), rrset.ttl)
"#;
    let out = std::process::Command::new(python)
        .args([
            "-c",
            script,
            &dns.ip().to_string(),
            &dns.port().to_string(),
            name,
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "dnspython failed (needs the Python package dnspython: .ci/run installs it into \
         target/test-venv): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Vec<(u16, String, u32)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (
                f[0].parse().unwrap(),
                f[1].to_string(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn local_names_fail_over_to_dc2_then_dc3_when_dc2_freezes_and_back_to_local() {
    let tmp = tempfile::tempdir().unwrap();
    let dc2 = Dc::lone(tmp.path(), "dc2").await;
    let dc3 = Dc::lone(tmp.path(), "dc3").await;
    let dc1 = Dc::start(
        "dc1",
        &tmp.path().join("dc1"),
        DcSpec {
            peers: vec![dc2.peer(), dc3.peer()],
            env: vec![
                ("MAXINE_FAILOVER_DATACENTERS", "dc2,dc3".into()),
                ("MAXINE_FAILOVER_SRV_TIERS", "true".into()),
                ("MAXINE_FAILOVER_TTL", "1s".into()),
            ],
            ..Default::default()
        },
    )
    .await;
    // The same secret for both peers: dc1 sends one token.
    let _ = &dc3;
    dc1.register("payments", "l1", "10.1.0.1", 60).await;
    dc2.register("payments", "p1", "10.2.0.1", 60).await;
    dc3.register("payments", "q1", "10.3.0.1", 60).await;
    eventually!(
        dc1.a("payments.dc2.maxine.").await == ["10.2.0.1"],
        "dc2 replicated"
    );
    eventually!(
        dc1.a("payments.dc3.maxine.").await == ["10.3.0.1"],
        "dc3 replicated"
    );
    for dc in ["dc2", "dc3"] {
        eventually!(
            dc1.dc_status(dc).await["stale"] == false,
            "{dc} fresh once reached"
        );
    }
    // Local first; SRV tiers: local 1, dc2 2, dc3 3.
    assert_eq!(dc1.a("payments.maxine.").await, ["10.1.0.1"]);
    let srv = dc1.srv("_payments._tcp.maxine.").await;
    let prios: Vec<(u16, String)> = srv.iter().map(|(p, t, _)| (*p, t.clone())).collect();
    assert_eq!(
        prios,
        [
            (1, "l1.payments.dc1.maxine.".to_string()),
            (2, "p1.payments.dc2.maxine.".to_string()),
            (3, "q1.payments.dc3.maxine.".to_string()),
        ],
        "{srv:?}"
    );
    assert!(
        srv.iter().all(|(_, _, ttl)| *ttl <= 1),
        "failover TTL: {srv:?}"
    );
    // Another parser reads the same tiers: dnspython.
    assert_eq!(
        dnspython_srv(dc1.p.dns, "_payments._tcp.maxine."),
        srv,
        "dnspython reads the SRV answer as hickory does"
    );

    // The last local instance leaves: dc2 answers, with the failover TTL,
    // already when the deregistration is acknowledged.
    dc1.deregister("payments", "l1").await;
    assert_eq!(dc1.a("payments.maxine.").await, ["10.2.0.1"]);
    assert_eq!(dc1.a("v2.payments.maxine.").await, ["10.2.0.1"]);
    assert!(dc1.a_ttls("payments.maxine.").await.iter().all(|t| *t <= 1));
    // The Maxine-compatible discover fails over too, and takes dc.
    assert_eq!(
        dc1.discover("serviceName=payments").await,
        (302, "http://10.2.0.1:8080".to_string())
    );
    assert_eq!(
        dc1.discover("serviceName=payments&dc=dc3").await,
        (302, "http://10.3.0.1:8080".to_string())
    );

    // dc2 frozen: after stale_after, dc3 answers.
    dc2.p.freeze();
    eventually!(
        dc1.a("payments.maxine.").await == ["10.3.0.1"],
        "failover moves to dc3 once dc2 is stale"
    );
    assert_eq!(dc1.dc_status("dc2").await["stale"], true);
    // Still served for the explicit name.
    assert_eq!(dc1.a("payments.dc2.maxine.").await, ["10.2.0.1"]);
    let before = dc1.dc_status("dc2").await;
    dc2.p.thaw();
    eventually!(
        dc1.a("payments.maxine.").await == ["10.2.0.1"],
        "dc2 fresh again: it answers again"
    );
    let after = dc1.dc_status("dc2").await;
    assert_eq!(
        after["snapshots_received"], before["snapshots_received"],
        "caught up without a resync: {after}"
    );

    // A local instance again: local answers.
    dc1.register("payments", "l2", "10.1.0.2", 60).await;
    assert_eq!(dc1.a("payments.maxine.").await, ["10.1.0.2"]);
    drop(dc3);
}

#[tokio::test]
async fn a_per_service_failover_order_overrides_the_default() {
    let tmp = tempfile::tempdir().unwrap();
    let dc2 = Dc::lone(tmp.path(), "dc2").await;
    let dc1 = Dc::following(tmp.path(), "dc1", &[&dc2]).await;
    dc2.register("payments", "p1", "10.2.0.1", 60).await;
    eventually!(
        dc1.a("payments.dc2.maxine.").await == ["10.2.0.1"],
        "replicated"
    );
    assert!(
        dc1.a("payments.maxine.").await.is_empty(),
        "no failover configured"
    );
    assert_eq!(
        dc1.put_json(
            "/v1/services/payments/failover",
            serde_json::json!({ "datacenters": ["dc2"] })
        )
        .await,
        200
    );
    assert_eq!(dc1.a("payments.maxine.").await, ["10.2.0.1"]);
    assert_eq!(
        dc1.put_json(
            "/v1/services/payments/failover",
            serde_json::json!({ "datacenters": ["dc1"] })
        )
        .await,
        400
    );
    assert_eq!(
        dc1.put_json(
            "/v1/services/payments/failover",
            serde_json::json!({ "datacenters": null })
        )
        .await,
        200
    );
    assert!(dc1.a("payments.maxine.").await.is_empty());
}

/// dc1 has applied everything dc2 has (so, everything dc2 relays).
async fn settled(dc1: &Dc, dc2: &Dc) -> bool {
    dc1.dc_status("dc2").await["applied_index"] == dc2.dc_status("dc2").await["index"]
}

#[tokio::test]
async fn in_a_mesh_with_a_relay_each_datacenter_is_taken_from_one_peer_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dc3 = Dc::lone(tmp.path(), "dc3").await;
    let dc2 = Dc::start(
        "dc2",
        &tmp.path().join("dc2"),
        DcSpec {
            peers: vec![dc3.peer()],
            env: vec![("MAXINE_FEDERATION_RELAY", "true".into())],
            ..Default::default()
        },
    )
    .await;
    // dc1 hears dc3 directly and relayed by dc2.
    let dc1 = Dc::following(tmp.path(), "dc1", &[&dc2, &dc3]).await;
    dc3.register("search", "s0", "10.3.0.9", 60).await;
    eventually!(
        dc1.a("search.dc3.maxine.").await == ["10.3.0.9"],
        "dc3 replicated"
    );
    eventually!(settled(&dc1, &dc2).await, "dc1 follows dc2");
    let before = dc1.dc_status("dc1").await["index"].as_u64().unwrap();
    dc3.register("search", "s1", "10.3.0.1", 60).await;
    eventually!(
        dc1.a("search.dc3.maxine.").await == ["10.3.0.1", "10.3.0.9"],
        "the new instance arrives"
    );
    eventually!(
        dc2.a("search.dc3.maxine.").await == ["10.3.0.1", "10.3.0.9"],
        "the relay has it too"
    );
    eventually!(settled(&dc1, &dc2).await, "dc1 follows dc2 again");
    let after = dc1.dc_status("dc1").await["index"].as_u64().unwrap();
    assert_eq!(after - before, 1, "applied once, not once per path");
    assert!(
        dc1.dc_status("dc3").await["via"].is_null(),
        "taken from dc3 itself"
    );
}

#[tokio::test]
async fn failover_nearest_picks_the_peer_of_lowest_round_trip_time() {
    let tmp = tempfile::tempdir().unwrap();
    let dc2 = Dc::lone(tmp.path(), "dc2").await;
    let dc3 = Dc::lone(tmp.path(), "dc3").await;
    // dc2 is behind a link that adds 150 ms each way; dc3 is direct.
    let slow =
        common::federation::slow_link(dc2.p.http, std::time::Duration::from_millis(150)).await;
    let dc1 = Dc::start(
        "dc1",
        &tmp.path().join("dc1"),
        DcSpec {
            peers: vec![("dc2".into(), format!("http://{slow}")), dc3.peer()],
            env: vec![("MAXINE_FAILOVER_NEAREST", "1".into())],
            ..Default::default()
        },
    )
    .await;
    dc2.register("payments", "p1", "10.2.0.1", 60).await;
    dc3.register("payments", "q1", "10.3.0.1", 60).await;
    eventually!(
        dc1.a("payments.dc2.maxine.").await == ["10.2.0.1"]
            && dc1.a("payments.dc3.maxine.").await == ["10.3.0.1"],
        "both replicated"
    );
    for dc in ["dc2", "dc3"] {
        eventually!(
            !dc1.dc_status(dc).await["rtt_ms"].is_null(),
            "{dc}'s round trip measured"
        );
    }
    let rtt = |v: serde_json::Value| v["rtt_ms"].as_f64().unwrap();
    assert!(
        rtt(dc1.dc_status("dc2").await) > rtt(dc1.dc_status("dc3").await),
        "the slow link measures slower"
    );
    eventually!(
        dc1.a("payments.maxine.").await == ["10.3.0.1"],
        "the nearest peer answers: {:?} {}",
        dc1.a("payments.maxine.").await,
        dc1.get("/v1/datacenters").await.1
    );
    let (_, body) = dc1.get("/v1/datacenters").await;
    assert_eq!(
        body["failover"]["order"],
        serde_json::json!(["dc3"]),
        "{body}"
    );
}

/// A dc2 instance whose check fails leaves dc1's answers for it: the peer
/// sends each instance's status, and the checks run in dc2 only.
#[tokio::test]
async fn a_check_failing_in_dc2_takes_the_instance_out_of_dc1s_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let dc2 = Dc::lone(tmp.path(), "dc2").await;
    let dc1 = Dc::following(tmp.path(), "dc1", &[&dc2]).await;
    // The checked target: a listener of this test, closed later.
    let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target_addr = target.local_addr().unwrap();
    dc2.register("payments", "p1", "10.2.0.1", 60).await;
    let status = dc2
        .put_json(
            "/v1/services/payments/instances/p1/checks/db",
            serde_json::json!({"name": "db", "tcp": target_addr.to_string(), "interval": "1s", "timeout": "1s"}),
        )
        .await;
    assert_eq!(status, 200);
    dc2.register("payments", "p2", "10.2.0.2", 60).await;
    eventually!(
        dc1.a("payments.dc2.maxine.").await == ["10.2.0.1", "10.2.0.2"],
        "dc1 answers both while the check passes: {:?}",
        dc1.a("payments.dc2.maxine.").await
    );
    drop(target);
    eventually!(
        dc2.a("payments.dc2.maxine.").await == ["10.2.0.2"],
        "dc2 takes p1 out once its check fails"
    );
    eventually!(
        dc1.a("payments.dc2.maxine.").await == ["10.2.0.2"],
        "and so does dc1: {:?}",
        dc1.a("payments.dc2.maxine.").await
    );
    // dc1 holds p1 as critical, with no checks of its own to run.
    let (_, body) = dc1.get("/v1/services/payments?dc=dc2").await;
    let p1 = body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "p1")
        .cloned()
        .unwrap();
    assert_eq!(p1["health"], "critical", "{p1}");
    let checks = p1["checks"].as_array().cloned().unwrap_or_default();
    assert!(checks.iter().all(|c| c["name"] != "db"), "{p1}");
}
