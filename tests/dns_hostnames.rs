//! Instances registered by host name (the Maxine-compatible API), resolved
//! by Maxine itself and answered with addresses: names from a hosts file,
//! and names served by a second Maxine on loopback whose answers change
//! under the test. Nothing leaves the machine: the resolver only asks
//! loopback servers. Answers are checked with hickory-resolver and raw
//! queries against Maxine's DNS port.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::TestServer;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use maxine::config::{ConfigFile, DurationValue};
use serde_json::{Value, json};

fn secs(s: u64) -> DurationValue {
    DurationValue(Duration::from_secs(s))
}

/// A resolv.conf that gives up quickly: the test's name servers come from
/// `resolve.nameservers`.
fn resolv_conf(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("resolv.conf");
    std::fs::write(
        &path,
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    )
    .unwrap();
    path
}

/// Registers `node` of `service` by host name, as a Maxine SDK does.
async fn register_host(s: &TestServer, service: &str, node: &str, host: &str, port: u16) {
    let r = s
        .http
        .post(format!("{}/api/maxine/serviceops/register", s.http_base()))
        .json(&json!({
            "hostName": host, "nodeName": node, "serviceName": service,
            "port": port, "timeOut": 600,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// The instance views of `service`, by id.
async fn listing(s: &TestServer, service: &str) -> Vec<(String, Value)> {
    let body: Value = s
        .http
        .get(format!("{}/v1/services/{service}", s.http_base()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["id"].as_str().unwrap().to_string(), i.clone()))
        .collect()
}

async fn resolution(s: &TestServer, service: &str, id: &str) -> Value {
    let all = listing(s, service).await;
    let (_, view) = all.iter().find(|(i, _)| i == id).expect("listed");
    view["resolution"].clone()
}

/// The data of the answer records of `name` `rtype`, as text, sorted.
async fn answers(s: &TestServer, name: &str, rtype: RecordType) -> BTreeSet<String> {
    let m = s.ask(name, rtype).await;
    m.answers.iter().map(|r| r.data.to_string()).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Polls `check` until it returns true, for at most `limit`; returns how
/// long it took. No fixed sleep: a condition met at once returns at once.
async fn until<F, Fut>(what: &str, limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

fn additional(m: &Message) -> BTreeSet<String> {
    m.additionals.iter().map(|r| r.to_string()).collect()
}

#[tokio::test]
async fn names_from_a_hosts_file_are_answered_under_the_service_and_instance_names() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        "10.20.0.2 web-1.hosts.test\n10.20.0.1 web-1.hosts.test\nfd00::20 web-1.hosts.test\n\
         10.20.0.9 db.hosts.test\n",
    )
    .unwrap();
    let conf = resolv_conf(dir.path());
    let hosts_file = hosts.clone();
    let s = TestServer::start_with(move |f: &mut ConfigFile| {
        f.resolve.hosts_file = hosts_file;
        f.resolve.resolv_conf = conf;
        f.resolve.min_ttl = secs(1);
        // Hosts-file answers are kept as long as max_ttl allows.
        f.resolve.max_ttl = secs(2);
    })
    .await;
    register_host(&s, "orders", "web-1", "web-1.hosts.test", 8080).await;
    register_host(&s, "orders", "web-2", "db.hosts.test", 8081).await;
    s.register(
        "orders",
        "web-3",
        json!({"address": "10.20.0.50", "port": 8082}),
    )
    .await;

    let all_v4 = set(&["10.20.0.1", "10.20.0.2", "10.20.0.9", "10.20.0.50"]);
    until(
        "every address in the A answer",
        Duration::from_secs(15),
        || async { answers(&s, "orders.maxine.", RecordType::A).await == all_v4 },
    )
    .await;
    assert_eq!(
        answers(&s, "orders.maxine.", RecordType::AAAA).await,
        set(&["fd00::20"])
    );

    // SRV targets are Maxine's instance names, with every resolved address as glue.
    let r = s.resolver(false);
    let srv = r
        .lookup("_orders._tcp.maxine.", RecordType::SRV)
        .await
        .expect("srv");
    let targets: BTreeSet<String> = srv.answers().iter().map(|r| r.data.to_string()).collect();
    assert_eq!(
        targets,
        set(&[
            "1 1 8080 web-1.orders.dc1.maxine.",
            "1 1 8081 web-2.orders.dc1.maxine.",
            "1 1 8082 web-3.orders.dc1.maxine.",
        ])
    );
    let glue: BTreeSet<String> = srv.additionals().iter().map(|r| r.to_string()).collect();
    assert_eq!(
        glue,
        set(&[
            "web-1.orders.dc1.maxine. 5 IN A 10.20.0.1",
            "web-1.orders.dc1.maxine. 5 IN A 10.20.0.2",
            "web-1.orders.dc1.maxine. 5 IN AAAA fd00::20",
            "web-2.orders.dc1.maxine. 5 IN A 10.20.0.9",
            "web-3.orders.dc1.maxine. 5 IN A 10.20.0.50",
        ])
    );
    // The instance name answers A and AAAA itself.
    let ips: BTreeSet<IpAddr> = r
        .lookup_ip("web-1.orders.dc1.maxine.")
        .await
        .expect("instance name")
        .iter()
        .collect();
    let want: BTreeSet<IpAddr> = ["10.20.0.1", "10.20.0.2", "fd00::20"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(ips, want);
    let any = s.ask("web-1.orders.dc1.maxine.", RecordType::ANY).await;
    assert_eq!(any.answers.len(), 2, "one RRset for ANY: the A records");

    // The listing says what the name resolved to.
    let res = resolution(&s, "orders", "web-1").await;
    assert_eq!(res["state"], "resolved", "{res}");
    assert_eq!(
        res["addresses"],
        json!(["10.20.0.1", "10.20.0.2", "fd00::20"])
    );
    assert!(res["since"].as_str().unwrap().ends_with('Z'), "{res}");
    assert!(
        resolution(&s, "orders", "web-3").await.is_null(),
        "IP instances have no resolution"
    );

    // An edit of the hosts file shows at the next resolution (max_ttl).
    std::fs::write(
        &hosts,
        "10.20.0.2 web-1.hosts.test\n10.20.0.1 web-1.hosts.test\nfd00::20 web-1.hosts.test\n\
         10.20.0.100 db.hosts.test\n",
    )
    .unwrap();
    until("the edited hosts file", Duration::from_secs(15), || async {
        answers(&s, "web-2.orders.dc1.maxine.", RecordType::A).await == set(&["10.20.0.100"])
    })
    .await;
    s.stop().await;
}

#[tokio::test]
async fn upstream_changes_show_after_their_ttl_and_unresolvable_names_are_reported() {
    // The upstream: another Maxine, whose records have a 1 s TTL.
    let up = TestServer::start_with(|f: &mut ConfigFile| {
        f.domain = "upstream.test".into();
        // The built-in zone: the project's zones/ has none for this domain.
        f.dns.zone_dir = None;
        f.dns.ttl = secs(1);
        f.dns.negative_ttl = Some(secs(1));
    })
    .await;
    up.register("db", "db-1", json!({"address": "10.30.0.1", "port": 5432}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let conf = resolv_conf(dir.path());
    let upstream = up.dns_addr.to_string();
    let s = TestServer::start_with(move |f: &mut ConfigFile| {
        f.resolve.nameservers = vec![upstream];
        f.resolve.resolv_conf = conf;
        f.resolve.hosts_file = "".into();
        f.resolve.min_ttl = secs(1);
    })
    .await;
    register_host(&s, "orders", "web-1", "db.upstream.test", 8080).await;
    register_host(&s, "orders", "web-2", "nothing.upstream.test", 8081).await;

    until("the upstream address", Duration::from_secs(15), || async {
        answers(&s, "orders.maxine.", RecordType::A).await == set(&["10.30.0.1"])
    })
    .await;
    // The name that does not resolve is reported, and in no answer.
    until(
        "web-2 reported unresolved",
        Duration::from_secs(15),
        || async { resolution(&s, "orders", "web-2").await["state"] == "unresolved" },
    )
    .await;
    let res = resolution(&s, "orders", "web-2").await;
    assert!(res["error"].as_str().unwrap().contains("NXDOMAIN"), "{res}");
    let srv = s.ask("_orders._tcp.maxine.", RecordType::SRV).await;
    let targets: BTreeSet<String> = srv.answers.iter().map(|r| r.data.to_string()).collect();
    assert_eq!(targets, set(&["1 1 8080 web-1.orders.dc1.maxine."]));
    assert_eq!(
        additional(&srv),
        set(&["web-1.orders.dc1.maxine. 5 IN A 10.30.0.1"])
    );
    let web2 = s.ask("web-2.orders.dc1.maxine.", RecordType::A).await;
    assert_eq!(
        (web2.metadata.response_code, web2.answers.len()),
        (ResponseCode::NoError, 0),
        "the instance name exists, without data"
    );

    // The upstream moves the address: Maxine answers the new one after
    // the old answer's TTL (1 s, refreshed at 90%), not after a restart.
    up.register("db", "db-1", json!({"address": "10.30.0.2", "port": 5432}))
        .await;
    let took = until("the moved address", Duration::from_secs(15), || async {
        answers(&s, "orders.maxine.", RecordType::A).await == set(&["10.30.0.2"])
    })
    .await;
    assert!(took < Duration::from_secs(10), "{took:?}");
    let r = s.resolver(true);
    let ips: Vec<IpAddr> = r
        .lookup_ip("web-1.orders.dc1.maxine.")
        .await
        .expect("instance name")
        .iter()
        .collect();
    assert_eq!(ips, ["10.30.0.2".parse::<IpAddr>().unwrap()]);

    // The upstream name goes away: out of the answers, reported.
    let gone = up
        .http
        .delete(format!("{}/v1/services/db/instances/db-1", up.http_base()))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 200);
    until("no address left", Duration::from_secs(15), || async {
        answers(&s, "orders.maxine.", RecordType::A)
            .await
            .is_empty()
    })
    .await;
    let a = s.ask("orders.maxine.", RecordType::A).await;
    assert_eq!(a.metadata.response_code, ResponseCode::NoError, "NODATA");
    assert!(
        s.ask("_orders._tcp.maxine.", RecordType::SRV)
            .await
            .answers
            .is_empty()
    );
    let res = resolution(&s, "orders", "web-1").await;
    assert_eq!(res["state"], "unresolved", "{res}");
    s.stop().await;
    up.stop().await;
}
