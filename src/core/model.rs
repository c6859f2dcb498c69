//! What the registry stores: instances of services in datacenters, and the
//! limits every registration is checked against.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use super::acl::Owner;
use super::check::{CheckKind, CheckSpec, Checks};
use super::labels::{CheckName, Datacenter, InstanceId, ServiceName};

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
    /// Addresses kept of what a host name resolves to: they are all in the
    /// A/AAAA answers of the instance's service and name, and as glue of
    /// its SRV record, so a name with hundreds must not crowd out the rest.
    pub const MAX_RESOLVED_ADDRESSES: usize = 8;
}

/// Where an instance listens: an IP address, or (Maxine-compatible API only) a
/// host name, which Maxine resolves itself (the resolver driver) and answers
/// under the instance's own name once it has addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Address {
    Ip(IpAddr),
    Host(HostAddress),
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
        Ok(Address::Host(HostAddress::new(&host)))
    }

    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Address::Ip(ip) => Some(*ip),
            Address::Host(_) => None,
        }
    }

    /// The host name, for an instance registered by one.
    pub fn host(&self) -> Option<&HostAddress> {
        match self {
            Address::Ip(_) => None,
            Address::Host(h) => Some(h),
        }
    }

    /// The addresses DNS answers with: the IP address, or what the host
    /// name last resolved to (none while it is unresolved).
    pub fn addresses(&self) -> &[IpAddr] {
        match self {
            Address::Ip(ip) => std::slice::from_ref(ip),
            Address::Host(h) => h.addresses(),
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Ip(ip) => write!(f, "{ip}"),
            Address::Host(h) => f.write_str(h.name()),
        }
    }
}

/// A host name as registered (lowercase, no trailing dot), with what Maxine
/// last resolved it to. One pointer, so that [`Address`] (and every
/// instance) is no larger than with a bare name: IP instances pay nothing.
/// The resolver driver builds one value per result and every instance of
/// that name shares it.
///
/// Equal when the names are: the resolution is not part of what was
/// registered (a re-registration with the same name is the same address).
/// Serializes as the name.
#[derive(Clone)]
pub struct HostAddress(Arc<HostInner>);

struct HostInner {
    name: Arc<str>,
    /// `None`: not resolved yet (just registered, or restored at start-up).
    resolution: Option<Resolution>,
}

impl HostAddress {
    /// A name not resolved yet. `name` must be a valid host name
    /// ([`Address::parse`] checks it).
    pub fn new(name: &str) -> Self {
        Self(Arc::new(HostInner {
            name: Arc::from(name),
            resolution: None,
        }))
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The same name with `resolution`.
    pub fn resolved(&self, resolution: Resolution) -> Self {
        Self(Arc::new(HostInner {
            name: self.0.name.clone(),
            resolution: Some(resolution),
        }))
    }

    /// What the name last resolved to; `None` before the first answer.
    pub fn resolution(&self) -> Option<&Resolution> {
        self.0.resolution.as_ref()
    }

    /// The resolved addresses; none while pending or unresolved.
    pub fn addresses(&self) -> &[IpAddr] {
        match self.resolution().map(|r| &r.outcome) {
            Some(Resolved::Addresses(a)) => a,
            _ => &[],
        }
    }

    /// One value (the resolver's result shared by every instance of it).
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl From<&str> for HostAddress {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl PartialEq for HostAddress {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for HostAddress {}

impl std::fmt::Debug for HostAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.resolution() {
            None => std::fmt::Debug::fmt(self.name(), f),
            Some(r) => write!(f, "{:?} ({:?})", self.name(), r.outcome),
        }
    }
}

impl Serialize for HostAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// What a host name resolved to, and since when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    pub outcome: Resolved,
    /// Milliseconds since the Unix epoch at which this outcome was first
    /// seen (a re-resolution with the same outcome keeps it).
    pub since_ms: u64,
}

/// The outcome of resolving a host name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// Its addresses, sorted, without duplicates, at most
    /// [`limits::MAX_RESOLVED_ADDRESSES`]; never empty.
    Addresses(Box<[IpAddr]>),
    /// It has no address (NXDOMAIN, no A or AAAA records) or could not be
    /// resolved (timeouts, server failures): why, for operators.
    Failed(Box<str>),
}

