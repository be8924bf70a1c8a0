//! Exemplars on the duration histogram over real TCP: the trace id of a sampled request
//! (continued from its `traceparent` by `RequestTraceLayer`, through the real
//! OpenTelemetry layer of `logging::init`) on its bucket in the OpenMetrics exposition,
//! read back by the official Python OpenMetrics parser; nothing for an unsampled
//! request, nothing in the Prometheus text format, nothing when turned off.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::routing::get;
use axum::Router;
use common::{client, serve};
use prometheus_client::registry::Registry;
use secureconnect_obs::{
    logging, HttpMetricsConfig, HttpMetricsLayer, LogConfig, LogGuard, MetricsEndpointConfig,
    MetricsService, RequestTraceConfig, RequestTraceLayer,
};
use secureconnect_testkit::python::{openmetrics_exemplars, ParsedExemplar};

/// The process's subscriber, with the OpenTelemetry layer (installed once).
fn tracing() {
    static GUARD: OnceLock<LogGuard> = OnceLock::new();
    GUARD.get_or_init(|| logging::init(LogConfig::new("exemplars").stdout(false)).unwrap());
}

async fn start(config: HttpMetricsConfig) -> SocketAddr {
    tracing();
    let mut registry = Registry::default();
    let metrics = HttpMetricsLayer::new(config, &mut registry).unwrap();
    let endpoint =
        MetricsService::new(Arc::new(registry), MetricsEndpointConfig::default()).unwrap();
    let app = Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .route_service("/metrics", endpoint)
        .layer(metrics)
        .layer(RequestTraceLayer::new(RequestTraceConfig::default()));
    serve(app).await
}

async fn get_with(addr: SocketAddr, traceparent: Option<String>) {
    let mut request = client().get(format!("http://{addr}/users/1"));
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    assert_eq!(request.send().await.unwrap().status(), 200);
}

async fn scrape(addr: SocketAddr, accept: &str) -> String {
    client()
        .get(format!("http://{addr}/metrics"))
        .header("accept", accept)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0";

async fn exemplars(addr: SocketAddr) -> Vec<ParsedExemplar> {
    openmetrics_exemplars(&scrape(addr, OPENMETRICS).await)
}

fn trace_ids(exemplars: &[ParsedExemplar]) -> Vec<&str> {
    exemplars
        .iter()
        .map(|e| e.exemplar_labels["trace_id"].as_str())
        .collect()
}

#[tokio::test]
async fn a_sampled_request_leaves_its_trace_id_on_its_bucket() {
    let addr = start(HttpMetricsConfig::default()).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    get_with(addr, Some(format!("00-{trace}-00f067aa0ba902b7-01"))).await;
    let found = exemplars(addr).await;
    assert_eq!(trace_ids(&found), [trace], "{found:?}");
    let e = &found[0];
    assert_eq!(e.name, "http_server_request_duration_seconds_bucket");
    assert_eq!(e.labels["http_route"], "/users/{id}");
    assert_eq!(e.labels["http_response_status_code"], "200");
    assert_eq!(e.exemplar_labels.len(), 1, "trace_id only");
    // The exemplar sits on the first bucket that holds its value.
    let le: f64 = e.labels["le"].parse().unwrap();
    assert!(e.value <= le && e.value > 0.0, "{e:?}");
    let below = secureconnect_obs::request_metrics::DEFAULT_BUCKETS
        .iter()
        .copied()
        .rfind(|b| *b < le)
        .unwrap_or(0.0);
    assert!(e.value > below, "{e:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let at = e.timestamp.expect("a timestamp");
    assert!((now - at).abs() < 60.0, "{at} vs {now}");

    // A later sampled request of the same bucket replaces it.
    let later = "0af7651916cd43dd8448eb211c80319c";
    get_with(addr, Some(format!("00-{later}-b7ad6b7169203331-01"))).await;
    let found = exemplars(addr).await;
    assert!(trace_ids(&found).contains(&later), "{found:?}");
}

#[tokio::test]
async fn unsampled_requests_leave_none_and_new_traces_do() {
    let addr = start(HttpMetricsConfig::default()).await;
    get_with(
        addr,
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00".into()),
    )
    .await;
    assert_eq!(exemplars(addr).await, [], "unsampled: nothing recorded");
    // A request without traceparent starts a (sampled) trace of its own.
    get_with(addr, None).await;
    let found = exemplars(addr).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_ne!(
        found[0].exemplar_labels["trace_id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
}

#[tokio::test]
async fn the_prometheus_text_format_has_no_exemplars_and_they_can_be_turned_off() {
    let addr = start(HttpMetricsConfig::default()).await;
    get_with(addr, None).await;
    let text = scrape(addr, "text/plain").await;
    assert!(!text.contains("trace_id"), "{text}");
    common::promtool_check(&text);
    let om = scrape(addr, OPENMETRICS).await;
    assert_eq!(om.matches("trace_id").count(), 1, "{om}");
    // The OpenMetrics text with exemplars passes the official parser as a whole.
    let samples = secureconnect_testkit::python::parse_openmetrics(&om);
    assert!(!samples.is_empty());

    let off = start(HttpMetricsConfig::default().exemplars(false)).await;
    get_with(
        off,
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
    )
    .await;
    assert!(!scrape(off, OPENMETRICS).await.contains("trace_id"));
}
