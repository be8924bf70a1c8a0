//! What the reference services' whole layer stack costs per request, against the bare
//! router and against the same stack built from the usual peers, measured interleaved:
//! rounds of 20,000 requests through an axum router (requests built beforehand, the
//! handler answers at once) for each variant in turn, so that load from other processes
//! falls on all of them alike; the minimum and the median of the rounds per variant, in
//! ns per request.
//!
//! ```text
//! cargo bench -p secureconnect-benches --bench stack
//! ```
//!
//! - `secureconnect stack` is the stack of the reference services, built by the same
//!   function they use (`secureconnect_examples::kit::service_stack`): audit (minting
//!   the request id and giving it back on the response), the request span, request
//!   metrics.
//! - `peer stack` is tower-http's `SetRequestId` (UUID v4) and `PropagateRequestId`,
//!   tower-http's `TraceLayer`, and axum-prometheus.
//!
//! Every variant runs under the services' own JSON subscriber
//! (`secureconnect_obs::logging::subscriber`) writing to stdout, which the bench points
//! at `/dev/null`: at level `warn` no request writes a line; at `info` every request
//! writes its access-log line (`request finished`; the peer's `TraceLayer` is set to
//! the same level).

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use futures_util::FutureExt;
use prometheus_client::registry::Registry;
use secureconnect_audit::{
    AuditConfig, AuditEvent, AuditLayer, AuditPipeline, AuditPipelineConfig, AuditSink, Error,
};
use secureconnect_obs::{logging, HttpMetricsConfig, HttpMetricsLayer, LogConfig};
use tower::{Service, ServiceBuilder};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::{Dispatch, Level};

const REQUESTS: usize = 20_000;
const ROUNDS: usize = 30;

/// `SC_STACK_ONLY=<name>` runs only the variant of that name and
/// `SC_STACK_ROUNDS=<n>` sets the number of rounds: for a profiler
/// (`valgrind --tool=callgrind`), which wants one variant and few requests.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A sink that keeps nothing.
struct Discard;
impl AuditSink for Discard {
    fn write(&mut self, events: &[AuditEvent]) -> Result<(), Error> {
        black_box(events);
        Ok(())
    }
}

fn app() -> Router {
    Router::new()
        .route("/v1/users/{id}", get(|| async { "ok" }))
        .route("/denied", get(|| async { StatusCode::FORBIDDEN }))
}

fn subscriber(filter: &str) -> (Dispatch, logging::LogGuard) {
    let (subscriber, guard) = logging::subscriber(LogConfig::new("auth").filter(filter)).unwrap();
    (Dispatch::new(subscriber), guard)
}

fn ours(pipeline: &AuditPipeline) -> Router {
    let metrics = HttpMetricsLayer::new(
        HttpMetricsConfig::default().const_label("service", "auth"),
        &mut Registry::default(),
    )
    .unwrap();
    secureconnect_examples::kit::service_stack(
        app(),
        "auth",
        metrics,
        pipeline.clone(),
        Default::default(),
    )
}

fn peers(level: Level, metrics: axum_prometheus::PrometheusMetricLayer<'static>) -> Router {
    app().layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(DefaultMakeSpan::new().level(level))
                    .on_response(DefaultOnResponse::new().level(level)),
            )
            .layer(metrics),
    )
}

fn main() {
    // The access-log lines go where a service's stdout would go when nobody reads it.
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .unwrap();
    rustix::stdio::dup2_stdout(&null).unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let pipeline = AuditPipeline::new(
        Discard,
        AuditPipelineConfig::default(),
        &mut Registry::default(),
    )
    .unwrap();
    // axum-prometheus installs a global recorder: one layer for both peer variants.
    let (prometheus, _handle) = axum_prometheus::PrometheusMetricLayer::pair();
    let (quiet, _quiet_guard) = subscriber("warn");
    let (access_log, _log_guard) = subscriber("info");
    let noop = app().layer(axum::middleware::map_response(
        |r: axum::response::Response| async move { r },
    ));
    let audit = app().layer(AuditLayer::new(pipeline.clone(), AuditConfig::default()));

    let mut variants: Vec<(&str, Router, &Dispatch, &str)> = vec![
        ("bare axum", app(), &quiet, "/v1/users/7"),
        ("axum no-op layer", noop, &quiet, "/v1/users/7"),
        ("audit layer only", audit, &quiet, "/v1/users/7"),
        (
            "secureconnect stack",
            ours(&pipeline),
            &quiet,
            "/v1/users/7",
        ),
        (
            "peer stack",
            peers(Level::DEBUG, prometheus.clone()),
            &quiet,
            "/v1/users/7",
        ),
        (
            "secureconnect stack + log",
            ours(&pipeline),
            &access_log,
            "/v1/users/7",
        ),
        (
            "peer stack + log",
            peers(Level::INFO, prometheus),
            &access_log,
            "/v1/users/7",
        ),
        ("bare axum, 403", app(), &quiet, "/denied"),
        (
            "secureconnect stack, 403",
            ours(&pipeline),
            &quiet,
            "/denied",
        ),
    ];
    if let Ok(only) = std::env::var("SC_STACK_ONLY") {
        variants.retain(|(name, ..)| *name == only);
    }
    let rounds_wanted = env_or("SC_STACK_ROUNDS", ROUNDS);
    let requests_wanted = env_or("SC_STACK_REQUESTS", REQUESTS);
    let mut rounds: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 0..=rounds_wanted {
        for i in 0..variants.len() {
            // A different order each round.
            let v = (i + round) % variants.len();
            let (_, router, dispatch, path) = &mut variants[v];
            let requests: Vec<Request<Body>> = (0..requests_wanted)
                .map(|_| {
                    Request::get(*path)
                        .header("user-agent", "wrk")
                        .body(Body::empty())
                        .unwrap()
                })
                .collect();
            let elapsed = tracing::dispatcher::with_default(dispatch, || {
                let start = Instant::now();
                for request in requests {
                    // The handlers answer at once; dropping the response records it.
                    drop(black_box(router.call(request).now_or_never()));
                }
                start.elapsed()
            });
            if round > 0 {
                // Round 0 warms up.
                rounds[v].push(elapsed.as_nanos() as f64 / requests_wanted as f64);
            }
        }
    }
    pipeline.shutdown(std::time::Duration::from_secs(5));
    eprintln!("ns per request, {rounds_wanted} interleaved rounds of {requests_wanted}:");
    let base = stats(&rounds[0]).0;
    for ((name, ..), times) in variants.iter().zip(&rounds) {
        let (min, median) = stats(times);
        eprintln!(
            "{name:28} min {min:7.1}  median {median:7.1}  (min {:+7.1} vs bare axum)",
            min - base
        );
    }
}

fn stats(times: &[f64]) -> (f64, f64) {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    (sorted[0], sorted[sorted.len() / 2])
}
