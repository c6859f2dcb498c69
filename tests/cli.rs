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
        !ok && err.contains("payments.maxine. A: NXDOMAIN"),
        "no records any more: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_and_watch_from_the_command_line() {
    let s = TestServer::start().await;
    let api = s.http_base();
    let (ok, out, err) =
        run(maxine().args(["kv", "put", "app/timeout", "30s", "--api", &api])).await;
    assert!(ok && out.contains("\"index\""), "{out}{err}");
    let (ok, out, err) = run(maxine().args(["kv", "get", "app/timeout", "--api", &api])).await;
    assert!(ok, "{err}");
    assert_eq!(out, "30s");
    let (ok, _, err) = run(maxine().args([
        "kv",
        "put",
        "app/timeout",
        "1m",
        "--cas",
        "0",
        "--api",
        &api,
    ]))
    .await;
    assert!(!ok && err.contains("409"), "{err}");
    let (ok, out, err) = run(maxine().args(["kv", "list", "app/", "--api", &api])).await;
    assert!(ok && out.contains("app/timeout"), "{out}{err}");
    let (ok, _, err) = run(maxine().args(["kv", "delete", "app/timeout", "--api", &api])).await;
    assert!(ok, "{err}");
    let (ok, _, err) = run(maxine().args(["kv", "get", "app/timeout", "--api", &api])).await;
    assert!(!ok && err.contains("404"), "{err}");

    // watch prints the snapshot, then a registration as it happens.
    let mut watch = maxine()
        .args(["watch", "payments", "--api", &api])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(watch.stdout.take().unwrap()));
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.contains(" snapshot "), "{first}");
    s.register(
        "payments",
        "w1",
        serde_json::json!({"address": "10.0.0.1", "port": 80}),
    )
    .await;
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        next.contains(" change ") && next.contains("\"w1\""),
        "{next}"
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
            "--drain-period",
            "0",
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
    // The addresses bound, not the port 0 asked for.
    for key in ["dns", "http"] {
        let addr = v["fields"][key].as_str().unwrap();
        let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
        assert!(addr.starts_with("127.0.0.1:") && port != 0, "{line}");
    }
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

fn audit_record(i: u64) -> maxine::audit::Record {
    maxine::audit::Record {
        time_ms: 1_714_564_800_000 + i,
        index: Some(i),
        actor: format!("token:acc-{i}"),
        client: Some("10.0.0.9".into()),
        action: "register".into(),
        resource: format!("service:payments/instance:web-{i}"),
        outcome: "ok".into(),
        detail: None,
    }
}

#[tokio::test]
async fn audit_verify_vouches_for_a_whole_log_and_names_the_first_broken_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    {
        // Small files: the chain crosses them.
        let log = maxine::audit::AuditLog::open(&dir, 700).unwrap();
        log.append((1..=5).map(audit_record).collect()).unwrap();
    }
    let files = maxine::audit::verify(&dir).unwrap().files;
    assert!(files >= 2, "{files}");
    let (ok, out, err) = run(maxine().args(["audit", "verify"]).arg(&dir)).await;
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!(
            "audit log verified: 5 records in {files} files, last seq 5"
        )),
        "{out}"
    );
    assert!(out.contains("head sha256 "), "{out}");

    // Record 2 is changed: record 3 no longer names its hash.
    let first = dir.join("audit-000001.jsonl");
    let text = std::fs::read_to_string(&first).unwrap();
    assert!(
        text.contains("token:acc-2"),
        "records 1 and 2 share the first file"
    );
    std::fs::write(&first, text.replace("token:acc-2", "token:acc-9")).unwrap();
    let out = maxine()
        .args(["audit", "verify"])
        .arg(&dir)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("record 3") && err.contains("prev"), "{err}");

    let (ok, _, err) = run(maxine()
        .args(["audit", "verify"])
        .arg(tmp.path().join("nope")))
    .await;
    assert!(!ok && err.contains("nope"), "{err}");
}

/// What the fake API below was asked.
#[derive(Clone, Debug)]
struct Asked {
    method: String,
    path: String,
    authorization: Option<String>,
    body: String,
}

type AskedLog = std::sync::Arc<std::sync::Mutex<Vec<Asked>>>;

