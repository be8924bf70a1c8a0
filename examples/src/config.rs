//! Configuration from environment variables, failing fast with a message that names
//! the variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secureconnect_redis_fallback::rate_limit::Policy;
use secureconnect_redis_fallback::RedisClientConfig;

/// A configuration error: which variable, and what is wrong with it.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn var(name: &str) -> Result<Option<String>, ConfigError> {
    match std::env::var(name) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(ConfigError(format!("{name} is not valid UTF-8")))
        }
    }
}

fn parsed<T: std::str::FromStr>(name: &str, default: T, what: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match var(name)? {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|e| ConfigError(format!("{name}={v:?} is not {what}: {e}"))),
    }
}

/// The shortest `VIDEO_LEASE_SECS`.
const VIDEO_LEASE_MIN: Duration = Duration::from_secs(3);
/// The longest `VIDEO_LEASE_SECS`.
const VIDEO_LEASE_MAX: Duration = Duration::from_secs(3600);

/// Whether `value` is a `host:port` an HTTP URL can carry (what `VIDEO_UPSTREAMS` and
/// `VIDEO_ADVERTISE_ADDR` must be); for addresses read at run time (video presence).
pub(crate) fn is_host_port(value: &str) -> bool {
    host_port("", value).is_ok()
}

/// `value` if it is a `host:port` an HTTP URL can carry (a port, no scheme, no path).
fn host_port(name: &str, value: &str) -> Result<String, ConfigError> {
    let bad = || {
        ConfigError(format!(
            "{name}: {value:?} is not a host:port like 10.0.0.7:8083"
        ))
    };
    let authority: axum::http::uri::Authority = value.parse().map_err(|_| bad())?;
    if authority.port_u16().is_none()
        || authority.as_str().contains('@')
        || authority.host().is_empty()
    {
        return Err(bad());
    }
    Ok(value.to_owned())
}

/// How the services reach Redis: `REDIS_MODE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisMode {
    /// One server at `REDIS_URL` (the default).
    Standalone,
    /// A Redis Cluster; `REDIS_URL` lists seed nodes.
    Cluster,
    /// The primary that the sentinels listed in `REDIS_URL` name
    /// `REDIS_SENTINEL_MASTER`.
    Sentinel,
}

impl RedisMode {
    /// `standalone`, `cluster` or `sentinel`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standalone => "standalone",
            Self::Cluster => "cluster",
            Self::Sentinel => "sentinel",
        }
    }
}

