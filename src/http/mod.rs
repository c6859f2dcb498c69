//! HTTP API (axum): the native `/v1` API and the Maxine-compatible API
//! (`/api/maxine/...`, `/api/actuator/...`, `/api/logs/...`). Handlers only
//! translate between JSON and the registry; errors map to status codes in
//! one place (`ApiError`).
//!
//! ```text
//!   request -> body limit -> route table (ROUTES) -> extractor -> handler -> registry
//!                  |               |  no route: 404 JSON          |
//!                 413        405 JSON                    ApiError -> status + JSON
//!   registry routes get `X-Maxine-Index` (the registry's change index)
//! ```
//!
//! The web console (`/ui`, [`console`]) is merged beside the route table:
//! static files, not part of the API or its OpenAPI document.
//!
//! Must not import: dns (front ends never call each other), config (app
//! hands over what the API needs in [`HttpState`]).

mod acl;
mod actuator;
pub mod auth;
mod balance;
mod checks;
mod console;
mod error;
mod events;
mod gzip;
mod instance_view;
pub use events::{EncodedChanges, Json as EventsJson};
mod blacklist;
mod federation;
mod hyper_errors;
mod intentions;
mod kv;
mod logs;
mod maxine;
mod metrics;
mod native;
mod objects;
mod observe;
mod openapi;
mod recovery;
mod server;
mod tls;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::extract::{DefaultBodyLimit, OriginalUri};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};

pub use error::{ApiError, MaxineError};
pub use maxine::Control as MaxineControl;
pub use server::{BodyTimeout, Limits, refused_connections, serve};
pub use tls::{TlsError, load_tls};

use crate::core::naming::{NameTarget, render};
use crate::core::{
    Applied, Change, Datacenter, Heartbeat, Instance, InstanceId, Outcome, Registry, ServiceKey,
    ServiceName,
};
use crate::store::{Durable, Log, LogError};
use crate::telemetry::RecentLogs;

/// What the handlers share: a handle whose clone copies one `Arc`. axum
/// clones the state for every request (the handler and each layer that
/// takes `State`), so its size is on the path of every request; the fields
/// are read through `Deref`.
#[derive(Clone)]
pub struct HttpState(Arc<HttpShared>);

impl std::ops::Deref for HttpState {
    type Target = HttpShared;
    fn deref(&self) -> &HttpShared {
        &self.0
    }
}

impl From<HttpShared> for HttpState {
    fn from(shared: HttpShared) -> Self {
        Self(Arc::new(shared))
    }
}

/// The fields of [`HttpState`].
pub struct HttpShared {
    pub registry: Registry,
    /// The DNS zone, e.g. `maxine`, to show DNS names in answers.
    pub domain: String,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Bounds the `GET /v1/snapshot` answers streamed at once.
    pub snapshot_streams: SnapshotStreams,
    /// Set once every listener is up; `/v1/ready` reports it.
    pub ready: Arc<AtomicBool>,
    /// Where every write is proposed: it resolves once the change is
    /// applied and durable.
    pub log: Arc<dyn Log>,
    /// Every applied change: what blocking reads (`?index=N&wait=`) wait on.
    pub feed: crate::events::ChangeFeed,
    /// Where reads that must include everything acknowledged (snapshots)
    /// wait (`Durable::default()`: at once).
    pub durable: Durable,
    /// Credentials, the default policy, allowed hosts, the audit log.
    pub auth: auth::Auth,
    /// The last log lines (`/api/logs/...`).
    pub recent_logs: RecentLogs,
    /// When the API started serving (`/api/actuator/metrics` uptime).
    pub started: tokio::time::Instant,
    /// Peers and the change stream they read (inert without peers).
    pub federation: crate::federation::Federation,
    /// Whether script checks may be defined (`--enable-script-checks`).
    pub script_checks: bool,
    /// Outlier ejection: where `POST /v1/services/{svc}/outcomes` reports go.
    pub outliers: crate::health::outlier::Outliers,
    /// What `GET /metrics` shows.
    pub metrics: crate::telemetry::Metrics,
    /// Requests by route and status, and their latency.
    pub http_metrics: crate::telemetry::metrics::HttpMetrics,
    /// Cancelled when the server stops: event streams end (a stream
    /// would otherwise hold its connection open through the drain).
    pub streams_stop: tokio_util::sync::CancellationToken,
    /// What `/api/maxine/control/config` reads and changes.
    pub maxine_control: MaxineControl,
    /// Spans are exported: each request gets a span (and `traceparent`).
    pub traces: bool,
    /// The latest changes as the event streams send them, encoded once.
    pub encoded_changes: events::EncodedChanges,
    /// The shortest time between two writes to one event stream
    /// (`http.event_write_interval`).
    pub event_write_interval: std::time::Duration,
    /// The latest delivery of the event streams that see everything.
    pub shared_deliveries: events::SharedDeliveries,
    /// Who may find whom: the intentions the discovery routes apply.
    pub askers: crate::askers::Askers,
}

