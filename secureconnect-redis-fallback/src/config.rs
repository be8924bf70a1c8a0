//! Configuration of [`RedisClient`](crate::RedisClient).

use std::time::Duration;

use crate::error::{Error, ErrorKind};

/// How the client talks to Redis and judges its health. Defaults suit a service on the
/// same network as Redis. Checked once, by [`RedisClient::new`](crate::RedisClient::new).
///
/// Setters are named after what they set and consume the config; a setter and a
/// getter cannot share a name, so the values are read back from the client
/// ([`RedisClient::call_timeout`](crate::RedisClient::call_timeout)).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), secureconnect_redis_fallback::Error> {
/// use std::time::Duration;
/// use prometheus_client::registry::Registry;
/// use secureconnect_redis_fallback::{RedisClient, RedisClientConfig};
///
/// let config = RedisClientConfig::new("redis://127.0.0.1:6379/")
///     .call_timeout(Duration::from_millis(100))
///     .name("sessions");
/// let redis = RedisClient::new(config, &mut Registry::default())?;
/// assert_eq!(redis.call_timeout(), Duration::from_millis(100));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RedisClientConfig {
    pub(crate) topology: Topology,
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
    /// A certificate authority (PEM) trusted instead of the system's roots.
    #[cfg(feature = "tls")]
    pub(crate) tls_ca: Option<Vec<u8>>,
}

/// Where Redis is: one server, a Cluster, or a primary found through Sentinel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Topology {
    /// One server (or a proxy in front of several).
    Standalone(String),
    /// A Redis Cluster, found through these seed nodes.
    Cluster(Vec<String>),
    /// The primary that these sentinels name `master`.
    Sentinel {
        master: String,
        sentinels: Vec<String>,
    },
}

impl Topology {
    /// Every URL, in the order given.
    pub(crate) fn urls(&self) -> &[String] {
        match self {
            Self::Standalone(url) => std::slice::from_ref(url),
            Self::Cluster(urls)
            | Self::Sentinel {
                sentinels: urls, ..
            } => urls,
        }
    }
}

impl RedisClientConfig {
    /// Talks to the Redis at `url` (`redis://[:password@]host:port[/db]`, or
    /// `rediss://` with the `tls` feature).
    pub fn new(url: impl Into<String>) -> Self {
        Self::with_topology(Topology::Standalone(url.into()))
    }

    /// Talks to a Redis Cluster, discovered through `nodes` (seed URLs: any reachable
    /// node of the cluster will do; the client learns the others and follows slot
    /// moves, failovers and promotions by itself). The user name and password of the
    /// first URL are used for every node.
    ///
    /// ```
    /// use secureconnect_redis_fallback::RedisClientConfig;
    ///
    /// let config = RedisClientConfig::cluster(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"]);
    /// ```
    pub fn cluster<I, S>(nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::with_topology(Topology::Cluster(
            nodes.into_iter().map(Into::into).collect(),
        ))
    }

    /// Talks to the primary that the Redis Sentinels at `sentinels` know as `master`,
    /// and follows it through failovers: the sentinels' `+switch-master` announcements
    /// move the client to the new primary at once; a periodic check and every
    /// `READONLY` or lost connection ask the sentinels again. The primary is reached
    /// with the user name, password, database and scheme of the first sentinel URL.
    ///
    /// ```
    /// use secureconnect_redis_fallback::RedisClientConfig;
    ///
    /// let config = RedisClientConfig::sentinel(
    ///     "mymaster",
    ///     ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379", "redis://10.0.0.3:26379"],
    /// );
    /// ```
    pub fn sentinel<I, S>(master: impl Into<String>, sentinels: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::with_topology(Topology::Sentinel {
            master: master.into(),
            sentinels: sentinels.into_iter().map(Into::into).collect(),
        })
    }

