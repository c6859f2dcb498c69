//! Access-control objects: policies, tokens, sign-in users and the
//! bootstrap mark, as the registry keeps them.
//!
//! They are changes on the same log as registrations ([`AclChange`]), so
//! they get indexes, are journaled by the same group commit and replicate
//! with everything else. This module holds the values and their
//! validation only; what a token may do is decided by `crate::policy`,
//! and secrets are hashed before they get here (the registry never sees
//! a secret).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::strategy::ServiceConfig;

use serde::{Deserialize, Serialize};

use super::labels::ServiceName;

/// Longest policy name, accessor, description and user name accepted.
pub const MAX_POLICY_NAME_LEN: usize = 128;
pub const MAX_DESCRIPTION_LEN: usize = 512;
pub const MAX_USER_NAME_LEN: usize = 128;
/// Most rules of one kind in a policy, and policies on one token.
pub const MAX_RULES: usize = 256;
pub const MAX_TOKEN_POLICIES: usize = 32;

/// The accessor id of the token that requests without a credential use.
pub const ANONYMOUS: &str = "anonymous";

/// The policies every Maxine has: they cannot be changed or deleted, and
/// the sign-in roles map onto them (viewer, operator; admin is
/// `global-management`).
pub const GLOBAL_MANAGEMENT: &str = "global-management";
pub const BUILTIN_POLICIES: &[&str] = &[GLOBAL_MANAGEMENT, "operator", "viewer"];

pub fn is_builtin_policy(name: &str) -> bool {
    BUILTIN_POLICIES.contains(&name)
}

/// The built-in policies' values.
pub fn builtin_policies() -> Vec<Policy> {
    let all = |access| BTreeMap::from([(String::new(), access)]);
    vec![
        Policy {
            name: GLOBAL_MANAGEMENT.into(),
            description: "everything: services, ACLs, operator actions and the audit log".into(),
            rules: Rules {
                service_prefix: all(Access::Write),
                key_prefix: all(Access::Write),
                acl: Some(Access::Write),
                operator: Some(Access::Write),
                audit: Some(Access::Write),
                ..Rules::default()
            },
            index: 0,
        },
        Policy {
            name: "operator".into(),
            description: "write every service, and operator actions".into(),
            rules: Rules {
                service_prefix: all(Access::Write),
                key_prefix: all(Access::Write),
                operator: Some(Access::Write),
                ..Rules::default()
            },
            index: 0,
        },
        Policy {
            name: "viewer".into(),
            description: "read every service".into(),
            rules: Rules {
                service_prefix: all(Access::Read),
                key_prefix: all(Access::Read),
                ..Rules::default()
            },
            index: 0,
        },
    ]
}

/// What a rule grants. Ordered: `Deny < Read < Write`, and write implies read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Deny,
    Read,
    Write,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Deny => "deny",
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// The rules of a policy. Services are matched by exact name (`service`)
/// or by prefix (`service_prefix`, `""` matches every service); the other
/// resources are single switches.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service: BTreeMap<String, Access>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service_prefix: BTreeMap<String, Access>,
    /// Key/value entries by key prefix (`""` matches every key).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub key_prefix: BTreeMap<String, Access>,
    /// Tokens and policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<Access>,
    /// Snapshots, configuration, federation, datacenter settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<Access>,
    /// Reading the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<Access>,
}

/// A named set of rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub description: String,
    pub rules: Rules,
    /// Index of the change that produced this value (set by the registry).
    pub index: u64,
}

/// A credential. The secret itself is never kept: only its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// Public id, for listings and the audit log.
    pub accessor: String,
    pub secret_hash: [u8; 32],
    pub description: String,
    pub policies: Vec<String>,
    /// A workload's identity: write on this service, read on all.
    pub service: Option<ServiceName>,
    /// Unix milliseconds after which the token no longer works.
    pub expires_at: Option<u64>,
    /// How many instances requests with this token may hold.
    pub max_instances: Option<u32>,
    /// Unix milliseconds.
    pub created_at: u64,
    pub index: u64,
}