/// Everything the reference services read from the environment.
#[derive(Clone, Debug)]
pub struct Config {
    /// `REDIS_URL` (default `redis://127.0.0.1:6379/`): one URL, or a comma-separated
    /// list of cluster seed nodes or sentinels.
    pub redis_url: String,
    /// `REDIS_MODE`: `standalone` (default), `cluster` or `sentinel`.
    pub redis_mode: RedisMode,
    /// `REDIS_SENTINEL_MASTER` (default `mymaster`): the master name, in sentinel mode.
    pub redis_sentinel_master: String,
    /// `GATEWAY_ADDR` (default `127.0.0.1:8080`).
    pub gateway_addr: SocketAddr,
    /// `AUTH_ADDR` (default `127.0.0.1:8081`).
    pub auth_addr: SocketAddr,
    /// `VIDEO_ADDR` (default `127.0.0.1:8083`).
    pub video_addr: SocketAddr,
    /// `STORAGE_ADDR` (default `127.0.0.1:8084`).
    pub storage_addr: SocketAddr,
    /// `JWT_SECRET`: shared by all services; at least 32 bytes.
    pub jwt_secret: Option<String>,
    /// `DATA_DIR` (default `./secureconnect-data`): the embedded SQLite database and,
    /// unless `STORAGE_DIR` says otherwise, the stored files.
    pub data_dir: PathBuf,
    /// `DATABASE_URL`: `sqlite://…` or `postgres://…` instead of the embedded database
    /// in `DATA_DIR` (its password is hidden wherever it is printed).
    pub database_url: Option<crate::db::DatabaseUrl>,
    /// `DATABASE_MAX_CONNECTIONS` per service (default 10).
    pub database_max_connections: u32,
    /// `DATABASE_TIMEOUT_MS` (default 2000): the deadline of a request's database work,
    /// waiting for a connection included; past it the request gets 503.
    pub database_timeout: Duration,
    /// `STORAGE_DIR` (default `DATA_DIR/files`).
    pub storage_dir: PathBuf,
    /// `STORAGE_QUOTA_BYTES` per user (default 100 MiB).
    pub storage_quota: u64,
    /// `STORAGE_RESERVATION_TTL_SECS` (default 300): how long an upload URL is valid;
    /// the quota it reserves is released if no upload started by then.
    pub storage_reservation_ttl: Duration,
    /// `AUDIT_FILE`: also write audit events, hash-chained, to this file. The services
    /// of one process share its chain.
    pub audit_file: Option<PathBuf>,
    /// `AUDIT_KEY`: keys the audit file's chain (HMAC-SHA256); at least 32 bytes.
    /// Unset: plain SHA-256. `audit-verify` needs the same variable.
    pub audit_key: Option<secureconnect_audit::chain::ChainKey>,
    /// `VIDEO_NODE_ID` (default `video-1`): stable across restarts so calls recover.
    pub video_node: String,
    /// `VIDEO_ADVERTISE_ADDR` (default `VIDEO_ADDR`): the `host:port` a video node
    /// publishes in Redis, where the gateway reaches it.
    pub video_advertise_addr: String,
    /// `VIDEO_LEASE_SECS` (default 15): a video node's lease in Redis; once it lapsed
    /// (the node died or lost Redis), another node adopts its calls.
    pub video_lease: Duration,
    /// `VIDEO_UPSTREAMS` (default `VIDEO_ADDR`): the video nodes the gateway knows
    /// (comma-separated `host:port`), tried while Redis cannot say which node owns a
    /// call or which nodes are alive.
    pub video_upstreams: Vec<String>,
    /// `REJOIN_GRACE_SECS` (default 60): how long a video participant whose connection
    /// dropped (or who was recovered after a restart) keeps its place.
    pub rejoin_grace: Duration,
    /// `CALL_EMPTY_TTL_SECS` (default 300): how long a call without participants lives.
    pub call_empty_ttl: Duration,
    /// `CALLS_PER_USER_MAX` (default 20): open calls one user may have created; beyond,
    /// `POST /v1/calls` answers 429.
    pub calls_per_user_max: usize,
    /// `RATE_LIMIT_PER_MINUTE` per authenticated user (default 600).
    pub rate_limit: u32,
    /// `RATE_LIMIT_CLIENT_PER_MINUTE` per client address (through `TRUSTED_PROXIES`; an
    /// IPv6 client per /64) (default 1200).
    pub rate_limit_client: u32,
    /// `RATE_LIMIT_POLICY`: `local_approx` (default), `fail_open` or `fail_closed`.
    pub rate_limit_policy: Policy,
    /// `GATEWAY_INSTANCES` sharing the limit, for `local_approx` (default 1).
    pub gateway_instances: u32,
    /// `UPSTREAM_TIMEOUT_MS` for the gateway (default 10000).
    pub upstream_timeout: Duration,
    /// `TRUSTED_PROXIES`: networks whose `X-Forwarded-For` is believed.
    pub trusted_proxies: String,
    /// `METRICS_TOKEN`: when set, `/metrics` of every service answers only requests
    /// with `Authorization: Bearer <token>` (401 otherwise).
    pub metrics_token: Option<String>,
    /// `SC_LAYERS=off` leaves out the request-metrics and audit layers, to measure what
    /// they cost (the soak harness compares both). Default on.
    pub layers: bool,
}

