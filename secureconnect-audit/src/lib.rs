//! A trustworthy audit trail for HTTP services: every permission denial, every file
//! access, in a form an incident responder or an auditor can rely on.
//!
//! - **Complete where it matters**: [`AuditLayer`] records every `401` and `403`
//!   (these cannot be filtered out) and, by [`AuditPolicy`], other requests; handlers
//!   record domain events (file upload URL issued, download, delete — allowed or
//!   denied) through an [`Auditor`].
//! - **Never silently lossy**: events go through a bounded queue to a sink on a thread
//!   of its own ([`AuditPipeline`]); a full queue drops and counts (default), waits, or
//!   fails closed (`503`), and `produced = written + dropped` is exported. A sink that
//!   hangs, fails or panics never slows a request. [`AuditPipeline::shutdown`] drains
//!   the queue.
//! - **Unforgeable by input**: every text field is cleaned — control characters, line
//!   separators, ANSI escapes and bidi overrides become visible `\u{…}` escapes,
//!   oversized fields are cut, and tokens, cookies and signed-URL signatures are
//!   redacted — and serialized by `serde_json`: one event, one line, whatever a user
//!   name contains. The event records what cleaning did in `flags`.
//! - **Tamper-evident**: [`FileSink`] can hash-chain its lines; the `audit-verify`
//!   binary finds the first edited, deleted, inserted or reordered line, and a cut-off
//!   tail against a kept checkpoint ([`chain`]).
//! - **Standard**: the crate's own JSON, or OCSF ([`ocsf`]).
//!
//! ```
//! use axum::{http::StatusCode, routing::get, Router};
//! use prometheus_client::registry::Registry;
//! use secureconnect_audit::{AuditLayer, AuditPipeline, MemorySink, Outcome, PipelineConfig};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let sink = MemorySink::new();
//! let pipeline = AuditPipeline::new(sink.clone(), PipelineConfig::default(), &mut Registry::default());
//! let app = Router::new()
//!     .route("/admin", get(|| async { StatusCode::FORBIDDEN }))
//!     .layer(AuditLayer::new(pipeline.clone()).service_name("gateway"));
//!
//! let request = http::Request::get("/admin").body(axum::body::Body::empty()).unwrap();
//! assert_eq!(app.oneshot(request).await.unwrap().status(), 403);
//! pipeline.shutdown(std::time::Duration::from_secs(1));
//! let events = sink.events();
//! assert_eq!(events[0].outcome(), Outcome::Denied);
//! assert_eq!(events[0].http().unwrap().route, "/admin");
//! # }
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod auditor;
pub mod chain;
mod client_ip;
mod event;
mod layer;
pub mod ocsf;
mod pipeline;
mod sanitize;
mod sink;

pub use auditor::{Auditor, FileAction};
pub use client_ip::{BadProxy, TrustedProxies};
pub use event::{
    Actor, AuditEvent, EventBuilder, FileInfo, HttpInfo, Outcome, Reason, Text, SCHEMA_VERSION,
};
pub use layer::{Audit, AuditLayer, AuditPolicy, PeerAddr, ResponseFuture};
pub use pipeline::{AuditError, AuditPipeline, Overflow, PipelineConfig, ShutdownReport};
pub use sink::{AuditSink, FileSink, Format, MemorySink, SinkError, TracingSink};
