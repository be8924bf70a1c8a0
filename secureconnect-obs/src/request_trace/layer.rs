//! [`RequestTraceLayer`] and its [`RequestTraceConfig`].

use tower_layer::Layer;

use super::RequestTrace;

/// Configuration of [`RequestTraceLayer`]: the name of the component it serves, and
/// whether it continues the traces its clients send.
///
/// ```
/// use secureconnect_obs::RequestTraceConfig;
///
/// let config = RequestTraceConfig::default().component("gateway");
/// // At an edge facing untrusted clients: their traceparent is only linked.
/// let edge = RequestTraceConfig::default().component("edge").continue_remote(false);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct RequestTraceConfig {
    pub(super) component: Option<&'static str>,
    pub(super) continue_remote: bool,
}

impl Default for RequestTraceConfig {
    fn default() -> Self {
        Self {
            component: None,
            continue_remote: true,
        }
    }
}

impl RequestTraceConfig {
    /// Whether an incoming `traceparent` is continued (default `true`). A client
    /// chooses its trace id and its sampled flag, so with `ParentBased` sampling it
    /// decides what is recorded and exported. At an edge facing untrusted clients, set
    /// `false`: every request starts a trace of its own (sampled by this service), and
    /// the client's context, when valid, is kept as a span link.
    #[must_use]
    pub fn continue_remote(mut self, enabled: bool) -> Self {
        self.continue_remote = enabled;
        self
    }

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
