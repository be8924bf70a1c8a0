//! The trace context of requests through a real subscriber with the OpenTelemetry
//! layer: continued, started, injected, and on every line.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use opentelemetry::trace::SpanContext;
use serde_json::Value;
use tower::{Service, ServiceExt};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

use super::{RequestTrace, RequestTraceConfig};
use crate::logging::otel;
use crate::JsonLayer;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn lines(&self) -> Vec<Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The handler's request's trace context, and the headers it would send on.
type Sight = (Option<SpanContext>, http::HeaderMap);

/// What the handler saw.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Option<Sight>>>);

/// Sends one request with `traceparent` through a `RequestTrace` whose handler logs a
/// line and injects its context into outgoing headers.
fn run(traceparent: Option<&str>) -> (Vec<Value>, Response<String>, Seen) {
    run_with(RequestTraceConfig::default().component("edge"), traceparent)
}

fn run_with(
    config: RequestTraceConfig,
    traceparent: Option<&str>,
) -> (Vec<Value>, Response<String>, Seen) {
    let out = Capture::default();
    let provider = otel::provider("test", |b| b);
    let subscriber = tracing_subscriber::registry()
        .with(JsonLayer::new("test", out.clone()))
        .with(otel::layer(&provider));
    let seen = Seen::default();
    let handler_seen = seen.clone();
    let inner = tower::service_fn(move |request: Request<()>| {
        let seen = handler_seen.clone();
        async move {
            tracing::info!("in the handler");
            let mut outgoing = http::HeaderMap::new();
            outgoing.insert(
                "traceparent",
                "00-ffffffffffffffffffffffffffffffff-ffffffffffffffff-01"
                    .parse()
                    .unwrap(),
            );
            super::inject(&tracing::Span::current(), &mut outgoing);
            *seen.0.lock().unwrap() =
                Some((request.extensions().get::<SpanContext>().cloned(), outgoing));
            Ok::<_, std::convert::Infallible>(Response::new(String::from("ok")))
        }
    });
    let mut service = RequestTrace::new(inner, config);
    let mut request = Request::get("/x").body(()).unwrap();
    if let Some(value) = traceparent {
        request
            .headers_mut()
            .insert("traceparent", value.parse().unwrap());
    }
    let response = tracing::subscriber::with_default(subscriber, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            service.ready().await.unwrap();
            service.call(request).await.unwrap()
        })
    });
    (out.lines(), response, seen)
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[test]
fn an_incoming_traceparent_is_continued_on_every_line_and_downstream() {
    let (lines, response, seen) = run(Some(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ));
    assert_eq!(lines.len(), 2, "{lines:?}");
    let span_id = lines[0]["span_id"].as_str().unwrap().to_owned();
    for line in &lines {
        assert_eq!(line["trace_id"], TRACE_ID, "{line}");
        assert_eq!(line["span_id"], span_id.as_str(), "{line}");
        assert_eq!(line["component"], "edge");
        assert!(
            line.as_object()
                .unwrap()
                .keys()
                .all(|k| !k.starts_with("otel.")),
            "{line}"
        );
    }
    assert_ne!(
        span_id, "00f067aa0ba902b7",
        "a span of its own, child of the client's"
    );
    let (request_context, outgoing) = seen.0.lock().unwrap().clone().unwrap();
    let request_context = request_context.expect("the context is in the request's extensions");
    assert_eq!(request_context.trace_id().to_string(), TRACE_ID);
    assert!(request_context.is_sampled());
    assert_eq!(
        outgoing["traceparent"],
        format!("00-{TRACE_ID}-{span_id}-01").as_str(),
        "the next service continues as a child of this span, replacing what was there"
    );
    let response_context = response.extensions().get::<SpanContext>().unwrap();
    assert_eq!(response_context, &request_context);
}

#[test]
fn without_a_usable_traceparent_a_trace_starts() {
    for traceparent in [
        None,
        Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
        Some("garbage"),
    ] {
        let (lines, response, _) = run(traceparent);
        let trace_id = lines[0]["trace_id"].as_str().unwrap().to_owned();
        assert_eq!(trace_id.len(), 32, "{traceparent:?}");
        assert_ne!(trace_id, TRACE_ID.to_ascii_lowercase());
        assert_ne!(trace_id, "0".repeat(32));
        assert!(lines.iter().all(|l| l["trace_id"] == trace_id.as_str()));
        let context = response.extensions().get::<SpanContext>().unwrap();
        assert!(context.is_sampled(), "a new trace is sampled by default");
    }
}

#[test]
fn an_unsampled_trace_keeps_its_ids_on_every_line_and_stays_unsampled() {
    let (lines, response, seen) = run(Some(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    ));
    assert!(lines.iter().all(|l| l["trace_id"] == TRACE_ID));
    assert!(!response
        .extensions()
        .get::<SpanContext>()
        .unwrap()
        .is_sampled());
    let (_, outgoing) = seen.0.lock().unwrap().clone().unwrap();
    assert!(outgoing["traceparent"].to_str().unwrap().ends_with("-00"));
}

#[test]
fn an_edge_that_does_not_continue_remote_traces_starts_its_own_sampled_one() {
    // The client asks for "not sampled" on a trace id of its choosing.
    let config = RequestTraceConfig::default().continue_remote(false);
    let (lines, response, seen) = run_with(
        config,
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
    );
    let trace_id = lines[0]["trace_id"].as_str().unwrap();
    assert_ne!(trace_id, TRACE_ID);
    assert!(lines.iter().all(|l| l["trace_id"] == trace_id));
    let context = response.extensions().get::<SpanContext>().unwrap();
    assert!(context.is_sampled(), "this service's sampler decided");
    let (_, outgoing) = seen.0.lock().unwrap().clone().unwrap();
    assert!(outgoing["traceparent"]
        .to_str()
        .unwrap()
        .starts_with(&format!("00-{trace_id}-")));
}
