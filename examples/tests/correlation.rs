//! One request across services, as an operator follows it: the all-in-one binary's
//! stdout names the component of every request line, carries the duration as a number
//! and each audit event as a nested object.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::all_in_one::AllInOne;
use serde_json::Value;

/// The JSON lines of the process's stdout (start-up messages on stderr are skipped).
fn json_lines(system: &AllInOne) -> Vec<Value> {
    std::fs::read_to_string(system.dir.join("secureconnect.out"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Waits until `pred` holds for the lines written so far, and returns them.
async fn wait_for_lines(system: &AllInOne, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..300 {
        let lines = json_lines(system);
        if pred(&lines) {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the lines never matched:\n{:#?}", json_lines(system));
}

fn is_audit(line: &Value) -> bool {
    line["target"] == "audit"
}

#[tokio::test]
async fn request_lines_name_their_component_with_a_numeric_duration_and_audit_events_nest() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let system = AllInOne::start(dir.path(), &file, &[("RUST_LOG", "info")]).await;
    let client = reqwest::Client::new();
    // A denial at the gateway, and a request the gateway forwards to auth.
    let r = client
        .post(format!("{}/v1/calls", system.url("gateway")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .post(format!("{}/v1/auth/login", system.url("gateway")))
        .json(&serde_json::json!({"email": "nobody@example.org", "password": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let lines = wait_for_lines(&system, |lines| {
        lines.iter().filter(|l| is_audit(l)).count() >= 3
            && lines
                .iter()
                .filter(|l| l["message"] == "request finished" && l["http_route"] != "/health")
                .count()
                >= 3
    })
    .await;
    let finished: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "request finished" && l["http_route"] != "/health")
        .collect();
    let mut components: Vec<&str> = finished
        .iter()
        .map(|l| l["component"].as_str().unwrap())
        .collect();
    components.sort_unstable();
    components.dedup();
    assert_eq!(components, ["auth", "gateway"], "{finished:#?}");
    for line in &finished {
        assert_eq!(line["service"], "secureconnect");
        let ms = line["duration_ms"].as_f64();
        assert!(
            ms.is_some_and(|ms| ms >= 0.0),
            "duration_ms is a number: {line}"
        );
        assert_eq!(line["http_response_status_code"], 401);
    }
    // Every line of a request names its component, not only the last.
    for line in lines.iter().filter(|l| l.get("request_id").is_some()) {
        assert!(line["component"].is_string(), "{line}");
    }
    let audits: Vec<&Value> = lines.iter().filter(|l| is_audit(l)).collect();
    for line in &audits {
        let event = &line["audit_event"];
        assert!(event.is_object(), "a nested object, not a string: {line}");
        assert_eq!(event["schema_version"], 1);
        assert_eq!(event["outcome"], "denied");
    }
    let mut services: Vec<&str> = audits
        .iter()
        .map(|l| l["audit_event"]["service"].as_str().unwrap())
        .collect();
    services.sort_unstable();
    assert_eq!(services, ["auth", "gateway", "gateway"], "{audits:#?}");
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn is_hex(value: &Value, len: usize) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A login with a wrong password, through the gateway to auth: auth answers 401, so both
/// services log the request and audit the denial.
async fn failed_login(system: &AllInOne, traceparent: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{}/v1/auth/login", system.url("gateway")))
        .json(&serde_json::json!({"email": "nobody@example.org", "password": "wrong"}));
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 401);
    response
}

#[tokio::test]
async fn a_traceparent_is_continued_through_the_gateway_into_both_services_and_their_audit_events()
{
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let system = AllInOne::start(dir.path(), &file, &[("RUST_LOG", "info")]).await;
    failed_login(&system, Some(TRACEPARENT)).await;

    let of_trace =
        |l: &Value| l["trace_id"] == TRACE_ID || l["audit_event"]["trace_id"] == TRACE_ID;
    let lines = wait_for_lines(&system, |lines| {
        lines.iter().filter(|l| of_trace(l) && is_audit(l)).count() >= 2
    })
    .await;
    let traced: Vec<&Value> = lines.iter().filter(|l| of_trace(l)).collect();
    let finished = |component: &str| {
        traced
            .iter()
            .find(|l| l["message"] == "request finished" && l["component"] == component)
            .unwrap_or_else(|| panic!("no {component} line of the trace: {traced:#?}"))
    };
    let (gateway, auth) = (finished("gateway"), finished("auth"));
    assert!(is_hex(&gateway["span_id"], 16) && is_hex(&auth["span_id"], 16));
    assert_ne!(
        gateway["span_id"], auth["span_id"],
        "auth has a span of its own"
    );
    assert_ne!(
        gateway["span_id"], "00f067aa0ba902b7",
        "the gateway's span is a child of the client's, not the client's"
    );
    // Every line of the two requests carries the ids, not only the last.
    for line in lines.iter().filter(|l| l.get("request_id").is_some()) {
        if line["request_id"] == gateway["request_id"] || line["request_id"] == auth["request_id"] {
            assert_eq!(line["trace_id"], TRACE_ID, "{line}");
            assert!(is_hex(&line["span_id"], 16), "{line}");
        }
    }
    let mut audited: Vec<&str> = traced
        .iter()
        .filter(|l| is_audit(l))
        .map(|l| l["audit_event"]["service"].as_str().unwrap())
        .collect();
    audited.sort_unstable();
    assert_eq!(audited, ["auth", "gateway"], "{traced:#?}");
    // The gateway's OpenMetrics exposition has the trace id as the exemplar of the
    // request's duration bucket (read by the official parser).
    let exposition = reqwest::Client::new()
        .get(format!("{}/metrics", system.url("gateway")))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exemplars = secureconnect_testkit::python::openmetrics_exemplars(&exposition);
    assert!(
        exemplars
            .iter()
            .any(|e| e.exemplar_labels["trace_id"] == TRACE_ID
                && e.labels["http_route"] == "/v1/auth/{*rest}"
                && e.labels["http_response_status_code"] == "401"),
        "{exemplars:#?}"
    );
    // The chained audit file holds the same trace id.
    let events = system.wait_for_events(2).await;
    assert_eq!(
        events.iter().filter(|e| e["trace_id"] == TRACE_ID).count(),
        2,
        "{events:#?}"
    );
}

#[tokio::test]
async fn a_request_without_traceparent_gets_a_trace_id_on_every_line_shared_downstream() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let system = AllInOne::start(dir.path(), &file, &[("RUST_LOG", "info")]).await;
    let response = failed_login(&system, None).await;
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    // A malformed traceparent is not continued: a trace starts, as without one.
    failed_login(&system, Some("00-XYZ-00f067aa0ba902b7-01")).await;

    let lines = wait_for_lines(&system, |lines| {
        lines.iter().filter(|l| is_audit(l)).count() >= 4
            && lines
                .iter()
                .filter(|l| l["message"] == "request finished" && l["http_route"] != "/health")
                .count()
                >= 4
    })
    .await;
    for line in lines.iter().filter(|l| l.get("request_id").is_some()) {
        assert!(is_hex(&line["trace_id"], 32), "{line}");
        assert!(is_hex(&line["span_id"], 16), "{line}");
        assert_ne!(line["trace_id"], "00000000000000000000000000000000");
    }
    let gateway = lines
        .iter()
        .find(|l| l["request_id"] == request_id.as_str() && l["message"] == "request finished")
        .unwrap();
    let trace_id = &gateway["trace_id"];
    assert!(
        lines
            .iter()
            .any(|l| l["component"] == "auth" && l["trace_id"] == *trace_id),
        "auth continued the gateway's trace"
    );
    let audits: Vec<&Value> = lines.iter().filter(|l| is_audit(l)).collect();
    for line in &audits {
        assert!(is_hex(&line["audit_event"]["trace_id"], 32), "{line}");
    }
    assert_eq!(
        audits
            .iter()
            .filter(|l| l["audit_event"]["trace_id"] == *trace_id)
            .count(),
        2,
        "the gateway's and auth's denial of the first request: {audits:#?}"
    );
}
