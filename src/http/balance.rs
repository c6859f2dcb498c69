//! A service's load-balancing settings (`/v1/services/{service}/config`)
//! and the outcomes clients report about its instances
//! (`/v1/services/{service}/outcomes`). Handlers validate the wire values
//! and hand them on: the registry keeps the settings, the outlier driver
//! decides ejections.

use std::collections::HashSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use crate::core::outlier::Outcome;
use crate::core::{
    Access, AclChange, AclObject, Change, InstanceId, ServiceConfig, ServiceKey, ServiceName,
    Strategy,
};
use crate::policy::Resource;

use super::auth::Caller;
use super::error::{ApiError, ApiJson, ApiPath};
use super::{HttpState, indexed, propose};

/// Body of `PUT /v1/services/{service}/config`: absent or `null` fields
/// follow the configuration's defaults.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ConfigBody {
    /// `round_robin`, `weighted`, `random`, `sticky` or `nearest`.
    #[serde(default)]
    strategy: Option<String>,
    /// Percent, 0 to 100 (wider type so that 300 gets a clear message).
    #[serde(default)]
    panic_threshold: Option<i64>,
}

/// A service's settings as the API shows them.
#[derive(Serialize)]
struct ConfigView {
    service: String,
    datacenter: String,
    /// In effect: the service's own, else the configuration's default.
    strategy: &'static str,
    panic_threshold: u8,
    /// What was set for the service (`null`: the default).
    configured: Configured,
    /// Index of the change that set it (0: never set).
    index: u64,
}

#[derive(Serialize)]
struct Configured {
    strategy: Option<&'static str>,
    panic_threshold: Option<u8>,
}

fn config_view(st: &HttpState, key: &ServiceKey) -> ConfigView {
    let own = st.registry.service_config(key);
    let s = st.registry.settings_of(key);
    ConfigView {
        service: key.service.to_string(),
        datacenter: key.dc.to_string(),
        strategy: s.strategy.as_str(),
        panic_threshold: s.panic_threshold,
        configured: Configured {
            strategy: own.as_ref().and_then(|c| c.strategy).map(Strategy::as_str),
            panic_threshold: own.as_ref().and_then(|c| c.panic_threshold),
        },
        index: own.map_or(0, |c| c.index),
    }
}

fn local_key(st: &HttpState, service: &str) -> Result<ServiceKey, ApiError> {
    Ok(ServiceKey::new(
        st.registry.local_dc().clone(),
        ServiceName::new(service)?,
    ))
}

/// `GET /v1/services/{service}/config`: the settings in effect, also for a
/// service with no instances (yet).
pub async fn get_config(
    State(st): State<HttpState>,
    ApiPath(service): ApiPath<String>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let key = local_key(&st, &service)?;
    caller.require(&st, Resource::Service(key.service.as_str()), Access::Read)?;
    let view = config_view(&st, &key);
    Ok(indexed(st.registry.index(), Json(view)))
}

/// `PUT /v1/services/{service}/config`: sets the service's strategy and
/// panic threshold (journaled; kept while the service has no instances).
pub async fn put_config(
    State(st): State<HttpState>,
    ApiPath(service): ApiPath<String>,
    caller: Caller,
    ApiJson(body): ApiJson<ConfigBody>,
) -> Result<Response, ApiError> {
    let key = local_key(&st, &service)?;
    caller.require(&st, Resource::Service(key.service.as_str()), Access::Write)?;
    let strategy = match body.strategy.as_deref() {
        None => None,
        Some(s) => Some(Strategy::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "strategy {s:?} is not one of {}",
                Strategy::names()
            ))
        })?),
    };
    let panic_threshold = match body.panic_threshold {
        None => None,
        Some(p @ 0..=100) => Some(p as u8),
        Some(p) => {
            return Err(ApiError::BadRequest(format!(
                "panic_threshold must be a percentage from 0 to 100, not {p}"
            )));
        }
    };
    let config = ServiceConfig {
        key: key.clone(),
        strategy,
        panic_threshold,
        index: 0,
    };
    let change = Change::Acl(AclChange::Put(AclObject::Service(Arc::new(config))));
    let index = propose(&st, change, &caller).await?.last_index;
    Ok(indexed(index, Json(config_view(&st, &key))))
}

