//! Maxine's own sign-in: roles, password hashes, and the access tokens Maxine
//! signs for `POST /api/maxine/signin` and accepts back.
//!
//! Owns: the signing key file `<data dir>/signin.key`, the token format (iss
//! `maxine`, sub, role, iat, exp, epoch), and argon2id password hashing. The
//! caller keeps the users, their roles and password epochs: a token carries
//! the epoch it was issued under, and the caller refuses it once the user's
//! epoch moved on (a password change).
//!
//! Tokens are HS256 with a random 64-byte key. Maxine is the only party that
//! signs or checks them, so a shared-secret MAC is enough; a public-key
//! algorithm would only pay off if others verified Maxine's tokens. They can
//! never pass for external tokens (or the reverse): the issuer differs and
//! the key is never shared with [`super::jwt`].

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use argon2::{Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// How long a sign-in token is valid.
pub const SIGNIN_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// The `iss` of every token Maxine signs.
pub const SIGNIN_ISSUER: &str = "maxine";

/// The key file's name inside the directory given to [`SigningKey::load_or_create`].
pub const SIGNIN_KEY_FILE: &str = "signin.key";

/// Clock-skew allowance when checking `exp`; small, since the clocks that
/// issue and check are the same server's (or its peers').
const LEEWAY_SECS: u64 = 5;

/// Bytes of a new key: the HMAC-SHA-256 block size.
const NEW_KEY_LEN: usize = 64;

/// A key file shorter than this is refused.
const MIN_KEY_LEN: usize = 32;

/// Tokens longer than this are refused before any parsing.
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Upper bounds on the argon2 parameters of a stored hash, so that a damaged
/// or hostile PHC string cannot make a sign-in allocate gigabytes or spin.
const MAX_M_COST_KIB: u32 = 256 * 1024;
const MAX_T_COST: u32 = 16;
const MAX_P_COST: u32 = 16;

/// What went wrong in sign-in. Token errors are safe to show to a client.
#[derive(Debug, thiserror::Error)]
pub enum SigninError {
    /// Not a JWT, or not one of the shape Maxine issues.
    #[error("not a well-formed sign-in token")]
    Malformed,
    /// `exp` is past.
    #[error("sign-in token has expired")]
    Expired,
    /// The signature is not Maxine's.
    #[error("sign-in token signature is not valid")]
    BadSignature,
    /// Signed with another algorithm, or with another issuer or an audience:
    /// not a token this server issued.
    #[error("token was not issued by this server")]
    NotIssuedHere,
    /// A role name other than viewer, operator or admin.
    #[error("unknown role (use viewer, operator or admin)")]
    UnknownRole,
    /// argon2 refused to hash (for example, the random source failed).
    #[error("cannot hash the password")]
    Hash,
    /// The key file or its directory cannot be read or written.
    #[error("sign-in key {path}: {source}")]
    KeyIo {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The key file exists but is not usable.
    #[error("sign-in key {path}: {reason}")]
    KeyInvalid {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// What a signed-in user may do; ordered, so `role >= Role::Operator` reads
/// as "at least operator".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads the registry.
    Viewer,
    /// Also changes services.
    Operator,
    /// Also manages users.
    Admin,
}

impl Role {
    /// The wire name: `viewer`, `operator` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = SigninError;

    /// Exactly the wire names, lowercase.
    fn from_str(s: &str) -> Result<Self, SigninError> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            _ => Err(SigninError::UnknownRole),
        }
    }
}

/// Hashes `password` with argon2id (the crate's defaults: 19 MiB, 2 passes,
/// 1 lane) and a random 16-byte salt, as a PHC string (`$argon2id$v=19$...`).
pub fn hash_password(password: &str) -> Result<String, SigninError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|_| SigninError::Hash)
}