impl Token {
    /// The token requests without a credential use, before an operator
    /// changes it: no policies, so the default policy decides.
    pub fn anonymous() -> Self {
        Self {
            accessor: ANONYMOUS.into(),
            // No secret hashes to all zeros: nothing presented matches it.
            secret_hash: [0; 32],
            description: "requests without a credential".into(),
            policies: Vec::new(),
            service: None,
            expires_at: None,
            max_instances: None,
            created_at: 0,
            index: 0,
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.accessor == ANONYMOUS
    }

    /// Whether the token has expired at `now_ms` (unix milliseconds).
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at.is_some_and(|t| now_ms >= t)
    }
}

/// A sign-in user whose password was set through the API (users from the
/// configuration are not stored; a stored user overrides one of the same
/// name). `epoch` grows with each password change: sign-in tokens carry the
/// epoch they were issued at, and older ones stop working.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// argon2 PHC string.
    pub password_hash: String,
    /// `viewer`, `operator` or `admin`.
    pub role: String,
    pub epoch: u64,
    pub index: u64,
}

/// The mark that `POST /v1/acl/bootstrap` was used: it works once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bootstrap {
    pub accessor: String,
    pub at: u64,
    pub index: u64,
}

/// The key of an access-control object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AclKey {
    Policy(String),
    Token(String),
    User(String),
    Bootstrap,
    /// A service's settings ([`ServiceConfig`]): not an access-control
    /// object, but stored, journaled, backed up and replicated like one.
    Service(super::registry::ServiceKey),
    /// A key/value entry ([`super::kv`]): no access-control object, but
    /// it travels the same keyed-object path (journal, restore, undo).
    Kv(super::kv::KvKey),
    /// An intention, by (source, destination).
    Intention(super::intention::Side, super::intention::Side),
    /// A DNS client network, by name.
    DnsClient(String),
    /// A TSIG key, by name.
    TsigKey(String),
    /// A blacklist entry, by what it refuses.
    Blacklist(super::blacklist::BlacklistTarget),
}

impl fmt::Display for AclKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AclKey::Policy(n) => write!(f, "policy:{n}"),
            AclKey::Token(a) => write!(f, "token:{a}"),
            AclKey::User(n) => write!(f, "user:{n}"),
            AclKey::Bootstrap => f.write_str("acl:bootstrap"),
            AclKey::Service(k) => write!(f, "service-config:{}/{}", k.dc, k.service),
            AclKey::Kv(k) => write!(f, "kv:{k}"),
            AclKey::Intention(s, d) => write!(f, "intention:{s}->{d}"),
            AclKey::DnsClient(n) => write!(f, "dns-client:{n}"),
            AclKey::TsigKey(n) => write!(f, "tsig-key:{n}"),
            AclKey::Blacklist(t) => match t {
                super::BlacklistTarget::Service(s) => write!(f, "blacklist:service:{s}"),
                super::BlacklistTarget::Instance(s, i) => write!(f, "blacklist:instance:{s}/{i}"),
                super::BlacklistTarget::Cidr(c) => write!(f, "blacklist:cidr:{c}"),
            },
        }
    }
}

/// One stored access-control object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AclObject {
    Policy(Arc<Policy>),
    Token(Arc<Token>),
    User(Arc<User>),
    Bootstrap(Arc<Bootstrap>),
    /// A service's settings, sharing the table (see [`AclKey::Service`]).
    Service(Arc<ServiceConfig>),
    /// A key/value entry (see [`AclKey::Kv`]).
    Kv(Arc<super::kv::KvEntry>),
    Intention(Arc<super::intention::Intention>),
    DnsClient(Arc<super::intention::DnsClient>),
    TsigKey(Arc<super::tsig::TsigKey>),
    Blacklist(Arc<super::blacklist::BlacklistEntry>),
}

impl AclObject {
    /// Whether the object changes what DNS askers may see (intentions,
    /// client networks, policies, tokens): the asker classes follow it.
    pub fn is_visibility(key: &AclKey) -> bool {
        matches!(
            key,
            AclKey::Intention(..)
                | AclKey::DnsClient(_)
                | AclKey::TsigKey(_)
                | AclKey::Policy(_)
                | AclKey::Token(_)
                | AclKey::Blacklist(_)
        )
    }

