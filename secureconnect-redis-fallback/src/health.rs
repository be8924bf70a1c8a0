//! The health state machine.
//!
//! ```text
//!            connection error / N timeouts / failed probe
//!   Healthy ────────────────────────────────────────────► Degraded ◄──┐
//!      ▲                                                     │        │ a probe or an
//!      │ `recovery_probes` probes in a row                   │ probe  │ admitted call
//!      │ succeeded                                           ▼ ok     │ fails
//!      └──────────────────────────────────────────────── Recovering ──┘
//! ```
//!
//! The current state is one atomic byte: a call checks it without a lock. Every change
//! is published on a `watch` channel, logged (target `secureconnect_redis_fallback`)
//! and reflected in the metrics.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};

use tokio::sync::{watch, Notify};

use crate::metrics::ClientMetrics;

/// How this client sees Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Health {
    /// Calls go to Redis.
    Healthy,
    /// Calls fail at once with an unavailable error; probes look for Redis's return.
    Degraded,
    /// Redis answers probes again; a growing share of calls goes to Redis.
    Recovering,
}

impl Health {
    /// `healthy`, `degraded` or `recovering`: the `state` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Recovering => "recovering",
        }
    }

    const fn to_u8(self) -> u8 {
        match self {
            Self::Healthy => 0,
            Self::Degraded => 1,
            Self::Recovering => 2,
        }
    }

    const fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Healthy,
            2 => Self::Recovering,
            _ => Self::Degraded,
        }
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a call may not go to Redis right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    Degraded,
    WritesRefused,
}

/// Shared health state of one client.
#[derive(Debug)]
pub(crate) struct Tracker {
    state: AtomicU8,
    writes_refused: AtomicBool,
    auth_failed: AtomicBool,
    timeouts_in_a_row: AtomicU32,
    recovery_successes: AtomicU32,
    admissions: AtomicU32,
    recovery_probes: u32,
    timeouts_to_rebuild: u32,
    timeouts_to_degrade: u32,
    tx: watch::Sender<Health>,
    /// Wakes the supervisor: a state change or a rebuild request.
    pub(crate) wake: Notify,
    rebuild: AtomicBool,
    metrics: ClientMetrics,
}

impl Tracker {
    pub(crate) fn new(
        metrics: ClientMetrics,
        recovery_probes: u32,
        timeouts_to_rebuild: u32,
        timeouts_to_degrade: u32,
    ) -> Self {
        let (tx, _) = watch::channel(Health::Degraded);
        metrics.set_health(Health::Degraded);
        Self {
            state: AtomicU8::new(Health::Degraded.to_u8()),
            writes_refused: AtomicBool::new(false),
            auth_failed: AtomicBool::new(false),
            timeouts_in_a_row: AtomicU32::new(0),
            recovery_successes: AtomicU32::new(0),
            admissions: AtomicU32::new(0),
            recovery_probes,
            timeouts_to_rebuild,
            timeouts_to_degrade,
            tx,
            wake: Notify::new(),
            rebuild: AtomicBool::new(false),
            metrics,
        }
    }