impl HttpState {
    /// The state of an API over `registry` alone: writes applied by its
    /// own sequence with nothing stored (tests, tools). `App` wires the
    /// real log, journal and feed.
    pub fn standalone(
        registry: Registry,
        domain: &str,
        max_body_bytes: usize,
        ready: Arc<AtomicBool>,
    ) -> Self {
        let feed = crate::events::ChangeFeed::new(registry.clone());
        registry.subscribe(Arc::new(feed.clone()));
        let federation = crate::federation::Federation::new(
            registry.clone(),
            feed.clone(),
            Default::default(),
            Default::default(),
        );
        let outliers = crate::health::outlier::Outliers::new(
            registry.clone(),
            crate::core::outlier::OutlierConfig::default(),
        );
        let askers = crate::askers::Askers::new(
            &registry,
            crate::policy::Defaults {
                acl: crate::policy::DefaultPolicy::Allow,
                intentions: crate::policy::DefaultPolicy::Allow,
            },
        );
        registry.subscribe(Arc::new(askers.clone()));
        Self::from(HttpShared {
            askers,
            outliers,
            log: Arc::new(crate::store::LocalLog::new(
                registry.clone(),
                Durable::default(),
                feed.clone(),
            )),
            registry,
            domain: domain.to_string(),
            max_body_bytes,
            snapshot_streams: SnapshotStreams::new(2),
            ready,
            feed,
            durable: Durable::default(),
            auth: auth::Auth::open(),
            recent_logs: RecentLogs::new(crate::telemetry::recent::DEFAULT_LINES),
            started: tokio::time::Instant::now(),
            federation,
            script_checks: false,
            metrics: crate::telemetry::Metrics::default(),
            http_metrics: Default::default(),
            traces: false,
            streams_stop: Default::default(),
            maxine_control: Default::default(),
            encoded_changes: Default::default(),
            event_write_interval: std::time::Duration::ZERO,
            shared_deliveries: Default::default(),
        })
    }
}

/// Places for snapshot streams: each `GET /v1/snapshot` holds one until its
/// body is sent or dropped; with none free the request gets 503. Cloning
/// copies an `Arc`.
#[derive(Clone, Debug)]
pub struct SnapshotStreams(Arc<tokio::sync::Semaphore>);

impl SnapshotStreams {
    /// At most `n` (at least 1) streams at once.
    pub fn new(n: usize) -> Self {
        Self(Arc::new(tokio::sync::Semaphore::new(n.max(1))))
    }

    fn try_take(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.0.clone().try_acquire_owned().ok()
    }
}

/// The change index of the registry after the request, on every response of
/// a route that reads or writes the registry (`?index=` style watching and
/// read-your-writes checks key on it).
pub const INDEX_HEADER: HeaderName = HeaderName::from_static("x-maxine-index");

/// One row of the route table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    pub method: &'static str,
    /// In axum syntax, which is also OpenAPI's (`/v1/services/{service}`).
    pub path: &'static str,
    /// Reads or writes the registry (so answers carry `X-Maxine-Index`).
    pub registry: bool,
}

const fn route(method: &'static str, path: &'static str, registry: bool) -> RouteSpec {
    RouteSpec {
        method,
        path,
        registry,
    }
}

