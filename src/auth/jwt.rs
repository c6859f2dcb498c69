//! Verification of JWTs issued by an external identity provider.
//!
//! Owns: the verifier's settings and their validation, the public keys (PEM
//! files and a JWKS file) and the HS256 secret, their reload when a file
//! changes, and turning a verified token's claims into a [`JwtIdentity`]
//! through the configured [`Binding`]s.
//!
//! Key selection is strict, so that one kind of key can never be used as
//! another: an HS256 token is only ever checked with the HS256 secret, an
//! RS256 token only with RSA keys, ES256 only with P-256 keys and EdDSA only
//! with Ed25519 keys. When a JWKS is configured, a token that names a `kid` is
//! checked with that JWKS key alone (an unknown `kid` is refused); otherwise
//! the PEM keys of the token's algorithm are tried in turn. Keys embedded in a
//! token's header (`jwk`, `jku`, `x5c`) are ignored.
//!
//! Time is a parameter (`now_unix`): `exp` and `nbf` are checked here against
//! the caller's clock, not by the JWT library, which would read the wall clock.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// The largest clock-skew allowance [`JwtSettings::leeway`] may ask for.
pub const MAX_LEEWAY: Duration = Duration::from_secs(60);

/// The shortest HS256 secret accepted: the size of the SHA-256 output, so the
/// key is not the weak part of the MAC.
pub const MIN_HS256_SECRET_LEN: usize = 32;

/// The smallest RSA modulus accepted, in bits.
const MIN_RSA_BITS: usize = 2048;

/// Tokens longer than this are refused before any parsing: real ones are a
/// few hundred bytes to a few KiB.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Key files larger than this are refused: a PEM key or a JWKS is a few KiB.
const MAX_KEY_FILE_LEN: u64 = 1024 * 1024;

/// Why a token or the verifier's configuration was refused.
///
/// The messages are safe to show to a client: they never contain the token
/// or a claim's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not a JWT: wrong shape, bad base64 or JSON, or too long.
    #[error("not a well-formed JWT")]
    Malformed,
    /// `exp` is past (beyond the leeway).
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token is not valid yet")]
    NotYetValid,
    /// No configured key of the token's algorithm accepts the signature.
    #[error("token signature is not valid")]
    BadSignature,
    /// `iss` is not the configured issuer.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// `aud` names none of the configured audiences.
    #[error("token audience is not accepted")]
    WrongAudience,
    /// The header's `alg` is `none`, unknown, or not in the allow-list.
    #[error("token algorithm is not allowed")]
    AlgorithmNotAllowed,
    /// The token's `kid` names no JWKS key of its algorithm, or no key of its
    /// algorithm is configured.
    #[error("token signing key is not known")]
    UnknownKey,
    /// A claim that must be present (`exp`, `iss`, `aud`, `sub`) is missing.
    #[error("token lacks the required claim `{0}`")]
    MissingClaim(String),
    /// A claim is present but of the wrong type (for example a numeric
    /// service identity).
    #[error("token claim `{0}` has the wrong type")]
    InvalidClaim(String),
    /// The settings or a key file are not usable; says which and why.
    #[error("JWT configuration: {0}")]
    Config(String),
}

/// Plain inputs for [`JwtVerifier::new`], which validates them.
#[derive(Clone, Debug)]
pub struct JwtSettings {
    /// Required; `iss` must equal it exactly.
    pub issuer: String,
    /// At least one; `aud` must contain one of them.
    pub audiences: Vec<String>,
    /// The allow-list: any of `RS256`, `ES256`, `EdDSA`, `HS256`.
    pub algorithms: Vec<String>,
    /// PEM public keys (RSA, EC P-256, Ed25519), used for tokens without a
    /// `kid` (or with one when no JWKS is configured).
    pub public_key_files: Vec<PathBuf>,
    /// A JWKS JSON file; its keys are selected by the token's `kid`.
    pub jwks_file: Option<PathBuf>,
    /// The HS256 secret (at least [`MIN_HS256_SECRET_LEN`] bytes; one
    /// trailing newline is not part of it). Required if and only if HS256 is
    /// allowed.
    pub hs256_secret_file: Option<PathBuf>,
    /// Clock-skew allowance for `exp` and `nbf`, at most [`MAX_LEEWAY`].
    pub leeway: Duration,
    /// How claims become a service identity and policies.
    pub bindings: Vec<Binding>,
}

/// Maps one claim of a verified token to what Maxine grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The claim's name, at the top level of the claims (e.g. `groups`).
    pub claim: String,
    /// What the claim grants.
    pub kind: BindingKind,
}

/// What a [`Binding`]'s claim grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindingKind {
    /// The claim's string value becomes the service identity (e.g. claim `maxine_service`).
    ServiceIdentity,
    /// If the claim equals `value`, or is an array containing it, grant these policy names
    /// (e.g. claim `groups` containing `platform` -> policy `operator`).
    Policies {
        /// The string the claim must equal or contain.
        value: String,
        /// The policy names granted.
        policies: Vec<String>,
    },
}

/// Who a verified token speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtIdentity {
    /// The `sub` claim.
    pub subject: String,
    /// Policy names granted by the bindings, in binding order, without repeats.
    pub policies: Vec<String>,
    /// The service identity from the first [`BindingKind::ServiceIdentity`]
    /// binding whose claim is present.
    pub service: Option<String>,
    /// The `exp` claim (Unix seconds).
    pub expires_at: u64,
}

/// The algorithms Maxine accepts for external tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Alg {
    Rs256,
    Es256,
    EdDsa,
    Hs256,
}

impl Alg {
    const ALL: [Alg; 4] = [Alg::Rs256, Alg::Es256, Alg::EdDsa, Alg::Hs256];

    fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
            Alg::Hs256 => "HS256",
        }
    }

    fn library(self) -> Algorithm {
        match self {
            Alg::Rs256 => Algorithm::RS256,
            Alg::Es256 => Algorithm::ES256,
            Alg::EdDsa => Algorithm::EdDSA,
            Alg::Hs256 => Algorithm::HS256,
        }
    }

    /// What a key for this algorithm is called in error messages.
    fn key_kind(self) -> &'static str {
        match self {
            Alg::Rs256 => "an RSA key",
            Alg::Es256 => "an EC P-256 key",
            Alg::EdDsa => "an Ed25519 key",
            Alg::Hs256 => "an HMAC secret",
        }
    }
}

impl FromStr for Alg {
    type Err = ();

    /// JOSE algorithm names are case-sensitive (RFC 7518 3.1).
    fn from_str(s: &str) -> Result<Self, ()> {
        Alg::ALL.into_iter().find(|a| a.name() == s).ok_or(())
    }
}

