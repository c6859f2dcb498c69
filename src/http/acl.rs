//! The access-control API: policies, tokens, bootstrap, the audit log, and
//! the Maxine-compatible sign-in. Every write is a change proposed through
//! the log, like a registration; what a caller may do is `policy`'s call.

use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Caller, new_secret_and_accessor, secret_hash, unix_ms};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, MaxineError};
use super::{HttpState, indexed, propose};
use crate::auth::{Role, hash_password, verify_password};
use crate::core::acl::GLOBAL_MANAGEMENT;
use crate::core::{
    ANONYMOUS, Access, AclChange, AclKey, AclObject, Actor, Change, Policy, Rules, ServiceName,
    Token, User,
};
use crate::policy::Resource;

pub(super) fn rfc3339(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn policy_view(p: &Policy) -> Value {
    json!({
        "name": p.name,
        "description": p.description,
        "rules": p.rules,
        "builtin": crate::core::acl::is_builtin_policy(&p.name),
        "index": p.index,
    })
}

/// A token as listings show it: never its secret (nor the secret's hash).
fn token_view(t: &Token) -> Value {
    json!({
        "accessor": t.accessor,
        "description": t.description,
        "policies": t.policies,
        "service": t.service,
        "expires_at": t.expires_at.map(rfc3339),
        "max_instances": t.max_instances,
        "created_at": (t.created_at > 0).then(|| rfc3339(t.created_at)),
        "index": t.index,
    })
}

/// The object one applied change produced.
use super::objects::{self, applied_object};

/// The token one applied change produced.
fn applied_token(applied: &crate::core::Applied) -> Result<Arc<Token>, ApiError> {
    match applied_object(applied) {
        Some(AclObject::Token(t)) => Ok(t),
        _ => Err(ApiError::Internal("a token applied without a value".into())),
    }
}

/// A new token's view with its secret, shown this once: only its hash is kept.
fn created(t: &Token, secret: &str) -> Response {
    let mut view = token_view(t);
    view["secret"] = json!(secret);
    indexed(t.index, Json(view))
}

// ---- policies ----

/// Body of `PUT /v1/acl/policies/{name}`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    #[serde(default)]
    description: String,
    rules: Rules,
}

pub async fn list_policies(
    State(st): State<HttpState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(&st, Resource::Acl, Access::Read)?;
    let policies = st.registry.policies();
    let views = policies.iter().map(|p| policy_view(p));
    Ok(objects::list(&st, "policies", views))
}

pub async fn get_policy(
    State(st): State<HttpState>,
    ApiPath(name): ApiPath<String>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(&st, Resource::Acl, Access::Read)?;
    let p = st
        .registry
        .policy(&name)
        .ok_or_else(|| ApiError::NotFound(format!("policy {name:?} does not exist")))?;
    Ok(indexed(st.registry.index(), Json(policy_view(&p))))
}

pub async fn put_policy(
    State(st): State<HttpState>,
    ApiPath(name): ApiPath<String>,
    caller: Caller,
    ApiJson(body): ApiJson<PolicyBody>,
) -> Result<Response, ApiError> {
    caller.require(&st, Resource::Acl, Access::Write)?;
    let policy = Policy {
        name,
        description: body.description,
        rules: body.rules,
        index: 0,
    };
    let answer: objects::View = |o| match o {
        AclObject::Policy(p) => Some((p.index, policy_view(p))),
        _ => None,
    };
    objects::put(&st, &caller, AclObject::Policy(Arc::new(policy)), answer).await
}

pub async fn delete_policy(
    State(st): State<HttpState>,
    ApiPath(name): ApiPath<String>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(&st, Resource::Acl, Access::Write)?;
    objects::delete(&st, &caller, AclKey::Policy(name)).await
}

// ---- tokens ----

