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
//! [`Machine`] is the state machine itself: a plain value with one step function
//! ([`Machine::step`]) from an [`Event`] to a [`Step`] (the transition, if any, and what
//! to do about it), with no clock, no lock and no I/O, so every transition is
//! unit-tested without Redis. [`Tracker`] shares one machine between the calls and the
//! supervisor: it feeds events under a lock and publishes every change while still
//! holding it (an atomic byte that a call checks without a lock, the `watch` channel,
//! the metrics), so every view agrees; then it logs (target
//! `secureconnect_redis_fallback`) and wakes the supervisor.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::{watch, Notify};

use crate::classify::Failure;
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

/// What happened, as fed to the [`Machine`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// Redis answered a call (an error reply about the command counts: Redis is up).
    Reply,
    /// A call ran out of time.
    Timeout,
    /// A connection error or a server state meaning "not now", with the reason logged.
    Unavailable(&'static str),
    /// Redis refused our credentials.
    AuthRefused,
    /// Redis refused a write (`OOM`, `READONLY`); it answered, so it is up.
    WritesRefused,
    /// The write probe succeeded.
    WritesAccepted,
    /// A `PING` probe succeeded.
    ProbeOk,
    /// A `PING` probe failed (other than on credentials).
    ProbeFailed,
    /// The first connection at start succeeded.
    Connected,
    /// While degraded, a probe and a new main connection succeeded.
    Reconnected,
}

/// A change of [`Health`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Transition {
    pub(crate) from: Health,
    pub(crate) to: Health,
    pub(crate) reason: &'static str,
}

/// What one [`Event`] did, and what the caller of [`Machine::step`] must do about it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Step {
    /// The state changed: publish it, log it, wake the supervisor.
    pub(crate) transition: Option<Transition>,
    /// Rebuild the main connection (newly requested): wake the supervisor.
    pub(crate) rebuild: bool,
    /// Our credentials were just refused: say so loudly, once.
    pub(crate) auth_refused: bool,
    /// `Some(true)`: writes were just refused (log, wake the supervisor to probe);
    /// `Some(false)`: writes are accepted again (log).
    pub(crate) writes_refused: Option<bool>,
}

impl Step {
    /// Whether the supervisor must look at the state again now.
    pub(crate) fn wakes_supervisor(&self) -> bool {
        self.transition.is_some() || self.rebuild || self.writes_refused == Some(true)
    }
}

/// The health state machine of one client: a plain value, no I/O.
#[derive(Clone, Debug)]
pub(crate) struct Machine {
    health: Health,
    writes_refused: bool,
    auth_failed: bool,
    timeouts_in_a_row: u32,
    recovery_successes: u32,
    admissions: u32,
    rebuild_pending: bool,
    recovery_probes: u32,
    timeouts_to_rebuild: u32,
    timeouts_to_degrade: u32,
}

impl Machine {
    /// Starts degraded: nothing is known about Redis until the first connection.
    pub(crate) fn new(
        recovery_probes: u32,
        timeouts_to_rebuild: u32,
        timeouts_to_degrade: u32,
    ) -> Self {
        Self {
            health: Health::Degraded,
            writes_refused: false,
            auth_failed: false,
            timeouts_in_a_row: 0,
            recovery_successes: 0,
            admissions: 0,
            rebuild_pending: false,
            recovery_probes: recovery_probes.max(1),
            timeouts_to_rebuild: timeouts_to_rebuild.max(1),
            timeouts_to_degrade: timeouts_to_degrade.max(1),
        }
    }

    pub(crate) fn health(&self) -> Health {
        self.health
    }

    pub(crate) fn writes_refused(&self) -> bool {
        self.writes_refused
    }

    pub(crate) fn auth_failed(&self) -> bool {
        self.auth_failed
    }

    pub(crate) fn timeouts_in_a_row(&self) -> u32 {
        self.timeouts_in_a_row
    }

    /// Whether a call may go to Redis now. While recovering, a growing share does:
    /// of every `recovery_probes` calls, as many as probes have succeeded.
    pub(crate) fn admit(&mut self, write: bool) -> Result<(), Failure> {
        match self.health {
            Health::Healthy => {}
            Health::Degraded => return Err(Failure::DEGRADED),
            Health::Recovering => {
                let turn = self.admissions % self.recovery_probes;
                self.admissions = self.admissions.wrapping_add(1);
                if turn >= self.recovery_successes {
                    return Err(Failure::DEGRADED);
                }
            }
        }
        if write && self.writes_refused {
            return Err(Failure::WRITES_REFUSED);
        }
        Ok(())
    }

    /// Takes a pending request to rebuild the main connection.
    pub(crate) fn take_rebuild(&mut self) -> bool {
        std::mem::take(&mut self.rebuild_pending)
    }

    /// Moves to `to` unless already there.
    fn go(&mut self, to: Health, reason: &'static str) -> Option<Transition> {
        let from = self.health;
        if from == to {
            return None;
        }
        self.health = to;
        self.timeouts_in_a_row = 0;
        self.recovery_successes = u32::from(to == Health::Recovering);
        Some(Transition { from, to, reason })
    }

