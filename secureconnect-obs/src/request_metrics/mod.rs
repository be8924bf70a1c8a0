//! RED request metrics: rate, errors and duration per method, route and status.
//!
//! [`HttpMetricsLayer::new`] registers two families in the [`Registry`] you pass in:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `http_server_request_duration_seconds` | histogram (its `_count` is the request counter) | `http_request_method`, `http_route`, `http_response_status_code` |
//! | `http_server_active_requests` | gauge | `http_request_method`, `http_route` |
//!
//! The duration runs from the moment the request reaches the middleware until the
//! response body has been sent in full, or dropped. A request whose future is dropped
//! before a response exists (the client went away) is recorded with status `499`, as
//! nginx does; a service error (no response at all) is recorded as `500`. The in-flight
//! gauge is released by a drop guard, so cancelled requests never leak.
//!
//! The pieces, as in tower-http: [`HttpMetricsConfig`] (validated once, by
//! [`HttpMetricsLayer::new`]), [`HttpMetricsLayer`] which builds the middleware
//! [`HttpMetrics`], its [`ResponseFuture`] and its [`ResponseBody`]. With axum the route
//! label is read from `MatchedPath`; for plain tower or hyper, set a
//! [`ClassifyRoute`](crate::ClassifyRoute) with [`HttpMetricsLayer::with_classifier`].
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use axum::{routing::get, Router};
//! use prometheus_client::registry::Registry;
//! use secureconnect_obs::{
//!     HttpMetricsConfig, HttpMetricsLayer, MetricsEndpointConfig, MetricsEndpointLayer,
//! };
//!
//! let mut registry = Registry::default();
//! let metrics = HttpMetricsLayer::new(HttpMetricsConfig::default(), &mut registry)?;
//! let endpoint = MetricsEndpointLayer::new(Arc::new(registry), MetricsEndpointConfig::default())?;
//!
//! let app: Router = Router::new()
//!     .route("/users/{id}", get(|| async { "hello" }))
//!     .layer(metrics)
//!     .layer(endpoint);
//! # Ok::<(), secureconnect_obs::Error>(())
//! ```

mod body;
mod config;
mod future;
mod layer;
mod series;
mod service;

use std::sync::Arc;

use prometheus_client::registry::Registry;

pub use self::body::ResponseBody;
pub use self::config::HttpMetricsConfig;
pub use self::future::ResponseFuture;
pub use self::layer::HttpMetricsLayer;
pub use self::service::HttpMetrics;

pub(crate) use self::series::DURATION_HELP;
use self::series::{Series, SeriesCollector, SeriesMap};
use crate::error::Error;
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

/// The registered request-metric families of one service: what the layer, and every
/// middleware it builds, record into. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Recorder {
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    series: SeriesMap,
    excluded_paths: Box<[Box<str>]>,
    /// Whether sampled requests leave exemplars.
    exemplars: bool,
    /// Wall-clock times of exemplars.
    clock: crate::exemplar::Clock,
}

impl Recorder {
    /// Validates `config` and registers the families in `registry`; nothing is
    /// registered when the configuration is refused.
    pub(crate) fn register(
        config: HttpMetricsConfig,
        registry: &mut Registry,
    ) -> Result<Self, Error> {
        config.validate()?;
        let HttpMetricsConfig {
            prefix,
            buckets,
            const_labels,
            excluded_paths,
            exemplars,
        } = config;
        let mut registry = match &prefix {
            Some(prefix) => registry.sub_registry_with_prefix(prefix),
            None => registry,
        };
        if !const_labels.is_empty() {
            registry = registry.sub_registry_with_labels(
                const_labels.into_iter().map(|(k, v)| (k.into(), v.into())),
            );
        }

        let clock = crate::exemplar::Clock::new();
        let shared = Arc::new(Shared {
            series: SeriesMap::new(buckets.into(), exemplars, clock.epoch()),
            excluded_paths: excluded_paths.into_iter().map(Into::into).collect(),
            exemplars,
            clock,
        });
        registry.register_collector(Box::new(SeriesCollector(Arc::clone(&shared))));
        Ok(Self { shared })
    }

    fn is_excluded(&self, path: &str) -> bool {
        self.shared.excluded_paths.iter().any(|p| **p == *path)
    }

    /// The trace id to keep as an exemplar for a request with these extensions: that of
    /// its sampled trace context, when exemplars are on; `0` otherwise.
    fn sampled_trace(&self, extensions: &http::Extensions) -> u128 {
        if !self.shared.exemplars {
            return 0;
        }
        match extensions.get::<opentelemetry::trace::SpanContext>() {
            Some(context) if context.is_sampled() => {
                u128::from_be_bytes(context.trace_id().to_bytes())
            }
            _ => 0,
        }
    }

    /// Marks the start of a request: enters its series and returns the guard that
    /// records the request when dropped. `trace_id`: of a sampled request, else 0.
    fn start(
        &self,
        method: MethodLabel,
        route: RouteLabel,
        start: quanta::Instant,
        trace_id: u128,
    ) -> InFlight {
        let series = self.shared.series.get(ActiveLabels { method, route });
        series.enter();
        InFlight {
            series,
            status: STATUS_CLIENT_CLOSED,
            start,
            trace_id,
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
    /// The trace id of a sampled request (its exemplar), else 0.
    trace_id: u128,
}

impl InFlight {
    pub(crate) fn set_status(&mut self, status: u16) {
        self.status = status;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = quanta::Instant::now();
        let elapsed = now.saturating_duration_since(self.start);
        let trace = (self.trace_id != 0).then(|| (self.trace_id, self.series.since_epoch(now)));
        self.series.exit(self.status, elapsed.as_secs_f64(), trace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn kind_of(config: HttpMetricsConfig, r: &mut Registry) -> Option<ErrorKind> {
        HttpMetricsLayer::new(config, r).err().map(|e| e.kind())
    }

    #[test]
    fn rejects_bad_buckets_and_names() {
        let mut r = Registry::default();
        assert!(matches!(
            kind_of(HttpMetricsConfig::default().buckets([1.0, 0.5]), &mut r),
            Some(ErrorKind::InvalidBuckets)
        ));
        assert!(matches!(
            kind_of(HttpMetricsConfig::default().buckets([f64::NAN]), &mut r),
            Some(ErrorKind::InvalidBuckets)
        ));
        assert!(matches!(
            kind_of(HttpMetricsConfig::default().buckets([]), &mut r),
            Some(ErrorKind::InvalidBuckets)
        ));
        assert!(matches!(
            kind_of(HttpMetricsConfig::default().prefix("my-app"), &mut r),
            Some(ErrorKind::InvalidName)
        ));
        assert!(matches!(
            kind_of(
                HttpMetricsConfig::default().const_label("http_route", "x"),
                &mut r
            ),
            Some(ErrorKind::InvalidName)
        ));
    }

    #[test]
    fn guard_records_once_and_releases_gauge() {
        let mut r = Registry::default();
        let m = Recorder::register(HttpMetricsConfig::default(), &mut r).expect("valid");
        let route = || RouteLabel::from_static("/x");
        let mut g = m.start(MethodLabel::Get, route(), quanta::Instant::now(), 0);
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
        drop(m.start(MethodLabel::Get, route(), quanta::Instant::now(), 0));
        assert_eq!(series.count(STATUS_CLIENT_CLOSED), 1);
        assert_eq!(series.active(), 0);
    }
}