impl Resolved {
    /// `addresses` as a resolution: sorted, duplicates dropped, at most
    /// [`limits::MAX_RESOLVED_ADDRESSES`] kept (the lowest); no address is
    /// a failure.
    pub fn from_addresses(addresses: impl IntoIterator<Item = IpAddr>) -> Self {
        let mut all: Vec<IpAddr> = addresses.into_iter().collect();
        all.sort_unstable();
        all.dedup();
        all.truncate(limits::MAX_RESOLVED_ADDRESSES);
        if all.is_empty() {
            Resolved::Failed("the name has no A or AAAA records".into())
        } else {
            Resolved::Addresses(all.into())
        }
    }
}

/// Health of a check or an instance, ordered from best to worst: an
/// instance's status is the worst of its checks' ([`Instance::status`]),
/// and [`Instance::serves`] says which statuses DNS answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Passing,
    /// Alive but struggling (an HTTP check answered 429, a script exited
    /// 1): still answered unless `dns.only_passing`.
    Warning,
    /// Failing: for the TTL, it passed without a heartbeat (removed after
    /// the reap time); for a check, it failed its threshold.
    Critical,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Passing => "passing",
            Health::Warning => "warning",
            Health::Critical => "critical",
        }
    }
}

/// The fields a Maxine SDK sent, kept so the compatible API can answer with
/// them unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompatFields {
    pub service_name: Text,
    pub node_name: Text,
    pub host_name: Text,
    pub ssl: bool,
    pub path: Text,
    /// The `healthCheckPath` the SDK sent, as sent (empty: none): it is
    /// the HTTP check [`CompatFields::health_check`] on the instance's
    /// address.
    pub health_check_path: Text,
}

impl CompatFields {
    /// The check a `healthCheckPath` stands for: an HTTP GET of that path
    /// on the instance's address and port (https when the SDK said `ssl`),
    /// named [`COMPAT_CHECK`](super::check::COMPAT_CHECK), with the default
    /// interval and thresholds. `None` without a path.
    pub fn health_check(&self, address: &Address, port: u16) -> Option<CheckSpec> {
        if self.health_check_path.is_empty() {
            return None;
        }
        let scheme = if self.ssl { "https" } else { "http" };
        let host = match address {
            Address::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
            other => other.to_string(),
        };
        let path = &self.health_check_path;
        let slash = if path.starts_with('/') { "" } else { "/" };
        let name = CheckName::new(super::check::COMPAT_CHECK).expect("a valid label");
        Some(CheckSpec::new(
            name,
            CheckKind::Http {
                url: format!("{scheme}://{host}:{port}{slash}{path}").into(),
                method: "GET".into(),
                headers: Vec::new(),
            },
        ))
    }
}

/// A string that does not change once built: a `Box<str>` (16 bytes and no
/// spare capacity, where a `String` takes 24 and may carry some; empty, it
/// takes no heap) that reads and compares like a `String`. The registry holds
/// one for each string of each instance.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Text(Box<str>);