/// The one route table. [`router`] serves exactly these; the OpenAPI document
/// must describe exactly these (tests/api_native.rs checks both ways).
pub const ROUTES: &[RouteSpec] = &[
    route("GET", "/v1/health", false),
    route("GET", "/v1/ready", false),
    route("GET", "/v1/openapi.json", false),
    route("GET", "/metrics", false),
    route("GET", "/v1/services", true),
    route("GET", "/v1/services/{service}", true),
    route("GET", "/v1/events", true),
    route("GET", "/v1/events/ws", true),
    route("GET", "/v1/kv/{*key}", true),
    route("PUT", "/v1/kv/{*key}", true),
    route("DELETE", "/v1/kv/{*key}", true),
    route("PUT", "/v1/services/{service}/instances/{id}", true),
    route("DELETE", "/v1/services/{service}/instances/{id}", true),
    route("GET", "/v1/services/{service}/config", true),
    route("PUT", "/v1/services/{service}/config", true),
    route("POST", "/v1/services/{service}/outcomes", true),
    route(
        "PUT",
        "/v1/services/{service}/instances/{id}/heartbeat",
        true,
    ),
    route(
        "PUT",
        "/v1/services/{service}/instances/{id}/checks/{name}",
        true,
    ),
    route(
        "DELETE",
        "/v1/services/{service}/instances/{id}/checks/{name}",
        true,
    ),
    route("POST", "/api/maxine/serviceops/register", true),
    route("GET", "/api/maxine/serviceops/discover", true),
    route("GET", "/api/maxine/serviceops/servers", true),
    route("GET", "/api/maxine/control/config", false),
    route("PUT", "/api/maxine/control/config", false),
    route("GET", "/api/actuator/health", false),
    route("GET", "/api/actuator/info", false),
    route("GET", "/api/actuator/metrics", false),
    route("GET", "/api/actuator/performance", false),
    route("GET", "/api/logs/download", false),
    route("GET", logs::RECENT_FILE_PATH, false),
    route("GET", "/api/logs/recent", false),
    route("GET", "/api/logs/recent/clear", false),
    route("GET", "/v1/snapshot", true),
    route("POST", "/v1/recovery/ack", false),
    route("POST", "/v1/acl/bootstrap", true),
    route("GET", "/v1/acl/policies", true),
    route("GET", "/v1/acl/policies/{name}", true),
    route("PUT", "/v1/acl/policies/{name}", true),
    route("DELETE", "/v1/acl/policies/{name}", true),
    route("POST", "/v1/acl/tokens", true),
    route("GET", "/v1/acl/tokens", true),
    route("GET", "/v1/acl/tokens/{accessor}", true),
    route("PUT", "/v1/acl/tokens/{accessor}", true),
    route("DELETE", "/v1/acl/tokens/{accessor}", true),
    route("GET", "/v1/acl/token/self", false),
    route("GET", "/v1/acl/dns-clients", true),
    route("GET", "/v1/acl/dns-clients/{name}", true),
    route("PUT", "/v1/acl/dns-clients/{name}", true),
    route("DELETE", "/v1/acl/dns-clients/{name}", true),
    route("GET", "/v1/acl/tsig-keys", true),
    route("GET", "/v1/acl/tsig-keys/{name}", true),
    route("PUT", "/v1/acl/tsig-keys/{name}", true),
    route("DELETE", "/v1/acl/tsig-keys/{name}", true),
    route("GET", "/v1/intentions", true),
    route("GET", "/v1/intentions/{source}/{destination}", true),
    route("PUT", "/v1/intentions/{source}/{destination}", true),
    route("DELETE", "/v1/intentions/{source}/{destination}", true),
    route("GET", "/v1/blacklist", true),
    route("PUT", "/v1/blacklist/services/{service}", true),
    route("DELETE", "/v1/blacklist/services/{service}", true),
    route("PUT", "/v1/blacklist/instances/{service}/{id}", true),
    route("DELETE", "/v1/blacklist/instances/{service}/{id}", true),
    route("PUT", "/v1/blacklist/cidrs/{cidr}", true),
    route("DELETE", "/v1/blacklist/cidrs/{cidr}", true),
    route("GET", "/v1/audit", false),
    route("POST", "/api/maxine/signin", false),
    route("PUT", "/api/maxine/change-password", true),
    route("GET", "/v1/federation/stream", false),
    route("GET", "/v1/datacenters", true),
    route("PUT", "/v1/services/{service}/failover", true),
];

