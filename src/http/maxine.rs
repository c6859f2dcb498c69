//! The API of the Node.js Maxine registry (`/api/maxine/serviceops/...`),
//! so that existing Maxine SDKs keep working (its actuator and log routes
//! are in `actuator` and `logs`).
//!
//! Maxine names are free strings (`Payment_Service`); each is mapped to a DNS
//! label with [`normalize_label`] (`payment-service`), and the original
//! values are kept in [`CompatFields`] so answers show them unchanged.
//! Errors are `{"message": ...}`, as Maxine sends them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::auth::Caller;
use super::error::{ApiError, ApiJson, ApiQuery, MaxineError};
use super::{HttpState, applied_value, dns_names, indexed, propose};
use crate::core::Access;
use crate::core::labels::normalize_label;
use crate::core::{
    Address, Change, CompatFields, Instance, InstanceId, InstanceSpec, Query, QueryContext,
    ServiceKey, ServiceName, Strategy, Transport,
};
use crate::policy::Resource;

/// Maxine's default heartbeat timeout, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 5;
/// Maxine expires a node this long after its timeout.
const EXPIRY_GRACE: Duration = Duration::from_millis(500);
/// Largest `timeOut` whose TTL (timeOut + 0.5 s) stays within the core's 24 h bound.
const MAX_TIMEOUT_SECS: u64 = 24 * 3600 - 1;
/// Maxine's `MAX_SERVER_WEIGHT`.
pub const MAX_WEIGHT: u64 = 10;
/// Longest free-form name accepted (Maxine has no limit; we keep memory bounded).
const MAX_NAME_LEN: usize = 255;
const MAX_PATH_LEN: usize = 1024;

/// Maxine's texts for the discover errors (`constants.js`).
pub const MSG_DISCOVER_MISSING_DATA: &str = "Please provide the serviceName.";
pub const MSG_SERVICE_UNAVAILABLE: &str = "Service Unavailable";

/// Body of `POST /api/maxine/serviceops/register`, as the Maxine SDKs send it.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegisterBody {
    host_name: Option<String>,
    node_name: Option<String>,
    service_name: Option<String>,
    /// A number or a numeric string (Maxine parses it with `parseInt`).
    #[serde(default, deserialize_with = "loose_uint")]
    port: Option<i64>,
    ssl: Option<bool>,
    /// Seconds; default 5.
    #[serde(default, deserialize_with = "loose_uint")]
    time_out: Option<i64>,
    /// 1 to 10; default 1.
    #[serde(default, deserialize_with = "loose_uint")]
    weight: Option<i64>,
    path: Option<String>,
    /// Where the node answers a health check (`/health`); kept as sent and
    /// shown in the listings. Nothing probes it yet.
    health_check_path: Option<String>,
    /// Sent by newer Maxine SDKs; stored as the instance version (so DNS
    /// version names such as `v2.<service>` work for them too).
    version: Option<String>,
    /// Sent by newer Maxine SDKs; kept as the metadata entry `namespace`.
    namespace: Option<String>,
    /// Sent by newer Maxine SDKs: string values, stored as instance metadata.
    metadata: Option<BTreeMap<String, Value>>,
}

/// Accepts a JSON integer or a string of digits (empty string: absent), as
/// Maxine's `parseInt` does for the fields that SDKs send either way.
fn loose_uint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a whole number or a string of digits")
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(V)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(i64::try_from(v).unwrap_or(i64::MAX)))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Err(E::custom(format!("{v} is not a whole number")))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            let t = v.trim();
            if t.is_empty() {
                return Ok(None);
            }
            t.parse::<i64>()
                .map(Some)
                .map_err(|_| E::custom(format!("{v:?} is not a whole number")))
        }
    }
    d.deserialize_option(V)
}

/// A validated registration: what goes to the registry and what is answered.
struct Registration {
    key: ServiceKey,
    id: InstanceId,
    spec: InstanceSpec,
    timeout_secs: u64,
}

