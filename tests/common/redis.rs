//! A real `redis-server` on a free loopback port, for the Redis store's
//! tests (Debian: `apt-get install redis-server`; `.ci/run` installs it).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Redis server in a temporary directory, with `appendfsync always` (the
/// setting Maxine's no-loss promise needs). Killed when dropped.
pub struct RedisServer {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
    /// Serving TLS only (`rediss://`), with this CA's certificate.
    tls_ca: Option<std::path::PathBuf>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// With extra `redis-server` arguments (later ones win), e.g.
    /// `["--appendfsync", "everysec"]`.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_inner(extra, None)
    }

    /// A Redis that speaks TLS only, with a server certificate for
    /// `localhost` and `127.0.0.1` signed by a new CA ([`RedisServer::ca`]).
    pub fn start_tls() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let file = |name: &str, text: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let ca_file = file("ca.crt", ca_cert.pem());
        let cert_file = file("redis.crt", cert.pem());
        let key_file = file("redis.key", key.serialize_pem());
        let mut s = Self::start_inner(
            &[
                "--tls-cert-file",
                cert_file.to_str().unwrap(),
                "--tls-key-file",
                key_file.to_str().unwrap(),
                "--tls-ca-cert-file",
                ca_file.to_str().unwrap(),
                "--tls-auth-clients",
                "no",
            ],
            Some(ca_file.clone()),
        );
        // Kept with the server, which outlives this function's directory.
        let kept = s.dir.path().join("ca.crt");
        std::fs::copy(&ca_file, &kept).unwrap();
        s.tls_ca = Some(kept);
        s
    }

    fn start_inner(extra: &[&str], tls_ca: Option<std::path::PathBuf>) -> Self {
        for _ in 0..20 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let port_text = port.to_string();
            let ports = match tls_ca {
                None => vec!["--port", &port_text],
                Some(_) => vec!["--port", "0", "--tls-port", &port_text],
            };
            let child = Command::new("redis-server")
                .args(ports)
                .args(["--bind", "127.0.0.1"])
                .args([
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                ])
                .args(["--daemonize", "no", "--protected-mode", "yes"])
                .arg("--dir")
                .arg(dir.path())
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is installed (apt-get install redis-server)");
            let mut server = Self {
                port,
                child,
                dir,
                tls_ca: tls_ca.clone(),
            };
            if server.wait_up() {
                return server;
            }
            // Port taken meanwhile, most likely: try another (Drop kills it).
        }
        panic!("redis-server did not start");
    }

    /// Polls with PING until Redis answers; false if it exited or took too long.
    fn wait_up(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if self.tls_ca.is_some() {
                // TLS only: a plain PING gets no answer; the port is enough.
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    return true;
                }
            } else if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let mut buf = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read_exact(&mut buf).is_ok()
                    && &buf == b"+PONG\r\n"
                {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Where Redis keeps its files (the append-only file among them).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        match self.tls_ca {
            None => format!("redis://127.0.0.1:{}/0", self.port),
            Some(_) => format!("rediss://localhost:{}/0", self.port),
        }
    }

    /// The CA certificate of a TLS server's certificate.
    pub fn ca(&self) -> &std::path::Path {
        self.tls_ca.as_deref().expect("a TLS server")
    }

    /// Runs one command, e.g. `["FLUSHALL"]`, and returns its reply.
    pub fn command(&self, args: &[&str]) -> redis::Value {
        let client = match &self.tls_ca {
            None => redis::Client::open(self.url()).unwrap(),
            Some(ca) => redis::Client::build_with_tls(
                self.url(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(std::fs::read(ca).unwrap()),
                },
            )
            .unwrap(),
        };
        let mut conn = client.get_connection().expect("connect to Redis");
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut conn).expect("the command runs")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
