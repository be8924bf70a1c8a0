//! The cost of auditing: an allowed request under a policy that records nothing, a
//! denial queued, and the throughput of the hash-chained file sink.
//!
//! ```text
//! cargo bench -p secureconnect-benches --bench audit
//! ```

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use secureconnect_audit::{
    Actor, AuditConfig, AuditEvent, AuditLayer, AuditPipeline, AuditPipelineConfig, AuditSink,
    Error, FileSink, FileSinkConfig, Format, Outcome,
};
use tower::ServiceExt;

/// A sink that keeps nothing, so the queue never fills.
struct Discard;
impl AuditSink for Discard {
    fn write(&mut self, events: &[AuditEvent]) -> Result<(), Error> {
        black_box(events);
        Ok(())
    }
}

fn app() -> Router {
    Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route("/deny", get(|| async { StatusCode::FORBIDDEN }))
}

async fn call(app: &Router, path: &'static str) {
    let request = Request::get(path).body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    black_box(response.into_body().collect().await.unwrap());
}

fn requests(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let pipeline = AuditPipeline::new(
        Discard,
        AuditPipelineConfig::default(),
        &mut Registry::default(),
    )
    .unwrap();
    let audited = app().layer(AuditLayer::new(pipeline.clone(), AuditConfig::default()));
    let audited_no_ids = app().layer(AuditLayer::new(
        pipeline.clone(),
        AuditConfig::default().request_ids(false),
    ));
    let noop = app().layer(axum::middleware::map_response(
        |r: axum::response::Response| async move { r },
    ));

    let mut group = c.benchmark_group("audit_request");
    for (name, router, path) in [
        ("allowed/bare_axum", app(), "/ok"),
        ("allowed/axum_noop_layer", noop, "/ok"),
        ("allowed/audit_layer", audited.clone(), "/ok"),
        (
            "allowed/audit_layer_without_request_ids",
            audited_no_ids,
            "/ok",
        ),
        ("denied/bare_axum", app(), "/deny"),
        ("denied/audit_layer", audited, "/deny"),
    ] {
        group.bench_function(name, |b| b.to_async(&rt).iter(|| call(&router, path)));
    }
    group.finish();
    pipeline.shutdown(std::time::Duration::from_secs(5));
}

fn denial() -> AuditEvent {
    AuditEvent::builder("http.request", Outcome::Denied)
        .actor(Actor::user("user-4711"))
        .http("GET", "/v1/files/{id}", Some(403))
        .resource("/v1/files/{id}")
        .reason("forbidden", "HTTP 403: not allowed")
        .client_ip("203.0.113.9".parse().unwrap())
        .request_id("0190b7c2-3c5e-7b1a-9d7e-5f1b2c3d4e5f")
        .service("gateway")
        .build()
}

fn enqueue(c: &mut Criterion) {
    let pipeline = AuditPipeline::new(
        Discard,
        AuditPipelineConfig::default().capacity(1 << 20),
        &mut Registry::default(),
    )
    .unwrap();
    let mut group = c.benchmark_group("audit_event");
    group.bench_function("build_denial", |b| b.iter(|| black_box(denial())));
    group.bench_function("build_and_enqueue_denial", |b| {
        b.iter(|| pipeline.record(denial()).unwrap())
    });
    group.finish();
    pipeline.shutdown(std::time::Duration::from_secs(5));
}

fn file_sink(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<AuditEvent> = (0..1000).map(|_| denial()).collect();
    let mut group = c.benchmark_group("audit_file_sink");
    group.throughput(Throughput::Elements(events.len() as u64));
    for (name, chained) in [("hash_chained", true), ("plain", false)] {
        let mut sink = FileSink::open(
            dir.path().join(format!("{name}.jsonl")),
            FileSinkConfig::default().hash_chain(chained),
        )
        .unwrap();
        group.bench_function(name, |b| {
            b.iter_batched(
                || (),
                |()| sink.write(&events).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    let mut ocsf = FileSink::open(
        dir.path().join("ocsf.jsonl"),
        FileSinkConfig::default().format(Format::Ocsf),
    )
    .unwrap();
    group.bench_function("hash_chained_ocsf", |b| {
        b.iter(|| ocsf.write(&events).unwrap())
    });
    group.finish();
}

criterion_group!(benches, requests, enqueue, file_sink);
criterion_main!(benches);
