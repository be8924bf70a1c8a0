//! JSON log lines: one valid object per event, flat fields, request ids from spans, and
//! the same lines in rolling files.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::routing::get;
use axum::Router;
use secureconnect_obs::{logging, ErrorKind, JsonLayer, LogConfig, RequestFinished, RequestSpan};
use serde_json::Value;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

/// Collects everything written, as a real writer would receive it.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes).expect("UTF-8 output");
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "a line was cut: {text:?}"
        );
        text.lines()
            .map(|line| {
                serde_json::from_str::<Value>(line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
            })
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

fn capture(service: &str) -> (Capture, impl tracing::Subscriber + Send + Sync) {
    let out = Capture::default();
    let subscriber = tracing_subscriber::registry().with(JsonLayer::new(service, out.clone()));
    (out, subscriber)
}

#[test]
fn one_flat_json_object_per_event_even_with_newlines() {
    let (out, subscriber) = capture("auth");
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("request", request_id = "req-1", user_id = 7);
        let _entered = span.enter();
        tracing::warn!(
            detail = "line one\nline two\r\n{\"level\":\"ERROR\"}",
            attempts = 3u64,
            ok = false,
            ratio = 0.5,
            "login failed\nfor user"
        );
        tracing::info!(
            level = "shadowed",
            "fields named like fixed keys are renamed"
        );
    });
    let lines = out.lines();
    assert_eq!(lines.len(), 2, "exactly one line per event");
    let first = &lines[0];
    assert_eq!(first["level"], "WARN");
    assert_eq!(first["message"], "login failed\nfor user");
    assert_eq!(first["target"], "logging");
    assert_eq!(first["service"], "auth");
    assert_eq!(first["request_id"], "req-1");
    assert_eq!(first["user_id"], 7);
    assert_eq!(
        first["detail"],
        "line one\nline two\r\n{\"level\":\"ERROR\"}"
    );
    assert_eq!(first["attempts"], 3);
    assert_eq!(first["ok"], false);
    assert_eq!(first["ratio"], 0.5);
    let ts = first["timestamp"].as_str().expect("timestamp string");
    assert!(
        ts.len() >= 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
        "RFC 3339 UTC: {ts}"
    );
    assert_eq!(lines[1]["level"], "INFO");
    assert_eq!(lines[1]["fields.level"], "shadowed");
}

#[test]
fn fields_recorded_later_on_a_span_appear_and_inner_spans_win() {
    let (out, subscriber) = capture("video");
    tracing::subscriber::with_default(subscriber, || {
        let outer = tracing::info_span!("outer", call_id = "c1", user_id = tracing::field::Empty);
        let _o = outer.enter();
        outer.record("user_id", "u9");
        let inner = tracing::info_span!("inner", call_id = "c2");
        let _i = inner.enter();
        tracing::info!("joined");
    });
    let lines = out.lines();
    assert_eq!(lines[0]["user_id"], "u9");
    assert_eq!(lines[0]["call_id"], "c2");
}

#[test]
fn malformed_filter_is_a_clear_error() {
    let err = logging::subscriber(LogConfig::new("x").filter("info,tower_http=loud"))
        .err()
        .expect("a malformed directive is refused");
    assert!(matches!(err.kind(), ErrorKind::InvalidFilter), "{err}");
    assert!(err.to_string().contains("tower_http=loud"));
}

#[test]
fn log_dir_gets_the_same_lines_in_a_daily_file() {
    let dir = tempfile::tempdir().unwrap();
    let (subscriber, guard) = logging::subscriber(
        LogConfig::new("storage")
            .stdout(false)
            .log_dir(dir.path())
            .filter("debug"),
    )
    .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        tracing::debug!(file_id = "f1", "upload url issued");
        tracing::trace!("filtered out");
    });
    drop(guard); // flushes the writer thread
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        name.starts_with("storage.") && name.ends_with(".log"),
        "collectors glob *.log: {name}"
    );
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["file_id"], "f1");
    assert_eq!(lines[0]["service"], "storage");
}

