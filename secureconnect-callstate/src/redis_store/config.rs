//! [`RedisCallStoreConfig`]: the timing of a [`RedisCallStore`](crate::RedisCallStore).

use std::time::Duration;

use crate::error::Error;

/// The timing of a [`RedisCallStore`](crate::RedisCallStore), validated by
/// [`RedisCallStore::new`](crate::RedisCallStore::new).
///
/// The values in force are read on the store, by getters of the same names
/// ([`RedisCallStore::call_ttl`](crate::RedisCallStore::call_ttl), …): Rust has no
/// overloading, and the names belong to the setters here.
///
/// ```no_run
/// # fn f(redis: secureconnect_redis_fallback::RedisClient) -> Result<(), secureconnect_callstate::Error> {
/// use std::time::Duration;
/// use secureconnect_callstate::{RedisCallStore, RedisCallStoreConfig};
///
/// let config = RedisCallStoreConfig::default().lease_ttl(Duration::from_secs(5));
/// let store = RedisCallStore::new(redis, "video-1", config)?;
/// assert_eq!(store.call_ttl(), Duration::from_secs(60));
/// assert_eq!(store.lease_ttl(), Duration::from_secs(5));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RedisCallStoreConfig {
    pub(super) call_ttl: Duration,
    pub(super) lease_ttl: Duration,
    pub(super) recovery_batch: usize,
}

impl Default for RedisCallStoreConfig {
    fn default() -> Self {
        Self {
            call_ttl: Duration::from_secs(60),
            lease_ttl: Duration::from_secs(15),
            recovery_batch: 500,
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
        ] {
            assert!(config.validate().is_err_and(|e| e.is_invalid_config()));
        }
    }
}
