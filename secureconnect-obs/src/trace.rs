//! A request span for tower-http's `TraceLayer` that puts the request id (set by
//! tower-http's `SetRequestIdLayer`) and the route template on every log line of the
//! request.
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
//! use tower_http::trace::TraceLayer;
//! use secureconnect_obs::RequestSpan;
//!
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     // Layers run bottom-up on the way in: the id is set before the span is made.
//!     .layer(PropagateRequestIdLayer::x_request_id())
//!     .layer(TraceLayer::new_for_http().make_span_with(RequestSpan::default()))
//!     .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid));
//! ```

use http::Request;
use tower_http::trace::MakeSpan;
use tracing::{Level, Span};

/// Makes an `INFO` span `request` with the fields `request_id` (the `x-request-id`
/// header), `http_request_method`, `http_route` (axum's matched route, if any) and
/// `url_path`. The query string is left out: it may carry tokens.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestSpan {
    _private: (),
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
            request_id,
            http_request_method = %request.method(),
            http_route = route,
            url_path = request.uri().path(),
        )
    }
}
