//! The key/value store: `GET/PUT/DELETE /v1/kv/{key}` (keys are paths).
//!
//! `PUT` takes the raw body as the value (at most 512 KiB, 413 beyond) and
//! `GET` answers the raw value with `X-Maxine-Index` (the index of the
//! change that wrote it). `?cas=INDEX` makes a write conditional (409 and
//! nothing changed when the key is elsewhere; 0: only if absent);
//! `?recurse` lists every key under a prefix as JSON; `?index=N&wait=`
//! blocks like the service reads. `key_prefix` rules decide who may read
//! and write (docs/security.md).

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use super::auth::Caller;
use super::error::{ApiError, ApiPath, ApiQuery};
use super::native::Blocking;
use super::{HttpState, indexed, propose};
use crate::core::kv::MAX_VALUE_BYTES;
use crate::core::{Access, Change, KvChange, KvEntry, KvKey};
use crate::policy::Resource;

fn key_of(text: &str) -> Result<KvKey, ApiError> {
    KvKey::new(text).map_err(ApiError::BadRequest)
}

/// The query of `GET`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    /// Present: list every key starting with the path.
    recurse: Option<String>,
    index: Option<u64>,
    wait: Option<String>,
}

/// The query of `PUT` and `DELETE`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct WriteQuery {
    /// Compare-and-set: the key's current index (0: the key must not exist).
    cas: Option<u64>,
}

fn entry_view(e: &KvEntry) -> serde_json::Value {
    json!({
        "key": e.key.as_str(),
        "value": base64::engine::general_purpose::STANDARD.encode(&e.value),
        "index": e.index,
        "create_index": e.create_index,
    })
}

/// `GET /v1/kv/{key}`: the raw value, or with `?recurse` every entry under
/// the prefix the caller may read.
pub async fn get(
    State(st): State<HttpState>,
    ApiPath(path): ApiPath<String>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ReadQuery>,
) -> Result<Response, ApiError> {
    let blocking = Blocking::parse(q.index, q.wait.as_deref())?;
    if q.recurse.is_some() {
        KvKey::check_prefix(&path).map_err(ApiError::BadRequest)?;
        if let Some((index, wait)) = blocking {
            st.feed.wait_past(index, wait).await;
        }
        let entries: Vec<_> = st
            .registry
            .kv_list(&path)
            .into_iter()
            .filter(|e| caller.may(&st, Resource::Key(e.key.as_str()), Access::Read))
            .collect();
        let index = st.registry.index();
        return Ok(indexed(
            index,
            Json(entries.iter().map(|e| entry_view(e)).collect::<Vec<_>>()),
        ));
    }
    let key = key_of(&path)?;
    caller.require(&st, Resource::Key(key.as_str()), Access::Read)?;
    if let Some((index, wait)) = blocking {
        wait_for_key(&st, &key, index, wait).await;
    }
    match st.registry.kv_get(&key) {
        Some(e) => Ok(indexed(
            e.index,
            (
                [(header::CONTENT_TYPE, "application/octet-stream")],
                e.value.to_vec(),
            ),
        )),
        None => {
            let mut res = ApiError::NotFound(format!("key {:?} does not exist", key.as_str()))
                .into_response();
            res.headers_mut().insert(
                super::INDEX_HEADER,
                header::HeaderValue::from(st.registry.index()),
            );
            Ok(res)
        }
    }
}

/// Waits until `key`'s index passes `index` (a removal: any change past it
/// while the key is absent answers), or `wait` runs out.
async fn wait_for_key(st: &HttpState, key: &KvKey, index: u64, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    let mut seen = st.feed.index();
    loop {
        let current = st.registry.kv_get(key).map_or(0, |e| e.index);
        if current > index || (current == 0 && seen > index) {
            return;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return;
        }
        seen = st.feed.wait_past(seen, left).await;
    }
}

/// `PUT /v1/kv/{key}`: the body is the value.
pub async fn put(
    State(st): State<HttpState>,
    ApiPath(path): ApiPath<String>,
    caller: Caller,
    ApiQuery(q): ApiQuery<WriteQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = key_of(&path)?;
    caller.require(&st, Resource::Key(key.as_str()), Access::Write)?;
    let value = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::BadRequest(format!("cannot read the value: {e}"))
        }
    })?;
    if value.len() > MAX_VALUE_BYTES {
        return Err(too_large());
    }
    let change = Change::Kv(KvChange::Put {
        key: key.clone(),
        value: value.to_vec().into(),
        cas: q.cas,
    });
    let applied = propose(&st, change, &caller).await?;
    let index = applied.last_index;
    Ok(indexed(
        index,
        Json(json!({ "key": key.as_str(), "index": index })),
    ))
}

fn too_large() -> ApiError {
    ApiError::PayloadTooLarge(format!("a value is at most {MAX_VALUE_BYTES} bytes"))
}

/// `DELETE /v1/kv/{key}`.
pub async fn delete(
    State(st): State<HttpState>,
    ApiPath(path): ApiPath<String>,
    caller: Caller,
    ApiQuery(q): ApiQuery<WriteQuery>,
) -> Result<Response, ApiError> {
    let key = key_of(&path)?;
    caller.require(&st, Resource::Key(key.as_str()), Access::Write)?;
    let change = Change::Kv(KvChange::Delete {
        key: key.clone(),
        cas: q.cas,
    });
    let applied = propose(&st, change, &caller).await?;
    let index = applied.last_index;
    Ok(indexed(
        index,
        Json(json!({ "key": key.as_str(), "index": index, "deleted": true })),
    ))
}
