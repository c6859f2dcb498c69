//! What each kind of check does: one future per run, which always ends
//! within the check's timeout with a status and a line of output.
//!
//! HTTP checks share one pooled client (connections to a target are kept
//! and reused between runs); gRPC checks share one lazily connected
//! channel per target. Script checks run their program without a shell in
//! a process group of its own, killed as a group at the timeout.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::core::check::limits::MAX_OUTPUT;
use crate::core::{CheckKind, CheckSpec, Health};

/// A run's outcome: status and output.
pub type Outcome = (Health, String);

/// A run in flight.
pub type Run = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// Runs checks; cloning copies an `Arc`.
#[derive(Clone)]
pub struct Runner(Arc<Inner>);

struct Inner {
    http: reqwest::Client,
    /// One channel per gRPC target, connected on first use and reused.
    grpc: Mutex<HashMap<SocketAddr, tonic::transport::Channel>>,
    /// `--enable-script-checks`: without it, a stored script check is
    /// reported critical and never run.
    scripts: bool,
}

impl Runner {
    pub fn new(scripts: bool) -> Self {
        let http = reqwest::Client::builder()
            // A health endpoint answers itself: a redirect is not followed.
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("maxine-health/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "health checks: no TLS roots; https checks will fail");
                reqwest::Client::new()
            });
        Self(Arc::new(Inner {
            http,
            grpc: Mutex::new(HashMap::new()),
            scripts,
        }))
    }

    /// One run of `spec`, bounded by its timeout.
    pub fn run(&self, spec: &CheckSpec) -> Run {
        let timeout = spec.timeout;
        let timed_out = move || {
            (
                Health::Critical,
                format!("timed out after {}", humantime::format_duration(timeout)),
            )
        };
        match &spec.kind {
            CheckKind::Http {
                url,
                method,
                headers,
            } => {
                let method = reqwest::Method::from_bytes(method.as_bytes());
                let mut req = match method {
                    Ok(m) => self.0.http.request(m, url.as_str()),
                    Err(e) => return ready((Health::Critical, format!("bad method: {e}"))),
                };
                for (k, v) in headers {
                    req = req.header(k.as_str(), v.as_str());
                }
                Box::pin(async move {
                    tokio::time::timeout(timeout, http(req))
                        .await
                        .unwrap_or_else(|_| timed_out())
                })
            }
            CheckKind::Tcp { target } => {
                let target = *target;
                Box::pin(async move {
                    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(target))
                        .await
                    {
                        Ok(Ok(_)) => (Health::Passing, format!("connected to {target}")),
                        Ok(Err(e)) => (Health::Critical, format!("connecting to {target}: {e}")),
                        Err(_) => timed_out(),
                    }
                })
            }
            CheckKind::Grpc { target, service } => {
                let channel = self.grpc_channel(*target);
                let service = service.to_string();
                Box::pin(async move {
                    match channel {
                        Err(e) => (Health::Critical, e),
                        Ok(ch) => tokio::time::timeout(timeout, grpc(ch, service))
                            .await
                            .unwrap_or_else(|_| timed_out()),
                    }
                })
            }
            CheckKind::Script { args } => {
                if !self.0.scripts {
                    return ready((
                        Health::Critical,
                        "script checks are disabled (start Maxine with --enable-script-checks)"
                            .into(),
                    ));
                }
                let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
                Box::pin(script(args, timeout))
            }
        }
    }

    fn grpc_channel(&self, target: SocketAddr) -> Result<tonic::transport::Channel, String> {
        let mut map = self.0.grpc.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = map.get(&target) {
            return Ok(ch.clone());
        }
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{target}"))
            .map_err(|e| format!("bad gRPC target {target}: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy();
        map.insert(target, ch.clone());
        Ok(ch)
    }
}

fn ready(outcome: Outcome) -> Run {
    Box::pin(std::future::ready(outcome))
}

/// 2xx passing, 429 warning, anything else critical; the output is the
/// status line and the start of the body.
async fn http(req: reqwest::RequestBuilder) -> Outcome {
    let mut resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return (Health::Critical, error_chain(&e)),
    };
    let status = resp.status();
    let health = match status.as_u16() {
        200..=299 => Health::Passing,
        429 => Health::Warning,
        _ => Health::Critical,
    };
    let mut out = format!("HTTP {status}");
    // Read the body (so the connection goes back to the pool), keeping
    // at most MAX_OUTPUT of it.
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_OUTPUT.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= MAX_OUTPUT {
                    break; // a large body: this connection is not reused
                }
            }
            Ok(None) => break,
            Err(e) => {
                out.push_str(&format!(" (reading the body: {})", error_chain(&e)));
                break;
            }
        }
    }
    if !body.is_empty() {
        out.push_str(": ");
        out.push_str(&String::from_utf8_lossy(&body));
    }
    (health, out)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// `grpc.health.v1.Health/Check`: SERVING passing, anything else critical.