/// Whether `password` matches the PHC string `phc`. The comparison is
/// argon2's own (constant time); an unparsable string, or one whose
/// parameters are beyond sane bounds, is simply `false`.
pub fn verify_password(phc: &str, password: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    if params.m_cost() > MAX_M_COST_KIB
        || params.t_cost() > MAX_T_COST
        || params.p_cost() > MAX_P_COST
    {
        return false;
    }
    Argon2::default()
        .verify_password(password.as_bytes(), &hash)
        .is_ok()
}

/// A verified sign-in token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedIn {
    /// The user name (`sub`).
    pub user: String,
    /// The role granted at sign-in.
    pub role: Role,
    /// The user's password epoch when the token was issued; the caller
    /// refuses the token if the user's epoch is now different.
    pub epoch: u64,
    /// `iat` (Unix seconds).
    pub issued_at: u64,
    /// `exp` (Unix seconds).
    pub expires_at: u64,
}

/// The claims of a sign-in token.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Claims {
    iss: String,
    sub: String,
    role: Role,
    iat: u64,
    exp: u64,
    epoch: u64,
}

/// Maxine's own signing key. Cheap to share behind an `Arc`.
pub struct SigningKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey([redacted])")
    }
}

impl SigningKey {
    /// Loads `<dir>/signin.key` (at least 32 bytes, used whole as the HS256
    /// key), creating it and `dir` if absent: 64 random bytes from ring's
    /// `SystemRandom`, file mode 0600, fsynced.
    ///
    /// A new key is written to a temporary file, fsynced, renamed into
    /// place and the directory fsynced, so a crash leaves either no key or a
    /// whole one. One server uses a directory at a time.
    pub fn load_or_create(dir: &Path) -> Result<Self, SigninError> {
        let path = dir.join(SIGNIN_KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                if bytes.len() < MIN_KEY_LEN {
                    return Err(SigninError::KeyInvalid {
                        path,
                        reason: format!(
                            "{} bytes; at least {MIN_KEY_LEN} are required",
                            bytes.len()
                        ),
                    });
                }
                if let Ok(meta) = std::fs::metadata(&path)
                    && meta.permissions().mode() & 0o077 != 0
                {
                    tracing::warn!(path = %path.display(), "the sign-in key is readable by other users; chmod 600 it");
                }
                Self::from_secret(&bytes).map_err(|reason| SigninError::KeyInvalid { path, reason })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(dir, &path),
            Err(source) => Err(SigninError::KeyIo { path, source }),
        }
    }

    fn create(dir: &Path, path: &Path) -> Result<Self, SigninError> {
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| SigninError::KeyIo { path: p, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut secret = [0u8; NEW_KEY_LEN];
        SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| SigninError::KeyInvalid {
                path: path.to_path_buf(),
                reason: "the system random source failed".into(),
            })?;
        let tmp = dir.join(format!("{SIGNIN_KEY_FILE}.tmp"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        // `mode` applies only to a file it creates; a leftover temporary
        // file keeps its mode otherwise.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io(&tmp))?;
        file.write_all(&secret).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(io(path))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
        tracing::info!(path = %path.display(), "created a new sign-in key");
        Self::from_secret(&secret).map_err(|reason| SigninError::KeyInvalid {
            path: path.to_path_buf(),
            reason,
        })
    }

    fn from_secret(secret: &[u8]) -> Result<Self, String> {
        let encoding = EncodingKey::from_secret(secret).map_err(|e| e.to_string())?;
        let decoding = DecodingKey::from_secret(secret).map_err(|e| e.to_string())?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.set_issuer(&[SIGNIN_ISSUER]);
        // No audience is expected: a token that names one is not Maxine's.
        validation.validate_aud = true;
        validation.aud = None;
        // `exp` is compared with the caller's `now` in `verify`: the library
        // would read the wall clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        Ok(SigningKey {
            encoding,
            decoding,
            validation,
        })
    }

