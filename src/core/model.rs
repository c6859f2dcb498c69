//! What the registry stores: instances of services in datacenters, and the
//! limits every registration is checked against.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use super::names::{Datacenter, InstanceId, ServiceName};

/// Bounds on what one registration may carry. They keep a single instance from
/// bloating answers, memory or (later) the store.
pub mod limits {
    use std::time::Duration;
    pub const MAX_TAGS: usize = 32;
    pub const MAX_TAG_LEN: usize = 128;
    pub const MAX_METADATA: usize = 64;
    pub const MAX_METADATA_KEY: usize = 128;
    pub const MAX_METADATA_VALUE: usize = 512;
    pub const MAX_VERSION_LEN: usize = 64;
    pub const MIN_TTL: Duration = Duration::from_secs(1);
    pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
    pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
    pub const MAX_HOSTNAME_LEN: usize = 253;
}

/// Where an instance listens: an IP address, or (Maxine-compatible API only) a
/// host name, which DNS serves as an SRV target but not as A/AAAA data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Address {
    Ip(IpAddr),
    Host(Arc<str>),
}

impl Address {
    /// Parses an IP literal (brackets allowed for IPv6) or a valid host name.
    pub fn parse(raw: &str) -> Result<Self, ModelError> {
        let trimmed = raw.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = trimmed.parse::<IpAddr>() {
            return Ok(Address::Ip(ip));
        }
        let host = raw.trim_end_matches('.').to_ascii_lowercase();
        let valid = !host.is_empty()
            && host.len() <= limits::MAX_HOSTNAME_LEN
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !valid {
            return Err(ModelError::BadAddress(raw.to_string()));
        }
        Ok(Address::Host(Arc::from(host)))
    }

    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Address::Ip(ip) => Some(*ip),
            Address::Host(_) => None,
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Ip(ip) => write!(f, "{ip}"),
            Address::Host(h) => f.write_str(h),
        }
    }
}

/// Health as DNS sees it: only `Passing` instances are in answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Passing,
    /// The TTL passed without a heartbeat; removed after the reap time.
    Critical,
}

/// The fields a Maxine SDK sent, kept so the compatible API can answer with
/// them unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CompatFields {
    pub service_name: String,
    pub node_name: String,
    pub host_name: String,
    pub ssl: bool,
    pub path: String,
}

/// A registration as the API hands it to the registry, before validation.
#[derive(Clone, Debug)]
pub struct InstanceSpec {
    pub address: Address,
    pub port: u16,
    pub version: String,
    pub tags: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub weight: u16,
    pub ttl: Duration,
    pub compat: Option<CompatFields>,
}

impl InstanceSpec {
    /// A minimal spec: defaults for everything but the address and port.
    pub fn new(address: Address, port: u16) -> Self {
        Self {
            address,
            port,
            version: String::new(),
            tags: Vec::new(),
            metadata: BTreeMap::new(),
            weight: 1,
            ttl: limits::DEFAULT_TTL,
            compat: None,
        }
    }

    /// Checks every bound; the error names the offending field.
    pub fn validate(&self) -> Result<(), ModelError> {
        use limits::*;
        if self.port == 0 {
            return Err(ModelError::Invalid(
                "port must be between 1 and 65535".into(),
            ));
        }
        if self.weight == 0 {
            return Err(ModelError::Invalid(
                "weight must be between 1 and 65535".into(),
            ));
        }
        if self.ttl < MIN_TTL || self.ttl > MAX_TTL {
            return Err(ModelError::Invalid(format!(
                "ttl must be between {}s and {}s",
                MIN_TTL.as_secs(),
                MAX_TTL.as_secs()
            )));
        }
        if self.version.len() > MAX_VERSION_LEN
            || !self.version.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ModelError::Invalid(format!(
                "version must be at most {MAX_VERSION_LEN} printable ASCII characters without spaces"
            )));
        }
        if self.tags.len() > MAX_TAGS {
            return Err(ModelError::Invalid(format!("at most {MAX_TAGS} tags")));
        }
        if let Some(t) = self
            .tags
            .iter()
            .find(|t| t.is_empty() || t.len() > MAX_TAG_LEN || t.chars().any(char::is_control))
        {
            return Err(ModelError::Invalid(format!(
                "tag {t:?} must be 1 to {MAX_TAG_LEN} bytes without control characters"
            )));
        }
        if self.metadata.len() > MAX_METADATA {
            return Err(ModelError::Invalid(format!(
                "at most {MAX_METADATA} metadata entries"
            )));
        }
        for (k, v) in &self.metadata {
            if k.is_empty() || k.len() > MAX_METADATA_KEY || k.chars().any(char::is_control) {
                return Err(ModelError::Invalid(format!(
                    "metadata key {k:?} must be 1 to {MAX_METADATA_KEY} bytes without control characters"
                )));
            }
            if v.len() > MAX_METADATA_VALUE {
                return Err(ModelError::Invalid(format!(
                    "metadata value of {k:?} is longer than {MAX_METADATA_VALUE} bytes"
                )));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("address {0:?} is neither an IP address nor a valid host name")]
    BadAddress(String),
    #[error("{0}")]
    Invalid(String),
}

