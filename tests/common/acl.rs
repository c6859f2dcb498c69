//! Access-control fixtures for the ACL tests: credentials as request
//! headers, sign-in users, a test identity provider that signs JWTs, and
//! shorthands for the ACL API.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use maxine::config::ConfigFile;
use reqwest::Method;
use serde_json::{Value, json};

use super::api::{Reply, send};

/// The RSA pair of `tests/fixtures/jwt` (see its README).
pub const RSA_PRIVATE: &[u8] = include_bytes!("../fixtures/jwt/rsa_private.pem");
pub const RSA_PUBLIC: &[u8] = include_bytes!("../fixtures/jwt/rsa_public.pem");
pub const ISSUER: &str = "https://idp.test.invalid";
pub const AUDIENCE: &str = "maxine";
/// The HS256 secret the identity provider shares with Maxine.
pub const HS_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-acl-tests";
/// The claim that names a JWT's service identity.
pub const SERVICE_CLAIM: &str = "service";
/// `groups` holding `platform` grants the built-in `operator` policy.
pub const OPERATOR_BINDING: &str = "groups=platform:operator";

/// How a request presents (or fails to present) who it is.
#[derive(Clone, Debug)]
pub enum Cred {
    None,
    /// `Authorization: Bearer <secret>`.
    Bearer(String),
    /// `X-Maxine-Token: <secret>`.
    Token(String),
    /// Any `Authorization` value, as is (`Basic ...`).
    Authorization(String),
}

impl Cred {
    pub fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Cred::None => req,
            Cred::Bearer(s) => req.bearer_auth(s),
            Cred::Token(s) => req.header("x-maxine-token", s),
            Cred::Authorization(v) => req.header(reqwest::header::AUTHORIZATION, v),
        }
    }
}

/// One request with `cred` and an optional JSON body.
pub async fn call(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    cred: &Cred,
    body: Option<&Value>,
) -> Reply {
    let mut req = cred.apply(http.request(method, url));
    if let Some(b) = body {
        req = req.json(b);
    }
    send(req).await
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A users file (`name role argon2-hash` lines) in `dir`.
pub fn users_file(dir: &Path, users: &[(&str, &str, &str)]) -> PathBuf {
    let mut text = String::from("# name role argon2-hash\n");
    for (name, role, password) in users {
        let hash = maxine::auth::hash_password(password).unwrap();
        text.push_str(&format!("{name} {role} {hash}\n"));
    }
    let path = dir.join("users");
    std::fs::write(&path, text).unwrap();
    path
}

/// A test identity provider: an RS256 key (the fixture), an ES256 key made
/// here, and an HS256 secret, with their public halves in files Maxine reads.
pub struct Idp {
    pub rsa_public_file: PathBuf,
    pub ec_public_file: PathBuf,
    pub hs_secret_file: PathBuf,
    rsa: EncodingKey,
    ec: EncodingKey,
}

impl Idp {
    /// Writes the key files into `dir`.
    pub fn new(dir: &Path) -> Self {
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        Self {
            rsa_public_file: write("idp-rsa.pem", RSA_PUBLIC),
            ec_public_file: write("idp-ec.pem", ec.public_key_pem().as_bytes()),
            hs_secret_file: write("idp-hs.secret", HS_SECRET),
            rsa: EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
            ec: EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap(),
        }
    }

    /// Points `acl.jwt` at this provider: RS256, ES256 and HS256 accepted,
    /// the `service` claim is a service identity, `groups=platform` is
    /// the built-in operator policy.
    pub fn configure(&self, f: &mut ConfigFile) {
        f.acl.jwt.issuer = Some(ISSUER.into());
        f.acl.jwt.audiences = vec![AUDIENCE.into()];
        f.acl.jwt.algorithms = vec!["RS256".into(), "ES256".into(), "HS256".into()];
        f.acl.jwt.public_key_files = vec![
            self.rsa_public_file.display().to_string(),
            self.ec_public_file.display().to_string(),
        ];
        f.acl.jwt.hs256_secret_file = Some(self.hs_secret_file.clone());
        f.acl.jwt.service_claim = Some(SERVICE_CLAIM.into());
        f.acl.jwt.policy_bindings = vec![OPERATOR_BINDING.into()];
    }

    pub fn rs256(&self, claims: &Value) -> String {
        sign(Algorithm::RS256, claims, &self.rsa)
    }

    pub fn es256(&self, claims: &Value) -> String {
        sign(Algorithm::ES256, claims, &self.ec)
    }
}

/// Claims this provider would issue for `sub`, valid for an hour, plus `extra`.
pub fn claims(sub: &str, extra: Value) -> Value {
    let now = unix_now();
    let mut c = json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": sub,
        "iat": now - 10,
        "exp": now + 3600,
    });
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            if v.is_null() {
                c.remove(k);
            } else {
                c.insert(k.clone(), v.clone());
            }
        }
    }
    c
}

pub fn sign(alg: Algorithm, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

/// An unsigned token (`alg: none`).
pub fn alg_none(claims: &Value) -> String {
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    )
}

/// An HS256 token keyed with `secret` (the key-confusion forgery when it
/// is the RSA public key's bytes).
pub fn hs256(claims: &Value, secret: &[u8]) -> String {
    sign(
        Algorithm::HS256,
        claims,
        &EncodingKey::from_secret(secret).unwrap(),
    )
}

/// A fresh secret as Maxine's own look (64 hex digits), never issued.
pub fn unknown_secret() -> String {
    "0f".repeat(32)
}

/// `POST /v1/acl/tokens` with `body`; panics unless 200. Returns
/// (accessor, secret).
pub async fn create_token(
    http: &reqwest::Client,
    base: &str,
    admin: &Cred,
    body: Value,
) -> (String, String) {
    let r = call(
        http,
        Method::POST,
        &format!("{base}/v1/acl/tokens"),
        admin,
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 200, "create token {body}: {r:?}");
    (
        r.body["accessor"].as_str().unwrap().to_string(),
        r.body["secret"].as_str().unwrap().to_string(),
    )
}

/// `PUT /v1/acl/policies/{name}` with `rules`; panics unless 200.
pub async fn put_policy(
    http: &reqwest::Client,
    base: &str,
    admin: &Cred,
    name: &str,
    rules: Value,
) {
    let r = call(
        http,
        Method::PUT,
        &format!("{base}/v1/acl/policies/{name}"),
        admin,
        Some(&json!({ "rules": rules })),
    )
    .await;
    assert_eq!(r.status, 200, "put policy {name}: {r:?}");
}

/// `POST /api/maxine/signin`; panics unless 200. Returns the accessToken.
pub async fn sign_in(http: &reqwest::Client, base: &str, user: &str, password: &str) -> String {
    let r = call(
        http,
        Method::POST,
        &format!("{base}/api/maxine/signin"),
        &Cred::None,
        Some(&json!({"userName": user, "password": password})),
    )
    .await;
    assert_eq!(r.status, 200, "sign in {user}: {r:?}");
    r.body["accessToken"].as_str().unwrap().to_string()
}

/// Polls `GET /v1/acl/token/self` with `cred` until it answers `status`
/// (at most 10 s); returns the last reply.
pub async fn wait_for_self_status(
    http: &reqwest::Client,
    base: &str,
    cred: &Cred,
    status: u16,
) -> Reply {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = call(
            http,
            Method::GET,
            &format!("{base}/v1/acl/token/self"),
            cred,
            None,
        )
        .await;
        if r.status == status || std::time::Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
