//! [`CallHubConfig`]: how long a dropped participant keeps its place, how long an empty
//! call lives, how many calls one user may hold open, how long a rejoin waits for
//! recovery.

use std::time::Duration;

use crate::error::Error;

/// How a [`CallHub`](crate::CallHub) expires what nobody uses. Validated once, by
/// [`CallHub::new`](crate::CallHub::new); read back from the hub
/// ([`CallHub::rejoin_grace`](crate::CallHub::rejoin_grace), …).
///
/// ```
/// use std::time::Duration;
/// use secureconnect_callstate::CallHubConfig;
///
/// let config = CallHubConfig::default()
///     .rejoin_grace(Duration::from_secs(30))
///     .empty_call_ttl(Duration::from_secs(120))
///     .calls_per_user(5);
/// ```
#[derive(Clone, Debug)]
pub struct CallHubConfig {
    pub(super) rejoin_grace: Duration,
    pub(super) empty_call_ttl: Duration,
    pub(super) calls_per_user: usize,
    pub(super) recovery_wait: Duration,
}

impl Default for CallHubConfig {
    /// A 60 s rejoin grace, a 300 s TTL for empty calls, 20 open calls per user, rejoins
    /// waiting up to 2 s for a recovery under way.
    fn default() -> Self {
        Self {
            rejoin_grace: Duration::from_secs(60),
            empty_call_ttl: Duration::from_secs(300),
            calls_per_user: 20,
            recovery_wait: Duration::from_secs(2),
        }
    }
}

impl CallHubConfig {
    /// How long a participant whose connection dropped (or who was recovered after a
    /// restart) keeps its place, awaiting rejoin, before it is removed. Default 60 s.
    #[must_use]
    pub fn rejoin_grace(mut self, grace: Duration) -> Self {
        self.rejoin_grace = grace;
        self
    }

    /// How long a call with no participants lives before it ends. Default 300 s.
    #[must_use]
    pub fn empty_call_ttl(mut self, ttl: Duration) -> Self {
        self.empty_call_ttl = ttl;
        self
    }

    /// How many open calls one user may have created with
    /// [`CallHub::create_for`](crate::CallHub::create_for). Default 20.
    #[must_use]
    pub fn calls_per_user(mut self, calls: usize) -> Self {
        self.calls_per_user = calls;
        self
    }

    /// How long a [`rejoin`](crate::CallHub::rejoin) of a call not (yet) in memory
    /// waits for a recovery under way before it fails with
    /// [`Error::is_recovering`]. Zero: fail at once. Default 2 s.
    #[must_use]
    pub fn recovery_wait(mut self, wait: Duration) -> Self {
        self.recovery_wait = wait;
        self
    }

    pub(super) fn validate(&self) -> Result<(), Error> {
        if self.rejoin_grace.is_zero() {
            return Err(Error::invalid_config("rejoin_grace must be at least 1 ms"));
        }
        if self.empty_call_ttl.is_zero() {
            return Err(Error::invalid_config(
                "empty_call_ttl must be at least 1 ms",
            ));
        }
        if self.calls_per_user == 0 {
            return Err(Error::invalid_config("calls_per_user must be at least 1"));
        }
        Ok(())
    }

    /// How often the hub looks for what expired: a quarter of the shorter period,
    /// between 10 ms and 1 s.
    pub(super) fn sweep_interval(&self) -> Duration {
        (self.rejoin_grace.min(self.empty_call_ttl) / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_settings_are_refused_and_the_sweep_follows_the_shorter_period() {
        assert!(CallHubConfig::default().validate().is_ok());
        for bad in [
            CallHubConfig::default().rejoin_grace(Duration::ZERO),
            CallHubConfig::default().empty_call_ttl(Duration::ZERO),
            CallHubConfig::default().calls_per_user(0),
        ] {
            assert!(bad.validate().is_err_and(|e| e.is_invalid_config()));
        }
        assert_eq!(
            CallHubConfig::default().sweep_interval(),
            Duration::from_secs(1)
        );
        assert_eq!(
            CallHubConfig::default()
                .rejoin_grace(Duration::from_millis(200))
                .sweep_interval(),
            Duration::from_millis(50)
        );
    }
}