    pub(crate) fn health(&self) -> Health {
        Health::from_u8(self.state.load(Ordering::Acquire))
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Health> {
        self.tx.subscribe()
    }

    pub(crate) fn metrics(&self) -> &ClientMetrics {
        &self.metrics
    }

    pub(crate) fn writes_refused(&self) -> bool {
        self.writes_refused.load(Ordering::Relaxed)
    }

    pub(crate) fn auth_failed(&self) -> bool {
        self.auth_failed.load(Ordering::Relaxed)
    }

    /// Whether a call may go to Redis now. While recovering, a growing share does.
    pub(crate) fn admit(&self, write: bool) -> Result<(), Refusal> {
        match self.health() {
            Health::Healthy => {}
            Health::Degraded => return Err(Refusal::Degraded),
            Health::Recovering => {
                let successes = self.recovery_successes.load(Ordering::Relaxed);
                let turn = self.admissions.fetch_add(1, Ordering::Relaxed) % self.recovery_probes;
                if turn >= successes {
                    return Err(Refusal::Degraded);
                }
            }
        }
        if write && self.writes_refused() {
            return Err(Refusal::WritesRefused);
        }
        Ok(())
    }

    /// Moves to `to` if the state is `from` (any state when `from` is `None`).
    fn transition(&self, from: Option<Health>, to: Health, reason: &str) -> bool {
        let current = self.health();
        if current == to || from.is_some_and(|f| f != current) {
            return false;
        }
        if self
            .state
            .compare_exchange(
                current.to_u8(),
                to.to_u8(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return false;
        }
        self.timeouts_in_a_row.store(0, Ordering::Relaxed);
        self.recovery_successes
            .store(u32::from(to == Health::Recovering), Ordering::Relaxed);
        self.metrics.set_health(to);
        match to {
            Health::Degraded => tracing::warn!(
                target: "secureconnect_redis_fallback",
                from = %current, reason, "redis degraded: calls take their fallback"
            ),
            _ => tracing::info!(
                target: "secureconnect_redis_fallback",
                from = %current, to = %to, reason, "redis health changed"
            ),
        }
        self.tx.send_replace(to);
        self.wake.notify_one();
        true
    }

    pub(crate) fn degrade(&self, reason: &str) -> bool {
        self.transition(None, Health::Degraded, reason)
    }

    pub(crate) fn start_recovering(&self) -> bool {
        self.transition(
            Some(Health::Degraded),
            Health::Recovering,
            "probe succeeded",
        )
    }

    pub(crate) fn become_healthy(&self, reason: &str) -> bool {
        self.transition(None, Health::Healthy, reason)
    }

    /// A probe succeeded while recovering; `true` once enough have.
    pub(crate) fn recovery_probe_succeeded(&self) -> bool {
        let successes = self.recovery_successes.fetch_add(1, Ordering::Relaxed) + 1;
        successes >= self.recovery_probes
    }

    /// Redis answered a call (an error reply about the command counts: Redis is up).
    pub(crate) fn on_reply(&self) {
        if self.timeouts_in_a_row.load(Ordering::Relaxed) != 0 {
            self.timeouts_in_a_row.store(0, Ordering::Relaxed);
        }
    }

    pub(crate) fn on_timeout(&self) {
        let n = self.timeouts_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.timeouts_to_degrade {
            self.degrade("calls timed out");
        } else if n >= self.timeouts_to_rebuild && !self.rebuild.swap(true, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    pub(crate) fn on_unavailable(&self, reason: &str) {
        self.degrade(reason);
    }

    pub(crate) fn on_auth_failure(&self) {
        if !self.auth_failed.swap(true, Ordering::Relaxed) {
            tracing::error!(
                target: "secureconnect_redis_fallback",
                "redis refuses this client's credentials (NOAUTH/WRONGPASS): check the password \
                 in the redis URL; retrying slowly"
            );
        }
        self.degrade("authentication refused");
    }

    pub(crate) fn set_auth_ok(&self) {
        self.auth_failed.store(false, Ordering::Relaxed);
    }

    pub(crate) fn on_writes_refused(&self) {
        if !self.writes_refused.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                target: "secureconnect_redis_fallback",
                "redis refuses writes (OOM or READONLY): writes take their fallback, reads go on"
            );
            self.wake.notify_one();
        }
    }

    pub(crate) fn set_writes_ok(&self) {
        if self.writes_refused.swap(false, Ordering::Relaxed) {
            tracing::info!(target: "secureconnect_redis_fallback", "redis accepts writes again");
        }
    }

    /// Takes a pending request to rebuild the main connection.
    pub(crate) fn take_rebuild(&self) -> bool {
        self.rebuild.swap(false, Ordering::AcqRel)
    }
}