impl Text {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Text {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Self(s.into_boxed_str())
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Self(s.into())
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

/// A version string in one pointer (8 bytes, none when empty). The registry
/// shares one copy among the instances of a service that run the same
/// version, so an instance pays only the pointer. Reads and compares like a
/// `String`.
#[derive(Clone, Default)]
pub struct Version(Option<Arc<Box<str>>>);

impl Version {
    pub fn as_str(&self) -> &str {
        self.0.as_deref().map_or("", |s| s)
    }
}

impl From<String> for Version {
    fn from(s: String) -> Self {
        Self((!s.is_empty()).then(|| Arc::new(s.into_boxed_str())))
    }
}

impl From<&str> for Version {
    fn from(s: &str) -> Self {
        Self((!s.is_empty()).then(|| Arc::new(Box::from(s))))
    }
}

impl std::ops::Deref for Version {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for Version {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        // Shared copies compare by pointer, and two empty versions without
        // looking at bytes: the common cases in a service.
        let same = match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        same || self.as_str() == other.as_str()
    }
}

impl Eq for Version {}

/// Hashes as its `str` does, so a set of versions can be searched by `&str`.
impl std::hash::Hash for Version {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.as_str().hash(h)
    }
}

impl PartialEq<str> for Version {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Version {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Version {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A list behind one thin pointer: 8 bytes, for lists most instances leave
/// empty (no heap then; two small allocations otherwise).
type ThinSlice<T> = Option<Box<Box<[T]>>>;

fn thin<T>(items: impl IntoIterator<Item = T>) -> ThinSlice<T> {
    let items: Box<[T]> = items.into_iter().collect();
    (!items.is_empty()).then(|| Box::new(items))
}

fn slice<T>(thin: &ThinSlice<T>) -> &[T] {
    thin.as_deref().map_or(&[], |s| s)
}

/// An instance's tags, in the order given. Reads as a `[Text]`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tags(ThinSlice<Text>);

impl std::ops::Deref for Tags {
    type Target = [Text];
    fn deref(&self) -> &[Text] {
        slice(&self.0)
    }
}

impl FromIterator<Text> for Tags {
    fn from_iter<I: IntoIterator<Item = Text>>(items: I) -> Self {
        Self(thin(items))
    }
}

impl std::fmt::Debug for Tags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for Tags {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// An instance's metadata: pairs sorted by key (keys are unique), shown as a
/// JSON object in key order, as the `BTreeMap` of a spec is. A map would
/// allocate a whole B-tree node (hundreds of bytes) for a single entry.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Metadata(ThinSlice<(Text, Text)>);

impl Metadata {
    fn pairs(&self) -> &[(Text, Text)] {
        slice(&self.0)
    }

    pub fn len(&self) -> usize {
        self.pairs().len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs().is_empty()
    }

