//! The routes of stored objects of one kind (policies, tokens, intentions,
//! DNS client networks, TSIG keys, blacklist entries): a listing at the
//! registry's index, one by key with its 404, a put answered with the value
//! as applied, a delete answered with its index. Each kind gives only its
//! key, its validation and its view.

use axum::Json;
use axum::response::Response;
use serde_json::{Value, json};

use super::auth::Caller;
use super::error::ApiError;
use super::{HttpState, indexed, propose};
use crate::core::{AclChange, AclKey, AclObject, Applied, Change, Outcome};

/// A kind's view of one of its objects: its index and its JSON (`None`
/// for an object of another kind).
pub type View = fn(&AclObject) -> Option<(u64, Value)>;

/// The object one applied change produced.
pub fn applied_object(applied: &Applied) -> Option<AclObject> {
    match applied.outcomes.first() {
        Some((_, Outcome::Acl(o))) => o.clone(),
        _ => None,
    }
}

fn answer(object: Option<AclObject>, view: View) -> Option<Response> {
    let (index, body) = view(&object?)?;
    Some(indexed(index, Json(body)))
}

/// `GET` of a kind's objects: `{FIELD: [views]}` at the registry's index
/// (read after the views, so a client waiting on it misses nothing).
pub fn list(st: &HttpState, field: &str, views: impl IntoIterator<Item = Value>) -> Response {
    let all = Value::Array(views.into_iter().collect());
    let body = Value::Object(serde_json::Map::from_iter([(field.to_owned(), all)]));
    indexed(st.registry.index(), Json(body))
}

/// `GET` of one object: its view at its own index, or a 404 saying
/// `missing` (the caller has been authorized).
pub fn get(
    st: &HttpState,
    key: &AclKey,
    view: View,
    missing: String,
) -> Result<Response, ApiError> {
    answer(st.registry.acl_object(key), view).ok_or(ApiError::NotFound(missing))
}

/// `PUT` of one (validated) object: its view as applied.
pub async fn put(
    st: &HttpState,
    caller: &Caller,
    object: AclObject,
    view: View,
) -> Result<Response, ApiError> {
    let applied = propose(st, Change::Acl(AclChange::Put(object)), caller).await?;
    answer(applied_object(&applied), view)
        .ok_or_else(|| ApiError::Internal("a write applied without a value".into()))
}

/// `DELETE` of one object: `{"index"}` of the deletion.
pub async fn delete(st: &HttpState, caller: &Caller, key: AclKey) -> Result<Response, ApiError> {
    let index = propose(st, Change::Acl(AclChange::Delete(key)), caller)
        .await?
        .last_index;
    Ok(indexed(index, Json(json!({ "index": index }))))
}
