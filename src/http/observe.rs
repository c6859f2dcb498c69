//! The layer every route of the route table runs in: it counts and times the
//! request ([`HttpMetrics`]), adds [`INDEX_HEADER`] to the answers of
//! registry routes, and (with tracing on) runs the handler in a span that is
//! a child of the caller's `traceparent`.
//!
//! One hand-written service instead of three `from_fn` layers: those box
//! a future and clone the rest of the stack each, per request, which a
//! heartbeat at 50,000/s notices (docs/performance.md, "Heartbeats").

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::Response;

use super::INDEX_HEADER;
use crate::core::Registry;
use crate::telemetry::metrics::HttpMetrics;

/// What the layer of one route knows.
struct RouteInfo {
    /// The route table's path (`/v1/services/{service}`): a bounded label.
    route: &'static str,
    metrics: HttpMetrics,
    /// Set on registry routes: their answers carry the current index
    /// unless the handler set a more precise one.
    index: Option<Registry>,
    /// Whether requests get a span.
    traces: bool,
}

/// The layer of one route.
pub fn layer(
    route: &'static str,
    metrics: HttpMetrics,
    index: Option<Registry>,
    traces: bool,
) -> tower_layer::LayerFn<impl Fn(axum::routing::Route) -> Observe<axum::routing::Route> + Clone> {
    let info = Arc::new(RouteInfo {
        route,
        metrics,
        index,
        traces,
    });
    tower_layer::layer_fn(move |inner| Observe {
        inner,
        info: info.clone(),
    })
}

/// A route's handler, observed.
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    info: Arc<RouteInfo>,
}

impl<S> tower_service::Service<Request> for Observe<S>
where
    S: tower_service::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Observed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let started = Instant::now();
        let method = req.method().clone();
        let (span, inner) = if self.info.traces {
            let span = crate::telemetry::traces::request_span(
                req.method(),
                self.info.route,
                req.headers(),
            );
            let inner = span.in_scope(|| self.inner.call(req));
            (Some(span), inner)
        } else {
            (None, self.inner.call(req))
        };
        Observed {
            inner,
            info: self.info.clone(),
            started,
            method,
            span,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of an observed request.
    pub struct Observed<F> {
        #[pin]
        inner: F,
        info: Arc<RouteInfo>,
        started: Instant,
        method: axum::http::Method,
        span: Option<tracing::Span>,
    }
}

impl<F> Future for Observed<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let entered = this.span.as_ref().map(|s| s.enter());
        let Ok(mut res) = ready!(this.inner.poll(cx));
        drop(entered);
        if let Some(registry) = &this.info.index {
            res.headers_mut()
                .entry(INDEX_HEADER)
                .or_insert_with(|| HeaderValue::from(registry.index()));
        }
        this.info.metrics.observe(
            this.info.route,
            this.method,
            res.status().as_u16(),
            *this.started,
        );
        if let Some(span) = this.span {
            crate::telemetry::traces::finish_request(span, res.status(), res.headers_mut());
        }
        Poll::Ready(Ok(res))
    }
}