    /// The pairs in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.pairs().iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn get(&self, key: &str) -> Option<&Text> {
        let pairs = self.pairs();
        let at = pairs.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok()?;
        Some(&pairs[at].1)
    }
}

impl std::ops::Index<&str> for Metadata {
    type Output = Text;
    fn index(&self, key: &str) -> &Text {
        self.get(key).expect("no entry found for key")
    }
}

impl From<BTreeMap<String, String>> for Metadata {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self(thin(map.into_iter().map(|(k, v)| (k.into(), v.into()))))
    }
}

impl PartialEq<BTreeMap<String, String>> for Metadata {
    fn eq(&self, other: &BTreeMap<String, String>) -> bool {
        self.len() == other.len()
            && self
                .iter()
                .zip(other)
                .all(|((k, v), (ok, ov))| k == ok && v == ov)
    }
}

impl std::fmt::Debug for Metadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Metadata {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
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
    /// Boxed, as in [`Instance`]: most instances have none, and a change
    /// that carries a spec stays small.
    pub compat: Option<Box<CompatFields>>,
    /// Who registered it (set by the registry from the change's actor;
    /// restored from storage): see [`Owner`].
    pub owner: Option<Owner>,
    /// Health checks defined for it (a `healthCheckPath` is not among
    /// them: see [`InstanceSpec::all_checks`]).
    pub checks: Vec<CheckSpec>,
}

impl InstanceSpec {
    /// Every check the instance has: those defined, and the one its
    /// `healthCheckPath` stands for.
    pub fn all_checks(&self) -> Vec<CheckSpec> {
        let mut all = self.checks.clone();
        if let Some(c) = self
            .compat
            .as_ref()
            .and_then(|c| c.health_check(&self.address, self.port))
            && !all.iter().any(|d| d.name == c.name)
        {
            all.push(c);
        }
        all
    }

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
            owner: None,
            checks: Vec::new(),
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
        super::check::validate_all(&self.checks)
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
///
/// A registry holds one per instance, so its size matters: with the `Arc`'s
/// counts it must stay within a 160-byte allocator size class (a test checks
/// it). Service and datacenter names are thin shared pointers, strings are
/// boxed (no spare capacity), the version is shared within its service, and
/// what most instances leave empty (tags, metadata, the Maxine fields) costs
/// one pointer and no heap when empty.
///
/// The field order is fixed (`repr(C)`) so that what every change of the
/// service reads of each of its instances (id, version, index, health)
/// shares the first cache line with the reference count: a change of a
/// large service touches each instance once, not in three places.
#[derive(Debug)]
#[repr(C)]
pub struct Instance {
    pub id: InstanceId,
    pub version: Version,
    /// Index of the change that produced this value of the instance. A
    /// resolution of its host name keeps it: the resolved addresses are
    /// not part of the value as registered (and not stored: see
    /// [`Change::Resolve`](super::change::Change::Resolve)), so the
    /// value's record in the store and every condition on it stay valid.
    pub index: u64,
    /// Milliseconds since the registry's epoch after which the instance turns
    /// critical unless a heartbeat moves it.
    pub(crate) deadline_ms: AtomicU64,
    pub port: u16,
    pub weight: u16,
    /// The heartbeat TTL in milliseconds (at most a day: it fits, and a
    /// `Duration` would take 12 more bytes): see [`Instance::ttl`].
    ttl_ms: u32,
    /// The status of the implicit `ttl` check: critical once the TTL passed
    /// without a heartbeat (never warning). The instance's status is
    /// [`Instance::status`].
    pub health: Health,
    pub service: ServiceName,
    pub datacenter: Datacenter,
    pub address: Address,
    pub tags: Tags,
    pub metadata: Metadata,
    pub compat: Option<Box<CompatFields>>,
    /// Who registered it, for quotas (`None`: no token of its own).
    pub owner: Option<Owner>,
    /// Its defined checks with their statuses in this value.
    pub checks: Checks,
    /// Where the registry's timer map holds this value (ms since the epoch),
    /// so the entry can be removed when the value is replaced. Only read and
    /// written under the registry's write lock.
    pub(crate) timer_ms: AtomicU64,
}

impl Instance {
    /// The instance a registration (or a restored record) describes;
    /// `version` stands for the spec's (which is not read): the registry
    /// shares one copy per service.
    pub(crate) fn from_spec(
        key: &super::registry::ServiceKey,
        id: InstanceId,
        spec: InstanceSpec,
        version: Version,
        health: Health,
        index: u64,
        deadline_ms: u64,
    ) -> Self {
        let checks = Checks::build(spec.all_checks(), &Checks::default());
        Self {
            id,
            service: key.service.clone(),
            datacenter: key.dc.clone(),
            address: spec.address,
            port: spec.port,
            version,
            tags: spec.tags.into_iter().map(Text::from).collect(),
            metadata: spec.metadata.into(),
            weight: spec.weight,
            ttl_ms: spec.ttl.as_millis().min(u32::MAX as u128) as u32,
            health,
            index,
            compat: spec.compat,
            checks,
            owner: spec.owner,
            deadline_ms: AtomicU64::new(deadline_ms),
            timer_ms: AtomicU64::new(0),
        }
    }

    /// The heartbeat TTL.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(u64::from(self.ttl_ms))
    }

    pub fn deadline_ms(&self) -> u64 {
        self.deadline_ms.load(Ordering::Acquire)
    }

    /// The instance's status: the worst of its checks, the `ttl` check
    /// (its heartbeats) included.
    pub fn status(&self) -> Health {
        self.health.max(self.checks.worst())
    }

    /// Whether its status is passing.
    pub fn is_passing(&self) -> bool {
        self.status() == Health::Passing
    }

