//! Blacklists (`/v1/blacklist`): services, instances and networks Maxine
//! refuses (docs/security.md "Blacklists"). Each write is a change
//! proposed through the log, like an intention; the registry refuses
//! registrations the entry names, `askers` refuses DNS queries from a
//! listed network, and instances already registered that the entry names
//! are deregistered before the write is acknowledged.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Caller, unix_ms};
use super::error::{ApiError, ApiJson, ApiPath};
use super::{HttpState, indexed, objects, propose};
use crate::core::{
    Access, AclChange, AclKey, AclObject, BlacklistEntry, BlacklistTarget, Change, Cidr,
    InstanceId, Outcome, ServiceName,
};
use crate::policy::Resource;

/// Longest ttl an entry may have.
const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// Body of `PUT /v1/blacklist/...`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct BlacklistBody {
    reason: String,
    /// A duration (`10m`, `1h 30m`) or seconds; none: until deleted.
    #[serde(default)]
    ttl: Option<String>,
}

fn rfc3339(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn view(b: &BlacklistEntry, now: u64) -> Value {
    let mut v = json!({
        "kind": b.target.kind(),
        "reason": b.reason,
        "created_at": rfc3339(b.created_at),
        "expires_at": b.expires_at.map(rfc3339),
        "expires_in_seconds": b.expires_at.map(|at| at.saturating_sub(now).div_ceil(1000)),
        "index": b.index,
    });
    match &b.target {
        BlacklistTarget::Service(s) => v["service"] = json!(s.as_str()),
        BlacklistTarget::Instance(s, i) => {
            v["service"] = json!(s.as_str());
            v["id"] = json!(i.as_str());
        }
        BlacklistTarget::Cidr(c) => v["cidr"] = json!(c.to_string()),
    }
    v
}

fn service(raw: &str) -> Result<ServiceName, ApiError> {
    ServiceName::new(raw).map_err(|e| ApiError::BadRequest(format!("service: {e}")))
}

fn instance(raw_service: &str, raw_id: &str) -> Result<BlacklistTarget, ApiError> {
    let id = InstanceId::new(raw_id).map_err(|e| ApiError::BadRequest(format!("id: {e}")))?;
    Ok(BlacklistTarget::Instance(service(raw_service)?, id))
}

/// `10.0.0.0/8` (sent as `10.0.0.0%2F8`) or `10.0.0.0-8`.
fn cidr(raw: &str) -> Result<BlacklistTarget, ApiError> {
    Cidr::parse_path(raw)
        .map(BlacklistTarget::Cidr)
        .map_err(|e| ApiError::BadRequest(format!("cidr: {e} (or 10.0.0.0-8)")))
}

/// Who may write (and read) an entry: `service:write` on the service for
/// services and instances, `acl:write` for networks.
fn require(
    st: &HttpState,
    caller: &Caller,
    target: &BlacklistTarget,
    access: Access,
) -> Result<(), ApiError> {
    match target {
        BlacklistTarget::Service(s) | BlacklistTarget::Instance(s, _) => {
            caller.require(st, Resource::Service(s.as_str()), access)
        }
        BlacklistTarget::Cidr(_) => caller.require(st, Resource::Acl, access),
    }
}

fn may_read(st: &HttpState, caller: &Caller, target: &BlacklistTarget) -> bool {
    match target {
        BlacklistTarget::Service(s) | BlacklistTarget::Instance(s, _) => {
            caller.may(st, Resource::Service(s.as_str()), Access::Read)
        }
        BlacklistTarget::Cidr(_) => caller.may(st, Resource::Acl, Access::Read),
    }
}

pub async fn list(State(st): State<HttpState>, caller: Caller) -> Result<Response, ApiError> {
    let now = unix_ms();
    let entries = st.registry.blacklist();
    let views = entries
        .iter()
        .filter(|b| may_read(&st, &caller, &b.target))
        .map(|b| view(b, now));
    Ok(objects::list(&st, "blacklist", views))
}

async fn put(
    st: HttpState,
    caller: Caller,
    target: BlacklistTarget,
    body: BlacklistBody,
) -> Result<Response, ApiError> {
    require(&st, &caller, &target, Access::Write)?;
    let now = unix_ms();
    let expires_at = match body.ttl.as_deref() {
        None => None,
        Some(raw) => {
            let ttl = super::native::seconds_or_duration(raw)
                .map_err(|e| ApiError::BadRequest(format!("ttl {raw:?}: {e}")))?;
            if ttl < Duration::from_secs(1) || ttl > MAX_TTL {
                return Err(ApiError::BadRequest(format!(
                    "ttl {raw:?} must be between 1s and {}",
                    humantime::format_duration(MAX_TTL)
                )));
            }
            Some(now.saturating_add(ttl.as_millis() as u64))
        }
    };
    let entry = BlacklistEntry {
        target,
        reason: body.reason,
        created_at: now,
        expires_at,
        index: 0,
    };
    entry
        .validate()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let change = Change::Acl(AclChange::Put(AclObject::Blacklist(Arc::new(entry))));
    let applied = propose(&st, change, &caller).await?;
    let Some((_, Outcome::Acl(Some(AclObject::Blacklist(b))))) = applied.outcomes.first() else {
        return Err(ApiError::Internal(
            "a blacklist entry applied without a value".into(),
        ));
    };
    let b = b.clone();
    deregister_listed(&st, &caller, &b).await?;
    Ok(indexed(b.index, Json(view(&b, now))))
}

/// Deregisters the local datacenter's instances the entry names, before
/// the write is acknowledged: from here on they are in no answer. (They
/// cannot come back while the entry stands: registration is refused.)
async fn deregister_listed(
    st: &HttpState,
    caller: &Caller,
    b: &BlacklistEntry,
) -> Result<(), ApiError> {
    let local = st.registry.local_dc().clone();
    let mut changes = Vec::new();
    for snap in st.registry.services() {
        if snap.key.dc != local {
            continue;
        }
        for inst in snap.instances.values() {
            let listed = match &b.target {
                BlacklistTarget::Service(s) => *s == snap.key.service,
                BlacklistTarget::Instance(s, id) => *s == snap.key.service && *id == inst.id,
                BlacklistTarget::Cidr(c) => {
                    inst.address.addresses().iter().any(|ip| c.contains(*ip))
                }
            };
            if listed {
                changes.push(Change::Deregister {
                    key: snap.key.clone(),
                    id: inst.id.clone(),
                });
            }
        }
    }
    for change in changes {
        match propose(st, change, caller).await {
            // Gone meanwhile: so much the better.
            Ok(_) | Err(ApiError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn delete(
    st: HttpState,
    caller: Caller,
    target: BlacklistTarget,
) -> Result<Response, ApiError> {
    require(&st, &caller, &target, Access::Write)?;
    let change = Change::Acl(AclChange::Delete(AclKey::Blacklist(target)));
    let index = propose(&st, change, &caller).await?.last_index;
    Ok(indexed(index, Json(json!({ "index": index }))))
}

pub async fn put_service(
    State(st): State<HttpState>,
    ApiPath(name): ApiPath<String>,
    caller: Caller,
    ApiJson(body): ApiJson<BlacklistBody>,
) -> Result<Response, ApiError> {
    let target = BlacklistTarget::Service(service(&name)?);
    put(st, caller, target, body).await
}

pub async fn delete_service(
    State(st): State<HttpState>,
    ApiPath(name): ApiPath<String>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let target = BlacklistTarget::Service(service(&name)?);
    delete(st, caller, target).await
}

pub async fn put_instance(
    State(st): State<HttpState>,
    ApiPath((name, id)): ApiPath<(String, String)>,
    caller: Caller,
    ApiJson(body): ApiJson<BlacklistBody>,
) -> Result<Response, ApiError> {
    put(st, caller, instance(&name, &id)?, body).await
}

pub async fn delete_instance(
    State(st): State<HttpState>,
    ApiPath((name, id)): ApiPath<(String, String)>,
    caller: Caller,
) -> Result<Response, ApiError> {
    delete(st, caller, instance(&name, &id)?).await
}

pub async fn put_cidr(
    State(st): State<HttpState>,
    ApiPath(raw): ApiPath<String>,
    caller: Caller,
    ApiJson(body): ApiJson<BlacklistBody>,
) -> Result<Response, ApiError> {
    put(st, caller, cidr(&raw)?, body).await
}

pub async fn delete_cidr(
    State(st): State<HttpState>,
    ApiPath(raw): ApiPath<String>,
    caller: Caller,
) -> Result<Response, ApiError> {
    delete(st, caller, cidr(&raw)?).await
}
