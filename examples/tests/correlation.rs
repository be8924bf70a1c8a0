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