    /// Whether answers (DNS, discovery) may send clients to it, by its
    /// status: passing, or warning unless `only_passing`. The one place
    /// that decides it.
    ///
    /// Warning is served by default (`dns.only_passing = false`): a
    /// warning instance (an HTTP check answered 429) is overloaded but
    /// alive, and taking it out of the answers moves its load onto the
    /// others, which tends to push them over too.
    pub fn serves(&self, only_passing: bool) -> bool {
        match self.status() {
            Health::Passing => true,
            Health::Warning => !only_passing,
            Health::Critical => false,
        }
    }

    /// The addresses DNS answers with (see [`Address::addresses`]).
    pub fn addresses(&self) -> &[IpAddr] {
        self.address.addresses()
    }

    /// Whether DNS has an address to answer with for it: an IP instance,
    /// or a host name that resolved.
    pub fn has_addresses(&self) -> bool {
        !self.addresses().is_empty()
    }

    /// A copy with another health and index (the deadline is carried over).
    pub(crate) fn with_health(&self, health: Health, index: u64) -> Self {
        self.with(self.address.clone(), health, index)
    }

    /// A copy with other checks and index (health and deadline carried over).
    pub(crate) fn with_checks(&self, checks: Checks, index: u64) -> Self {
        let mut next = self.with(self.address.clone(), self.health, index);
        next.checks = checks;
        next
    }

    /// A copy whose host name has a new resolution: same index, health and
    /// deadline (see [`Instance::index`]).
    pub(crate) fn with_host(&self, host: HostAddress) -> Self {
        self.with(Address::Host(host), self.health, self.index)
    }

    fn with(&self, address: Address, health: Health, index: u64) -> Self {
        Self {
            id: self.id.clone(),
            service: self.service.clone(),
            datacenter: self.datacenter.clone(),
            address,
            port: self.port,
            version: self.version.clone(),
            tags: self.tags.clone(),
            metadata: self.metadata.clone(),
            weight: self.weight,
            ttl_ms: self.ttl_ms,
            health,
            index,
            compat: self.compat.clone(),
            owner: self.owner.clone(),
            checks: self.checks.clone(),
            deadline_ms: AtomicU64::new(self.deadline_ms()),
            timer_ms: AtomicU64::new(0),
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
    #[cfg(target_pointer_width = "64")]
    fn an_instance_and_its_arc_counts_fit_a_160_byte_size_class() {
        // mimalloc's size classes around it: 128, 160, 192. One more field
        // of 8 bytes would cost 32 per instance.
        let size = std::mem::size_of::<Instance>() + 16;
        assert!(size <= 160, "{size} bytes");
    }

    #[test]
    fn boxed_fields_serialize_as_the_spec_types_do() {
        let mut map = BTreeMap::new();
        map.insert("zone".to_string(), "b".to_string());
        map.insert("az".to_string(), "1".to_string());
        let tags = vec!["x".to_string(), "a".to_string()];
        let compact: Tags = tags.iter().map(|t| Text::from(t.as_str())).collect();
        let meta = Metadata::from(map.clone());
        assert_eq!(json(&compact), json(&tags));
        assert_eq!(json(&meta), json(&map));
        assert_eq!(json(&Metadata::default()), "{}");
        assert_eq!(json(&Tags::default()), "[]");
        assert_eq!(json(&Version::from("2.1.0")), "\"2.1.0\"");
        assert_eq!(json(&Version::default()), "\"\"");
        assert!(meta == map && meta["az"] == "1" && meta.get("nope").is_none());
        assert_eq!(format!("{meta:?}"), format!("{map:?}"));
        assert_eq!(format!("{compact:?}"), format!("{tags:?}"));
        let (empty, one) = (Version::from(""), Version::from("1"));
        assert!(empty.is_empty() && empty.0.is_none() && one == "1" && one == *"1");
        assert!(empty == Version::default() && empty != one && one != empty);
        assert!(Version::from("1") == one && Version::from("2") != one);
    }

    fn json<T: Serialize>(v: &T) -> String {
        serde_json::to_string(v).unwrap()
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
