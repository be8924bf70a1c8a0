//! [`HttpMetricsConfig`]: what the request metrics are named, labelled and bucketed
//! with, and which paths they leave out. Validated by [`HttpMetricsLayer::new`].
//!
//! [`HttpMetricsLayer::new`]: super::HttpMetricsLayer::new

use crate::error::{check_name, Error};

use super::DEFAULT_BUCKETS;

/// Configuration of the request metrics ([`HttpMetricsLayer`](super::HttpMetricsLayer),
/// [`HttpMetrics`](super::HttpMetrics)).
///
/// The default: no prefix, [`DEFAULT_BUCKETS`], no constant labels, `/metrics` excluded.
/// Setters never fail; the values are checked once, by
/// [`HttpMetricsLayer::new`](super::HttpMetricsLayer::new).
///
/// ```
/// use secureconnect_obs::HttpMetricsConfig;
///
/// let config = HttpMetricsConfig::default()
///     .prefix("myapp")
///     .buckets([0.01, 0.1, 1.0])
///     .const_label("service", "gateway");
/// ```
#[derive(Clone, Debug)]
pub struct HttpMetricsConfig {
    pub(super) prefix: Option<String>,
    pub(super) buckets: Vec<f64>,
    pub(super) const_labels: Vec<(String, String)>,
    pub(super) excluded_paths: Vec<String>,
    pub(super) exemplars: bool,
}

impl Default for HttpMetricsConfig {
    fn default() -> Self {
        Self {
            prefix: None,
            buckets: DEFAULT_BUCKETS.to_vec(),
            const_labels: Vec::new(),
            excluded_paths: vec![crate::endpoint::DEFAULT_PATH.to_owned()],
            exemplars: true,
        }
    }
}

impl HttpMetricsConfig {
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

    /// Whether each bucket of the duration histogram keeps, as an exemplar, the trace id
    /// of a recent sampled request that landed in it (default `true`). The trace id is
    /// that of the OpenTelemetry `SpanContext` in the request's extensions, such as
    /// [`RequestTraceLayer`](crate::RequestTraceLayer) puts there (add it outside this
    /// layer); a request without one, or unsampled, leaves none. Exemplars appear in the
    /// OpenMetrics exposition only.
    pub fn exemplars(mut self, enabled: bool) -> Self {
        self.exemplars = enabled;
        self
    }

    /// Checks the buckets, the prefix and the constant label names.
    pub(super) fn validate(&self) -> Result<(), Error> {
        let valid_buckets = !self.buckets.is_empty()
            && self.buckets.iter().all(|b| b.is_finite())
            && self.buckets.windows(2).all(|w| w[0] < w[1]);
        if !valid_buckets {
            return Err(Error::invalid_buckets(self.buckets.clone()));
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
                return Err(Error::invalid_name(
                    "constant label name (used by the request labels)",
                    name,
                ));
            }
        }
        Ok(())
    }
}
