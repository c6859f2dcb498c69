//! The native JSON API under `/v1`: register, heartbeat, deregister, list,
//! and the probes. Handlers validate the wire values into core types, ask the
//! registry, and shape the answer; none holds business logic.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;

use crate::policy::Resource;

use super::auth::Caller;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
pub use super::instance_view::{InstanceView, view, view_named};
use super::{HttpState, applied_value, dns_names, durable, indexed, propose};
use crate::core::{
    Access, Address, Change, Datacenter, Health, InstanceId, InstanceSpec, Query, QueryContext,
    ServiceKey, ServiceName, Transport, VersionSelector,
};

/// Body of `PUT /v1/services/{service}/instances/{id}`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// IP address the instance listens on.
    address: String,
    /// TCP port, 1 to 65535 (wider type so that 70000 gets a clear message).
    port: i64,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    /// SRV weight, 1 to 65535. Default 1.
    #[serde(default)]
    weight: Option<i64>,
    /// Heartbeat TTL: seconds, or a duration string such as "30s". Default 30 s.
    #[serde(default)]
    ttl: Option<Ttl>,
    /// Health checks (docs/health.md).
    #[serde(default)]
    checks: Option<Vec<super::checks::CheckBody>>,
}

impl RegisterBody {
    /// The spec; script checks only when `scripts` (`--enable-script-checks`).
    fn into_spec(self, scripts: bool) -> Result<InstanceSpec, ApiError> {
        let address = match Address::parse(&self.address) {
            Ok(a @ Address::Ip(_)) => a,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "address {:?} is not an IP address (the native API registers IP addresses only)",
                    self.address
                )));
            }
        };
        let port = u16::try_from(self.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "port must be between 1 and 65535, not {}",
                    self.port
                ))
            })?;
        let mut spec = InstanceSpec::new(address, port);
        if let Some(w) = self.weight {
            spec.weight = u16::try_from(w).ok().filter(|w| *w != 0).ok_or_else(|| {
                ApiError::BadRequest(format!("weight must be between 1 and 65535, not {w}"))
            })?;
        }
        if let Some(Ttl(ttl)) = self.ttl {
            spec.ttl = ttl;
        }
        spec.version = self.version.unwrap_or_default();
        spec.tags = self.tags.unwrap_or_default();
        spec.metadata = self.metadata.unwrap_or_default();
        spec.checks = super::checks::specs(self.checks, scripts)?;
        // Bounds (TTL range, tag and metadata sizes) are checked once, by the core.
        spec.validate()
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        Ok(spec)
    }
}

/// A number of seconds ("30") or a duration ("30s", "1m 30s").
pub(super) fn seconds_or_duration(text: &str) -> Result<Duration, humantime::DurationError> {
    let t = text.trim();
    match t.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(t),
    }
}

/// A TTL given as a number of seconds or as a duration string ("30s", "1m").
#[derive(Debug, Clone, Copy)]
pub struct Ttl(pub Duration);

