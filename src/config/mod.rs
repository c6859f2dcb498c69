//! Configuration: serde wire types, merged from defaults < TOML file <
//! environment < flags, then validated once into [`Config`], whose fields
//! carry their invariants. Sources are passed in (`Sources`), so tests never
//! touch the process environment.
//!
//! Every setting is declared once, in `wire.rs`: its key, type, default,
//! variable, flag and documentation. The wire types and [`SETTINGS`] are
//! generated from that declaration; `Config::validate` checks the values.
//!
//! Must not import: dns, http, store, events, app or any other front end or
//! driver (only `app` reads the configuration, and hands each module its own
//! settings).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::core::{Datacenter, RegistryConfig, labels};

#[macro_use]
mod settings;
mod wire;

pub use settings::{Kind, SETTINGS, Setting};
pub use wire::{
    ConfigFile, DnsFile, FailoverFile, FederationFile, HttpFile, LogFile, RegistryFile, RrlFile,
};

/// Why the configuration was refused. Each message says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error(
        "unknown environment variable {0}: see `maxine serve --help` for the supported MAXINE_* variables"
    )]
    UnknownEnv(String),
    #[error("invalid value for {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// A duration given as a number of seconds or a string such as `"30s"` or `"1m 30s"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationValue(pub Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(Self(Duration::from_secs(s))),
            Raw::Text(t) => parse_duration(&t)
                .map(Self)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Parses `"30"`, `"30s"`, `"500ms"`, `"1m 30s"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("{text:?} is not a duration such as \"30s\": {e}"))
}

/// Variables with the MAXINE_ prefix that belong to the client subcommands, not to `serve`.
/// The longest `domain` (the zone, without its trailing dot). Its bound
/// comes from the longest instance name, `<id>.<service>.<dc>.<domain>.`,
/// which must fit in DNS's 255 octets: see [`labels::max_zone_len`], 62
/// since service names are at most 62 characters. 61 was the limit when
/// service names could have 63, and stays so that a configuration valid on
/// one version is valid on the other; the assertion keeps it within bounds.
pub const MAX_DOMAIN_LEN: usize = 61;
const _: () = assert!(MAX_DOMAIN_LEN <= labels::max_zone_len());

/// The most records `dns.max_records` may ask for in one answer: as many
/// SRV records with the longest names there can be (target 254 octets: a
/// 63-character id, 62-character service and 63-character datacenter in a
/// zone of [`MAX_DOMAIN_LEN`]) still fit in one TCP message after the
/// header, the longest question and an OPT record. An answer that fits in no
/// message would go out truncated over TCP too, where a client cannot retry.
pub const MAX_DNS_RECORDS: usize = 200;
const _: () = {
    let srv_record = 2 + 10 + 6 + 254; // owner pointer, fixed fields, SRV fields, target
    let question = 255 + 4;
    let opt = 11 + 24; // with an echoed client subnet
    assert!(12 + question + opt + MAX_DNS_RECORDS * srv_record <= 65_535);
};

pub const CLIENT_ENV: &[&str] = &[
    "MAXINE_API",
    "MAXINE_CA_CERT",
    "MAXINE_DNS",
    "MAXINE_TOKEN",
    "MAXINE_TOKEN_FILE",
];

/// Where settings come from, lowest precedence first.
#[derive(Default, Debug)]
pub struct Sources {
    /// Contents of the TOML file, if one was given, with its path.
    pub file: Option<(PathBuf, String)>,
    /// The process environment; only the variables [`Sources::reads_env`]
    /// accepts matter, and an unknown `MAXINE_*` one is an error.
    pub env: BTreeMap<String, String>,
    /// Flags as (TOML key of a [`SETTINGS`] row, value as typed).
    pub flags: Vec<(&'static str, String)>,
}

impl Sources {
    /// Whether the variable `name` is one `Config::load` looks at: every
    /// `MAXINE_*` (so a misspelt one is refused) and the aliases of the table.
    pub fn reads_env(name: &str) -> bool {
        name.starts_with("MAXINE_") || SETTINGS.iter().any(|s| s.alias == Some(name))
    }
}

/// Whether a `redis://` or `rediss://` URL carries a password
/// (`redis://[user]:pw@host`).
fn url_has_password(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
    else {
        return false;
    };
    match rest.rfind('@') {
        Some(at) => rest[..at].contains(':'),
        None => false,
    }
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub datacenter: Datacenter,
    /// Lowercase, without the trailing dot, e.g. `maxine`.
    pub domain: String,
    pub data_dir: PathBuf,
    pub store: StoreConfig,
    /// The file holding the Redis password, read when the store is opened
    /// (redis stores only). Its contents are never logged.
    pub store_password_file: Option<PathBuf>,
    /// The `--store` flag holds a URL with a password, which `ps` shows to
    /// every user of the machine: the server warns at start.
    pub store_password_on_command_line: bool,
    /// CA certificates a `rediss://` store must be signed by (else the
    /// system's roots).
    pub store_ca_cert: Option<PathBuf>,
    pub dns: DnsConfig,
    pub http: HttpConfig,
    pub registry: RegistryConfig,
    /// Self-preservation's threshold in percent (`None`: off).
    pub self_preservation: Option<u8>,
    /// Outlier ejection from reported outcomes.
    pub outlier: crate::core::outlier::OutlierConfig,
    pub log: LogConfig,
    pub snapshot: SnapshotConfig,
    pub acl: AclConfig,
    pub audit: AuditConfig,
    pub resolve: ResolveConfig,
    pub health: HealthConfig,
    pub metrics: MetricsConfig,
    /// `intentions.default`: deny when no intention matches (else allow).
    pub intentions_default_deny: bool,
    pub federation: FederationConfig,
    /// Publishing to an MQTT broker (`None`: off).
    pub mqtt: Option<MqttConfig>,
    pub telemetry: TelemetryConfig,
}

/// The MQTT broker registry changes are published to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    /// Without a trailing `/`.
    pub topic_prefix: String,
    pub username: Option<String>,
    /// Read when the publisher starts; never logged.
    pub password_file: Option<PathBuf>,
    /// A service's healthy set is published at most this often.
    pub healthy_interval: Duration,
    /// The shortest time between two writes to the broker.
    pub write_interval: Duration,
}

/// Traces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// The OTLP/HTTP traces URL (with `/v1/traces`); `None`: no export.
    pub otlp_endpoint: Option<String>,
    pub otlp_export_interval: Duration,
}

/// Active health checks.
#[derive(Clone, Debug)]
pub struct HealthConfig {
    /// Script checks may be defined (`--enable-script-checks`).
    pub enable_script_checks: bool,
    /// 1 to 100000.
    pub max_in_flight: usize,
}

/// Prometheus metrics.
#[derive(Clone, Debug)]
pub struct MetricsConfig {
    /// The DNS front end counts its responses.
    pub dns: bool,
}

/// The peers of `federation.peers`, as written: `name=url` text (from a
/// variable, a flag or a TOML list of strings) or `[[federation.peers]]`
/// tables.
#[derive(Clone, Debug, Default)]
pub struct PeerList(pub Vec<PeerFile>);

/// One `[[federation.peers]]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerFile {
    /// The peer's datacenter name.
    pub name: String,
    /// The peer's API, `https://host:port` (plain `http://` only on loopback).
    pub url: String,
    /// PEM CA certificate(s) the peer's certificate must be signed by.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// File holding the ACL token sent to this peer.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

impl<'de> Deserialize<'de> for PeerList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Item {
            Short(String),
            Full(PeerFile),
        }
        let items = Vec::<Item>::deserialize(d)?;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            out.push(match item {
                Item::Full(p) => p,
                Item::Short(text) => {
                    let (name, url) = text.split_once('=').ok_or_else(|| {
                        serde::de::Error::custom(format!(
                            "federation peer {text:?} is not name=url"
                        ))
                    })?;
                    PeerFile {
                        name: name.trim().to_string(),
                        url: url.trim().to_string(),
                        ca_file: None,
                        token_file: None,
                    }
                }
            });
        }
        Ok(PeerList(out))
    }
}