fn required<'a>(field: &str, value: &'a Option<String>) -> Result<&'a str, ApiError> {
    match value.as_deref() {
        None | Some("") => Err(ApiError::BadRequest(format!(
            "{field} is missing: hostName, nodeName and serviceName are required"
        ))),
        Some(v) if v.len() > MAX_NAME_LEN => Err(ApiError::BadRequest(format!(
            "{field} is longer than {MAX_NAME_LEN} characters"
        ))),
        Some(v) => Ok(v),
    }
}

/// Maps a free Maxine name to a DNS label, or says why it cannot be one.
/// `max` is the longest label the name may become (its newtype's `MAX_LEN`).
fn label_of(field: &str, raw: &str, max: usize) -> Result<String, ApiError> {
    normalize_label(raw, max).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "{field} {raw:?} has no letters or digits, so it cannot be a DNS name"
        ))
    })
}

/// Maxine's path rule: a leading '/', no trailing '/', "" when empty.
fn normalize_path(raw: Option<&str>) -> Result<String, ApiError> {
    let raw = raw.unwrap_or("");
    if raw.len() > MAX_PATH_LEN || raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ApiError::BadRequest(format!(
            "path {raw:?} must be at most {MAX_PATH_LEN} characters without spaces or control characters"
        )));
    }
    let mut p = if raw.starts_with('/') {
        raw.to_string()
    } else {
        format!("/{raw}")
    };
    if p.ends_with('/') {
        p.pop();
    }
    Ok(p)
}

/// A `healthCheckPath` as sent ("" when absent), within the bounds of `path`.
fn health_check_path(raw: Option<String>) -> Result<String, ApiError> {
    let raw = raw.unwrap_or_default();
    if raw.len() > MAX_PATH_LEN || raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ApiError::BadRequest(format!(
            "healthCheckPath {raw:?} must be at most {MAX_PATH_LEN} characters without spaces or control characters"
        )));
    }
    Ok(raw)
}

impl RegisterBody {
    fn validate(self, st: &HttpState) -> Result<Registration, ApiError> {
        let host_name = required("hostName", &self.host_name)?;
        let node_name = required("nodeName", &self.node_name)?;
        let service_name = required("serviceName", &self.service_name)?;

        // A scheme in hostName wins over `ssl`, as in Maxine.
        let lower = host_name.to_ascii_lowercase();
        let (scheme_ssl, host) = if lower.starts_with("https://") {
            (Some(true), &host_name[8..])
        } else if lower.starts_with("http://") {
            (Some(false), &host_name[7..])
        } else {
            (None, host_name)
        };
        let ssl = scheme_ssl.unwrap_or(self.ssl.unwrap_or(false));
        let host = host.strip_suffix('/').unwrap_or(host);
        let address = Address::parse(host).map_err(|_| {
            ApiError::BadRequest(format!(
                "hostName {host_name:?} is neither an IP address nor a valid host name"
            ))
        })?;

        let port = match self.port {
            None => default_port(ssl),
            Some(p) => u16::try_from(p).ok().filter(|p| *p != 0).ok_or_else(|| {
                ApiError::BadRequest(format!("port must be between 1 and 65535, not {p}"))
            })?,
        };
        let timeout_secs = match self.time_out {
            None => st.maxine_control.heartbeat_timeout(),
            Some(t) => u64::try_from(t)
                .ok()
                .filter(|t| (1..=MAX_TIMEOUT_SECS).contains(t))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "timeOut must be between 1 and {MAX_TIMEOUT_SECS} seconds, not {t}"
                    ))
                })?,
        };
        let weight = match self.weight {
            None => 1,
            Some(w) => u16::try_from(w)
                .ok()
                .filter(|w| (1..=MAX_WEIGHT as u16).contains(w))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "weight must be between 1 and {MAX_WEIGHT}, not {w}"
                    ))
                })?,
        };
        let path = normalize_path(self.path.as_deref())?;
        let health_check_path = health_check_path(self.health_check_path)?;

        let service = ServiceName::new(&label_of(
            "serviceName",
            service_name,
            ServiceName::MAX_LEN,
        )?)?;
        let id = InstanceId::new(&label_of("nodeName", node_name, InstanceId::MAX_LEN)?)?;

        let mut spec = InstanceSpec::new(address, port);
        spec.weight = weight;
        if let Some(v) = self.version {
            spec.version = v;
        }
        for (k, v) in self.metadata.unwrap_or_default() {
            // Maxine SDKs send JSON values; strings are kept as they are,
            // anything else in its JSON text.
            let text = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            spec.metadata.insert(k, text);
        }
        if let Some(ns) = self.namespace {
            spec.metadata.insert("namespace".into(), ns);
        }
        spec.ttl = Duration::from_secs(timeout_secs) + EXPIRY_GRACE;
        spec.compat = Some(Box::new(CompatFields {
            service_name: service_name.into(),
            node_name: node_name.into(),
            host_name: host_name.into(),
            ssl,
            path: path.into(),
            health_check_path: health_check_path.into(),
        }));
        spec.validate()
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        Ok(Registration {
            key: ServiceKey::new(st.registry.local_dc().clone(), service),
            id,
            spec,
            timeout_secs,
        })
    }
}