#[test]
fn unwritable_log_dir_is_a_clear_error() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let err = logging::subscriber(LogConfig::new("x").log_dir(file.path().join("sub")))
        .err()
        .expect("a directory below a regular file cannot be made");
    assert!(matches!(err.kind(), ErrorKind::LogDir), "{err}");
}

#[tokio::test(flavor = "current_thread")]
async fn every_line_of_a_request_carries_its_request_id() {
    let (out, subscriber) = capture("gateway");
    // The client runs on this thread too; keep its TRACE lines out.
    let subscriber = subscriber.with(tracing_subscriber::filter::LevelFilter::INFO);
    let _default = tracing::subscriber::set_default(subscriber);

    let app = Router::new()
        .route(
            "/hello/{name}",
            get(|| async {
                tracing::info!(step = "handler", "handling");
                "hi"
            }),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(RequestSpan::default().component("edge"))
                .on_response(RequestFinished::default()),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let response = reqwest::get(format!("http://{addr}/hello/world?token=secret"))
        .await
        .unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(response.text().await.unwrap(), "hi");
    // The response line is logged when the body is done; give the server a moment.
    for _ in 0..50 {
        if out.lines().len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let lines = out.lines();
    assert!(lines.len() >= 2, "{lines:?}");
    for line in &lines {
        assert_eq!(line["request_id"], id.as_str(), "{line}");
        assert_eq!(line["http_route"], "/hello/{name}");
        assert_eq!(line["url_path"], "/hello/world");
        assert!(
            !line.to_string().contains("secret"),
            "query strings stay out"
        );
    }
    assert!(lines.iter().any(|l| l["step"] == "handler"));
    for line in &lines {
        assert_eq!(line["component"], "edge", "{line}");
    }
    let finished = lines
        .iter()
        .find(|l| l["message"] == "request finished")
        .expect("a request finished line");
    assert_eq!(finished["http_response_status_code"], 200);
    let ms = finished["duration_ms"]
        .as_f64()
        .expect("duration_ms is a number");
    assert!((0.0..60_000.0).contains(&ms), "{finished}");
}

#[test]
fn audit_events_are_nested_objects_and_other_text_stays_text() {
    let (out, subscriber) = capture("storage");
    let event = r#"{"schema_version":1,"outcome":"denied","reason":{"code":"not_owner","text":"a\nb \u202e"},"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}"#;
    tracing::subscriber::with_default(subscriber, || {
        tracing::warn!(target: "audit", audit_event = %event, "audit");
        // Not one JSON document, or one broken over lines: kept as a string.
        tracing::warn!(target: "audit", audit_event = "{\"a\":1} trailing", "audit");
        tracing::warn!(target: "audit", audit_event = "{\"a\":\n1}", "audit");
        tracing::warn!(target: "audit", audit_event = "{\"a\":1", "audit");
        // Another field with JSON text is not a JSON field unless named so.
        tracing::info!(detail = "{\"a\":1}", "plain");
    });
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    assert_eq!(text.lines().count(), 5, "one line per event: {text}");
    let lines = out.lines();
    let nested = &lines[0]["audit_event"];
    assert!(nested.is_object(), "{}", lines[0]);
    assert_eq!(nested["outcome"], "denied");
    assert_eq!(nested["reason"]["text"], "a\nb \u{202e}");
    assert_eq!(nested["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(lines[0]["service"], "storage");
    assert_eq!(lines[1]["audit_event"], "{\"a\":1} trailing");
    assert_eq!(lines[2]["audit_event"], "{\"a\":\n1}");
    assert_eq!(lines[3]["audit_event"], "{\"a\":1");
    assert_eq!(lines[4]["detail"], "{\"a\":1}");
}

#[test]
fn fields_named_as_json_fields_are_nested() {
    let out = Capture::default();
    let subscriber = tracing_subscriber::registry()
        .with(JsonLayer::new("shop", out.clone()).json_field("order"));
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(order = r#"{"id":7,"items":[1,2]}"#, "placed");
    });
    let lines = out.lines();
    assert_eq!(lines[0]["order"]["items"][1], 2);
}

/// The keys of a JSON object line in the order written, duplicates included (a
/// `serde_json::Value` would keep only one of them).
fn keys_in_order(line: &str) -> Vec<String> {
    struct Keys;
    impl<'de> serde::de::Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Vec<String>, A::Error> {
            let mut keys = Vec::new();
            while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                keys.push(key);
            }
            Ok(keys)
        }
    }
    let mut de = serde_json::Deserializer::from_str(line);
    serde::Deserializer::deserialize_map(&mut de, Keys).unwrap()
}

