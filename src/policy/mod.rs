//! Who may do what: pure decisions over the access-control objects.
//!
//! A request is authenticated elsewhere (`http` reads the credential; the
//! token, JWT or user it names becomes [`Grants`]); this module only
//! answers "may these grants do `access` on `resource`?", with
//! [`Decision::Deny`] naming what was missing. No I/O, no clock, no locks.
//!
//! The grammar (docs/security.md): a policy's rules give `deny`, `read` or
//! `write` on `service` (exact names), `service_prefix` (the longest
//! matching prefix; `""` matches every service), `acl`, `operator` and
//! `audit`. Write implies read. For a service, the most specific matching
//! rule of all the grants' policies decides: an exact rule beats every
//! prefix, a longer prefix beats a shorter one, and at equal specificity
//! `deny` beats the others (else the most permissive wins). A token's
//! service identity adds `write` on its service and `read` on all. When no
//! rule matches, the default policy decides.
//!
//! Must not import: http, dns, store, config (they hand over values).

pub mod intentions;
pub mod visibility;

use std::fmt;
use std::sync::Arc;

use crate::core::{Access, Policy, ServiceName};

pub use intentions::{IntentionTable, Intentions};
pub use visibility::{ClassKey, Defaults, Visibility};

/// What a request is allowed, once its credential is known.
#[derive(Clone, Debug, Default)]
pub struct Grants {
    pub policies: Vec<Arc<Policy>>,
    /// A workload's identity: write on this service, read on all.
    pub service: Option<ServiceName>,
}

/// What applies when no rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultPolicy {
    Allow,
    Deny,
}

impl DefaultPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultPolicy::Allow => "allow",
            DefaultPolicy::Deny => "deny",
        }
    }
}

/// What a request acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource<'a> {
    /// One service (of any datacenter) by name.
    Service(&'a str),
    /// Tokens and policies.
    Acl,
    /// Snapshots, configuration, federation, datacenter settings.
    Operator,
    /// The audit log.
    Audit,
    /// One key/value entry by key (`key_prefix` rules).
    Key(&'a str),
}

impl fmt::Display for Resource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Service(s) => write!(f, "service:{s}"),
            Resource::Acl => f.write_str("acl"),
            Resource::Operator => f.write_str("operator"),
            Resource::Audit => f.write_str("audit"),
            Resource::Key(k) => write!(f, "key:{k}"),
        }
    }
}

/// The answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// What was missing, e.g. `service:write on "payments"`.
    Deny(Missing),
}

/// The permission a request lacked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub resource: String,
    pub access: Access,
    /// Why: a `deny` rule, a weaker rule, or the default policy.
    pub because: Because,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Because {
    /// The most specific matching rule grants less.
    Rule(Access),
    /// No rule matches and the default policy is deny.
    DefaultDeny,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.resource.split_once(':') {
            Some((kind, name)) => format!("{kind}:{} on {name:?}", self.access.as_str()),
            None => format!("{}:{}", self.resource, self.access.as_str()),
        };
        match self.because {
            Because::Rule(Access::Deny) => write!(f, "{what} (a rule denies it)"),
            Because::Rule(_) => f.write_str(&what),
            Because::DefaultDeny => write!(f, "{what} (no rule grants it; the default is deny)"),
        }
    }
}

/// Specificity of a matching service rule: exact names beat every prefix.
fn specificity(exact: bool, len: usize) -> usize {
    if exact { usize::MAX } else { len }
}

