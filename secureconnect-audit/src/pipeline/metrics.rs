//! The pipeline's metrics, registered once in the caller's registry.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug)]
pub(super) struct Metrics {
    /// Events handed to the sink and not yet accounted for. Whoever takes them (the
    /// writer when the sink returns, or a shutdown that gives up on a hung sink)
    /// counts them, exactly once.
    pub(super) in_sink: Arc<AtomicU64>,
    pub(super) produced: Counter,
    pub(super) written: Counter,
    pub(super) dropped_full: Counter,
    pub(super) dropped_sink: Counter,
    pub(super) dropped_shutdown: Counter,
    pub(super) sink_errors: Counter,
    pub(super) depth: Gauge,
    pub(super) refused_requests: Counter,
}

impl Metrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let produced = Counter::default();
        registry.register(
            "audit_events_produced",
            "Audit events produced",
            produced.clone(),
        );
        let written = Counter::default();
        registry.register(
            "audit_events_written",
            "Audit events written by the sink",
            written.clone(),
        );
        let dropped = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
        registry.register(
            "audit_events_dropped",
            "Audit events lost, by reason",
            dropped.clone(),
        );
        let sink_errors = Counter::default();
        registry.register(
            "audit_sink_errors",
            "Failed or panicked sink writes",
            sink_errors.clone(),
        );
        let depth = Gauge::default();
        registry.register(
            "audit_queue_depth",
            "Audit events waiting for the sink",
            depth.clone(),
        );
        let refused_requests = Counter::default();
        registry.register(
            "audit_requests_refused",
            "Requests refused before their handler ran because a fail-closed audit trail was full",
            refused_requests.clone(),
        );
        let reason = |r| dropped.get_or_create_owned(&vec![("reason", r)]);
        Self {
            in_sink: Arc::new(AtomicU64::new(0)),
            produced,
            written,
            dropped_full: reason("queue_full"),
            dropped_sink: reason("sink_error"),
            dropped_shutdown: reason("shutdown"),
            sink_errors,
            depth,
            refused_requests,
        }
    }

    pub(super) fn dropped(&self) -> u64 {
        self.dropped_full.get() + self.dropped_sink.get() + self.dropped_shutdown.get()
    }
}
