//! Health check definitions on the wire: the `checks` of a native
//! registration, `PUT`/`DELETE /v1/services/{service}/instances/{id}/checks/{name}`,
//! and how a listing shows each check with its status and last output.
//! Bounds are checked by the core ([`CheckSpec::validate`]); this module
//! only turns JSON into definitions, with a 400 for anything malformed.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;

use super::auth::Caller;
use super::error::{ApiError, ApiJson, ApiPath};
use super::native::{names, view};
use super::{HttpState, applied_value, indexed, propose};
use crate::core::check::limits;
use crate::core::{Access, Change, CheckKind, CheckName, CheckSpec, Health, Instance, ServiceKey};
use crate::policy::Resource;

/// One check as a registration or `PUT .../checks/{name}` gives it: one
/// of `http`, `tcp`, `grpc` or `args` (a script) says the kind.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct CheckBody {
    /// DNS label; required in a registration's `checks`, and equal to the
    /// path's in a `PUT` (where it may be left out).
    #[serde(default)]
    name: Option<String>,
    /// `http://` or `https://` URL: an HTTP check.
    #[serde(default)]
    http: Option<String>,
    /// HTTP method, default `GET`.
    #[serde(default)]
    method: Option<String>,
    /// Request headers of an HTTP check.
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    /// `ip:port`: a TCP check.
    #[serde(default)]
    tcp: Option<String>,
    /// `ip:port`: a gRPC health check.
    #[serde(default)]
    grpc: Option<String>,
    /// The service a gRPC check asks about ("" or none: the server).
    #[serde(default)]
    grpc_service: Option<String>,
    /// argv of a script check (no shell).
    #[serde(default)]
    args: Option<Vec<String>>,
    /// Refused with an explanation: the `ttl` check is implicit.
    #[serde(default)]
    ttl: Option<serde_json::Value>,
    #[serde(default)]
    interval: Option<Seconds>,
    #[serde(default)]
    timeout: Option<Seconds>,
    #[serde(default)]
    success_before_passing: Option<i64>,
    #[serde(default)]
    failures_before_critical: Option<i64>,
    #[serde(default)]
    deregister_critical_after: Option<Seconds>,
}

/// A duration field: a number of seconds or a duration such as `"10s"`.
#[derive(Debug, Clone, Copy)]
pub struct Seconds(Duration);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of seconds or a duration such as \"10s\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Seconds, E> {
                Ok(Seconds(Duration::from_secs(v.min(u32::MAX as u64))))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Seconds, E> {
                u64::try_from(v)
                    .map(|v| Seconds(Duration::from_secs(v.min(u32::MAX as u64))))
                    .map_err(|_| E::custom(format!("a duration must not be negative, got {v}")))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Seconds, E> {
                Duration::try_from_secs_f64(v)
                    .ok()
                    .filter(|d| d.as_secs() <= u32::MAX as u64)
                    .map(Seconds)
                    .ok_or_else(|| E::custom(format!("{v} is not a valid number of seconds")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Seconds, E> {
                super::native::seconds_or_duration(v)
                    .map(Seconds)
                    .map_err(|e| E::custom(format!("{v:?} is not a duration such as \"10s\": {e}")))
            }
        }
        d.deserialize_any(V)
    }
}

fn bad(msg: String) -> ApiError {
    ApiError::BadRequest(msg)
}

fn target(field: &str, raw: &str) -> Result<std::net::SocketAddr, ApiError> {
    raw.parse().map_err(|_| {
        bad(format!(
            "{field} {raw:?} must be an IP address and port, such as \"127.0.0.1:8080\" or \"[::1]:8080\""
        ))
    })
}

fn threshold(field: &str, n: Option<i64>) -> Result<u32, ApiError> {
    match n {
        None => Ok(1),
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|n| (1..=limits::MAX_THRESHOLD).contains(n))
            .ok_or_else(|| {
                bad(format!(
                    "{field} must be between 1 and {}, not {n}",
                    limits::MAX_THRESHOLD
                ))
            }),
    }
}

