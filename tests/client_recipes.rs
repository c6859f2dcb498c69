//! The recipes of docs/clients.md, each run with the real client from
//! Debian's packages against a real Maxine: a registration and then a
//! deregistration must reach the client within 30 s, and the test prints how
//! long each took. The client's configuration is the recipe (read from the
//! document) plus what running it in a test needs; it lives in a temporary
//! directory, the client listens on free loopback ports, and it is killed at
//! the end, also when the test fails (its log is printed then).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use common::TestServer;
use common::client::{ClientProcess, addresses, program, recipe};
use common::netns::{Netns, is_root};
use common::process::free_port;
use serde_json::json;

/// Registers `service/id` and waits until the client `sees` it.
async fn appears<F, Fut>(
    maxine: &TestServer,
    client: &ClientProcess,
    (service, id): (&str, &str),
    body: serde_json::Value,
    mut sees: F,
) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    assert!(
        !sees().await,
        "{}: sees {service}/{id} already",
        client.name
    );
    maxine.register(service, id, body).await;
    client
        .wait_for(&format!("registration of {service}/{id}"), sees)
        .await
}

/// Deregisters `service/id` and waits until the client no longer `sees` it.
async fn disappears<F, Fut>(
    maxine: &TestServer,
    client: &ClientProcess,
    (service, id): (&str, &str),
    mut sees: F,
) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let r = maxine
        .http
        .delete(format!(
            "{}/v1/services/{service}/instances/{id}",
            maxine.http_base()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "deregister {service}/{id}");
    client
        .wait_for(&format!("deregistration of {service}/{id}"), || {
            let f = sees();
            async move { !f.await }
        })
        .await
}

/// [`appears`] and then [`disappears`]; prints both times.
async fn round_trip<F, Fut>(
    maxine: &TestServer,
    client: &ClientProcess,
    instance: (&str, &str),
    body: serde_json::Value,
    mut sees: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let added = appears(maxine, client, instance, body, &mut sees).await;
    let removed = disappears(maxine, client, instance, sees).await;
    println!(
        "{}: registration visible after {added:.1?}, deregistration after {removed:.1?}",
        client.name
    );
}

/// The recipe `name` with Maxine's port in place of the documented 8600
/// (written `127.0.0.1<sep>8600`).
fn recipe_for(name: &str, sep: char, maxine: SocketAddr) -> String {
    let text = recipe(name);
    let documented = format!("127.0.0.1{sep}8600");
    assert!(
        text.contains(&documented),
        "{name} recipe names {documented}"
    );
    text.replace(&documented, &format!("127.0.0.1{sep}{}", maxine.port()))
}

/// A resolver (unbound, dnsmasq) at `at`: waits until it answers for the
/// zone through Maxine (the zone's own `ns.maxine.` glue), then checks that
/// `payments.maxine` goes from no address to the registered one and back.
async fn resolver_round_trip(maxine: &TestServer, client: &ClientProcess, at: SocketAddr) {
    let glue: IpAddr = "127.0.0.1".parse().unwrap();
    client
        .wait_for("an answer for ns.maxine. through Maxine", || async move {
            addresses(at, "ns.maxine")
                .await
                .is_some_and(|a| a == [glue])
        })
        .await;
    // Asked before the registration: the NXDOMAIN is in the client's
    // negative cache, the worst case for the registration's time.
    let addr: IpAddr = "127.0.0.21".parse().unwrap();
    round_trip(
        maxine,
        client,
        ("payments", "web-1"),
        json!({"address": addr.to_string(), "port": 8080, "ttl": "10m"}),
        || async move {
            addresses(at, "payments.maxine")
                .await
                .is_some_and(|a| a.contains(&addr))
        },
    )
    .await;
}