    pub fn key(&self) -> AclKey {
        match self {
            AclObject::Policy(p) => AclKey::Policy(p.name.clone()),
            AclObject::Token(t) => AclKey::Token(t.accessor.clone()),
            AclObject::User(u) => AclKey::User(u.name.clone()),
            AclObject::Bootstrap(_) => AclKey::Bootstrap,
            AclObject::Service(c) => AclKey::Service(c.key.clone()),
            AclObject::Kv(e) => AclKey::Kv(e.key.clone()),
            AclObject::Intention(i) => AclKey::Intention(i.source.clone(), i.destination.clone()),
            AclObject::DnsClient(c) => AclKey::DnsClient(c.name.clone()),
            AclObject::TsigKey(k) => AclKey::TsigKey(k.name.clone()),
            AclObject::Blacklist(b) => AclKey::Blacklist(b.target.clone()),
        }
    }

    /// Index of the change that produced this value: its record key.
    pub fn index(&self) -> u64 {
        match self {
            AclObject::Policy(p) => p.index,
            AclObject::Token(t) => t.index,
            AclObject::User(u) => u.index,
            AclObject::Bootstrap(b) => b.index,
            AclObject::Service(c) => c.index,
            AclObject::Kv(e) => e.index,
            AclObject::Intention(i) => i.index,
            AclObject::DnsClient(c) => c.index,
            AclObject::TsigKey(k) => k.index,
            AclObject::Blacklist(b) => b.index,
        }
    }

    /// The same value at `index`.
    pub(crate) fn at(&self, index: u64) -> AclObject {
        match self {
            AclObject::Policy(p) => AclObject::Policy(Arc::new(Policy {
                index,
                ..(**p).clone()
            })),
            AclObject::Token(t) => AclObject::Token(Arc::new(Token {
                index,
                ..(**t).clone()
            })),
            AclObject::User(u) => AclObject::User(Arc::new(User {
                index,
                ..(**u).clone()
            })),
            AclObject::Bootstrap(b) => AclObject::Bootstrap(Arc::new(Bootstrap {
                index,
                ..(**b).clone()
            })),
            AclObject::Service(c) => AclObject::Service(Arc::new(ServiceConfig {
                index,
                ..(**c).clone()
            })),
            AclObject::Kv(e) => AclObject::Kv(Arc::new(super::kv::KvEntry {
                index,
                ..(**e).clone()
            })),
            AclObject::Intention(i) => {
                AclObject::Intention(Arc::new(super::intention::Intention {
                    index,
                    ..(**i).clone()
                }))
            }
            AclObject::DnsClient(c) => {
                AclObject::DnsClient(Arc::new(super::intention::DnsClient {
                    index,
                    ..(**c).clone()
                }))
            }
            AclObject::TsigKey(k) => AclObject::TsigKey(Arc::new(super::tsig::TsigKey {
                index,
                ..(**k).clone()
            })),
            AclObject::Blacklist(b) => {
                AclObject::Blacklist(Arc::new(super::blacklist::BlacklistEntry {
                    index,
                    ..(**b).clone()
                }))
            }
        }
    }

