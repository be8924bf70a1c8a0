//! The client's metrics, registered in the caller's registry.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `redis_up` | gauge: 1 unless degraded | |
//! | `redis_health_state` | gauge: 1 for the current state | `state` = `healthy` / `degraded` / `recovering` |
//! | `redis_commands_total` | counter | `outcome` = `ok` / `command_error` / `timeout` / `unavailable` / `rejected` |
//! | `redis_fallback_total` | counter | `primitive`, `policy` |
//! | `redis_degraded_seconds_total` | counter | |
//! | `redis_probe_duration_seconds` | histogram | |
//! | `redis_connections_total` | counter: connections opened | `purpose` = `main` / `probe` |
//! | `redis_cluster_slots_down` | gauge (Cluster only): hash slots whose master is down | |

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::cluster::view::ClusterView;
use crate::health::Health;

/// How a call ended, for `redis_commands_total{outcome}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Redis answered.
    Ok,
    /// Redis rejected the command itself.
    CommandError,
    /// No reply within the deadline.
    Timeout,
    /// A connection error or a server state meaning "not now".
    Unavailable,
    /// Refused at once, without touching the network.
    Rejected,
}

/// Counters resolved once, so the call path only does an atomic increment.
#[derive(Clone, Debug)]
pub(crate) struct ClientMetrics {
    pub(crate) up: Gauge,
    states: [Gauge; 3],
    ok: Counter,
    command_error: Counter,
    timeout: Counter,
    unavailable: Counter,
    rejected: Counter,
    pub(crate) probe_duration: Histogram,
    pub(crate) main_connections: Counter,
    pub(crate) probe_connections: Counter,
    fallback: Family<Vec<(&'static str, &'static str)>, Counter>,
    degraded: Arc<DegradedClock>,
}

/// Time spent degraded, for `redis_degraded_seconds_total`.
#[derive(Debug, Default)]
pub(crate) struct DegradedClock(Mutex<(Duration, Option<Instant>)>);

impl DegradedClock {
    fn set(&self, degraded: bool) {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match (degraded, state.1) {
            (true, None) => state.1 = Some(Instant::now()),
            (false, Some(since)) => {
                state.0 += since.elapsed();
                state.1 = None;
            }
            _ => {}
        }
    }

    pub(crate) fn total(&self) -> Duration {
        let state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        state.0 + state.1.map_or(Duration::ZERO, |since| since.elapsed())
    }
}

#[derive(Debug)]
struct DegradedCollector(Arc<DegradedClock>);

impl Collector for DegradedCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let metric = encoder.encode_descriptor(
            "redis_degraded_seconds",
            "Time this client has spent degraded.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.0.total().as_secs_f64()).encode(metric)
    }
}

#[derive(Debug)]
struct SlotsDownCollector(Arc<ClusterView>);

impl Collector for SlotsDownCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let metric = encoder.encode_descriptor(
            "redis_cluster_slots_down",
            "Hash slots whose Cluster master this client sees down (their calls are refused)",
            None,
            MetricType::Gauge,
        )?;
        prometheus_client::metrics::gauge::ConstGauge::new(i64::from(self.0.slots_down()))
            .encode(metric)
    }
}

/// `registry`, or its sub-registry labelled `redis="<name>"`.
fn labelled<'a>(registry: &'a mut Registry, name: Option<&str>) -> &'a mut Registry {
    match name {
        Some(name) => registry.sub_registry_with_label(("redis".into(), name.to_owned().into())),
        None => registry,
    }
}

impl ClientMetrics {
    /// `redis_cluster_slots_down`, read from `view` at each scrape.
    pub(crate) fn register_cluster(
        &self,
        registry: &mut Registry,
        name: Option<&str>,
        view: Arc<ClusterView>,
    ) {
        labelled(registry, name).register_collector(Box::new(SlotsDownCollector(view)));
    }

    pub(crate) fn register(registry: &mut Registry, name: Option<&str>) -> Self {
        let registry = labelled(registry, name);
        let up = Gauge::default();
        registry.register(
            "redis_up",
            "Whether Redis is usable as this client sees it (1) or degraded (0)",
            up.clone(),
        );

        let state = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
        registry.register(
            "redis_health_state",
            "Health state of this client's view of Redis: 1 for the current state",
            state.clone(),
        );
        let states = [Health::Healthy, Health::Degraded, Health::Recovering]
            .map(|h| state.get_or_create_owned(&vec![("state", h.as_str())]));

        let commands = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
        registry.register(
            "redis_commands",
            "Redis calls by outcome; `rejected` were refused at once while degraded",
            commands.clone(),
        );
        let outcome = |o: &'static str| commands.get_or_create_owned(&vec![("outcome", o)]);

        let fallback = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
        registry.register(
            "redis_fallback",
            "Decisions taken by a degraded-mode primitive without Redis",
            fallback.clone(),
        );

        let degraded = Arc::new(DegradedClock::default());
        registry.register_collector(Box::new(DegradedCollector(Arc::clone(&degraded))));

        let probe_duration = Histogram::new([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
        ]);
        registry.register_with_unit(
            "redis_probe_duration",
            "Duration of PING probes on the probe connection",
            Unit::Seconds,
            probe_duration.clone(),
        );

        let connections = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
        registry.register(
            "redis_connections",
            "Connections this client opened to Redis",
            connections.clone(),
        );

        let main_connections = connections.get_or_create_owned(&vec![("purpose", "main")]);
        let probe_connections = connections.get_or_create_owned(&vec![("purpose", "probe")]);
        Self {
            up,
            states,
            ok: outcome("ok"),
            command_error: outcome("command_error"),
            timeout: outcome("timeout"),
            unavailable: outcome("unavailable"),
            rejected: outcome("rejected"),
            probe_duration,
            main_connections,
            probe_connections,
            fallback,
            degraded,
        }
    }

    pub(crate) fn set_health(&self, health: Health) {
        self.up.set(i64::from(health != Health::Degraded));
        for (gauge, state) in
            self.states
                .iter()
                .zip([Health::Healthy, Health::Degraded, Health::Recovering])
        {
            gauge.set(i64::from(state == health));
        }
        self.degraded.set(health == Health::Degraded);
    }

    /// Counts one call in `redis_commands_total`.
    pub(crate) fn count(&self, outcome: Outcome) {
        match outcome {
            Outcome::Ok => &self.ok,
            Outcome::CommandError => &self.command_error,
            Outcome::Timeout => &self.timeout,
            Outcome::Unavailable => &self.unavailable,
            Outcome::Rejected => &self.rejected,
        }
        .inc();
    }

    /// The counter of fallback decisions of `primitive` under `policy`.
    pub(crate) fn fallback(&self, primitive: &'static str, policy: &'static str) -> Counter {
        self.fallback
            .get_or_create_owned(&vec![("primitive", primitive), ("policy", policy)])
    }

    /// The `redis_health_state` gauges: healthy, degraded, recovering.
    #[cfg(test)]
    pub(crate) fn state_gauges(&self) -> [i64; 3] {
        [0, 1, 2].map(|i| self.states[i].get())
    }

    pub(crate) fn degraded_time(&self) -> Duration {
        self.degraded.total()
    }
}
