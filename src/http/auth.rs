//! Who is asking, and may they: the HTTP side of access control.
//!
//! ```text
//!   request -> Host check (421) -> Caller extractor: credential -> token | JWT | sign-in | anonymous
//!                                        |  401 (+ audit)      -> Grants (policies, service identity)
//!   handler -> caller.require(resource, access) -> policy::decide -> 403 naming what is missing (+ audit)
//! ```
//!
//! Credentials travel as `Authorization: Bearer <secret>` or
//! `X-Maxine-Token: <secret>`. A secret is looked up by its SHA-256 in the
//! registry's lock-free token index (never the write lock, so a heartbeat
//! with a token costs a hash and a map read). A JWT is Maxine's own
//! sign-in token or one from the configured identity provider. No
//! credential means the anonymous token, whose policies operators edit.
//! What a set of grants allows is decided in `crate::policy` alone.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Response};

use super::HttpState;
use super::error::{ApiError, MaxineError};
use crate::audit::{AuditLog, Record};
use crate::auth::{JwtVerifier, Role, SigningKey};
use crate::core::{Access, Actor, Context, Owner, Registry, ServiceName, Token};
use crate::policy::{self, Decision, DefaultPolicy, Grants, Resource};

/// The header Maxine's own clients may send the secret in.
pub const TOKEN_HEADER: &str = "x-maxine-token";

/// Access-control settings and helpers of the API. Built by `app`.
pub struct Auth {
    pub default: DefaultPolicy,
    pub hosts: AllowedHosts,
    /// JWTs from the configured identity provider.
    pub jwt: Option<Arc<JwtVerifier>>,
    /// Maxine-compatible sign-in.
    pub signin: Option<Arc<SignIn>>,
    /// Where denials and mutations are recorded.
    pub audit: Option<AuditLog>,
}

impl Auth {
    /// Everything allowed, nothing recorded: tests and tools.
    pub fn open() -> Self {
        Self {
            default: DefaultPolicy::Allow,
            hosts: AllowedHosts::any(),
            jwt: None,
            signin: None,
            audit: None,
        }
    }
}

/// The sign-in users and Maxine's signing key.
pub struct SignIn {
    pub key: SigningKey,
    /// From the configuration: name -> (argon2 PHC string, role). A user
    /// stored in the registry (after a password change) overrides its entry.
    pub users: HashMap<String, (String, Role)>,
    /// The user whose credentials `MAXINE_ADMIN_USERNAME` and
    /// `MAXINE_ADMIN_PASSWORD` set: its password cannot be changed through
    /// the API (it would come back at the next start).
    pub env_managed: Option<String>,
}

impl SignIn {
    /// The user's current hash, role and password epoch.
    pub fn user(&self, registry: &Registry, name: &str) -> Option<(String, Role, u64)> {
        if let Some(u) = registry.user(name) {
            let role = u.role.parse().ok()?;
            return Some((u.password_hash.clone(), role, u.epoch));
        }
        let (hash, role) = self.users.get(name)?;
        Some((hash.clone(), *role, 0))
    }
}

/// The `Host` values the API answers to (DNS rebinding protection).
#[derive(Clone, Debug)]
pub struct AllowedHosts(Option<Vec<String>>);

impl AllowedHosts {
    /// Any host (a wildcard bind address with nothing configured).
    pub fn any() -> Self {
        Self(None)
    }

    /// `configured`, or what the bind address implies: its own address
    /// and, on loopback, `localhost` too; any host on a wildcard address.
    pub fn new(configured: &[String], bind: std::net::SocketAddr) -> Self {
        if !configured.is_empty() {
            return Self(Some(
                configured.iter().map(|h| h.to_ascii_lowercase()).collect(),
            ));
        }
        let ip = bind.ip();
        if ip.is_unspecified() {
            return Self(None);
        }
        let mut hosts = vec![host_literal(ip)];
        if ip.is_loopback() {
            hosts.extend(["localhost".into(), "127.0.0.1".into(), "[::1]".into()]);
        }
        Self(Some(hosts))
    }