/// Body of `POST /v1/acl/tokens` and `PUT /v1/acl/tokens/{accessor}`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    #[serde(default)]
    description: String,
    #[serde(default)]
    policies: Vec<String>,
    /// A service identity: write on it, read on every service.
    service: Option<String>,
    /// e.g. "24h"; the token stops working then.
    expires_in: Option<String>,
    /// Most instances requests with this token may hold.
    max_instances: Option<u32>,
}

impl TokenBody {
    /// The token this body describes, with `accessor` and `secret_hash`.
    fn into_token(
        self,
        accessor: String,
        secret_hash: [u8; 32],
        created_at: u64,
    ) -> Result<Token, ApiError> {
        let now = unix_ms();
        let expires_at = match self.expires_in.as_deref() {
            None | Some("") => None,
            Some(d) => {
                let d = super::native::seconds_or_duration(d).map_err(|e| {
                    ApiError::BadRequest(format!(
                        "expires_in {d:?} is not a duration such as \"24h\": {e}"
                    ))
                })?;
                if d.is_zero() {
                    return Err(ApiError::BadRequest("expires_in must be positive".into()));
                }
                Some(now.saturating_add(d.as_millis() as u64))
            }
        };
        let service = match self.service.as_deref() {
            None | Some("") => None,
            Some(s) => Some(ServiceName::new(s)?),
        };
        Ok(Token {
            accessor,
            secret_hash,
            description: self.description,
            policies: self.policies,
            service,
            expires_at,
            max_instances: self.max_instances,
            created_at,
            index: 0,
        })
    }
}

pub async fn create_token(
    State(st): State<HttpState>,
    caller: Caller,
    ApiJson(body): ApiJson<TokenBody>,
) -> Result<Response, ApiError> {
    caller.require(&st, Resource::Acl, Access::Write)?;
    let (secret, accessor) = new_secret_and_accessor()?;
    let token = body.into_token(accessor, secret_hash(&secret), unix_ms())?;
    let change = Change::Acl(AclChange::Put(AclObject::Token(Arc::new(token))));
    let applied = propose(&st, change, &caller).await?;
    let t = applied_token(&applied)?;
    Ok(created(&t, &secret))
}

pub async fn update_token(
    State(st): State<HttpState>,
    ApiPath(accessor): ApiPath<String>,
    caller: Caller,
    ApiJson(body): ApiJson<TokenBody>,
) -> Result<Response, ApiError> {
    caller.require(&st, Resource::Acl, Access::Write)?;
    let current = match st.registry.token(&accessor) {
        Some(t) => t,
        None if accessor == ANONYMOUS => Arc::new(Token::anonymous()),
        None => {
            return Err(ApiError::NotFound(format!(
                "token {accessor:?} does not exist"
            )));
        }
    };
    let token = body.into_token(accessor, current.secret_hash, current.created_at)?;
    let change = Change::Acl(AclChange::Put(AclObject::Token(Arc::new(token))));
    let applied = propose(&st, change, &caller).await?;
    let t = applied_token(&applied)?;
    Ok(indexed(t.index, Json(token_view(&t))))
}

pub async fn list_tokens(
    State(st): State<HttpState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(&st, Resource::Acl, Access::Read)?;
    let mut tokens: Vec<Value> = Vec::new();
    if st.registry.token(ANONYMOUS).is_none() {
        tokens.push(token_view(&Token::anonymous()));
    }
    tokens.extend(st.registry.acl_objects().iter().filter_map(|o| match o {
        AclObject::Token(t) => Some(token_view(t)),
        _ => None,
    }));
    Ok(objects::list(&st, "tokens", tokens))
}

pub async fn get_token(
    State(st): State<HttpState>,
    ApiPath(accessor): ApiPath<String>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(&st, Resource::Acl, Access::Read)?;
    let t = match st.registry.token(&accessor) {
        Some(t) => t,
        None if accessor == ANONYMOUS => st.registry.anonymous_token(),
        None => {
            return Err(ApiError::NotFound(format!(
                "token {accessor:?} does not exist"
            )));
        }
    };
    Ok(indexed(st.registry.index(), Json(token_view(&t))))
}

