//! [`AuditLayer`]: builds the [`Audit`] middleware.

use std::sync::Arc;

use tower_layer::Layer;

use super::{Audit, AuditConfig, Shared};
use crate::AuditPipeline;

/// [`Layer`] that records every 401 and 403 (and what the
/// [`AuditPolicy`](crate::AuditPolicy) asks for) into an [`AuditPipeline`] and gives
/// handlers an [`Auditor`](crate::Auditor); see [`AuditConfig`] for request ids and
/// client addresses.
///
/// The actor is taken from an [`Actor`](crate::Actor) in the response's extensions
/// (set by the handler or an auth middleware inside this layer), else from the
/// request's (set by one outside), else [`Actor::Anonymous`](crate::Actor::Anonymous).
///
/// ```
/// use axum::{routing::get, Router};
/// use prometheus_client::registry::Registry;
/// use secureconnect_audit::{AuditConfig, AuditLayer, AuditPipeline, AuditPipelineConfig, MemorySink};
///
/// # fn main() -> Result<(), secureconnect_audit::Error> {
/// let pipeline =
///     AuditPipeline::new(MemorySink::new(), AuditPipelineConfig::default(), &mut Registry::default())?;
/// let app: Router = Router::new()
///     .route("/", get(|| async { "hello" }))
///     .layer(AuditLayer::new(pipeline, AuditConfig::default().service_name("gateway")));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct AuditLayer {
    shared: Arc<Shared>,
}

impl AuditLayer {
    /// Records into `pipeline` as `config` says.
    pub fn new(pipeline: AuditPipeline, config: AuditConfig) -> Self {
        Self {
            shared: Arc::new(Shared { pipeline, config }),
        }
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = Audit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Audit::from_shared(inner, Arc::clone(&self.shared))
    }
}