impl Config {
    /// The Redis client's configuration for `REDIS_MODE`, `REDIS_URL` and
    /// `REDIS_SENTINEL_MASTER` (the URLs are checked when the client is made).
    pub fn redis_client_config(&self) -> RedisClientConfig {
        let urls = || {
            self.redis_url
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        match self.redis_mode {
            RedisMode::Standalone => RedisClientConfig::new(self.redis_url.trim()),
            RedisMode::Cluster => RedisClientConfig::cluster(urls()),
            RedisMode::Sentinel => {
                RedisClientConfig::sentinel(self.redis_sentinel_master.as_str(), urls())
            }
        }
    }

    /// Reads the environment.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first malformed variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        let addr = |name: &str, port: u16| {
            parsed::<SocketAddr>(
                name,
                SocketAddr::from(([127, 0, 0, 1], port)),
                "an address like 127.0.0.1:8080",
            )
        };
        let video_addr = addr("VIDEO_ADDR", 8083)?;
        let video_advertise_addr = match var("VIDEO_ADVERTISE_ADDR")? {
            Some(v) => host_port("VIDEO_ADVERTISE_ADDR", v.trim())?,
            None if video_addr.ip().is_unspecified() => {
                return Err(ConfigError(format!(
                    "VIDEO_ADDR={video_addr} listens on every interface: set VIDEO_ADVERTISE_ADDR to the host:port where the gateway reaches this node"
                )))
            }
            None => video_addr.to_string(),
        };
        let video_upstreams = match var("VIDEO_UPSTREAMS")? {
            Some(v) => v
                .split(',')
                .map(|u| host_port("VIDEO_UPSTREAMS", u.trim()))
                .collect::<Result<Vec<_>, _>>()?,
            None => vec![video_addr.to_string()],
        };
        let policy = match var("RATE_LIMIT_POLICY")?.as_deref() {
            None | Some("local_approx") => Policy::LocalApprox {
                instances: parsed("GATEWAY_INSTANCES", 1, "a whole number")?,
            },
            Some("fail_open") => Policy::FailOpen,
            Some("fail_closed") => Policy::FailClosed,
            Some(other) => {
                return Err(ConfigError(format!(
                    "RATE_LIMIT_POLICY={other:?} is not one of local_approx, fail_open, fail_closed"
                )))
            }
        };
        let redis_mode = match var("REDIS_MODE")?.as_deref() {
            None | Some("standalone") => RedisMode::Standalone,
            Some("cluster") => RedisMode::Cluster,
            Some("sentinel") => RedisMode::Sentinel,
            Some(other) => {
                return Err(ConfigError(format!(
                    "REDIS_MODE={other:?} is not one of standalone, cluster, sentinel"
                )))
            }
        };
        let redis_url = var("REDIS_URL")?.unwrap_or_else(|| "redis://127.0.0.1:6379/".into());
        if redis_mode == RedisMode::Standalone && redis_url.contains(',') {
            return Err(ConfigError(format!(
                "REDIS_URL={redis_url:?} lists several URLs: set REDIS_MODE=cluster or REDIS_MODE=sentinel"
            )));
        }
        let data_dir =
            var("DATA_DIR")?.map_or_else(|| PathBuf::from("secureconnect-data"), PathBuf::from);
        let config = Self {
            redis_url,
            redis_mode,
            redis_sentinel_master: var("REDIS_SENTINEL_MASTER")?
                .unwrap_or_else(|| "mymaster".into()),
            gateway_addr: addr("GATEWAY_ADDR", 8080)?,
            auth_addr: addr("AUTH_ADDR", 8081)?,
            video_addr,
            storage_addr: addr("STORAGE_ADDR", 8084)?,
            jwt_secret: var("JWT_SECRET")?,
            storage_dir: var("STORAGE_DIR")?.map_or_else(|| data_dir.join("files"), PathBuf::from),
            database_url: var("DATABASE_URL")?
                .map(|url| crate::db::DatabaseUrl::parse(&url))
                .transpose()
                .map_err(ConfigError)?,
            database_max_connections: parsed("DATABASE_MAX_CONNECTIONS", 10, "a whole number")?,
            database_timeout: Duration::from_millis(parsed(
                "DATABASE_TIMEOUT_MS",
                2_000,
                "milliseconds",
            )?),
            data_dir,
            storage_quota: parsed(
                "STORAGE_QUOTA_BYTES",
                100 * 1024 * 1024,
                "a number of bytes",
            )?,
            storage_reservation_ttl: Duration::from_secs(parsed(
                "STORAGE_RESERVATION_TTL_SECS",
                300,
                "a whole number of seconds",
            )?),
            audit_file: var("AUDIT_FILE")?.map(PathBuf::from),
            audit_key: var("AUDIT_KEY")?
                .map(secureconnect_audit::chain::ChainKey::new)
                .transpose()
                .map_err(|_| {
                    ConfigError(format!(
                        "AUDIT_KEY must be at least {} bytes",
                        secureconnect_audit::chain::ChainKey::MIN_LEN
                    ))
                })?,
            video_node: var("VIDEO_NODE_ID")?.unwrap_or_else(|| "video-1".into()),
            video_advertise_addr,
            video_lease: Duration::from_secs(parsed(
                "VIDEO_LEASE_SECS",
                15,
                "a whole number of seconds",
            )?),
            video_upstreams,
            rejoin_grace: Duration::from_secs(parsed(
                "REJOIN_GRACE_SECS",
                60,
                "a whole number of seconds",
            )?),
            call_empty_ttl: Duration::from_secs(parsed(
                "CALL_EMPTY_TTL_SECS",
                300,
                "a whole number of seconds",
            )?),
            calls_per_user_max: parsed("CALLS_PER_USER_MAX", 20, "a whole number")?,
            rate_limit: parsed("RATE_LIMIT_PER_MINUTE", 600, "a whole number")?,
            rate_limit_client: parsed("RATE_LIMIT_CLIENT_PER_MINUTE", 1200, "a whole number")?,
            rate_limit_policy: policy,
            gateway_instances: parsed("GATEWAY_INSTANCES", 1, "a whole number")?,
            upstream_timeout: Duration::from_millis(parsed(
                "UPSTREAM_TIMEOUT_MS",
                10_000,
                "milliseconds",
            )?),
            trusted_proxies: var("TRUSTED_PROXIES")?.unwrap_or_default(),
            metrics_token: var("METRICS_TOKEN")?,
            layers: match var("SC_LAYERS")?.as_deref() {
                None | Some("on") => true,
                Some("off") => false,
                Some(other) => {
                    return Err(ConfigError(format!("SC_LAYERS={other:?} is not on or off")))
                }
            },
        };
        if let Some(secret) = &config.jwt_secret {
            if secret.len() < 32 {
                return Err(ConfigError("JWT_SECRET must be at least 32 bytes".into()));
            }
        }
        // Below 3 s a heartbeat (a third of the lease) has too little room against one
        // slow round trip; above an hour, a dead node's calls wait too long (and
        // `lease * 4`, the calls' TTL, stays far from any overflow).
        if !(VIDEO_LEASE_MIN..=VIDEO_LEASE_MAX).contains(&config.video_lease) {
            return Err(ConfigError(format!(
                "VIDEO_LEASE_SECS must be between {} and {}",
                VIDEO_LEASE_MIN.as_secs(),
                VIDEO_LEASE_MAX.as_secs()
            )));
        }
        if config.rate_limit == 0 || config.rate_limit_client == 0 {
            return Err(ConfigError(
                "RATE_LIMIT_PER_MINUTE and RATE_LIMIT_CLIENT_PER_MINUTE must be at least 1".into(),
            ));
        }
        for (name, zero) in [
            ("REJOIN_GRACE_SECS", config.rejoin_grace.is_zero()),
            ("CALL_EMPTY_TTL_SECS", config.call_empty_ttl.is_zero()),
            ("CALLS_PER_USER_MAX", config.calls_per_user_max == 0),
            (
                "DATABASE_MAX_CONNECTIONS",
                config.database_max_connections == 0,
            ),
            ("DATABASE_TIMEOUT_MS", config.database_timeout.is_zero()),
            (
                "STORAGE_RESERVATION_TTL_SECS",
                config.storage_reservation_ttl.is_zero(),
            ),
        ] {
            if zero {
                return Err(ConfigError(format!("{name} must be at least 1")));
            }
        }
        if let Some(token) = &config.metrics_token {
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ConfigError(
                    "METRICS_TOKEN must be visible ASCII characters only (no spaces)".into(),
                ));
            }
        }
        config
            .trusted_proxies
            .parse::<secureconnect_audit::TrustedProxies>()
            .map_err(|e| ConfigError(format!("TRUSTED_PROXIES: {e}")))?;
        Ok(config)
    }

    /// The JWT secret a stand-alone service needs.
    ///
    /// # Errors
    ///
    /// When `JWT_SECRET` is unset.
    pub fn require_jwt_secret(&self) -> Result<String, ConfigError> {
        self.jwt_secret.clone().ok_or_else(|| {
            ConfigError("JWT_SECRET is required (32 bytes or more, shared by all services)".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn upstreams_are_host_and_port_only() {
        for good in ["127.0.0.1:8083", "video-2.internal:8083", "[::1]:8083"] {
            assert_eq!(host_port("X", good).unwrap(), good);
        }
        for bad in [
            "127.0.0.1",
            "http://a:1",
            "a:1/x",
            "user@a:1",
            ":8083",
            "",
            "a:99999",
        ] {
            assert!(host_port("X", bad).is_err(), "{bad}");
        }
    }
}