pub async fn delete_token(
    State(st): State<HttpState>,
    ApiPath(accessor): ApiPath<String>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(&st, Resource::Acl, Access::Write)?;
    let change = Change::Acl(AclChange::Delete(AclKey::Token(accessor)));
    let index = propose(&st, change, &caller).await?.last_index;
    Ok(indexed(index, Json(json!({ "index": index }))))
}

/// `GET /v1/acl/token/self`: what the caller's own credential is.
pub async fn token_self(caller: Caller) -> Json<Value> {
    let policies: Vec<_> = caller
        .grants
        .policies
        .iter()
        .map(|p| p.name.clone())
        .collect();
    let mut view = match (&caller.actor, &caller.token) {
        (Actor::Token { .. } | Actor::Anonymous { .. }, Some(t)) => token_view(t),
        (Actor::Jwt { subject, .. }, _) => json!({ "jwt_subject": &**subject }),
        (Actor::User { name, .. }, _) => json!({ "user": &**name }),
        _ => json!({}),
    };
    view["granted_policies"] = json!(policies);
    view["service_identity"] = json!(caller.grants.service);
    Json(view)
}

/// `POST /v1/acl/bootstrap`: the first management token, once.
pub async fn bootstrap(State(st): State<HttpState>, caller: Caller) -> Result<Response, ApiError> {
    let (secret, accessor) = new_secret_and_accessor()?;
    let now = unix_ms();
    let token = Token {
        accessor,
        secret_hash: secret_hash(&secret),
        description: "bootstrap management token".into(),
        policies: vec![GLOBAL_MANAGEMENT.into()],
        service: None,
        expires_at: None,
        max_instances: None,
        created_at: now,
        index: 0,
    };
    let change = Change::Acl(AclChange::Bootstrap {
        token: Arc::new(token),
        at: now,
    });
    let applied = propose(&st, change, &caller).await?;
    let t = applied_token(&applied)?;
    Ok(created(&t, &secret))
}

// ---- audit ----

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Records after this sequence number (default 0: from the start).
    since: Option<u64>,
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
}

/// `GET /v1/audit?since=&limit=`.
pub async fn audit(
    State(st): State<HttpState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Response, ApiError> {
    caller.require(&st, Resource::Audit, Access::Read)?;
    let Some(log) = st.auth.audit.clone() else {
        return Err(ApiError::NotFound(
            "this server keeps no audit log (memory store)".into(),
        ));
    };
    let since = q.since.unwrap_or(0);
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let records = tokio::task::spawn_blocking(move || {
        // Denials queued in memory are written first, so they are listed.
        log.flush()?;
        crate::audit::read(log.dir(), since, limit)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(format!("reading the audit log: {e}")))?;
    let next = records
        .last()
        .and_then(|r| r.get("seq"))
        .and_then(Value::as_u64)
        .unwrap_or(since);
    Ok(Json(json!({ "records": records, "next": next })).into_response())
}

// ---- Maxine-compatible sign-in ----

const MSG_MISSING_UNAME_PWD: &str = "Please provide both of these -> userName and password.";
const MSG_MISSING_PWD: &str = "Please provide valid existing password and new password both.";
/// Longest password accepted (argon2 hashes any length; a bound keeps a
/// request from costing more than a password should).
pub(super) const MAX_PASSWORD_BYTES: usize = 1024;
pub(super) const MIN_NEW_PASSWORD_CHARS: usize = 8;

/// A hash to check unknown users against, so that an unknown name takes as
/// long as a wrong password (no user enumeration by timing).
fn dummy_hash() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| hash_password("maxine-no-such-user").unwrap_or_default())
}

fn text_field<'a>(body: &'a Value, name: &str) -> Option<&'a str> {
    body.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= MAX_PASSWORD_BYTES)
}

