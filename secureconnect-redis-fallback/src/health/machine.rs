//! [`Machine`]: the health state machine as a plain value. [`Machine::step`] takes an
//! [`Event`] and returns a [`Step`]: the transition, if any, and what the caller must do
//! about it. No clock, no lock, no I/O.

use super::Health;
use crate::classify::Failure;

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
    /// A Sentinel failover of the primary is under way: writes would land on a
    /// primary about to be replaced, so they are held (refused) until the new primary
    /// is known.
    FailoverStarted,
    /// The write probe succeeded.
    WritesAccepted,
    /// A `PING` probe succeeded.
    ProbeOk,
    /// A `PING` probe failed (other than on credentials).
    ProbeFailed,
    /// The first connection at start succeeded: healthy at once, from Degraded, once
    /// in the client's life (a late one, after a call degraded the client, changes
    /// nothing).
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
    /// Writes were refused because a failover started (not by Redis): say so.
    pub(crate) failover: bool,
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
    /// Whether [`Event::Connected`] was taken.
    connected_once: bool,
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
            connected_once: false,
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
            Event::FailoverStarted => {
                if !std::mem::replace(&mut self.writes_refused, true) {
                    step.writes_refused = Some(true);
                    step.failover = true;
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
            // Each transition has its required prior state: a healing event that lost a
            // race to a degrading one changes nothing.
            Event::Connected => {
                if self.health == Health::Degraded && !self.connected_once {
                    step.transition = self.go(Health::Healthy, "connected");
                }
                self.connected_once = true;
            }
            Event::Reconnected => {
                if self.health == Health::Degraded {
                    step.transition = self.go(Health::Recovering, "probe succeeded");
                }
            }
        }
        step
    }
}
