//! [`HttpMetrics`]: the middleware that records each request.

use std::task::{Context, Poll};

use http::{Request, Response};
use prometheus_client::registry::Registry;
use tower_service::Service;

use super::{HttpMetricsConfig, Recorder, ResponseBody, ResponseFuture};
use crate::labels::MethodLabel;
use crate::{ClassifyRoute, Error, RouteLabel};

/// Middleware that records the RED metrics of every request; made by
/// [`HttpMetricsLayer`](super::HttpMetricsLayer), or by [`HttpMetrics::new`] for plain
/// tower users.
///
/// ```
/// use prometheus_client::registry::Registry;
/// use secureconnect_obs::{HttpMetrics, HttpMetricsConfig, RouteLabel};
///
/// let classify = |path: &str| (path == "/health").then(|| RouteLabel::from_static("/health"));
/// let inner = tower::service_fn(|_: http::Request<String>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(String::from("ok")))
/// });
/// let mut registry = Registry::default();
/// let service = HttpMetrics::new(inner, classify, HttpMetricsConfig::default(), &mut registry)?;
/// # let _ = service.get_ref();
/// # Ok::<(), secureconnect_obs::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct HttpMetrics<S, C> {
    inner: S,
    recorder: Recorder,
    classifier: C,
}

impl<S, C: ClassifyRoute> HttpMetrics<S, C> {
    /// Wraps `inner`, labelling routes with `classifier`: validates `config` and
    /// registers the families in `registry`.
    ///
    /// For several services recording into the same families, make one
    /// [`HttpMetricsLayer`](super::HttpMetricsLayer) instead.
    ///
    /// # Errors
    ///
    /// As [`HttpMetricsLayer::new`](super::HttpMetricsLayer::new).
    pub fn new(
        inner: S,
        classifier: C,
        config: HttpMetricsConfig,
        registry: &mut Registry,
    ) -> Result<Self, Error> {
        Ok(Self::from_parts(
            inner,
            Recorder::register(config, registry)?,
            classifier,
        ))
    }
}

impl<S, C> HttpMetrics<S, C> {
    pub(super) fn from_parts(inner: S, recorder: Recorder, classifier: C) -> Self {
        Self {
            inner,
            recorder,
            classifier,
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

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for HttpMetrics<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    C: ClassifyRoute,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if self.recorder.is_excluded(request.uri().path()) {
            return ResponseFuture::new(self.inner.call(request), None);
        }
        let start = quanta::Instant::now();
        let method = MethodLabel::from(request.method());
        let route = self
            .classifier
            .classify(&request)
            .unwrap_or_else(RouteLabel::unmatched);
        let trace_id = self.recorder.sampled_trace(request.extensions());
        let in_flight = self.recorder.start(method, route, start, trace_id);
        ResponseFuture::new(self.inner.call(request), Some(in_flight))
    }
}