fn default_port(ssl: bool) -> u16 {
    if ssl { 443 } else { 80 }
}

/// True when `inst` already holds exactly what `spec` would register, so a
/// re-post only needs to refresh the TTL.
fn same_registration(inst: &Instance, spec: &InstanceSpec) -> bool {
    inst.address == spec.address
        && inst.port == spec.port
        && inst.weight == spec.weight
        && inst.ttl() == spec.ttl
        && inst.compat == spec.compat
        && inst.version == spec.version
        && inst.tags.iter().eq(&spec.tags)
        && inst.metadata == spec.metadata
}

/// The URL Maxine hands out for an instance: scheme (by `ssl`) `://` host
/// (`:port` unless it is the scheme's default) and the path.
pub fn address_of(inst: &Instance) -> String {
    let (ssl, path) = match &inst.compat {
        Some(c) => (c.ssl, c.path.as_str()),
        None => (false, ""),
    };
    let scheme = if ssl { "https" } else { "http" };
    let host = match &inst.address {
        Address::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
        other => other.to_string(),
    };
    if inst.port == default_port(ssl) {
        format!("{scheme}://{host}{path}")
    } else {
        format!("{scheme}://{host}:{}{path}", inst.port)
    }
}

/// The `timeOut` Maxine would show: the TTL without the half-second grace.
fn timeout_of(inst: &Instance) -> u64 {
    match &inst.compat {
        Some(_) => inst.ttl().saturating_sub(EXPIRY_GRACE).as_secs(),
        None => inst.ttl().as_secs(),
    }
}

/// `POST /api/maxine/serviceops/register`: register, or (re-posted) heartbeat.
pub async fn register(
    State(st): State<HttpState>,
    caller: Caller,
    body: Result<ApiJson<RegisterBody>, ApiError>,
) -> Result<Response, MaxineError> {
    let ApiJson(body) = body?;
    let reg = body.validate(&st)?;
    caller.require(
        &st,
        Resource::Service(reg.key.service.as_str()),
        Access::Write,
    )?;
    let current = st
        .registry
        .service(&reg.key)
        .and_then(|s| s.instances.get(&reg.id).cloned());
    // A re-post of the same registration is Maxine's heartbeat: refresh the
    // TTL without a change (and so without rebuilding DNS answers).
    let refreshed = match current {
        Some(inst) if same_registration(&inst, &reg.spec) => {
            super::heartbeat(&st, &reg.key, &reg.id, &caller).await.ok()
        }
        _ => None,
    };
    let inst = match refreshed {
        Some((inst, _)) => inst,
        None => {
            let change = Change::Register {
                key: reg.key.clone(),
                id: reg.id.clone(),
                spec: reg.spec,
            };
            let applied = propose(&st, change, &caller).await?;
            applied_value(&applied).ok_or_else(|| {
                ApiError::Internal("a registration applied without a value".into())
            })?
        }
    };
    let compat = inst.compat.as_ref().ok_or_else(|| {
        ApiError::Internal("a Maxine registration was stored without its names".into())
    })?;
    let names = dns_names(&st, &inst.datacenter, &inst.service);
    let body = json!({
        "hostName": compat.host_name,
        "nodeName": compat.node_name,
        "serviceName": compat.service_name,
        "timeOut": reg.timeout_secs,
        "weight": inst.weight,
        "address": address_of(&inst),
        "healthCheckPath": compat.health_check_path,
        "registeredAt": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        "dnsName": names.name,
    });
    Ok(indexed(st.registry.index(), Json(body)))
}

