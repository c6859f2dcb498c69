//! One harness for every integration test: a real Maxine on ephemeral
//! loopback ports with a temporary data directory, and clients for it.
#![allow(dead_code)]

pub mod acl;
pub mod api;
pub mod client;
pub mod etcd;
pub mod federation;
pub mod netns;
pub mod process;
pub mod redis;

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use maxine::app::{App, Listeners};
use maxine::config::{Config, ConfigFile};
use maxine::core::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// A loopback address where no name server listens: the default
/// `resolve.nameservers` of test servers.
pub const NO_NAMESERVER: &str = "127.0.0.1:9";

pub struct TestServer {
    pub dns_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub http: reqwest::Client,
    pub registry: Registry,
    pub config: Config,
    /// Counters of the DNS UDP workers.
    pub dns_stats: std::sync::Arc<maxine::dns::udp::UdpStats>,
    /// Counters of the DNS TCP front end (open, evicted, refused).
    pub dns_tcp_stats: std::sync::Arc<maxine::dns::tcp::TcpStats>,
    /// Every registry change since start, in index order.
    pub events: maxine::events::Subscription,
    /// The ring the log routes show (see [`TestServer::start_with_logs`]).
    pub recent_logs: maxine::telemetry::RecentLogs,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// The data directory; kept across [`TestServer::restart`].
    dir: Option<tempfile::TempDir>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after `tweak` has adjusted the (default) configuration.
    pub async fn start_with(tweak: impl FnOnce(&mut ConfigFile)) -> Self {
        let (config, dir) = Self::config(tweak);
        Self::start_config(config, dir).await
    }

    /// Starts a server whose log routes show `logs`. Lines reach the ring
    /// only through a subscriber with `logs.layer()`: a test on tokio's
    /// default (current-thread) runtime installs one with
    /// `tracing::subscriber::set_default` before calling this, and sees the
    /// server's own lines.
    pub async fn start_with_logs(
        logs: maxine::telemetry::RecentLogs,
        tweak: impl FnOnce(&mut ConfigFile),
    ) -> Self {
        let (config, dir) = Self::config(tweak);
        Self::start_inner(config, dir, Some(logs)).await
    }

    /// The test configuration after `tweak`, with its data directory.
    fn config(tweak: impl FnOnce(&mut ConfigFile)) -> (Config, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut file = ConfigFile::default();
        file.dns.addr = "127.0.0.1:0".into();
        file.http.addr = "127.0.0.1:0".into();
        file.data_dir = dir.path().to_path_buf();
        file.dns.zone_dir = Some(concat!(env!("CARGO_MANIFEST_DIR"), "/zones").into());
        // Tests stop servers often; the drain has its own test.
        file.http.drain_period = maxine::config::DurationValue(Duration::ZERO);
        // Host names of instances are resolved by a server on this machine
        // only (nothing listens there unless a test starts one): a test
        // never sends a lookup off it.
        file.resolve.nameservers = vec![NO_NAMESERVER.into()];
        tweak(&mut file);
        (Config::validate(file).expect("valid test config"), dir)
    }

    /// Starts a server with `config`, keeping `dir` (its data directory) alive.
    pub async fn start_config(config: Config, dir: tempfile::TempDir) -> Self {
        Self::start_inner(config, dir, None).await
    }