    /// Whether a request with this `Host` (name or `name:port`) is served.
    pub fn allows(&self, host: &str) -> bool {
        let Some(list) = &self.0 else { return true };
        let host = host.to_ascii_lowercase();
        let name = strip_port(&host);
        list.iter().any(|h| *h == host || *h == name)
    }
}

fn host_literal(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// `name:port` -> `name`; `[v6]:port` -> `[v6]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |e| &host[..=e]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Refuses requests whose `Host` (or HTTP/2 authority) is not one of the
/// API's names: a web page that resolves its own name to 127.0.0.1 must
/// not reach a loopback API through the visitor's browser.
///
/// A browser also sends simple cross-site requests (a form POST) to any
/// address without asking first; such a request names the page it came
/// from in `Origin`. A change whose `Origin` is not the API itself is
/// refused with 403, so no web page can spend the bootstrap or change the
/// registry through a visitor's browser. Clients that are not browsers send
/// no `Origin`.
///
/// The answer to such a request, or `None` to serve it ([`super::Api`]).
pub(super) fn refusal(st: &HttpState, req: &Request) -> Option<Response> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let refuse = |e: ApiError| {
        Some(if req.uri().path().starts_with("/api/") {
            MaxineError(e).into_response()
        } else {
            e.into_response()
        })
    };
    if let Some(host) = host
        && !st.auth.hosts.allows(host)
    {
        return refuse(ApiError::MisdirectedHost(format!(
            "this API does not answer to the host {host:?}; add it to http.allowed_hosts \
             (MAXINE_HTTP_ALLOWED_HOSTS) if it is one of its names"
        )));
    }
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if changes
        && let Some(origin) = req.headers().get(header::ORIGIN)
        && !same_origin(origin.to_str().unwrap_or("null"), host)
    {
        return refuse(ApiError::Forbidden(
            "a cross-origin request from a web page may not change anything here".into(),
        ));
    }
    None
}

/// Whether `origin` (`scheme://host[:port]`, or `null`) names `host`.
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

/// Who made a request, and what they may do. Extracting it authenticates
/// the request (401 on a bad credential); [`Caller::require`] authorizes.
pub struct Caller {
    pub actor: Actor,
    pub grants: Grants,
    /// The token's quota applies through the actor; kept for `token/self`.
    pub token: Option<Arc<Token>>,
    method: Method,
    uri: Uri,
}

impl Caller {
    /// The context of the changes this caller proposes.
    pub fn context(&self) -> Context {
        Context::by(self.actor.clone())
    }

    pub fn client(&self) -> Option<IpAddr> {
        self.actor.client()
    }

    /// How denials name the caller (built only when one is needed).
    fn label(&self) -> String {
        match &self.actor {
            Actor::Token { accessor, .. } => format!("token {:?}", accessor.as_str()),
            Actor::Jwt { subject, .. } => format!("JWT subject {:?}", &**subject),
            Actor::User { name, .. } => format!("user {:?}", &**name),
            Actor::Anonymous { .. } | Actor::System => {
                "the anonymous token (no credential was sent)".into()
            }
        }
    }

    pub fn is_anonymous(&self) -> bool {
        matches!(self.actor, Actor::Anonymous { .. })
    }

    /// Whether the caller may, without recording anything (listings filter
    /// on it).
    pub fn may(&self, st: &HttpState, resource: Resource<'_>, access: Access) -> bool {
        policy::decide(&self.grants, st.auth.default, resource, access) == Decision::Allow
    }

    /// 403 (recorded in the audit log) unless the caller may.
    pub fn require(
        &self,
        st: &HttpState,
        resource: Resource<'_>,
        access: Access,
    ) -> Result<(), ApiError> {
        match policy::decide(&self.grants, st.auth.default, resource, access) {
            Decision::Allow => Ok(()),
            Decision::Deny(missing) => {
                Err(self.forbidden(st, format!("{} lacks {missing}", self.label())))
            }
        }
    }

    /// A 403 for `why`, recorded in the audit log.
    fn forbidden(&self, st: &HttpState, why: String) -> ApiError {
        deny(
            st,
            self.actor.name(),
            self.client(),
            &self.method,
            &self.uri,
            "forbidden",
            &why,
        );
        ApiError::Forbidden(why)
    }