/// Query of `GET /api/maxine/serviceops/discover`. Other parameters that
/// newer SDKs send are ignored, as Maxine ignores what it does not know.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct DiscoverQuery {
    service_name: Option<String>,
    end_point: Option<String>,
    /// A datacenter (federation): its instances only; unset: the local
    /// ones, failing over like the local DNS names when there are none.
    dc: Option<String>,
    /// Maxine's server selection strategy: `RR` (round robin), `CH`
    /// (consistent hashing) or `RH` (rendezvous hashing), both of which are
    /// `sticky` by the client's address here; or a native strategy name.
    /// Absent or unknown: the service's own strategy.
    strategy: Option<String>,
}

/// The strategy a Maxine `strategy` parameter names.
fn maxine_strategy(s: &str) -> Option<Strategy> {
    match s {
        "RR" | "rr" => Some(Strategy::RoundRobin),
        "CH" | "ch" | "RH" | "rh" => Some(Strategy::Sticky),
        other => Strategy::parse(other),
    }
}

/// `GET /api/maxine/serviceops/discover`: 302 to the instance the service's
/// strategy picks (or the `strategy` parameter's).
pub async fn discover(
    State(st): State<HttpState>,
    caller: Caller,
    query: Result<ApiQuery<DiscoverQuery>, ApiError>,
) -> Result<Response, MaxineError> {
    let peer = caller.client();
    let ApiQuery(q) = query?;
    let Some(service_name) = q.service_name.filter(|s| !s.is_empty()) else {
        return Err(ApiError::BadRequest(MSG_DISCOVER_MISSING_DATA.into()).into());
    };
    let unavailable = || MaxineError(ApiError::Unavailable(MSG_SERVICE_UNAVAILABLE.into()));
    // A name that cannot be a DNS label cannot have been registered.
    let service = normalize_label(&service_name, ServiceName::MAX_LEN)
        .and_then(|l| ServiceName::new(&l).ok())
        .ok_or_else(unavailable)?;
    caller.require(&st, Resource::Service(service.as_str()), Access::Read)?;
    caller.require_intention(&st, &service)?;
    let dc = match q.dc.as_deref().filter(|d| !d.is_empty()) {
        None => None,
        Some(d) => Some(crate::core::Datacenter::new(d).map_err(ApiError::from)?),
    };
    let query = Query {
        dc,
        service,
        version: None,
        healthy_only: true,
    };
    let ctx = QueryContext::new(peer, Transport::Http);
    // The parameter, else the service's own strategy, else the one set
    // through control/config, else the configuration's default.
    let strategy = q.strategy.as_deref().and_then(maxine_strategy).or_else(|| {
        let key = ServiceKey::new(
            query
                .dc
                .clone()
                .unwrap_or_else(|| st.registry.local_dc().clone()),
            query.service.clone(),
        );
        let own = st.registry.service_config(&key).and_then(|c| c.strategy);
        own.or_else(|| st.maxine_control.strategy().map(|(_, s)| s))
    });
    let picked = match strategy {
        Some(s) => st.registry.pick_by(&query, &ctx, s),
        None => st.registry.pick(&query, &ctx),
    };
    let inst = picked.ok_or_else(unavailable)?;
    let end_point = q.end_point.unwrap_or_default();
    let mut location = address_of(&inst);
    if !end_point.is_empty() {
        if !end_point.starts_with('/') {
            location.push('/');
        }
        location.push_str(&end_point);
    }
    let location = HeaderValue::try_from(location).map_err(|_| {
        ApiError::BadRequest(format!(
            "endPoint {end_point:?} has characters that cannot be part of a URL"
        ))
    })?;
    Ok((StatusCode::FOUND, [(header::LOCATION, location)]).into_response())
}

