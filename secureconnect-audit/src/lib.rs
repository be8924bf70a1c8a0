//! A trustworthy audit trail for HTTP services: every permission denial, every file
//! access, in a form an incident responder or an auditor can rely on.
//!
//! - **Complete where it matters**: [`AuditLayer`] ([`audit`]) records every `401`
//!   and `403` (these cannot be filtered out) and, by [`AuditPolicy`], other requests;
//!   handlers record domain events (file upload URL issued, download, delete — allowed
//!   or denied) through an [`Auditor`].
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
//! use secureconnect_audit::{
//!     AuditConfig, AuditLayer, AuditPipeline, AuditPipelineConfig, MemorySink, Outcome,
//! };
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), secureconnect_audit::Error> {
//! let sink = MemorySink::new();
//! let pipeline =
//!     AuditPipeline::new(sink.clone(), AuditPipelineConfig::default(), &mut Registry::default())?;
//! let app = Router::new()
//!     .route("/admin", get(|| async { StatusCode::FORBIDDEN }))
//!     .layer(AuditLayer::new(pipeline.clone(), AuditConfig::default().service_name("gateway")));
//!
//! let request = http::Request::get("/admin").body(axum::body::Body::empty()).unwrap();
//! assert_eq!(app.oneshot(request).await.unwrap().status(), 403);
//! pipeline.shutdown(std::time::Duration::from_secs(1));
//! let events = sink.events();
//! assert_eq!(events[0].outcome(), Outcome::Denied);
//! assert_eq!(events[0].http().unwrap().route, "/admin");
//! # Ok(()) }
//! ```
//!
//! # Conventions
//!
//! The crate follows the family's: [`AuditPipeline::new`] takes its dependencies, an
//! [`AuditPipelineConfig`] (private fields, `Default`, consuming setters, checked once
//! in `new`) and the `Registry` last; the middleware is [`AuditLayer`] → [`Audit`] →
//! [`audit::ResponseFuture`], configured by an [`AuditConfig`]; every fallible
//! operation returns the one [`Error`], whose [`kind`](Error::kind) says what went
//! wrong ([`Error::is_refused`]: fail-closed, refuse the operation).

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod audit;
mod auditor;
pub mod chain;
mod client_ip;
mod context;
mod error;
mod event;
mod ids;
pub mod ocsf;
mod pipeline;
mod sanitize;
mod sink;

pub use audit::{Audit, AuditConfig, AuditLayer, AuditPolicy};
pub use auditor::{Auditor, FileAction};
pub use client_ip::{ClientIp, TrustedProxies};
pub use context::PeerAddr;
pub use error::{Error, ErrorKind};
pub use event::{
    Actor, ActorRef, AuditEvent, EventBuilder, FileInfo, FileRef, HttpInfo, Outcome, Reason, Text,
    SCHEMA_VERSION,
};
pub use pipeline::{AuditPipeline, AuditPipelineConfig, Overflow, ShutdownReport};
pub use sink::{AuditSink, FileSink, FileSinkConfig, Format, MemorySink, TracingSink};