#[tokio::test]
async fn unbound_stub_zone_sees_registration_and_deregistration() {
    let bin = program("unbound", "unbound");
    let maxine = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("unbound.conf");
    std::fs::write(
        &conf,
        format!(
            r#"server:
    interface: 127.0.0.1
    port: {port}
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{dir}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 1
    num-threads: 1
    do-ip6: no
    access-control: 127.0.0.0/8 allow
    # DNSSEC validation on, as in Debian's default configuration: the DS of
    # the root zone's key (KSK-2017), so that the recipe's domain-insecure
    # is what lets Maxine's unsigned answers through.
    trust-anchor: ". DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D"
remote-control:
    control-enable: no

{recipe}"#,
            dir = dir.path().display(),
            recipe = recipe_for("unbound", '@', maxine.dns_addr),
        ),
    )
    .unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("-c").arg(&conf);
    let unbound = ClientProcess::spawn("unbound", cmd, dir);
    resolver_round_trip(&maxine, &unbound, ([127, 0, 0, 1], port).into()).await;
}

#[tokio::test]
async fn dnsmasq_server_line_sees_registration_and_deregistration() {
    let bin = program("dnsmasq", "dnsmasq-base");
    let maxine = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("dnsmasq.conf");
    std::fs::write(
        &conf,
        format!(
            "port={port}
listen-address=127.0.0.1
bind-interfaces
# Neither /etc/resolv.conf nor /etc/hosts: only the recipe's server.
no-resolv
no-hosts
pid-file=
log-facility=-
log-queries
# Rebinding protection on, so that the recipe's rebind-domain-ok is what
# lets Maxine's loopback addresses through.
stop-dns-rebind

{}",
            recipe_for("dnsmasq", '#', maxine.dns_addr)
        ),
    )
    .unwrap();
    let mut cmd = Command::new(bin);
    // (dnsmasq takes an option's value only after "=".)
    cmd.arg("--keep-in-foreground")
        .arg(format!("--conf-file={}", conf.display()));
    let dnsmasq = ClientProcess::spawn("dnsmasq", cmd, dir);
    resolver_round_trip(&maxine, &dnsmasq, ([127, 0, 0, 1], port).into()).await;
}

/// HAProxy's servers of `backend` as `show servers state` lists them:
/// (name, address, port) of each; `None` while the socket does not answer.
async fn haproxy_servers(socket: &std::path::Path, backend: &str) -> Option<Vec<[String; 3]>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(socket).await.ok()?;
    s.write_all(format!("show servers state {backend}\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut out))
        .await
        .ok()?
        .ok()?;
    // Format 1: "be_id be_name srv_id srv_name srv_addr ... srv_fqdn srv_port ..."
    Some(
        out.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f.len() > 18 && f[1] == backend)
            .map(|f| [f[3].to_string(), f[4].to_string(), f[18].to_string()])
            .collect(),
    )
}

#[tokio::test]
async fn haproxy_server_template_fills_and_drains_from_srv() {
    let bin = program("haproxy", "haproxy");
    let maxine = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let conf = dir.path().join("haproxy.cfg");
    std::fs::write(
        &conf,
        format!(
            "global
    stats socket {socket} mode 600 level admin
    log stderr format raw local0 info

defaults
    mode tcp
    log global
    timeout connect 1s
    timeout client 10s
    timeout server 10s

{recipe}",
            socket = socket.display(),
            recipe = recipe_for("haproxy", ':', maxine.dns_addr),
        ),
    )
    .unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("-db").arg("-f").arg(&conf);
    let haproxy = ClientProcess::spawn("haproxy", cmd, dir);
    haproxy
        .wait_for("the stats socket answers", || {
            let socket = socket.clone();
            async move { haproxy_servers(&socket, "payments").await.is_some() }
        })
        .await;
    let state = haproxy_servers(&socket, "payments").await.unwrap();
    assert_eq!(state.len(), 8, "the template's 8 slots: {state:?}");

    // The SRV port, not the template's: instances may use ports of their own.
    let want = ["web1".to_string(), "127.0.0.22".into(), "8081".into()];
    round_trip(
        &maxine,
        &haproxy,
        ("payments", "web-1"),
        json!({"address": "127.0.0.22", "port": 8081, "ttl": "10m"}),
        || {
            let (socket, want) = (socket.clone(), want.clone());
            async move {
                haproxy_servers(&socket, "payments")
                    .await
                    .is_some_and(|s| s.contains(&want))
            }
        },
    )
    .await;
    // Drained: no slot holds an address any more.
    let state = haproxy_servers(&socket, "payments").await.unwrap();
    assert!(state.iter().all(|s| s[1] == "-"), "{state:?}");
}