/// Federation and failover, validated.
#[derive(Clone, Debug, Default)]
pub struct FederationConfig {
    pub peers: Vec<PeerConfig>,
    pub relay: bool,
    pub stale_after: Duration,
    pub keepalive: Duration,
    pub persist_interval: Duration,
    /// Fail over to these, in order.
    pub failover_datacenters: Vec<Datacenter>,
    /// Or to the N nearest peers (0: off).
    pub failover_nearest: usize,
    pub failover_ttl: Duration,
    pub srv_tiers: bool,
}

/// One peer datacenter.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    pub name: Datacenter,
    /// Without a trailing slash.
    pub url: String,
    pub ca_file: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
}

/// Checks the `[federation]` and `[failover]` sections.
fn validate_federation(
    f: wire::FederationFile,
    o: wire::FailoverFile,
    local: &Datacenter,
    dns_ttl: Duration,
) -> Result<FederationConfig, ConfigError> {
    let invalid = |key: &'static str, message: String| ConfigError::Invalid { key, message };
    let mut peers: Vec<PeerConfig> = Vec::new();
    for p in f.peers.0 {
        let name = Datacenter::new(&p.name)
            .map_err(|e| invalid("federation.peers", format!("peer {:?}: {e}", p.name)))?;
        if &name == local {
            return Err(invalid(
                "federation.peers",
                format!("peer {:?} is this datacenter", p.name),
            ));
        }
        if peers.iter().any(|q| q.name == name) {
            return Err(invalid(
                "federation.peers",
                format!("peer {:?} is named twice", p.name),
            ));
        }
        let url = p.url.trim_end_matches('/').to_string();
        let host = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| {
                invalid(
                    "federation.peers",
                    format!("peer {:?}: url {url:?} is not https://host:port", p.name),
                )
            })?;
        if host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
            return Err(invalid(
                "federation.peers",
                format!(
                    "peer {:?}: url {url:?} must be scheme://host[:port] only",
                    p.name
                ),
            ));
        }
        if url.starts_with("http://") && !is_loopback_host(host) {
            return Err(invalid(
                "federation.peers",
                format!(
                    "peer {:?}: plain http:// is only allowed to a loopback address; use https://",
                    p.name
                ),
            ));
        }
        peers.push(PeerConfig {
            name,
            url,
            ca_file: p.ca_file.or_else(|| f.ca_file.clone()),
            token_file: p.token_file.or_else(|| f.token_file.clone()),
        });
    }
    let between = |key: &'static str, d: DurationValue, min: Duration, max: Duration| {
        if d.0 < min || d.0 > max {
            Err(invalid(key, format!("must be between {min:?} and {max:?}")))
        } else {
            Ok(d.0)
        }
    };
    let mut failover_datacenters = Vec::new();
    for d in o.datacenters {
        let dc = Datacenter::new(&d).map_err(|e| invalid("failover.datacenters", e.to_string()))?;
        if &dc == local {
            return Err(invalid(
                "failover.datacenters",
                format!("{d:?} is this datacenter"),
            ));
        }
        if !failover_datacenters.contains(&dc) {
            failover_datacenters.push(dc);
        }
    }
    Ok(FederationConfig {
        peers,
        relay: f.relay,
        stale_after: between(
            "federation.stale_after",
            f.stale_after,
            Duration::from_secs(1),
            Duration::from_secs(3600),
        )?,
        keepalive: between(
            "federation.keepalive",
            f.keepalive,
            Duration::from_millis(100),
            Duration::from_secs(60),
        )?,
        persist_interval: between(
            "federation.persist_interval",
            f.persist_interval,
            Duration::from_secs(1),
            Duration::from_secs(3600),
        )?,
        failover_datacenters,
        failover_nearest: o.nearest,
        // Never longer than the answers it replaces.
        failover_ttl: between(
            "failover.ttl",
            o.ttl,
            Duration::ZERO,
            Duration::from_secs(86_400),
        )?
        .min(dns_ttl),
        srv_tiers: o.srv_tiers,
    })
}

/// `host[:port]` names a loopback address (or localhost).
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Access control.
#[derive(Clone, Debug)]
pub struct AclConfig {
    /// Deny when no rule matches (else allow).
    pub default_deny: bool,
    /// Whether the operator chose the default policy (else it follows the
    /// API's address: allow on loopback only).
    pub default_explicit: bool,
    /// Where the secret of a management token to create at start-up is.
    pub bootstrap_token_file: Option<PathBuf>,
    /// Such a secret given directly.
    pub bootstrap_token: Option<String>,
    pub users_file: Option<PathBuf>,
    /// An admin user as (name, password), from the Node.js Maxine's variables.
    pub admin: Option<(String, String)>,
    pub jwt: Option<JwtConfig>,
}

/// JWTs from an identity provider.
#[derive(Clone, Debug)]
pub struct JwtConfig {
    pub issuer: String,
    /// At least one.
    pub audiences: Vec<String>,
    pub algorithms: Vec<String>,
    pub public_key_files: Vec<PathBuf>,
    pub jwks_file: Option<PathBuf>,
    pub hs256_secret_file: Option<PathBuf>,
    /// At most 60 s.
    pub leeway: Duration,
    pub service_claim: Option<String>,
    /// (claim, value, policies).
    pub policy_bindings: Vec<(String, String, Vec<String>)>,
}

/// Resolving the host names of instances.
#[derive(Clone, Debug)]
pub struct ResolveConfig {
    pub resolv_conf: PathBuf,
    /// `None`: no hosts file.
    pub hosts_file: Option<PathBuf>,
    /// Asked instead of resolv.conf's name servers when not empty.
    pub nameservers: Vec<SocketAddr>,
    /// 1 s to `max_ttl`.
    pub min_ttl: Duration,
    /// At most a day.
    pub max_ttl: Duration,
    /// 1 to 256.
    pub concurrency: usize,
}

/// The audit log.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    pub max_file_bytes: u64,
}

/// Automatic snapshots of the file store.
#[derive(Clone, Debug)]
pub struct SnapshotConfig {
    /// `None`: only at a clean shutdown.
    pub interval: Option<Duration>,
    /// At least 1.
    pub keep: usize,
}

#[derive(Clone, Debug)]
pub struct DnsConfig {
    pub addr: SocketAddr,
    pub ttl: u32,
    pub negative_ttl: Option<u32>,
    /// Where `<domain>.zone` is, when given (it must then exist); `None`:
    /// the default location, or the built-in zone.
    pub zone_dir: Option<PathBuf>,
    /// 1 to [`MAX_DNS_RECORDS`].
    pub max_records: usize,
    pub tcp_idle_timeout: Duration,
    pub tcp_max_connections: usize,
    pub tcp_max_connections_per_ip: usize,
    pub tcp_max_connections_per_prefix: usize,
    /// At most `tcp_idle_timeout`.
    pub tcp_busy_idle_timeout: Duration,
    /// UDP worker threads, at least 1.
    pub udp_workers: usize,
    pub max_queue_delay: Duration,
    pub rrl: RrlConfig,
    /// Answers leave out warning instances.
    pub only_passing: bool,
    /// The default strategy of services without their own.
    pub strategy: crate::core::Strategy,
    /// The default panic threshold (percent, 0 to 100).
    pub panic_threshold: u8,
    /// Client networks and their zones, for `nearest`.
    pub client_zones: std::sync::Arc<crate::core::ClientZones>,
    /// Recursors whose EDNS Client Subnet stands for the asker.
    pub trusted_recursors: Vec<crate::core::Cidr>,
}

/// Response rate limiting; `responses_per_second == 0` turns it off.
#[derive(Clone, Debug)]
pub struct RrlConfig {
    pub responses_per_second: u32,
    /// Every n-th limited response is sent with TC=1 instead of dropped (0: drop all).
    pub slip: u32,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    pub exempt_loopback: bool,
}

