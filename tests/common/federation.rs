//! Several real Maxine processes as datacenters dc1, dc2, dc3 on loopback,
//! federated over plain HTTP (loopback), each with a management token its
//! peers present.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::{RData, RecordType};

use super::process::ServerProcess;

/// The management token of datacenter `dc` (at least 32 characters): one
/// secret for all of them, so that one token file serves every peer.
pub fn secret_of(_dc: &str) -> String {
    "federation-test-secret-0123456789abcdef".into()
}

/// One datacenter: a process and its data directory.
pub struct Dc {
    pub name: String,
    pub dir: PathBuf,
    pub p: ServerProcess,
    pub client: reqwest::Client,
}

/// How to start a datacenter.
#[derive(Clone, Default)]
pub struct DcSpec<'a> {
    /// Peers as (name, base URL).
    pub peers: Vec<(String, String)>,
    /// The token file's contents sent to peers (default: each peer's secret
    /// is not known, so the first peer's secret).
    pub token: Option<String>,
    /// More variables.
    pub env: Vec<(&'a str, String)>,
}

impl Dc {
    /// Starts datacenter `name` in `dir` (created when missing).
    pub async fn start(name: &str, dir: &Path, spec: DcSpec<'_>) -> Dc {
        std::fs::create_dir_all(dir).unwrap();
        let token = spec
            .token
            .clone()
            .or_else(|| spec.peers.first().map(|(n, _)| secret_of(n)))
            .unwrap_or_default();
        let token_file = dir.join("peer-token");
        std::fs::write(&token_file, &token).unwrap();
        let peers = spec
            .peers
            .iter()
            .map(|(n, u)| format!("{n}={u}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut env: Vec<(String, String)> = vec![
            ("MAXINE_DATACENTER".into(), name.into()),
            ("MAXINE_ACL_BOOTSTRAP_TOKEN".into(), secret_of(name)),
            ("MAXINE_FEDERATION_PEERS".into(), peers),
            (
                "MAXINE_FEDERATION_TOKEN_FILE".into(),
                token_file.display().to_string(),
            ),
            ("MAXINE_FEDERATION_KEEPALIVE".into(), "200ms".into()),
            ("MAXINE_FEDERATION_STALE_AFTER".into(), "2s".into()),
            ("MAXINE_FEDERATION_PERSIST_INTERVAL".into(), "1s".into()),
        ];
        for (k, v) in spec.env {
            env.retain(|(e, _)| e != k);
            env.push((k.to_string(), v));
        }
        let env_ref: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let p = ServerProcess::start_with_env(dir, &format!("{name}.log"), &[], &env_ref).await;
        Dc {
            name: name.into(),
            dir: dir.to_path_buf(),
            p,
            // Never follow a redirect: discover answers 302 to instances'
            // addresses, which are not on this machine.
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    /// Datacenter `name`, in `tmp/name`, with no peers.
    pub async fn lone(tmp: &Path, name: &str) -> Dc {
        Dc::start(name, &tmp.join(name), DcSpec::default()).await
    }

    /// Datacenter `name`, in `tmp/name`, following `peers`' streams.
    pub async fn following(tmp: &Path, name: &str, peers: &[&Dc]) -> Dc {
        let spec = DcSpec {
            peers: peers.iter().map(|p| p.peer()).collect(),
            ..Default::default()
        };
        Dc::start(name, &tmp.join(name), spec).await
    }

    pub fn url(&self) -> String {
        self.p.base()
    }

    pub fn peer(&self) -> (String, String) {
        (self.name.clone(), self.url())
    }

    fn auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        r.bearer_auth(secret_of(&self.name))
    }

    /// Registers `id` of `service` at `ip` (TTL `ttl` seconds).
    pub async fn register(&self, service: &str, id: &str, ip: &str, ttl: u32) {
        let r = self
            .auth(self.client.put(format!(
                "{}/v1/services/{service}/instances/{id}",
                self.url()
            )))
            .json(
                &serde_json::json!({ "address": ip, "port": 8080, "ttl": ttl, "version": "2.1.0" }),
            )
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "register: {}",
            r.text().await.unwrap()
        );
    }

    pub async fn deregister(&self, service: &str, id: &str) {
        let r = self
            .auth(self.client.delete(format!(
                "{}/v1/services/{service}/instances/{id}",
                self.url()
            )))
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "deregister: {}",
            r.text().await.unwrap()
        );
    }

    pub async fn heartbeat(&self, service: &str, id: &str) -> u16 {
        self.auth(self.client.put(format!(
            "{}/v1/services/{service}/instances/{id}/heartbeat",
            self.url()
        )))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
    }

    /// `GET /v1/datacenters`, the entry of `dc`.
    pub async fn dc_status(&self, dc: &str) -> serde_json::Value {
        let body: serde_json::Value = self
            .auth(self.client.get(format!("{}/v1/datacenters", self.url())))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["datacenters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == dc)
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    }

    /// `GET <path>` with the management token, as JSON and status.
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .auth(self.client.get(format!("{}{path}", self.url())))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// The `Location` of a Maxine-compatible discover.
    pub async fn discover(&self, query: &str) -> (u16, String) {
        let r = self
            .auth(self.client.get(format!(
                "{}/api/maxine/serviceops/discover?{query}",
                self.url()
            )))
            .send()
            .await
            .unwrap();
        let loc = r
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (r.status().as_u16(), loc)
    }

    pub async fn put_json(&self, path: &str, body: serde_json::Value) -> u16 {
        self.auth(self.client.put(format!("{}{path}", self.url())))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// The A records of `name` (sorted).
    pub async fn a(&self, name: &str) -> Vec<String> {
        let mut v = self.p.resolve_a(name).await;
        v.sort();
        v
    }

    /// The answer to `name` `rtype`, over UDP.
    pub async fn ask(&self, name: &str, rtype: RecordType) -> Message {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let q = super::query(name, rtype, Some((4096, 0)));
        for _ in 0..3 {
            sock.send_to(&q, self.p.dns).await.unwrap();
            let mut buf = vec![0u8; 65535];
            if let Ok(Ok((n, _))) =
                tokio::time::timeout(Duration::from_secs(1), sock.recv_from(&mut buf)).await
            {
                return Message::from_vec(&buf[..n]).unwrap();
            }
        }
        panic!("no answer to {name}");
    }

    /// The SRV records of `name` as (priority, target, ttl), sorted.
    pub async fn srv(&self, name: &str) -> Vec<(u16, String, u32)> {
        let m = self.ask(name, RecordType::SRV).await;
        let mut out: Vec<_> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) => Some((s.priority, s.target.to_string(), r.ttl)),
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    /// The TTLs of the A records of `name`.
    pub async fn a_ttls(&self, name: &str) -> Vec<u32> {
        let m = self.ask(name, RecordType::A).await;
        m.answers.iter().map(|r| r.ttl).collect()
    }
}

/// A TCP proxy on loopback that holds every chunk for `delay` before
/// passing it on, both ways: a slow link to `to`, without namespaces.
/// Returns its address; it runs until the test ends.
pub async fn slow_link(to: std::net::SocketAddr, delay: Duration) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        // Bounded: a test opens a handful of connections.
        for _ in 0..64 {
            let Ok((inbound, _)) = listener.accept().await else {
                return;
            };
            let Ok(outbound) = tokio::net::TcpStream::connect(to).await else {
                continue;
            };
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::spawn(pipe(ri, wo, delay));
            tokio::spawn(pipe(ro, wi, delay));
        }
    });
    addr
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        tokio::time::sleep(delay).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