impl<'de> Deserialize<'de> for Ttl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Ttl;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of seconds or a duration such as \"30s\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Ttl, E> {
                Ok(Ttl(Duration::from_secs(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Ttl, E> {
                u64::try_from(v)
                    .map(|s| Ttl(Duration::from_secs(s)))
                    .map_err(|_| E::custom(format!("ttl must not be negative, got {v}")))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Ttl, E> {
                Duration::try_from_secs_f64(v)
                    .map(Ttl)
                    .map_err(|_| E::custom(format!("ttl {v} is not a valid number of seconds")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Ttl, E> {
                seconds_or_duration(v).map(Ttl).map_err(|e| {
                    E::custom(format!("ttl {v:?} is not a duration such as \"30s\": {e}"))
                })
            }
        }
        d.deserialize_any(V)
    }
}

pub(super) fn names(service: &str, id: &str) -> Result<(ServiceName, InstanceId), ApiError> {
    Ok((ServiceName::new(service)?, InstanceId::new(id)?))
}

/// `PUT /v1/services/{service}/instances/{id}`: register or replace.
pub async fn register(
    State(st): State<HttpState>,
    ApiPath((service, id)): ApiPath<(String, String)>,
    caller: Caller,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<Response, ApiError> {
    let (service, id) = names(&service, &id)?;
    caller.require(&st, Resource::Service(service.as_str()), Access::Write)?;
    let spec = body.into_spec(st.script_checks)?;
    let key = ServiceKey::new(st.registry.local_dc().clone(), service);
    let applied = propose(&st, Change::Register { key, id, spec }, &caller).await?;
    let inst = applied_value(&applied)
        .ok_or_else(|| ApiError::Internal("a registration applied without a value".into()))?;
    Ok(indexed(inst.index, view(&st, &inst)))
}

/// The answer to a heartbeat: what a heartbeating client needs (its status,
/// when to beat again, the index), not the whole instance, which a read
/// gives. A heartbeat is the most frequent request (ADR 0016).
#[derive(Serialize)]
struct HeartbeatAck<'a> {
    id: &'a str,
    health: Health,
    ttl: f64,
    index: u64,
}

/// `PUT /v1/services/{service}/instances/{id}/heartbeat`.
pub async fn heartbeat(
    State(st): State<HttpState>,
    ApiPath((service, id)): ApiPath<(String, String)>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let (service, id) = names(&service, &id)?;
    caller.require(&st, Resource::Service(service.as_str()), Access::Write)?;
    let key = ServiceKey::new(st.registry.local_dc().clone(), service);
    let (inst, index) = super::heartbeat(&st, &key, &id, &caller).await?;
    let ack = HeartbeatAck {
        id: inst.id.as_str(),
        health: inst.status(),
        ttl: inst.ttl().as_secs_f64(),
        index,
    };
    Ok(indexed(index, Json(ack)))
}

/// `DELETE /v1/services/{service}/instances/{id}`.
pub async fn deregister(
    State(st): State<HttpState>,
    ApiPath((service, id)): ApiPath<(String, String)>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let (service, id) = names(&service, &id)?;
    caller.require(&st, Resource::Service(service.as_str()), Access::Write)?;
    let key = ServiceKey::new(st.registry.local_dc().clone(), service);
    let index = propose(&st, Change::Deregister { key, id }, &caller)
        .await?
        .last_index;
    Ok(indexed(index, Json(json!({ "index": index }))))
}

#[derive(Serialize, Default)]
struct Counts {
    total: usize,
    passing: usize,
    /// Fewer healthy instances than the panic threshold: answers hold all
    /// of them (docs/health.md). Shown only when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    panic: bool,
    /// Instances ejected by outlier detection; shown only when some are.
    #[serde(skip_serializing_if = "is_zero")]
    ejected: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Self-preservation as the API shows it (`/v1/ready`, the listing).
fn preservation_view(p: &crate::core::SelfPreservation) -> serde_json::Value {
    json!({
        "reason": p.reason(),
        "silent": p.silent,
        "total": p.total,
        "threshold_percent": p.threshold,
    })
}

/// A blocking read's parameters: `?index=N` answers once the
/// index passes N (or at `wait`, default 5 min, at most 10 min).
pub struct Blocking;

const DEFAULT_WAIT: Duration = Duration::from_secs(300);
const MAX_WAIT: Duration = Duration::from_secs(600);

impl Blocking {
    /// The index to pass and how long to wait for it, when blocking.
    pub(super) fn parse(
        index: Option<u64>,
        wait: Option<&str>,
    ) -> Result<Option<(u64, Duration)>, ApiError> {
        let wait = match wait {
            None | Some("") => DEFAULT_WAIT,
            Some(w) => seconds_or_duration(w)
                .map_err(|e| {
                    ApiError::BadRequest(format!(
                        "wait {w:?} is not a duration such as \"30s\": {e}"
                    ))
                })?
                .min(MAX_WAIT),
        };
        // As in Consul, index 0 (or none) does not block.
        Ok(index.filter(|i| *i > 0).map(|i| (i, wait)))
    }
}

/// `GET /v1/services`: every service with its instance counts per
/// datacenter; only those the caller may read are listed.
pub async fn list_services(
    State(st): State<HttpState>,
    notice: super::recovery::Notice,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListFilter>,
) -> Result<Response, ApiError> {
    if let Some((index, wait)) = Blocking::parse(q.index, q.wait.as_deref())? {
        st.feed.wait_past(index, wait).await;
    }
    let dc = match q.dc.as_deref() {
        None | Some("") => None,
        Some(d) => Some(Datacenter::new(d)?),
    };
    let index = st.registry.index();
    let mut by_name: BTreeMap<String, BTreeMap<String, Counts>> = BTreeMap::new();
    for snap in st.registry.services() {
        if dc.as_ref().is_some_and(|d| *d != snap.key.dc) {
            continue;
        }
        if !caller.may(
            &st,
            Resource::Service(snap.key.service.as_str()),
            Access::Read,
        ) || !caller.may_discover(&st, &snap.key.service)
        {
            continue;
        }
        let counts = by_name
            .entry(snap.key.service.to_string())
            .or_default()
            .entry(snap.key.dc.to_string())
            .or_default();
        counts.total += snap.instances.len();
        counts.passing += snap.passing_count();
        counts.panic = snap.in_panic();
        counts.ejected += snap.ejected_count();
    }
    let services: Vec<_> = by_name
        .into_iter()
        .map(|(name, datacenters)| json!({ "name": name, "datacenters": datacenters }))
        .collect();
    let mut body = json!({ "index": index, "services": services });
    if let Some(p) = st.registry.self_preservation() {
        body["self_preservation"] = preservation_view(&p);
    }
    if let Some(r) = super::recovery::degraded(&notice) {
        body["recovery"] = r;
    }
    Ok(indexed(index, Json(body)))
}

/// Query of `GET /v1/services`: a blocking read, and one datacenter only.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ListFilter {
    index: Option<u64>,
    wait: Option<String>,
    /// Only the services of this datacenter (e.g. one replicated from a peer).
    dc: Option<String>,
}

/// Filters of `GET /v1/services/{service}`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ServiceFilter {
    /// Version selector such as `v2` or `v2-1`.
    version: Option<String>,
    /// Datacenter; default the local one.
    dc: Option<String>,
    /// Only passing instances. Default false.
    healthy: Option<bool>,
    /// Blocking read: answer once the service's index passes this.
    index: Option<u64>,
    /// Longest wait of a blocking read.
    wait: Option<String>,
}

/// `GET /v1/services/{service}`: the instances of one service.
pub async fn get_service(
    State(st): State<HttpState>,
    ApiPath(service): ApiPath<String>,
    caller: Caller,
    ApiQuery(filter): ApiQuery<ServiceFilter>,
) -> Result<Response, ApiError> {
    let service = ServiceName::new(&service)?;
    caller.require(&st, Resource::Service(service.as_str()), Access::Read)?;
    caller.require_intention(&st, &service)?;
    let peer = caller.client();
    let version = match filter.version.as_deref() {
        None | Some("") => None,
        Some(v) => Some(VersionSelector::parse(v).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "version {v:?} is not a selector such as v2, v2-1 or v2-1-0"
            ))
        })?),
    };
    let dc = match filter.dc.as_deref() {
        None | Some("") => st.registry.local_dc().clone(),
        Some(d) => Datacenter::new(d)?,
    };
    let key = ServiceKey::new(dc.clone(), service.clone());
    if let Some((index, wait)) = Blocking::parse(filter.index, filter.wait.as_deref())? {
        st.feed.wait_for_service(&key, index, wait).await;
    }
    if st.registry.service(&key).is_none() {
        return Err(ApiError::NotFound(format!(
            "service {:?} has no instances in datacenter {:?}",
            service.as_str(),
            dc.as_str()
        )));
    }
    let answer = st.registry.select(
        &Query {
            dc: Some(dc.clone()),
            service: service.clone(),
            version,
            healthy_only: filter.healthy.unwrap_or(false),
        },
        &QueryContext::new(peer, Transport::Http),
    );
    let names = dns_names(&st, &dc, &service);
    // Typed, not `json!`: a `serde_json::Value` sorts its keys, and an
    // instance must read the same here as in a registration's answer.
    let snap = st.registry.service(&key);
    let body = ServiceBody {
        service: &service,
        datacenter: &dc,
        strategy: snap
            .as_ref()
            .map_or(st.registry.settings_of(&key).strategy, |s| {
                s.settings.strategy
            })
            .as_str(),
        panic: snap.as_ref().is_some_and(|s| s.in_panic()),
        ejected: snap.as_ref().map_or_else(Vec::new, |s| {
            s.instances
                .values()
                .filter(|i| s.is_ejected(i))
                .map(|i| i.id.to_string())
                .collect()
        }),
        index: answer.index,
        dns: ServiceDns {
            name: names.name.clone(),
            srv: names.srv.clone(),
        },
        instances: answer
            .instances
            .iter()
            .map(|i| view_named(Cow::Borrowed(&names), i))
            .collect(),
    };
    Ok(indexed(answer.index, Json(body)))
}