    /// The step function: applies `event`, says what changed.
    pub(crate) fn step(&mut self, event: Event) -> Step {
        let mut step = Step::default();
        match event {
            Event::Reply => self.timeouts_in_a_row = 0,
            Event::Timeout => {
                self.timeouts_in_a_row = self.timeouts_in_a_row.saturating_add(1);
                if self.timeouts_in_a_row >= self.timeouts_to_degrade {
                    step.transition = self.go(Health::Degraded, "calls timed out");
                } else if self.timeouts_in_a_row >= self.timeouts_to_rebuild
                    && !self.rebuild_pending
                {
                    self.rebuild_pending = true;
                    step.rebuild = true;
                }
            }
            Event::Unavailable(reason) => step.transition = self.go(Health::Degraded, reason),
            Event::AuthRefused => {
                step.auth_refused = !std::mem::replace(&mut self.auth_failed, true);
                step.transition = self.go(Health::Degraded, "authentication refused");
            }
            Event::WritesRefused => {
                self.timeouts_in_a_row = 0;
                if !std::mem::replace(&mut self.writes_refused, true) {
                    step.writes_refused = Some(true);
                }
            }
            Event::WritesAccepted => {
                if std::mem::replace(&mut self.writes_refused, false) {
                    step.writes_refused = Some(false);
                }
            }
            Event::ProbeOk => {
                self.auth_failed = false;
                if self.health == Health::Recovering {
                    self.recovery_successes += 1;
                    if self.recovery_successes >= self.recovery_probes {
                        step.transition = self.go(Health::Healthy, "recovery probes succeeded");
                    }
                }
            }
            Event::ProbeFailed => {
                let reason = if self.health == Health::Recovering {
                    "probe failed while recovering"
                } else {
                    "probe failed"
                };
                step.transition = self.go(Health::Degraded, reason);
            }
            Event::Connected => step.transition = self.go(Health::Healthy, "connected"),
            Event::Reconnected => {
                if self.health == Health::Degraded {
                    step.transition = self.go(Health::Recovering, "probe succeeded");
                }
            }
        }
        step
    }
}

/// One [`Machine`] shared by a client's calls and its supervisor, and the views it is
/// published through.
#[derive(Debug)]
pub(crate) struct Tracker {
    machine: Mutex<Machine>,
    /// The published state, read by every call without a lock.
    state: AtomicU8,
    /// The published "writes refused" flag, read by every call without a lock.
    writes_refused: AtomicBool,
    /// Whether timeouts are being counted: only then does a reply need the lock.
    counting: AtomicBool,
    tx: watch::Sender<Health>,
    /// Wakes the supervisor: a state change or a rebuild request.
    pub(crate) wake: Notify,
    metrics: ClientMetrics,
}

impl Tracker {
    pub(crate) fn new(metrics: ClientMetrics, machine: Machine) -> Self {
        let health = machine.health();
        let (tx, _) = watch::channel(health);
        metrics.set_health(health);
        Self {
            state: AtomicU8::new(health.to_u8()),
            writes_refused: AtomicBool::new(machine.writes_refused()),
            counting: AtomicBool::new(false),
            machine: Mutex::new(machine),
            tx,
            wake: Notify::new(),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Machine> {
        self.machine.lock().unwrap_or_else(PoisonError::into_inner)
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
        self.writes_refused.load(Ordering::Acquire)
    }

    pub(crate) fn auth_failed(&self) -> bool {
        self.lock().auth_failed()
    }

    /// Whether a call may go to Redis now; without a lock unless recovering.
    pub(crate) fn admit(&self, write: bool) -> Result<(), Failure> {
        match self.health() {
            Health::Healthy if write && self.writes_refused() => Err(Failure::WRITES_REFUSED),
            Health::Healthy => Ok(()),
            Health::Degraded => Err(Failure::DEGRADED),
            Health::Recovering => self.lock().admit(write),
        }
    }

    /// Takes a pending request to rebuild the main connection.
    pub(crate) fn take_rebuild(&self) -> bool {
        self.lock().take_rebuild()
    }

    /// Feeds `event` to the machine and publishes what changed.
    pub(crate) fn feed(&self, event: Event) -> Step {
        if event == Event::Reply && !self.counting.load(Ordering::Relaxed) {
            // The common case: nothing to reset, no lock.
            return Step::default();
        }
        let step = {
            let mut machine = self.lock();
            let step = machine.step(event);
            self.counting
                .store(machine.timeouts_in_a_row() != 0, Ordering::Relaxed);
            self.writes_refused
                .store(machine.writes_refused(), Ordering::Release);
            if let Some(t) = step.transition {
                // Published under the lock: two racing transitions publish in the
                // order they happened, so every view ends on the same state.
                self.state.store(t.to.to_u8(), Ordering::Release);
                self.metrics.set_health(t.to);
                self.tx.send_replace(t.to);
            }
            step
        };
        self.report(&step);
        if step.wakes_supervisor() {
            self.wake.notify_one();
        }
        step
    }

    fn report(&self, step: &Step) {
        if step.auth_refused {
            tracing::error!(
                target: "secureconnect_redis_fallback",
                "redis refuses this client's credentials (NOAUTH/WRONGPASS): check the password \
                 in the redis URL; retrying slowly"
            );
        }
        match step.writes_refused {
            Some(true) => tracing::warn!(
                target: "secureconnect_redis_fallback",
                "redis refuses writes (OOM or READONLY): writes take their fallback, reads go on"
            ),
            Some(false) => {
                tracing::info!(target: "secureconnect_redis_fallback", "redis accepts writes again");
            }
            None => {}
        }
        if let Some(Transition { from, to, reason }) = step.transition {
            match to {
                Health::Degraded => tracing::warn!(
                    target: "secureconnect_redis_fallback",
                    from = %from, reason, "redis degraded: calls take their fallback"
                ),
                _ => tracing::info!(
                    target: "secureconnect_redis_fallback",
                    from = %from, to = %to, reason, "redis health changed"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests;
