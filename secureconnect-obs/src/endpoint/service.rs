//! [`MetricsEndpoint`]: the middleware that answers `GET /metrics` and passes every
//! other request through.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use prometheus_client::registry::Registry;
use tower_service::Service;

use super::respond::Responder;
use super::{MetricsEndpointConfig, MetricsEndpointLayer, ResponseBody, ResponseFuture};
use crate::Error;

/// Middleware that answers `GET /metrics` and passes everything else through; made by
/// [`MetricsEndpointLayer`], or by [`MetricsEndpoint::new`] for plain tower users.
#[derive(Clone, Debug)]
pub struct MetricsEndpoint<S> {
    inner: S,
    responder: Arc<Responder>,
    path: Arc<str>,
}

impl<S> MetricsEndpoint<S> {
    /// Wraps `inner`, serving `registry` at the configured path.
    ///
    /// # Errors
    ///
    /// As [`MetricsEndpointLayer::new`].
    pub fn new(
        inner: S,
        registry: Arc<Registry>,
        config: MetricsEndpointConfig,
    ) -> Result<Self, Error> {
        use tower_layer::Layer as _;
        Ok(MetricsEndpointLayer::new(registry, config)?.layer(inner))
    }

    pub(super) fn from_parts(inner: S, responder: Arc<Responder>, path: Arc<str>) -> Self {
        Self {
            inner,
            responder,
            path,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for MetricsEndpoint<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if request.method() == Method::GET && request.uri().path() == &*self.path {
            ResponseFuture::ready(self.responder.respond(request.headers()))
        } else {
            ResponseFuture::inner(self.inner.call(request))
        }
    }
}
