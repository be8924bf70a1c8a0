//! Where a handler finds its `Auditor`: the layer lends the request context only while
//! it polls the service inside, so nested layers each give their own, a context taken
//! before a spawn travels with the `Auditor`, and a lookup outside the layer's poll finds
//! nothing rather than another request's context.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use secureconnect_audit::{
    Actor, AuditConfig, AuditEvent, AuditLayer, AuditPipeline, AuditPipelineConfig, Auditor,
    MemorySink, Outcome,
};
use tower::ServiceExt;

fn pipeline() -> (AuditPipeline, MemorySink) {
    let sink = MemorySink::new();
    let pipeline = AuditPipeline::new(
        sink.clone(),
        AuditPipelineConfig::default(),
        &mut Registry::default(),
    )
    .unwrap();
    (pipeline, sink)
}

fn denial(action: &'static str) -> secureconnect_audit::EventBuilder {
    AuditEvent::builder(action, Outcome::Denied)
        .actor(Actor::user("mallory"))
        .reason("not_owner", "not the owner")
}

async fn get_path(app: Router, path: &str) -> axum::response::Response {
    let request = Request::get(path).body(Body::empty()).unwrap();
    app.oneshot(request).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_layers_each_give_their_own_context_and_the_outer_one_comes_back() {
    let (outer, outer_sink) = pipeline();
    let (inner, inner_sink) = pipeline();
    let app = Router::new()
        .route(
            "/files/{id}",
            get(|auditor: Auditor| async move {
                auditor.record(denial("file.delete")).unwrap();
                // The response is polled on after the handler yielded once.
                tokio::task::yield_now().await;
                StatusCode::FORBIDDEN
            }),
        )
        .layer(AuditLayer::new(
            inner.clone(),
            AuditConfig::default().service_name("inner"),
        ));
    let app = Router::new().nest("/v1", app).layer(AuditLayer::new(
        outer.clone(),
        AuditConfig::default().service_name("outer"),
    ));
    let response = get_path(app, "/v1/files/f1").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    outer.shutdown(Duration::from_secs(5));
    inner.shutdown(Duration::from_secs(5));

    // The handler's denial went to the layer around it, which then did not record the
    // 403 a second time.
    let inner_events = inner_sink.events();
    assert_eq!(inner_events.len(), 1, "{inner_events:?}");
    assert_eq!(inner_events[0].action(), "file.delete");
    assert_eq!(inner_events[0].service(), Some("inner"));
    // The outer layer had no `Auditor` taken from it: it records the 403 itself, with
    // its own context.
    let outer_events = outer_sink.events();
    assert_eq!(outer_events.len(), 1, "{outer_events:?}");
    assert_eq!(outer_events[0].action(), "http.request");
    assert_eq!(outer_events[0].service(), Some("outer"));
    assert_ne!(outer_events[0].request_id(), inner_events[0].request_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_taken_before_a_spawn_records_from_the_task_and_none_is_found_there() {
    let (pipeline, sink) = pipeline();
    let app = Router::new()
        .route(
            "/spawn",
            get(|auditor: Auditor, request: Request| async move {
                let (parts, _) = request.into_parts();
                let task = tokio::spawn(async move {
                    // Outside the layer's poll: no context to find, not someone else's.
                    let found = Auditor::from_parts(&parts).is_some();
                    auditor.record(denial("file.download")).unwrap();
                    found
                });
                let found_in_task = task.await.unwrap();
                if found_in_task {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::FORBIDDEN
                }
            }),
        )
        .layer(AuditLayer::new(pipeline.clone(), AuditConfig::default()));
    let response = get_path(app, "/spawn").await;
    assert_eq!(
        response.status(),
        StatusCode::FORBIDDEN,
        "found in the task"
    );
    pipeline.shutdown(Duration::from_secs(5));
    let events = sink.events();
    assert_eq!(events.len(), 1, "one event per denial: {events:?}");
    assert_eq!(events[0].action(), "file.download");
    // The context came along: the request id the layer minted, and the route.
    let request_id = events[0].request_id().unwrap();
    assert_eq!(uuid_version(request_id), Some('7'), "{request_id}");
    assert_eq!(events[0].http().unwrap().route, "/spawn");
}

#[tokio::test]
async fn no_auditor_outside_a_layer() {
    let app = Router::new().route(
        "/bare",
        get(|request: Request| async move {
            let (parts, _) = request.into_parts();
            match Auditor::from_parts(&parts) {
                Some(_) => StatusCode::INTERNAL_SERVER_ERROR,
                None => StatusCode::OK,
            }
        }),
    );
    assert_eq!(get_path(app, "/bare").await.status(), StatusCode::OK);
}

/// The version digit of a hyphenated UUID.
fn uuid_version(id: &str) -> Option<char> {
    (id.len() == 36).then(|| id.chars().nth(14)).flatten()
}
