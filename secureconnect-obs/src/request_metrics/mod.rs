//! RED request metrics: rate, errors and duration per method, route and status.
//!
//! [`HttpMetrics`] registers two families in the [`Registry`] you pass in:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `http_server_request_duration_seconds` | histogram (its `_count` is the request counter) | `http_request_method`, `http_route`, `http_response_status_code` |
//! | `http_server_active_requests` | gauge | `http_request_method`, `http_route` |
//!
//! The duration runs from the moment the request reaches the layer until the response
//! body has been sent in full, or dropped. A request whose future is dropped before a
//! response exists (the client went away) is recorded with status `499`, as nginx does;
//! a service error (no response at all) is recorded as `500`. The in-flight gauge is
//! released by a drop guard, so cancelled requests never leak.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use axum::{routing::get, Router};
//! use prometheus_client::registry::Registry;
//! use secureconnect_obs::{HttpMetrics, MetricsEndpointLayer};
//!
//! let mut registry = Registry::default();
//! let metrics = HttpMetrics::builder().register(&mut registry)?;
//!
//! let app: Router = Router::new()
//!     .route("/users/{id}", get(|| async { "hello" }))
//!     .layer(metrics.layer())
//!     .layer(MetricsEndpointLayer::new(Arc::new(registry)));
//! # Ok::<(), secureconnect_obs::Error>(())
//! ```

mod body;
mod future;
mod layer;
mod series;

use std::sync::Arc;

use prometheus_client::registry::Registry;

pub use self::body::MetricsBody;
pub use self::future::ResponseFuture;
pub use self::layer::{HttpMetricsLayer, HttpMetricsService};

use self::series::{Series, SeriesCollector, SeriesMap};
use crate::error::{check_name, Error};
use crate::labels::{ActiveLabels, MethodLabel};
use crate::RouteLabel;

/// Default bucket bounds in seconds, as OpenTelemetry recommends for HTTP server
/// durations.
pub const DEFAULT_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Status recorded when the client went away before a response existed.
pub const STATUS_CLIENT_CLOSED: u16 = 499;

/// Status recorded when the inner service returned an error instead of a response.
pub const STATUS_SERVICE_ERROR: u16 = 500;

/// The request-metric families of one service, registered in one registry.
///
/// Cheap to clone; every clone records into the same families. Make the layer with
/// [`HttpMetrics::layer`].
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    series: SeriesMap,
    excluded_paths: Box<[Box<str>]>,
}

impl HttpMetrics {
    /// Starts a configuration with the defaults: no prefix, [`DEFAULT_BUCKETS`], no
    /// constant labels, `/metrics` excluded.
    pub fn builder() -> HttpMetricsBuilder {
        HttpMetricsBuilder::default()
    }

    /// The layer that records requests, labelling routes with axum's `MatchedPath`.
    #[cfg(feature = "axum")]
    pub fn layer(&self) -> HttpMetricsLayer<crate::MatchedPathRoute> {
        HttpMetricsLayer::new(self.clone(), crate::MatchedPathRoute)
    }

    /// The layer that records requests, labelling routes with `classifier`.
    pub fn layer_with_classifier<C: crate::ClassifyRoute>(
        &self,
        classifier: C,
    ) -> HttpMetricsLayer<C> {
        HttpMetricsLayer::new(self.clone(), classifier)
    }

    fn is_excluded(&self, path: &str) -> bool {
        self.shared.excluded_paths.iter().any(|p| **p == *path)
    }

    /// Marks the start of a request: enters its series and returns the guard that
    /// records the request when dropped.
    fn start(&self, method: MethodLabel, route: RouteLabel, start: quanta::Instant) -> InFlight {
        let series = self.shared.series.get(ActiveLabels { method, route });
        series.enter();
        InFlight {
            series,
            status: STATUS_CLIENT_CLOSED,
            start,
        }
    }
}

/// One request in flight. Dropping it records the duration with the status set so far
/// and leaves the in-flight gauge, exactly once, whatever path the request took.
#[derive(Debug)]
pub(crate) struct InFlight {
    series: Arc<Series>,
    status: u16,
    start: quanta::Instant,
}

impl InFlight {
    pub(crate) fn set_status(&mut self, status: u16) {
        self.status = status;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let elapsed = quanta::Instant::now().saturating_duration_since(self.start);
        self.series.exit(self.status, elapsed.as_secs_f64());
    }
}

/// Configuration of [`HttpMetrics`].
#[derive(Clone, Debug)]
pub struct HttpMetricsBuilder {
    prefix: Option<String>,
    buckets: Vec<f64>,
    const_labels: Vec<(String, String)>,
    excluded_paths: Vec<String>,
}