/// One usable public key and the single algorithm it may verify.
struct PublicKey {
    alg: Alg,
    key: DecodingKey,
}

/// Everything read from the key files; replaced whole on reload.
struct KeySet {
    /// From `public_key_files`, in file order.
    pem: Vec<PublicKey>,
    /// From `jwks_file`, by `kid`; `None` when no JWKS is configured.
    jwks: Option<HashMap<String, PublicKey>>,
    /// From `hs256_secret_file`.
    hs256: Option<DecodingKey>,
}

/// What a key file looked like when last read: a change of any part means
/// the file was rewritten or replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

/// The key files and what the verifier allows; what a (re)load needs.
struct Sources {
    allowed: Vec<Alg>,
    public_key_files: Vec<PathBuf>,
    jwks_file: Option<PathBuf>,
    hs256_secret_file: Option<PathBuf>,
}

impl Sources {
    fn files(&self) -> impl Iterator<Item = &Path> {
        self.public_key_files
            .iter()
            .chain(self.jwks_file.iter())
            .chain(self.hs256_secret_file.iter())
            .map(PathBuf::as_path)
    }

    /// The current stamps of every key file (`None` for one that cannot be
    /// stat'ed).
    fn stamps(&self) -> Vec<Option<FileStamp>> {
        self.files()
            .map(|p| {
                std::fs::metadata(p).ok().map(|m| FileStamp {
                    ino: m.ino(),
                    len: m.size(),
                    mtime: m.mtime(),
                    mtime_nsec: m.mtime_nsec(),
                })
            })
            .collect()
    }

    fn load(&self) -> Result<KeySet, JwtError> {
        let provider = CryptoProvider::try_get_default().ok_or_else(|| {
            JwtError::Config("no cryptography backend is available to verify signatures".into())
        })?;
        let mut pem = Vec::new();
        for path in &self.public_key_files {
            let key = load_pem_key(path, provider)?;
            if !self.allowed.contains(&key.alg) {
                return Err(JwtError::Config(format!(
                    "{} holds {}, but {} is not in algorithms",
                    path.display(),
                    key.alg.key_kind(),
                    key.alg.name()
                )));
            }
            pem.push(key);
        }
        let jwks = match &self.jwks_file {
            Some(path) => Some(load_jwks(path, &self.allowed, provider)?),
            None => None,
        };
        let hs256 = match &self.hs256_secret_file {
            Some(path) => Some(load_hs256_secret(path)?),
            None => None,
        };
        Ok(KeySet { pem, jwks, hs256 })
    }
}

/// When the key files were last looked at, and how they looked.
struct Watch {
    /// The stamps seen at the last (re)load attempt, in [`Sources::files`] order.
    seen: Vec<Option<FileStamp>>,
}

/// Verifies external JWTs. `Send + Sync`; share it behind an `Arc`.
///
/// Verification takes a read lock only long enough to clone an `Arc` of the
/// current keys; a reload builds a new key set aside and swaps it in.
pub struct JwtVerifier {
    sources: Sources,
    /// One `Validation` per allowed algorithm, each allowing that one alone.
    validations: Vec<(Alg, Validation)>,
    leeway_secs: u64,
    bindings: Vec<Binding>,
    keys: RwLock<Arc<KeySet>>,
    /// The `now_unix` of the last look at the key files' stamps.
    last_check: AtomicU64,
    watch: Mutex<Watch>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of logs.
        let algs: Vec<&str> = self.sources.allowed.iter().map(|a| a.name()).collect();
        f.debug_struct("JwtVerifier")
            .field("algorithms", &algs)
            .field("leeway_secs", &self.leeway_secs)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Validates the settings and loads every key; every misconfiguration is
    /// a [`JwtError::Config`] saying what is wrong.
    pub fn new(s: JwtSettings) -> Result<Self, JwtError> {
        let config = |m: String| Err(JwtError::Config(m));
        if s.issuer.trim().is_empty() {
            return config("issuer must be set".into());
        }
        if s.audiences.is_empty() || s.audiences.iter().any(|a| a.trim().is_empty()) {
            return config("audiences must name at least one audience, none empty".into());
        }
        let mut allowed = Vec::new();
        for name in &s.algorithms {
            let Ok(alg) = name.parse::<Alg>() else {
                return config(format!(
                    "unsupported algorithm {name:?} (use RS256, ES256, EdDSA or HS256)"
                ));
            };
            if !allowed.contains(&alg) {
                allowed.push(alg);
            }
        }
        if allowed.is_empty() {
            return config("algorithms must allow at least one algorithm".into());
        }
        if s.leeway > MAX_LEEWAY {
            return config(format!(
                "leeway {}s is longer than the maximum {}s",
                s.leeway.as_secs(),
                MAX_LEEWAY.as_secs()
            ));
        }
        let hs256 = allowed.contains(&Alg::Hs256);
        match (hs256, &s.hs256_secret_file) {
            (true, None) => {
                return config("HS256 is allowed but hs256_secret_file is not set".into());
            }
            (false, Some(_)) => {
                return config("hs256_secret_file is set but HS256 is not in algorithms".into());
            }
            _ => {}
        }
        let public_allowed = allowed.iter().any(|a| *a != Alg::Hs256);
        let public_given = !s.public_key_files.is_empty() || s.jwks_file.is_some();
        if public_allowed && !public_given {
            return config(
                "a public-key algorithm is allowed but neither public_key_files nor jwks_file is set"
                    .into(),
            );
        }
        if !public_allowed && public_given {
            return config("public keys are configured but only HS256 is in algorithms".into());
        }
        for b in &s.bindings {
            if b.claim.is_empty() {
                return config("a binding has an empty claim name".into());
            }
            if let BindingKind::Policies { value, policies } = &b.kind
                && (value.is_empty()
                    || policies.is_empty()
                    || policies.iter().any(String::is_empty))
            {
                return config(format!(
                    "binding for claim {:?} needs a value and at least one policy name",
                    b.claim
                ));
            }
        }

        let leeway_secs = s.leeway.as_secs();
        let validations = allowed
            .iter()
            .map(|&alg| (alg, validation(alg, &s.issuer, &s.audiences, leeway_secs)))
            .collect();
        let sources = Sources {
            allowed,
            public_key_files: s.public_key_files,
            jwks_file: s.jwks_file,
            hs256_secret_file: s.hs256_secret_file,
        };
        let seen = sources.stamps();
        let keys = sources.load()?;
        Ok(JwtVerifier {
            sources,
            validations,
            leeway_secs,
            bindings: s.bindings,
            keys: RwLock::new(Arc::new(keys)),
            last_check: AtomicU64::new(0),
            watch: Mutex::new(Watch { seen }),
        })
    }