#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    /// Certificate and key paths when the API is served over HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub max_body_bytes: usize,
    pub header_read_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub h2_ping_interval: Duration,
    /// At least 1.
    pub max_connections: usize,
    /// At least 1.
    pub max_connections_per_ip: usize,
    pub max_header_bytes: usize,
    /// At most `max_header_bytes`.
    pub max_uri_bytes: usize,
    pub max_headers: usize,
    /// At least 1.
    pub max_snapshot_streams: usize,
    /// Hosts the API answers to (empty: derived from `addr`).
    pub allowed_hosts: Vec<String>,
    /// How long `/v1/ready` answers 503 before the listeners close at a
    /// shutdown; at most 10 minutes.
    pub drain_period: Duration,
    /// The shortest time between two writes to one event stream; at most 1 s.
    pub event_write_interval: Duration,
}

/// Where the registry is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreConfig {
    /// `registry.redb` in the data directory.
    File,
    /// A Redis server, by URL (which may hold a password: never log it whole).
    Redis(String),
    /// Nothing is persisted (tests, throwaway setups).
    Memory,
    /// An etcd cluster shared by several Maxine nodes.
    Etcd(EtcdStore),
}

/// Where an etcd store is (`etcd[s]://host:port[,host:port...]/prefix`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdStore {
    /// `host:port` of each member (at least one).
    pub endpoints: Vec<String>,
    /// Key prefix, starting with `/`.
    pub prefix: String,
    /// `etcds://`.
    pub tls: bool,
    pub user: Option<String>,
    pub client_cert: Option<(PathBuf, PathBuf)>,
    pub timeout: Duration,
}