impl CheckBody {
    /// The definition, named `path_name` (a `PUT`) or by its own `name`.
    /// Script checks need `scripts` (`--enable-script-checks`).
    pub fn into_spec(self, path_name: Option<&str>, scripts: bool) -> Result<CheckSpec, ApiError> {
        let name = match (path_name, self.name.as_deref()) {
            (Some(p), Some(n)) if !p.eq_ignore_ascii_case(n) => {
                return Err(bad(format!(
                    "the check's name {n:?} is not the one of its path, {p:?}"
                )));
            }
            (Some(p), _) => p,
            (None, Some(n)) => n,
            (None, None) => return Err(bad("every check needs a name".into())),
        };
        let name = CheckName::new(name)?;
        if self.ttl.is_some() {
            return Err(bad(format!(
                "check {:?}: the ttl check is implicit: every instance has one, with the registration's ttl",
                name.as_str()
            )));
        }
        let given = [
            self.http.is_some(),
            self.tcp.is_some(),
            self.grpc.is_some(),
            self.args.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(bad(format!(
                "check {:?} must have exactly one of http, tcp, grpc or args",
                name.as_str()
            )));
        }
        let http_only = self.method.is_some() || self.headers.is_some();
        if http_only && self.http.is_none() {
            return Err(bad(format!(
                "check {:?}: method and headers are for http checks",
                name.as_str()
            )));
        }
        if self.grpc_service.is_some() && self.grpc.is_none() {
            return Err(bad(format!(
                "check {:?}: grpc_service is for grpc checks",
                name.as_str()
            )));
        }
        let kind = if let Some(url) = self.http {
            let parsed = reqwest::Url::parse(&url)
                .map_err(|e| bad(format!("http {url:?} is not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                return Err(bad(format!(
                    "http {url:?} must be an http:// or https:// URL with a host"
                )));
            }
            let headers = self.headers.unwrap_or_default();
            if headers.len() > limits::MAX_HEADERS {
                return Err(bad(format!("at most {} headers", limits::MAX_HEADERS)));
            }
            CheckKind::Http {
                url: url.into(),
                method: self.method.unwrap_or_else(|| "GET".into()).into(),
                headers: headers
                    .into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            }
        } else if let Some(t) = self.tcp {
            CheckKind::Tcp {
                target: target("tcp", &t)?,
            }
        } else if let Some(t) = self.grpc {
            CheckKind::Grpc {
                target: target("grpc", &t)?,
                service: self.grpc_service.unwrap_or_default().into(),
            }
        } else {
            if !scripts {
                return Err(bad(format!(
                    "check {:?}: script checks are disabled: Maxine runs them only when started with --enable-script-checks",
                    name.as_str()
                )));
            }
            let args = self.args.unwrap_or_default();
            if args.len() > limits::MAX_ARGS {
                return Err(bad(format!("args: at most {} arguments", limits::MAX_ARGS)));
            }
            CheckKind::Script {
                args: args.into_iter().map(Into::into).collect(),
            }
        };
        let mut spec = CheckSpec::new(name, kind);
        if let Some(Seconds(i)) = self.interval {
            spec.interval = i;
        }
        spec.timeout = match self.timeout {
            Some(Seconds(t)) => t,
            None => limits::DEFAULT_TIMEOUT.min(spec.interval),
        };
        spec.success_before_passing =
            threshold("success_before_passing", self.success_before_passing)?;
        spec.failures_before_critical =
            threshold("failures_before_critical", self.failures_before_critical)?;
        spec.deregister_critical_after = self.deregister_critical_after.map(|Seconds(d)| d);
        spec.validate().map_err(|e| bad(e.to_string()))?;
        Ok(spec)
    }
}

/// The checks of a registration body.
pub fn specs(bodies: Option<Vec<CheckBody>>, scripts: bool) -> Result<Vec<CheckSpec>, ApiError> {
    let bodies = bodies.unwrap_or_default();
    if bodies.len() > limits::MAX_CHECKS {
        return Err(bad(format!(
            "at most {} checks per instance",
            limits::MAX_CHECKS
        )));
    }
    bodies
        .into_iter()
        .map(|b| b.into_spec(None, scripts))
        .collect()
}

