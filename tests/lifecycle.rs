//! Maxine as a service manager and a load balancer see it: readiness told
//! to systemd (`READY=1` once it serves, `STOPPING=1` at SIGTERM), the drain
//! at SIGTERM, and the systemd unit in deploy/. Real processes throughout.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::process::ServerProcess;
use serde_json::json;

async fn status(client: &reqwest::Client, url: String) -> u16 {
    client
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn sigterm_drains_ready_answers_503_while_dns_and_the_api_keep_serving() {
    let dir = tempfile::tempdir().unwrap();
    let drain = Duration::from_secs(3);
    let p = ServerProcess::start_with_env(
        dir.path(),
        "maxine.log",
        &[],
        &[("MAXINE_DRAIN_PERIOD", "3s")],
    )
    .await;
    let client = reqwest::Client::new();
    let base = p.base();
    let register = |id: &'static str, ip: &'static str| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            client
                .put(format!("{base}/v1/services/payments/instances/{id}"))
                .json(&json!({"address": ip, "port": 80}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(register("web-1", "10.0.0.7").await, 200);

    let sent = Instant::now();
    p.terminate();
    while status(&client, format!("{base}/v1/ready")).await != 503 {
        assert!(
            sent.elapsed() < Duration::from_secs(1),
            "still ready after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Draining: out of rotation, but whoever still comes is served.
    assert_eq!(status(&client, format!("{base}/v1/health")).await, 200);
    assert_eq!(
        status(&client, format!("{base}/v1/services/payments")).await,
        200
    );
    assert_eq!(register("web-2", "10.0.0.8").await, 200, "writes too");
    let mut a = p.resolve_a("payments.maxine.").await;
    a.sort();
    assert_eq!(a, ["10.0.0.7", "10.0.0.8"]);
    assert_eq!(status(&client, format!("{base}/v1/ready")).await, 503);
    assert!(
        sent.elapsed() < drain,
        "the checks ran within the drain ({:?})",
        sent.elapsed()
    );

    let (http, log) = (p.http, p.log.clone());
    let exit = p.wait_exit().await;
    assert!(exit.success(), "{exit}");
    assert!(
        sent.elapsed() >= drain,
        "exited after {:?}, before the drain period",
        sent.elapsed()
    );
    assert!(
        std::net::TcpStream::connect(http).is_err(),
        "the listeners are closed"
    );
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.contains("draining"), "{log}");
    // Not a terminal: no colour codes in the log.
    assert!(!log.contains('\u{1b}'), "{log}");
}

/// One datagram from `sock` within `secs`, as text.
async fn next_notification(sock: &tokio::net::UnixDatagram, secs: u64) -> String {
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(secs), sock.recv(&mut buf))
        .await
        .expect("a notification in time")
        .unwrap();
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

#[tokio::test]
async fn systemd_is_told_ready_once_maxine_serves_and_stopping_at_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&path).unwrap();
    let data = dir.path().join("data");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_maxine"))
        .args([
            "serve",
            "--dns-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .args(["--store", "memory", "--drain-period", "0"])
        .arg("--data-dir")
        .arg(&data)
        .env("NOTIFY_SOCKET", &path)
        .env_remove("MAXINE_STORE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let ready = next_notification(&sock, 30).await;
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    // The status names the bound addresses (port 0 was asked for), and at
    // the moment READY=1 arrives both already answer.
    let after = |tag: &str| {
        ready
            .split(tag)
            .nth(1)
            .and_then(|t| t.split([',', '\n']).next())
            .unwrap_or_else(|| panic!("no {tag:?} in {ready:?}"))
            .trim()
            .to_string()
    };
    let (dns, api) = (after("DNS on "), after("API on "));
    assert!(!api.ends_with(":0") && !dns.ends_with(":0"), "{ready}");
    let client = reqwest::Client::new();
    assert_eq!(status(&client, format!("http://{api}/v1/ready")).await, 200);
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let q = common::query("maxine.", hickory_proto::rr::RecordType::SOA, None);
    udp.send_to(&q, dns.as_str()).await.unwrap();
    let mut buf = [0u8; 512];
    tokio::time::timeout(Duration::from_secs(2), udp.recv(&mut buf))
        .await
        .expect("DNS answers once READY=1 was sent")
        .unwrap();

    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let stopping = next_notification(&sock, 10).await;
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping}");
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(exit.success(), "{exit}");
    assert!(
        !data.exists(),
        "the memory store keeps nothing, so no data directory is made"
    );
}

/// `deploy/maxine.service`, with ExecStart pointing at the binary under
/// test, as `systemd-analyze verify` judges it: no error and no warning
/// about the unit. Skipped, saying so, where systemd is not installed.
#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = include_str!("../deploy/maxine.service");
    for line in ["Type=notify", "DynamicUser=yes", "LoadCredential=tls.key:"] {
        assert!(unit.lines().any(|l| l.starts_with(line)), "no {line}");
    }
    if std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("skipped: systemd-analyze is not installed (Debian: apt-get install systemd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("maxine.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/maxine", env!("CARGO_BIN_EXE_maxine")),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let about_the_unit: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("maxine.service"))
        .collect();
    assert!(
        out.status.success() && about_the_unit.is_empty(),
        "systemd-analyze verify: {}\n{err}",
        out.status
    );
}
