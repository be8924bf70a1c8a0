//! [`RedisCallStoreConfig`]: the timing and batching of a [`RedisCallStore`](crate::RedisCallStore).

use std::time::Duration;

use crate::error::Error;

/// The timing and batching of a [`RedisCallStore`](crate::RedisCallStore), validated by
/// [`RedisCallStore::new`](crate::RedisCallStore::new).
///
/// The values in force are read on the store, by getters of the same names
/// ([`RedisCallStore::call_ttl`](crate::RedisCallStore::call_ttl), …): Rust has no
/// overloading, and the names belong to the setters here.
///
/// ```no_run
/// # fn f(redis: secureconnect_redis_fallback::RedisClient) -> Result<(), secureconnect_callstate::Error> {
/// use std::time::Duration;
/// use prometheus_client::registry::Registry;
/// use secureconnect_callstate::{RedisCallStore, RedisCallStoreConfig};
///
/// let config = RedisCallStoreConfig::default().lease_ttl(Duration::from_secs(5));
/// let store = RedisCallStore::new(redis, "video-1", config, &mut Registry::default())?;
/// assert_eq!(store.call_ttl(), Duration::from_secs(60));
/// assert_eq!(store.lease_ttl(), Duration::from_secs(5));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RedisCallStoreConfig {
    pub(super) call_ttl: Duration,
    pub(super) lease_ttl: Duration,
    pub(super) recovery_batch: usize,
    pub(super) heartbeat_batch: usize,
    pub(super) fence_ttl: Duration,
}

impl Default for RedisCallStoreConfig {
    fn default() -> Self {
        Self {
            call_ttl: Duration::from_secs(60),
            lease_ttl: Duration::from_secs(15),
            recovery_batch: 500,
            heartbeat_batch: 500,
            fence_ttl: Duration::from_secs(3600),
        }
    }
}

impl RedisCallStoreConfig {
    /// How long a call's keys live without a refresh (default 60 s, at least 1 ms). The
    /// heartbeat refreshes them; a call whose node is gone expires after this.
    #[must_use]
    pub fn call_ttl(mut self, ttl: Duration) -> Self {
        self.call_ttl = ttl;
        self
    }

    /// How long a node's lease lives without a refresh (default 15 s, at least 1 ms).
    /// Another node may adopt the calls of a node whose lease has lapsed.
    #[must_use]
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Calls read per pipelined batch at recovery (default 500, at least 1).
    #[must_use]
    pub fn recovery_batch(mut self, calls: usize) -> Self {
        self.recovery_batch = calls;
        self
    }

    /// Calls refreshed per pipeline by a heartbeat (default 500, at least 1): a
    /// heartbeat sends one pipeline per this many calls, each within the client's call
    /// deadline, so it never grows with the number of calls.
    #[must_use]
    pub fn heartbeat_batch(mut self, calls: usize) -> Self {
        self.heartbeat_batch = calls;
        self
    }

    /// How long a call's fence outlives it (default 1 h, at least 1 ms). The fence
    /// (`sc:call:{<id>}:t`) records the highest epoch and version issued for the call
    /// and whether it ended: written when a call ends, is adopted or is recovered, and
    /// refreshed by the heartbeat while the call lives. Until it expires, a process
    /// that missed the end or the take-over (a partitioned node, an old process with
    /// the same node id) cannot write the call back, and the id cannot be created
    /// again.
    #[must_use]
    pub fn fence_ttl(mut self, ttl: Duration) -> Self {
        self.fence_ttl = ttl;
        self
    }

    /// Checks the values; called once by [`RedisCallStore::new`](crate::RedisCallStore::new).
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.call_ttl.as_millis() == 0 {
            return Err(Error::invalid_config("call_ttl must be at least 1 ms"));
        }
        if self.lease_ttl.as_millis() == 0 {
            return Err(Error::invalid_config("lease_ttl must be at least 1 ms"));
        }
        if self.recovery_batch == 0 {
            return Err(Error::invalid_config("recovery_batch must be at least 1"));
        }
        if self.heartbeat_batch == 0 {
            return Err(Error::invalid_config("heartbeat_batch must be at least 1"));
        }
        if self.fence_ttl.as_millis() == 0 {
            return Err(Error::invalid_config("fence_ttl must be at least 1 ms"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_durations_and_batches_are_refused() {
        assert!(RedisCallStoreConfig::default().validate().is_ok());
        for config in [
            RedisCallStoreConfig::default().call_ttl(Duration::from_micros(999)),
            RedisCallStoreConfig::default().lease_ttl(Duration::ZERO),
            RedisCallStoreConfig::default().recovery_batch(0),
            RedisCallStoreConfig::default().heartbeat_batch(0),
            RedisCallStoreConfig::default().fence_ttl(Duration::ZERO),
        ] {
            assert!(config.validate().is_err_and(|e| e.is_invalid_config()));
        }
    }
}