/// One registered instance. Immutable but for its heartbeat deadline, which
/// heartbeats move without taking the registry's write lock.
#[derive(Debug, Serialize)]
pub struct Instance {
    pub id: InstanceId,
    pub service: ServiceName,
    pub datacenter: Datacenter,
    pub address: Address,
    pub port: u16,
    pub version: String,
    pub tags: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub weight: u16,
    #[serde(serialize_with = "ser_secs")]
    pub ttl: Duration,
    pub health: Health,
    /// Index of the change that produced this value of the instance.
    pub index: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compat: Option<CompatFields>,
    /// Milliseconds since the registry's epoch after which the instance turns
    /// critical unless a heartbeat moves it.
    #[serde(skip)]
    pub(crate) deadline_ms: AtomicU64,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Instance {
    /// The instance a registration (or a restored record) describes.
    pub(crate) fn from_spec(
        key: &super::registry::ServiceKey,
        id: InstanceId,
        spec: InstanceSpec,
        health: Health,
        index: u64,
        deadline_ms: u64,
    ) -> Self {
        Self {
            id,
            service: key.service.clone(),
            datacenter: key.dc.clone(),
            address: spec.address,
            port: spec.port,
            version: spec.version,
            tags: spec.tags,
            metadata: spec.metadata,
            weight: spec.weight,
            ttl: spec.ttl,
            health,
            index,
            compat: spec.compat,
            deadline_ms: AtomicU64::new(deadline_ms),
        }
    }

    pub fn deadline_ms(&self) -> u64 {
        self.deadline_ms.load(Ordering::Acquire)
    }

    pub fn is_passing(&self) -> bool {
        self.health == Health::Passing
    }

    /// A copy with another health and index (the deadline is carried over).
    pub(crate) fn with_health(&self, health: Health, index: u64) -> Self {
        Self {
            id: self.id.clone(),
            service: self.service.clone(),
            datacenter: self.datacenter.clone(),
            address: self.address.clone(),
            port: self.port,
            version: self.version.clone(),
            tags: self.tags.clone(),
            metadata: self.metadata.clone(),
            weight: self.weight,
            ttl: self.ttl,
            health,
            index,
            compat: self.compat.clone(),
            deadline_ms: AtomicU64::new(self.deadline_ms()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_as_ip_or_host() {
        assert_eq!(
            Address::parse("10.0.0.1").unwrap(),
            Address::Ip("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            Address::parse("[::1]").unwrap(),
            Address::Ip("::1".parse().unwrap())
        );
        assert_eq!(
            Address::parse("Api.Example.com.").unwrap(),
            Address::Host("api.example.com".into())
        );
        for bad in ["", "a..b", "-a.com", "a b", "http://x"] {
            assert!(Address::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn specs_out_of_bounds_are_rejected_with_the_field_named() {
        let ok = InstanceSpec::new(Address::parse("10.0.0.1").unwrap(), 80);
        assert!(ok.validate().is_ok());
        let mut s = ok.clone();
        s.port = 0;
        assert!(s.validate().unwrap_err().to_string().contains("port"));
        let mut s = ok.clone();
        s.ttl = Duration::from_millis(10);
        assert!(s.validate().unwrap_err().to_string().contains("ttl"));
        let mut s = ok.clone();
        s.tags = vec!["x".into(); 33];
        assert!(s.validate().unwrap_err().to_string().contains("tags"));
        let mut s = ok;
        s.metadata.insert("k".into(), "v".repeat(513));
        assert!(s.validate().unwrap_err().to_string().contains("metadata"));
    }
}