/// `POST /api/maxine/signin {userName, password}` -> `{accessToken, role}`.
pub async fn signin(
    State(st): State<HttpState>,
    body: Result<ApiJson<Value>, ApiError>,
) -> Result<Response, MaxineError> {
    let body = body.map(|ApiJson(v)| v).unwrap_or(Value::Null);
    let (Some(user), Some(password)) =
        (text_field(&body, "userName"), text_field(&body, "password"))
    else {
        return Err(ApiError::BadRequest(MSG_MISSING_UNAME_PWD.into()).into());
    };
    let unauthorized = || MaxineError(ApiError::Unauthorized("Unauthorized".into()));
    let Some(signin) = st.auth.signin.clone() else {
        return Err(unauthorized());
    };
    let found = signin.user(&st.registry, user);
    let (hash, role, epoch) = found
        .clone()
        .unwrap_or_else(|| (dummy_hash().to_string(), Role::Viewer, 0));
    let password = password.to_string();
    let ok = tokio::task::spawn_blocking(move || verify_password(&hash, &password))
        .await
        .unwrap_or(false);
    if !ok || found.is_none() {
        super::auth::record_denial(
            &st,
            "POST /api/maxine/signin",
            &format!("user:{user}"),
            "wrong user name or password",
        );
        return Err(unauthorized());
    }
    let token = signin.key.issue(user, role, epoch, unix_ms() / 1000);
    Ok(Json(json!({ "accessToken": token, "role": role.as_str() })).into_response())
}

/// `PUT /api/maxine/change-password {password, newPassword}` by a signed-in
/// user: earlier sign-in tokens of the user stop working.
pub async fn change_password(
    State(st): State<HttpState>,
    caller: Caller,
    body: Result<ApiJson<Value>, ApiError>,
) -> Result<Response, MaxineError> {
    let Actor::User { name, .. } = &caller.actor else {
        return Err(ApiError::Unauthorized("Unauthorized".into()).into());
    };
    let body = body.map(|ApiJson(v)| v).unwrap_or(Value::Null);
    let (Some(password), Some(new)) = (
        text_field(&body, "password"),
        text_field(&body, "newPassword"),
    ) else {
        return Err(ApiError::BadRequest(MSG_MISSING_PWD.into()).into());
    };
    let signin = st
        .auth
        .signin
        .clone()
        .ok_or_else(|| MaxineError(ApiError::Unauthorized("Unauthorized".into())))?;
    if signin.env_managed.as_deref() == Some(&**name) {
        return Err(ApiError::Conflict(
            "this user's credentials are managed by MAXINE_ADMIN_USERNAME and MAXINE_ADMIN_PASSWORD"
                .into(),
        )
        .into());
    }
    if new.chars().count() < MIN_NEW_PASSWORD_CHARS {
        return Err(ApiError::BadRequest(format!(
            "the new password must have at least {MIN_NEW_PASSWORD_CHARS} characters"
        ))
        .into());
    }
    let (hash, role, epoch) = signin
        .user(&st.registry, name)
        .ok_or_else(|| MaxineError(ApiError::Unauthorized("Unauthorized".into())))?;
    let (password, new) = (password.to_string(), new.to_string());
    let new_hash = tokio::task::spawn_blocking(move || {
        verify_password(&hash, &password).then(|| hash_password(&new))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let new_hash = match new_hash {
        None => return Err(ApiError::BadRequest(MSG_MISSING_PWD.into()).into()),
        Some(h) => h.map_err(|e| ApiError::Internal(e.to_string()))?,
    };
    let user = User {
        name: name.to_string(),
        password_hash: new_hash,
        role: role.as_str().into(),
        epoch: epoch + 1,
        index: 0,
    };
    let change = Change::Acl(AclChange::Put(AclObject::User(Arc::new(user))));
    propose(&st, change, &caller).await?;
    Ok(Json(json!({ "message": "successfully updated password" })).into_response())
}
