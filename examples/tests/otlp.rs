//! OTLP/HTTP export from the real gateway and auth binaries to a small receiver inside
//! the test, which decodes the protobuf (`opentelemetry-proto`): a request with a known
//! `traceparent` through the gateway to auth gives two server spans of that trace, auth's
//! the child of the gateway's, the gateway's the child of the client's.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use common::System;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;

/// One exported span, as the receiver decoded it.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

type Spans = Arc<Mutex<Vec<Received>>>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `POST /v1/traces`: decodes an `ExportTraceServiceRequest` (400 if it is not one).
async fn traces(State(spans): State<Spans>, body: Bytes) -> axum::http::StatusCode {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return axum::http::StatusCode::BAD_REQUEST;
    };
    let mut spans = spans.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
            spans.push(Received {
                service: service.clone(),
                name: span.name,
                kind: span.kind,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
            });
        }
    }
    axum::http::StatusCode::OK
}

async fn receiver() -> (SocketAddr, Spans) {
    let spans = Spans::default();
    let app = Router::new()
        .route("/v1/traces", post(traces))
        .with_state(Arc::clone(&spans));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_and_auth_export_their_spans_linked_parent_to_child() {
    let (addr, spans) = receiver().await;
    let endpoint = format!("http://{addr}");
    let system = System::start_only(
        &["auth", "gateway"],
        "redis://127.0.0.1:1/",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = reqwest::Client::new()
        .post(format!("{}/v1/auth/login", system.gateway()))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&serde_json::json!({"email": "nobody@example.org", "password": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let of_trace = || -> Vec<Received> {
        spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    };
    for _ in 0..100 {
        if of_trace().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let traced = of_trace();
    let by = |service: &str| {
        traced
            .iter()
            .find(|s| s.service == service)
            .unwrap_or_else(|| panic!("no {service} span of the trace: {traced:#?}"))
    };
    let (gateway, auth) = (by("gateway"), by("auth"));
    assert_eq!(traced.len(), 2, "one span per service: {traced:#?}");
    assert_eq!(
        gateway.parent_span_id, "00f067aa0ba902b7",
        "the client's span"
    );
    assert_eq!(
        auth.parent_span_id, gateway.span_id,
        "auth is the gateway's child"
    );
    assert_ne!(auth.span_id, gateway.span_id);
    for span in [gateway, auth] {
        assert_eq!(span.kind, SpanKind::Server as i32, "{span:?}");
    }
    assert_eq!(gateway.name, "POST /v1/auth/{*rest}");
    assert_eq!(auth.name, "POST /v1/auth/login");
    // The span ids are those of the services' log lines.
    let line_span = |service: &str| {
        system
            .stdout(service)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["trace_id"] == trace_id && l["message"] == "request finished")
            .map(|l| l["span_id"].as_str().unwrap().to_owned())
    };
    assert_eq!(
        line_span("gateway").as_deref(),
        Some(gateway.span_id.as_str())
    );
    assert_eq!(line_span("auth").as_deref(), Some(auth.span_id.as_str()));
}
