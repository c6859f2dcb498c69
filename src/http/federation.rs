//! Federation routes: the change stream peers read
//! (`GET /v1/federation/stream`), every known datacenter's state
//! (`GET /v1/datacenters`) and a service's failover order
//! (`PUT /v1/services/{service}/failover`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::HttpState;
use super::auth::{Caller, Unauthenticated};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::core::{Access, Datacenter, ServiceName};
use crate::policy::Resource;

/// Query of `GET /v1/federation/stream`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// The sender's change index the receiver has applied (0: none).
    #[serde(default)]
    since: u64,
    /// The receiver's datacenter (its own data is not sent back).
    dc: Option<String>,
}

/// `GET /v1/federation/stream?since=INDEX&dc=NAME`: this datacenter's
/// changes as length-prefixed frames. Needs a token with operator
/// permission: any other credential, or none, is refused with 403.
pub async fn stream(
    State(st): State<HttpState>,
    caller: Result<Caller, Unauthenticated>,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> Result<Response, ApiError> {
    let caller = caller.map_err(|_| {
        tracing::warn!(receiver = ?q.dc, "federation stream refused: bad credential");
        ApiError::Forbidden(
            "the request lacks a valid token with operator permission, which federation needs"
                .into(),
        )
    })?;
    if caller.is_anonymous() {
        tracing::warn!(receiver = ?q.dc, "federation stream refused: no credential");
        super::auth::record_denial(
            &st,
            "federation.stream",
            "operator",
            "no credential: federation needs a token with operator permission",
        );
        return Err(ApiError::Forbidden(
            "the anonymous token (no credential was sent) lacks the token with operator permission that federation needs".into(),
        ));
    }
    if let Err(e) = caller.require(&st, Resource::Operator, Access::Read) {
        tracing::warn!(receiver = ?q.dc, error = %e, "federation stream refused");
        return Err(e);
    }
    let receiver = match q.dc.as_deref() {
        None | Some("") => None,
        Some(d) => Some(Datacenter::new(d)?),
    };
    if receiver.as_ref() == Some(st.registry.local_dc()) {
        return Err(ApiError::BadRequest(format!(
            "dc {:?} is this datacenter: a datacenter does not stream from itself",
            st.registry.local_dc().as_str()
        )));
    }
    if q.since > crate::core::MAX_INDEX {
        return Err(ApiError::BadRequest(format!(
            "since {} is beyond the largest index",
            q.since
        )));
    }
    let body = crate::federation::stream::start(&st.federation, q.since, receiver);
    Ok((
        [(header::CONTENT_TYPE, "application/vnd.maxine.federation")],
        axum::body::Body::new(body),
    )
        .into_response())
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// `GET /v1/datacenters`: this datacenter and every one known from
/// federation, with reachability, round-trip time, replication lag, last
/// contact and catalog size.
pub async fn datacenters(
    State(st): State<HttpState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(&st, Resource::Operator, Access::Read)?;
    let mut counts: std::collections::BTreeMap<Datacenter, (usize, usize)> = Default::default();
    for s in st.registry.services() {
        let c = counts.entry(s.key.dc.clone()).or_default();
        c.0 += 1;
        c.1 += s.instances.len();
    }
    let local = st.registry.local_dc().clone();
    let (ls, li) = counts.get(&local).copied().unwrap_or_default();
    let mut out = vec![json!({
        "name": local.as_str(),
        "local": true,
        "reachable": true,
        "stale": false,
        "index": st.registry.index(),
        "services": ls,
        "instances": li,
        "snapshots_sent": st.federation.snapshots_sent(),
    })];
    let now = SystemTime::now();
    for (dc, s, via) in st.federation.peers() {
        let (services, instances) = counts.get(&dc).copied().unwrap_or_default();
        let lag_seconds = s
            .behind_since
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or(Duration::ZERO)
            .as_secs_f64();
        out.push(json!({
            "name": dc.as_str(),
            "local": false,
            "via": via.as_ref().filter(|v| **v != dc).map(|v| v.as_str()),
            "reachable": s.reachable,
            "stale": st.registry.failover().is_stale(&dc),
            "rtt_ms": s.rtt.map(|r| r.as_secs_f64() * 1000.0),
            "applied_index": s.applied_index,
            "peer_index": s.peer_index,
            "lag_indexes": s.peer_index.saturating_sub(s.applied_index),
            "lag_seconds": lag_seconds,
            "last_contact_ms": s.last_contact.map(unix_ms),
            "services": services,
            "instances": instances,
            "snapshots_received": s.snapshots_received,
            "resumes": s.resumes,
            "from_file": s.from_file,
            "denied": s.denied,
            "error": s.error,
        }));
    }
    let (order, _) = st
        .registry
        .failover()
        .order_of(&ServiceName::new("x").expect("valid"));
    let overrides: serde_json::Map<String, serde_json::Value> = st
        .registry
        .failover()
        .overrides()
        .into_iter()
        .map(|(s, o)| {
            (
                s.to_string(),
                json!(o.iter().map(|d| d.as_str()).collect::<Vec<_>>()),
            )
        })
        .collect();
    Ok(Json(json!({
        "datacenters": out,
        "failover": {
            "order": order.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
            "overrides": overrides,
            "ttl": st.registry.failover().ttl(),
            "srv_tiers": st.registry.failover().srv_tiers(),
        },
    }))
    .into_response())
}

/// Body of `PUT /v1/services/{service}/failover`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct FailoverBody {
    /// Datacenters to fail over to, in order; `null` removes the override.
    datacenters: Option<Vec<String>>,
}

/// `PUT /v1/services/{service}/failover`: the service's own failover
/// order (configuration: kept in `<data_dir>/federation/failover.json`,
/// not in the registry's journal). Needs operator write.
pub async fn put_failover(
    State(st): State<HttpState>,
    ApiPath(service): ApiPath<String>,
    caller: Caller,
    ApiJson(body): ApiJson<FailoverBody>,
) -> Result<Response, ApiError> {
    let service = ServiceName::new(&service)?;
    caller.require(&st, Resource::Operator, Access::Write)?;
    let order = match body.datacenters {
        None => None,
        Some(list) => {
            if list.len() > 64 {
                return Err(ApiError::BadRequest(
                    "at most 64 failover datacenters".into(),
                ));
            }
            let mut out: Vec<Datacenter> = Vec::with_capacity(list.len());
            for d in list {
                let dc = Datacenter::new(&d)?;
                if &dc == st.registry.local_dc() {
                    return Err(ApiError::BadRequest(format!(
                        "{d:?} is this datacenter; list the datacenters to fail over to"
                    )));
                }
                if !out.contains(&dc) {
                    out.push(dc);
                }
            }
            Some(out)
        }
    };
    st.federation
        .set_override(service.clone(), order.clone())
        .map_err(|e| ApiError::Unavailable(format!("the failover order was not saved: {e}")))?;
    Ok(Json(json!({
        "service": service.as_str(),
        "datacenters": order.map(|o| o.iter().map(|d| d.to_string()).collect::<Vec<_>>()),
    }))
    .into_response())
}