/// The answer of `GET /v1/services/{service}`.
#[derive(Serialize)]
struct ServiceBody<'a> {
    service: &'a ServiceName,
    datacenter: &'a Datacenter,
    /// How answers spread load (`/v1/services/{service}/config`).
    strategy: &'static str,
    /// Fewer healthy instances than the panic threshold: answers hold all.
    panic: bool,
    /// Instances ejected by outlier detection (out of answers for a while).
    ejected: Vec<String>,
    index: u64,
    dns: ServiceDns,
    instances: Vec<InstanceView<'a>>,
}

#[derive(Serialize)]
struct ServiceDns {
    name: String,
    srv: String,
}

/// `GET /v1/health`: the process is up.
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /v1/ready`: every listener is up and the server is not shutting down.
pub async fn ready(State(st): State<HttpState>, notice: super::recovery::Notice) -> Response {
    let log = st.log.status();
    if let Some(("catching up", detail)) = &log {
        // DNS answers from the last local state; the API waits for the rest.
        let body = json!({ "status": "catching up", "detail": detail });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    if st.ready.load(Ordering::Acquire) {
        let mut body = json!({ "status": "ready" });
        if let Some(d) = super::recovery::degraded(&notice) {
            body["degraded"] = d;
        }
        // Still ready (answers are served), but expiry is held back.
        if let Some(p) = st.registry.self_preservation() {
            body["reason"] = json!(p.reason());
            body["self_preservation"] = preservation_view(&p);
        }
        if let Some((registry, detail)) = log {
            body["registry"] = json!(registry);
            body["detail"] = json!(detail);
        }
        Json(body).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready" })),
        )
            .into_response()
    }
}

/// `GET /v1/openapi.json`.
pub async fn openapi(State(st): State<HttpState>) -> Json<serde_json::Value> {
    Json(super::openapi::document(&st.domain))
}

/// `GET /v1/snapshot`: every instance at one index, as a snapshot file for
/// backups (`maxine snapshot save`), sent once all of it is durable. The
/// file is encoded service by service as the body is sent; at most
/// `snapshot_streams` are sent at once (503 with `Retry-After` beyond).
pub async fn snapshot(State(st): State<HttpState>, caller: Caller) -> Result<Response, ApiError> {
    // A snapshot holds every token's hash and every policy: operator and ACL reads.
    caller.require(&st, Resource::Operator, Access::Read)?;
    caller.require(&st, Resource::Acl, Access::Read)?;
    let Some(place) = st.snapshot_streams.try_take() else {
        let mut res = ApiError::Unavailable(
            "as many snapshots as allowed are being sent; try again shortly".into(),
        )
        .into_response();
        res.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return Ok(res);
    };
    let (index, services, acl) = st.registry.backup();
    // A store that lost its data holds none of this: memory (where every
    // failed change was undone) is the only copy of what was acknowledged,
    // and a snapshot of it is the way back (docs/operations.md).
    if let Some(why) = durable(&st, index).await? {
        tracing::warn!(%why, index, "snapshot taken from memory: the store lost its data");
    }
    let body = SnapshotBody {
        encoder: crate::store::snapshot::Encoder::new(index, services, acl),
        _place: place,
    };
    let disposition = format!("attachment; filename=\"maxine-{index}.snapshot\"");
    Ok(indexed(
        index,
        (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (header::CONTENT_DISPOSITION, disposition),
            ],
            axum::body::Body::new(body),
        ),
    ))
}

/// A snapshot file as a body, one service per frame; holds its place
/// among the snapshot streams until it is sent or dropped.
struct SnapshotBody {
    encoder: crate::store::snapshot::Encoder,
    _place: tokio::sync::OwnedSemaphorePermit,
}

impl hyper::body::Body for SnapshotBody {
    type Data = hyper::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let chunk = self.get_mut().encoder.next();
        std::task::Poll::Ready(chunk.map(|c| Ok(hyper::body::Frame::data(c.into()))))
    }
}