impl Default for HttpMetricsBuilder {
    fn default() -> Self {
        Self {
            prefix: None,
            buckets: DEFAULT_BUCKETS.to_vec(),
            const_labels: Vec::new(),
            excluded_paths: vec![crate::endpoint::DEFAULT_PATH.to_owned()],
        }
    }
}

impl HttpMetricsBuilder {
    /// Prefixes both metric names, e.g. `myapp` gives
    /// `myapp_http_server_request_duration_seconds`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Replaces the histogram bucket bounds (seconds). They must be finite and strictly
    /// increasing; `+Inf` is always added.
    pub fn buckets(mut self, buckets: impl IntoIterator<Item = f64>) -> Self {
        self.buckets = buckets.into_iter().collect();
        self
    }

    /// Adds a label with a fixed value to every series, such as `service="gateway"`.
    pub fn const_label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.const_labels.push((name.into(), value.into()));
        self
    }

    /// Also leaves requests to `path` unrecorded (exact match). `/metrics` is excluded
    /// by default.
    pub fn exclude_path(mut self, path: impl Into<String>) -> Self {
        self.excluded_paths.push(path.into());
        self
    }

    /// Records every path, `/metrics` included.
    pub fn exclude_nothing(mut self) -> Self {
        self.excluded_paths.clear();
        self
    }

    /// Validates the configuration and registers the families in `registry`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidBuckets`] or [`Error::InvalidName`] on a malformed bucket list,
    /// prefix or constant label name; nothing is registered then.
    pub fn register(self, registry: &mut Registry) -> Result<HttpMetrics, Error> {
        let valid_buckets = !self.buckets.is_empty()
            && self.buckets.iter().all(|b| b.is_finite())
            && self.buckets.windows(2).all(|w| w[0] < w[1]);
        if !valid_buckets {
            return Err(Error::InvalidBuckets(self.buckets));
        }
        if let Some(prefix) = &self.prefix {
            check_name("metric prefix", prefix)?;
        }
        for (name, _) in &self.const_labels {
            check_name("label name", name)?;
            if [
                crate::labels::METHOD,
                crate::labels::ROUTE,
                crate::labels::STATUS,
            ]
            .contains(&name.as_str())
            {
                return Err(Error::InvalidName {
                    kind: "constant label name (used by the request labels)",
                    name: name.clone(),
                });
            }
        }

        let mut registry = match &self.prefix {
            Some(prefix) => registry.sub_registry_with_prefix(prefix),
            None => registry,
        };
        if !self.const_labels.is_empty() {
            registry = registry.sub_registry_with_labels(
                self.const_labels
                    .into_iter()
                    .map(|(k, v)| (k.into(), v.into())),
            );
        }

        let shared = Arc::new(Shared {
            series: SeriesMap::new(self.buckets.into()),
            excluded_paths: self.excluded_paths.into_iter().map(Into::into).collect(),
        });
        registry.register_collector(Box::new(SeriesCollector(Arc::clone(&shared))));
        // Calibrate the clock now rather than on the first request.
        let _ = quanta::Instant::now();
        Ok(HttpMetrics { shared })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_buckets_and_names() {
        let mut r = Registry::default();
        assert!(matches!(
            HttpMetrics::builder().buckets([1.0, 0.5]).register(&mut r),
            Err(Error::InvalidBuckets(_))
        ));
        assert!(matches!(
            HttpMetrics::builder().buckets([f64::NAN]).register(&mut r),
            Err(Error::InvalidBuckets(_))
        ));
        assert!(matches!(
            HttpMetrics::builder().buckets([]).register(&mut r),
            Err(Error::InvalidBuckets(_))
        ));
        assert!(matches!(
            HttpMetrics::builder().prefix("my-app").register(&mut r),
            Err(Error::InvalidName { .. })
        ));
        assert!(matches!(
            HttpMetrics::builder()
                .const_label("http_route", "x")
                .register(&mut r),
            Err(Error::InvalidName { .. })
        ));
    }

    #[test]
    fn guard_records_once_and_releases_gauge() {
        let mut r = Registry::default();
        let m = HttpMetrics::builder().register(&mut r).expect("valid");
        let route = || RouteLabel::from_static("/x");
        let mut g = m.start(MethodLabel::Get, route(), quanta::Instant::now());
        g.set_status(204);
        let series = m.shared.series.get(ActiveLabels {
            method: MethodLabel::Get,
            route: route(),
        });
        assert_eq!(series.active(), 1);
        drop(g);
        assert_eq!(series.active(), 0);
        assert_eq!(series.count(204), 1);
        assert_eq!(series.count(STATUS_CLIENT_CLOSED), 0);

        // A request that never got a response is recorded as 499.
        drop(m.start(MethodLabel::Get, route(), quanta::Instant::now()));
        assert_eq!(series.count(STATUS_CLIENT_CLOSED), 1);
        assert_eq!(series.active(), 0);
    }
}