/// The raw text written, checked to be whole lines with nothing a reader could take for
/// a line break inside one.
fn raw_lines(out: &Capture) -> Vec<String> {
    let text = String::from_utf8(out.0.lock().unwrap().clone()).expect("UTF-8 output");
    assert!(text.is_empty() || text.ends_with('\n'), "a line was cut");
    for separator in ['\r', '\u{2028}', '\u{2029}', '\u{85}'] {
        assert!(!text.contains(separator), "raw {separator:?} in {text:?}");
    }
    text.lines().map(str::to_owned).collect()
}

#[derive(Debug)]
struct Failure(&'static str);
impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "failed: {}", self.0)
    }
}
impl std::error::Error for Failure {}

#[test]
fn hostile_values_make_one_valid_line_each_and_read_back_unchanged() {
    let hostile = [
        "quote \" backslash \\ end",
        "newline\nreturn\r\ntab\tform\u{c}back\u{8}",
        "nul \u{0} escape \u{1b}[31m bell \u{7} del \u{7f}",
        "separators \u{2028} and \u{2029} and next line \u{85}",
        "{\"level\":\"ERROR\",\"message\":\"forged\"}\n{\"injected\":true}",
        "bidi \u{202e} emoji 🦀 accents é",
    ];
    let long = "x\"\n".repeat(100_000);
    let (out, subscriber) = capture("edge\"\nservice");
    tracing::subscriber::with_default(subscriber, || {
        for text in hostile.iter().copied().chain([long.as_str()]) {
            let span = tracing::info_span!(
                "request",
                url_path = text,
                request_id = tracing::field::Empty
            );
            let _entered = span.enter();
            span.record("request_id", text);
            tracing::info!(
                target: "hostile",
                header = text,
                debugged = ?text,
                error = &Failure("x\ny") as &(dyn std::error::Error + 'static),
                "{text}"
            );
        }
    });
    let raw = raw_lines(&out);
    assert_eq!(raw.len(), hostile.len() + 1, "one line per event");
    for (line, text) in raw
        .iter()
        .zip(hostile.iter().copied().chain([long.as_str()]))
    {
        let value: Value = serde_json::from_str(line).expect("valid JSON");
        assert_eq!(value["service"], "edge\"\nservice");
        assert_eq!(value["message"], text);
        assert_eq!(value["url_path"], text);
        assert_eq!(value["request_id"], text);
        assert_eq!(value["header"], text);
        assert_eq!(value["debugged"], format!("{text:?}"));
        assert_eq!(value["error"], "failed: x\ny");
        let keys = keys_in_order(line);
        assert_eq!(keys.len(), 10, "no key twice: {keys:?}");
    }
}

#[test]
fn fields_keep_the_documented_order_and_later_ones_win() {
    let (out, subscriber) = capture("auth");
    tracing::subscriber::with_default(subscriber, || {
        let outer = tracing::info_span!("outer", a = 1, shared = "outer", message = "span text");
        let _o = outer.enter();
        let inner =
            tracing::info_span!("inner", b = 2, shared = "inner", c = tracing::field::Empty);
        let _i = inner.enter();
        // Recorded again: replaced, not repeated.
        for n in 0..100 {
            inner.record("c", n);
        }
        inner.record("b", "two");
        tracing::info!(z = true, shared = "event", message_count = 1, "done");
        tracing::info!(message = 5);
    });
    let raw = raw_lines(&out);
    assert_eq!(
        keys_in_order(&raw[0]),
        [
            "timestamp",
            "level",
            "message",
            "target",
            "service",
            "a",
            "fields.message",
            "b",
            "c",
            "z",
            "shared",
            "message_count"
        ]
    );
    let lines = out.lines();
    assert_eq!(lines[0]["shared"], "event");
    assert_eq!(lines[0]["b"], "two");
    assert_eq!(lines[0]["c"], 99);
    assert_eq!(lines[0]["fields.message"], "span text");
    assert_eq!(lines[0]["message"], "done");
    assert_eq!(lines[1]["shared"], "inner");
    assert_eq!(lines[1]["message"], "5", "a message is always a string");
    assert_eq!(keys_in_order(&raw[1]).len(), 10);
}

#[test]
fn numbers_that_json_cannot_hold_are_null() {
    let (out, subscriber) = capture("auth");
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(
            nan = f64::NAN,
            inf = f64::INFINITY,
            big = u64::MAX,
            small = i64::MIN,
            "n"
        );
    });
    let lines = out.lines();
    assert!(
        lines[0]["nan"].is_null() && lines[0]["inf"].is_null(),
        "{}",
        lines[0]
    );
    assert_eq!(lines[0]["big"], u64::MAX);
    assert_eq!(lines[0]["small"], i64::MIN);
}

