//! The degraded state after a damaged store was recovered at start-up:
//! shown on `/v1/ready` (`"degraded"`) and `/v1/services` (`"recovery"`)
//! until an operator acknowledges it with `POST /v1/recovery/ack`.
//!
//! The notice travels as a request extension ([`super::Api::with_recovery`]),
//! so an API built without a store simply has none.

use axum::{Extension, Json};
use serde_json::{Value, json};

use crate::store::RecoveryNotice;

/// What the handlers extract: the notice, when the app installed one.
pub type Notice = Option<Extension<RecoveryNotice>>;

/// The unacknowledged recovery as JSON, if there is one.
pub fn degraded(notice: &Notice) -> Option<Value> {
    let r = notice.as_ref()?.get()?;
    Some(json!({
        "reason": "the store file was damaged at start-up and recovered; see the log, then POST /v1/recovery/ack",
        "recovery": &*r,
    }))
}

/// `POST /v1/recovery/ack`: the operator has seen the recovery; `/v1/ready`
/// and `/v1/services` stop reporting it. Answers what was acknowledged.
pub async fn ack(
    axum::extract::State(st): axum::extract::State<super::HttpState>,
    caller: super::auth::Caller,
    notice: Notice,
) -> Result<Json<Value>, super::ApiError> {
    caller.require(
        &st,
        crate::policy::Resource::Operator,
        crate::core::Access::Write,
    )?;
    let cleared = notice.as_ref().and_then(|Extension(n)| n.acknowledge());
    if let Some(r) = &cleared {
        tracing::info!(moved_to = %r.moved_to, "the store recovery was acknowledged");
    }
    Ok(Json(json!({ "acknowledged": cleared.as_deref() })))
}
