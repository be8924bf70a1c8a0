//! [`RequestTraceLayer`] and its [`RequestTraceConfig`].

use tower_layer::Layer;

use super::RequestTrace;

/// Configuration of [`RequestTraceLayer`]: the name of the component it serves.
///
/// ```
/// use secureconnect_obs::RequestTraceConfig;
///
/// let config = RequestTraceConfig::default().component("gateway");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestTraceConfig {
    pub(super) component: Option<&'static str>,
}

impl RequestTraceConfig {
    /// Names the component that serves the requests (`component` on every line): in a
    /// process that runs several services, which one wrote the line.
    #[must_use]
    pub fn component(mut self, name: &'static str) -> Self {
        self.component = Some(name);
        self
    }
}

/// [`Layer`] that traces every request; see the [module docs](crate::request_trace).
#[derive(Clone, Copy, Debug)]
pub struct RequestTraceLayer {
    config: RequestTraceConfig,
}

impl RequestTraceLayer {
    /// A layer tracing requests as `config` says.
    pub fn new(config: RequestTraceConfig) -> Self {
        Self { config }
    }
}

impl<S> Layer<S> for RequestTraceLayer {
    type Service = RequestTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestTrace::new(inner, self.config)
    }
}
