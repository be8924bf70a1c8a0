//! A key-value store with TTL in Redis that falls back to a bounded local map, for
//! sessions and presence.
//!
//! While Redis is usable every operation goes to Redis. When a call says Redis is
//! unavailable (or the client is degraded), the operation is served by a local map
//! holding at most `capacity` entries; when full, the entry closest to expiry makes
//! room. The local map is dropped, not merged, when Redis is healthy again: Redis is
//! the truth, and what was written locally during the outage is gone.
//!
//! ```no_run
//! # async fn f(redis: secureconnect_redis_fallback::RedisClient) -> Result<(), secureconnect_redis_fallback::Error> {
//! use std::time::Duration;
//! use secureconnect_redis_fallback::kv::{FallbackKv, FallbackKvConfig};
//!
//! let sessions = FallbackKv::new(redis, FallbackKvConfig::new("session").capacity(10_000));
//! sessions.set("token-1", b"user:42", Duration::from_secs(3600)).await?;
//! assert_eq!(sessions.get("token-1").await?.as_deref(), Some(&b"user:42"[..]));
//! # Ok(()) }
//! ```

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use crate::{Error, RedisClient};

/// Where an operation was served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvSource {
    /// Redis.
    Redis,
    /// The local map, because Redis was unavailable.
    Local,
}

/// A bounded map with expiry; the entry expiring first is evicted when full.
#[derive(Debug, Default)]
struct LocalMap {
    entries: HashMap<String, (Vec<u8>, Instant)>,
    by_expiry: BTreeSet<(Instant, String)>,
}

impl LocalMap {
    fn remove(&mut self, key: &str) -> Option<(Vec<u8>, Instant)> {
        let removed = self.entries.remove(key)?;
        self.by_expiry.remove(&(removed.1, key.to_owned()));
        Some(removed)
    }

    fn get(&mut self, key: &str, now: Instant) -> Option<Vec<u8>> {
        match self.entries.get(key) {
            Some((value, expires)) if *expires > now => Some(value.clone()),
            Some(_) => {
                self.remove(key);
                None
            }
            None => None,
        }
    }

    fn set(&mut self, key: &str, value: &[u8], expires: Instant, capacity: usize) {
        self.remove(key);
        while self.entries.len() >= capacity {
            let Some(first) = self.by_expiry.pop_first() else {
                break;
            };
            self.entries.remove(&first.1);
        }
        self.entries
            .insert(key.to_owned(), (value.to_vec(), expires));
        self.by_expiry.insert((expires, key.to_owned()));
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Configuration of a [`FallbackKv`]: its namespace and how many entries it keeps
/// locally while Redis is away.
#[derive(Clone, Debug)]
pub struct FallbackKvConfig {
    namespace: String,
    capacity: usize,
}

impl FallbackKvConfig {
    /// A store whose Redis keys are `sc:kv:<namespace>:<key>`, keeping at most 10 000
    /// local entries until [`capacity`](Self::capacity) says otherwise.
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            capacity: 10_000,
        }
    }

    /// At most how many entries the local map holds (at least 1).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }
}

#[derive(Debug)]
struct Inner {
    prefix: String,
    redis: RedisClient,
    capacity: usize,
    local: Mutex<LocalMap>,
    fallback: Counter,
}

/// See the [module docs](self). Cheap to clone.
#[derive(Clone, Debug)]
pub struct FallbackKv {
    inner: Arc<Inner>,
}

impl FallbackKv {
    /// A store on `redis` as `config` says. Must be called inside a Tokio runtime.
    pub fn new(redis: RedisClient, config: FallbackKvConfig) -> Self {
        let FallbackKvConfig {
            namespace,
            capacity,
        } = config;
        let inner = Arc::new(Inner {
            prefix: format!("sc:kv:{namespace}:"),
            fallback: redis.fallback_counter("kv", "local"),
            redis,
            capacity: capacity.max(1),
            local: Mutex::new(LocalMap::default()),
        });
        // Redis is the truth again: what was written locally during the outage goes.
        inner.redis.on_healthy(Arc::downgrade(&inner), |inner| {
            *inner.local.lock().unwrap_or_else(PoisonError::into_inner) = LocalMap::default();
        });
        Self { inner }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.inner.prefix)
    }

    fn local(&self) -> std::sync::MutexGuard<'_, LocalMap> {
        self.inner
            .local
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The value of `key`, if set and not expired.
    ///
    /// # Errors
    ///
    /// Only [`Error::is_command_error`] errors (the key holds another type): an
    /// unavailable Redis is answered from the local map.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.get_with_source(key).await.map(|(value, _)| value)
    }

    /// Like [`get`](Self::get), and says where the answer came from.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub async fn get_with_source(&self, key: &str) -> Result<(Option<Vec<u8>>, KvSource), Error> {
        match self
            .inner
            .redis
            .query::<Option<Vec<u8>>>(redis::cmd("GET").arg(self.key(key)))
            .await
        {
            Ok(value) => Ok((value, KvSource::Redis)),
            Err(e) if e.is_unavailable() => {
                self.inner.fallback.inc();
                Ok((self.local().get(key, Instant::now()), KvSource::Local))
            }
            Err(e) => Err(e),
        }
    }

    /// Sets `key` to `value` for `ttl` (at least a millisecond).
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<KvSource, Error> {
        let ttl = ttl.max(Duration::from_millis(1));
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key))
            .arg(value)
            .arg("PX")
            .arg(ttl.as_millis() as u64);
        match self.inner.redis.query::<()>(&cmd).await {
            Ok(()) => Ok(KvSource::Redis),
            Err(e) if e.is_unavailable() => {
                self.inner.fallback.inc();
                let capacity = self.inner.capacity;
                self.local().set(key, value, Instant::now() + ttl, capacity);
                Ok(KvSource::Local)
            }
            Err(e) => Err(e),
        }
    }

    /// Removes `key`.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub async fn delete(&self, key: &str) -> Result<KvSource, Error> {
        match self
            .inner
            .redis
            .query::<i64>(redis::cmd("DEL").arg(self.key(key)))
            .await
        {
            Ok(_) => Ok(KvSource::Redis),
            Err(e) if e.is_unavailable() => {
                self.inner.fallback.inc();
                self.local().remove(key);
                Ok(KvSource::Local)
            }
            Err(e) => Err(e),
        }
    }

    /// How many entries the local map holds now.
    pub fn local_len(&self) -> usize {
        self.local().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_map_is_bounded_and_evicts_the_soonest_expiry() {
        let mut map = LocalMap::default();
        let now = Instant::now();
        for i in 0..10u64 {
            map.set(
                &format!("k{i}"),
                b"v",
                now + Duration::from_secs(100 + i),
                5,
            );
        }
        assert_eq!(map.len(), 5);
        // The ones expiring last (set last) are kept.
        assert!(map.get("k9", now).is_some());
        assert!(map.get("k0", now).is_none());
        // Expired entries read as absent and are removed.
        map.set("short", b"v", now + Duration::from_millis(1), 5);
        assert!(map.get("short", now + Duration::from_secs(1)).is_none());
        assert_eq!(map.entries.len(), map.by_expiry.len());
    }
}
