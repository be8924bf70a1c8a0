//! The cost the metrics layer adds to a request, side by side with a bare axum router
//! and with `axum-prometheus`; what exemplars add to it, for sampled and unsampled
//! requests; and the cost of rendering a large registry.
//!
//! ```text
//! cargo bench -p secureconnect-benches --bench http_metrics
//! ```
//!
//! Each request goes through the whole router (routing, handler, response) and its
//! body is read to the end, so the layers record exactly as they would in a server.
//! The added cost of a layer is its time minus `bare`.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use futures_util::FutureExt;
use http_body_util::BodyExt;
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use secureconnect_obs::endpoint::{render, Format};
use secureconnect_obs::{
    HttpMetricsConfig, HttpMetricsLayer, MetricsEndpointConfig, MetricsEndpointLayer,
    MetricsService,
};
use tower::{Service, ServiceExt};

fn app() -> Router {
    Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .route("/health", get(|| async { "ok" }))
}

fn request() -> Request<Body> {
    Request::get("/users/42").body(Body::empty()).unwrap()
}

async fn call(app: &Router) {
    let response = app.clone().oneshot(request()).await.unwrap();
    let body = response.into_body().collect().await.unwrap();
    black_box(body);
}

fn per_request(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    // The recommended axum form: the endpoint as a route, the recording as one layer.
    let mut registry = Registry::default();
    let metrics = HttpMetricsLayer::new(HttpMetricsConfig::default(), &mut registry).unwrap();
    let endpoint =
        MetricsService::new(Arc::new(registry), MetricsEndpointConfig::default()).unwrap();
    let ours = app().route_service("/metrics", endpoint).layer(metrics);

    // The plain-tower form: endpoint layer and recording layer, in one `Router::layer`.
    let mut registry = Registry::default();
    let metrics = HttpMetricsLayer::new(HttpMetricsConfig::default(), &mut registry).unwrap();
    let ours_layers = app().layer((
        MetricsEndpointLayer::new(Arc::new(registry), MetricsEndpointConfig::default()).unwrap(),
        metrics,
    ));

    // What any `Router::layer` costs in axum (boxing the service and the body), for
    // reading the figures: a middleware that does nothing.
    let noop = app().layer(axum::middleware::map_response(
        |r: Response| async move { r },
    ));

    // axum-prometheus installs a global recorder and spawns its upkeep task on the
    // runtime; this is its documented set-up.
    let (theirs_layer, handle) = {
        let _runtime = rt.enter();
        axum_prometheus::PrometheusMetricLayer::pair()
    };
    let theirs = app()
        .route("/metrics", get(move || async move { handle.render() }))
        .layer(theirs_layer);

    let mut group = c.benchmark_group("request");
    group.throughput(Throughput::Elements(1));
    for (name, router) in [
        ("bare_axum", app()),
        ("axum_noop_layer", noop),
        ("secureconnect_obs", ours),
        ("secureconnect_obs_layers", ours_layers),
        ("axum_prometheus", theirs),
    ] {
        group.bench_function(name, |b| b.to_async(&rt).iter(|| call(&router)));
    }
    group.finish();
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SeriesLabels {
    route: String,
    status: u16,
}

fn render_registry(c: &mut Criterion) {
    // 10,000 counter series.
    let mut counters = Registry::default();
    let family = Family::<SeriesLabels, Counter>::default();
    counters.register("requests", "Requests", family.clone());
    for i in 0..10_000u32 {
        family
            .get_or_create(&SeriesLabels {
                route: format!("/route/{}", i / 5),
                status: 200 + (i % 5) as u16,
            })
            .inc_by(u64::from(i));
    }

    // The request-duration histogram: 600 label sets × (14 buckets + +Inf + sum +
    // count) = 10,200 series.
    let mut histograms = Registry::default();
    let metrics = HttpMetricsLayer::new(HttpMetricsConfig::default(), &mut histograms).unwrap();
    let app = (0..120).fold(Router::new(), |r, i| {
        r.route(&format!("/r{i}/{{id}}"), get(|| async { "x" }))
    });
    let app = app.layer(metrics);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        for i in 0..120 {
            for m in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
                let req = Request::builder()
                    .method(m)
                    .uri(format!("/r{i}/1"))
                    .body(Body::empty())
                    .unwrap();
                let _ = app.clone().oneshot(req).await.unwrap();
            }
        }
    });

    let mut group = c.benchmark_group("render");
    for (name, registry) in [
        ("10k_counter_series", &counters),
        ("10k_histogram_series", &histograms),
    ] {
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let mut buffer = String::new();
            group.bench_with_input(
                BenchmarkId::new(name, format!("{format:?}")),
                registry,
                |b, registry| {
                    b.iter(|| {
                        buffer.clear();
                        render(&mut buffer, registry, format).unwrap();
                        black_box(buffer.len())
                    })
                },
            );
        }
    }
    group.finish();
}