/// An API that records each request and answers `token/self` with a 403,
/// everything else with a created token.
async fn fake_api() -> (String, AskedLog, tokio::task::JoinHandle<()>) {
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    async fn answer(
        axum::extract::State(asked): axum::extract::State<AskedLog>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: String,
    ) -> (StatusCode, axum::Json<serde_json::Value>) {
        asked.lock().unwrap().push(Asked {
            method: method.to_string(),
            path: uri.path().to_owned(),
            authorization: headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned()),
            body,
        });
        if uri.path() == "/v1/acl/token/self" {
            let body = serde_json::json!({"error": "this token may not read ACLs"});
            return (StatusCode::FORBIDDEN, axum::Json(body));
        }
        let body = serde_json::json!({"accessor": "acc-1", "secret": "created-secret"});
        (StatusCode::OK, axum::Json(body))
    }
    let asked = AskedLog::default();
    let app = axum::Router::new()
        .fallback(answer)
        .with_state(asked.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, asked, task)
}

/// The client, without whatever token the environment running the tests has.
fn client_cmd() -> tokio::process::Command {
    let mut cmd = maxine();
    cmd.env_remove("MAXINE_TOKEN")
        .env_remove("MAXINE_TOKEN_FILE");
    cmd
}

#[tokio::test]
async fn acl_subcommands_send_the_token_as_bearer_and_never_print_it() {
    let (api, asked, server) = fake_api().await;
    let last = || asked.lock().unwrap().last().cloned().unwrap();

    let (ok, out, err) = run(client_cmd()
        .args([
            "acl",
            "token",
            "create",
            "--description",
            "ci",
            "--policy",
            "ops",
            "--policy",
            "read",
            "--service",
            "payments",
            "--expires-in",
            "24h",
            "--max-instances",
            "3",
            "--api",
            &api,
        ])
        .env("MAXINE_TOKEN", "s3cret-from-env"))
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("created-secret"),
        "the answer is printed: {out}"
    );
    assert!(!out.contains("s3cret-from-env") && !err.contains("s3cret-from-env"));
    let a = last();
    assert_eq!(
        (a.method.as_str(), a.path.as_str()),
        ("POST", "/v1/acl/tokens")
    );
    assert_eq!(a.authorization.as_deref(), Some("Bearer s3cret-from-env"));
    let body: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "description": "ci",
            "policies": ["ops", "read"],
            "service": "payments",
            "expires_in": "24h",
            "max_instances": 3
        })
    );

    // A refusal: the server's message, a failing exit, still no secret.
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, "s3cret-from-file\n").unwrap();
    let (ok, out, err) = run(client_cmd()
        .args(["acl", "token", "self", "--api", &api, "--token-file"])
        .arg(&token_file))
    .await;
    assert!(!ok, "{out}");
    assert!(
        err.contains("403") && err.contains("this token may not read ACLs"),
        "{err}"
    );
    assert!(!out.contains("s3cret-from-file") && !err.contains("s3cret-from-file"));
    let a = last();
    assert_eq!(
        (a.method.as_str(), a.path.as_str()),
        ("GET", "/v1/acl/token/self")
    );
    assert_eq!(a.authorization.as_deref(), Some("Bearer s3cret-from-file"));

    let (ok, _, err) = run(client_cmd().args([
        "acl",
        "policy",
        "put",
        "ops",
        "--rules",
        r#"{"service": {"payments": "write"}}"#,
        "--description",
        "operators",
        "--token",
        "t1",
        "--api",
        &api,
    ]))
    .await;
    assert!(ok, "{err}");
    let a = last();
    assert_eq!(
        (a.method.as_str(), a.path.as_str()),
        ("PUT", "/v1/acl/policies/ops")
    );
    let body: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"description": "operators", "rules": {"service": {"payments": "write"}}})
    );

    // The older subcommands carry the token too.
    let (ok, _, err) = run(client_cmd().args(["services", "--token", "t2", "--api", &api])).await;
    assert!(ok, "{err}");
    let a = last();
    assert_eq!(
        (a.path.as_str(), a.authorization.as_deref()),
        ("/v1/services", Some("Bearer t2"))
    );

    // Without a token, no Authorization header at all.
    let (ok, _, err) =
        run(client_cmd().args(["acl", "token", "delete", "acc-1", "--api", &api])).await;
    assert!(ok, "{err}");
    let a = last();
    assert_eq!(
        (a.method.as_str(), a.path.as_str()),
        ("DELETE", "/v1/acl/tokens/acc-1")
    );
    assert_eq!(a.authorization, None);
    server.abort();
}

