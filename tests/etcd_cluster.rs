//! Several Maxine nodes sharing one registry through a real three-member
//! etcd cluster on loopback (tests/common/etcd.rs): convergence, conditional
//! writes, expiry leadership, faults. Skipped, saying so, only when the
//! etcd binary is not installed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::etcd::{EtcdCluster, skip_without_etcd};
use common::process::ServerProcess;
use serde_json::{Value, json};

// The start-up benchmark's registrations (examples/etcd_fill.rs).
#[path = "../benches/support/registrations.rs"]
#[allow(dead_code)]
mod registrations;

/// Polls `check` every 50 ms for at most `secs` seconds.
async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within {secs} s: {what}");
}

/// The JSON answer to `req`.
async fn json_of(req: reqwest::RequestBuilder) -> Value {
    req.send().await.unwrap().json().await.unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

async fn register(node: &ServerProcess, svc: &str, id: &str, addr: &str, ttl: &str) -> u16 {
    http()
        .put(format!("{}/v1/services/{svc}/instances/{id}", node.base()))
        .json(&json!({"address": addr, "port": 80, "ttl": ttl}))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn deregister(node: &ServerProcess, svc: &str, id: &str) -> u16 {
    http()
        .delete(format!("{}/v1/services/{svc}/instances/{id}", node.base()))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn heartbeat(node: &ServerProcess, svc: &str, id: &str) -> u16 {
    http()
        .put(format!(
            "{}/v1/services/{svc}/instances/{id}/heartbeat",
            node.base()
        ))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Every service's instances with their health, as the API lists them.
async fn listing(node: &ServerProcess) -> BTreeMap<String, Vec<(String, String, String)>> {
    let r = http()
        .get(format!("{}/v1/services", node.base()))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    let mut out = BTreeMap::new();
    let services = body["services"].as_array().cloned().unwrap_or_default();
    for s in services {
        let name = s["name"].as_str().unwrap_or_default().to_string();
        let got = node.instances(&name).await;
        let health = instance_health(node, &name).await;
        let list = got
            .into_iter()
            .map(|(id, addr)| {
                let h = health.get(&id).cloned().unwrap_or_default();
                (id, addr, h)
            })
            .collect();
        out.insert(name, list);
    }
    out
}

async fn instance_health(node: &ServerProcess, svc: &str) -> BTreeMap<String, String> {
    let r = http()
        .get(format!("{}/v1/services/{svc}", node.base()))
        .send()
        .await
        .unwrap();
    if r.status() != 200 {
        return BTreeMap::new();
    }
    let body: Value = r.json().await.unwrap();
    body["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap_or_default().to_string(),
                i["health"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

async fn a_records(node: &ServerProcess, svc: &str) -> BTreeSet<String> {
    node.resolve_a(&format!("{svc}.maxine."))
        .await
        .into_iter()
        .collect()
}

struct Nodes {
    cluster: EtcdCluster,
    nodes: Vec<ServerProcess>,
    dirs: Vec<tempfile::TempDir>,
    prefix: String,
}

impl Nodes {
    async fn start(n: usize, prefix: &str) -> Self {
        let cluster = EtcdCluster::start(3).await;
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for _ in 0..n {
            let dir = tempfile::tempdir().unwrap();
            nodes.push(cluster.node(prefix, dir.path(), &[]).await);
            dirs.push(dir);
        }
        Self {
            cluster,
            nodes,
            dirs,
            prefix: prefix.into(),
        }
    }

    /// Stops node `i` cleanly and starts it again on its data directory.
    async fn restart_node(&mut self, i: usize) {
        let old = self.nodes.remove(i);
        old.stop().await;
        let node = self
            .cluster
            .node(&self.prefix, self.dirs[i].path(), &[])
            .await;
        self.nodes.insert(i, node);
    }

    async fn assert_same_listings(&self) {
        let first = listing(&self.nodes[0]).await;
        for n in &self.nodes[1..] {
            let mut same = false;
            for _ in 0..100 {
                if listing(n).await == first {
                    same = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(
                same,
                "the nodes' listings differ:\n{first:?}\n{:?}",
                listing(n).await
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_through_one_node_is_in_every_nodes_dns_and_so_is_its_removal() {
    if skip_without_etcd() {
        return;
    }
    let c = Nodes::start(3, "conv").await;
    let (a, b, cc) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    assert_eq!(register(a, "pay", "pay-1", "10.1.0.1", "1h").await, 200);
    // Read-your-writes on the node that took it: at once.
    assert_eq!(
        a_records(a, "pay").await,
        BTreeSet::from(["10.1.0.1".to_string()])
    );
    for n in [b, cc] {
        eventually(
            10,
            "the registration reaches the other nodes' DNS",
            || async { a_records(n, "pay").await.contains("10.1.0.1") },
        )
        .await;
    }
    assert_eq!(register(b, "pay", "pay-2", "10.1.0.2", "1h").await, 200);
    assert_eq!(register(cc, "web", "web-1", "10.2.0.1", "1h").await, 200);
    c.assert_same_listings().await;
    assert_eq!(deregister(cc, "pay", "pay-1").await, 200);
    for n in [a, b, cc] {
        eventually(10, "the removal reaches every node's DNS", || async {
            a_records(n, "pay").await == BTreeSet::from(["10.1.0.2".to_string()])
        })
        .await;
    }
    // A removal of what is not there is refused on any node.
    assert_eq!(deregister(a, "pay", "pay-1").await, 404);
    c.assert_same_listings().await;
    // Each change is in the audit log of the node that took it.
    let audit = |n: &ServerProcess| {
        let url = format!("{}/v1/audit?limit=1000", n.base());
        async move {
            let body = json_of(http().get(url)).await;
            body["records"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|r| {
                    format!(
                        "{} {}",
                        r["action"].as_str().unwrap_or(""),
                        r["resource"].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let in_a = audit(a).await;
    assert!(
        in_a.contains(&"registered service:pay/instance:pay-1@dc1".to_string()),
        "{in_a:?}"
    );
    let in_c = audit(cc).await;
    assert!(
        in_c.contains(&"deregistered service:pay/instance:pay-1@dc1".to_string()),
        "{in_c:?}"
    );
    assert!(
        !in_c
            .iter()
            .any(|r| r.starts_with("registered service:pay/instance:pay-1"))
    );
    // A key/value write is audited at the revision it was committed at.
    let put = json_of(http().put(kv_url(b, "app/flag")).body("on")).await;
    let index = put["index"].as_u64().expect("the write's index");
    let records = json_of(http().get(format!("{}/v1/audit?limit=1000", b.base()))).await;
    let kv: Vec<&Value> = records["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "kv.put")
        .collect();
    assert_eq!(kv.len(), 1, "{records}");
    assert_eq!(kv[0]["index"].as_u64(), Some(index), "{records}");
    assert!(kv[0]["time_ms"].as_u64().unwrap_or(0) > 0, "{records}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_acl_bootstraps_through_two_nodes_have_exactly_one_winner() {
    if skip_without_etcd() {
        return;
    }
    let c = Nodes::start(2, "cas").await;
    for round in 0..3 {
        // A fresh prefix per round would need fresh nodes; one race is one
        // bootstrap, so the later rounds must all lose.
        let (x, y) = tokio::join!(
            http()
                .post(format!("{}/v1/acl/bootstrap", c.nodes[0].base()))
                .send(),
            http()
                .post(format!("{}/v1/acl/bootstrap", c.nodes[1].base()))
                .send(),
        );
        let codes = [x.unwrap().status().as_u16(), y.unwrap().status().as_u16()];
        let won = codes.iter().filter(|c| **c == 200).count();
        if round == 0 {
            assert_eq!(won, 1, "exactly one bootstrap wins: {codes:?}");
            assert!(
                codes.contains(&403),
                "the other is told it was done: {codes:?}"
            );
        } else {
            assert_eq!(won, 0, "a bootstrap wins once: {codes:?}");
        }
    }
}

/// The node that decides expiry now, by its log.
fn expiry_leader(nodes: &[ServerProcess]) -> Option<usize> {
    nodes.iter().position(|n| {
        let log = n.log_text();
        match (
            log.rfind("this node decides expiry now"),
            log.rfind("this node no longer decides expiry"),
        ) {
            (Some(won), Some(lost)) => won > lost,
            (Some(_), None) => true,
            _ => false,
        }
    })
}

async fn health_on_every_node(nodes: &[ServerProcess], svc: &str, id: &str) -> Vec<String> {
    let mut out = Vec::new();
    for n in nodes {
        out.push(
            instance_health(n, svc)
                .await
                .get(id)
                .cloned()
                .unwrap_or_else(|| "absent".into()),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_to_other_nodes_keep_an_instance_alive_and_the_leaders_death_hands_over_expiry()
{
    if skip_without_etcd() {
        return;
    }
    let mut c = Nodes::start(3, "hb").await;
    eventually(15, "a node is elected to decide expiry", || async {
        expiry_leader(&c.nodes).is_some()
    })
    .await;
    let leader = expiry_leader(&c.nodes).unwrap();
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    // Registered through the leader, kept alive only through the others:
    // the leader learns of the heartbeats from their summaries.
    assert_eq!(
        register(&c.nodes[leader], "hb", "hb-1", "10.3.0.1", "2s").await,
        200
    );
    let until = Instant::now() + Duration::from_secs(8);
    let mut k = 0;
    while Instant::now() < until {
        let via = others[k % 2];
        k += 1;
        assert_eq!(heartbeat(&c.nodes[via], "hb", "hb-1").await, 200);
        tokio::time::sleep(Duration::from_millis(400)).await;
        if k % 5 == 0 {
            let h = health_on_every_node(&c.nodes, "hb", "hb-1").await;
            assert!(h.iter().all(|h| h == "passing"), "heartbeating, yet {h:?}");
        }
    }
    // Silent now: the leader expires it, and every node sees it.
    eventually(
        15,
        "the silent instance turns critical everywhere",
        || async {
            health_on_every_node(&c.nodes, "hb", "hb-1")
                .await
                .iter()
                .all(|h| h == "critical" || h == "absent")
        },
    )
    .await;

    // The leader dies: another node takes expiry over within the lease time.
    let dead = c.nodes.remove(leader);
    dead.kill9().await;
    c.dirs.remove(leader);
    assert_eq!(
        register(&c.nodes[0], "hb", "hb-2", "10.3.0.2", "2s").await,
        200
    );
    assert_eq!(
        register(&c.nodes[1], "hb", "hb-3", "10.3.0.3", "2s").await,
        200
    );
    // hb-3 is kept alive through the survivors the whole time.
    let until = Instant::now() + Duration::from_secs(20);
    let mut expired = false;
    let mut k = 0;
    while Instant::now() < until {
        assert_eq!(heartbeat(&c.nodes[k % 2], "hb", "hb-3").await, 200);
        k += 1;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let h2 = health_on_every_node(&c.nodes, "hb", "hb-2").await;
        if h2.iter().all(|h| h == "critical" || h == "absent") {
            expired = true;
            break;
        }
    }
    assert!(expired, "no node took expiry over from the dead leader");
    assert!(expiry_leader(&c.nodes).is_some());
    let h3 = health_on_every_node(&c.nodes, "hb", "hb-3").await;
    assert!(
        h3.iter().all(|h| h == "passing"),
        "heartbeating, yet {h3:?}"
    );
    c.assert_same_listings().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_quorum_writes_fail_with_503_dns_goes_on_and_nothing_is_lost_after() {
    if skip_without_etcd() {
        return;
    }
    let mut c = Nodes::start(2, "quorum").await;
    assert_eq!(
        register(&c.nodes[0], "q", "q-1", "10.4.0.1", "1h").await,
        200
    );
    eventually(10, "the registration reaches node B", || async {
        a_records(&c.nodes[1], "q").await.contains("10.4.0.1")
    })
    .await;
    // One member of three down: writes go on.
    c.cluster.kill(0);
    eventually(15, "a write succeeds with one member down", || async {
        register(&c.nodes[1], "q", "q-2", "10.4.0.2", "1h").await == 200
    })
    .await;
    for n in &c.nodes {
        eventually(10, "every node has both", || async {
            a_records(n, "q").await.contains("10.4.0.2")
        })
        .await;
    }
    // Two down: no quorum.
    c.cluster.kill(1);
    let r = http()
        .put(format!("{}/v1/services/q/instances/q-3", c.nodes[0].base()))
        .json(&json!({"address": "10.4.0.3", "port": 80, "ttl": "1h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("unavailable") && text.contains("may still be applied"),
        "{text}"
    );
    // DNS and reads go on from memory, and the node says it is read-only.
    for n in &c.nodes {
        let got = a_records(n, "q").await;
        assert!(
            got.contains("10.4.0.1") && got.contains("10.4.0.2"),
            "{got:?}"
        );
    }
    eventually(15, "/v1/ready reports the registry read-only", || async {
        let r = http()
            .get(format!("{}/v1/ready", c.nodes[1].base()))
            .send()
            .await
            .unwrap();
        r.text().await.unwrap().contains("read-only")
    })
    .await;
    c.cluster.restart(0).await;
    c.cluster.restart(1).await;
    eventually(20, "writes succeed again", || async {
        register(&c.nodes[0], "q", "q-4", "10.4.0.4", "1h").await == 200
    })
    .await;
    for n in &c.nodes {
        eventually(10, "every acknowledged registration is there", || async {
            let got = a_records(n, "q").await;
            ["10.4.0.1", "10.4.0.2", "10.4.0.4"]
                .iter()
                .all(|a| got.contains(*a))
        })
        .await;
    }
    eventually(10, "/v1/ready no longer says read-only", || async {
        let r = http()
            .get(format!("{}/v1/ready", c.nodes[0].base()))
            .send()
            .await
            .unwrap();
        r.status() == 200 && !r.text().await.unwrap().contains("read-only")
    })
    .await;
    c.assert_same_listings().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_registrations_survive_killed_nodes_and_members() {
    if skip_without_etcd() {
        return;
    }
    use rand::Rng;
    let mut c = Nodes::start(3, "crash").await;
    let mut acked: BTreeSet<String> = BTreeSet::new();
    let mut sent: BTreeSet<String> = BTreeSet::new();
    for round in 0..3 {
        let bases: Vec<String> = c.nodes.iter().map(|n| n.base()).collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = Vec::new();
        for (w, base) in bases.into_iter().enumerate() {
            let stop = stop.clone();
            writers.push(tokio::spawn(async move {
                let client = http();
                let mut acked = Vec::new();
                let mut sent = Vec::new();
                // Bounded: at most 150 registrations per writer and round.
                for k in 0..150 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let id = format!("r{round}-w{w}-{k}");
                    sent.push(id.clone());
                    let addr = format!("10.{}.{}.{}", 50 + round, w, k + 1);
                    let r = client
                        .put(format!("{base}/v1/services/crash/instances/{id}"))
                        .json(&json!({"address": addr, "port": 80, "ttl": "1h"}))
                        .send()
                        .await;
                    if r.is_ok_and(|r| r.status() == 200) {
                        acked.push(id);
                    }
                }
                (sent, acked)
            }));
        }
        let (victim, member, wait) = {
            let mut rng = rand::rng();
            (
                rng.random_range(0..3usize),
                rng.random_range(0..3usize),
                rng.random_range(50..400u64),
            )
        };
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let node = c.nodes.remove(victim);
        node.kill9().await;
        c.cluster.kill(member);
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in writers {
            let (s, a) = w.await.unwrap();
            sent.extend(s);
            acked.extend(a);
        }
        c.cluster.restart(member).await;
        // The node restarts on its data directory (its local snapshot).
        let dir = c.dirs[victim].path().to_path_buf();
        let node = c.cluster.node(&c.prefix, &dir, &[]).await;
        c.nodes.insert(victim, node);
    }
    assert!(!acked.is_empty(), "some registrations were acknowledged");
    for n in &c.nodes {
        let mut have = BTreeMap::new();
        for _ in 0..100 {
            have = n.instances("crash").await;
            if acked.iter().all(|id| have.contains_key(id)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let missing: Vec<_> = acked.iter().filter(|id| !have.contains_key(*id)).collect();
        assert!(missing.is_empty(), "acknowledged but missing: {missing:?}");
        let unknown: Vec<_> = have.keys().filter(|id| !sent.contains(*id)).collect();
        assert!(unknown.is_empty(), "never sent, yet present: {unknown:?}");
        // And in DNS, by instance name (a sample: every tenth).
        for id in acked.iter().step_by(10) {
            let a = n.resolve_a(&format!("{id}.crash.dc1.maxine.")).await;
            assert_eq!(a.len(), 1, "{id} has no address in DNS");
        }
    }
    c.assert_same_listings().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_answers_from_its_local_state_and_catches_up() {
    if skip_without_etcd() {
        return;
    }
    let mut c = Nodes::start(2, "restart").await;
    assert_eq!(
        register(&c.nodes[0], "rs", "rs-1", "10.5.0.1", "1h").await,
        200
    );
    eventually(10, "node B has it", || async {
        a_records(&c.nodes[1], "rs").await.contains("10.5.0.1")
    })
    .await;
    // A clean stop writes B's local snapshot; changes made meanwhile come
    // from the watch when it is back.
    let b = c.nodes.remove(1);
    b.stop().await;
    assert_eq!(
        register(&c.nodes[0], "rs", "rs-2", "10.5.0.2", "1h").await,
        200
    );
    assert_eq!(deregister(&c.nodes[0], "rs", "rs-1").await, 200);
    let dir = c.dirs[1].path().to_path_buf();
    assert!(
        dir.join("etcd/registry.snapshot").exists(),
        "B kept a local snapshot"
    );
    let b = c.cluster.node(&c.prefix, &dir, &[]).await;
    c.nodes.push(b);
    eventually(10, "B caught up", || async {
        a_records(&c.nodes[1], "rs").await == BTreeSet::from(["10.5.0.2".to_string()])
    })
    .await;
    c.restart_node(0).await;
    c.assert_same_listings().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_after_etcd_compacted_past_it_reloads_and_converges() {
    if skip_without_etcd() {
        return;
    }
    let mut c = Nodes::start(2, "compact").await;
    for k in 0..5 {
        let addr = format!("10.6.0.{}", k + 1);
        assert_eq!(
            register(&c.nodes[0], "cp", &format!("cp-{k}"), &addr, "1h").await,
            200
        );
    }
    eventually(10, "node B has them", || async {
        a_records(&c.nodes[1], "cp").await.len() == 5
    })
    .await;
    let b = c.nodes.remove(1);
    b.stop().await;
    // Changes while B is away, then etcd forgets the history B would need.
    assert_eq!(deregister(&c.nodes[0], "cp", "cp-0").await, 200);
    assert_eq!(deregister(&c.nodes[0], "cp", "cp-1").await, 200);
    assert_eq!(
        register(&c.nodes[0], "cp", "cp-9", "10.6.0.99", "1h").await,
        200
    );
    let endpoints: Vec<String> = c
        .cluster
        .endpoints()
        .split(',')
        .map(|e| format!("http://{e}"))
        .collect();
    let mut etcd = etcd_client::Client::connect(endpoints, None).await.unwrap();
    let rev = etcd
        .get("/compact/r/", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    etcd.compact(
        rev,
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await
    .unwrap();
    let dir = c.dirs[1].path().to_path_buf();
    let b = c.cluster.node(&c.prefix, &dir, &[]).await;
    c.nodes.push(b);
    let want: BTreeSet<String> = ["10.6.0.3", "10.6.0.4", "10.6.0.5", "10.6.0.99"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    eventually(15, "B reloaded what changed while it was away", || async {
        a_records(&c.nodes[1], "cp").await == want
    })
    .await;
    assert!(
        c.nodes[1].log_text().contains("compacted past"),
        "B reloaded because of the compaction"
    );
    c.assert_same_listings().await;
}

fn kv_url(node: &ServerProcess, key: &str) -> String {
    format!("{}/v1/kv/{key}", node.base())
}

fn index_header(r: &reqwest::Response) -> u64 {
    r.headers()
        .get("x-maxine-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_values_service_settings_and_checks_through_one_node_are_on_the_others() {
    if skip_without_etcd() {
        return;
    }
    let c = Nodes::start(2, "kvs").await;
    let (a, b) = (&c.nodes[0], &c.nodes[1]);

    // A key/value entry put through A is read on B, at the same index.
    let r = http()
        .put(kv_url(a, "app/flag"))
        .body("on")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let index = index_header(&r);
    assert!(index > 0);
    // Read-your-writes on A.
    let r = http().get(kv_url(a, "app/flag")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(index_header(&r), index);
    assert_eq!(r.text().await.unwrap(), "on");
    eventually(10, "the entry reaches B", || async {
        let r = http().get(kv_url(b, "app/flag")).send().await.unwrap();
        r.status() == 200 && index_header(&r) == index && r.text().await.unwrap() == "on"
    })
    .await;

    // Compare-and-set racing through both nodes on that index: one wins.
    for round in 0..3 {
        let r = http().get(kv_url(a, "app/flag")).send().await.unwrap();
        let at = index_header(&r);
        let put = |n: &ServerProcess, body: String| {
            let url = format!("{}?cas={at}", kv_url(n, "app/flag"));
            async move {
                http()
                    .put(url)
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            }
        };
        let (x, y) = tokio::join!(put(a, format!("a-{round}")), put(b, format!("b-{round}")));
        let codes = [x, y];
        assert_eq!(
            codes.iter().filter(|c| **c == 200).count(),
            1,
            "exactly one cas wins: {codes:?}"
        );
        assert!(codes.contains(&409), "the other is a conflict: {codes:?}");
        let winner = if x == 200 { "a" } else { "b" };
        for n in [a, b] {
            eventually(10, "both nodes hold the winner's value", || async {
                let r = http().get(kv_url(n, "app/flag")).send().await.unwrap();
                r.text().await.unwrap() == format!("{winner}-{round}")
            })
            .await;
        }
    }
    // cas=0 through B on a key A holds: refused; on a fresh key: made once.
    let r = http()
        .put(format!("{}?cas=0", kv_url(b, "app/flag")))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let (x, y) = tokio::join!(
        http()
            .put(format!("{}?cas=0", kv_url(a, "app/lock")))
            .body("a")
            .send(),
        http()
            .put(format!("{}?cas=0", kv_url(b, "app/lock")))
            .body("b")
            .send(),
    );
    let codes = [x.unwrap().status().as_u16(), y.unwrap().status().as_u16()];
    assert_eq!(
        codes.iter().filter(|c| **c == 200).count(),
        1,
        "one creation: {codes:?}"
    );
    // A removal through B reaches A.
    let r = http().delete(kv_url(b, "app/lock")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    eventually(10, "the removal reaches A", || async {
        http()
            .get(kv_url(a, "app/lock"))
            .send()
            .await
            .unwrap()
            .status()
            == 404
    })
    .await;
    let r = http().delete(kv_url(a, "app/lock")).send().await.unwrap();
    assert_eq!(r.status(), 404);

    // A service's strategy set through A is in effect on B.
    assert_eq!(register(a, "pay", "pay-1", "10.1.0.1", "1h").await, 200);
    let r = http()
        .put(format!("{}/v1/services/pay/config", a.base()))
        .json(&json!({"strategy": "sticky", "panic_threshold": 30}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually(10, "the service's settings reach B", || async {
        let r = http()
            .get(format!("{}/v1/services/pay/config", b.base()))
            .send()
            .await
            .unwrap();
        let body: Value = r.json().await.unwrap_or_default();
        body["strategy"] == "sticky" && body["configured"]["panic_threshold"] == 30
    })
    .await;

    // A check defined through A shows on B's instance.
    let r = http()
        .put(format!(
            "{}/v1/services/pay/instances/pay-1/checks/port",
            a.base()
        ))
        .json(&json!({"tcp": "127.0.0.1:9", "interval": "10s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let names = |n: &ServerProcess| {
        let url = format!("{}/v1/services/pay", n.base());
        async move {
            let body: Value = http().get(url).send().await.unwrap().json().await.unwrap();
            body["instances"][0]["checks"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect::<Vec<_>>()
        }
    };
    assert!(names(a).await.contains(&"port".to_string()));
    eventually(10, "the check's definition reaches B", || async {
        names(b).await.contains(&"port".to_string())
    })
    .await;
    // Removed through B: gone on A too; the instance stays.
    let r = http()
        .delete(format!(
            "{}/v1/services/pay/instances/pay-1/checks/port",
            b.base()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually(10, "the check's removal reaches A", || async {
        !names(a).await.contains(&"port".to_string())
    })
    .await;
    assert_eq!(
        a_records(a, "pay").await,
        BTreeSet::from(["10.1.0.1".to_string()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checks_deregister_critical_after_removal_is_made_once_by_the_expiry_leader() {
    if skip_without_etcd() {
        return;
    }
    let c = Nodes::start(3, "reap").await;
    eventually(15, "a node leads expiry", || async {
        expiry_leader(&c.nodes).is_some()
    })
    .await;
    // Nothing listens on the discard port of loopback: the check fails on
    // every node.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let r = http()
        .put(format!(
            "{}/v1/services/gone/instances/g1",
            c.nodes[1].base()
        ))
        .json(&json!({
            "address": "10.9.0.1", "port": 80, "ttl": "1h",
            "checks": [{ "name": "port", "tcp": closed.to_string(), "interval": "1s",
                         "deregister_critical_after": "2s" }]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    for n in &c.nodes {
        eventually(30, "the instance is removed on every node", || async {
            http()
                .get(format!("{}/v1/services/gone", n.base()))
                .send()
                .await
                .unwrap()
                .status()
                == 404
        })
        .await;
    }
    // Only the expiry leader made the removal (the others' drivers left it).
    let reaped_by: Vec<usize> = (0..c.nodes.len())
        .filter(|i| {
            c.nodes[*i]
                .log_text()
                .contains("removing an instance a check held critical")
        })
        .collect();
    assert_eq!(reaped_by.len(), 1, "one node removed it: {reaped_by:?}");
    assert_eq!(Some(reaped_by[0]), expiry_leader(&c.nodes));
}

/// The start-up benchmark fills etcd without the API
/// (`store::etcd::fill`, examples/etcd_fill.rs): a node must read exactly
/// that back, and its proposer must find the keys where it writes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmarks_bulk_fill_is_read_back_by_a_node_and_written_over_through_it() {
    if skip_without_etcd() {
        return;
    }
    let cluster = EtcdCluster::start(1).await;
    let (n, services) = (200, 20);
    let names = registrations::service_keys(services);
    let items = (0..n).map(|i| {
        (
            names[i % services].clone(),
            registrations::id(i),
            registrations::spec(i, true, false),
        )
    });
    let endpoints: Vec<String> = cluster.endpoints().split(',').map(String::from).collect();
    // Several transactions of 64.
    let rev = maxine::store::etcd::fill::fill(&endpoints, "fill", items, 64)
        .await
        .unwrap();
    assert!(rev > 1, "written: revision {rev}");
    let dir = tempfile::tempdir().unwrap();
    let node = cluster.node("fill", dir.path(), &[]).await;
    eventually(20, "the node is ready", || async {
        http()
            .get(format!("{}/v1/ready", node.base()))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let mut listed = 0;
    for s in 0..services {
        let r = http()
            .get(format!("{}/v1/services/s{s}", node.base()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "service s{s}");
        let body: Value = r.json().await.unwrap();
        for inst in body["instances"].as_array().unwrap() {
            let i: usize = inst["id"].as_str().unwrap()[1..].parse().unwrap();
            assert_eq!(i % services, s, "{inst}");
            assert_eq!(inst["address"], registrations::ip(i), "{inst}");
            assert_eq!(inst["port"], 8080, "{inst}");
            let version = if i.is_multiple_of(10) {
                "2.2.0"
            } else {
                "2.1.0"
            };
            assert_eq!(inst["version"], version, "{inst}");
            assert_eq!(inst["tags"], json!(["bench"]), "{inst}");
            assert_eq!(inst["metadata"]["zone"], format!("z{}", i % 4), "{inst}");
            assert_eq!(inst["health"], "passing", "{inst}");
            listed += 1;
        }
    }
    assert_eq!(listed, n, "every filled instance is listed");
    assert_eq!(
        node.resolve_a("i199.s19.dc1.maxine.").await,
        vec![registrations::ip(199)]
    );
    // The proposer's compares and writes land on the filled keys: a
    // deregistration (compare: the key exists) and a new value.
    assert_eq!(deregister(&node, "s0", "i0").await, 200);
    assert_eq!(register(&node, "s1", "i1", "10.77.0.1", "1h").await, 200);
    let s0 = instance_health(&node, "s0").await;
    assert!(
        !s0.contains_key("i0") && s0.len() == n / services - 1,
        "{s0:?}"
    );
    assert_eq!(
        node.resolve_a("i1.s1.dc1.maxine.").await,
        vec!["10.77.0.1".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_with_and_without_conditions_in_one_batch_each_get_their_own_answer() {
    if skip_without_etcd() {
        return;
    }
    let c = Nodes::start(2, "mixed").await;
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    for i in 0..12 {
        assert_eq!(
            register(a, "old", &format!("o-{i}"), "10.3.0.1", "1h").await,
            200
        );
    }
    for i in 0..6 {
        let r = http()
            .put(kv_url(a, &format!("taken/{i}")))
            .body("v1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // At once through one node, so that they share transactions:
    // registrations (no condition), deregistrations (the instance must
    // exist), creations of new keys (cas=0) and writes at a stale index;
    // 48 connections, within the server's 64 per client address.
    let base = a.base().to_string();
    let mut all = tokio::task::JoinSet::new();
    for i in 0..24 {
        let url = format!("{base}/v1/services/new/instances/n-{i}");
        all.spawn(async move {
            let body = json!({"address": format!("10.4.0.{i}"), "port": 80, "ttl": "1h"});
            let r = http().put(url).json(&body).send().await.unwrap();
            (format!("register n-{i}"), r.status().as_u16(), 200)
        });
    }
    for i in 0..12 {
        let url = format!("{base}/v1/services/old/instances/o-{i}");
        all.spawn(async move {
            let r = http().delete(url).send().await.unwrap();
            (format!("deregister o-{i}"), r.status().as_u16(), 200)
        });
    }
    for i in 0..6 {
        let fresh = format!("{base}/v1/kv/fresh/{i}?cas=0");
        all.spawn(async move {
            let r = http().put(fresh).body("new").send().await.unwrap();
            (format!("create fresh/{i}"), r.status().as_u16(), 200)
        });
        let stale = format!("{base}/v1/kv/taken/{i}?cas=1");
        all.spawn(async move {
            let r = http().put(stale).body("lost").send().await.unwrap();
            (format!("stale write taken/{i}"), r.status().as_u16(), 409)
        });
    }
    while let Some(done) = all.join_next().await {
        let (what, got, want) = done.unwrap();
        assert_eq!(got, want, "{what}");
    }
    // What each answer said is what both nodes hold.
    for n in [a, b] {
        eventually(
            10,
            "every new instance and no old one is listed",
            || async {
                let l = listing(n).await;
                l.get("new").map_or(0, |v| v.len()) == 24 && !l.contains_key("old")
            },
        )
        .await;
        for i in 0..6 {
            let fresh = http()
                .get(kv_url(n, &format!("fresh/{i}")))
                .send()
                .await
                .unwrap();
            assert_eq!(fresh.text().await.unwrap(), "new");
            let taken = http()
                .get(kv_url(n, &format!("taken/{i}")))
                .send()
                .await
                .unwrap();
            assert_eq!(
                taken.text().await.unwrap(),
                "v1",
                "a refused write changed nothing"
            );
        }
    }
    c.assert_same_listings().await;
}
