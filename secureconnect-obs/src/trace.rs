//! Request spans and "request finished" lines for tower-http's `TraceLayer`: the
//! request id (set by tower-http's `SetRequestIdLayer`), the route template and the
//! component on every log line of the request, and the duration as a number.
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
//! use tower_http::trace::TraceLayer;
//! use secureconnect_obs::trace::{RequestFinished, RequestSpan};
//!
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     // Layers run bottom-up on the way in: the id is set before the span is made.
//!     .layer(PropagateRequestIdLayer::x_request_id())
//!     .layer(
//!         TraceLayer::new_for_http()
//!             .make_span_with(RequestSpan::default().component("auth"))
//!             .on_response(RequestFinished::default()),
//!     )
//!     .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid));
//! ```

use std::time::Duration;

use http::{Request, Response};
use tower_http::trace::{MakeSpan, OnResponse};
use tracing::{Level, Span};

/// Makes an `INFO` span `request` with the fields `request_id` (the `x-request-id`
/// header), `http_request_method`, `http_route` (axum's matched route, if any),
/// `url_path` and, when set, `component`. The query string is left out: it may carry
/// tokens.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestSpan {
    component: Option<&'static str>,
}

impl RequestSpan {
    /// Names the component that serves the request (`component` on every line of the
    /// request): in a process that runs several services, which one wrote the line.
    #[must_use]
    pub fn component(mut self, name: &'static str) -> Self {
        self.component = Some(name);
        self
    }
}

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &Request<B>) -> Span {
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
            component = self.component,
            request_id,
            http_request_method = %request.method(),
            http_route = route,
            url_path = request.uri().path(),
        )
    }
}

/// Logs `request finished` at `INFO` when the response headers are ready, with
/// `http_response_status_code` and `duration_ms` (a number, milliseconds with
/// microsecond precision, so a LogQL `unwrap duration_ms` can use it).
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestFinished {
    _private: (),
}

impl<B> OnResponse<B> for RequestFinished {
    fn on_response(self, response: &Response<B>, latency: Duration, _span: &Span) {
        finished(response.status().as_u16(), latency);
    }
}

/// The `request finished` line, inside the request's span.
pub(crate) fn finished(status: u16, latency: Duration) {
    tracing::info!(
        http_response_status_code = status,
        duration_ms = duration_ms(latency),
        "request finished"
    );
}

/// The `request failed` line of a service that returned an error, not a response.
pub(crate) fn failed(latency: Duration) {
    tracing::error!(duration_ms = duration_ms(latency), "request failed");
}

/// `latency` in milliseconds, rounded to the microsecond.
fn duration_ms(latency: Duration) -> f64 {
    latency.as_micros() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_milliseconds_to_the_microsecond() {
        assert_eq!(duration_ms(Duration::from_micros(39_250)), 39.25);
        assert_eq!(duration_ms(Duration::from_nanos(1_999)), 0.001);
        assert_eq!(duration_ms(Duration::ZERO), 0.0);
    }
}