    /// Verifies `token` at time `now_unix` and returns who it speaks for.
    ///
    /// Also reloads the key files first if one changed (looked at no more
    /// than once per second of `now_unix`; see [`Self::reload_if_changed`]).
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<JwtIdentity, JwtError> {
        if let Err(e) = self.reload_if_changed(now_unix) {
            // The old keys stay in force; the operator sees why in the log.
            tracing::warn!(error = %e, "JWT key files changed but could not be reloaded; keeping the previous keys");
        }
        let (alg, kid) = peek_header(token)?;
        let Some((_, validation)) = self.validations.iter().find(|(a, _)| *a == alg) else {
            return Err(JwtError::AlgorithmNotAllowed);
        };
        let keys = Arc::clone(&self.keys.read().unwrap_or_else(|e| e.into_inner()));
        let candidates: Vec<&DecodingKey> = match (alg, &kid, &keys.jwks) {
            (Alg::Hs256, _, _) => keys.hs256.iter().collect(),
            (_, Some(kid), Some(jwks)) => match jwks.get(kid) {
                Some(k) if k.alg == alg => vec![&k.key],
                _ => return Err(JwtError::UnknownKey),
            },
            _ => keys
                .pem
                .iter()
                .filter(|k| k.alg == alg)
                .map(|k| &k.key)
                .collect(),
        };
        if candidates.is_empty() {
            return Err(JwtError::UnknownKey);
        }
        let mut claims = None;
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, key, validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                // Another key of the same algorithm may have signed it (rotation).
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => continue,
                Err(e) => return Err(map_library_error(e.kind())),
            }
        }
        let claims = claims.ok_or(JwtError::BadSignature)?;
        self.identity(&claims, now_unix)
    }

    /// Re-reads every key file now (for SIGHUP). On error the previous keys
    /// stay in force and the error says which file is wrong.
    pub fn reload(&self) -> Result<(), JwtError> {
        let mut watch = self.watch.lock().unwrap_or_else(|e| e.into_inner());
        watch.seen = self.sources.stamps();
        let keys = self.sources.load()?;
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(())
    }

    /// Reloads the key files if any of them changed (inode, size or mtime)
    /// since the last (re)load. Looks at the files at most once per second of
    /// `now_unix`; other calls in the same second return at once. Returns
    /// whether new keys were loaded. A failed reload keeps the previous keys
    /// and is not retried until a file changes again.
    pub fn reload_if_changed(&self, now_unix: u64) -> Result<bool, JwtError> {
        let last = self.last_check.load(Ordering::Relaxed);
        if now_unix <= last
            || self
                .last_check
                .compare_exchange(last, now_unix, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return Ok(false);
        }
        let mut watch = self.watch.lock().unwrap_or_else(|e| e.into_inner());
        let stamps = self.sources.stamps();
        if stamps == watch.seen {
            return Ok(false);
        }
        watch.seen = stamps;
        let keys = self.sources.load()?;
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        tracing::info!("JWT key files changed; reloaded the keys");
        Ok(true)
    }

    /// Checks the time claims against `now_unix` and applies the bindings.
    fn identity(
        &self,
        claims: &Map<String, Value>,
        now_unix: u64,
    ) -> Result<JwtIdentity, JwtError> {
        let exp =
            numeric_date(claims, "exp")?.ok_or_else(|| JwtError::MissingClaim("exp".into()))?;
        // RFC 7519 4.1.4: not accepted on or after `exp`.
        if now_unix >= exp.saturating_add(self.leeway_secs) {
            return Err(JwtError::Expired);
        }
        if let Some(nbf) = numeric_date(claims, "nbf")?
            && now_unix.saturating_add(self.leeway_secs) < nbf
        {
            return Err(JwtError::NotYetValid);
        }
        let subject = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => return Err(JwtError::InvalidClaim("sub".into())),
            None => return Err(JwtError::MissingClaim("sub".into())),
        };
        let mut policies: Vec<String> = Vec::new();
        let mut service = None;
        for b in &self.bindings {
            let Some(v) = claims.get(&b.claim) else {
                continue;
            };
            match &b.kind {
                BindingKind::ServiceIdentity => {
                    let Value::String(s) = v else {
                        return Err(JwtError::InvalidClaim(b.claim.clone()));
                    };
                    if s.is_empty() {
                        return Err(JwtError::InvalidClaim(b.claim.clone()));
                    }
                    service.get_or_insert_with(|| s.clone());
                }
                BindingKind::Policies {
                    value,
                    policies: grants,
                } => {
                    let matches = match v {
                        Value::String(s) => s == value,
                        Value::Array(items) => items.iter().any(|i| i.as_str() == Some(value)),
                        _ => false,
                    };
                    if matches {
                        for p in grants {
                            if !policies.contains(p) {
                                policies.push(p.clone());
                            }
                        }
                    }
                }
            }
        }
        Ok(JwtIdentity {
            subject,
            policies,
            service,
            expires_at: exp,
        })
    }
}

/// The library's checks for one algorithm: signature, `alg`, the presence of
/// `exp`/`iss`/`aud`/`sub`, `iss` and `aud`. `exp` and `nbf` are compared
/// with the caller's `now` in [`JwtVerifier::identity`] instead, because the
/// library would read the wall clock; `leeway` is still set so the two agree.
fn validation(alg: Alg, issuer: &str, audiences: &[String], leeway_secs: u64) -> Validation {
    let mut v = Validation::new(alg.library());
    v.algorithms = vec![alg.library()];
    v.leeway = leeway_secs;
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v.set_issuer(&[issuer]);
    v.set_audience(audiences);
    v.validate_aud = true;
    v.validate_exp = false;
    v.validate_nbf = false;
    v
}

/// Reads `alg` and `kid` from the header without trusting anything else, so
/// that `none` and unknown algorithms are refused as such before any key is
/// looked at.
fn peek_header(token: &str) -> Result<(Alg, Option<String>), JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| JwtError::Malformed)?;
    let Ok(Value::Object(h)) = serde_json::from_slice::<Value>(&bytes) else {
        return Err(JwtError::Malformed);
    };
    let alg = match h.get("alg") {
        Some(Value::String(a)) => a
            .parse::<Alg>()
            .map_err(|_| JwtError::AlgorithmNotAllowed)?,
        _ => return Err(JwtError::Malformed),
    };
    let kid = match h.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(JwtError::Malformed),
    };
    Ok((alg, kid))
}

/// A NumericDate claim (RFC 7519 2): a non-negative number of seconds,
/// fractions rounded down.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                Ok(Some(u))
            } else {
                match n.as_f64() {
                    // The cast saturates; u64::MAX seconds is "never".
                    Some(f) if f.is_finite() && f >= 0.0 => Ok(Some(f as u64)),
                    _ => Err(JwtError::InvalidClaim(name.into())),
                }
            }
        }
        Some(_) => Err(JwtError::InvalidClaim(name.into())),
    }
}

