//! `GET /metrics` (the Prometheus text format). The route layer that
//! counts and times every request is [`super::observe`].

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
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
