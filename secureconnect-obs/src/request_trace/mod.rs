//! W3C trace context for every request, through OpenTelemetry: an incoming
//! `traceparent` is continued, a request without one (or with a malformed one) starts a
//! trace, and every log line of the request carries `trace_id` and `span_id`.
//!
//! [`RequestTraceLayer`] makes the request's span (`request`, with `component`,
//! `request_id`, `http_request_method`, `http_route`, `url_path`, `trace_id`, `span_id`),
//! makes it the child of the incoming `traceparent` (W3C `TraceContextPropagator`), runs
//! the inner service inside it, and logs `request finished` with
//! `http_response_status_code` and `duration_ms`. The span's
//! [`SpanContext`](opentelemetry::trace::SpanContext) goes into the request's extensions
//! (for the metrics layer's exemplars, for handlers, for an `Auditor`) and into the
//! response's (for layers outside it, such as secureconnect-audit's). [`inject`] puts the
//! current context into an outgoing request, so the next service continues the trace.
//!
//! The ids come from the `tracing-opentelemetry` layer of the subscriber, which
//! [`logging::subscriber`](crate::logging::subscriber) installs; without one the span has
//! no trace context and lines carry no `trace_id`. Sampling follows the standard
//! `OTEL_TRACES_SAMPLER` (default `parentbased_always_on`); an unsampled request still
//! has its ids on every line.
//!
//! ```
//! use axum::{routing::get, Router};
//! use secureconnect_obs::{RequestTraceConfig, RequestTraceLayer};
//!
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(RequestTraceLayer::new(RequestTraceConfig::default().component("auth")));
//! ```

mod future;
mod layer;
mod propagation;
mod service;

pub use self::future::ResponseFuture;
pub use self::layer::{RequestTraceConfig, RequestTraceLayer};
pub use self::propagation::{extract, inject};
pub use self::service::RequestTrace;

#[cfg(test)]
mod tests;