    /// Checks every bound; the error says which.
    pub fn validate(&self) -> Result<(), AclError> {
        match self {
            AclObject::Policy(p) => {
                check_name("policy name", &p.name, MAX_POLICY_NAME_LEN)?;
                check_len("description", &p.description, MAX_DESCRIPTION_LEN)?;
                let r = &p.rules;
                if r.service.len() > MAX_RULES || r.service_prefix.len() > MAX_RULES {
                    return Err(AclError::Invalid(format!(
                        "a policy has at most {MAX_RULES} service and {MAX_RULES} service_prefix rules"
                    )));
                }
                for name in r.service.keys() {
                    ServiceName::new(name)
                        .map_err(|e| AclError::Invalid(format!("service rule: {e}")))?;
                }
                if r.key_prefix.len() > MAX_RULES {
                    return Err(AclError::Invalid(format!(
                        "a policy has at most {MAX_RULES} key_prefix rules"
                    )));
                }
                for prefix in r.key_prefix.keys() {
                    if prefix.len() > super::kv::MAX_KEY_LEN {
                        return Err(AclError::Invalid(format!(
                            "key_prefix {prefix:?} is longer than a key"
                        )));
                    }
                }
                for prefix in r.service_prefix.keys() {
                    if prefix.len() > super::labels::MAX_SERVICE_NAME_LEN
                        || !prefix
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    {
                        return Err(AclError::Invalid(format!(
                            "service_prefix {prefix:?} is not the start of a service name \
                             (lowercase letters, digits and '-')"
                        )));
                    }
                }
                Ok(())
            }
            AclObject::Token(t) => {
                check_name("accessor", &t.accessor, MAX_POLICY_NAME_LEN)?;
                check_len("description", &t.description, MAX_DESCRIPTION_LEN)?;
                if t.policies.len() > MAX_TOKEN_POLICIES {
                    return Err(AclError::Invalid(format!(
                        "a token has at most {MAX_TOKEN_POLICIES} policies"
                    )));
                }
                for p in &t.policies {
                    check_name("policy name", p, MAX_POLICY_NAME_LEN)?;
                }
                Ok(())
            }
            AclObject::User(u) => {
                check_name("user name", &u.name, MAX_USER_NAME_LEN)?;
                if !matches!(u.role.as_str(), "viewer" | "operator" | "admin") {
                    return Err(AclError::Invalid(format!(
                        "role {:?} is not one of viewer, operator, admin",
                        u.role
                    )));
                }
                Ok(())
            }
            AclObject::Bootstrap(_) => Ok(()),
            AclObject::Service(c) => c.validate().map_err(AclError::Invalid),
            AclObject::Kv(e) => {
                if e.value.len() > super::kv::MAX_VALUE_BYTES {
                    return Err(AclError::Invalid(format!(
                        "a value is at most {} bytes",
                        super::kv::MAX_VALUE_BYTES
                    )));
                }
                Ok(())
            }
            AclObject::Intention(i) => i.validate(),
            AclObject::TsigKey(k) => k.validate(),
            AclObject::Blacklist(b) => b.validate(),
            AclObject::DnsClient(c) => {
                c.validate()?;
                for p in &c.policies {
                    check_name("policy name", p, MAX_POLICY_NAME_LEN)?;
                }
                Ok(())
            }
        }
    }
}

/// A change to the access-control objects.
#[derive(Clone, Debug)]
pub enum AclChange {
    /// Creates or replaces an object. Refused for a token that names a
    /// policy that does not exist (built-in policies exist).
    Put(AclObject),
    /// Removes an object; refused when it does not exist. The anonymous
    /// token cannot be removed (only changed).
    Delete(AclKey),
    /// The one-time creation of the first management token: refused once
    /// the bootstrap mark exists. Applied as two objects, the token and the
    /// mark, under one index.
    Bootstrap { token: Arc<Token>, at: u64 },
}

/// Why an access-control change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} does not exist")]
    NotFound(String),
    /// A token names a policy that does not exist.
    #[error("policy {0:?} does not exist; create it first (PUT /v1/acl/policies/{0})")]
    UnknownPolicy(String),
    #[error("ACL bootstrap was already done (token {0}); use that token, or create tokens with it")]
    AlreadyBootstrapped(String),
    #[error("{0}")]
    Conflict(String),
}

fn check_len(what: &str, v: &str, max: usize) -> Result<(), AclError> {
    if v.len() > max {
        return Err(AclError::Invalid(format!(
            "{what} is longer than {max} bytes"
        )));
    }
    Ok(())
}

/// Names of policies, users and accessors: 1 to `max` of letters, digits,
/// `-`, `_` and `.` (they appear in URLs, logs and audit records).
fn check_name(what: &str, v: &str, max: usize) -> Result<(), AclError> {
    if v.is_empty() {
        return Err(AclError::Invalid(format!("{what} must not be empty")));
    }
    check_len(what, v, max)?;
    if !v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(AclError::Invalid(format!(
            "{what} {v:?} may only contain letters, digits, '-', '_' and '.'"
        )));
    }
    Ok(())
}

/// Who registered an instance: the accessor of the token, counted against
/// that token's `max_instances`. A thin pointer, so that an instance stays
/// within its allocation size class.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Owner(Arc<String>);

impl Owner {
    pub fn new(accessor: &str) -> Self {
        Self(Arc::new(accessor.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Owner {
    fn borrow(&self) -> &str {
        &self.0
    }
}