/// The handler of a row of [`ROUTES`].
fn handler_of(r: &RouteSpec) -> MethodRouter<HttpState> {
    let filter = MethodFilter::try_from(Method::from_bytes(r.method.as_bytes()).expect("method"))
        .expect("a method axum can route");
    match (r.method, r.path) {
        ("GET", "/v1/health") => on(filter, native::health),
        ("GET", "/v1/ready") => on(filter, native::ready),
        ("GET", "/v1/openapi.json") => on(filter, native::openapi),
        ("GET", "/metrics") => on(filter, metrics::scrape),
        ("GET", "/v1/services") => on(filter, native::list_services),
        ("GET", "/v1/services/{service}") => on(filter, native::get_service),
        ("GET", "/v1/events") => on(filter, events::sse),
        ("GET", "/v1/events/ws") => on(filter, events::ws),
        ("GET", "/v1/kv/{*key}") => on(filter, kv::get),
        // Values may be larger than other bodies (up to 512 KiB).
        ("PUT", "/v1/kv/{*key}") => {
            on(filter, kv::put).layer(DefaultBodyLimit::max(crate::core::kv::MAX_VALUE_BYTES + 1))
        }
        ("DELETE", "/v1/kv/{*key}") => on(filter, kv::delete),
        ("PUT", "/v1/services/{service}/instances/{id}") => on(filter, native::register),
        ("DELETE", "/v1/services/{service}/instances/{id}") => on(filter, native::deregister),
        ("PUT", "/v1/services/{service}/instances/{id}/heartbeat") => on(filter, native::heartbeat),
        ("PUT", "/v1/services/{service}/instances/{id}/checks/{name}") => {
            on(filter, checks::put_check)
        }
        ("DELETE", "/v1/services/{service}/instances/{id}/checks/{name}") => {
            on(filter, checks::delete_check)
        }
        ("GET", "/v1/services/{service}/config") => on(filter, balance::get_config),
        ("PUT", "/v1/services/{service}/config") => on(filter, balance::put_config),
        ("POST", "/v1/services/{service}/outcomes") => on(filter, balance::report_outcomes),
        ("POST", "/api/maxine/serviceops/register") => on(filter, maxine::register),
        ("GET", "/api/maxine/serviceops/discover") => on(filter, maxine::discover),
        ("GET", "/api/maxine/serviceops/servers") => on(filter, maxine::servers),
        ("GET", "/api/maxine/control/config") => on(filter, maxine::get_config),
        ("PUT", "/api/maxine/control/config") => on(filter, maxine::put_config),
        ("GET", "/api/actuator/health") => on(filter, actuator::health),
        ("GET", "/api/actuator/info") => on(filter, actuator::info),
        ("GET", "/api/actuator/metrics") => on(filter, actuator::metrics),
        ("GET", "/api/actuator/performance") => on(filter, actuator::performance),
        ("GET", "/api/logs/download") => on(filter, logs::files),
        ("GET", logs::RECENT_FILE_PATH) => on(filter, logs::download),
        ("GET", "/api/logs/recent") => on(filter, logs::recent),
        ("GET", "/api/logs/recent/clear") => on(filter, logs::clear),
        ("GET", "/v1/snapshot") => on(filter, native::snapshot),
        ("POST", "/v1/recovery/ack") => on(filter, recovery::ack),
        ("POST", "/v1/acl/bootstrap") => on(filter, acl::bootstrap),
        ("GET", "/v1/acl/policies") => on(filter, acl::list_policies),
        ("GET", "/v1/acl/policies/{name}") => on(filter, acl::get_policy),
        ("PUT", "/v1/acl/policies/{name}") => on(filter, acl::put_policy),
        ("DELETE", "/v1/acl/policies/{name}") => on(filter, acl::delete_policy),
        ("POST", "/v1/acl/tokens") => on(filter, acl::create_token),
        ("GET", "/v1/acl/tokens") => on(filter, acl::list_tokens),
        ("GET", "/v1/acl/tokens/{accessor}") => on(filter, acl::get_token),
        ("PUT", "/v1/acl/tokens/{accessor}") => on(filter, acl::update_token),
        ("DELETE", "/v1/acl/tokens/{accessor}") => on(filter, acl::delete_token),
        ("GET", "/v1/acl/token/self") => on(filter, acl::token_self),
        ("GET", "/v1/acl/dns-clients") => on(filter, intentions::list_dns_clients),
        ("GET", "/v1/acl/dns-clients/{name}") => on(filter, intentions::get_dns_client),
        ("PUT", "/v1/acl/dns-clients/{name}") => on(filter, intentions::put_dns_client),
        ("DELETE", "/v1/acl/dns-clients/{name}") => on(filter, intentions::delete_dns_client),
        ("GET", "/v1/acl/tsig-keys") => on(filter, intentions::list_tsig_keys),
        ("GET", "/v1/acl/tsig-keys/{name}") => on(filter, intentions::get_tsig_key),
        ("PUT", "/v1/acl/tsig-keys/{name}") => on(filter, intentions::put_tsig_key),
        ("DELETE", "/v1/acl/tsig-keys/{name}") => on(filter, intentions::delete_tsig_key),
        ("GET", "/v1/intentions") => on(filter, intentions::list),
        ("GET", "/v1/intentions/{source}/{destination}") => on(filter, intentions::get),
        ("PUT", "/v1/intentions/{source}/{destination}") => on(filter, intentions::put),
        ("DELETE", "/v1/intentions/{source}/{destination}") => on(filter, intentions::delete),
        ("GET", "/v1/blacklist") => on(filter, blacklist::list),
        ("PUT", "/v1/blacklist/services/{service}") => on(filter, blacklist::put_service),
        ("DELETE", "/v1/blacklist/services/{service}") => on(filter, blacklist::delete_service),
        ("PUT", "/v1/blacklist/instances/{service}/{id}") => on(filter, blacklist::put_instance),
        ("DELETE", "/v1/blacklist/instances/{service}/{id}") => {
            on(filter, blacklist::delete_instance)
        }
        ("PUT", "/v1/blacklist/cidrs/{cidr}") => on(filter, blacklist::put_cidr),
        ("DELETE", "/v1/blacklist/cidrs/{cidr}") => on(filter, blacklist::delete_cidr),
        ("GET", "/v1/audit") => on(filter, acl::audit),
        ("POST", "/api/maxine/signin") => on(filter, acl::signin),
        ("PUT", "/api/maxine/change-password") => on(filter, acl::change_password),
        ("GET", "/v1/federation/stream") => on(filter, federation::stream),
        ("GET", "/v1/datacenters") => on(filter, federation::datacenters),
        ("PUT", "/v1/services/{service}/failover") => on(filter, federation::put_failover),
        (m, p) => unreachable!("route {m} {p} is in ROUTES but has no handler"),
    }
}

