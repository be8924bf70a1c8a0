//! Configuration of [`RedisClient`](crate::RedisClient).

use std::time::Duration;

use crate::error::{Error, ErrorKind};

/// How the client talks to Redis and judges its health. Defaults suit a service on the
/// same network as Redis.
///
/// ```
/// use std::time::Duration;
/// use secureconnect_redis_fallback::RedisConfig;
///
/// let config = RedisConfig::new("redis://127.0.0.1:6379/")
///     .call_timeout(Duration::from_millis(100))
///     .name("sessions");
/// assert_eq!(config.get_call_timeout(), Duration::from_millis(100));
/// ```
#[derive(Clone, Debug)]
pub struct RedisConfig {
    pub(crate) url: String,
    pub(crate) name: Option<String>,
    pub(crate) call_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) timeouts_to_rebuild: u32,
    pub(crate) timeouts_to_degrade: u32,
    pub(crate) probe_interval: Duration,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) auth_backoff: Duration,
    pub(crate) recovery_probes: u32,
    pub(crate) recovery_interval: Duration,
}

impl RedisConfig {
    /// Talks to the Redis at `url` (`redis://[:password@]host:port[/db]`).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            name: None,
            call_timeout: Duration::from_millis(250),
            connect_timeout: Duration::from_millis(500),
            timeouts_to_rebuild: 2,
            timeouts_to_degrade: 4,
            probe_interval: Duration::from_secs(2),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            auth_backoff: Duration::from_secs(5),
            recovery_probes: 3,
            recovery_interval: Duration::from_millis(100),
        }
    }

    /// Labels this client's metrics with `redis="<name>"`, so that several clients can
    /// share one registry.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The deadline of every call, from the moment it is made to its reply (default
    /// 250 ms).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The deadline of a connection attempt, handshake included (default 500 ms).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// After this many timeouts in a row the connection is rebuilt in the background
    /// (default 2); after `degrade` in a row the client turns degraded (default 4).
    /// A connection error degrades at once.
    pub fn timeouts(mut self, rebuild: u32, degrade: u32) -> Self {
        self.timeouts_to_rebuild = rebuild.max(1);
        self.timeouts_to_degrade = degrade.max(1);
        self
    }

    /// How often a healthy client sends a `PING` on its probe connection (default 2 s).
    pub fn probe_interval(mut self, interval: Duration) -> Self {
        self.probe_interval = interval;
        self
    }

    /// The probe delay while degraded: from `min`, growing by half each time, capped at
    /// `max`, with ±20 % jitter (default 100 ms to 1 s).
    pub fn degraded_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max.max(min);
        self
    }

    /// The probe delay while Redis refuses our credentials (default 5 s).
    pub fn auth_backoff(mut self, delay: Duration) -> Self {
        self.auth_backoff = delay;
        self
    }

    /// How many probes in a row, `interval` apart, must succeed while recovering before
    /// the client is healthy again (default 3, 100 ms). Meanwhile traffic ramps up.
    pub fn recovery(mut self, probes: u32, interval: Duration) -> Self {
        self.recovery_probes = probes.max(1);
        self.recovery_interval = interval;
        self
    }

    /// The configured call deadline.
    pub fn get_call_timeout(&self) -> Duration {
        self.call_timeout
    }

    pub(crate) fn validate(&self) -> Result<redis::Client, Error> {
        if self.call_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "timeouts must be greater than zero",
            ));
        }
        if self.probe_interval.is_zero() || self.backoff_min.is_zero() {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "probe intervals must be greater than zero",
            ));
        }
        redis::Client::open(self.url.as_str())
            .map_err(|e| Error::with_source(ErrorKind::InvalidConfig, e))
    }
}