#[tokio::test]
async fn a_zone_dir_that_does_not_exist_stops_the_start_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let missing = tmp.path().join("no-such-zones");
    let (ok, _, err) = run(maxine()
        .args([
            "serve",
            "--dns-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .arg("--zone-dir")
        .arg(&missing)
        .arg("--data-dir")
        .arg(&data))
    .await;
    assert!(!ok, "{err}");
    assert!(
        err.contains(&missing.join("maxine.zone").display().to_string())
            && err.contains("does not exist")
            && !err.contains("Stack backtrace"),
        "{err}"
    );
    assert!(!data.exists(), "a refused start creates no data directory");
}

#[tokio::test]
async fn a_start_refused_for_its_settings_leaves_nothing_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Refused by validation.
    let (ok, _, err) = run(maxine()
        .args([
            "serve",
            "--dns-addr",
            "127.0.0.1:0",
            "--http-addr",
            "0.0.0.0:0",
        ])
        .arg("--data-dir")
        .arg(&data))
    .await;
    assert!(!ok && err.contains("--insecure-http"), "{err}");
    assert!(!data.exists());
    // Refused while building: a certificate file that is not there.
    let (ok, _, err) = run(maxine()
        .args([
            "serve",
            "--dns-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .arg("--tls-cert")
        .arg(tmp.path().join("nope.crt"))
        .arg("--tls-key")
        .arg(tmp.path().join("nope.key"))
        .arg("--data-dir")
        .arg(&data)
        .current_dir(env!("CARGO_MANIFEST_DIR")))
    .await;
    assert!(!ok && err.contains("nope.crt"), "{err}");
    assert!(
        !data.exists(),
        "nothing written before the TLS files were read"
    );
}

#[tokio::test]
async fn client_subcommands_say_where_they_looked_and_how_to_look_elsewhere() {
    // A port nothing listens on, TCP and UDP.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let api = format!("http://127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let (ok, _, err) = run(client_cmd().args(["services", "--api", &api])).await;
    assert!(!ok);
    assert!(
        err.contains(&api)
            && err.contains("connection refused")
            && err.contains("--api")
            && err.contains("MAXINE_API"),
        "{err}"
    );
    let dns = format!("127.0.0.1:{port}");
    let (ok, _, err) = run(maxine().args(["lookup", "payments.maxine", "--dns", &dns])).await;
    assert!(!ok);
    assert!(
        err.contains(&dns) && err.contains("--dns") && err.contains("MAXINE_DNS"),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "failed fast: {:?}",
        started.elapsed()
    );
    assert!(
        !err.contains("Stack backtrace") && !err.contains("{ "),
        "{err}"
    );
}

/// The API alone over TLS with `config`, as `App` serves it.
async fn tls_api(config: std::sync::Arc<rustls::ServerConfig>) -> std::net::SocketAddr {
    let registry = maxine::core::Registry::new(
        maxine::core::RegistryConfig {
            local_dc: maxine::core::Datacenter::new("dc1").unwrap(),
            reap_after: std::time::Duration::from_secs(60),
        },
        std::time::Instant::now(),
    );
    let state = maxine::http::HttpState::standalone(
        registry,
        "maxine",
        64 * 1024,
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(maxine::http::serve(
        listener,
        maxine::http::router(state),
        Some(config),
        maxine::app::http_limits(&maxine::config::Config::defaults().http),
        tokio_util::sync::CancellationToken::new(),
    ));
    addr
}

#[tokio::test]
async fn tls_self_signed_writes_a_ca_and_a_server_certificate_clients_trust() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tls");
    let (ok, out, err) = run(maxine().args(["tls", "self-signed"]).arg(&dir)).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("--tls-cert") && out.contains("--ca-cert"),
        "{out}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("tls.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the key is its owner's only");
    // Never over files already there.
    let (ok, _, err) = run(maxine().args(["tls", "self-signed"]).arg(&dir)).await;
    assert!(!ok && err.contains("exists already"), "{err}");

    let config = maxine::http::load_tls(&dir.join("tls.crt"), &dir.join("tls.key")).unwrap();
    let addr = tls_api(config).await;
    for host in ["localhost", "127.0.0.1"] {
        let api = format!("https://{host}:{}", addr.port());
        let (ok, out, err) = run(client_cmd()
            .args(["services", "--api", &api, "--ca-cert"])
            .arg(dir.join("ca.crt")))
        .await;
        assert!(ok && out.contains("services"), "{api}: {err}");
    }
    // Without the CA, the client says what to pass.
    let api = format!("https://localhost:{}", addr.port());
    let (ok, _, err) = run(client_cmd()
        .args(["services", "--api", &api])
        .env_remove("MAXINE_CA_CERT"))
    .await;
    assert!(!ok && err.contains("--ca-cert"), "{err}");

    // The CA is no server certificate: serve says so, and what to do.
    let (ok, _, err) = run(maxine()
        .args([
            "serve",
            "--dns-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .args(["--store", "memory"])
        .arg("--tls-cert")
        .arg(dir.join("ca.crt"))
        .arg("--tls-key")
        .arg(dir.join("tls.key"))
        .current_dir(env!("CARGO_MANIFEST_DIR")))
    .await;
    assert!(!ok, "{err}");
    assert!(
        err.contains("CA certificate") && err.contains("signed by that CA"),
        "{err}"
    );
}

#[tokio::test]
async fn a_server_presenting_a_ca_certificate_is_explained_not_named_by_its_rustls_error() {
    // A CA certificate served as the server's own (load_tls refuses that,
    // so the server here is built by hand, as a misconfigured proxy would be).
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&key).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let ca_file = tmp.path().join("ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let der = rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![ca.der().clone()], der)
    .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let addr = tls_api(std::sync::Arc::new(config)).await;
    let api = format!("https://localhost:{}", addr.port());
    let (ok, _, err) = run(client_cmd()
        .args(["services", "--api", &api, "--ca-cert"])
        .arg(&ca_file))
    .await;
    assert!(!ok);
    assert!(
        err.contains("presents a CA certificate") && err.contains("maxine tls self-signed"),
        "{err}"
    );
    assert!(!err.contains("CaUsedAsEndEntity"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intentions_from_the_command_line() {
    let s = TestServer::start().await;
    let api = s.http_base();
    let (ok, out, err) = run(maxine().args([
        "intention",
        "deny",
        "web",
        "db",
        "--description",
        "web goes through api",
        "--api",
        &api,
    ]))
    .await;
    assert!(ok && out.contains("\"deny\""), "{out}{err}");
    let (ok, out, err) = run(maxine().args(["intention", "get", "web", "db", "--api", &api])).await;
    assert!(ok && out.contains("web goes through api"), "{out}{err}");
    let (ok, out, err) = run(maxine().args(["intention", "allow", "*", "db", "--api", &api])).await;
    assert!(ok && out.contains("\"allow\""), "{out}{err}");
    let (ok, out, err) = run(maxine().args(["intention", "list", "--api", &api])).await;
    assert!(ok, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        list["intentions"].as_array().map(Vec::len),
        Some(2),
        "{out}"
    );
    let (ok, _, err) =
        run(maxine().args(["intention", "delete", "web", "db", "--api", &api])).await;
    assert!(ok, "{err}");
    let (ok, _, err) = run(maxine().args(["intention", "get", "web", "db", "--api", &api])).await;
    assert!(!ok && err.contains("404"), "{err}");
    let (ok, _, err) =
        run(maxine().args(["intention", "deny", "web", "no_such!", "--api", &api])).await;
    assert!(!ok && err.contains("400"), "{err}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blacklist_from_the_command_line() {
    let s = TestServer::start().await;
    let api = s.http_base();
    let instance = serde_json::json!({"address": "127.0.0.1", "port": 8080});
    s.register("web", "web-1", instance.clone()).await;
    s.register("web", "web-2", instance.clone()).await;
    let put_web_1 = || {
        s.http
            .put(format!("{api}/v1/services/web/instances/web-1"))
            .json(&instance)
            .send()
    };

    // Listing an instance deregisters it and refuses it from then on.
    let (ok, out, err) = run(maxine().args([
        "blacklist",
        "add",
        "instance:web/web-1",
        "--reason",
        "compromised host",
        "--ttl",
        "1h",
        "--api",
        &api,
    ]))
    .await;
    assert!(ok && out.contains("compromised host"), "{out}{err}");
    let listed = common::api::get(&s, "/v1/services/web").await.body;
    let ids: Vec<&str> = listed["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(ids, ["web-2"], "{listed}");
    assert_eq!(put_web_1().await.unwrap().status(), 403);

    let (ok, out, err) = run(maxine().args([
        "blacklist",
        "add",
        "cidr:192.0.2.0/24",
        "--reason",
        "scanner",
        "--api",
        &api,
    ]))
    .await;
    assert!(ok && out.contains("192.0.2.0/24"), "{out}{err}");
    let (ok, out, err) = run(maxine().args(["blacklist", "list", "--api", &api])).await;
    assert!(ok, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let kinds: Vec<&str> = list["blacklist"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(kinds.len(), 2, "{out}");
    assert!(
        kinds.contains(&"instance") && kinds.contains(&"cidr"),
        "{out}"
    );

    // Removed: the instance may register again.
    let (ok, _, err) =
        run(maxine().args(["blacklist", "remove", "instance:web/web-1", "--api", &api])).await;
    assert!(ok, "{err}");
    assert_eq!(put_web_1().await.unwrap().status(), 200);
    let (ok, _, err) =
        run(maxine().args(["blacklist", "remove", "cidr:192.0.2.0/24", "--api", &api])).await;
    assert!(ok, "{err}");
    let (ok, out, _) = run(maxine().args(["blacklist", "list", "--api", &api])).await;
    assert!(ok && out.contains("\"blacklist\": []"), "{out}");

    // Wrong targets are refused, by the CLI or by the server, in words.
    let (ok, _, err) = run(maxine().args([
        "blacklist",
        "add",
        "host:web",
        "--reason",
        "r",
        "--api",
        &api,
    ]))
    .await;
    assert!(!ok && err.contains("service:NAME"), "{err}");
    let (ok, _, err) = run(maxine().args([
        "blacklist",
        "add",
        "service:no_such!",
        "--reason",
        "r",
        "--api",
        &api,
    ]))
    .await;
    assert!(!ok && err.contains("400"), "{err}");
    let (ok, _, err) =
        run(maxine().args(["blacklist", "remove", "service:web", "--api", &api])).await;
    assert!(!ok && err.contains("404"), "{err}");
    s.stop().await;
}

/// `dig` asking Maxine for `db.maxine. A`, signed with `key`
/// (`algorithm:name:base64`): its whole output.
async fn dig_signed(s: &TestServer, key: &str) -> String {
    let out = tokio::process::Command::new("dig")
        .arg(format!("@{}", s.dns_addr.ip()))
        .args(["-p", &s.dns_addr.port().to_string()])
        .args([
            "+norec",
            "+tries=2",
            "+time=2",
            "db.maxine.",
            "A",
            "-y",
            key,
        ])
        .output()
        .await
        .expect("dig runs (apt-get install dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tsig_keys_from_the_command_line_sign_what_dig_asks() {
    let s = TestServer::start().await;
    let api = s.http_base();
    s.register(
        "db",
        "db-1",
        serde_json::json!({"address": "127.0.0.1", "port": 5432}),
    )
    .await;

    // Without a secret file: a new secret, shown once.
    let (ok, out, err) = run(maxine().args([
        "acl",
        "tsig-key",
        "put",
        "ops.key",
        "--accessor",
        "anonymous",
        "--api",
        &api,
    ]))
    .await;
    assert!(ok, "{err}");
    assert!(err.contains("not shown again"), "{err}");
    let made: serde_json::Value = serde_json::from_str(&out).unwrap();
    let secret = made["secret"].as_str().expect("the new secret").to_string();
    assert_eq!(made["name"], "ops.key", "{out}");
    let signed = dig_signed(&s, &format!("hmac-sha256:ops.key:{secret}")).await;
    assert!(signed.contains("status: NOERROR"), "{signed}");
    assert!(signed.contains("127.0.0.1"), "{signed}");
    assert!(signed.contains("TSIG PSEUDOSECTION"), "{signed}");
    assert!(!signed.contains("WARNING"), "{signed}");

    // From a file: the secret given, never printed.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ci.secret");
    let given = "Y2ktc2VjcmV0LWZvci10aGUtY2xpLXRlc3QtMDEyMzQ1Njc=";
    std::fs::write(&file, format!("{given}\n")).unwrap();
    let (ok, out, err) = run(maxine()
        .args([
            "acl",
            "tsig-key",
            "put",
            "ci.key",
            "--accessor",
            "anonymous",
            "--algorithm",
            "hmac-sha512",
            "--api",
            &api,
            "--secret-file",
        ])
        .arg(&file))
    .await;
    assert!(ok, "{err}");
    assert!(!out.contains(given) && !err.contains(given), "{out}{err}");
    let signed = dig_signed(&s, &format!("hmac-sha512:ci.key:{given}")).await;
    assert!(
        signed.contains("status: NOERROR") && !signed.contains("WARNING"),
        "{signed}"
    );

    let (ok, out, err) = run(maxine().args(["acl", "tsig-key", "list", "--api", &api])).await;
    assert!(ok, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["tsig_keys"].as_array().map(Vec::len), Some(2), "{out}");
    assert!(!out.contains(&secret) && !out.contains(given), "{out}");

    // Deleted: a query signed with it is BADKEY, and get says 404.
    let (ok, _, err) =
        run(maxine().args(["acl", "tsig-key", "delete", "ops.key", "--api", &api])).await;
    assert!(ok, "{err}");
    let gone = dig_signed(&s, &format!("hmac-sha256:ops.key:{secret}")).await;
    assert!(gone.contains("BADKEY"), "{gone}");
    let (ok, _, err) =
        run(maxine().args(["acl", "tsig-key", "get", "ops.key", "--api", &api])).await;
    assert!(!ok && err.contains("404"), "{err}");

    // A secret file that is empty is refused before anything is sent.
    std::fs::write(&file, "\n").unwrap();
    let (ok, _, err) = run(maxine()
        .args([
            "acl",
            "tsig-key",
            "put",
            "x.key",
            "--accessor",
            "anonymous",
            "--api",
            &api,
        ])
        .arg("--secret-file")
        .arg(&file))
    .await;
    assert!(!ok && err.contains("holds no secret"), "{err}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_client_networks_from_the_command_line() {
    let s = TestServer::start().await;
    let api = s.http_base();
    let (ok, out, err) = run(maxine().args([
        "acl",
        "dns-client",
        "put",
        "office",
        "--cidr",
        "10.1.0.0/16",
        "--cidr",
        "fd00::/8",
        "--api",
        &api,
    ]))
    .await;
    assert!(ok, "{err}");
    let put: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(put["name"], "office", "{out}");
    // What the CLI sent is what the API stores.
    let got = common::api::get(&s, "/v1/acl/dns-clients/office").await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.body["cidrs"],
        serde_json::json!(["10.1.0.0/16", "fd00::/8"]),
        "{:?}",
        got.body
    );
    let (ok, out, err) = run(maxine().args(["acl", "dns-client", "list", "--api", &api])).await;
    assert!(ok && out.contains("office"), "{out}{err}");
    let (ok, _, err) =
        run(maxine().args(["acl", "dns-client", "delete", "office", "--api", &api])).await;
    assert!(ok, "{err}");
    assert_eq!(
        common::api::get(&s, "/v1/acl/dns-clients/office")
            .await
            .status,
        404
    );
    // A network that is not one is the server's 400, in words.
    let (ok, _, err) = run(maxine().args([
        "acl",
        "dns-client",
        "put",
        "bad",
        "--cidr",
        "10.1.0.0/99",
        "--api",
        &api,
    ]))
    .await;
    assert!(!ok && err.contains("400"), "{err}");
    s.stop().await;
}