/// The API as served: what every request passes first (the host check, the
/// default body limit, the recovery notice), then the route table.
///
/// One service around the router rather than router-wide `layer`s: axum
/// wraps every route in each such layer, and each wrap is a boxed clone
/// of the rest of the stack and a boxed future, per request (heartbeats,
/// docs/performance.md "The API's outer layers, once").
#[derive(Clone)]
pub struct Api {
    routes: axum::Router,
    st: HttpState,
    body_limit: DefaultBodyLimit,
    recovery: Option<crate::store::RecoveryNotice>,
}

impl Api {
    /// The same API, showing `notice` on `/v1/ready` and `/v1/services`
    /// and acknowledging it on `POST /v1/recovery/ack`.
    pub fn with_recovery(mut self, notice: crate::store::RecoveryNotice) -> Self {
        self.recovery = Some(notice);
        self
    }
}

impl tower_service::Service<axum::extract::Request> for Api {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::Either<
        std::future::Ready<Result<Response, std::convert::Infallible>>,
        axum::routing::future::RouteFuture<std::convert::Infallible>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: axum::extract::Request) -> Self::Future {
        use futures_util::future::Either;
        if let Some(refused) = auth::refusal(&self.st, &req) {
            return Either::Left(std::future::ready(Ok(refused)));
        }
        self.body_limit.apply(&mut req);
        if let Some(notice) = &self.recovery {
            req.extensions_mut().insert(notice.clone());
        }
        Either::Right(tower_service::Service::call(&mut self.routes, req))
    }
}