/// What the grants give on `resource`: `None` when no rule matches.
pub fn granted(grants: &Grants, resource: Resource<'_>) -> Option<Access> {
    match resource {
        Resource::Service(name) => {
            // (specificity, access) of the best rules so far.
            let mut best: Option<(usize, Access, bool)> = None;
            let mut consider = |spec: usize, access: Access| {
                best = Some(match best {
                    None => (spec, access, access == Access::Deny),
                    Some((s, _, _)) if spec > s => (spec, access, access == Access::Deny),
                    Some((s, a, denied)) if spec == s => {
                        (s, a.max(access), denied || access == Access::Deny)
                    }
                    Some(kept) => kept,
                });
            };
            if let Some(own) = &grants.service {
                if own.as_str() == name {
                    consider(specificity(true, name.len()), Access::Write);
                }
                consider(specificity(false, 0), Access::Read);
            }
            for p in &grants.policies {
                if let Some(a) = p.rules.service.get(name) {
                    consider(specificity(true, name.len()), *a);
                }
                for (prefix, a) in &p.rules.service_prefix {
                    if name.starts_with(prefix.as_str()) {
                        consider(specificity(false, prefix.len()), *a);
                    }
                }
            }
            best.map(|(_, a, denied)| if denied { Access::Deny } else { a })
        }
        Resource::Key(key) => {
            // The longest matching prefix decides; a deny among equally
            // long ones wins.
            let mut best: Option<(usize, Access)> = None;
            for p in &grants.policies {
                for (prefix, a) in &p.rules.key_prefix {
                    if !key.starts_with(prefix.as_str()) {
                        continue;
                    }
                    best = Some(match best {
                        Some((len, _)) if prefix.len() > len => (prefix.len(), *a),
                        Some((len, b)) if prefix.len() == len => {
                            let merged = if b == Access::Deny || *a == Access::Deny {
                                Access::Deny
                            } else {
                                b.max(*a)
                            };
                            (len, merged)
                        }
                        Some(kept) => kept,
                        None => (prefix.len(), *a),
                    });
                }
            }
            best.map(|(_, a)| a)
        }
        Resource::Acl | Resource::Operator | Resource::Audit => {
            let mut out: Option<Access> = None;
            let mut denied = false;
            for p in &grants.policies {
                let rule = match resource {
                    Resource::Acl => p.rules.acl,
                    Resource::Operator => p.rules.operator,
                    _ => p.rules.audit,
                };
                if let Some(a) = rule {
                    denied |= a == Access::Deny;
                    out = Some(out.map_or(a, |o| o.max(a)));
                }
            }
            if denied { Some(Access::Deny) } else { out }
        }
    }
}

/// May `grants` do `want` on `resource`?
pub fn decide(
    grants: &Grants,
    default: DefaultPolicy,
    resource: Resource<'_>,
    want: Access,
) -> Decision {
    let missing = |because| {
        Decision::Deny(Missing {
            resource: resource.to_string(),
            access: want,
            because,
        })
    };
    match granted(grants, resource) {
        Some(Access::Deny) => missing(Because::Rule(Access::Deny)),
        Some(a) if a >= want => Decision::Allow,
        Some(a) => missing(Because::Rule(a)),
        None => match default {
            DefaultPolicy::Allow => Decision::Allow,
            DefaultPolicy::Deny => missing(Because::DefaultDeny),
        },
    }
}

/// Whether `grants` may read every service and every key, whatever its
/// name: no rule gives less than read, and the names no rule matches are
/// read by the default or a catch-all (`""`) rule. What such a caller sees
/// of the registry is the same as every other such caller's, which lets
/// the event streams share one encoding of the changes between them.
pub fn reads_everything(grants: &Grants, default: DefaultPolicy) -> bool {
    let at_least_read = |a: &Access| *a >= Access::Read;
    let rules = || grants.policies.iter().map(|p| &p.rules);
    let no_less = rules().all(|r| {
        r.service.values().all(at_least_read)
            && r.service_prefix.values().all(at_least_read)
            && r.key_prefix.values().all(at_least_read)
    });
    let default_reads = default == DefaultPolicy::Allow;
    let every_service = default_reads
        || grants.service.is_some()
        || rules().any(|r| r.service_prefix.contains_key(""));
    let every_key = default_reads || rules().any(|r| r.key_prefix.contains_key(""));
    no_less && every_service && every_key
}

#[cfg(test)]
mod tests;
