//! Who may find whom: intentions (`/v1/intentions`), the DNS client
//! networks (`/v1/acl/dns-clients`) and TSIG keys (`/v1/acl/tsig-keys`). Each write is a change proposed
//! through the log, like a token; DNS answers follow it before the write
//! is acknowledged (docs/adr/0011-asker-classes.md).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::error::{ApiError, ApiJson, ApiPath};
use super::{HttpState, indexed, propose};
use crate::core::{
    Access, AclChange, AclKey, AclObject, Change, Cidr, DnsClient, Intention, IntentionAction,
    Outcome, Side, TsigKey,
};
use crate::policy::Resource;

fn intention_view(i: &Intention) -> Value {
    json!({
        "source": i.source.as_str(),
        "destination": i.destination.as_str(),
        "action": i.action.as_str(),
        "description": i.description,
        "index": i.index,
    })
}

fn dns_client_view(c: &DnsClient) -> Value {
    json!({
        "name": c.name,
        "cidrs": c.cidrs.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        "policies": c.policies,
        "index": c.index,
    })
}

fn applied_object(applied: &crate::core::Applied) -> Option<AclObject> {
    match applied.outcomes.first() {
        Some((_, Outcome::Acl(o))) => o.clone(),
        _ => None,
    }
}

fn sides(source: &str, destination: &str) -> Result<(Side, Side), ApiError> {
    let side = |what: &str, raw: &str| {
        Side::parse(raw).map_err(|e| ApiError::BadRequest(format!("{what}: {e}")))
    };
    Ok((side("source", source)?, side("destination", destination)?))
}

// ---- intentions ----

/// Body of `PUT /v1/intentions/{source}/{destination}`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct IntentionBody {
    action: String,
    #[serde(default)]
    description: String,
}

pub async fn list(State(st): State<HttpState>, caller: Caller) -> Result<Response, ApiError> {
    let all: Vec<Value> = st
        .registry
        .intentions()
        .iter()
        .filter(|i| caller.may(&st, Resource::Service(i.destination.as_str()), Access::Read))
        .map(|i| intention_view(i))
        .collect();
    Ok(indexed(
        st.registry.index(),
        Json(json!({ "intentions": all })),
    ))
}

pub async fn get(
    State(st): State<HttpState>,
    ApiPath((source, destination)): ApiPath<(String, String)>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let (s, d) = sides(&source, &destination)?;
    caller.require(&st, Resource::Service(d.as_str()), Access::Read)?;
    match st
        .registry
        .acl_object(&AclKey::Intention(s.clone(), d.clone()))
    {
        Some(AclObject::Intention(i)) => Ok(indexed(i.index, Json(intention_view(&i)))),
        _ => Err(ApiError::NotFound(format!(
            "intention {s} -> {d} does not exist"
        ))),
    }
}

pub async fn put(
    State(st): State<HttpState>,
    ApiPath((source, destination)): ApiPath<(String, String)>,
    caller: Caller,
    ApiJson(body): ApiJson<IntentionBody>,
) -> Result<Response, ApiError> {
    let (s, d) = sides(&source, &destination)?;
    let action = IntentionAction::parse(&body.action).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "action {:?} is neither \"allow\" nor \"deny\"",
            body.action
        ))
    })?;
    caller.require(&st, Resource::Service(d.as_str()), Access::Write)?;
    let intention = Intention {
        source: s,
        destination: d,
        action,
        description: body.description,
        index: 0,
    };
    intention
        .validate()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let change = Change::Acl(AclChange::Put(AclObject::Intention(Arc::new(intention))));
    let applied = propose(&st, change, &caller).await?;
    match applied_object(&applied) {
        Some(AclObject::Intention(i)) => Ok(indexed(i.index, Json(intention_view(&i)))),
        _ => Err(ApiError::Internal(
            "an intention applied without a value".into(),
        )),
    }
}

pub async fn delete(
    State(st): State<HttpState>,
    ApiPath((source, destination)): ApiPath<(String, String)>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let (s, d) = sides(&source, &destination)?;
    caller.require(&st, Resource::Service(d.as_str()), Access::Write)?;
    let change = Change::Acl(AclChange::Delete(AclKey::Intention(s, d)));
    let index = propose(&st, change, &caller).await?.last_index;
    Ok(indexed(index, Json(json!({ "index": index }))))
}

// ---- DNS client networks ----

/// Body of `PUT /v1/acl/dns-clients/{name}`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct DnsClientBody {
    cidrs: Vec<String>,
    #[serde(default)]
    policies: Vec<String>,
}

pub async fn list_dns_clients(
    State(st): State<HttpState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(&st, Resource::Acl, Access::Read)?;
    let all: Vec<Value> = st
        .registry
        .dns_clients()
        .iter()
        .map(|c| dns_client_view(c))
        .collect();
    Ok(indexed(
        st.registry.index(),
        Json(json!({ "dns_clients": all })),
    ))
}

pub async fn get_dns_client(
    State(st): State<HttpState>,
    ApiPath(name): ApiPath<String>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(&st, Resource::Acl, Access::Read)?;
    match st.registry.acl_object(&AclKey::DnsClient(name.clone())) {
        Some(AclObject::DnsClient(c)) => Ok(indexed(c.index, Json(dns_client_view(&c)))),
        _ => Err(ApiError::NotFound(format!(
            "DNS client {name:?} does not exist"
        ))),
    }
}

