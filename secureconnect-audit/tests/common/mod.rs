//! A real audited axum service on 127.0.0.1:0, writing to a native file, an OCSF file
//! and the tracing sink at once, so that every output can be read back.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod files;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use secureconnect_audit::{
    Actor, AuditConfig, AuditEvent, AuditLayer, AuditPipeline, AuditPipelineConfig, AuditSink,
    Auditor, Error, FileAction, FileInfo, FileSink, FileSinkConfig, Format, MemorySink, Outcome,
    TracingSink, TrustedProxies,
};

/// Writes every batch to several sinks.
pub struct Tee(pub Vec<Box<dyn AuditSink>>);

impl AuditSink for Tee {
    fn write(&mut self, events: &[AuditEvent]) -> Result<(), Error> {
        for sink in &mut self.0 {
            sink.write(events)?;
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), Error> {
        for sink in &mut self.0 {
            sink.flush()?;
        }
        Ok(())
    }
}

/// Captures what the tracing sink emits, as text.
#[derive(Clone, Default)]
pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// The tracing sink wrapped so that its events go to a subscriber of its own.
pub struct ScopedTracing(
    pub TracingSink,
    pub Arc<dyn tracing::Subscriber + Send + Sync>,
);

impl AuditSink for ScopedTracing {
    fn write(&mut self, events: &[AuditEvent]) -> Result<(), Error> {
        let dispatch = tracing::Dispatch::from(Arc::clone(&self.1));
        tracing::dispatcher::with_default(&dispatch, || self.0.write(events))
    }
}

pub struct Service {
    pub addr: SocketAddr,
    pub pipeline: AuditPipeline,
    pub memory: MemorySink,
    pub native: PathBuf,
    pub ocsf: PathBuf,
    pub traced: Captured,
    pub registry: Arc<Registry>,
    _dir: tempfile::TempDir,
}

impl Service {
    /// Waits until the writer has written everything produced so far.
    pub async fn settle(&self) {
        for _ in 0..200 {
            if self.pipeline.written() + self.pipeline.dropped() == self.pipeline.produced() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the audit writer did not catch up");
    }

    /// Every output, as one text each: native file, OCSF file, tracing capture.
    pub fn outputs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("native", std::fs::read_to_string(&self.native).unwrap()),
            ("ocsf", std::fs::read_to_string(&self.ocsf).unwrap()),
            (
                "tracing",
                String::from_utf8(self.traced.0.lock().unwrap().clone()).unwrap(),
            ),
        ]
    }
}

fn actor_from(headers: &HeaderMap) -> Actor {
    headers
        .get("x-test-user")
        .map(|v| Actor::user(String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .unwrap_or(Actor::Anonymous)
}

/// A 403 that names its actor (from `x-test-user`, bytes as sent).
async fn forbidden(headers: HeaderMap) -> Response {
    let mut response = StatusCode::FORBIDDEN.into_response();
    response.extensions_mut().insert(actor_from(&headers));
    response
}

/// What a client may put in a request body: any string at all.
#[derive(serde::Deserialize, Default)]
pub struct Hostile {
    user: Option<String>,
    owner: Option<String>,
    name: Option<String>,
    resource: Option<String>,
    reason: Option<String>,
}

/// A 403 whose actor comes from the JSON body.
async fn deny(Json(body): Json<Hostile>) -> Response {
    let mut response = StatusCode::FORBIDDEN.into_response();
    response
        .extensions_mut()
        .insert(body.user.map_or(Actor::Anonymous, Actor::user));
    response
}

/// A domain event built from the JSON body; denied (and 403) when it has a reason.
async fn file_event(
    auditor: Auditor,
    Path(id): Path<String>,
    body: Option<Json<Hostile>>,
) -> StatusCode {
    let Json(body) = body.unwrap_or_default();
    let file = FileInfo {
        id,
        owner: body.owner,
        name: body.name,
        size: Some(42),
    };
    let outcome = if body.reason.is_some() {
        Outcome::Denied
    } else {
        Outcome::Allowed
    };
    let mut event = AuditEvent::builder(FileAction::UploadUrlIssued.as_str(), outcome)
        .actor(body.user.map_or(Actor::Anonymous, Actor::user))
        .file(file);
    if let Some(resource) = body.resource {
        event = event.resource(resource);
    }
    let denied = body.reason.is_some();
    if let Some(reason) = body.reason {
        event = event.reason("not_owner", reason);
    }
    match auditor.record(event) {
        Ok(()) if denied => StatusCode::FORBIDDEN,
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

pub fn router() -> Router {
    Router::new()
        .route("/admin", get(forbidden))
        .route("/deny", post(deny))
        .route("/login", post(|| async { StatusCode::UNAUTHORIZED }))
        .route("/public", get(|| async { "ok" }))
        .route("/files/{id}", post(file_event))
}

pub async fn start(proxies: TrustedProxies, config: AuditPipelineConfig) -> Service {
    let dir = tempfile::tempdir().unwrap();
    let native = dir.path().join("audit.jsonl");
    let ocsf = dir.path().join("audit.ocsf.jsonl");
    let traced = Captured::default();
    let subscriber: Arc<dyn tracing::Subscriber + Send + Sync> = Arc::new(
        tracing_subscriber::fmt()
            .with_writer(traced.clone())
            .with_ansi(false)
            .finish(),
    );
    let memory = MemorySink::new();
    let tee = Tee(vec![
        Box::new(memory.clone()),
        Box::new(FileSink::open(&native, FileSinkConfig::default()).unwrap()),
        Box::new(
            FileSink::open(
                &ocsf,
                FileSinkConfig::default()
                    .format(Format::Ocsf)
                    .hash_chain(false),
            )
            .unwrap(),
        ),
        Box::new(ScopedTracing(TracingSink::new(Format::Native), subscriber)),
    ]);
    let mut registry = Registry::default();
    let pipeline = AuditPipeline::new(tee, config, &mut registry).unwrap();
    let app = router().layer(AuditLayer::new(
        pipeline.clone(),
        AuditConfig::default()
            .trusted_proxies(proxies)
            .service_name("test"),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    Service {
        addr,
        pipeline,
        memory,
        native,
        ocsf,
        traced,
        registry: Arc::new(registry),
        _dir: dir,
    }
}
