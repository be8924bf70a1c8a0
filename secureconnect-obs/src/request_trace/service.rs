//! [`RequestTrace`]: the middleware that makes each request's span.

use std::task::{Context, Poll};

use http::{Request, Response};
use opentelemetry::trace::TraceContextExt;
use tower_service::Service;
use tracing::field::{display, Empty};
use tracing::{Level, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{RequestTraceConfig, ResponseFuture};

/// Middleware that traces every request; made by
/// [`RequestTraceLayer`](super::RequestTraceLayer), or by [`RequestTrace::new`].
#[derive(Clone, Debug)]
pub struct RequestTrace<S> {
    inner: S,
    config: RequestTraceConfig,
}

impl<S> RequestTrace<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, config: RequestTraceConfig) -> Self {
        Self { inner, config }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// The request's span, a child of its `traceparent`, with its ids recorded.
fn request_span<B>(request: &Request<B>, component: Option<&'static str>) -> Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    #[cfg(feature = "axum")]
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or(crate::RouteLabel::UNMATCHED, |m| m.as_str());
    #[cfg(not(feature = "axum"))]
    let route = crate::RouteLabel::UNMATCHED;
    tracing::span!(
        Level::INFO,
        "request",
        component,
        request_id,
        http_request_method = %request.method(),
        http_route = route,
        url_path = request.uri().path(),
        trace_id = Empty,
        span_id = Empty,
        otel.name = %format_args!("{} {route}", request.method()),
        otel.kind = "server",
    )
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequestTrace<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let span = request_span(&request, self.config.component);
        // Before the span starts: its parent can only be set while it is being built.
        // A span the subscriber disabled, or no OpenTelemetry layer: no trace context.
        let remote = super::extract(request.headers());
        if self.config.continue_remote {
            let _ = span.set_parent(remote);
        } else {
            // `add_link` keeps only a valid context.
            span.add_link(remote.span().span_context().clone());
        }
        let span_context = span.context().span().span_context().clone();
        let span_context = span_context.is_valid().then(|| {
            span.record("trace_id", display(span_context.trace_id()));
            span.record("span_id", display(span_context.span_id()));
            request.extensions_mut().insert(span_context.clone());
            span_context
        });
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        ResponseFuture::new(future, span, span_context)
    }
}
