//! Real client programs (unbound, dnsmasq, HAProxy, Prometheus) run as
//! child processes against a test's Maxine, each with its configuration and
//! log in a temporary directory of its own, and the recipes of
//! docs/clients.md they run.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::{RData, RecordType};

/// How long a change may take to reach a client before the test fails.
pub const BOUND: Duration = Duration::from_secs(30);

/// The path of `program`, looked up in PATH and the sbin directories
/// (daemons live in /usr/sbin, which a non-root PATH may lack). Fails
/// naming the Debian package that installs it.
pub fn program(program: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{program} is not installed: apt-get install {package} (Debian's package)")
        })
}

/// The snippet of docs/clients.md marked `<!-- recipe: NAME -->`: the
/// fenced block after the marker.
pub fn recipe(name: &str) -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/clients.md"))
        .expect("docs/clients.md");
    let marker = format!("<!-- recipe: {name} -->");
    let after = doc
        .split_once(&marker)
        .unwrap_or_else(|| panic!("docs/clients.md has no {marker}"))
        .1;
    let fence = after.find("```").expect("a fenced block after the marker");
    let body = &after[fence..];
    let body = &body[body.find('\n').expect("a fence line") + 1..];
    body[..body.find("```").expect("a closing fence")].to_string()
}

/// A running client; killed when dropped, and its log printed then if the
/// test is failing. The temporary directory goes with it.
pub struct ClientProcess {
    pub name: String,
    child: Mutex<Child>,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl ClientProcess {
    /// Starts `cmd` with stdin closed and stdout and stderr in
    /// `dir/<name>.log`; `dir` holds its configuration.
    pub fn spawn(name: &str, mut cmd: Command, dir: tempfile::TempDir) -> Self {
        let log = dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
        Self {
            name: name.into(),
            child: Mutex::new(child),
            log,
            dir,
        }
    }

    /// The directory with its configuration and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status, when it has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.child.lock().unwrap().try_wait().ok().flatten()
    }

    /// Polls `check` every 100 ms until it holds and returns how long that
    /// took; fails after [`BOUND`], or as soon as the client exits.
    pub async fn wait_for<F, Fut>(&self, what: &str, mut check: F) -> Duration
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let start = Instant::now();
        loop {
            if check().await {
                return start.elapsed();
            }
            if let Some(status) = self.exited() {
                panic!("{} exited ({status}) while waiting: {what}", self.name);
            }
            assert!(
                start.elapsed() < BOUND,
                "{}: not within {BOUND:?}: {what}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- {} log ({}) -----\n{}----- end of {} log -----",
                self.name,
                self.log.display(),
                self.log_text(),
                self.name
            );
        }
    }
}

/// Asks `server` (a recursive resolver: RD is set) for the A records of
/// `name` over UDP; `None` when no reply comes within a second (the
/// resolver is not up yet), the addresses otherwise (none for NXDOMAIN,
/// NODATA or SERVFAIL).
pub async fn addresses(server: SocketAddr, name: &str) -> Option<Vec<IpAddr>> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&super::query(name, RecordType::A, None), server)
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = match tokio::time::timeout(Duration::from_secs(1), sock.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => n,
        _ => return None,
    };
    let m = Message::from_vec(&buf[..n]).expect("a well-formed reply");
    Some(
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                _ => None,
            })
            .collect(),
    )
}