fn map_library_error(kind: &ErrorKind) -> JwtError {
    match kind {
        ErrorKind::InvalidSignature => JwtError::BadSignature,
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
        ErrorKind::InvalidAudience => JwtError::WrongAudience,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm => JwtError::AlgorithmNotAllowed,
        // Only the claim names required in `validation` can appear here.
        ErrorKind::MissingRequiredClaim(c) => JwtError::MissingClaim(c.clone()),
        ErrorKind::InvalidClaimFormat(c) => JwtError::InvalidClaim(c.clone()),
        // A key that passed the checks at load but is refused now: treat the
        // token as not verified rather than explain the key.
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => JwtError::BadSignature,
        _ => JwtError::Malformed,
    }
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, JwtError> {
    let fail = |why: String| JwtError::Config(format!("cannot read {}: {why}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if meta.len() > MAX_KEY_FILE_LEN {
        return Err(fail(format!("larger than {MAX_KEY_FILE_LEN} bytes")));
    }
    std::fs::read(path).map_err(|e| fail(e.to_string()))
}

/// One PEM public key: RSA (at least 2048 bits), EC P-256 or Ed25519.
fn load_pem_key(path: &Path, provider: &CryptoProvider) -> Result<PublicKey, JwtError> {
    let bytes = read_key_file(path)?;
    let bad = |why: &str| JwtError::Config(format!("{}: {why}", path.display()));
    if bytes
        .windows(b"PRIVATE KEY-----".len())
        .any(|w| w == b"PRIVATE KEY-----")
    {
        return Err(bad("holds a private key; configure the public key instead"));
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(&bytes) {
        let der = key
            .try_get_as_bytes()
            .map_err(|_| bad("unreadable RSA key"))?;
        let (n, _e) = (provider.key_utils.rsa_pub_components_from_public_key)(der)
            .map_err(|_| bad("unreadable RSA key"))?;
        check_rsa_modulus(&n).map_err(|why| bad(&why))?;
        return Ok(PublicKey {
            alg: Alg::Rs256,
            key,
        });
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&bytes) {
        let point = key
            .try_get_as_bytes()
            .map_err(|_| bad("unreadable EC key"))?;
        // An uncompressed P-256 point: 0x04, x, y (32 bytes each).
        if point.len() != 65 {
            return Err(bad(
                "EC key is not on curve P-256 (only ES256 is supported)",
            ));
        }
        check_verifier(provider, Alg::Es256, &key).map_err(|_| bad("invalid EC P-256 key"))?;
        return Ok(PublicKey {
            alg: Alg::Es256,
            key,
        });
    }
    if let Ok(key) = DecodingKey::from_ed_pem(&bytes) {
        let raw = key
            .try_get_as_bytes()
            .map_err(|_| bad("unreadable Ed25519 key"))?;
        if raw.len() != 32 {
            return Err(bad("not an Ed25519 public key"));
        }
        check_verifier(provider, Alg::EdDsa, &key).map_err(|_| bad("invalid Ed25519 key"))?;
        return Ok(PublicKey {
            alg: Alg::EdDsa,
            key,
        });
    }
    Err(bad("not a PEM RSA, EC P-256 or Ed25519 public key"))
}

fn check_rsa_modulus(n: &[u8]) -> Result<(), String> {
    let significant = n.iter().skip_while(|b| **b == 0).count();
    if significant * 8 < MIN_RSA_BITS {
        return Err(format!("RSA key is shorter than {MIN_RSA_BITS} bits"));
    }
    Ok(())
}

/// Builds the backend's verifier once, which parses the key, so that a bad
/// key is a configuration error rather than a refused token later.
fn check_verifier(provider: &CryptoProvider, alg: Alg, key: &DecodingKey) -> Result<(), ()> {
    (provider.verifier_factory)(&alg.library(), key)
        .map(|_| ())
        .map_err(|_| ())
}

/// The keys of a JWKS file, by `kid`. Keys Maxine cannot use here (no `kid`,
/// `use` other than `sig`, a type or `alg` outside the allow-list, `oct`
/// secrets) are skipped; a file with no usable key is an error.
fn load_jwks(
    path: &Path,
    allowed: &[Alg],
    provider: &CryptoProvider,
) -> Result<HashMap<String, PublicKey>, JwtError> {
    let bytes = read_key_file(path)?;
    let bad = |why: String| JwtError::Config(format!("{}: {why}", path.display()));
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    let Some(Value::Array(entries)) = doc.get("keys") else {
        return Err(bad("not a JWKS (no \"keys\" array)".into()));
    };
    let mut keys = HashMap::new();
    for (i, entry) in entries.iter().enumerate() {
        // One key Maxine does not understand must not hide the others.
        let jwk: Jwk = match serde_json::from_value(entry.clone()) {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(file = %path.display(), index = i, error = %e, "skipping an unreadable JWKS key");
                continue;
            }
        };
        let Some(kid) = jwk.common.key_id.clone().filter(|k| !k.is_empty()) else {
            tracing::warn!(file = %path.display(), index = i, "skipping a JWKS key without kid");
            continue;
        };
        if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
            continue;
        }
        let Some(key) =
            jwk_key(&jwk, provider).map_err(|why| bad(format!("key {kid:?}: {why}")))?
        else {
            continue;
        };
        if !allowed.contains(&key.alg) {
            continue;
        }
        if keys.insert(kid.clone(), key).is_some() {
            return Err(bad(format!("kid {kid:?} appears twice")));
        }
    }
    if keys.is_empty() {
        return Err(bad(
            "holds no usable signing key (RS256, ES256 or EdDSA, with kid)".into(),
        ));
    }
    Ok(keys)
}

/// The public key of one JWK, `None` if it is of a kind Maxine does not use
/// (a secret, another curve, an algorithm other than RS256/ES256/EdDSA).
fn jwk_key(jwk: &Jwk, provider: &CryptoProvider) -> Result<Option<PublicKey>, String> {
    let declared = jwk.common.key_algorithm;
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = URL_SAFE_NO_PAD
                .decode(&p.n)
                .map_err(|_| "bad RSA modulus")?;
            let e = URL_SAFE_NO_PAD
                .decode(&p.e)
                .map_err(|_| "bad RSA exponent")?;
            if e.is_empty() {
                return Err("bad RSA exponent".into());
            }
            check_rsa_modulus(&n)?;
            Alg::Rs256
        }
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            let x = URL_SAFE_NO_PAD.decode(&p.x).map_err(|_| "bad EC x")?;
            let y = URL_SAFE_NO_PAD.decode(&p.y).map_err(|_| "bad EC y")?;
            if x.len() != 32 || y.len() != 32 {
                return Err("EC P-256 coordinates must be 32 bytes".into());
            }
            Alg::Es256
        }
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            // Checked here: the backend slices the first 32 bytes unchecked.
            let x = URL_SAFE_NO_PAD.decode(&p.x).map_err(|_| "bad Ed25519 x")?;
            if x.len() != 32 {
                return Err("Ed25519 keys must be 32 bytes".into());
            }
            Alg::EdDsa
        }
        // HS256 secrets come from hs256_secret_file only; other kinds are not used.
        _ => return Ok(None),
    };
    let expected = match alg {
        Alg::Rs256 => KeyAlgorithm::RS256,
        Alg::Es256 => KeyAlgorithm::ES256,
        _ => KeyAlgorithm::EdDSA,
    };
    if declared.is_some_and(|d| d != expected) {
        // e.g. an RSA key for PS256: not usable for RS256.
        return Ok(None);
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| "unreadable key")?;
    check_verifier(provider, alg, &key).map_err(|_| format!("invalid {}", alg.key_kind()))?;
    Ok(Some(PublicKey { alg, key }))
}