pub async fn put_dns_client(
    State(st): State<HttpState>,
    ApiPath(name): ApiPath<String>,
    caller: Caller,
    ApiJson(body): ApiJson<DnsClientBody>,
) -> Result<Response, ApiError> {
    caller.require(&st, Resource::Acl, Access::Write)?;
    if body.cidrs.len() > crate::core::intention::MAX_CLIENT_CIDRS {
        return Err(ApiError::BadRequest(format!(
            "a DNS client lists at most {} networks",
            crate::core::intention::MAX_CLIENT_CIDRS
        )));
    }
    let cidrs = body
        .cidrs
        .iter()
        .map(|c| Cidr::parse(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::BadRequest(format!("cidrs: {e}")))?;
    let client = DnsClient {
        name,
        cidrs,
        policies: body.policies,
        index: 0,
    };
    let change = Change::Acl(AclChange::Put(AclObject::DnsClient(Arc::new(client))));
    let applied = propose(&st, change, &caller).await?;
    match applied_object(&applied) {
        Some(AclObject::DnsClient(c)) => Ok(indexed(c.index, Json(dns_client_view(&c)))),
        _ => Err(ApiError::Internal(
            "a DNS client applied without a value".into(),
        )),
    }
}

pub async fn delete_dns_client(
    State(st): State<HttpState>,
    ApiPath(name): ApiPath<String>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(&st, Resource::Acl, Access::Write)?;
    let change = Change::Acl(AclChange::Delete(AclKey::DnsClient(name)));
    let index = propose(&st, change, &caller).await?.last_index;
    Ok(indexed(index, Json(json!({ "index": index }))))
}

// ---- TSIG keys ----

/// A key as listed: never its secret.
fn tsig_key_view(k: &TsigKey) -> Value {
    json!({
        "name": k.name,
        "algorithm": k.algorithm,
        "token": k.token,
        "index": k.index,
    })
}

/// Body of `PUT /v1/acl/tsig-keys/{name}`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct TsigKeyBody {
    #[serde(default = "default_tsig_algorithm")]
    algorithm: String,
    /// Base64 (standard alphabet, padded), as `tsig-keygen` and `dig -y` write it.
    secret: String,
    /// The accessor of the token whose policies a signed query gets.
    token: String,
}

fn default_tsig_algorithm() -> String {
    "hmac-sha256".into()
}

pub async fn list_tsig_keys(
    State(st): State<HttpState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(&st, Resource::Acl, Access::Read)?;
    let all: Vec<Value> = st
        .registry
        .tsig_keys()
        .iter()
        .map(|k| tsig_key_view(k))
        .collect();
    Ok(indexed(
        st.registry.index(),
        Json(json!({ "tsig_keys": all })),
    ))
}

pub async fn get_tsig_key(
    State(st): State<HttpState>,
    ApiPath(name): ApiPath<String>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(&st, Resource::Acl, Access::Read)?;
    match st.registry.acl_object(&AclKey::TsigKey(name.clone())) {
        Some(AclObject::TsigKey(k)) => Ok(indexed(k.index, Json(tsig_key_view(&k)))),
        _ => Err(ApiError::NotFound(format!(
            "TSIG key {name:?} does not exist"
        ))),
    }
}

pub async fn put_tsig_key(
    State(st): State<HttpState>,
    ApiPath(name): ApiPath<String>,
    caller: Caller,
    ApiJson(body): ApiJson<TsigKeyBody>,
) -> Result<Response, ApiError> {
    use base64::Engine;
    caller.require(&st, Resource::Acl, Access::Write)?;
    if body.secret.len() > 2 * crate::core::tsig::MAX_SECRET_LEN {
        return Err(ApiError::BadRequest("secret: too long".into()));
    }
    let secret = base64::engine::general_purpose::STANDARD
        .decode(body.secret.trim())
        .map_err(|e| ApiError::BadRequest(format!("secret: not base64 ({e})")))?;
    let key = TsigKey {
        name: name.trim_end_matches('.').to_ascii_lowercase(),
        algorithm: body.algorithm.to_ascii_lowercase(),
        secret,
        token: body.token,
        index: 0,
    };
    key.validate()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let change = Change::Acl(AclChange::Put(AclObject::TsigKey(Arc::new(key))));
    let applied = propose(&st, change, &caller).await?;
    match applied_object(&applied) {
        Some(AclObject::TsigKey(k)) => Ok(indexed(k.index, Json(tsig_key_view(&k)))),
        _ => Err(ApiError::Internal(
            "a TSIG key applied without a value".into(),
        )),
    }
}

pub async fn delete_tsig_key(
    State(st): State<HttpState>,
    ApiPath(name): ApiPath<String>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(&st, Resource::Acl, Access::Write)?;
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let change = Change::Acl(AclChange::Delete(AclKey::TsigKey(name)));
    let index = propose(&st, change, &caller).await?.last_index;
    Ok(indexed(index, Json(json!({ "index": index }))))
}
