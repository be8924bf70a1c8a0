use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::{HttpMetrics, MetricsBody, ResponseFuture};
use crate::labels::MethodLabel;
use crate::{ClassifyRoute, RouteLabel};

/// [`Layer`] that records the RED metrics of every request; see the
/// [module docs](crate::request_metrics).
#[derive(Clone, Debug)]
pub struct HttpMetricsLayer<C> {
    metrics: HttpMetrics,
    classifier: C,
}

impl<C> HttpMetricsLayer<C> {
    pub(crate) fn new(metrics: HttpMetrics, classifier: C) -> Self {
        Self {
            metrics,
            classifier,
        }
    }
}

impl<S, C: Clone> Layer<S> for HttpMetricsLayer<C> {
    type Service = HttpMetricsService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpMetricsService {
            inner,
            metrics: self.metrics.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// Middleware that records the RED metrics of every request; made by
/// [`HttpMetricsLayer`].
#[derive(Clone, Debug)]
pub struct HttpMetricsService<S, C> {
    inner: S,
    metrics: HttpMetrics,
    classifier: C,
}

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for HttpMetricsService<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    C: ClassifyRoute,
{
    type Response = Response<MetricsBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if self.metrics.is_excluded(request.uri().path()) {
            return ResponseFuture::new(self.inner.call(request), None);
        }
        let start = quanta::Instant::now();
        let method = MethodLabel::from(request.method());
        let route = self
            .classifier
            .classify(&request)
            .unwrap_or_else(RouteLabel::unmatched);
        let in_flight = self.metrics.start(method, route, start);
        ResponseFuture::new(self.inner.call(request), Some(in_flight))
    }
}