impl EtcdStore {
    /// Parses an `etcd://` or `etcds://` URL.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = match (url.strip_prefix("etcd://"), url.strip_prefix("etcds://")) {
            (Some(r), _) => (false, r),
            (_, Some(r)) => (true, r),
            _ => return Err(format!("{url:?} is not an etcd:// or etcds:// URL")),
        };
        if rest.contains('@') {
            return Err(
                "an etcd URL holds no credentials: use store_user and store_password_file".into(),
            );
        }
        let (hosts, prefix) = match rest.split_once('/') {
            Some((h, p)) => (h, format!("/{}", p.trim_matches('/'))),
            None => (rest, "/maxine".to_string()),
        };
        if prefix == "/" {
            return Err("the etcd key prefix must not be empty (etcd://host:2379/maxine)".into());
        }
        if prefix
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err("the etcd key prefix must not hold spaces or control characters".into());
        }
        let mut endpoints = Vec::new();
        for h in hosts.split(',') {
            let ok = h.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !ok {
                return Err(format!("{h:?} is not host:port (in an etcd store URL)"));
            }
            endpoints.push(h.to_string());
        }
        Ok(Self {
            endpoints,
            prefix,
            tls,
            user: None,
            client_cert: None,
            timeout: Duration::from_secs(5),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

impl Config {
    /// Merges the sources and validates the result.
    pub fn load(sources: Sources) -> Result<Self, ConfigError> {
        let mut table = match &sources.file {
            Some((path, text)) => toml::from_str::<toml::Table>(text)
                .map_err(|e| ConfigError::Parse(format!("{}: {e}", path.display())))?,
            None => toml::Table::new(),
        };
        if let Some(unknown) = sources.env.keys().find(|k| {
            k.starts_with("MAXINE_")
                && !SETTINGS.iter().any(|s| s.env == k.as_str())
                && !CLIENT_ENV.contains(&k.as_str())
        }) {
            return Err(ConfigError::UnknownEnv(unknown.clone()));
        }
        for s in SETTINGS {
            // The alias first, so that the MAXINE_* variable wins over it.
            for name in s.alias.iter().chain([&s.env]) {
                if let Some(v) = sources.env.get(*name) {
                    set_key(&mut table, s.key, s.value(v)?);
                }
            }
        }
        for (key, v) in &sources.flags {
            let s = Setting::find(key).ok_or(ConfigError::Invalid {
                key,
                message: "no such setting".into(),
            })?;
            set_key(&mut table, s.key, s.value(v)?);
        }
        let file: ConfigFile = table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.message().to_string()))?;
        let password_flag = sources
            .flags
            .iter()
            .any(|(key, v)| *key == "store" && url_has_password(v));
        let mut config = Self::validate(file)?;
        config.store_password_on_command_line = password_flag;
        Ok(config)
    }

    /// Built-in defaults, as `maxine serve` with no settings uses them.
    pub fn defaults() -> Self {
        Self::validate(ConfigFile::default()).expect("defaults are valid")
    }

    pub fn validate(f: ConfigFile) -> Result<Self, ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid { key, message };
        let datacenter =
            Datacenter::new(&f.datacenter).map_err(|e| invalid("datacenter", e.to_string()))?;
        let domain = f.domain.trim_end_matches('.').to_ascii_lowercase();
        // At most MAX_DOMAIN_LEN characters, so that the longest instance
        // name, <id>.<service>.<dc>.<domain>., fits in DNS's 255 octets.
        if domain.is_empty()
            || domain.len() > MAX_DOMAIN_LEN
            || !domain.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
        {
            return Err(invalid(
                "domain",
                format!(
                    "{:?} is not a domain name of at most {MAX_DOMAIN_LEN} characters, such as \"maxine\" or \"svc.example\"",
                    f.domain
                ),
            ));
        }
        let addr = |key: &'static str, raw: &str| {
            raw.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    key,
                    format!("{raw:?} is not an IP:port address such as 127.0.0.1:8600"),
                )
            })
        };
        let secs = |key: &'static str, d: Duration, max: u64| {
            if d.as_secs() > max {
                Err(invalid(key, format!("at most {max} seconds")))
            } else {
                Ok(d.as_secs() as u32)
            }
        };
        let dns = DnsConfig {
            only_passing: f.dns.only_passing,
            addr: addr("dns.addr", &f.dns.addr)?,
            ttl: secs("dns.ttl", f.dns.ttl.0, 86_400)?,
            negative_ttl: f
                .dns
                .negative_ttl
                .map(|d| secs("dns.negative_ttl", d.0, 86_400))
                .transpose()?,
            zone_dir: f.dns.zone_dir,
            max_records: match f.dns.max_records {
                n @ 1..=MAX_DNS_RECORDS => n,
                n => {
                    return Err(invalid(
                        "dns.max_records",
                        format!(
                            "{n} is not between 1 and {MAX_DNS_RECORDS} (more records with long names would not fit in a TCP answer)"
                        ),
                    ));
                }
            },
            tcp_idle_timeout: match f.dns.tcp_idle_timeout.0 {
                d if d >= Duration::from_millis(100) && d <= Duration::from_secs(3600) => d,
                _ => {
                    return Err(invalid(
                        "dns.tcp_idle_timeout",
                        "must be between 100ms and 1h".into(),
                    ));
                }
            },
            tcp_max_connections: f.dns.tcp_max_connections.max(1),
            tcp_max_connections_per_ip: f.dns.tcp_max_connections_per_ip.max(1),
            tcp_max_connections_per_prefix: f.dns.tcp_max_connections_per_prefix.max(1),
            tcp_busy_idle_timeout: match f.dns.tcp_busy_idle_timeout.0 {
                d if d >= Duration::from_millis(100) && d <= Duration::from_secs(3600) => {
                    d.min(f.dns.tcp_idle_timeout.0)
                }
                _ => {
                    return Err(invalid(
                        "dns.tcp_busy_idle_timeout",
                        "must be between 100ms and 1h".into(),
                    ));
                }
            },
            udp_workers: match f.dns.udp_workers {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n @ 1..=256 => n,
                n => return Err(invalid("dns.udp_workers", format!("{n} is more than 256"))),
            },
            max_queue_delay: match f.dns.max_queue_delay.0 {
                d if d >= Duration::from_millis(10) && d <= Duration::from_secs(30) => d,
                _ => {
                    return Err(invalid(
                        "dns.max_queue_delay",
                        "must be between 10ms and 30s".into(),
                    ));
                }
            },
            rrl: {
                let r = &f.dns.rrl;
                if r.ipv4_prefix > 32 || r.ipv6_prefix > 128 {
                    return Err(invalid(
                        "dns.rrl",
                        "ipv4_prefix is at most 32 and ipv6_prefix at most 128".into(),
                    ));
                }
                RrlConfig {
                    responses_per_second: r.responses_per_second,
                    slip: r.slip,
                    ipv4_prefix: r.ipv4_prefix,
                    ipv6_prefix: r.ipv6_prefix,
                    exempt_loopback: r.exempt_loopback,
                }
            },
            strategy: crate::core::Strategy::parse(&f.dns.strategy).ok_or_else(|| {
                invalid(
                    "dns.strategy",
                    format!(
                        "{:?} is not one of {}",
                        f.dns.strategy,
                        crate::core::Strategy::names()
                    ),
                )
            })?,
            panic_threshold: match f.dns.panic_threshold {
                p @ 0..=100 => p,
                p => {
                    return Err(invalid(
                        "dns.panic_threshold",
                        format!("{p} is not a percentage from 0 to 100"),
                    ));
                }
            },
            client_zones: std::sync::Arc::new(
                crate::core::ClientZones::parse(&f.dns.client_zones)
                    .map_err(|e| invalid("dns.client_zones", e))?,
            ),
            trusted_recursors: trusted_recursors(&f.dns.trusted_recursors)?,
        };
        let http_addr = addr("http.addr", &f.http.addr)?;
        let tls = match (f.http.tls_cert, f.http.tls_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "http.tls_cert",
                    "--tls-cert and --tls-key must be given together".into(),
                ));
            }
        };
        if tls.is_none() && !http_addr.ip().is_loopback() && !f.http.insecure_http {
            return Err(invalid(
                "http.addr",
                format!(
                    "refusing to serve the API over plain HTTP on the non-loopback address {http_addr}: \
                     ACL tokens and sign-in passwords would cross the network unencrypted. \
                     Pass --tls-cert and --tls-key to serve HTTPS, or --insecure-http if plain HTTP \
                     on this address is really intended. Off loopback, access control defaults to \
                     deny: create a management token (acl.bootstrap_token_file, or POST \
                     /v1/acl/bootstrap), or choose with acl.default_policy"
                ),
            ));
        }
        if f.http.max_body_bytes < 1024 {
            return Err(invalid(
                "http.max_body_bytes",
                "must be at least 1024".into(),
            ));
        }
        let between = |key: &'static str, d: DurationValue, min: Duration, max: Duration| {
            if d.0 >= min && d.0 <= max {
                Ok(d.0)
            } else {
                Err(invalid(
                    key,
                    format!(
                        "must be between {} and {}",
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                ))
            }
        };
        let ms100 = Duration::from_millis(100);
        let hour = Duration::from_secs(3600);
        let count = |key: &'static str, n: usize, min: usize, max: usize| {
            if (min..=max).contains(&n) {
                Ok(n)
            } else {
                Err(invalid(key, format!("{n} is not between {min} and {max}")))
            }
        };
        let max_header_bytes = count(
            "http.max_header_bytes",
            f.http.max_header_bytes,
            4096,
            1 << 20,
        )?;
        let http = HttpConfig {
            addr: http_addr,
            tls,
            max_body_bytes: f.http.max_body_bytes,
            header_read_timeout: between(
                "http.header_read_timeout",
                f.http.header_read_timeout,
                ms100,
                Duration::from_secs(600),
            )?,
            body_timeout: between("http.body_timeout", f.http.body_timeout, ms100, hour)?,
            idle_timeout: between("http.idle_timeout", f.http.idle_timeout, ms100, hour)?,
            h2_ping_interval: between(
                "http.h2_ping_interval",
                f.http.h2_ping_interval,
                ms100,
                hour,
            )?,
            max_connections: count(
                "http.max_connections",
                f.http.max_connections,
                1,
                usize::MAX,
            )?,
            max_connections_per_ip: count(
                "http.max_connections_per_ip",
                f.http.max_connections_per_ip,
                1,
                usize::MAX,
            )?,
            max_header_bytes,
            max_uri_bytes: count(
                "http.max_uri_bytes",
                f.http.max_uri_bytes,
                256,
                max_header_bytes,
            )?,
            max_headers: count("http.max_headers", f.http.max_headers, 8, 1000)?,
            allowed_hosts: f.http.allowed_hosts.clone(),
            max_snapshot_streams: count(
                "http.max_snapshot_streams",
                f.http.max_snapshot_streams,
                1,
                usize::MAX,
            )?,
            drain_period: between(
                "http.drain_period",
                f.http.drain_period,
                Duration::ZERO,
                Duration::from_secs(600),
            )?,
            event_write_interval: between(
                "http.event_write_interval",
                f.http.event_write_interval,
                Duration::ZERO,
                Duration::from_secs(1),
            )?,
        };
        let reap = f.registry.reap_after.0;
        if reap < Duration::from_secs(1) {
            return Err(invalid("registry.reap_after", "must be at least 1s".into()));
        }
        let store = match f.store.as_str() {
            "file" => StoreConfig::File,
            "memory" => StoreConfig::Memory,
            url if url.starts_with("redis://") || url.starts_with("rediss://") => {
                StoreConfig::Redis(url.to_string())
            }
            url if url.starts_with("etcd://") || url.starts_with("etcds://") => {
                let mut e = EtcdStore::parse(url).map_err(|e| invalid("store", e))?;
                e.user = f.store_user.clone();
                e.timeout = between(
                    "store_timeout",
                    f.store_timeout,
                    Duration::from_millis(100),
                    Duration::from_secs(60),
                )?;
                e.client_cert = match (&f.store_client_cert, &f.store_client_key) {
                    (Some(c), Some(k)) if e.tls => Some((c.clone(), k.clone())),
                    (None, None) => None,
                    _ => {
                        return Err(invalid(
                            "store_client_cert",
                            "needs store_client_key, and an etcds:// store".into(),
                        ));
                    }
                };
                StoreConfig::Etcd(e)
            }
            other => {
                return Err(invalid(
                    "store",
                    format!(
                        "{:?} is not \"file\", \"memory\", a redis://host:port/db (or rediss://) URL or an etcd://host:port[,host:port...]/prefix (or etcds://) URL",
                        other.split('@').next_back().unwrap_or("")
                    ),
                ));
            }
        };
        let store_password_file = f.store_password_file;
        if store_password_file.is_some()
            && !matches!(store, StoreConfig::Redis(_) | StoreConfig::Etcd(_))
        {
            return Err(invalid(
                "store_password_file",
                "is only used with a redis:// or etcd:// store".into(),
            ));
        }
        let store_ca_cert = f.store_ca_cert;
        if store_ca_cert.is_some()
            && !matches!(&store, StoreConfig::Redis(url) if url.starts_with("rediss://"))
            && !matches!(&store, StoreConfig::Etcd(e) if e.tls)
        {
            return Err(invalid(
                "store_ca_cert",
                "is only used with a rediss:// or etcds:// (TLS) store".into(),
            ));
        }
        if !matches!(store, StoreConfig::Etcd(_))
            && (f.store_user.is_some()
                || f.store_client_cert.is_some()
                || f.store_client_key.is_some())
        {
            return Err(invalid(
                "store_user",
                "store_user, store_client_cert and store_client_key are only used with an etcd:// store"
                    .into(),
            ));
        }
        let format = match f.log.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "log.format",
                    format!("{other:?} is not \"text\" or \"json\""),
                ));
            }
        };
        let snapshot = SnapshotConfig {
            interval: match f.snapshot.interval.0 {
                Duration::ZERO => None,
                d if d >= Duration::from_secs(1) => Some(d),
                _ => {
                    return Err(invalid(
                        "snapshot.interval",
                        "must be 0 (off) or at least 1s".into(),
                    ));
                }
            },
            keep: match f.snapshot.keep {
                n @ 1..=100 => n,
                n => {
                    return Err(invalid(
                        "snapshot.keep",
                        format!("{n} is not between 1 and 100"),
                    ));
                }
            },
        };
        let acl = validate_acl(f.acl, http.addr)?;
        let audit = AuditConfig {
            max_file_bytes: match f.audit.max_file_bytes {
                n if n >= 4096 => n as u64,
                _ => {
                    return Err(invalid(
                        "audit.max_file_bytes",
                        "must be at least 4096".into(),
                    ));
                }
            },
        };
        let resolve = validate_resolve(f.resolve)?;
        let federation = validate_federation(
            f.federation,
            f.failover,
            &datacenter,
            Duration::from_secs(u64::from(dns.ttl)),
        )?;
        let health = HealthConfig {
            enable_script_checks: f.health.enable_script_checks,
            max_in_flight: match f.health.max_in_flight {
                n @ 1..=100_000 => n,
                n => {
                    return Err(invalid(
                        "health.max_in_flight",
                        format!("{n} is not between 1 and 100000"),
                    ));
                }
            },
        };
        let outlier = validate_outlier(&f.outlier)?;
        let self_preservation = match f.registry.self_preservation_threshold {
            p @ 1..=100 => f.registry.self_preservation.then_some(p),
            p => {
                return Err(invalid(
                    "registry.self_preservation_threshold",
                    format!("{p} is not a percentage from 1 to 100"),
                ));
            }
        };
        let mqtt = validate_mqtt(f.mqtt, &datacenter)?;
        let telemetry = TelemetryConfig {
            otlp_endpoint: match f.telemetry.otlp_endpoint {
                None => None,
                Some(e) => {
                    Some(otlp_traces_url(&e).map_err(|m| invalid("telemetry.otlp_endpoint", m))?)
                }
            },
            otlp_export_interval: between(
                "telemetry.otlp_export_interval",
                f.telemetry.otlp_export_interval,
                ms100,
                Duration::from_secs(60),
            )?,
        };
        let intentions_default_deny = match f.intentions.default.as_deref() {
            None => acl.default_deny,
            Some("allow") => false,
            Some("deny") => true,
            Some(other) => {
                return Err(invalid(
                    "intentions.default",
                    format!("{other:?} is neither allow nor deny"),
                ));
            }
        };
        Ok(Config {
            intentions_default_deny,
            mqtt,
            telemetry,
            federation,
            health,
            acl,
            audit,
            resolve,
            metrics: MetricsConfig {
                dns: f.metrics.enabled,
            },
            snapshot,
            registry: RegistryConfig {
                local_dc: datacenter.clone(),
                reap_after: reap,
            },
            self_preservation,
            outlier,
            datacenter,
            domain,
            data_dir: f.data_dir,
            store,
            store_password_file,
            store_password_on_command_line: false,
            store_ca_cert,
            dns,
            http,
            log: LogConfig {
                format,
                level: f.log.level,
            },
        })
    }
}