/// `GET /api/maxine/serviceops/servers`: the passing instances of the local
/// datacenter in Maxine's registry shape. Maxine stores a node of weight `w`
/// as `w` sub-nodes `<nodeName>-0` .. `<nodeName>-(w-1)`; so do we here.
/// As in the Node.js Maxine, it needs a signed-in user (or any credential);
/// services the caller may not read are left out.
pub async fn servers(State(st): State<HttpState>, caller: Caller) -> Result<Response, MaxineError> {
    if caller.is_anonymous() {
        return Err(ApiError::Unauthorized("Unauthorized".into()).into());
    }
    let local = st.registry.local_dc().clone();
    let mut out = serde_json::Map::new();
    for snap in st.registry.services() {
        if snap.key.dc != local
            || !caller.may(
                &st,
                Resource::Service(snap.key.service.as_str()),
                Access::Read,
            )
            || !caller.may_discover(&st, &snap.key.service)
        {
            continue;
        }
        let passing: Vec<_> = snap
            .instances
            .values()
            .filter(|i| i.serves(snap.only_passing))
            .collect();
        if passing.is_empty() {
            continue;
        }
        let mut nodes = BTreeMap::new();
        let mut service_name = snap.key.service.to_string();
        for inst in passing {
            let (parent, copies, health_check_path) = match &inst.compat {
                Some(c) => {
                    service_name = c.service_name.to_string();
                    (
                        c.node_name.to_string(),
                        inst.weight,
                        c.health_check_path.as_str(),
                    )
                }
                // Native instances may weigh up to 65535: one node each.
                None => (inst.id.to_string(), 1, ""),
            };
            let address = address_of(inst);
            for i in 0..copies {
                let name = format!("{parent}-{i}");
                nodes.insert(
                    name.clone(),
                    json!({
                        "nodeName": name,
                        "parentNode": parent,
                        "address": address,
                        "timeOut": timeout_of(inst),
                        "healthCheckPath": health_check_path,
                    }),
                );
            }
        }
        let names = dns_names(&st, &snap.key.dc, &snap.key.service);
        out.insert(
            service_name,
            json!({ "offset": 0, "nodes": nodes, "dnsName": names.name }),
        );
    }
    Ok(indexed(st.registry.index(), Json(Value::Object(out))))
}

// ---- control/config ----

/// Maxine's answers per field of `PUT /api/maxine/control/config`.
pub const CONFIG_SUCCESS: &str = "Success";
pub const CONFIG_TYPE_ERROR: &str = "Type Error";
pub const CONFIG_INVALID: &str = "Wrong value Or Invalid value";

/// The settings `PUT /api/maxine/control/config` changes at run time, for
/// this process (as in the Node.js Maxine, they are not saved: a restart
/// starts from the configuration again).
pub struct Control {
    /// The `timeOut` of a Maxine registration that sends none.
    heartbeat_timeout: AtomicU64,
    /// The strategy of discover for a service with no strategy of its own
    /// (its Maxine name, `RR`, `CH` ...); None: the configuration's default.
    strategy: std::sync::Mutex<Option<(&'static str, Strategy)>>,
    /// What `logFormat` reads: the log format the server was started with.
    log_json: bool,
    /// What `port` reads: the API's port.
    port: u16,
}

impl Control {
    pub fn new(log_json: bool, port: u16) -> Self {
        Self {
            heartbeat_timeout: AtomicU64::new(DEFAULT_TIMEOUT_SECS),
            strategy: std::sync::Mutex::new(None),
            log_json,
            port,
        }
    }