    /// 403 (audited) when an intention forbids this caller to discover
    /// `service` (docs/security.md, "Intentions"). The caller's identity is
    /// its credential's service identity; a caller without a credential
    /// has the identity of the registered instances at its address, as a
    /// DNS asker does. Any other credential is held to read rules alone.
    pub fn require_intention(&self, st: &HttpState, service: &ServiceName) -> Result<(), ApiError> {
        let Some(source) = self.intention_denial(st, service) else {
            return Ok(());
        };
        let why = format!(
            "service {:?} may not discover service {:?}: the intentions deny {} -> {}",
            source.as_str(),
            service.as_str(),
            source.as_str(),
            service.as_str(),
        );
        Err(self.forbidden(st, why))
    }

    /// Whether the intentions let this caller discover `service` (listings
    /// leave out what they do not).
    pub fn may_discover(&self, st: &HttpState, service: &ServiceName) -> bool {
        self.intention_denial(st, service).is_none()
    }

    /// Whether an intention could keep this caller from discovering some
    /// service now: it has a service identity, its credential's or (without
    /// a credential) that of the instances registered at its address. Event
    /// streams ask at each delivery, and share one only among callers it
    /// cannot hold back.
    pub fn held_to_intentions(&self, st: &HttpState) -> bool {
        if !st.askers.is_on() {
            return false;
        }
        self.grants.service.is_some()
            || matches!(self.actor, Actor::Anonymous { client: Some(ip) } if st.askers.has_identity(ip))
    }

    /// The source whose intention towards `service` denies this caller.
    fn intention_denial(&self, st: &HttpState, service: &ServiceName) -> Option<ServiceName> {
        let peer = match self.actor {
            Actor::Anonymous { client } => client,
            _ => None,
        };
        st.askers
            .intention_denies(self.grants.service.as_ref(), peer, service)
    }
}

/// The rejection of [`Caller`]: a 401 in the format of the API the path
/// belongs to.
pub struct Unauthenticated {
    error: ApiError,
    maxine: bool,
}

impl IntoResponse for Unauthenticated {
    fn into_response(self) -> Response {
        if self.maxine {
            // The Node.js Maxine answers exactly this.
            MaxineError(ApiError::Unauthorized("Unauthorized".into())).into_response()
        } else {
            self.error.into_response()
        }
    }
}

impl FromRequestParts<HttpState> for Caller {
    type Rejection = Unauthenticated;

    async fn from_request_parts(
        parts: &mut Parts,
        st: &HttpState,
    ) -> Result<Self, Self::Rejection> {
        let client = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let now_ms = unix_ms();
        match authenticate(st, &parts.headers, client, now_ms) {
            Ok((actor, grants, token)) => Ok(Caller {
                actor,
                grants,
                token,
                method: parts.method.clone(),
                uri: parts.uri.clone(),
            }),
            Err(why) => {
                deny(
                    st,
                    "unauthenticated".into(),
                    client,
                    &parts.method,
                    &parts.uri,
                    "unauthenticated",
                    &why,
                );
                Err(Unauthenticated {
                    error: ApiError::Unauthorized(why),
                    maxine: parts.uri.path().starts_with("/api/"),
                })
            }
        }
    }
}

type Authenticated = (Actor, Grants, Option<Arc<Token>>);

/// The credential of a request, if any: `Err` for a malformed header.
pub fn credential(headers: &HeaderMap) -> Result<Option<&str>, String> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v
            .to_str()
            .map_err(|_| "the Authorization header is not text".to_string())?;
        let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
        let rest = rest.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || rest.is_empty() {
            return Err(
                "malformed Authorization header: send Authorization: Bearer <token>".into(),
            );
        }
        return Ok(Some(rest));
    }
    if let Some(v) = headers.get(TOKEN_HEADER) {
        let v = v
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| "the X-Maxine-Token header is empty or not text".to_string())?;
        return Ok(Some(v));
    }
    Ok(None)
}