/// `host` and `port` of an `mqtt://host:port` URL (IPv6 in brackets).
pub fn parse_mqtt_url(url: &str) -> Result<(String, u16), String> {
    let usage = "is not an mqtt://host:port URL (e.g. mqtt://127.0.0.1:1883)";
    let Some(rest) = url.strip_prefix("mqtt://") else {
        return Err(if url.contains("://") {
            format!("{url:?}: only mqtt:// is supported (no TLS or WebSocket transport)")
        } else {
            format!("{url:?} {usage}")
        });
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '@', '?', '#']) || rest.chars().any(char::is_whitespace) {
        return Err(format!(
            "{url:?} {usage}, without a path, query or credentials (use mqtt.username and mqtt.password_file)"
        ));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !p.is_empty() => (h, p),
        _ => return Err(format!("{url:?} {usage}: a host and a port are needed")),
    };
    let host = match host.strip_prefix('[') {
        Some(v6) => {
            let v6 = v6
                .strip_suffix(']')
                .ok_or_else(|| format!("{url:?} {usage}"))?;
            v6.parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("{url:?}: {v6:?} is not an IPv6 address"))?;
            v6
        }
        None if host.contains([':', ']']) => {
            return Err(format!(
                "{url:?} {usage}: write an IPv6 address in brackets"
            ));
        }
        None => host,
    };
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("{url:?}: {port:?} is not a port from 1 to 65535")),
    };
    Ok((host.to_string(), port))
}

/// Checks the `[mqtt]` section.
fn validate_mqtt(m: wire::MqttFile, dc: &Datacenter) -> Result<Option<MqttConfig>, ConfigError> {
    let invalid = |key: &'static str, message: String| ConfigError::Invalid { key, message };
    let Some(url) = m.url else {
        return Ok(None);
    };
    let (host, port) = parse_mqtt_url(&url).map_err(|e| invalid("mqtt.url", e))?;
    let client_id = m.client_id.unwrap_or_else(|| format!("maxine-{dc}"));
    if client_id.is_empty() || client_id.len() > 65_535 {
        return Err(invalid("mqtt.client_id", "must not be empty".into()));
    }
    let topic_prefix = m.topic_prefix.trim_end_matches('/').to_string();
    if topic_prefix.is_empty()
        || topic_prefix.starts_with('/')
        || topic_prefix.contains(['+', '#', '\0'])
    {
        return Err(invalid(
            "mqtt.topic_prefix",
            format!(
                "{:?} must be a topic such as \"maxine\", without wildcards (+, #) or a leading /",
                m.topic_prefix
            ),
        ));
    }
    if m.password_file.is_some() && m.username.is_none() {
        return Err(invalid(
            "mqtt.password_file",
            "is only used with mqtt.username".into(),
        ));
    }
    let healthy_interval = m.healthy_interval.0;
    if healthy_interval < Duration::from_millis(100) || healthy_interval > Duration::from_secs(60) {
        return Err(invalid(
            "mqtt.healthy_interval",
            "must be between 100ms and 1m".into(),
        ));
    }
    let write_interval = m.write_interval.0;
    if write_interval > Duration::from_secs(1) {
        return Err(invalid(
            "mqtt.write_interval",
            "must be between 0 and 1s".into(),
        ));
    }
    Ok(Some(MqttConfig {
        host,
        port,
        client_id,
        topic_prefix,
        healthy_interval,
        write_interval,
        username: m.username,
        password_file: m.password_file,
    }))
}

/// The traces URL of an OTLP/HTTP endpoint: `/v1/traces` is added unless
/// the path already ends so.
fn otlp_traces_url(endpoint: &str) -> Result<String, String> {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .ok_or_else(|| {
            format!("{endpoint:?} is not an http:// or https:// URL (OTLP over HTTP)")
        })?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') || rest.contains(['?', '#']) {
        return Err(format!(
            "{endpoint:?} is not a URL such as http://127.0.0.1:4318"
        ));
    }
    let base = endpoint.trim_end_matches('/');
    Ok(if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    })
}

