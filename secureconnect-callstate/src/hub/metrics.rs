//! The hub's metrics: calls and participants served, rejoins, recovery, write-behind.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::redis_store::{RecoveryReport, Skipped};

#[derive(Clone, Debug)]
pub(super) struct Metrics {
    pub(super) calls: Gauge,
    pub(super) participants: Gauge,
    recovery_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    recovered: Family<Vec<(&'static str, &'static str)>, Counter>,
    pub(super) write_behind_depth: Gauge,
    pub(super) write_backs: Counter,
    /// `call_adopted_calls_total`: calls this node took over from a node whose lease
    /// lapsed.
    pub(super) adopted: Counter,
    /// `call_rejoins_total` by outcome, resolved once: [`Rejoin`] indexes it.
    rejoins: [Counter; 4],
}

/// How a rejoin ended, as `call_rejoins_total{outcome}` counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Rejoin {
    /// The participant has its place back.
    Rejoined,
    /// A wrong token, or another user's participant.
    BadToken,
    /// No such call or participant (any more: it may have expired).
    NotFound,
    /// The call was still being recovered.
    Recovering,
}

impl Rejoin {
    const ALL: [Self; 4] = [
        Self::Rejoined,
        Self::BadToken,
        Self::NotFound,
        Self::Recovering,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Rejoined => "rejoined",
            Self::BadToken => "bad_token",
            Self::NotFound => "not_found",
            Self::Recovering => "recovering",
        }
    }
}

impl Metrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let calls = Gauge::default();
        registry.register("calls_active", "Calls this node serves", calls.clone());
        let participants = Gauge::default();
        registry.register(
            "call_participants",
            "Participants of the calls this node serves",
            participants.clone(),
        );
        let recovery_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "call_recovery_duration_seconds",
            "Duration of the last recovery of calls from Redis",
            recovery_seconds.clone(),
        );
        let recovered: Family<Vec<(&'static str, &'static str)>, Counter> = Family::default();
        // Every outcome exported from the start, at 0 until a recovery meets one.
        for outcome in ["recovered", "corrupt", "foreign", "dangling"] {
            drop(recovered.get_or_create(&vec![("outcome", outcome)]));
        }
        registry.register(
            "call_recovery_calls",
            "Calls met at recovery, by outcome: recovered, corrupt, foreign, dangling",
            recovered.clone(),
        );
        let write_behind_depth = Gauge::default();
        registry.register(
            "call_write_behind_depth",
            "Call changes waiting to be written to Redis",
            write_behind_depth.clone(),
        );
        let write_backs = Counter::default();
        registry.register(
            "call_full_write_backs",
            "Full write-backs of every call to Redis after it was unavailable",
            write_backs.clone(),
        );
        let rejoins = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
        registry.register(
            "call_rejoins",
            "Rejoins by outcome: rejoined, bad_token, not_found, recovering",
            rejoins.clone(),
        );
        let adopted = Counter::default();
        registry.register(
            "call_adopted_calls",
            "Calls this node adopted from a node whose lease lapsed",
            adopted.clone(),
        );
        let rejoins =
            Rejoin::ALL.map(|r| rejoins.get_or_create_owned(&vec![("outcome", r.as_str())]));
        Self {
            calls,
            participants,
            recovery_seconds,
            recovered,
            write_behind_depth,
            write_backs,
            adopted,
            rejoins,
        }
    }

    /// Counts one rejoin.
    pub(super) fn rejoin(&self, outcome: Rejoin) {
        self.rejoins[outcome as usize].inc();
    }

    /// Records how long a recovery took, from its start to the last call loaded.
    pub(super) fn recovery_took(&self, took: std::time::Duration) {
        self.recovery_seconds.set(took.as_secs_f64());
    }

    /// Counts what a recovery (or part of one) found.
    pub(super) fn recovered(&self, report: &RecoveryReport) {
        let count = |outcome: &'static str, n: usize| {
            self.recovered
                .get_or_create(&vec![("outcome", outcome)])
                .inc_by(n as u64);
        };
        count("recovered", report.calls.len());
        count("dangling", report.dangling_removed);
        let corrupt = report
            .skipped
            .iter()
            .filter(|s| matches!(s, Skipped::Corrupt { .. }))
            .count();
        count("corrupt", corrupt);
        count("foreign", report.skipped.len() - corrupt);
    }
}
