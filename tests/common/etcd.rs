//! A real etcd cluster on free loopback ports in a temporary directory,
//! for the etcd store's tests (Debian: `apt-get install etcd-server`;
//! `.ci/run` installs it), and Maxine nodes against it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{ServerProcess, free_port};

/// The etcd binary, if installed.
pub fn etcd_binary() -> Option<PathBuf> {
    ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Says why a test does nothing when etcd is not installed (and fails
/// instead where `REQUIRE_ETCD_FOR_TESTS` is set, as in CI).
pub fn skip_without_etcd() -> bool {
    if etcd_binary().is_some() {
        return false;
    }
    // CI installs etcd: there a missing binary is a failure, not a skip.
    if std::env::var_os("REQUIRE_ETCD_FOR_TESTS").is_some() {
        panic!("REQUIRE_ETCD_FOR_TESTS is set but the etcd binary is not installed");
    }
    eprintln!("SKIPPED: the etcd binary is not installed (apt-get install etcd-server)");
    true
}

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// An etcd cluster; every member is killed when dropped.
pub struct EtcdCluster {
    members: Vec<Member>,
    dir: tempfile::TempDir,
    initial: String,
}

impl EtcdCluster {
    /// Starts `n` members and waits until the cluster has a leader.
    pub async fn start(n: usize) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Self {
            members,
            dir,
            initial,
        };
        for i in 0..n {
            c.spawn(i, "new");
        }
        c.wait_healthy().await;
        c
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let bin = etcd_binary().expect("etcd is installed");
        let m = &self.members[i];
        let data = self.dir.path().join(&m.name);
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", m.name))).unwrap();
        let client = format!("http://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let child = Command::new(bin)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", "maxine-test"])
            // Quick elections on loopback; batches of up to 128 proposals.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--max-txn-ops", "1024"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("etcd starts");
        self.members[i].child = Some(child);
    }

    /// `host:port,host:port,...` of every member.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The `--store` URL for `prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("etcd://{}/{prefix}", self.endpoints())
    }

    /// `kill -9` of member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data directory.
    pub async fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i, "existing");
        self.wait_healthy().await;
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    /// Waits (at most 30 s) until a running member reports the cluster healthy.
    pub async fn wait_healthy(&self) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            for m in self.members.iter().filter(|m| m.child.is_some()) {
                let url = format!("http://127.0.0.1:{}/health", m.client);
                if let Ok(r) = http.get(url).timeout(Duration::from_secs(1)).send().await
                    && let Ok(body) = r.text().await
                    && body.contains("\"true\"")
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the etcd cluster did not become healthy:\n{}", self.logs());
    }

    /// Every member's log, for failure messages.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let p = self.dir.path().join(format!("{}.log", m.name));
                format!(
                    "--- {}\n{}",
                    m.name,
                    std::fs::read_to_string(p).unwrap_or_default()
                )
            })
            .collect()
    }

    /// Starts a Maxine node against the cluster (`prefix`), with its own
    /// data directory and extra environment.
    pub async fn node(
        &self,
        prefix: &str,
        dir: &std::path::Path,
        env: &[(&str, &str)],
    ) -> ServerProcess {
        let url = self.url(prefix);
        let mut all: Vec<(&str, &str)> =
            vec![("MAXINE_STORE", &url), ("MAXINE_STORE_TIMEOUT", "3s")];
        all.extend_from_slice(env);
        ServerProcess::start_with_env(dir, "maxine.log", &[], &all).await
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