    /// A JWT: iss "maxine", sub user, role, iat, exp = now + 30 min, and `epoch` (the user's password epoch).
    pub fn issue(&self, user: &str, role: Role, epoch: u64, now_unix: u64) -> String {
        let claims = Claims {
            iss: SIGNIN_ISSUER.to_string(),
            sub: user.to_string(),
            role,
            iat: now_unix,
            exp: now_unix.saturating_add(SIGNIN_LIFETIME.as_secs()),
            epoch,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 over serializable claims with an in-memory key cannot fail")
    }

    /// Verifies Maxine's own token (alg pinned to what `issue` uses, iss "maxine", exp required, small leeway);
    /// returns (user, role, epoch). The caller compares epoch with the user's current epoch.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<SignedIn, SigninError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(SigninError::Malformed);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => SigninError::BadSignature,
                ErrorKind::InvalidAlgorithm
                | ErrorKind::MissingAlgorithm
                | ErrorKind::InvalidIssuer
                | ErrorKind::InvalidAudience => SigninError::NotIssuedHere,
                _ => SigninError::Malformed,
            })?;
        let c = data.claims;
        if now_unix >= c.exp.saturating_add(LEEWAY_SECS) {
            return Err(SigninError::Expired);
        }
        Ok(SignedIn {
            user: c.sub,
            role: c.role,
            epoch: c.epoch,
            issued_at: c.iat,
            expires_at: c.exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    const NOW: u64 = 1_800_000_000;

    fn key() -> (tempfile::TempDir, SigningKey) {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::load_or_create(dir.path()).unwrap();
        (dir, key)
    }

    #[test]
    fn an_issued_token_verifies_with_its_user_role_and_epoch() {
        let (_dir, key) = key();
        let token = key.issue("alice", Role::Operator, 7, NOW);
        let s = key.verify(&token, NOW + 60).unwrap();
        assert_eq!(
            s,
            SignedIn {
                user: "alice".into(),
                role: Role::Operator,
                epoch: 7,
                issued_at: NOW,
                expires_at: NOW + 30 * 60,
            }
        );
        // The claims are the documented ones.
        let payload = token.split('.').nth(1).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(claims["iss"], "maxine");
        assert_eq!(claims["role"], "operator");
        assert_eq!(claims["sub"], "alice");
    }

    #[test]
    fn a_token_is_refused_once_its_thirty_minutes_are_over() {
        let (_dir, key) = key();
        let token = key.issue("alice", Role::Admin, 0, NOW);
        let exp = NOW + SIGNIN_LIFETIME.as_secs();
        assert!(key.verify(&token, exp - 1).is_ok());
        assert!(key.verify(&token, exp + LEEWAY_SECS - 1).is_ok());
        assert!(matches!(
            key.verify(&token, exp + LEEWAY_SECS),
            Err(SigninError::Expired)
        ));
    }

    #[test]
    fn a_tampered_token_is_refused() {
        let (_dir, key) = key();
        let token = key.issue("bob", Role::Viewer, 1, NOW);
        let parts: Vec<&str> = token.split('.').collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims["role"] = "admin".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert!(matches!(
            key.verify(&tampered, NOW),
            Err(SigninError::BadSignature)
        ));
        let mut sig = parts[2].to_string();
        sig.replace_range(0..1, if sig.starts_with('A') { "B" } else { "A" });
        let bad_sig = format!("{}.{}.{}", parts[0], parts[1], sig);
        assert!(matches!(
            key.verify(&bad_sig, NOW),
            Err(SigninError::BadSignature)
        ));
        for garbage in ["", "x", "a.b.c", "a.b"] {
            assert!(matches!(
                key.verify(garbage, NOW),
                Err(SigninError::Malformed)
            ));
        }
    }

    #[test]
    fn a_token_from_another_key_or_issuer_is_not_maxines() {
        let (dir, key) = key();
        let (_other_dir, other) = self::key();
        let token = other.issue("alice", Role::Admin, 0, NOW);
        assert!(matches!(
            key.verify(&token, NOW),
            Err(SigninError::BadSignature)
        ));

        // An identity provider's token, even HS256 with Maxine's own key, is
        // refused for its issuer; an RS256 one for its algorithm.
        let secret = std::fs::read(dir.path().join(SIGNIN_KEY_FILE)).unwrap();
        let idp = serde_json::json!({
            "iss": "https://idp.example.test", "sub": "alice", "role": "admin",
            "iat": NOW, "exp": NOW + 60, "epoch": 0,
        });
        let enc = EncodingKey::from_secret(&secret).unwrap();
        let t = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &idp, &enc).unwrap();
        assert!(matches!(
            key.verify(&t, NOW),
            Err(SigninError::NotIssuedHere)
        ));
        let rsa =
            EncodingKey::from_rsa_pem(include_bytes!("../../tests/fixtures/jwt/rsa_private.pem"))
                .unwrap();
        let mut own_claims = idp.clone();
        own_claims["iss"] = SIGNIN_ISSUER.into();
        let t = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &own_claims, &rsa).unwrap();
        assert!(matches!(
            key.verify(&t, NOW),
            Err(SigninError::NotIssuedHere)
        ));
    }

    #[test]
    fn maxines_token_is_not_an_identity_providers_token() {
        let (dir, key) = key();
        let token = key.issue("alice", Role::Admin, 0, NOW);
        let secret_file = dir.path().join("idp.secret");
        std::fs::write(&secret_file, [7u8; 40]).unwrap();
        let verifier = super::super::jwt::JwtVerifier::new(super::super::jwt::JwtSettings {
            issuer: "https://idp.example.test".into(),
            audiences: vec!["maxine".into()],
            algorithms: vec!["HS256".into()],
            public_key_files: vec![],
            jwks_file: None,
            hs256_secret_file: Some(secret_file),
            leeway: Duration::from_secs(5),
            bindings: vec![],
        })
        .unwrap();
        assert!(verifier.verify(&token, NOW).is_err());
    }

    #[test]
    fn the_key_persists_across_loads_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = SigningKey::load_or_create(&data).unwrap();
        let path = data.join(SIGNIN_KEY_FILE);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len() as usize, NEW_KEY_LEN);
        let bytes = std::fs::read(&path).unwrap();

        let second = SigningKey::load_or_create(&data).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "not rewritten");
        let token = first.issue("alice", Role::Viewer, 3, NOW);
        assert_eq!(second.verify(&token, NOW).unwrap().epoch, 3);
        assert!(!data.join(format!("{SIGNIN_KEY_FILE}.tmp")).exists());
    }

    #[test]
    fn a_short_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SIGNIN_KEY_FILE), [1u8; 16]).unwrap();
        assert!(matches!(
            SigningKey::load_or_create(dir.path()),
            Err(SigninError::KeyInvalid { .. })
        ));
    }

    #[test]
    fn passwords_hash_to_argon2id_and_verify() {
        let phc = hash_password("correct horse battery staple").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        assert!(verify_password(&phc, "correct horse battery staple"));
        assert!(!verify_password(&phc, "correct horse battery stable"));
        assert!(!verify_password(&phc, ""));
        // A random salt: the same password hashes differently.
        assert_ne!(phc, hash_password("correct horse battery staple").unwrap());
    }

    #[test]
    fn a_garbage_or_extreme_phc_string_is_false_without_panic() {
        for phc in [
            "",
            "not a hash",
            "$argon2id$",
            "$argon2id$v=19$m=19456,t=2,p=1$",
            "$bcrypt$v=1$abc$def",
            "$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
            "$argon2id$v=19$m=19456,t=1000,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
        ] {
            assert!(!verify_password(phc, "password"), "{phc}");
        }
    }

    #[test]
    fn roles_are_ordered_and_round_trip_their_names() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        for r in [Role::Viewer, Role::Operator, Role::Admin] {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
            assert_eq!(r.to_string(), r.as_str());
        }
        assert!(matches!(
            "Admin".parse::<Role>(),
            Err(SigninError::UnknownRole)
        ));
        assert!(matches!(
            "root".parse::<Role>(),
            Err(SigninError::UnknownRole)
        ));
    }
}