    async fn start_inner(
        config: Config,
        dir: tempfile::TempDir,
        logs: Option<maxine::telemetry::RecentLogs>,
    ) -> Self {
        let listeners = Listeners::bind(config.dns.addr, config.http.addr).expect("bind");
        let mut app = App::build(config.clone(), listeners).expect("build app");
        if let Some(logs) = logs {
            app = app.with_recent_logs(logs);
        }
        let recent_logs = app.recent_logs();
        let dns_addr = app.dns_addr();
        let http_addr = app.http_addr();
        let registry = app.registry().clone();
        let events = app.events();
        let dns_stats = app.dns_stats();
        let dns_tcp_stats = app.dns_tcp_stats();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run(shutdown.clone()));
        let server = Self {
            dns_addr,
            http_addr,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            registry,
            config,
            events,
            recent_logs,
            dns_stats,
            dns_tcp_stats,
            shutdown,
            task: Some(task),
            dir: Some(dir),
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok(r) = self
                .http
                .get(format!("{}/v1/ready", self.http_base()))
                .send()
                .await
                && r.status().is_success()
            {
                return;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("server did not become ready");
    }

    pub fn http_base(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// Registers through the native API; panics unless it answers 200.
    pub async fn register(
        &self,
        service: &str,
        id: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let resp = self
            .http
            .put(format!(
                "{}/v1/services/{service}/instances/{id}",
                self.http_base()
            ))
            .json(&body)
            .send()
            .await
            .expect("register request");
        let status = resp.status();
        let json: serde_json::Value = resp.json().await.unwrap_or_default();
        assert_eq!(status, 200, "register {service}/{id}: {json}");
        json
    }

    /// Sends one raw packet over UDP and returns the raw reply, if any
    /// arrives within a second.
    pub async fn udp_raw(&self, packet: &[u8]) -> Option<Vec<u8>> {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.send_to(packet, self.dns_addr).await.unwrap();
        let mut buf = vec![0u8; 65_535];
        match tokio::time::timeout(Duration::from_secs(1), sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    /// Sends length-prefixed packets on one TCP connection (pipelined) and
    /// reads one reply per packet.
    pub async fn tcp_raw(&self, packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut s = tokio::net::TcpStream::connect(self.dns_addr).await.unwrap();
        let mut all = Vec::new();
        for p in packets {
            all.extend((p.len() as u16).to_be_bytes());
            all.extend(p);
        }
        s.write_all(&all).await.unwrap();
        let mut out = Vec::new();
        for _ in packets {
            let len = s.read_u16().await.unwrap() as usize;
            let mut buf = vec![0; len];
            s.read_exact(&mut buf).await.unwrap();
            out.push(buf);
        }
        out
    }

    /// Asks a question over UDP and decodes the reply. Like a stub resolver
    /// it sends again when no reply comes within a second (three tries), so
    /// a scheduling stall on a busy machine is not taken for a lost answer.
    pub async fn ask(&self, name: &str, rtype: RecordType) -> Message {
        let q = query(name, rtype, None);
        for _ in 0..3 {
            if let Some(reply) = self.udp_raw(&q).await {
                return Message::from_vec(&reply).expect("a well-formed reply");
            }
        }
        panic!("no reply to {name} {rtype} in three tries")
    }

    /// Runs `dig @server -p port ARGS +norec +tries=1 +time=2` and returns its output.
    pub async fn dig(&self, args: &[&str]) -> String {
        let out = tokio::process::Command::new("dig")
            .arg(format!("@{}", self.dns_addr.ip()))
            .arg("-p")
            .arg(self.dns_addr.port().to_string())
            .args(["+norec", "+tries=1", "+time=2"])
            .args(args)
            .output()
            .await
            .expect("dig is installed (apt-get install dnsutils)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A hickory resolver that asks only this server (no cache).
    pub fn resolver(&self, tcp: bool) -> hickory_resolver::TokioResolver {
        use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
        let mut conn = if tcp {
            ConnectionConfig::tcp()
        } else {
            ConnectionConfig::udp()
        };
        conn.port = self.dns_addr.port();
        let mut ns = NameServerConfig::udp(self.dns_addr.ip());
        ns.connections = vec![conn];
        let mut b = hickory_resolver::Resolver::builder_with_config(
            ResolverConfig::from_name_servers(vec![ns]),
            hickory_resolver::net::runtime::TokioRuntimeProvider::default(),
        );
        b.options_mut().cache_size = 0;
        b.options_mut().attempts = 1;
        b.build().expect("resolver")
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.await.expect("join").expect("clean shutdown");
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.as_ref().expect("data directory").path()
    }

    /// Stops the server cleanly and starts it again with the same settings
    /// and data directory (on new ports).
    pub async fn restart(self) -> Self {
        let (config, dir) = self.stop_keeping_data().await;
        Self::start_config(config, dir).await
    }

    /// Stops the server cleanly and hands back its settings and data
    /// directory, for [`TestServer::start_config`] later.
    pub async fn stop_keeping_data(mut self) -> (Config, tempfile::TempDir) {
        let dir = self.dir.take().expect("data directory");
        let config = self.config.clone();
        self.stop().await;
        (config, dir)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Sends the DNS message `q` to `dns` over UDP from the address `from`
/// (a 127.0.0.x an instance may be registered at), three tries of 1 s;
/// the raw reply.
pub async fn udp_from(dns: std::net::SocketAddr, from: &str, q: &[u8]) -> Vec<u8> {
    let src: std::net::IpAddr = from.parse().expect("a source address");
    let sock = tokio::net::UdpSocket::bind(std::net::SocketAddr::new(src, 0))
        .await
        .expect("bind a loopback source address");
    for _ in 0..3 {
        sock.send_to(q, dns).await.unwrap();
        let mut buf = vec![0u8; 65_535];
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(std::time::Duration::from_secs(1), sock.recv_from(&mut buf)).await
        {
            buf.truncate(n);
            return buf;
        }
    }
    panic!("no reply from {dns} to {from}")
}

/// A query message: id 0x4d58, RD set, optional EDNS (udp size, version).
pub fn query(name: &str, rtype: RecordType, edns: Option<(u16, u8)>) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 0x4d58;
    m.metadata.op_code = OpCode::Query;
    m.metadata.message_type = MessageType::Query;
    m.metadata.recursion_desired = true;
    let mut q = Query::query(Name::from_ascii(name).unwrap(), rtype);
    q.set_query_class(DNSClass::IN);
    m.add_query(q);
    let mut bytes = m.to_vec().unwrap();
    if let Some((size, version)) = edns {
        bytes[11] += 1;
        bytes.extend([0, 0, 41]);
        bytes.extend(size.to_be_bytes());
        bytes.extend([0, version, 0, 0, 0, 0]);
    }
    bytes
}

/// Records as zone-file lines, sorted: how DNS tests compare answers.
pub fn lines(records: &[hickory_proto::rr::Record]) -> Vec<String> {
    let mut v: Vec<String> = records.iter().map(|r| r.to_string()).collect();
    v.sort();
    v
}

/// Runs the `maxine` program (a client subcommand) without the store
/// settings of the environment; returns success and stdout+stderr.
pub async fn run_maxine<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_maxine"))
        .args(args)
        .env_remove("MAXINE_STORE")
        .env_remove("MAXINE_DATA_DIR")
        .output()
        .await
        .expect("maxine runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The next events of the feed (within 2 s); a snapshot (a resync) fails.
pub async fn next_events(sub: &mut maxine::events::Subscription) -> Vec<maxine::core::Event> {
    match tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
        Ok(maxine::events::Delivery::Changes { events, .. }) => events,
        Ok(other) => panic!("the feed resynchronised: {other:?}"),
        Err(_) => panic!("no event within 2 s"),
    }
}

/// Waits for a condition, polling, instead of sleeping a fixed time.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr, $($msg:tt)+) => {{
        let mut ok = false;
        // Up to 10 s: generous for a loaded CI machine; a passing check
        // returns as soon as it holds.
        for _ in 0..1000 {
            if $cond { ok = true; break; }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(ok, $($msg)+);
    }};
}