/// Builds the API from [`ROUTES`].
pub fn router(state: HttpState) -> Api {
    let mut router = axum::Router::new();
    for r in ROUTES {
        let handler = handler_of(r).route_layer(observe::layer(
            r.path,
            state.http_metrics.clone(),
            r.registry.then(|| state.registry.clone()),
            state.traces,
        ));
        router = router.route(r.path, handler);
    }
    let routes = router
        .merge(console::routes())
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone());
    Api {
        routes,
        body_limit: DefaultBodyLimit::max(state.max_body_bytes),
        st: state,
        recovery: None,
    }
}

async fn no_route(method: Method, OriginalUri(uri): OriginalUri) -> Response {
    routing_error(
        uri.path(),
        ApiError::NoRoute {
            method: method.to_string(),
            path: uri.path().to_string(),
        },
    )
}

async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> Response {
    routing_error(
        uri.path(),
        ApiError::MethodNotAllowed {
            method: method.to_string(),
            path: uri.path().to_string(),
        },
    )
}

/// Routing errors in the error format of the API the path belongs to.
fn routing_error(path: &str, e: ApiError) -> Response {
    if path.starts_with("/api/") {
        MaxineError(e).into_response()
    } else {
        e.into_response()
    }
}

/// A response with [`INDEX_HEADER`] set to `index`.
fn indexed(index: u64, body: impl IntoResponse) -> Response {
    ([(INDEX_HEADER, HeaderValue::from(index))], body).into_response()
}

/// Waits until the change with `index` is durable (for reads that must
/// hold everything acknowledged, such as snapshots). A store that lost its
/// data is no error but `Ok(Some(why))`: what is in memory is then all
/// there is of the registry.
async fn durable(st: &HttpState, index: u64) -> Result<Option<crate::store::NotSaved>, ApiError> {
    if index == 0 {
        // No change was ever made: there is nothing to wait for (and the
        // store has no outcome to report for index 0).
        return Ok(None);
    }
    match st.durable.wait(index).await {
        Ok(()) => Ok(None),
        Err(why) if why.lost().is_some() => Ok(Some(why)),
        Err(why) => Err(store_unavailable(&why, "try again later")),
    }
}

/// A 503 for a store failure. `why` may name the store's address or path
/// (a Redis host, a file): it goes to the log only, and the client gets a
/// generic reason plus `then`, what to do; or, when the store lost its
/// data, what happened.
fn store_unavailable(why: &crate::store::NotSaved, then: &str) -> ApiError {
    // The journal logs the failure itself (once per interval, with a
    // count): a line per refused request would flood the log in an outage.
    tracing::debug!(%why, "the store is unavailable; answering 503");
    if why.is_unconfirmed() {
        return ApiError::Unavailable(
            "the store did not confirm the change in time (is etcd reachable, with a quorum?); \
             it may still be applied: read it back, or send it again"
                .into(),
        );
    }
    match why.lost() {
        Some(reason) => {
            ApiError::Unavailable(format!("the change was not saved and was undone: {reason}"))
        }
        None => ApiError::Unavailable(format!("the store is unavailable; {then}")),
    }
}