/// Prometheus' active targets: (instance label, health) of each.
async fn prometheus_targets(
    http: &reqwest::Client,
    api: SocketAddr,
) -> Option<Vec<(String, String)>> {
    let r = http
        .get(format!("http://{api}/api/v1/targets?state=active"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    let body: serde_json::Value = r.json().await.ok()?;
    Some(
        body["data"]["activeTargets"]
            .as_array()?
            .iter()
            .map(|t| {
                (
                    t["labels"]["instance"].as_str().unwrap_or("").to_string(),
                    t["health"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect(),
    )
}

/// Prometheus asks the nameserver of /etc/resolv.conf on port 53, so this
/// test runs in a network namespace of its own: Maxine (in process) on its
/// 127.0.0.1:53, and Prometheus under `ip netns exec`, whose mount namespace
/// has a resolv.conf naming 127.0.0.1. The instance is Prometheus' own web
/// port: nothing outside the namespace is contacted, and the first scrape
/// shows that the SRV target's name resolves too.
#[test]
fn prometheus_dns_sd_discovers_and_drops_a_target() {
    if !is_root() {
        eprintln!("SKIPPED: the Prometheus test needs root for a network namespace");
        return;
    }
    let bin = program("prometheus", "prometheus");
    let ns = Netns::create("maxine-prom");
    ns.resolv_conf("nameserver 127.0.0.1\noptions attempts:2 timeout:1\n");
    // A thread of the test's own enters the namespace; the scope joins it
    // and passes its panic on, before `ns` is deleted.
    std::thread::scope(|scope| {
        scope.spawn(|| {
            ns.enter_this_thread();
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(prometheus_in(&ns, &bin));
        });
    });
}

async fn prometheus_in(ns: &Netns, bin: &std::path::Path) {
    let maxine = TestServer::start_with(|f| f.dns.addr = "127.0.0.1:53".into()).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let api: SocketAddr = ([127, 0, 0, 1], port).into();
    let conf = dir.path().join("prometheus.yml");
    std::fs::write(
        &conf,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n{}",
            recipe("prometheus")
        ),
    )
    .unwrap();
    let mut cmd = ns.exec(&[bin.to_str().unwrap()]);
    cmd.arg(format!("--config.file={}", conf.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={api}"))
        .arg("--log.level=debug");
    let prometheus = ClientProcess::spawn("prometheus", cmd, dir);
    let http = reqwest::Client::new();
    prometheus
        .wait_for("Prometheus answers its API", || {
            let http = http.clone();
            async move { prometheus_targets(&http, api).await.is_some() }
        })
        .await;

    let instance = format!("prom-1.payments-metrics.dc1.maxine:{port}");
    let has = |health: Option<&'static str>| {
        let (http, instance) = (http.clone(), instance.clone());
        async move {
            prometheus_targets(&http, api).await.is_some_and(|t| {
                t.iter()
                    .any(|(i, h)| *i == instance && health.is_none_or(|want| h == want))
            })
        }
    };
    // Discovered, then scraped (so its name resolved too), then dropped.
    let instance_id = ("payments-metrics", "prom-1");
    let added = appears(
        &maxine,
        &prometheus,
        instance_id,
        json!({"address": "127.0.0.1", "port": port, "ttl": "10m"}),
        || has(None),
    )
    .await;
    let scraped = prometheus
        .wait_for("a successful scrape of the target", || has(Some("up")))
        .await;
    let removed = disappears(&maxine, &prometheus, instance_id, || has(None)).await;
    println!(
        "prometheus: registration visible after {added:.1?} (then scraped after {scraped:.1?} more), \
         deregistration after {removed:.1?}"
    );
    maxine.stop().await;
}