/// Checks the `[outlier]` section.
fn validate_outlier(
    o: &wire::OutlierFile,
) -> Result<crate::core::outlier::OutlierConfig, ConfigError> {
    let invalid = |key, message: String| ConfigError::Invalid { key, message };
    if o.consecutive_failures > 1000 {
        return Err(invalid(
            "outlier.consecutive_failures",
            format!("{} is more than 1000", o.consecutive_failures),
        ));
    }
    let base = o.base_ejection_time.0;
    if base < Duration::from_secs(1) || base > Duration::from_secs(3600) {
        return Err(invalid(
            "outlier.base_ejection_time",
            "must be between 1s and 1h".into(),
        ));
    }
    let max = o.max_ejection_time.0;
    if max < base || max > Duration::from_secs(86_400) {
        return Err(invalid(
            "outlier.max_ejection_time",
            "must be at least outlier.base_ejection_time and at most 1 day".into(),
        ));
    }
    if o.max_ejection_percent > 100 {
        return Err(invalid(
            "outlier.max_ejection_percent",
            format!(
                "{} is not a percentage from 0 to 100",
                o.max_ejection_percent
            ),
        ));
    }
    Ok(crate::core::outlier::OutlierConfig {
        consecutive_failures: o.consecutive_failures,
        base_ejection_time: base,
        max_ejection_time: max,
        max_ejection_percent: o.max_ejection_percent,
    })
}

/// Checks the `[resolve]` section.
/// `dns.trusted_recursors`: networks in CIDR form, at most 256.
fn trusted_recursors(raw: &[String]) -> Result<Vec<crate::core::Cidr>, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        key: "dns.trusted_recursors",
        message,
    };
    if raw.len() > 256 {
        return Err(invalid(format!("{} networks; at most 256", raw.len())));
    }
    raw.iter()
        .map(|c| crate::core::Cidr::parse(c).map_err(invalid))
        .collect()
}