/// A request carrying the trace context `RequestTraceLayer` leaves in the extensions.
fn traced_request(context: &SpanContext) -> Request<Body> {
    let mut request = request();
    request.extensions_mut().insert(context.clone());
    request
}

async fn call_traced(app: &Router, context: &SpanContext) {
    let response = app.clone().oneshot(traced_request(context)).await.unwrap();
    let body = response.into_body().collect().await.unwrap();
    black_box(body);
}

fn exemplars(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let context = |flags| {
        SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            flags,
            false,
            TraceState::default(),
        )
    };
    let (sampled, unsampled) = (context(TraceFlags::SAMPLED), context(TraceFlags::default()));
    let layer = |exemplars: bool| {
        let mut registry = Registry::default();
        let config = HttpMetricsConfig::default().exemplars(exemplars);
        app().layer(HttpMetricsLayer::new(config, &mut registry).unwrap())
    };
    let (off, on) = (layer(false), layer(true));

    // Every request carries a context (inserting it costs the same everywhere): the
    // differences are what the metrics layer does with it.
    let mut group = c.benchmark_group("exemplars");
    group.throughput(Throughput::Elements(1));
    for (name, router, context) in [
        ("bare_axum", app(), &sampled),
        ("exemplars_off", off, &sampled),
        ("unsampled", on.clone(), &unsampled),
        ("sampled", on, &sampled),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| call_traced(&router, context))
        });
    }
    group.finish();

    // The layer alone, around a service that answers at once, requests built outside
    // the timing: what exemplars add to the recording itself, without axum's noise.
    let inner = tower::service_fn(|_: Request<()>| async {
        Ok::<_, std::convert::Infallible>(Response::new(Body::empty()))
    });
    let classify = |_: &str| Some(secureconnect_obs::RouteLabel::from_static("/users/{id}"));
    let service = |exemplars: bool| {
        let config = HttpMetricsConfig::default().exemplars(exemplars);
        secureconnect_obs::HttpMetrics::new(inner, classify, config, &mut Registry::default())
            .unwrap()
    };
    let (off, on) = (service(false), service(true));
    let make = |context: &SpanContext| {
        let context = context.clone();
        move || {
            let mut request = Request::get("/users/42").body(()).unwrap();
            request.extensions_mut().insert(context.clone());
            request
        }
    };
    let mut group = c.benchmark_group("exemplars_layer");
    group.throughput(Throughput::Elements(1));
    for (name, service, context) in [
        ("exemplars_off", off, &sampled),
        ("unsampled", on.clone(), &unsampled),
        ("sampled", on, &sampled),
    ] {
        let make = make(context);
        let mut service = service;
        group.bench_function(name, |b| {
            b.iter_batched(
                &make,
                |request| {
                    // The inner service answers at once: no runtime needed.
                    let response = service.call(request).now_or_never();
                    // Dropping the response (its body) records the request.
                    drop(black_box(response));
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, per_request, exemplars, render_registry);
criterion_main!(benches);
