//! HTTPS: certificates loaded with `load_tls`, HTTP/2 negotiated by ALPN,
//! HTTP/1.1 still served, failed handshakes that leave the server running,
//! and clear errors for unusable certificate files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use maxine::app::{App, Listeners};
use maxine::config::{Config, ConfigFile};
use maxine::core::{Datacenter, Registry, RegistryConfig};
use maxine::http::{HttpState, load_tls, router, serve};
use reqwest::Version;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// A self-signed certificate for `localhost` and its key, written as PEM files.
struct Pki {
    dir: tempfile::TempDir,
    cert_pem: String,
}

impl Pki {
    fn new() -> Self {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert_pem = ck.cert.pem();
        std::fs::write(dir.path().join("cert.pem"), &cert_pem).unwrap();
        std::fs::write(dir.path().join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
        Self { dir, cert_pem }
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A client that trusts this certificate and reaches `localhost` at `addr`.
    fn client(&self, addr: SocketAddr, http1_only: bool) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(self.cert_pem.as_bytes()).unwrap())
            .resolve("localhost", addr);
        if http1_only {
            b = b.http1_only();
        }
        b.build().unwrap()
    }
}

/// The router on a TLS listener, as `App` runs it.
struct TlsServer {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start_tls(pki: &Pki) -> TlsServer {
    let registry = Registry::new(
        RegistryConfig {
            local_dc: Datacenter::new("dc1").unwrap(),
            reap_after: Duration::from_secs(60),
        },
        Instant::now(),
    );
    let state = HttpState::standalone(
        registry,
        "maxine",
        64 * 1024,
        Arc::new(AtomicBool::new(true)),
    );
    let tls = load_tls(&pki.cert(), &pki.key()).expect("valid TLS material");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(
        listener,
        router(state),
        Some(tls),
        maxine::app::http_limits(&maxine::config::Config::defaults().http),
        shutdown.clone(),
    ));
    TlsServer {
        addr,
        shutdown,
        task,
    }
}

fn https(addr: SocketAddr, path: &str) -> String {
    format!("https://localhost:{}{path}", addr.port())
}

