//! Helpers shared by the integration tests: a real server on 127.0.0.1:0, a real HTTP
//! client, and real exposition parsers (promtool, prometheus-parse, Python's
//! prometheus_client).
#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;

use axum::Router;
use prometheus_client::registry::Registry;
use secureconnect_obs::{
    HttpMetricsConfig, HttpMetricsLayer, MetricsEndpointConfig, MetricsEndpointLayer,
};

/// Serves `router` on a free loopback port.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        axum::serve(listener, router).await.expect("server runs");
    });
    addr
}

/// `router` with request metrics and `/metrics`, in a registry of its own.
pub fn instrument(router: Router) -> Router {
    let mut registry = Registry::default();
    let metrics = HttpMetricsLayer::new(HttpMetricsConfig::default(), &mut registry)
        .expect("default config is valid");
    router.layer(metrics).layer(
        MetricsEndpointLayer::new(Arc::new(registry), MetricsEndpointConfig::default())
            .expect("default config is valid"),
    )
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_gzip()
        .build()
        .expect("client builds")
}

/// The Prometheus text exposition at `http://addr/metrics`.
pub async fn scrape(addr: SocketAddr) -> String {
    let response = client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    response.text().await.expect("scrape body")
}

/// One sample as the Python prometheus_client parser read it.
#[derive(Debug, serde::Deserialize)]
pub struct Sample {
    pub name: String,
    pub labels: std::collections::HashMap<String, String>,
    pub value: f64,
}

/// Parses a Prometheus text (0.0.4) exposition with the official Python client's
/// parser, an implementation independent of ours; fails the test on any parse error.
pub fn parse(text: &str) -> Vec<Sample> {
    python_samples(text, "text")
}

/// The value of the sample `name` whose labels include all of `labels`, if any.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .filter(|s| s.name == name)
        .find(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// How many series of metric `name` (by sample name) the exposition holds.
pub fn series_count(text: &str, name: &str) -> usize {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .count()
}

/// Runs `promtool check metrics` on `text` and returns what it printed; fails the test
/// if promtool is missing (the test command installs it) or reports a problem.
pub fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed (scripts/test installs Debian's prometheus package)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics complained:\n{said}\n--- exposition ---\n{text}"
    );
}

/// Parses `text` with the Python prometheus_client parser of `format` (`text` or
/// `openmetrics`) and returns the samples; fails on any parse error.
pub fn python_samples(text: &str, format: &str) -> Vec<Sample> {
    let module = match format {
        "openmetrics" => "prometheus_client.openmetrics.parser",
        _ => "prometheus_client.parser",
    };
    let script = format!(
        "import sys, json\nfrom {module} import text_string_to_metric_families as p\n\
         print(json.dumps([{{'name': s.name, 'labels': s.labels, 'value': s.value}} \
         for f in p(sys.stdin.read()) for s in f.samples]))"
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = text.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("python3 finishes");
    writer
        .join()
        .expect("writer thread")
        .expect("write to python");
    assert!(
        out.status.success(),
        "the Python prometheus_client {format} parser refused the exposition \
         (scripts/test installs the package):\n{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the parser's samples as JSON")
}

/// Serves a plain tower service (no axum) on a free loopback port with hyper.
pub async fn serve_tower<S, B>(service: S) -> SocketAddr
where
    S: tower::Service<
            axum::http::Request<hyper::body::Incoming>,
            Response = axum::http::Response<B>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = hyper_util::service::TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
    addr
}
