//! [`RequestTrace`]: the middleware that makes each request's span.

use std::task::{Context, Poll};

use http::{Request, Response};
use opentelemetry::trace::SpanContext;
use opentelemetry::trace::TraceContextExt;
use tower_service::Service;
use tracing::field::{Empty, Value};
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

/// The request's `x-request-id` ("" without one).
fn request_id<B>(request: &Request<B>) -> &str {
    request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The request's route template, as axum matched it.
fn route<B>(request: &Request<B>) -> &str {
    #[cfg(feature = "axum")]
    return request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or(crate::RouteLabel::UNMATCHED, |m| m.as_str());
    #[cfg(not(feature = "axum"))]
    return {
        let _ = request;
        crate::RouteLabel::UNMATCHED
    };
}

/// The request's span. Its fields are only looked at when the span is enabled: a
/// subscriber that filters the span out (level `warn`) costs a level check.
fn request_span<B>(request: &Request<B>, component: Option<&'static str>) -> Span {
    tracing::span!(
        Level::INFO,
        "request",
        component,
        request_id = request_id(request),
        http_request_method = request.method().as_str(),
        http_route = route(request),
        url_path = request.uri().path(),
        trace_id = Empty,
        span_id = Empty,
        otel.name = %format_args!("{} {}", request.method(), route(request)),
        otel.kind = "server",
    )
}

/// Records `trace_id` and `span_id` on `span`, as lowercase hex (W3C `traceparent`
/// spelling), both in one call: every layer of the subscriber looks the span up once.
fn record_ids(span: &Span, context: &SpanContext) {
    let mut trace_hex = [0; 32];
    let mut span_hex = [0; 16];
    let trace_id = hex(&context.trace_id().to_bytes(), &mut trace_hex);
    let span_id = hex(&context.span_id().to_bytes(), &mut span_hex);
    let Some(meta) = span.metadata() else {
        return;
    };
    let fields = meta.fields();
    if let (Some(trace_field), Some(span_field)) =
        (fields.field("trace_id"), fields.field("span_id"))
    {
        span.record_all(&fields.value_set(&[
            (&trace_field, Some(&trace_id as &dyn Value)),
            (&span_field, Some(&span_id as &dyn Value)),
        ]));
    }
}

/// `bytes` as lowercase hex, written into `out` (twice as long).
fn hex<'a>(bytes: &[u8], out: &'a mut [u8]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
    std::str::from_utf8(out).unwrap_or_default()
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
        if span.is_disabled() {
            // No span, so no trace context to find or record.
            return ResponseFuture::new(self.inner.call(request), span, None);
        }
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
            record_ids(&span, &span_context);
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
