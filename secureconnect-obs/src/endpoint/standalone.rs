//! [`MetricsService`]: the metrics as a service of their own, to mount as a route or
//! to serve on a separate listener.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use prometheus_client::registry::Registry;
use tower_service::Service;

use super::respond::{plain, Responder, WithHeader};
use super::MetricsEndpointConfig;
use crate::Error;

/// A service that answers with the metrics: `GET` gets the exposition, other methods
/// `405`.
///
/// With no path configured it answers on whatever path it is given, which makes it the
/// cheapest way to serve `/metrics` from an axum router: mounted as a route, it costs
/// the other routes nothing per request.
///
/// ```
/// use std::sync::Arc;
/// use axum::{routing::get, Router};
/// use prometheus_client::registry::Registry;
/// use secureconnect_obs::{HttpMetricsConfig, HttpMetricsLayer, MetricsEndpointConfig, MetricsService};
///
/// let mut registry = Registry::default();
/// let metrics = HttpMetricsLayer::new(HttpMetricsConfig::default(), &mut registry)?;
/// let endpoint = MetricsService::new(Arc::new(registry), MetricsEndpointConfig::default())?;
/// let app: Router = Router::new()
///     .route("/", get(|| async { "hello" }))
///     .route_service("/metrics", endpoint)
///     .layer(metrics);
/// # Ok::<(), secureconnect_obs::Error>(())
/// ```
///
/// For a listener of its own, set a [path](MetricsEndpointConfig::path) (or use
/// [`MetricsEndpointLayer::into_service`](super::MetricsEndpointLayer::into_service)):
/// the service then answers only there, and `404` elsewhere.
#[derive(Clone, Debug)]
pub struct MetricsService {
    responder: Arc<Responder>,
    /// `None`: every path.
    path: Option<Arc<str>>,
}

impl MetricsService {
    /// Serves `registry` on the configured path, or on every path when none is set.
    ///
    /// # Errors
    ///
    /// As [`MetricsEndpointLayer::new`](super::MetricsEndpointLayer::new).
    pub fn new(registry: Arc<Registry>, config: MetricsEndpointConfig) -> Result<Self, Error> {
        let config = config.validate()?;
        Ok(Self::from_parts(
            Arc::new(Responder::new(registry, config.bearer)),
            config.path,
        ))
    }

    pub(super) fn from_parts(responder: Arc<Responder>, path: Option<Arc<str>>) -> Self {
        Self { responder, path }
    }
}

impl<B> Service<Request<B>> for MetricsService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let response = if self
            .path
            .as_deref()
            .is_some_and(|path| request.uri().path() != path)
        {
            plain(StatusCode::NOT_FOUND, "not found\n")
        } else if request.method() != Method::GET {
            plain(StatusCode::METHOD_NOT_ALLOWED, "only GET is allowed\n")
                .with_header(header::ALLOW, "GET")
        } else {
            self.responder.respond(request.headers())
        };
        std::future::ready(Ok(response))
    }
}