/// The HS256 secret: the file's bytes, less one trailing newline.
fn load_hs256_secret(path: &Path) -> Result<DecodingKey, JwtError> {
    let mut bytes = read_key_file(path)?;
    if bytes.ends_with(b"\r\n") {
        bytes.truncate(bytes.len() - 2);
    } else if bytes.ends_with(b"\n") {
        bytes.truncate(bytes.len() - 1);
    }
    if bytes.len() < MIN_HS256_SECRET_LEN {
        return Err(JwtError::Config(format!(
            "{}: the HS256 secret is {} bytes; at least {MIN_HS256_SECRET_LEN} are required",
            path.display(),
            bytes.len()
        )));
    }
    DecodingKey::from_secret(&bytes)
        .map_err(|_| JwtError::Config(format!("{}: unusable HS256 secret", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;
    const ISSUER: &str = "https://idp.example.test";
    const AUDIENCE: &str = "maxine";
    const RSA_PRIVATE: &[u8] = include_bytes!("../../tests/fixtures/jwt/rsa_private.pem");
    const RSA_PUBLIC: &[u8] = include_bytes!("../../tests/fixtures/jwt/rsa_public.pem");
    const HS_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-maxine-test";

    /// A key pair made in-process, with what the verifier and the signer need.
    struct TestKey {
        public_pem: Vec<u8>,
        signing: EncodingKey,
        /// The uncompressed public point (EC) or raw key (Ed25519).
        public_raw: Vec<u8>,
    }

    fn ec_key() -> TestKey {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        TestKey {
            public_pem: kp.public_key_pem().into_bytes(),
            signing: EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
            public_raw: kp.public_key_raw().to_vec(),
        }
    }

    fn ed_key() -> TestKey {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        TestKey {
            public_pem: kp.public_key_pem().into_bytes(),
            signing: EncodingKey::from_ed_pem(kp.serialize_pem().as_bytes()).unwrap(),
            public_raw: kp.public_key_raw().to_vec(),
        }
    }

    fn rsa_signing() -> EncodingKey {
        EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap()
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn settings(algorithms: &[&str]) -> JwtSettings {
        JwtSettings {
            issuer: ISSUER.into(),
            audiences: vec![AUDIENCE.into()],
            algorithms: algorithms.iter().map(|a| a.to_string()).collect(),
            public_key_files: Vec::new(),
            jwks_file: None,
            hs256_secret_file: None,
            leeway: Duration::from_secs(5),
            bindings: Vec::new(),
        }
    }

    /// Valid claims at `NOW`: five minutes left.
    fn claims() -> Value {
        json!({
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "alice",
            "iat": NOW - 60,
            "exp": NOW + 300,
        })
    }

    fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A JWKS document with EC P-256 keys, by kid.
    fn jwks_ec(keys: &[(&str, &TestKey)]) -> Vec<u8> {
        let keys: Vec<Value> = keys
            .iter()
            .map(|(kid, k)| {
                json!({
                    "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                    "x": b64(&k.public_raw[1..33]), "y": b64(&k.public_raw[33..65]),
                })
            })
            .collect();
        serde_json::to_vec(&json!({ "keys": keys })).unwrap()
    }

    fn rsa_verifier(dir: &Path) -> JwtVerifier {
        let mut s = settings(&["RS256"]);
        s.public_key_files = vec![write(dir, "rsa.pem", RSA_PUBLIC)];
        JwtVerifier::new(s).unwrap()
    }

    fn config_error(s: JwtSettings) -> String {
        match JwtVerifier::new(s) {
            Err(JwtError::Config(m)) => m,
            Err(e) => panic!("expected a configuration error, got {e:?}"),
            Ok(_) => panic!("expected a configuration error, got a verifier"),
        }
    }

    #[test]
    fn rs256_token_verifies_and_names_its_subject() {
        let dir = tempfile::tempdir().unwrap();
        let v = rsa_verifier(dir.path());
        let token = sign(Algorithm::RS256, None, &claims(), &rsa_signing());
        let id = v.verify(&token, NOW).unwrap();
        assert_eq!(
            id,
            JwtIdentity {
                subject: "alice".into(),
                policies: vec![],
                service: None,
                expires_at: NOW + 300,
            }
        );
    }

    #[test]
    fn es256_token_verifies_with_a_pem_key() {
        let dir = tempfile::tempdir().unwrap();
        let k = ec_key();
        let mut s = settings(&["ES256"]);
        s.public_key_files = vec![write(dir.path(), "ec.pem", &k.public_pem)];
        let v = JwtVerifier::new(s).unwrap();
        let token = sign(Algorithm::ES256, None, &claims(), &k.signing);
        assert_eq!(v.verify(&token, NOW).unwrap().subject, "alice");
    }

    #[test]
    fn eddsa_token_verifies_with_a_pem_key() {
        let dir = tempfile::tempdir().unwrap();
        let k = ed_key();
        let mut s = settings(&["EdDSA"]);
        s.public_key_files = vec![write(dir.path(), "ed.pem", &k.public_pem)];
        let v = JwtVerifier::new(s).unwrap();
        let token = sign(Algorithm::EdDSA, None, &claims(), &k.signing);
        assert_eq!(v.verify(&token, NOW).unwrap().subject, "alice");
    }

    #[test]
    fn hs256_token_verifies_with_the_secret_less_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(&["HS256"]);
        let mut file = HS_SECRET.to_vec();
        file.push(b'\n');
        s.hs256_secret_file = Some(write(dir.path(), "hs.secret", &file));
        let v = JwtVerifier::new(s).unwrap();
        let key = EncodingKey::from_secret(HS_SECRET).unwrap();
        let token = sign(Algorithm::HS256, None, &claims(), &key);
        assert_eq!(v.verify(&token, NOW).unwrap().subject, "alice");
    }

    #[test]
    fn several_pem_keys_of_one_algorithm_are_tried_in_turn() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (ec_key(), ec_key());
        let mut s = settings(&["ES256"]);
        s.public_key_files = vec![
            write(dir.path(), "old.pem", &old.public_pem),
            write(dir.path(), "new.pem", &new.public_pem),
        ];
        let v = JwtVerifier::new(s).unwrap();
        for k in [&old, &new] {
            let token = sign(Algorithm::ES256, None, &claims(), &k.signing);
            assert!(v.verify(&token, NOW).is_ok());
        }
        let stranger = sign(Algorithm::ES256, None, &claims(), &ec_key().signing);
        assert_eq!(v.verify(&stranger, NOW), Err(JwtError::BadSignature));
    }

    #[test]
    fn expiry_is_checked_against_the_callers_clock_with_the_leeway() {
        let dir = tempfile::tempdir().unwrap();
        let v = rsa_verifier(dir.path());
        let token = sign(Algorithm::RS256, None, &claims(), &rsa_signing());
        let exp = NOW + 300;
        // Within the 5 s leeway after `exp`: still accepted.
        assert!(v.verify(&token, exp + 4).is_ok());
        assert_eq!(v.verify(&token, exp + 5), Err(JwtError::Expired));
        assert_eq!(v.verify(&token, exp + 3600), Err(JwtError::Expired));
    }

    #[test]
    fn not_before_is_honoured_with_the_leeway() {
        let dir = tempfile::tempdir().unwrap();
        let v = rsa_verifier(dir.path());
        let mut c = claims();
        c["nbf"] = json!(NOW + 100);
        let token = sign(Algorithm::RS256, None, &c, &rsa_signing());
        assert_eq!(v.verify(&token, NOW), Err(JwtError::NotYetValid));
        assert!(v.verify(&token, NOW + 95).is_ok());
    }

    #[test]
    fn alg_none_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let v = rsa_verifier(dir.path());
        let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = b64(claims().to_string().as_bytes());
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}.c2ln"),
        ] {
            assert_eq!(v.verify(&token, NOW), Err(JwtError::AlgorithmNotAllowed));
        }
    }

    #[test]
    fn an_algorithm_outside_the_allow_list_is_refused_even_with_its_key_in_the_jwks() {
        let dir = tempfile::tempdir().unwrap();
        let ec = ec_key();
        // The JWKS holds an RSA key too, with kid "rsa"; only ES256 is allowed.
        let rsa = DecodingKey::from_rsa_pem(RSA_PUBLIC).unwrap();
        let (n, e) =
            (CryptoProvider::try_get_default()
                .unwrap()
                .key_utils
                .rsa_pub_components_from_public_key)(rsa.try_get_as_bytes().unwrap())
            .unwrap();
        let mut doc: Value = serde_json::from_slice(&jwks_ec(&[("ec", &ec)])).unwrap();
        doc["keys"]
            .as_array_mut()
            .unwrap()
            .push(json!({"kty": "RSA", "kid": "rsa", "n": b64(&n), "e": b64(&e)}));
        let mut s = settings(&["ES256"]);
        s.jwks_file = Some(write(dir.path(), "jwks.json", doc.to_string().as_bytes()));
        let v = JwtVerifier::new(s).unwrap();
        let token = sign(Algorithm::RS256, Some("rsa"), &claims(), &rsa_signing());
        assert_eq!(v.verify(&token, NOW), Err(JwtError::AlgorithmNotAllowed));
        // An algorithm Maxine never accepts.
        let hs512 = sign(
            Algorithm::HS512,
            None,
            &claims(),
            &EncodingKey::from_secret(HS_SECRET).unwrap(),
        );
        assert_eq!(v.verify(&hs512, NOW), Err(JwtError::AlgorithmNotAllowed));
        // The allowed one still works.
        let ok = sign(Algorithm::ES256, Some("ec"), &claims(), &ec.signing);
        assert!(v.verify(&ok, NOW).is_ok());
    }

    #[test]
    fn an_hs256_token_keyed_with_the_rsa_public_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(&["RS256", "HS256"]);
        s.public_key_files = vec![write(dir.path(), "rsa.pem", RSA_PUBLIC)];
        s.hs256_secret_file = Some(write(dir.path(), "hs.secret", HS_SECRET));
        let v = JwtVerifier::new(s).unwrap();
        // The classic confusion: the public key's PEM bytes used as an HMAC secret.
        let forged_key = EncodingKey::from_secret(RSA_PUBLIC).unwrap();
        let forged = sign(Algorithm::HS256, None, &claims(), &forged_key);
        assert_eq!(v.verify(&forged, NOW), Err(JwtError::BadSignature));
        // The DER bytes of the key fare no better.
        let der = DecodingKey::from_rsa_pem(RSA_PUBLIC).unwrap();
        let forged_der_key = EncodingKey::from_secret(der.try_get_as_bytes().unwrap()).unwrap();
        let forged_der = sign(Algorithm::HS256, None, &claims(), &forged_der_key);
        assert_eq!(v.verify(&forged_der, NOW), Err(JwtError::BadSignature));
        // Both real paths still work.
        let hs = sign(
            Algorithm::HS256,
            None,
            &claims(),
            &EncodingKey::from_secret(HS_SECRET).unwrap(),
        );
        assert!(v.verify(&hs, NOW).is_ok());
        let rs = sign(Algorithm::RS256, None, &claims(), &rsa_signing());
        assert!(v.verify(&rs, NOW).is_ok());
    }

    #[test]
    fn a_key_of_the_wrong_type_for_the_tokens_algorithm_is_never_used() {
        let dir = tempfile::tempdir().unwrap();
        let (ec, ed) = (ec_key(), ed_key());
        let mut s = settings(&["ES256", "EdDSA"]);
        s.public_key_files = vec![write(dir.path(), "ed.pem", &ed.public_pem)];
        s.jwks_file = Some(write(dir.path(), "jwks.json", &jwks_ec(&[("ec", &ec)])));
        let v = JwtVerifier::new(s).unwrap();
        // kid "ec" names a P-256 key: an EdDSA token naming it is refused.
        let token = sign(Algorithm::EdDSA, Some("ec"), &claims(), &ed.signing);
        assert_eq!(v.verify(&token, NOW), Err(JwtError::UnknownKey));
        // No P-256 PEM key: an ES256 token without kid has no key to try.
        let token = sign(Algorithm::ES256, None, &claims(), &ec.signing);
        assert_eq!(v.verify(&token, NOW), Err(JwtError::UnknownKey));
    }

    #[test]
    fn wrong_audience_and_wrong_issuer_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let v = rsa_verifier(dir.path());
        let mut c = claims();
        c["aud"] = json!("someone-else");
        let token = sign(Algorithm::RS256, None, &c, &rsa_signing());
        assert_eq!(v.verify(&token, NOW), Err(JwtError::WrongAudience));
        c["aud"] = json!(["someone-else", AUDIENCE]);
        let token = sign(Algorithm::RS256, None, &c, &rsa_signing());
        assert!(
            v.verify(&token, NOW).is_ok(),
            "an array naming Maxine is accepted"
        );
        let mut c = claims();
        c["iss"] = json!("https://idp.example.test/other");
        let token = sign(Algorithm::RS256, None, &c, &rsa_signing());
        assert_eq!(v.verify(&token, NOW), Err(JwtError::WrongIssuer));
    }

    #[test]
    fn exp_iss_aud_and_sub_are_required() {
        let dir = tempfile::tempdir().unwrap();
        let v = rsa_verifier(dir.path());
        for claim in ["exp", "iss", "aud", "sub"] {
            let mut c = claims();
            c.as_object_mut().unwrap().remove(claim);
            let token = sign(Algorithm::RS256, None, &c, &rsa_signing());
            assert_eq!(
                v.verify(&token, NOW),
                Err(JwtError::MissingClaim(claim.into())),
                "{claim}"
            );
        }
        let mut c = claims();
        c["exp"] = json!("tomorrow");
        let token = sign(Algorithm::RS256, None, &c, &rsa_signing());
        assert!(v.verify(&token, NOW).is_err());
    }

    #[test]
    fn malformed_tokens_are_refused_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let v = rsa_verifier(dir.path());
        let good = sign(Algorithm::RS256, None, &claims(), &rsa_signing());
        let huge = "a".repeat(MAX_TOKEN_LEN + 1);
        for bad in ["", "abc", "a.b", "a.b.c.d", "!!.??.**", huge.as_str()] {
            assert_eq!(v.verify(bad, NOW), Err(JwtError::Malformed), "{bad:.20}");
        }
        // A payload swapped under a valid signature.
        let parts: Vec<&str> = good.split('.').collect();
        let mut c = claims();
        c["sub"] = json!("mallory");
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(c.to_string().as_bytes()),
            parts[2]
        );
        assert_eq!(v.verify(&tampered, NOW), Err(JwtError::BadSignature));
        // No message names the token.
        for e in [
            v.verify(&tampered, NOW).unwrap_err(),
            v.verify(&good, NOW + 9999).unwrap_err(),
        ] {
            let msg = e.to_string();
            assert!(!msg.contains(parts[1]) && !msg.contains("mallory"), "{msg}");
        }
    }

    #[test]
    fn bindings_grant_a_service_identity_and_group_policies() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(&["RS256"]);
        s.public_key_files = vec![write(dir.path(), "rsa.pem", RSA_PUBLIC)];
        s.bindings = vec![
            Binding {
                claim: "maxine_service".into(),
                kind: BindingKind::ServiceIdentity,
            },
            Binding {
                claim: "groups".into(),
                kind: BindingKind::Policies {
                    value: "platform".into(),
                    policies: vec!["operator".into(), "read-all".into()],
                },
            },
            Binding {
                claim: "team".into(),
                kind: BindingKind::Policies {
                    value: "payments".into(),
                    policies: vec!["payments-write".into(), "read-all".into()],
                },
            },
        ];
        let v = JwtVerifier::new(s).unwrap();
        let mut c = claims();
        c["maxine_service"] = json!("billing");
        c["groups"] = json!(["dev", "platform"]);
        c["team"] = json!("payments");
        let id = v
            .verify(&sign(Algorithm::RS256, None, &c, &rsa_signing()), NOW)
            .unwrap();
        assert_eq!(id.service.as_deref(), Some("billing"));
        assert_eq!(id.policies, ["operator", "read-all", "payments-write"]);

        // Not in the group, other team: nothing granted.
        let mut c = claims();
        c["groups"] = json!(["dev"]);
        c["team"] = json!("search");
        let id = v
            .verify(&sign(Algorithm::RS256, None, &c, &rsa_signing()), NOW)
            .unwrap();
        assert_eq!((id.service, id.policies), (None, vec![]));

        // A service identity that is not a string is refused, not ignored.
        let mut c = claims();
        c["maxine_service"] = json!(42);
        let token = sign(Algorithm::RS256, None, &c, &rsa_signing());
        assert_eq!(
            v.verify(&token, NOW),
            Err(JwtError::InvalidClaim("maxine_service".into()))
        );
    }

    #[test]
    fn a_jwks_key_is_selected_by_kid_and_an_unknown_kid_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (ec_key(), ec_key());
        let mut s = settings(&["ES256"]);
        s.jwks_file = Some(write(
            dir.path(),
            "jwks.json",
            &jwks_ec(&[("a", &a), ("b", &b)]),
        ));
        let v = JwtVerifier::new(s).unwrap();
        let by_b = sign(Algorithm::ES256, Some("b"), &claims(), &b.signing);
        assert!(v.verify(&by_b, NOW).is_ok());
        // Signed by b but claiming kid a: only a is tried.
        let lying = sign(Algorithm::ES256, Some("a"), &claims(), &b.signing);
        assert_eq!(v.verify(&lying, NOW), Err(JwtError::BadSignature));
        let unknown = sign(Algorithm::ES256, Some("c"), &claims(), &b.signing);
        assert_eq!(v.verify(&unknown, NOW), Err(JwtError::UnknownKey));
        // Without kid and without PEM keys there is nothing to try.
        let no_kid = sign(Algorithm::ES256, None, &claims(), &b.signing);
        assert_eq!(v.verify(&no_kid, NOW), Err(JwtError::UnknownKey));
    }

    #[test]
    fn a_jwks_skips_keys_it_cannot_use_but_needs_one_it_can() {
        let dir = tempfile::tempdir().unwrap();
        let (a, ed) = (ec_key(), ed_key());
        let mut doc: Value = serde_json::from_slice(&jwks_ec(&[("a", &a)])).unwrap();
        let keys = doc["keys"].as_array_mut().unwrap();
        keys.push(json!({"kty": "oct", "kid": "secret", "k": b64(HS_SECRET)}));
        keys.push(json!({"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"}));
        keys.push(json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64(&ed.public_raw)}));
        keys.push(json!({"kty": "EC", "crv": "P-256", "x": b64(&a.public_raw[1..33]), "y": b64(&a.public_raw[33..65])}));
        keys.push(json!({"kty": "whatever", "kid": "future"}));
        let mut s = settings(&["ES256"]);
        s.jwks_file = Some(write(dir.path(), "jwks.json", doc.to_string().as_bytes()));
        let v = JwtVerifier::new(s.clone()).unwrap();
        // The oct key is never an HS256 key here, whatever the token says.
        let hs = sign(
            Algorithm::HS256,
            Some("secret"),
            &claims(),
            &EncodingKey::from_secret(HS_SECRET).unwrap(),
        );
        assert_eq!(v.verify(&hs, NOW), Err(JwtError::AlgorithmNotAllowed));
        assert!(
            v.verify(
                &sign(Algorithm::ES256, Some("a"), &claims(), &a.signing),
                NOW
            )
            .is_ok()
        );

        // EdDSA allowed too: the OKP key becomes usable.
        let mut s2 = s.clone();
        s2.algorithms.push("EdDSA".into());
        let v2 = JwtVerifier::new(s2).unwrap();
        assert!(
            v2.verify(
                &sign(Algorithm::EdDSA, Some("ed"), &claims(), &ed.signing),
                NOW
            )
            .is_ok()
        );

        // Nothing usable for RS256 alone.
        s.algorithms = vec!["RS256".into()];
        assert!(config_error(s).contains("no usable signing key"));
    }

    #[test]
    fn reload_picks_up_a_new_key_file_and_keeps_the_old_keys_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (ec_key(), ec_key());
        let path = write(dir.path(), "ec.pem", &old.public_pem);
        let mut s = settings(&["ES256"]);
        s.public_key_files = vec![path.clone()];
        let v = JwtVerifier::new(s).unwrap();
        let old_token = sign(Algorithm::ES256, None, &claims(), &old.signing);
        let new_token = sign(Algorithm::ES256, None, &claims(), &new.signing);
        assert!(v.verify(&old_token, NOW).is_ok());

        std::fs::write(&path, &new.public_pem).unwrap();
        v.reload().unwrap();
        assert!(v.verify(&new_token, NOW).is_ok());
        assert_eq!(v.verify(&old_token, NOW), Err(JwtError::BadSignature));

        std::fs::write(&path, b"not a key").unwrap();
        assert!(matches!(v.reload(), Err(JwtError::Config(_))));
        assert!(v.verify(&new_token, NOW).is_ok(), "the previous keys stay");
    }

    #[test]
    fn a_changed_key_file_is_reloaded_by_verify_at_most_once_per_second() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (ec_key(), ec_key());
        let path = write(dir.path(), "ec.pem", &old.public_pem);
        let mut s = settings(&["ES256"]);
        s.public_key_files = vec![path.clone()];
        let v = JwtVerifier::new(s).unwrap();
        let new_token = sign(Algorithm::ES256, None, &claims(), &new.signing);
        let old_token = sign(Algorithm::ES256, None, &claims(), &old.signing);
        assert!(v.verify(&old_token, NOW).is_ok());

        // Rewrite the file; move its mtime so the change shows even on a
        // file system with coarse timestamps.
        std::fs::write(&path, &new.public_pem).unwrap();
        let later = std::fs::metadata(&path).unwrap().modified().unwrap() + Duration::from_secs(10);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        // Same second as the last look: not looked at again yet.
        assert_eq!(v.verify(&new_token, NOW), Err(JwtError::BadSignature));
        // A second later the change is seen and the new key used.
        assert!(v.verify(&new_token, NOW + 1).is_ok());
        assert_eq!(v.verify(&old_token, NOW + 1), Err(JwtError::BadSignature));
        assert_eq!(v.reload_if_changed(NOW + 2), Ok(false), "nothing new");

        // A broken rewrite keeps the keys in force and is reported once.
        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(
            v.reload_if_changed(NOW + 3),
            Err(JwtError::Config(_))
        ));
        assert_eq!(v.reload_if_changed(NOW + 4), Ok(false));
        assert!(v.verify(&new_token, NOW + 5).is_ok());
    }

    #[test]
    fn misconfigurations_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let rsa = write(dir.path(), "rsa.pem", RSA_PUBLIC);
        let with_rsa = |algs: &[&str]| {
            let mut s = settings(algs);
            s.public_key_files = vec![rsa.clone()];
            s
        };

        let mut s = with_rsa(&["RS256"]);
        s.leeway = Duration::from_secs(61);
        assert!(config_error(s).contains("leeway"));

        let mut s = with_rsa(&["RS256"]);
        s.issuer = String::new();
        assert!(config_error(s).contains("issuer"));

        let mut s = with_rsa(&["RS256"]);
        s.audiences.clear();
        assert!(config_error(s).contains("audiences"));

        assert!(config_error(with_rsa(&[])).contains("at least one algorithm"));
        assert!(config_error(with_rsa(&["RS512"])).contains("unsupported algorithm"));
        assert!(config_error(with_rsa(&["rs256"])).contains("unsupported algorithm"));
        assert!(config_error(with_rsa(&["RS256", "HS256"])).contains("hs256_secret_file"));
        assert!(config_error(settings(&["ES256"])).contains("public_key_files"));

        let mut s = with_rsa(&["RS256", "HS256"]);
        s.hs256_secret_file = Some(write(
            dir.path(),
            "short",
            b"only-31-bytes-long-secret-value",
        ));
        assert!(config_error(s).contains("at least 32"));

        let mut s = with_rsa(&["RS256"]);
        s.hs256_secret_file = Some(write(dir.path(), "hs", HS_SECRET));
        assert!(config_error(s).contains("HS256 is not in algorithms"));

        // The RSA key file given, but RS256 not allowed.
        assert!(config_error(with_rsa(&["ES256"])).contains("RS256 is not in algorithms"));

        let mut s = settings(&["RS256"]);
        s.public_key_files = vec![write(dir.path(), "private.pem", RSA_PRIVATE)];
        assert!(config_error(s).contains("private key"));

        let mut s = settings(&["RS256"]);
        s.public_key_files = vec![dir.path().join("absent.pem")];
        assert!(config_error(s).contains("cannot read"));

        let mut s = settings(&["ES256"]);
        s.jwks_file = Some(write(dir.path(), "jwks.json", b"{\"keys\": 5}"));
        assert!(config_error(s).contains("not a JWKS"));

        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let mut s = settings(&["ES256"]);
        s.public_key_files = vec![write(
            dir.path(),
            "p384.pem",
            p384.public_key_pem().as_bytes(),
        )];
        assert!(config_error(s).contains("P-256"));

        let mut s = with_rsa(&["RS256"]);
        s.bindings = vec![Binding {
            claim: "groups".into(),
            kind: BindingKind::Policies {
                value: "platform".into(),
                policies: vec![],
            },
        }];
        assert!(config_error(s).contains("at least one policy"));
    }

    #[test]
    fn the_verifier_is_send_and_sync() {
        fn shareable<T: Send + Sync>() {}
        shareable::<JwtVerifier>();
    }
}