fn validate_resolve(r: wire::ResolveFile) -> Result<ResolveConfig, ConfigError> {
    let invalid = |key, message: String| ConfigError::Invalid { key, message };
    let nameservers = r
        .nameservers
        .iter()
        .map(|raw| {
            raw.parse::<SocketAddr>()
                .or_else(|_| {
                    raw.parse::<std::net::IpAddr>()
                        .map(|ip| SocketAddr::new(ip, 53))
                })
                .map_err(|_| {
                    invalid(
                        "resolve.nameservers",
                        format!("{raw:?} is not an IP address or IP:port such as 10.0.0.2:53"),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let max_ttl = r.max_ttl.0;
    if max_ttl > Duration::from_secs(86_400) {
        return Err(invalid("resolve.max_ttl", "must be at most 1 day".into()));
    }
    let min_ttl = r.min_ttl.0;
    if min_ttl < Duration::from_secs(1) || min_ttl > max_ttl {
        return Err(invalid(
            "resolve.min_ttl",
            "must be at least 1s and at most resolve.max_ttl".into(),
        ));
    }
    let concurrency = match r.concurrency {
        n @ 1..=256 => n,
        n => {
            return Err(invalid(
                "resolve.concurrency",
                format!("{n} is not between 1 and 256"),
            ));
        }
    };
    Ok(ResolveConfig {
        resolv_conf: r.resolv_conf,
        hosts_file: (!r.hosts_file.as_os_str().is_empty()).then_some(r.hosts_file),
        nameservers,
        min_ttl,
        max_ttl,
        concurrency,
    })
}

fn validate_acl(a: wire::AclFile, http_addr: SocketAddr) -> Result<AclConfig, ConfigError> {
    let invalid = |key, message: String| ConfigError::Invalid { key, message };
    let (default_deny, default_explicit) = match a.default_policy.as_deref() {
        None => (!http_addr.ip().is_loopback(), false),
        Some("allow") => (false, true),
        Some("deny") => (true, true),
        Some(other) => {
            return Err(invalid(
                "acl.default_policy",
                format!("{other:?} is neither allow nor deny"),
            ));
        }
    };
    if let Some(t) = &a.bootstrap_token
        && t.len() < 32
    {
        return Err(invalid(
            "acl.bootstrap_token",
            "must be at least 32 characters (a guessable management token is no protection)".into(),
        ));
    }
    let admin = match (a.admin_username, a.admin_password) {
        (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => Some((u, p)),
        (None, None) => None,
        _ => {
            return Err(invalid(
                "acl.admin_username",
                "MAXINE_ADMIN_USERNAME and MAXINE_ADMIN_PASSWORD must be given together, not empty"
                    .into(),
            ));
        }
    };
    let j = a.jwt;
    let jwt = match j.issuer {
        None => None,
        Some(issuer) => {
            if j.audiences.is_empty() {
                return Err(invalid(
                    "acl.jwt.audiences",
                    "at least one audience is needed".into(),
                ));
            }
            if j.leeway.0 > Duration::from_secs(60) {
                return Err(invalid("acl.jwt.leeway", "must be at most 60s".into()));
            }
            let mut policy_bindings = Vec::new();
            for b in &j.policy_bindings {
                let parsed = b.split_once('=').and_then(|(claim, rest)| {
                    let (value, policies) = rest.split_once(':')?;
                    let policies: Vec<String> = policies
                        .split('+')
                        .filter(|p| !p.is_empty())
                        .map(str::to_string)
                        .collect();
                    (!claim.is_empty() && !value.is_empty() && !policies.is_empty())
                        .then(|| (claim.to_string(), value.to_string(), policies))
                });
                match parsed {
                    Some(p) => policy_bindings.push(p),
                    None => {
                        return Err(invalid(
                            "acl.jwt.policy_bindings",
                            format!("{b:?} is not claim=value:policy[+policy...]"),
                        ));
                    }
                }
            }
            Some(JwtConfig {
                issuer,
                audiences: j.audiences,
                algorithms: j.algorithms,
                public_key_files: j.public_key_files.into_iter().map(PathBuf::from).collect(),
                jwks_file: j.jwks_file,
                hs256_secret_file: j.hs256_secret_file,
                leeway: j.leeway.0,
                service_claim: j.service_claim,
                policy_bindings,
            })
        }
    };
    Ok(AclConfig {
        default_deny,
        default_explicit,
        bootstrap_token_file: a.bootstrap_token_file,
        bootstrap_token: a.bootstrap_token,
        users_file: a.users_file,
        admin,
        jwt,
    })
}

/// Sets a dotted key in a TOML table.
fn set_key(table: &mut toml::Table, dotted: &str, value: toml::Value) {
    let mut parts: Vec<&str> = dotted.split('.').collect();
    let last = parts.pop().expect("non-empty key");
    let mut t = table;
    for p in parts {
        let entry = t
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        t = entry.as_table_mut().expect("just made a table");
    }
    t.insert(last.to_string(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_urls_need_the_mqtt_scheme_a_host_and_a_port() {
        assert_eq!(
            parse_mqtt_url("mqtt://127.0.0.1:1883"),
            Ok(("127.0.0.1".into(), 1883))
        );
        assert_eq!(
            parse_mqtt_url("mqtt://broker.example:8883/"),
            Ok(("broker.example".into(), 8883))
        );
        assert_eq!(
            parse_mqtt_url("mqtt://[::1]:1883"),
            Ok(("::1".into(), 1883))
        );
        for (bad, says) in [
            ("mqtts://h:8883", "only mqtt://"),
            ("tcp://h:1883", "only mqtt://"),
            ("h:1883", "mqtt://host:port"),
            ("mqtt://h", "a host and a port"),
            ("mqtt://:1883", "a host and a port"),
            ("mqtt://h:0", "not a port"),
            ("mqtt://h:99999", "not a port"),
            ("mqtt://u:p@h:1883", "credentials"),
            ("mqtt://h:1883/topic", "without a path"),
            ("mqtt://::1:1883", "brackets"),
            ("mqtt://[nope]:1883", "IPv6"),
        ] {
            let e = parse_mqtt_url(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn mqtt_is_off_unless_a_url_is_given_and_defaults_follow_the_datacenter() {
        let c = Config::load(Sources::default()).unwrap();
        assert_eq!(c.mqtt, None);
        assert_eq!(c.telemetry.otlp_endpoint, None);
        let c = Config::load(Sources {
            env: env(&[
                ("MAXINE_MQTT_URL", "mqtt://127.0.0.1:1883"),
                ("MAXINE_DATACENTER", "eu1"),
                ("MAXINE_OTLP_ENDPOINT", "http://127.0.0.1:4318/"),
            ]),
            ..Default::default()
        })
        .unwrap();
        let m = c.mqtt.unwrap();
        assert_eq!(
            (m.client_id.as_str(), m.topic_prefix.as_str()),
            ("maxine-eu1", "maxine")
        );
        assert_eq!(
            c.telemetry.otlp_endpoint.as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        let e = Config::load(Sources {
            env: env(&[("MAXINE_MQTT_URL", "mqtts://h:1")]),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("mqtt.url"), "{e}");
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_example_config_in_deploy_is_valid() {
        let c = Config::load(Sources {
            file: Some((
                "deploy/maxine.toml".into(),
                include_str!("../../deploy/maxine.toml").into(),
            )),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.datacenter.as_str(), "eu1");
        assert!(c.http.tls.is_some());
    }

    #[test]
    fn federation_peers_come_from_tables_text_and_flags_alike() {
        let file = "[federation]\ntoken_file = \"/t\"\n[[federation.peers]]\nname = \"dc2\"\n\
                    url = \"https://dc2.example:8080/\"\nca_file = \"/ca.pem\"\n";
        let c = Config::load(Sources {
            file: Some(("f.toml".into(), file.into())),
            ..Default::default()
        })
        .unwrap();
        let p = &c.federation.peers[0];
        assert_eq!(p.name.as_str(), "dc2");
        assert_eq!(p.url, "https://dc2.example:8080");
        assert_eq!(p.token_file.as_deref(), Some(std::path::Path::new("/t")));
        let c = Config::load(Sources {
            env: env(&[(
                "MAXINE_FEDERATION_PEERS",
                "dc2=https://a:1, dc3=http://127.0.0.1:2",
            )]),
            ..Default::default()
        })
        .unwrap();
        let names: Vec<_> = c.federation.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["dc2", "dc3"]);
        let c = Config::load(Sources {
            flags: vec![("federation.peers", "dc4=https://b:3".into())],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.federation.peers[0].name.as_str(), "dc4");
    }

    #[test]
    fn bad_federation_settings_are_refused_with_the_key() {
        for (key, v) in [
            ("MAXINE_FEDERATION_PEERS", "dc2=http://10.0.0.2:8080"),
            ("MAXINE_FEDERATION_PEERS", "dc1=https://a:1"),
            ("MAXINE_FEDERATION_PEERS", "dc2"),
            ("MAXINE_FEDERATION_PEERS", "dc2=https://a:1,dc2=https://b:1"),
            ("MAXINE_FEDERATION_PEERS", "dc2=ftp://a"),
            ("MAXINE_FAILOVER_DATACENTERS", "dc1"),
            ("MAXINE_FAILOVER_TTL", "2d"),
            ("MAXINE_FEDERATION_STALE_AFTER", "0s"),
        ] {
            let r = Config::load(Sources {
                env: env(&[(key, v)]),
                ..Default::default()
            });
            assert!(r.is_err(), "{key}={v} accepted");
        }
    }

    #[test]
    fn defaults_work() {
        let c = Config::defaults();
        assert_eq!(c.dns.addr.to_string(), "127.0.0.1:8600");
        assert_eq!(c.http.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.datacenter.as_str(), "dc1");
        assert_eq!(c.domain, "maxine");
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let c = Config::load(Sources {
            file: Some((
                "f.toml".into(),
                "datacenter = \"fromfile\"\ndomain = \"file\"\n[dns]\nttl = \"7s\"\n".into(),
            )),
            env: env(&[
                ("DATACENTER_ID", "fromid"),
                ("MAXINE_DOMAIN", "env"),
                ("MAXINE_DNS_TTL", "9"),
            ]),
            flags: vec![("domain", "flag".into())],
        })
        .unwrap();
        assert_eq!(c.datacenter.as_str(), "fromid");
        assert_eq!(c.domain, "flag");
        assert_eq!(c.dns.ttl, 9);
        let c = Config::load(Sources {
            env: env(&[
                ("DATACENTER_ID", "fromid"),
                ("MAXINE_DATACENTER", "explicit"),
            ]),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.datacenter.as_str(), "explicit");
    }

    #[test]
    fn every_variable_of_the_table_sets_its_key() {
        for s in SETTINGS {
            let Some(default) = s.default else { continue };
            let c = Config::load(Sources {
                env: env(&[(s.env, default)]),
                ..Default::default()
            });
            assert!(c.is_ok(), "{}={default}: {}", s.env, c.unwrap_err());
        }
        let c = Config::load(Sources {
            env: env(&[
                ("MAXINE_DNS_RRL_SLIP", "5"),
                ("MAXINE_DNS_MAX_QUEUE_DELAY", "250ms"),
                ("MAXINE_DNS_RRL_EXEMPT_LOOPBACK", "false"),
            ]),
            flags: vec![("dns.udp_workers", "3".into())],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.dns.rrl.slip, 5);
        assert_eq!(c.dns.max_queue_delay, Duration::from_millis(250));
        assert!(!c.dns.rrl.exempt_loopback);
        assert_eq!(c.dns.udp_workers, 3);
    }

    #[test]
    fn a_value_of_the_wrong_kind_names_its_key() {
        let err = Config::load(Sources {
            env: env(&[("MAXINE_DNS_MAX_RECORDS", "many")]),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("dns.max_records") && err.contains("many"),
            "{err}"
        );
        // Text settings stay text, even when they look like a number.
        let c = Config::load(Sources {
            flags: vec![("domain", "42".into())],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.domain, "42");
    }

    #[test]
    fn client_variables_are_not_an_error_for_serve() {
        assert!(
            Config::load(Sources {
                env: env(&[
                    ("MAXINE_API", "http://x"),
                    ("MAXINE_CA_CERT", "ca.pem"),
                    ("MAXINE_DNS", "127.0.0.1:53"),
                ]),
                ..Default::default()
            })
            .is_ok()
        );
    }

    #[test]
    fn a_password_in_the_store_flag_is_noticed_and_a_password_file_needs_redis() {
        let load = |flags: Vec<(&'static str, String)>, vars: &[(&str, &str)]| {
            Config::load(Sources {
                flags,
                env: env(vars),
                ..Default::default()
            })
        };
        let c = load(vec![("store", "redis://:pw@db:6379/2".into())], &[]).unwrap();
        assert!(c.store_password_on_command_line);
        let c = load(vec![], &[("MAXINE_STORE", "redis://:pw@db:6379/2")]).unwrap();
        assert!(!c.store_password_on_command_line, "the variable is the way");
        let c = load(vec![("store", "redis://db:6379/2".into())], &[]).unwrap();
        assert!(!c.store_password_on_command_line);
        let c = load(
            vec![("store", "redis://db/2".into())],
            &[("MAXINE_STORE_PASSWORD_FILE", "/run/secrets/redis")],
        )
        .unwrap();
        assert_eq!(
            c.store_password_file.as_deref(),
            Some(std::path::Path::new("/run/secrets/redis"))
        );
        let err = load(
            vec![("store_password_file", "/run/secrets/redis".into())],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("store_password_file"), "{err}");
    }

    #[test]
    fn a_domain_too_long_for_instance_names_is_refused() {
        let load = |d: &str| {
            Config::load(Sources {
                flags: vec![("domain", d.into())],
                ..Default::default()
            })
        };
        assert!(load(&"a".repeat(61)).is_ok());
        let err = load(&"a".repeat(62)).unwrap_err().to_string();
        assert!(err.contains("61"), "{err}");
    }

    #[test]
    fn snapshots_every_ten_minutes_keeping_three_unless_set_otherwise() {
        let d = Config::defaults().snapshot;
        assert_eq!((d.interval, d.keep), (Some(Duration::from_secs(600)), 3));
        let load = |vars: &[(&str, &str)]| {
            Config::load(Sources {
                env: env(vars),
                ..Default::default()
            })
        };
        let c = load(&[
            ("MAXINE_SNAPSHOT_INTERVAL", "0"),
            ("MAXINE_SNAPSHOT_KEEP", "5"),
        ])
        .unwrap();
        assert_eq!((c.snapshot.interval, c.snapshot.keep), (None, 5));
        let err = load(&[("MAXINE_SNAPSHOT_KEEP", "0")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("snapshot.keep"), "{err}");
        let err = load(&[("MAXINE_SNAPSHOT_INTERVAL", "10ms")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("snapshot.interval"), "{err}");
    }

    #[test]
    fn unknown_keys_are_named_in_the_error() {
        let err = Config::load(Sources {
            file: Some(("f.toml".into(), "[dns]\nport = 53\n".into())),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("port"), "{err}");
        let err = Config::load(Sources {
            env: env(&[("MAXINE_DSN_ADDR", "x")]),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("MAXINE_DSN_ADDR"), "{err}");
    }

    #[test]
    fn the_store_is_a_file_by_default_or_redis_or_memory_and_nothing_else() {
        let load = |v: &str| {
            Config::load(Sources {
                env: env(&[("MAXINE_STORE", v)]),
                ..Default::default()
            })
        };
        assert_eq!(Config::defaults().store, StoreConfig::File);
        assert_eq!(load("memory").unwrap().store, StoreConfig::Memory);
        assert_eq!(
            load("redis://:pw@db:6379/2").unwrap().store,
            StoreConfig::Redis("redis://:pw@db:6379/2".into())
        );
        let err = load("postgres://u:secret@db/x").unwrap_err().to_string();
        assert!(err.contains("store") && !err.contains("secret"), "{err}");
    }

    #[test]
    fn dns_max_records_is_at_most_what_one_tcp_answer_can_hold() {
        let load = |n: &str| {
            Config::load(Sources {
                env: env(&[("MAXINE_DNS_MAX_RECORDS", n)]),
                ..Default::default()
            })
        };
        assert_eq!(load("200").unwrap().dns.max_records, MAX_DNS_RECORDS);
        for bad in ["0", "201", "1000"] {
            let err = load(bad).unwrap_err().to_string();
            assert!(
                err.contains("dns.max_records") && err.contains("between 1 and 200"),
                "{bad}: {err}"
            );
        }
        let row = Setting::find("dns.max_records").unwrap();
        assert!(row.doc.contains("1 to 200"), "{}", row.doc);
    }

    #[test]
    fn the_drain_lasts_five_seconds_unless_set_and_at_most_ten_minutes() {
        assert_eq!(Config::defaults().http.drain_period, Duration::from_secs(5));
        let load = |v: &str| {
            Config::load(Sources {
                flags: vec![("http.drain_period", v.into())],
                ..Default::default()
            })
        };
        assert_eq!(load("0").unwrap().http.drain_period, Duration::ZERO);
        assert_eq!(
            load("30s").unwrap().http.drain_period,
            Duration::from_secs(30)
        );
        let err = load("11m").unwrap_err().to_string();
        assert!(err.contains("http.drain_period"), "{err}");
    }

    #[test]
    fn a_zone_dir_is_given_or_left_to_the_default_location() {
        assert_eq!(Config::defaults().dns.zone_dir, None);
        let c = Config::load(Sources {
            env: env(&[("MAXINE_ZONE_DIR", "/etc/maxine/zones")]),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.dns.zone_dir, Some(PathBuf::from("/etc/maxine/zones")));
    }

    #[test]
    fn etcd_stores_name_their_members_and_prefix_and_refuse_credentials_in_the_url() {
        let load = |v: &str| {
            Config::load(Sources {
                env: env(&[("MAXINE_STORE", v)]),
                ..Default::default()
            })
        };
        let Ok(c) = load("etcd://10.0.0.1:2379,10.0.0.2:2379/dc1/maxine") else {
            panic!("an etcd URL is a store")
        };
        let StoreConfig::Etcd(e) = c.store else {
            panic!("an etcd store")
        };
        assert_eq!(e.endpoints, ["10.0.0.1:2379", "10.0.0.2:2379"]);
        assert_eq!(e.prefix, "/dc1/maxine");
        assert!(!e.tls);
        assert_eq!(e.timeout, Duration::from_secs(5));
        let Ok(c) = load("etcds://db:2379") else {
            panic!("etcds is TLS")
        };
        assert!(matches!(c.store, StoreConfig::Etcd(ref e) if e.tls && e.prefix == "/maxine"));
        for bad in [
            "etcd://u:pw@db:2379/m",
            "etcd://db/m",
            "etcd://db:0/m",
            "etcd://db:2379/",
        ] {
            let err = load(bad).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains("store"), "{bad}: {err}");
        }
    }

    #[test]
    fn rediss_stores_are_accepted_and_a_ca_is_only_for_them() {
        let load = |vars: &[(&str, &str)]| {
            Config::load(Sources {
                env: env(vars),
                ..Default::default()
            })
        };
        let c = load(&[
            ("MAXINE_STORE", "rediss://db.example:6380/1"),
            ("MAXINE_STORE_CA_CERT", "/etc/maxine/redis-ca.crt"),
        ])
        .unwrap();
        assert_eq!(
            c.store,
            StoreConfig::Redis("rediss://db.example:6380/1".into())
        );
        assert!(c.store_ca_cert.is_some());
        assert!(url_has_password("rediss://:pw@db:6380/1"));
        for store in ["redis://db/1", "file"] {
            let err = load(&[
                ("MAXINE_STORE", store),
                ("MAXINE_STORE_CA_CERT", "/etc/maxine/redis-ca.crt"),
            ])
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("store_ca_cert") && err.contains("rediss://"),
                "{err}"
            );
        }
    }

    #[test]
    fn http_limits_have_working_defaults_and_are_checked() {
        let c = Config::defaults().http;
        assert_eq!(c.header_read_timeout, Duration::from_secs(10));
        assert_eq!((c.max_connections, c.max_connections_per_ip), (1024, 64));
        assert!(c.max_uri_bytes <= c.max_header_bytes);
        let load = |key: &'static str, v: &str| {
            Config::load(Sources {
                flags: vec![(key, v.to_string())],
                ..Default::default()
            })
        };
        for (key, bad) in [
            ("http.max_uri_bytes", "20000"),
            ("http.max_header_bytes", "100"),
            ("http.max_headers", "0"),
            ("http.max_connections", "0"),
            ("http.max_snapshot_streams", "0"),
            ("http.idle_timeout", "1ms"),
            ("http.body_timeout", "2h"),
        ] {
            let err = load(key, bad).expect_err(key).to_string();
            assert!(err.contains(key), "{key}={bad}: {err}");
        }
        assert_eq!(
            load("http.idle_timeout", "2s").unwrap().http.idle_timeout,
            Duration::from_secs(2)
        );
    }

    #[test]
    fn plain_http_off_loopback_needs_tls_or_an_explicit_flag() {
        let load = |flags: Vec<(&'static str, String)>| {
            Config::load(Sources {
                flags,
                ..Default::default()
            })
        };
        let err = load(vec![("http.addr", "0.0.0.0:8080".into())])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--insecure-http") && err.contains("--tls-cert"),
            "{err}"
        );
        // It says what the ACLs do off loopback, and how to get in.
        assert!(
            err.contains("acl.default_policy") && err.contains("acl.bootstrap_token_file"),
            "{err}"
        );
        let insecure = load(vec![
            ("http.addr", "0.0.0.0:8080".into()),
            ("http.insecure_http", "true".into()),
        ])
        .unwrap();
        assert!(insecure.acl.default_deny && !insecure.acl.default_explicit);
        assert!(
            load(vec![
                ("http.addr", "0.0.0.0:8080".into()),
                ("http.insecure_http", "true".into())
            ])
            .is_ok()
        );
        assert!(load(vec![("http.addr", "[::1]:8080".into())]).is_ok());
    }
}