async fn grpc(channel: tonic::transport::Channel, service: String) -> Outcome {
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let req = tonic_health::pb::HealthCheckRequest {
        service: service.clone(),
    };
    match client.check(req).await {
        Ok(resp) => {
            let status = resp.into_inner().status();
            let health = if status == ServingStatus::Serving {
                Health::Passing
            } else {
                Health::Critical
            };
            (health, format!("gRPC health: {}", status.as_str_name()))
        }
        Err(s) => (
            Health::Critical,
            format!("gRPC health check failed: {}: {}", s.code(), s.message()),
        ),
    }
}

/// Runs `args` without a shell, in its own process group: exit 0 passing,
/// 1 warning, anything else critical. At the timeout (and after it exits,
/// for anything it left behind) the whole group is killed.
async fn script(args: Vec<String>, timeout: Duration) -> Outcome {
    use std::process::Stdio;
    use tokio::io::AsyncReadExt;
    let mut cmd = tokio::process::Command::new(&args[0]);
    cmd.args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return (Health::Critical, format!("cannot run {:?}: {e}", args[0])),
    };
    let group = child.id().map(|p| nix::unistd::Pid::from_raw(p as i32));
    let kill_group = || {
        if let Some(g) = group {
            // ESRCH: the group is gone already.
            let _ = nix::sys::signal::killpg(g, nix::sys::signal::Signal::SIGKILL);
        }
    };
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    let run = async {
        // Both pipes are read to the end (a script blocked on a full pipe
        // would only time out), keeping at most MAX_OUTPUT of them.
        let mut out = Vec::new();
        let (mut a, mut b) = ([0u8; 2048], [0u8; 2048]);
        let mut open = [stdout.is_some(), stderr.is_some()];
        while open[0] || open[1] {
            let n = tokio::select! {
                r = async { stdout.as_mut().unwrap().read(&mut a).await }, if open[0] => {
                    (0, r)
                }
                r = async { stderr.as_mut().unwrap().read(&mut b).await }, if open[1] => {
                    (1, r)
                }
            };
            match n {
                (which, Ok(0)) | (which, Err(_)) => open[which] = false,
                (which, Ok(n)) => {
                    let room = MAX_OUTPUT.saturating_sub(out.len());
                    let got = if which == 0 { &a[..n] } else { &b[..n] };
                    out.extend_from_slice(&got[..n.min(room)]);
                }
            }
        }
        let status = child.wait().await;
        (status, out)
    };
    let outcome = tokio::time::timeout(timeout, run).await;
    // Whatever it started is stopped with it.
    kill_group();
    if outcome.is_err() {
        let _ = child.wait().await; // reaped: no zombie left
    }
    match outcome {
        Ok((Ok(status), out)) => {
            let health = match status.code() {
                Some(0) => Health::Passing,
                Some(1) => Health::Warning,
                _ => Health::Critical,
            };
            let mut text = String::from_utf8_lossy(&out).into_owned();
            if text.is_empty() {
                text = format!("exited: {status}");
            }
            (health, text)
        }
        Ok((Err(e), _)) => (Health::Critical, format!("waiting for the script: {e}")),
        Err(_) => (
            Health::Critical,
            format!(
                "timed out after {}; its process group was killed",
                humantime::format_duration(timeout)
            ),
        ),
    }
}