fn authenticate(
    st: &HttpState,
    headers: &HeaderMap,
    client: Option<IpAddr>,
    now_ms: u64,
) -> Result<Authenticated, String> {
    let Some(secret) = credential(headers)? else {
        let token = st.registry.anonymous_token();
        let grants = grants_of(&st.registry, &token.policies, token.service.clone());
        return Ok((Actor::Anonymous { client }, grants, Some(token)));
    };
    if looks_like_jwt(secret) {
        return jwt(st, secret, client, now_ms);
    }
    let hash = secret_hash(secret);
    let Some(token) = st.registry.token_by_secret_hash(&hash) else {
        return Err("unknown token: it was never issued, or it was deleted".into());
    };
    // The map found it by its hash; compare the full hash in constant time
    // all the same, so that no future index on a shorter key leaks timing.
    if !constant_time_eq(&token.secret_hash, &hash) {
        return Err("unknown token".into());
    }
    if token.expired(now_ms) {
        return Err(format!("token {:?} has expired", token.accessor));
    }
    let grants = grants_of(&st.registry, &token.policies, token.service.clone());
    Ok((
        Actor::Token {
            accessor: Owner::new(&token.accessor),
            client,
        },
        grants,
        Some(token),
    ))
}

/// Compares every byte whatever the first difference.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Three base64url parts: a JWT (token secrets are hex, without dots).
fn looks_like_jwt(s: &str) -> bool {
    s.bytes().filter(|b| *b == b'.').count() == 2
}

fn jwt(
    st: &HttpState,
    token: &str,
    client: Option<IpAddr>,
    now_ms: u64,
) -> Result<Authenticated, String> {
    let now = now_ms / 1000;
    let mut own_error = None;
    if let Some(signin) = &st.auth.signin {
        match signin.key.verify(token, now) {
            Ok(s) => {
                let Some((_, role, epoch)) = signin.user(&st.registry, &s.user) else {
                    return Err("the signed-in user no longer exists".into());
                };
                if epoch != s.epoch {
                    return Err(
                        "this sign-in token was issued before the password changed; sign in again"
                            .into(),
                    );
                }
                // The role now, not at sign-in, if it was lowered since.
                let role = role.min(s.role);
                let grants = grants_of(&st.registry, &[role_policy(role).to_string()], None);
                return Ok((
                    Actor::User {
                        name: Arc::from(s.user.as_str()),
                        client,
                    },
                    grants,
                    None,
                ));
            }
            Err(e) => own_error = Some(e.to_string()),
        }
    }
    let Some(verifier) = &st.auth.jwt else {
        return Err(own_error.unwrap_or_else(|| {
            "JWTs are not accepted: no identity provider is configured (acl.jwt.issuer)".into()
        }));
    };
    let id = verifier
        .verify(token, now)
        .map_err(|e| format!("JWT refused: {e}"))?;
    let service = match id.service.as_deref().map(crate::core::ServiceName::new) {
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => return Err(format!("JWT refused: its service identity: {e}")),
        None => None,
    };
    let grants = grants_of(&st.registry, &id.policies, service);
    Ok((
        Actor::Jwt {
            subject: Arc::from(id.subject.as_str()),
            client,
        },
        grants,
        None,
    ))
}

/// The built-in policy a sign-in role stands for.
pub fn role_policy(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Operator => "operator",
        Role::Admin => crate::core::acl::GLOBAL_MANAGEMENT,
    }
}

/// Policies by name (those that no longer exist grant nothing).
fn grants_of(
    registry: &Registry,
    names: &[String],
    service: Option<crate::core::ServiceName>,
) -> Grants {
    Grants {
        policies: names.iter().filter_map(|n| registry.policy(n)).collect(),
        service,
    }
}

/// SHA-256 of a token secret: what the registry keeps.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// A new random token secret (256 bits, hex) and accessor id (UUID form).
pub fn new_secret_and_accessor() -> Result<(String, String), ApiError> {
    use ring::rand::SecureRandom;
    let rng = ring::rand::SystemRandom::new();
    let mut bytes = [0u8; 48];
    rng.fill(&mut bytes)
        .map_err(|_| ApiError::Internal("the system random number generator failed".into()))?;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let secret = hex(&bytes[..32]);
    let mut a = [0u8; 16];
    a.copy_from_slice(&bytes[32..]);
    a[6] = (a[6] & 0x0f) | 0x40; // version 4
    a[8] = (a[8] & 0x3f) | 0x80; // variant
    let h = hex(&a);
    let accessor = format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    );
    Ok((secret, accessor))
}

