//! The Node.js Maxine's log routes (`/api/logs/...`), over the ring of the
//! last log lines (`telemetry::RecentLogs`). Reading needs `operator:read`,
//! clearing `operator:write`: a sign-in token of an operator or admin has
//! both, as does a token with the `operator` policy.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::HttpState;
use super::auth::Caller;
use super::error::MaxineError;
use crate::core::Access;
use crate::policy::Resource;

/// The one file `GET /api/logs/download` lists: the recent lines.
pub const RECENT_FILE: &str = "maxine-recent.log";
/// Where that file is downloaded (a row of `ROUTES`).
pub const RECENT_FILE_PATH: &str = "/api/logs/download/maxine-recent.log";

/// `GET /api/logs/download`: the log files by name, each with the path it
/// is downloaded from (`{"maxine-recent.log": "/api/logs/download/maxine-recent.log"}`),
/// the shape of the Node.js Maxine's list of its log files.
pub async fn files(
    State(st): State<HttpState>,
    caller: Caller,
) -> Result<Json<Value>, MaxineError> {
    caller.require(&st, Resource::Operator, Access::Read)?;
    Ok(Json(json!({ RECENT_FILE: RECENT_FILE_PATH })))
}

/// `GET /api/logs/download/maxine-recent.log`: the recent lines as a text
/// file, oldest first.
pub async fn download(
    State(st): State<HttpState>,
    caller: Caller,
) -> Result<Response, MaxineError> {
    caller.require(&st, Resource::Operator, Access::Read)?;
    let mut text = st.recent_logs.text();
    if !text.is_empty() {
        text.push('\n');
    }
    let disposition = format!("attachment; filename=\"{RECENT_FILE}\"");
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        text,
    )
        .into_response())
}

/// `GET /api/logs/recent`: `{"logs": "<the lines, joined by \n>"}`.
pub async fn recent(
    State(st): State<HttpState>,
    caller: Caller,
) -> Result<Json<Value>, MaxineError> {
    caller.require(&st, Resource::Operator, Access::Read)?;
    Ok(Json(json!({ "logs": st.recent_logs.text() })))
}

/// `GET /api/logs/recent/clear` (a GET, as in the Node.js Maxine): forgets
/// the recent lines and answers 200 with no body. The line that says who
/// cleared them is the first of the new ones.
pub async fn clear(State(st): State<HttpState>, caller: Caller) -> Result<Response, MaxineError> {
    caller.require(&st, Resource::Operator, Access::Write)?;
    let lines = st.recent_logs.clear();
    tracing::info!(by = %caller.actor.name(), lines, "the recent log lines were cleared");
    Ok(StatusCode::OK.into_response())
}
