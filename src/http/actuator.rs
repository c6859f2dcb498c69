//! The Node.js Maxine's actuator (`/api/actuator/...`): health, build info,
//! process metrics and the performance report, in its shapes. Its SDKs
//! call these without a credential, and none is read: they tell the
//! version, memory and uptime, nothing of the registry.

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};

use super::HttpState;
use super::error::{ApiError, MaxineError};

/// `GET /api/actuator/health`.
pub async fn health() -> Json<Value> {
    Json(json!({ "status": "UP" }))
}

/// `GET /api/actuator/info`: the build, as the Node.js Maxine shows its
/// package (`build.name`, `build.description`, `build.version`).
pub async fn info() -> Json<Value> {
    Json(json!({
        "build": {
            "name": env!("CARGO_PKG_NAME"),
            "description": env!("CARGO_PKG_DESCRIPTION"),
            "version": env!("CARGO_PKG_VERSION"),
        }
    }))
}

/// `GET /api/actuator/metrics`: `mem.rss` (resident bytes, where the
/// system tells it) and `uptime` (seconds since the API started), the
/// fields of the Node.js Maxine's answer that a native process has.
pub async fn metrics(State(st): State<HttpState>) -> Json<Value> {
    let mut mem = Map::new();
    if let Some(rss) = resident_bytes() {
        mem.insert("rss".into(), rss.into());
    }
    Json(json!({
        "mem": mem,
        "uptime": st.started.elapsed().as_secs_f64(),
    }))
}

/// What the Node.js Maxine answers when it has no report to show.
pub const MSG_NO_PERFORMANCE_REPORT: &str = "Performance report URL is not configured.";

/// `GET /api/actuator/performance`: the Node.js Maxine shows a load-test
/// report fetched from a configured URL; Maxine has none to show, and
/// answers what the Node.js Maxine answers without one.
pub async fn performance() -> MaxineError {
    MaxineError(ApiError::NotFound(MSG_NO_PERFORMANCE_REPORT.into()))
}

/// The resident set size of this process, from `/proc/self/status`
/// (`None` where there is no such file).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    vm_rss(&status)
}

/// `VmRSS:     1234 kB` in bytes.
fn vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resident_size_is_read_in_bytes() {
        let status = "Name:\tmaxine\nVmPeak:\t  9000 kB\nVmRSS:\t   1234 kB\nThreads:\t4\n";
        assert_eq!(vm_rss(status), Some(1234 * 1024));
        assert_eq!(vm_rss("Name:\tmaxine\n"), None);
        assert_eq!(vm_rss("VmRSS:\tlots\n"), None);
    }
}
