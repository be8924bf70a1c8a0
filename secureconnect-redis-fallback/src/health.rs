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

mod machine;
mod tracker;

pub(crate) use self::machine::{Event, Machine, Step, Transition};
pub(crate) use self::tracker::Tracker;

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

    pub(crate) const fn to_u8(self) -> u8 {
        match self {
            Self::Healthy => 0,
            Self::Degraded => 1,
            Self::Recovering => 2,
        }
    }

    pub(crate) const fn from_u8(v: u8) -> Self {
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

#[cfg(test)]
mod tests;
