//! `maxine serve` as a separate process, for tests that kill it (`kill -9`)
//! or run it under `strace` to inject faults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A running `maxine serve`; killed (SIGKILL) when dropped.
pub struct ServerProcess {
    pub http: SocketAddr,
    pub dns: SocketAddr,
    pub log: PathBuf,
    /// The spawned process: maxine, or the wrapper (strace) running it.
    child: tokio::process::Child,
    /// Signals go to the wrapper's children (maxine), not to the wrapper:
    /// strace would detach and leave maxine running when killed itself.
    wrapped: bool,
}

/// A port free for TCP and UDP alike (DNS listens on both).
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl ServerProcess {
    /// Starts `maxine serve` on `data_dir` with free ports, logging to
    /// `data_dir/<log_name>`, optionally under a wrapper command such as
    /// `strace -f -e inject=...`, and waits until it is ready.
    pub async fn start(data_dir: &Path, log_name: &str, wrapper: &[&str]) -> Self {
        Self::start_with_env(data_dir, log_name, wrapper, &[]).await
    }

    pub async fn start_with_env(
        data_dir: &Path,
        log_name: &str,
        wrapper: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        // A port found free may be taken before maxine binds it: try again.
        for _ in 0..5 {
            match Self::try_start(data_dir, log_name, wrapper, env).await {
                Ok(p) => return p,
                Err(log) if log.contains("cannot bind") => continue,
                Err(log) => panic!("maxine exited before it was ready:\n{log}"),
            }
        }
        panic!("no free ports for maxine");
    }

    async fn try_start(
        data_dir: &Path,
        log_name: &str,
        wrapper: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let dns: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = data_dir.join(log_name);
        let out = std::fs::File::create(&log).unwrap();
        let bin = env!("CARGO_BIN_EXE_maxine");
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = tokio::process::Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => tokio::process::Command::new(bin),
        };
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--http-addr", &http.to_string()])
            .args(["--dns-addr", &dns.to_string()])
            .args(["--zone-dir", concat!(env!("CARGO_MANIFEST_DIR"), "/zones")])
            .env_remove("MAXINE_STORE")
            // Host names are never resolved off this machine.
            .env("MAXINE_RESOLVE_NAMESERVERS", super::NO_NAMESERVER)
            // No drain at SIGTERM unless a test asks for one.
            .env("MAXINE_DRAIN_PERIOD", "0")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .kill_on_drop(true);
        let child = cmd.spawn().expect("maxine starts");
        let mut p = Self {
            http,
            dns,
            log,
            child,
            wrapped: !wrapper.is_empty(),
        };
        p.wait_ready().await?;
        Ok(p)
    }

    /// Sends `sig` to maxine. Under a wrapper, maxine is the wrapper's child,
    /// looked up now, not at spawn: strace first forks a short-lived probe.
    /// `pkill -P` matches children of any of the wrapper's threads.
    fn signal(&self, sig: &str) {
        let Some(pid) = self.child.id() else { return };
        let pid = pid.to_string();
        let _ = if self.wrapped {
            std::process::Command::new("pkill")
                .args([sig, "-P", &pid])
                .status()
        } else {
            std::process::Command::new("kill")
                .args([sig, &pid])
                .status()
        };
    }

    /// Polls `/v1/ready`; `Err(log)` if maxine exited first.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Err(self.log_text());
            }
            if let Ok(r) = client
                .get(format!("http://{}/v1/ready", self.http))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("maxine was not ready in time:\n{}", self.log_text());
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.http)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9`: no shutdown, no flush.
    pub async fn kill9(mut self) {
        self.signal("-KILL");
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            // The wrapper outlived maxine: end it too, then never hang here.
            let _ = self.child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        }
    }

    /// SIGSTOP: frozen (a partition, as its peers see it).
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`ServerProcess::freeze`].
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    /// SIGTERM, without waiting: see [`ServerProcess::wait_exit`].
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// Waits (at most 30 s) for the process to exit, and says how it did.
    pub async fn wait_exit(mut self) -> std::process::ExitStatus {
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("maxine exits")
            .unwrap()
    }

    /// SIGTERM, and waits for a clean exit.
    pub async fn stop(mut self) {
        self.signal("-TERM");
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("maxine stops on SIGTERM")
            .unwrap();
        assert!(status.success(), "exit {status}:\n{}", self.log_text());
    }

    /// The instances of `service` through the API: id -> address (none
    /// when the service does not exist).
    pub async fn instances(&self, service: &str) -> std::collections::BTreeMap<String, String> {
        let r = reqwest::get(format!("{}/v1/services/{service}", self.base()))
            .await
            .unwrap();
        if r.status() == 404 {
            return Default::default();
        }
        let body: serde_json::Value = r.json().await.unwrap();
        body["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let id = i["id"].as_str().unwrap().to_string();
                (id, i["address"].as_str().unwrap().to_string())
            })
            .collect()
    }

    /// The A records of `name`, asked over UDP.
    pub async fn resolve_a(&self, name: &str) -> Vec<String> {
        use hickory_proto::op::Message;
        use hickory_proto::rr::RecordType;
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let q = super::query(name, RecordType::A, None);
        for _ in 0..3 {
            sock.send_to(&q, self.dns).await.unwrap();
            let mut buf = vec![0u8; 4096];
            if let Ok(Ok((n, _))) =
                tokio::time::timeout(Duration::from_secs(1), sock.recv_from(&mut buf)).await
            {
                let m = Message::from_vec(&buf[..n]).unwrap();
                return m.answers.iter().map(|r| r.data.to_string()).collect();
            }
        }
        panic!("no DNS answer for {name}");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal("-KILL");
        }
    }
}