/// Records a refused sign-in (or another 401 outside the extractor).
pub fn record_denial(st: &HttpState, action: &str, resource: &str, why: &str) {
    let Some(audit) = &st.auth.audit else { return };
    audit.deny(Record {
        time_ms: unix_ms(),
        index: None,
        actor: "unauthenticated".into(),
        client: None,
        action: action.into(),
        resource: resource.into(),
        outcome: "unauthenticated".into(),
        detail: Some(why.into()),
    });
}

/// Records a 401 or 403 (batched by the audit log, never dropped silently).
fn deny(
    st: &HttpState,
    actor: String,
    client: Option<IpAddr>,
    method: &Method,
    uri: &Uri,
    outcome: &str,
    why: &str,
) {
    let Some(audit) = &st.auth.audit else { return };
    audit.deny(Record {
        time_ms: unix_ms(),
        index: None,
        actor,
        client: client.map(|c| c.to_string()),
        action: format!("{method} {}", uri.path()),
        resource: "request".into(),
        outcome: outcome.into(),
        detail: Some(why.to_string()),
    });
}

/// Milliseconds since the Unix epoch (token expiry and audit times).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_default_to_the_bind_address_and_loopback_names() {
        let h = AllowedHosts::new(&[], "127.0.0.1:8080".parse().unwrap());
        for ok in ["127.0.0.1:8080", "localhost", "LOCALHOST:9", "[::1]:8080"] {
            assert!(h.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "127.0.0.1.evil.example",
        ] {
            assert!(!h.allows(bad), "{bad}");
        }
        assert!(AllowedHosts::new(&[], "0.0.0.0:8080".parse().unwrap()).allows("anything"));
        let h = AllowedHosts::new(&["maxine.internal".into()], "0.0.0.0:8080".parse().unwrap());
        assert!(h.allows("maxine.internal:8080"));
        assert!(!h.allows("other.internal"));
    }

    #[test]
    fn only_an_origin_naming_the_api_itself_is_the_same_origin() {
        let host = Some("127.0.0.1:8080");
        assert!(same_origin("http://127.0.0.1:8080", host));
        assert!(same_origin("https://127.0.0.1:8080", host));
        for other in [
            "http://evil.example",
            "null",
            "http://127.0.0.1:9",
            "127.0.0.1:8080",
        ] {
            assert!(!same_origin(other, host), "{other}");
        }
        assert!(!same_origin("http://127.0.0.1:8080", None));
    }

    #[test]
    fn credentials_come_from_bearer_or_the_token_header_and_malformed_ones_are_errors() {
        let mut h = HeaderMap::new();
        assert_eq!(credential(&h), Ok(None));
        h.insert(TOKEN_HEADER, "abc".parse().unwrap());
        assert_eq!(credential(&h), Ok(Some("abc")));
        h.insert(header::AUTHORIZATION, "Bearer xyz".parse().unwrap());
        assert_eq!(credential(&h), Ok(Some("xyz")));
        for bad in ["Basic dXNlcjpwdw==", "Bearer", "Bearer   ", "xyz"] {
            h.insert(header::AUTHORIZATION, bad.parse().unwrap());
            assert!(credential(&h).is_err(), "{bad}");
        }
    }

    #[test]
    fn new_secrets_are_distinct_and_accessors_look_like_uuids() {
        let (s1, a1) = new_secret_and_accessor().unwrap();
        let (s2, a2) = new_secret_and_accessor().unwrap();
        assert_ne!(s1, s2);
        assert_ne!(a1, a2);
        assert_eq!(s1.len(), 64);
        assert_eq!(a1.len(), 36);
        assert_eq!(&a1[14..15], "4");
        assert!(!looks_like_jwt(&s1));
    }
}