#[tokio::test]
async fn https_negotiates_http2_by_alpn() {
    let pki = Pki::new();
    let server = start_tls(&pki).await;
    let resp = pki
        .client(server.addr, false)
        .get(https(server.addr, "/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), Version::HTTP_2, "h2 chosen by ALPN");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap(),
        json!({"status": "ok"})
    );
}

#[tokio::test]
async fn https_serves_http1_clients_too() {
    let pki = Pki::new();
    let server = start_tls(&pki).await;
    let resp = pki
        .client(server.addr, true)
        .get(https(server.addr, "/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), Version::HTTP_11);
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn registering_over_https_works_end_to_end() {
    let pki = Pki::new();
    let server = start_tls(&pki).await;
    let client = pki.client(server.addr, false);
    let resp = client
        .put(https(server.addr, "/v1/services/api/instances/a1"))
        .json(&json!({"address": "10.0.0.1", "port": 443}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-maxine-index"));
    let resp = client
        .get(https(server.addr, "/v1/services/api"))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["instances"][0]["id"], "a1");
}

#[tokio::test]
async fn failed_handshakes_do_not_stop_the_server() {
    let pki = Pki::new();
    let server = start_tls(&pki).await;

    // Plain HTTP on the TLS port.
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(
        !buf.starts_with(b"HTTP/"),
        "plain HTTP is not served on the TLS port: {:?}",
        String::from_utf8_lossy(&buf)
    );

    // A client that does not trust the certificate.
    let untrusting = reqwest::Client::builder()
        .use_rustls_tls()
        .resolve("localhost", server.addr)
        .build()
        .unwrap();
    // Refused for the certificate, not for some other reason (a server
    // that is gone would fail this request too).
    let err = untrusting
        .get(https(server.addr, "/v1/health"))
        .send()
        .await
        .expect_err("an untrusted certificate is not accepted");
    let chain = format!("{err:?}");
    assert!(
        chain.contains("UnknownIssuer") || chain.contains("certificate"),
        "{chain}"
    );

    // A client that hangs up in the middle of the handshake.
    drop(tokio::net::TcpStream::connect(server.addr).await.unwrap());

    let resp = pki
        .client(server.addr, false)
        .get(https(server.addr, "/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "still serving");
    assert!(!server.task.is_finished());
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_finishes_its_handshake_is_dropped() {
    let pki = Pki::new();
    let server = start_tls(&pki).await;
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let start = tokio::time::Instant::now();
    let mut buf = [0u8; 1];
    // The paused clock jumps to the server's handshake timeout, well before 60 s.
    let n = tokio::time::timeout(Duration::from_secs(60), silent.read(&mut buf))
        .await
        .expect("the server hung up on the silent client")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(60),
        "dropped by the handshake timeout, after {waited:?}"
    );
    assert!(!server.task.is_finished(), "still serving");
}

#[tokio::test]
async fn https_server_stops_on_shutdown() {
    let pki = Pki::new();
    let server = start_tls(&pki).await;
    let client = pki.client(server.addr, false);
    assert_eq!(
        client
            .get(https(server.addr, "/v1/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    server.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .expect("serve returns after shutdown, with an idle h2 connection open")
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(server.addr).await.is_err(),
        "no longer accepting"
    );
}

// ---- the app over HTTPS, and its errors ----

fn config(pki: Option<(&Path, &Path)>, dir: &Path) -> Config {
    let mut file = ConfigFile::default();
    file.dns.addr = "127.0.0.1:0".into();
    file.http.addr = "127.0.0.1:0".into();
    file.data_dir = dir.to_path_buf();
    file.dns.zone_dir = Some(concat!(env!("CARGO_MANIFEST_DIR"), "/zones").into());
    file.http.drain_period = maxine::config::DurationValue(Duration::ZERO);
    if let Some((cert, key)) = pki {
        file.http.tls_cert = Some(cert.to_path_buf());
        file.http.tls_key = Some(key.to_path_buf());
    }
    Config::validate(file).expect("valid config")
}

fn build(config: Config) -> anyhow::Result<App> {
    let listeners = Listeners::bind(config.dns.addr, config.http.addr)?;
    App::build(config, listeners)
}

#[tokio::test]
async fn the_app_serves_its_api_over_https_when_given_a_certificate() {
    let pki = Pki::new();
    let app = build(config(Some((&pki.cert(), &pki.key())), pki.dir.path())).expect("app builds");
    let addr = app.http_addr();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(app.run(shutdown.clone()));
    let client = pki.client(addr, false);
    let mut ready = false;
    for _ in 0..200 {
        if let Ok(r) = client.get(https(addr, "/v1/ready")).send().await
            && r.status() == 200
        {
            assert_eq!(r.version(), Version::HTTP_2);
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ready, "the HTTPS API became ready");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_app_refuses_to_start_with_a_missing_certificate_and_names_the_file() {
    let pki = Pki::new();
    let missing = pki.dir.path().join("nope.pem");
    let err = build(config(Some((&missing, &pki.key())), pki.dir.path()))
        .err()
        .expect("no app without a certificate");
    let text = format!("{err:#}");
    assert!(text.contains(&missing.display().to_string()), "{text}");
}

#[test]
fn load_tls_names_a_missing_certificate_file() {
    let pki = Pki::new();
    let missing = pki.dir.path().join("missing-cert.pem");
    let err = load_tls(&missing, &pki.key()).unwrap_err().to_string();
    assert!(
        err.contains("cannot read") && err.contains("missing-cert.pem"),
        "{err}"
    );
}

#[test]
fn load_tls_names_a_missing_key_file() {
    let pki = Pki::new();
    let missing = pki.dir.path().join("missing-key.pem");
    let err = load_tls(&pki.cert(), &missing).unwrap_err().to_string();
    assert!(
        err.contains("cannot read") && err.contains("missing-key.pem"),
        "{err}"
    );
}

#[test]
fn load_tls_rejects_a_certificate_file_without_certificates() {
    let pki = Pki::new();
    let empty = pki.write("empty.pem", "not a certificate\n");
    let err = load_tls(&empty, &pki.key()).unwrap_err().to_string();
    assert!(
        err.contains("empty.pem") && err.contains("no certificate"),
        "{err}"
    );
}

#[test]
fn load_tls_rejects_a_key_file_without_a_key() {
    let pki = Pki::new();
    // The certificate where the key should be.
    let err = load_tls(&pki.cert(), &pki.cert()).unwrap_err().to_string();
    assert!(
        err.contains("cert.pem") && err.contains("no private key"),
        "{err}"
    );
}

#[test]
fn load_tls_rejects_a_key_that_does_not_match_the_certificate() {
    let pki = Pki::new();
    let other = rcgen::KeyPair::generate().unwrap();
    let other_key = pki.write("other-key.pem", &other.serialize_pem());
    let err = load_tls(&pki.cert(), &other_key).unwrap_err().to_string();
    assert!(
        err.contains("other-key.pem") && err.contains("cannot be used together"),
        "{err}"
    );
}

/// A CA certificate served as the server's own is what clients refuse with
/// `CaUsedAsEndEntity`: refused at start instead, saying what to serve. A
/// certificate that says it is no CA (or says nothing) loads.
#[test]
fn load_tls_refuses_a_ca_certificate_and_says_what_to_serve_instead() {
    let pki = Pki::new();
    let key = rcgen::KeyPair::generate().unwrap();
    let key_file = pki.write("ca-key.pem", &key.serialize_pem());
    for (is_ca, refused) in [
        (
            rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained),
            true,
        ),
        (
            rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0)),
            true,
        ),
        (rcgen::IsCa::ExplicitNoCa, false),
        (rcgen::IsCa::NoCa, false),
    ] {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.is_ca = is_ca;
        let cert = pki.write("ca.pem", &params.self_signed(&key).unwrap().pem());
        match load_tls(&cert, &key_file) {
            Ok(_) => assert!(!refused, "a CA certificate loaded"),
            Err(e) => {
                let err = e.to_string();
                assert!(refused, "{err}");
                assert!(
                    err.contains("ca.pem")
                        && err.contains("CA certificate")
                        && err.contains("signed by that CA")
                        && err.contains("maxine tls self-signed"),
                    "{err}"
                );
            }
        }
    }
}

#[test]
fn load_tls_offers_h2_and_http1_by_alpn() {
    let pki = Pki::new();
    let cfg = load_tls(&pki.cert(), &pki.key()).unwrap();
    assert_eq!(
        cfg.alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
}
