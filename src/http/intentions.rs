//! Who may find whom: intentions (`/v1/intentions`), the DNS client
//! networks (`/v1/acl/dns-clients`) and TSIG keys (`/v1/acl/tsig-keys`). Each write is a change proposed
//! through the log, like a token; DNS answers follow it before the write
//! is acknowledged (docs/adr/0011-asker-classes.md).

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::error::{ApiError, ApiJson, ApiPath};
use super::{HttpState, objects};
use crate::core::{
    Access, AclKey, AclObject, Cidr, DnsClient, Intention, IntentionAction, Side, TsigKey,
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

fn intention_answer(o: &AclObject) -> Option<(u64, Value)> {
    match o {
        AclObject::Intention(i) => Some((i.index, intention_view(i))),
        _ => None,
    }
}

fn dns_client_answer(o: &AclObject) -> Option<(u64, Value)> {
    match o {
        AclObject::DnsClient(c) => Some((c.index, dns_client_view(c))),
        _ => None,
    }
}

fn tsig_key_answer(o: &AclObject) -> Option<(u64, Value)> {
    match o {
        AclObject::TsigKey(k) => Some((k.index, tsig_key_view(k))),
        _ => None,
    }
}

/// A TSIG key's name as stored: DNS names compare without case and the
/// final dot.
fn tsig_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
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
    let intentions = st.registry.intentions();
    let may_read = |i: &&Arc<Intention>| {
        caller.may(&st, Resource::Service(i.destination.as_str()), Access::Read)
    };
    let views = intentions
        .iter()
        .filter(may_read)
        .map(|i| intention_view(i));
    Ok(objects::list(&st, "intentions", views))
}

pub async fn get(
    State(st): State<HttpState>,
    ApiPath((source, destination)): ApiPath<(String, String)>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let (s, d) = sides(&source, &destination)?;
    caller.require(&st, Resource::Service(d.as_str()), Access::Read)?;
    let missing = format!("intention {s} -> {d} does not exist");
    objects::get(&st, &AclKey::Intention(s, d), intention_answer, missing)
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
    let object = AclObject::Intention(Arc::new(intention));
    objects::put(&st, &caller, object, intention_answer).await
}

pub async fn delete(
    State(st): State<HttpState>,
    ApiPath((source, destination)): ApiPath<(String, String)>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let (s, d) = sides(&source, &destination)?;
    caller.require(&st, Resource::Service(d.as_str()), Access::Write)?;
    objects::delete(&st, &caller, AclKey::Intention(s, d)).await
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
    let clients = st.registry.dns_clients();
    let views = clients.iter().map(|c| dns_client_view(c));
    Ok(objects::list(&st, "dns_clients", views))
}

pub async fn get_dns_client(
    State(st): State<HttpState>,
    ApiPath(name): ApiPath<String>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(&st, Resource::Acl, Access::Read)?;
    let missing = format!("DNS client {name:?} does not exist");
    objects::get(&st, &AclKey::DnsClient(name), dns_client_answer, missing)
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
    let object = AclObject::DnsClient(Arc::new(client));
    objects::put(&st, &caller, object, dns_client_answer).await
}

pub async fn delete_dns_client(
    State(st): State<HttpState>,
    ApiPath(name): ApiPath<String>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(&st, Resource::Acl, Access::Write)?;
    objects::delete(&st, &caller, AclKey::DnsClient(name)).await
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
    let keys = st.registry.tsig_keys();
    let views = keys.iter().map(|k| tsig_key_view(k));
    Ok(objects::list(&st, "tsig_keys", views))
}

pub async fn get_tsig_key(
    State(st): State<HttpState>,
    ApiPath(name): ApiPath<String>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(&st, Resource::Acl, Access::Read)?;
    let missing = format!("TSIG key {name:?} does not exist");
    objects::get(
        &st,
        &AclKey::TsigKey(tsig_name(&name)),
        tsig_key_answer,
        missing,
    )
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
        name: tsig_name(&name),
        algorithm: body.algorithm.to_ascii_lowercase(),
        secret,
        token: body.token,
        index: 0,
    };
    key.validate()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let object = AclObject::TsigKey(Arc::new(key));
    objects::put(&st, &caller, object, tsig_key_answer).await
}

pub async fn delete_tsig_key(
    State(st): State<HttpState>,
    ApiPath(name): ApiPath<String>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(&st, Resource::Acl, Access::Write)?;
    objects::delete(&st, &caller, AclKey::TsigKey(tsig_name(&name))).await
}
