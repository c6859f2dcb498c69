//! Blacklist entries: a service, one instance of a service, or a network
//! that Maxine refuses (docs/security.md "Blacklists").
//!
//! Entries are keyed objects on the access-control log
//! ([`super::AclObject::Blacklist`]), journaled, restored, undone and
//! replicated like intentions. A listed service or instance cannot
//! register; a listed network refuses registrations whose address falls
//! in it and DNS queries from it. An entry may carry an expiry (Unix
//! milliseconds): the expiry driver lifts it then, with a change like any
//! other. This module holds the values and their validation; the registry
//! refuses registrations, `askers` refuses queries.

use std::fmt;
use std::net::IpAddr;

use super::acl::AclError;
use super::intention::{Cidr, CidrTable};
use super::labels::{InstanceId, ServiceName};

/// Longest reason, in bytes.
pub const MAX_REASON_LEN: usize = 512;

/// What an entry refuses.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlacklistTarget {
    /// Every instance of a service, in every datacenter.
    Service(ServiceName),
    /// One instance of a service, in every datacenter.
    Instance(ServiceName, InstanceId),
    /// Every address in a network.
    Cidr(Cidr),
}

impl BlacklistTarget {
    /// `service`, `instance` or `cidr`.
    pub fn kind(&self) -> &'static str {
        match self {
            BlacklistTarget::Service(_) => "service",
            BlacklistTarget::Instance(..) => "instance",
            BlacklistTarget::Cidr(_) => "cidr",
        }
    }
}

impl fmt::Display for BlacklistTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlacklistTarget::Service(s) => write!(f, "service {s}"),
            BlacklistTarget::Instance(s, i) => write!(f, "instance {s}/{i}"),
            BlacklistTarget::Cidr(c) => write!(f, "cidr {c}"),
        }
    }
}

/// One blacklist entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlacklistEntry {
    pub target: BlacklistTarget,
    pub reason: String,
    /// When it was put (Unix milliseconds; set by the API).
    pub created_at: u64,
    /// When it lifts itself (Unix milliseconds), or never.
    pub expires_at: Option<u64>,
    /// Index of the change that produced this value (set by the registry).
    pub index: u64,
}

impl BlacklistEntry {
    pub fn validate(&self) -> Result<(), AclError> {
        if self.reason.len() > MAX_REASON_LEN {
            return Err(AclError::Invalid(format!(
                "reason is longer than {MAX_REASON_LEN} bytes"
            )));
        }
        if self.reason.chars().any(char::is_control) {
            return Err(AclError::Invalid(
                "reason must not contain control characters".into(),
            ));
        }
        Ok(())
    }
}

/// Why a registration is refused: the entry that refuses it.
pub fn refusing<'a>(
    entries: impl IntoIterator<Item = &'a BlacklistEntry>,
    service: &ServiceName,
    id: &InstanceId,
    addresses: &[IpAddr],
) -> Option<&'a BlacklistEntry> {
    entries.into_iter().find(|e| match &e.target {
        BlacklistTarget::Service(s) => s == service,
        BlacklistTarget::Instance(s, i) => s == service && i == id,
        BlacklistTarget::Cidr(c) => addresses.iter().any(|ip| c.contains(*ip)),
    })
}

/// The blacklisted networks as a prefix table (built when they change).
pub fn cidr_table<'a>(entries: impl IntoIterator<Item = &'a BlacklistEntry>) -> CidrTable<()> {
    CidrTable::new(entries.into_iter().filter_map(|e| match &e.target {
        BlacklistTarget::Cidr(c) => Some((*c, ())),
        _ => None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(target: BlacklistTarget) -> BlacklistEntry {
        BlacklistEntry {
            target,
            reason: "compromised".into(),
            created_at: 0,
            expires_at: None,
            index: 1,
        }
    }

    #[test]
    fn the_refusing_entry_is_found_by_service_instance_or_network() {
        let web = ServiceName::new("web").unwrap();
        let db = ServiceName::new("db").unwrap();
        let a = InstanceId::new("a").unwrap();
        let b = InstanceId::new("b").unwrap();
        let entries = [
            entry(BlacklistTarget::Service(db.clone())),
            entry(BlacklistTarget::Instance(web.clone(), a.clone())),
            entry(BlacklistTarget::Cidr(Cidr::parse("10.9.0.0/16").unwrap())),
        ];
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let at = [ip("10.1.0.1")];
        assert!(refusing(&entries, &db, &b, &at).is_some());
        assert!(refusing(&entries, &web, &a, &at).is_some());
        assert!(refusing(&entries, &web, &b, &at).is_none());
        let found = refusing(&entries, &web, &b, &[ip("10.9.3.4")]).unwrap();
        assert_eq!(found.target.to_string(), "cidr 10.9.0.0/16");
        assert!(entry(BlacklistTarget::Service(web)).validate().is_ok());
        let mut long = entries[0].clone();
        long.reason = "x".repeat(MAX_REASON_LEN + 1);
        assert!(long.validate().is_err());
    }
}
