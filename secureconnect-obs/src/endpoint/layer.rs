//! [`MetricsEndpointLayer`]: builds the [`MetricsEndpoint`] middleware.

use std::sync::Arc;

use prometheus_client::registry::Registry;
use tower_layer::Layer;

use super::respond::Responder;
use super::{MetricsEndpoint, MetricsEndpointConfig, MetricsService, DEFAULT_PATH};
use crate::Error;

/// [`Layer`] that answers `GET /metrics` (path configurable) and passes every other
/// request to the wrapped service. See the [module docs](super).
#[derive(Clone, Debug)]
pub struct MetricsEndpointLayer {
    responder: Arc<Responder>,
    path: Arc<str>,
}

impl MetricsEndpointLayer {
    /// Serves `registry` at the configured path ([`DEFAULT_PATH`] unless set).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidPath`](crate::ErrorKind::InvalidPath) if the path does not
    /// start with `/`, [`ErrorKind::InvalidToken`](crate::ErrorKind::InvalidToken) if
    /// the bearer token is empty or not visible ASCII.
    pub fn new(registry: Arc<Registry>, config: MetricsEndpointConfig) -> Result<Self, Error> {
        let config = config.validate()?;
        Ok(Self {
            responder: Arc::new(Responder::new(registry, config.bearer)),
            path: config.path.unwrap_or_else(|| DEFAULT_PATH.into()),
        })
    }

    /// A stand-alone service with the same registry, path and token, for a listener of
    /// its own: the metrics at the path, `404` elsewhere, `405` for methods other than
    /// `GET`.
    pub fn into_service(self) -> MetricsService {
        MetricsService::from_parts(self.responder, Some(self.path))
    }
}

impl<S> Layer<S> for MetricsEndpointLayer {
    type Service = MetricsEndpoint<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsEndpoint::from_parts(inner, Arc::clone(&self.responder), Arc::clone(&self.path))
    }
}