#[tokio::test(flavor = "current_thread")]
async fn hostile_request_headers_and_paths_make_valid_lines() {
    use secureconnect_obs::{RequestTraceConfig, RequestTraceLayer};
    use tower::ServiceExt;

    let (out, subscriber) = capture("gateway");
    let _default = tracing::subscriber::set_default(subscriber);
    let app = Router::new()
        .route("/files/{name}", get(|| async { "ok" }))
        .layer(RequestTraceLayer::new(
            RequestTraceConfig::default().component("edge"),
        ));
    let long_id = "\"\\".repeat(20_000);
    let cases = [
        ("/files/a%22b%0A%E2%80%A8", "quote\"back\\slash\ttab"),
        ("/files/%00%1b", long_id.as_str()),
        ("/nowhere/{x}", "{\"level\":\"ERROR\"}"),
    ];
    for (path, id) in cases {
        let request = http::Request::get(path)
            .header("x-request-id", id)
            .body(axum::body::Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert!(response.status().as_u16() < 500);
    }
    let raw = raw_lines(&out);
    assert_eq!(raw.len(), cases.len(), "{raw:?}");
    for (line, (path, id)) in raw.iter().zip(cases) {
        let value: Value = serde_json::from_str(line).expect("valid JSON");
        assert_eq!(value["message"], "request finished");
        assert_eq!(value["request_id"], id);
        assert_eq!(value["url_path"], path);
        assert_eq!(value["component"], "edge");
        assert!(value["http_response_status_code"].is_u64(), "{value}");
        let keys = keys_in_order(line);
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(keys.len(), unique.len(), "no key twice: {keys:?}");
    }
}

/// A `Debug` that panics, or that logs while it is being recorded.
struct Awkward {
    panics: bool,
}
impl std::fmt::Debug for Awkward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.panics {
            panic!("a Debug impl panics");
        }
        tracing::info!("logged from inside a Debug");
        f.write_str("awkward")
    }
}

#[test]
fn a_field_whose_debug_panics_or_logs_when_recorded_leaves_the_span_usable() {
    let (out, subscriber) = capture("auth");
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!(
            "request",
            a = 1,
            b = tracing::field::Empty,
            c = tracing::field::Empty
        );
        let _entered = span.enter();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            span.record("b", tracing::field::debug(Awkward { panics: true }));
        }));
        assert!(panicked.is_err());
        // The span still works: no poisoned lock, no half-written field.
        span.record("b", "after the panic");
        span.record("c", tracing::field::debug(Awkward { panics: false }));
        tracing::info!("done");
    });
    let lines: Vec<Value> = raw_lines(&out)
        .iter()
        .map(|line| serde_json::from_str(line).expect("valid JSON"))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["message"], "logged from inside a Debug");
    assert_eq!(lines[0]["b"], "after the panic");
    let done = &lines[1];
    assert_eq!(done["message"], "done");
    assert_eq!(done["a"], 1);
    assert_eq!(done["b"], "after the panic");
    assert_eq!(done["c"], "awkward");
}
