//! The `maxine` program as people run it: client subcommands against a real
//! server, and start-up refusals that explain themselves.

mod common;

use common::TestServer;

fn maxine() -> tokio::process::Command {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_maxine"))
}

async fn run(cmd: &mut tokio::process::Command) -> (bool, String, String) {
    let out = cmd.output().await.expect("maxine runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn register_services_lookup_and_deregister_from_the_command_line() {
    let s = TestServer::start().await;
    let api = s.http_base();
    let (ok, out, err) = run(maxine().args([
        "register",
        "payments",
        "web-1",
        "--address",
        "10.0.0.7",
        "--port",
        "8080",
        "--version",
        "2.1.0",
        "--tag",
        "blue",
        "--meta",
        "zone=a",
        "--ttl",
        "30s",
        "--api",
        &api,
    ]))
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("\"10.0.0.7\""), "{out}");

    let (ok, out, err) = run(maxine().args(["services", "--api", &api])).await;
    assert!(ok && out.contains("payments"), "{out}{err}");

    let (ok, out, err) = run(maxine().args([
        "lookup",
        "_payments._tcp.maxine",
        "SRV",
        "--tcp",
        "--dns",
        &s.dns_addr.to_string(),
    ]))
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("web-1.payments.dc1.maxine.") && out.contains("additional"),
        "{out}"
    );

    let (ok, _, err) = run(maxine().args(["deregister", "payments", "web-1", "--api", &api])).await;
    assert!(ok, "{err}");
    // Deregistering again fails with the server's message.
    let (ok, _, err) = run(maxine().args(["deregister", "payments", "web-1", "--api", &api])).await;
    assert!(!ok && err.contains("404"), "{err}");
    let (ok, _, err) = run(maxine().args([
        "lookup",
        "payments.maxine",
        "--dns",
        &s.dns_addr.to_string(),
    ]))
    .await;
    // The lookup itself fails (not its arguments): the name is gone.
    assert!(
        !ok && err.contains("payments.maxine. A:"),
        "no records any more: {err}"
    );
}

#[tokio::test]
async fn serve_refuses_plain_http_off_loopback_and_says_how_to_fix_it() {
    let (ok, _, err) = run(maxine().args([
        "serve",
        "--http-addr",
        "0.0.0.0:0",
        "--dns-addr",
        "127.0.0.1:0",
    ]))
    .await;
    assert!(!ok);
    assert!(
        err.contains("--insecure-http") && err.contains("--tls-cert"),
        "{err}"
    );
}

#[tokio::test]
async fn serve_names_an_unknown_config_key_and_an_unknown_variable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("maxine.toml");
    std::fs::write(&file, "[dns]\nadress = \"127.0.0.1:0\"\n").unwrap();
    let (ok, _, err) = run(maxine().args(["serve", "--config"]).arg(&file)).await;
    assert!(!ok && err.contains("adress"), "{err}");

    let (ok, _, err) = run(maxine().args(["serve"]).env("MAXINE_HTTP_ADRESS", "x")).await;
    assert!(!ok && err.contains("MAXINE_HTTP_ADRESS"), "{err}");
}

#[tokio::test]
async fn serve_help_documents_every_flag() {
    let (ok, out, _) = run(maxine().args(["serve", "--help"])).await;
    assert!(ok);
    for flag in [
        "--dns-addr",
        "--http-addr",
        "--data-dir",
        "--datacenter",
        "--domain",
        "--config",
        "--tls-cert",
        "--tls-key",
        "--insecure-http",
        "--log-format",
    ] {
        assert!(out.contains(flag), "{flag} missing from --help");
    }
    for env in ["MAXINE_DNS_ADDR", "MAXINE_HTTP_ADDR", "DATACENTER_ID"] {
        assert!(out.contains(env), "{env} missing from --help");
    }
}

#[tokio::test]
async fn serve_starts_with_defaults_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = maxine()
        .args([
            "serve",
            "--dns-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        // A failing assertion must not leave the server running.
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Wait for the "serving" log line, which is JSON.
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.contains("maxine is serving") {
                return l;
            }
        }
        panic!("exited without serving")
    })
    .await
    .expect("serving within 10 s");
    let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
    assert_eq!(v["fields"]["datacenter"], "dc1");
    assert!(dir.path().join("data").is_dir(), "data directory created");
    let pid = child.id().unwrap() as i32;
    // Transparent huge pages are off for the server (ADR 0004); kernels
    // before 6.x do not report it, and then there is nothing to check.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
        assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
    }
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}
