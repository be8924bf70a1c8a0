//! [`HttpMetricsLayer`]: registers the request-metric families and builds the
//! [`HttpMetrics`] middleware.

use prometheus_client::registry::Registry;
use tower_layer::Layer;

use super::{HttpMetrics, HttpMetricsConfig, Recorder};
use crate::{ClassifyRoute, Error};

/// [`Layer`] that records the RED metrics of every request; see the
/// [module docs](crate::request_metrics).
///
/// It holds the registered families: every [`HttpMetrics`] it builds records into the
/// same series, and cloning it is cheap.
#[derive(Clone, Debug)]
pub struct HttpMetricsLayer<C> {
    recorder: Recorder,
    classifier: C,
}

#[cfg(feature = "axum")]
impl HttpMetricsLayer<crate::MatchedPathRoute> {
    /// Validates `config` and registers the families in `registry`; routes are labelled
    /// with axum's `MatchedPath` ([`MatchedPathRoute`](crate::MatchedPathRoute)).
    ///
    /// For plain tower or hyper services, or without the `axum` feature, use
    /// [`with_classifier`](HttpMetricsLayer::with_classifier).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidBuckets`](crate::ErrorKind::InvalidBuckets) or
    /// [`ErrorKind::InvalidName`](crate::ErrorKind::InvalidName) on a malformed bucket
    /// list, prefix or constant label name; nothing is registered then.
    pub fn new(config: HttpMetricsConfig, registry: &mut Registry) -> Result<Self, Error> {
        Self::with_classifier(crate::MatchedPathRoute, config, registry)
    }
}

impl<C: ClassifyRoute> HttpMetricsLayer<C> {
    /// Validates `config` and registers the families in `registry`; routes are labelled
    /// by `classifier`.
    ///
    /// # Errors
    ///
    /// As [`new`](HttpMetricsLayer::new).
    pub fn with_classifier(
        classifier: C,
        config: HttpMetricsConfig,
        registry: &mut Registry,
    ) -> Result<Self, Error> {
        Ok(Self {
            recorder: Recorder::register(config, registry)?,
            classifier,
        })
    }
}

impl<C> HttpMetricsLayer<C> {
    /// The same families, with routes labelled by `classifier`: one registration can
    /// serve an axum router and a plain tower service side by side.
    pub fn classifier<D: ClassifyRoute>(self, classifier: D) -> HttpMetricsLayer<D> {
        HttpMetricsLayer {
            recorder: self.recorder,
            classifier,
        }
    }
}

impl<S, C: Clone> Layer<S> for HttpMetricsLayer<C> {
    type Service = HttpMetrics<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpMetrics::from_parts(inner, self.recorder.clone(), self.classifier.clone())
    }
}
