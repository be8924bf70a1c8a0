//! The audit middleware: [`AuditLayer`] builds [`Audit`], which records every `401` and
//! `403` (these cannot be filtered out) and what the [`AuditPolicy`] asks for, and
//! gives handlers an [`Auditor`](crate::Auditor) for their domain events.
//!
//! | file | holds |
//! |---|---|
//! | `config.rs` | [`AuditConfig`]: policy, trusted proxies, service name, request ids |
//! | `policy.rs` | [`AuditPolicy`]: which requests besides 401/403 are recorded |
//! | `layer.rs` | [`AuditLayer`] |
//! | `service.rs` | [`Audit`]: captures the request context once per request |
//! | `scope.rs` | lends the context to the handlers inside, shared only when one records |
//! | `future.rs` | [`ResponseFuture`]: records the response, or answers `503` (fail-closed) |
//!
//! ```
//! use axum::{http::StatusCode, routing::get, Router};
//! use prometheus_client::registry::Registry;
//! use secureconnect_audit::audit::{AuditConfig, AuditLayer, AuditPolicy};
//! use secureconnect_audit::{AuditPipeline, AuditPipelineConfig, MemorySink, Outcome};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), secureconnect_audit::Error> {
//! let sink = MemorySink::new();
//! let pipeline =
//!     AuditPipeline::new(sink.clone(), AuditPipelineConfig::default(), &mut Registry::default())?;
//! let config = AuditConfig::default()
//!     .service_name("gateway")
//!     .policy(AuditPolicy::denials_only().with_writes())
//!     .trusted_proxies("10.0.0.0/8".parse()?);
//! let app = Router::new()
//!     .route("/admin", get(|| async { StatusCode::FORBIDDEN }))
//!     .layer(AuditLayer::new(pipeline.clone(), config));
//!
//! let request = http::Request::get("/admin").body(axum::body::Body::empty()).unwrap();
//! assert_eq!(app.oneshot(request).await.unwrap().status(), 403);
//! pipeline.shutdown(std::time::Duration::from_secs(1));
//! assert_eq!(sink.events()[0].outcome(), Outcome::Denied);
//! assert_eq!(sink.events()[0].service(), Some("gateway"));
//! # Ok(()) }
//! ```

mod config;
mod future;
mod layer;
mod policy;
pub(crate) mod scope;
mod service;

pub use config::AuditConfig;
pub use future::ResponseFuture;
pub use layer::AuditLayer;
pub use policy::AuditPolicy;
pub use service::Audit;

use crate::AuditPipeline;

/// What every request through one layer shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) pipeline: AuditPipeline,
    pub(crate) config: AuditConfig,
}
