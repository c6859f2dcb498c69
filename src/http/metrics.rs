//! `GET /metrics` (the Prometheus text format) and the route layer that
//! counts and times every request of the route table.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::HttpState;

/// `GET /metrics`: every metric (docs/operations.md lists them). Open to
/// every client that passes the host check, like the actuator: it tells
/// counts and timings, no names of services or instances.
pub async fn scrape(State(st): State<HttpState>) -> Response {
    (
        [(CONTENT_TYPE, crate::telemetry::metrics::CONTENT_TYPE)],
        st.metrics.encode(),
    )
        .into_response()
}

/// The state of [`track`]: one per route.
#[derive(Clone)]
pub struct Track {
    pub metrics: crate::telemetry::metrics::HttpMetrics,
    /// The route table's path (`/v1/services/{service}`): a bounded label.
    pub route: &'static str,
}

/// Counts the request by route, method and status, and times it until
/// its response's headers.
pub async fn track(State(t): State<Track>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let res = next.run(req).await;
    t.metrics
        .observe(t.route, method.as_str(), res.status().as_u16(), started);
    res
}
