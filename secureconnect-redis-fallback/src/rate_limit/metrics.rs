//! The decision counters shared by the limiters of one registry.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::decision::SOURCES;

/// The decision counters of every limiter of a service:
/// `rate_limit_decisions_total{limiter, source, decision}`. Made once per registry and
/// passed to each [`RateLimiter::new`](super::RateLimiter::new) in the registry's place:
/// one family holds every limiter, and registering it once per limiter would expose it
/// twice.
#[derive(Clone, Debug)]
pub struct RateLimitMetrics {
    decisions: Family<Vec<(&'static str, String)>, Counter>,
}

impl RateLimitMetrics {
    /// Registers the family in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let decisions = Family::default();
        registry.register(
            "rate_limit_decisions",
            "Rate-limit decisions by limiter, source and outcome",
            decisions.clone(),
        );
        Self { decisions }
    }

    pub(crate) fn resolve(&self, limiter: &str) -> [[Counter; 2]; 4] {
        SOURCES.map(|source| {
            ["refused", "allowed"].map(|decision| {
                self.decisions.get_or_create_owned(&vec![
                    ("limiter", limiter.to_owned()),
                    ("source", source.as_str().to_owned()),
                    ("decision", decision.to_owned()),
                ])
            })
        })
    }
}