/// One check as a listing shows it.
#[derive(Serialize)]
pub struct CheckView<'a> {
    name: &'a str,
    kind: &'static str,
    /// Its status in this value of the instance.
    status: Health,
    /// What it looks at (`http`, `tcp`, ...).
    #[serde(flatten)]
    target: serde_json::Value,
    /// Seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    success_before_passing: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failures_before_critical: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deregister_critical_after: Option<f64>,
    /// What the latest run said (at most 4 KiB), and when it finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checked_at: Option<String>,
}

/// The checks defined for an instance, in name order, as its view shows
/// them after its implicit `ttl` check (written with the view, in
/// `instance_view.rs`). Header values are not shown (they may hold secrets).
pub fn defined_views(instance: &Instance) -> impl Iterator<Item = CheckView<'_>> {
    instance.checks.iter().map(|e| {
        let spec = &e.check.spec;
        let target = match &spec.kind {
            CheckKind::Http {
                url,
                method,
                headers,
            } => json!({
                "http": url,
                "method": method,
                "headers": headers.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            }),
            CheckKind::Tcp { target } => json!({ "tcp": target.to_string() }),
            CheckKind::Grpc { target, service } => {
                json!({ "grpc": target.to_string(), "grpc_service": service })
            }
            CheckKind::Script { args } => json!({ "args": args }),
        };
        let last = e.check.last();
        CheckView {
            name: spec.name.as_str(),
            kind: spec.kind.as_str(),
            status: e.status,
            target,
            interval: Some(spec.interval.as_secs_f64()),
            timeout: Some(spec.timeout.as_secs_f64()),
            success_before_passing: Some(spec.success_before_passing),
            failures_before_critical: Some(spec.failures_before_critical),
            deregister_critical_after: spec.deregister_critical_after.map(|d| d.as_secs_f64()),
            output: last.as_ref().map(|r| r.output.to_string()),
            checked_at: last.map(|r| super::acl::rfc3339(r.at_ms)),
        }
    })
}

/// `PUT /v1/services/{service}/instances/{id}/checks/{name}`: defines or
/// replaces one check; answers with the instance.
pub async fn put_check(
    State(st): State<HttpState>,
    ApiPath((service, id, name)): ApiPath<(String, String, String)>,
    caller: Caller,
    ApiJson(body): ApiJson<CheckBody>,
) -> Result<Response, ApiError> {
    let (service, id) = names(&service, &id)?;
    caller.require(&st, Resource::Service(service.as_str()), Access::Write)?;
    let name = CheckName::new(&name)?;
    let spec = body.into_spec(Some(name.as_str()), st.script_checks)?;
    let key = ServiceKey::new(st.registry.local_dc().clone(), service);
    let change = Change::SetCheck {
        key,
        id,
        name,
        spec: Some(Box::new(spec)),
    };
    let applied = propose(&st, change, &caller).await?;
    let inst = applied_value(&applied)
        .ok_or_else(|| ApiError::Internal("a check applied without a value".into()))?;
    Ok(indexed(inst.index, view(&st, &inst)))
}

/// `DELETE /v1/services/{service}/instances/{id}/checks/{name}`.
pub async fn delete_check(
    State(st): State<HttpState>,
    ApiPath((service, id, name)): ApiPath<(String, String, String)>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let (service, id) = names(&service, &id)?;
    caller.require(&st, Resource::Service(service.as_str()), Access::Write)?;
    let name = CheckName::new(&name)?;
    let key = ServiceKey::new(st.registry.local_dc().clone(), service);
    let change = Change::SetCheck {
        key,
        id,
        name,
        spec: None,
    };
    let applied = propose(&st, change, &caller).await?;
    let inst = applied_value(&applied)
        .ok_or_else(|| ApiError::Internal("a check removal applied without a value".into()))?;
    Ok(indexed(inst.index, view(&st, &inst)))
}