    /// The `timeOut` of a registration that sends none, in seconds.
    pub fn heartbeat_timeout(&self) -> u64 {
        self.heartbeat_timeout.load(Ordering::Relaxed)
    }

    /// The discover strategy set through control/config, if any.
    fn strategy(&self) -> Option<(&'static str, Strategy)> {
        *self.strategy.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for Control {
    fn default() -> Self {
        Self::new(false, 0)
    }
}

/// Maxine's server selection strategies that Maxine has: name, code, text.
const SSS: &[(&str, &str, &str, Strategy)] = &[
    ("RR", "0", "Round Robin", Strategy::RoundRobin),
    ("CH", "1", "Consistent Hashing", Strategy::Sticky),
    ("RH", "2", "Rendezvous Hashing", Strategy::Sticky),
    ("RANDOM", "4", "Random", Strategy::Random),
    ("WRR", "5", "Weighted Round Robin", Strategy::Weighted),
    ("STICKY", "11", "Sticky Round Robin", Strategy::Sticky),
];

/// A strategy as Maxine shows it: `{name, code, message}`.
fn sss_view(name: &str, strategy: Strategy) -> Value {
    match SSS.iter().find(|(n, ..)| *n == name) {
        Some((n, code, message, _)) => json!({ "name": n, "code": code, "message": message }),
        // A default with no Maxine name (`nearest`): Maxine's own name.
        None => json!({ "name": strategy.as_str(), "code": null, "message": strategy.as_str() }),
    }
}

/// The Maxine name of a Maxine strategy, from the configuration's default.
fn sss_name_of(strategy: Strategy) -> &'static str {
    SSS.iter()
        .find(|(.., s)| *s == strategy)
        .map_or(strategy.as_str(), |(n, ..)| n)
}

fn config_view(st: &HttpState) -> Value {
    let (name, strategy) = st.maxine_control.strategy().unwrap_or_else(|| {
        let s = st.registry.balancing().strategy;
        (sss_name_of(s), s)
    });
    let log_format = if st.maxine_control.log_json {
        json!({ "name": "JSON", "code": "0", "message": "Jsonified logging" })
    } else {
        json!({ "name": "PLAIN", "code": "1", "message": "Plain logs" })
    };
    json!({
        "logAsync": true,
        "heartBeatTimeout": st.maxine_control.heartbeat_timeout(),
        "logJsonPrettify": false,
        "actuatorEnabled": true,
        "statusMonitorEnabled": false,
        "serverSelectionStrategy": sss_view(name, strategy),
        "logFormat": log_format,
        "port": st.maxine_control.port,
    })
}

/// `GET /api/maxine/control/config`: the settings, in Maxine's shape.
/// Needs operator read.
pub async fn get_config(
    State(st): State<HttpState>,
    caller: Caller,
) -> Result<Response, MaxineError> {
    caller.require(&st, Resource::Operator, Access::Read)?;
    Ok(Json(config_view(&st)).into_response())
}

/// What one accepted field of a PUT changes.
enum Set {
    Timeout(u64),
    Strategy(&'static str, Strategy),
}

/// `PUT /api/maxine/control/config`: changes the fields it names and
/// answers each with Maxine's status text; fields it does not know are
/// left out of the answer, as in Maxine. Needs operator write. Every
/// change is in the audit log before it takes effect.
pub async fn put_config(
    State(st): State<HttpState>,
    caller: Caller,
    body: Result<ApiJson<Value>, ApiError>,
) -> Result<Response, MaxineError> {
    caller.require(&st, Resource::Operator, Access::Write)?;
    let ApiJson(body) = body?;
    let Value::Object(fields) = body else {
        return Err(ApiError::BadRequest("the body must be a JSON object".into()).into());
    };
    let mut answer = serde_json::Map::new();
    let mut sets = Vec::new();
    for (field, value) in &fields {
        let status = match field.as_str() {
            // Accepted and ignored: Maxine writes its logs as they come,
            // in the format it was started with.
            "logAsync" | "logJsonPrettify" => match value {
                Value::Bool(_) => CONFIG_SUCCESS,
                _ => CONFIG_TYPE_ERROR,
            },
            "heartBeatTimeout" => match whole_number(value) {
                None => CONFIG_TYPE_ERROR,
                Some(t) if t < 1 || t > MAX_TIMEOUT_SECS as i128 => CONFIG_INVALID,
                Some(t) => {
                    sets.push(Set::Timeout(t as u64));
                    CONFIG_SUCCESS
                }
            },
            "serverSelectionStrategy" => match value
                .as_str()
                .and_then(|v| SSS.iter().find(|(n, ..)| *n == v))
            {
                Some((name, .., strategy)) => {
                    sets.push(Set::Strategy(name, *strategy));
                    CONFIG_SUCCESS
                }
                None => CONFIG_INVALID,
            },
            // The log format is chosen at start (`log.format`): only the
            // one in use is a right value.
            "logFormat" => match (value.as_str(), st.maxine_control.log_json) {
                (Some("JSON"), true) | (Some("PLAIN"), false) => CONFIG_SUCCESS,
                _ => CONFIG_INVALID,
            },
            _ => continue,
        };
        answer.insert(field.clone(), status.into());
    }
    audit_sets(&st, &caller, &sets).await?;
    let control = &st.maxine_control;
    for set in sets {
        match set {
            Set::Timeout(t) => control.heartbeat_timeout.store(t, Ordering::Relaxed),
            Set::Strategy(name, s) => {
                *control.strategy.lock().unwrap_or_else(|e| e.into_inner()) = Some((name, s));
            }
        }
    }
    let answer = Value::Object(answer);
    tracing::info!(%answer, "control/config");
    Ok(Json(answer).into_response())
}

/// A JSON whole number (`5` or `5.0`, as JavaScript's `Number.isInteger`).
fn whole_number(v: &Value) -> Option<i128> {
    if let Some(i) = v.as_i64() {
        return Some(i.into());
    }
    if let Some(u) = v.as_u64() {
        return Some(u.into());
    }
    v.as_f64()
        .filter(|f| f.fract() == 0.0 && f.abs() < 1e18)
        .map(|f| f as i128)
}

/// Records the changes in the audit log (fsynced) before they are made;
/// a log that cannot be written refuses the request with 503.
async fn audit_sets(st: &HttpState, caller: &Caller, sets: &[Set]) -> Result<(), ApiError> {
    let Some(audit) = st.auth.audit.clone() else {
        return Ok(());
    };
    if sets.is_empty() {
        return Ok(());
    }
    let now = super::auth::unix_ms();
    let control = &st.maxine_control;
    let records: Vec<_> = sets
        .iter()
        .map(|set| {
            let (field, detail) = match set {
                Set::Timeout(t) => (
                    "heartBeatTimeout",
                    format!("{} -> {t}", control.heartbeat_timeout()),
                ),
                Set::Strategy(name, s) => (
                    "serverSelectionStrategy",
                    format!("{name} ({})", s.as_str()),
                ),
            };
            crate::audit::Record {
                time_ms: now,
                index: None,
                actor: caller.actor.name(),
                client: caller.client().map(|c| c.to_string()),
                action: "maxine.config.set".into(),
                resource: format!("maxine-config:{field}"),
                outcome: "ok".into(),
                detail: Some(detail),
            }
        })
        .collect();
    tokio::task::spawn_blocking(move || audit.append(records))
        .await
        .map_err(|e| ApiError::Internal(format!("the audit writer failed: {e}")))?
        .map_err(|e| {
            tracing::warn!(%e, "could not record a control/config change in the audit log");
            ApiError::Unavailable("the audit log cannot be written; nothing was changed".into())
        })
}
