//! Traces: spans of API requests and registry writes, exported over
//! OTLP/HTTP (protobuf) when `telemetry.otlp_endpoint` is set
//! (docs/operations.md#tracing).
//!
//! ```text
//!   traceparent (W3C) --extract--> http.request span --child--> registry.write span
//!   response <--inject traceparent--'
//!   spans --tracing-opentelemetry layer--> batch processor --OTLP/HTTP--> collector
//! ```
//!
//! The spans are `tracing` spans of target [`TARGET`] at TRACE level: only
//! the exporting layer asks for them (the log's filter applies to the log's
//! layers alone), so with tracing off their call sites are disabled and
//! cost a load and a branch. The HTTP middleware itself is installed only
//! when tracing is on.

use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of every exported span.
pub const TARGET: &str = "maxine::traces";

/// The exporter, kept to flush the last spans at shutdown.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// An exporter to `url` (the full traces URL, `.../v1/traces`), sending
    /// a batch at least every `interval`.
    pub fn new(url: &str, interval: Duration) -> anyhow::Result<Self> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url)
            .with_timeout(Duration::from_secs(10))
            .build()?;
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(interval)
                    .with_max_queue_size(8192)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("maxine")
                    .build(),
            )
            .build();
        Ok(Self { provider })
    }

    /// The layer that turns the spans of [`TARGET`] into exported spans
    /// (filtered to them: log lines do not become span events elsewhere).
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + Send + Sync + 'static
    where
        S: tracing::Subscriber + Send + Sync + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        use tracing_subscriber::Layer as _;
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("maxine"))
            .with_tracked_inactivity(false)
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target(TARGET, tracing::Level::TRACE),
            )
    }

    /// Exports what is left (blocking; call off the async runtime).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "exporting the last spans failed");
        }
    }
}

/// The span of one API request, whose parent is the caller's `traceparent`
/// (if any).
pub fn request_span(
    method: &axum::http::Method,
    route: &str,
    headers: &axum::http::HeaderMap,
) -> tracing::Span {
    let span = tracing::span!(
        target: TARGET,
        tracing::Level::TRACE,
        "http.request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    let _ = span.set_parent(parent);
    span
}

/// Records the status on `span`, and writes its `traceparent` into the
/// response's headers.
pub fn finish_request(
    span: &tracing::Span,
    status: axum::http::StatusCode,
    headers: &mut axum::http::HeaderMap,
) {
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeadersMut(headers));
}

/// The span of one registry write: a proposal and its commit.
pub fn write_span(changes: usize) -> tracing::Span {
    tracing::span!(
        target: TARGET,
        tracing::Level::TRACE,
        "registry.write",
        otel.kind = "internal",
        changes,
        index = tracing::field::Empty,
        error = tracing::field::Empty,
    )
}

struct Headers<'a>(&'a axum::http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeadersMut<'a>(&'a mut axum::http::HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(key.as_bytes()),
            axum::http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
