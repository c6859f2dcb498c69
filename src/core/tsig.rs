//! TSIG keys (RFC 8945): a DNS client that signs its queries with one is
//! asked as the ACL token the key is bound to (docs/security.md#tsig).

use super::acl::{AclError, MAX_POLICY_NAME_LEN};

/// The algorithms a key may use (HMAC with SHA-2; RFC 8945 6).
pub const ALGORITHMS: [&str; 3] = ["hmac-sha256", "hmac-sha384", "hmac-sha512"];

/// Shortest and longest secret, in bytes (RFC 8945 6: at least the hash's
/// output length is recommended; 16 is the floor Maxine accepts).
pub const MIN_SECRET_LEN: usize = 16;
pub const MAX_SECRET_LEN: usize = 512;

/// A TSIG key: its name (a DNS name, lowercase, without the final dot),
/// algorithm, secret, and the accessor of the token whose policies (or
/// service identity) a query signed with it gets.
#[derive(Clone, PartialEq, Eq)]
pub struct TsigKey {
    pub name: String,
    pub algorithm: String,
    pub secret: Vec<u8>,
    pub token: String,
    pub index: u64,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("token", &self.token)
            .field("index", &self.index)
            .finish()
    }
}

impl TsigKey {
    pub fn validate(&self) -> Result<(), AclError> {
        let labels_ok = !self.name.is_empty()
            && self.name.len() <= 253
            && self.name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                    })
            });
        if !labels_ok {
            return Err(AclError::Invalid(format!(
                "TSIG key name {:?} must be a DNS name: lowercase labels of letters, digits, '-' or '_', \
                 separated by '.', without a final dot",
                self.name
            )));
        }
        if !ALGORITHMS.contains(&self.algorithm.as_str()) {
            return Err(AclError::Invalid(format!(
                "algorithm {:?} is not one of {}",
                self.algorithm,
                ALGORITHMS.join(", ")
            )));
        }
        if self.secret.len() < MIN_SECRET_LEN || self.secret.len() > MAX_SECRET_LEN {
            return Err(AclError::Invalid(format!(
                "a TSIG secret is {MIN_SECRET_LEN} to {MAX_SECRET_LEN} bytes (base64 in the API)"
            )));
        }
        if self.token.is_empty() || self.token.len() > MAX_POLICY_NAME_LEN {
            return Err(AclError::Invalid(
                "token must be the accessor of an ACL token".into(),
            ));
        }
        Ok(())
    }
}
