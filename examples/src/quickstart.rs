//! An existing axum router, made observable in one line.
//!
//! [`existing_router`] stands for any application. [`instrument`] adds request metrics,
//! `GET /metrics`, process metrics, `build_info`, request ids and a request span with
//! W3C trace context (its trace id also the exemplar of the request's duration bucket);
//! the line that matters is
//!
//! ```text
//! router.route_service("/metrics", endpoint).layer(metrics)
//! ```

use std::sync::Arc;

use axum::extract::Path;
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use secureconnect_obs::{
    HttpMetricsConfig, HttpMetricsLayer, MetricsEndpointConfig, MetricsService, RequestTraceConfig,
    RequestTraceLayer,
};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

/// The application as it was before: two routes, no metrics.
pub fn existing_router() -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/users/{id}",
            get(|Path(id): Path<u64>| async move {
                tracing::info!(user_id = id, "user looked up");
                Json(user_json(id))
            }),
        )
}

fn user_json(id: u64) -> std::collections::BTreeMap<&'static str, String> {
    [("id", id.to_string()), ("name", format!("user-{id}"))]
        .into_iter()
        .collect()
}

/// `router` with metrics in a fresh registry, `/metrics`, request ids and a traced
/// request span on every log line.
pub fn instrument(router: Router) -> Result<Router, secureconnect_obs::Error> {
    let mut registry = Registry::default();
    let metrics = HttpMetricsLayer::new(
        HttpMetricsConfig::default().const_label("service", "quickstart"),
        &mut registry,
    )?;
    secureconnect_obs::process::register(secureconnect_obs::build_info!(), &mut registry);
    let endpoint = MetricsService::new(Arc::new(registry), MetricsEndpointConfig::default())?;

    Ok(router
        // The one line: answer GET /metrics, record every other request.
        .route_service("/metrics", endpoint)
        .layer(metrics)
        // Request ids (tower-http) and a span carrying them, and the trace context, into
        // every log line; outside the metrics, so that sampled requests leave exemplars.
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(RequestTraceLayer::new(
            RequestTraceConfig::default().component("quickstart"),
        ))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid)))
}