    fn with_topology(topology: Topology) -> Self {
        Self {
            topology,
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
            #[cfg(feature = "tls")]
            tls_ca: None,
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
    /// (default 2, at least 1).
    pub fn timeouts_to_rebuild(mut self, timeouts: u32) -> Self {
        self.timeouts_to_rebuild = timeouts.max(1);
        self
    }

    /// After this many timeouts in a row the client turns degraded (default 4, at
    /// least 1). A connection error degrades at once.
    pub fn timeouts_to_degrade(mut self, timeouts: u32) -> Self {
        self.timeouts_to_degrade = timeouts.max(1);
        self
    }

    /// How often a healthy client sends a `PING` on its probe connection (default 2 s).
    pub fn probe_interval(mut self, interval: Duration) -> Self {
        self.probe_interval = interval;
        self
    }

    /// The first probe delay while degraded; it grows by half each time up to
    /// [`backoff_max`](Self::backoff_max), with ±20 % jitter (default 100 ms).
    pub fn backoff_min(mut self, delay: Duration) -> Self {
        self.backoff_min = delay;
        self
    }

    /// The longest probe delay while degraded (default 1 s; never below
    /// [`backoff_min`](Self::backoff_min)).
    pub fn backoff_max(mut self, delay: Duration) -> Self {
        self.backoff_max = delay;
        self
    }

    /// The probe delay while Redis refuses our credentials (default 5 s).
    pub fn auth_backoff(mut self, delay: Duration) -> Self {
        self.auth_backoff = delay;
        self
    }

    /// How many probes in a row must succeed while recovering before the client is
    /// healthy again (default 3, at least 1). Meanwhile traffic ramps up.
    pub fn recovery_probes(mut self, probes: u32) -> Self {
        self.recovery_probes = probes.max(1);
        self
    }

    /// The delay between recovery probes (default 100 ms).
    pub fn recovery_interval(mut self, interval: Duration) -> Self {
        self.recovery_interval = interval;
        self
    }

    /// Trusts the certificate authority in `pem` (PEM: one or more certificates) for
    /// `rediss://` connections, instead of the system's roots: every URL must then be
    /// `rediss://` (feature `tls`). Cluster nodes and the primary a sentinel names are
    /// reached with the same trust.
    ///
    /// ```no_run
    /// use secureconnect_redis_fallback::RedisClientConfig;
    ///
    /// let ca = std::fs::read("/etc/redis/ca.pem")?;
    /// let config = RedisClientConfig::new("rediss://redis.internal:6380/").tls_ca(ca);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls_ca(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_ca = Some(pem.into());
        self
    }

    /// The custom CA as redis-rs takes it.
    #[cfg(feature = "tls")]
    pub(crate) fn tls_certificates(&self) -> Option<redis::TlsCertificates> {
        self.tls_ca.as_ref().map(|ca| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.clone()),
        })
    }

    /// The Redis URL (the first seed node or sentinel for a Cluster or Sentinel).
    pub fn url(&self) -> &str {
        self.topology.urls().first().map_or("", String::as_str)
    }

    /// Checks the durations and parses every URL (an empty list is refused).
    pub(crate) fn validate(&self) -> Result<Vec<redis::ConnectionInfo>, Error> {
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
        if let Topology::Sentinel { master, .. } = &self.topology {
            if master.is_empty() {
                return Err(Error::new(
                    ErrorKind::InvalidConfig,
                    "the sentinel master name is empty",
                ));
            }
        }
        let urls = self.topology.urls();
        if urls.is_empty() {
            return Err(Error::new(ErrorKind::InvalidConfig, "no redis URL given"));
        }
        urls.iter()
            .map(|url| {
                let info =
                    redis::IntoConnectionInfo::into_connection_info(url.as_str()).map_err(|e| {
                        Error::with_source(ErrorKind::InvalidConfig, "malformed redis URL", e)
                    })?;
                self.with_tls(info)
            })
            .collect()
    }

    /// `info` with the custom CA, if one is set.
    #[cfg(feature = "tls")]
    fn with_tls(&self, info: redis::ConnectionInfo) -> Result<redis::ConnectionInfo, Error> {
        let pem = self.tls_ca.as_deref().unwrap_or_default();
        if self.tls_ca.is_some() && !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
            // redis-rs would trust no root at all, silently.
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "the custom CA holds no PEM certificate",
            ));
        }
        match self.tls_certificates() {
            None => Ok(info),
            Some(certificates) => redis::Client::build_with_tls(info, certificates)
                .map(|client| client.get_connection_info().clone())
                .map_err(|e| {
                    Error::with_source(
                        ErrorKind::InvalidConfig,
                        "a custom CA needs rediss:// URLs and a readable PEM certificate",
                        e,
                    )
                }),
        }
    }

    #[cfg(not(feature = "tls"))]
    #[allow(clippy::unnecessary_wraps)]
    fn with_tls(&self, info: redis::ConnectionInfo) -> Result<redis::ConnectionInfo, Error> {
        Ok(info)
    }
}