/// Proposes one change through the log on behalf of `caller` and waits
/// until it is applied and durable. A change the store could not take has
/// been undone: the request fails with 503.
async fn propose(
    st: &HttpState,
    change: Change,
    caller: &auth::Caller,
) -> Result<Applied, ApiError> {
    use tracing::Instrument;
    let span = crate::telemetry::traces::write_span(1);
    let applied = st
        .log
        .propose(vec![change], caller.context())
        .instrument(span.clone())
        .await;
    match &applied {
        Ok(a) => span.record("index", a.last_index),
        Err(e) => span.record("error", tracing::field::display(e)),
    };
    applied.map_err(|e| match e {
        LogError::Refused(e) => ApiError::from(e),
        LogError::Unavailable(why) => store_unavailable(
            &why,
            "the change could not be saved and was undone, try again later",
        ),
    })
}

/// The instance value a one-change proposal produced.
fn applied_value(applied: &Applied) -> Option<Arc<Instance>> {
    match applied.outcomes.first() {
        Some((_, Outcome::Applied(v))) => v.clone(),
        _ => None,
    }
}

/// A heartbeat: moves a passing instance's deadline, or revives a critical
/// one through the log. Returns the instance and the index to report.
async fn heartbeat(
    st: &HttpState,
    key: &ServiceKey,
    id: &InstanceId,
    caller: &auth::Caller,
) -> Result<(Arc<Instance>, u64), ApiError> {
    // A revival races other heartbeats of the instance: the loser's change
    // is skipped, and its next look finds the instance passing.
    for _ in 0..3 {
        match st.registry.heartbeat(key, id, now())? {
            Heartbeat::Alive(inst) => return Ok((inst, st.registry.index())),
            Heartbeat::Revive(change) => {
                let applied = propose(st, *change, caller).await?;
                if let Some(inst) = applied_value(&applied) {
                    return Ok((inst, applied.last_index));
                }
            }
        }
    }
    Err(ApiError::Conflict(format!(
        "instance {:?} of {:?} changed while its heartbeat was recorded; try again",
        id.as_str(),
        key.service.as_str()
    )))
}

/// The registry's notion of "now" (tokio's clock, so tests can pause time).
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// The DNS names a service of a datacenter answers to, rendered by the core's
/// naming grammar (the local datacenter is left out of the service names).
/// Made once per service for a listing or a healthy set, not once per
/// instance.
#[derive(Clone)]
pub(crate) struct DnsNames {
    /// `payments.maxine` (`payments.dc2.maxine` for another datacenter).
    name: String,
    /// `_payments._tcp.maxine`.
    srv: String,
    dc: Datacenter,
    service: ServiceName,
    zone: String,
}

impl DnsNames {
    /// `<id>.payments.dc1.maxine`, written where it is shown (the core's
    /// naming of an instance: its id, service and datacenter, then the
    /// zone).
    fn instance_name<'a>(&'a self, id: &'a InstanceId) -> InstanceName<'a> {
        InstanceName { names: self, id }
    }

    fn join(&self, mut labels: Vec<String>) -> String {
        if !self.zone.is_empty() {
            labels.push(self.zone.clone());
        }
        labels.join(".")
    }
}

/// An instance's DNS name, rendered as it is written (see [`DnsNames`]).
struct InstanceName<'a> {
    names: &'a DnsNames,
    id: &'a InstanceId,
}

impl std::fmt::Display for InstanceName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.names;
        for (i, label) in [self.id.as_str(), n.service.as_str(), n.dc.as_str()]
            .into_iter()
            .enumerate()
        {
            if i > 0 {
                f.write_str(".")?;
            }
            f.write_str(label)?;
        }
        if !n.zone.is_empty() {
            f.write_str(".")?;
            f.write_str(&n.zone)?;
        }
        Ok(())
    }
}

pub(crate) fn dns_names(st: &HttpState, dc: &Datacenter, service: &ServiceName) -> DnsNames {
    let dc_part = (dc != st.registry.local_dc()).then(|| dc.clone());
    let mut names = DnsNames {
        name: String::new(),
        srv: String::new(),
        dc: dc.clone(),
        service: service.clone(),
        zone: st.domain.trim_end_matches('.').to_string(),
    };
    let target = |srv_form| NameTarget::Service {
        dc: dc_part.clone(),
        service: service.clone(),
        version: None,
        srv_form,
    };
    names.name = names.join(render(&target(false)));
    names.srv = names.join(render(&target(true)));
    names
}