/// The most entries one outcome report may hold.
pub const MAX_OUTCOMES: usize = 1000;
/// The largest count of successes or failures in one entry.
pub const MAX_COUNT: u64 = 1_000_000;
/// The largest latency one entry may report (an hour, in milliseconds).
pub const MAX_LATENCY_MS: f64 = 3_600_000.0;

/// Body of `POST /v1/services/{service}/outcomes`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct OutcomesBody {
    outcomes: Vec<OutcomeBody>,
}

/// One instance's outcomes since the reporter's last report.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct OutcomeBody {
    id: String,
    #[serde(default)]
    successes: Option<i64>,
    #[serde(default)]
    failures: Option<i64>,
    /// Mean latency of these requests, in milliseconds. Checked, not yet
    /// used for ejection.
    #[serde(default)]
    latency_ms: Option<f64>,
}

/// `POST /v1/services/{service}/outcomes`: a batch of per-instance
/// successes and failures, from clients or gateways; consecutive failures
/// eject an instance from answers (docs/health.md).
pub async fn report_outcomes(
    State(st): State<HttpState>,
    ApiPath(service): ApiPath<String>,
    caller: Caller,
    ApiJson(body): ApiJson<OutcomesBody>,
) -> Result<Response, ApiError> {
    let key = local_key(&st, &service)?;
    caller.require(&st, Resource::Service(key.service.as_str()), Access::Write)?;
    if body.outcomes.is_empty() || body.outcomes.len() > MAX_OUTCOMES {
        return Err(ApiError::BadRequest(format!(
            "outcomes must hold 1 to {MAX_OUTCOMES} entries, not {}",
            body.outcomes.len()
        )));
    }
    let count = |what: &str, v: Option<i64>| -> Result<u32, ApiError> {
        match v {
            None => Ok(0),
            Some(n) if (0..=MAX_COUNT as i64).contains(&n) => Ok(n as u32),
            Some(n) => Err(ApiError::BadRequest(format!(
                "{what} must be between 0 and {MAX_COUNT}, not {n}"
            ))),
        }
    };
    let mut seen = HashSet::new();
    let mut outcomes = Vec::with_capacity(body.outcomes.len());
    for o in body.outcomes {
        let id = InstanceId::new(&o.id)?;
        if !seen.insert(id.clone()) {
            return Err(ApiError::BadRequest(format!(
                "instance {:?} is listed twice; report each instance once per batch",
                o.id
            )));
        }
        if let Some(l) = o.latency_ms
            && !(0.0..=MAX_LATENCY_MS).contains(&l)
        {
            return Err(ApiError::BadRequest(format!(
                "latency_ms must be between 0 and {MAX_LATENCY_MS}, not {l}"
            )));
        }
        outcomes.push(Outcome {
            id,
            successes: count("successes", o.successes)?,
            failures: count("failures", o.failures)?,
        });
    }
    let now = tokio::time::Instant::now().into_std();
    let reported = st.outliers.report(&key, &outcomes, now).ok_or_else(|| {
        ApiError::NotFound(format!(
            "service {:?} has no instances in datacenter {:?}",
            key.service.as_str(),
            key.dc.as_str()
        ))
    })?;
    let index = st.registry.index();
    Ok(indexed(
        index,
        Json(serde_json::json!({
            "index": index,
            "ejected": reported.ejected.iter().map(InstanceId::as_str).collect::<Vec<_>>(),
            "unknown": reported.unknown.iter().map(InstanceId::as_str).collect::<Vec<_>>(),
        })),
    ))
}
