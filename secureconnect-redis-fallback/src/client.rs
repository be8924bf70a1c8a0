//! The resilient client.

use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, FromRedisValue, Pipeline};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::classify::{classify, is_read_only, Class};
use crate::config::RedisConfig;
use crate::error::{Error, ErrorKind};
use crate::health::{Health, Refusal, Tracker};
use crate::metrics::ClientMetrics;

/// A cheap, cloneable Redis client that owns the deadline of every call, tracks
/// Redis's health and fails fast while Redis is away.
///
/// While [`Health::Degraded`], every call returns an [`Error`] with
/// [`is_unavailable`](Error::is_unavailable) at once, without touching the network, so
/// the caller takes its fallback. A background task probes Redis on a connection of its
/// own and brings the client back by itself; no call ever waits for a reconnection.
///
/// ```no_run
/// # async fn f() -> Result<(), secureconnect_redis_fallback::Error> {
/// use prometheus_client::registry::Registry;
/// use secureconnect_redis_fallback::{RedisClient, RedisConfig};
///
/// let mut registry = Registry::default();
/// let redis = RedisClient::connect(RedisConfig::new("redis://127.0.0.1:6379/"), &mut registry).await?;
/// match redis.query::<Option<String>>(redis::cmd("GET").arg("greeting")).await {
///     Ok(value) => println!("{value:?}"),
///     Err(e) if e.is_unavailable() => println!("fallback: Redis is away ({e})"),
///     Err(e) => return Err(e),
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RedisClient {
    inner: Arc<Inner>,
    _supervisor: Arc<AbortOnDrop>,
}

#[derive(Debug)]
struct Inner {
    config: RedisConfig,
    client: redis::Client,
    conn: RwLock<Option<MultiplexedConnection>>,
    tracker: Tracker,
}

/// Ends a background task when the last handle of its owner is dropped.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl RedisClient {
    /// Creates the client and starts its supervisor; must be called inside a Tokio
    /// runtime. Returns at once, degraded until the first connection succeeds (usually
    /// within a millisecond); see [`connect`](Self::connect) to wait for it.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidConfig`] for a malformed URL or zero durations.
    pub fn new(config: RedisConfig, registry: &mut Registry) -> Result<Self, Error> {
        let client = config.validate()?;
        let metrics = ClientMetrics::register(registry, config.name.as_deref());
        let tracker = Tracker::new(
            metrics,
            config.recovery_probes,
            config.timeouts_to_rebuild,
            config.timeouts_to_degrade,
        );
        let inner = Arc::new(Inner {
            config,
            client,
            conn: RwLock::new(None),
            tracker,
        });
        let supervisor = tokio::spawn(supervise(Arc::clone(&inner)));
        Ok(Self {
            inner,
            _supervisor: Arc::new(AbortOnDrop(supervisor)),
        })
    }

    /// Like [`new`](Self::new), then waits up to the connect timeout for the first
    /// connection. If Redis is not there, the client is returned degraded and keeps
    /// trying on its own.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidConfig`] for a malformed URL or zero durations.
    pub async fn connect(config: RedisConfig, registry: &mut Registry) -> Result<Self, Error> {
        let wait = config.connect_timeout + config.call_timeout;
        let client = Self::new(config, registry)?;
        client.wait_for(Health::Healthy, wait).await;
        Ok(client)
    }

    /// Waits up to `within` until the client is `health`; `true` if it got there.
    ///
    /// ```no_run
    /// # async fn f(redis: secureconnect_redis_fallback::RedisClient) {
    /// use std::time::Duration;
    /// use secureconnect_redis_fallback::Health;
    ///
    /// if !redis.wait_for(Health::Healthy, Duration::from_secs(2)).await {
    ///     eprintln!("still without Redis; serving from fallbacks");
    /// }
    /// # }
    /// ```
    pub async fn wait_for(&self, health: Health, within: Duration) -> bool {
        let mut rx = self.subscribe();
        tokio::time::timeout(within, rx.wait_for(|h| *h == health))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The current health.
    pub fn health(&self) -> Health {
        self.inner.tracker.health()
    }

    /// Whether writes are refused (`OOM`, `READONLY`) while reads still work.
    pub fn writes_refused(&self) -> bool {
        self.inner.tracker.writes_refused()
    }

    /// Every change of health, as it happens.
    pub fn subscribe(&self) -> watch::Receiver<Health> {
        self.inner.tracker.subscribe()
    }

    /// How long this client has been degraded in all.
    pub fn degraded_time(&self) -> Duration {
        self.inner.tracker.metrics().degraded_time()
    }

    /// The configuration.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// The redis-rs client, for connections of a primitive's own.
    pub(crate) fn redis_client(&self) -> redis::Client {
        self.inner.client.clone()
    }

    pub(crate) fn fallback_counter(
        &self,
        primitive: &'static str,
        policy: &'static str,
    ) -> prometheus_client::metrics::counter::Counter {
        self.inner.tracker.metrics().fallback(primitive, policy)
    }

    /// Calls `reset` on `target` whenever the client becomes healthy again, for as long
    /// as `target` lives: degraded-mode primitives drop their local state this way.
    pub(crate) fn on_healthy<T: Send + Sync + 'static>(
        &self,
        target: std::sync::Weak<T>,
        reset: fn(&T),
    ) {
        let mut health = self.subscribe();
        tokio::spawn(async move {
            while health.changed().await.is_ok() {
                let healthy = *health.borrow_and_update() == Health::Healthy;
                let Some(target) = target.upgrade() else {
                    return;
                };
                if healthy {
                    reset(&target);
                }
            }
        });
    }

    /// Runs one command. Whether it writes is read from its name (unknown commands
    /// count as writes).
    ///
    /// # Errors
    ///
    /// See [`Error`]: [`is_unavailable`](Error::is_unavailable) means "take the
    /// fallback"; [`is_command_error`](Error::is_command_error) is a bug in the call.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, Error> {
        let write = !cmd
            .args_iter()
            .next()
            .is_some_and(|arg| matches!(arg, redis::Arg::Simple(name) if is_read_only(name)));
        self.call(
            write,
            |mut conn| async move { cmd.query_async(&mut conn).await },
        )
        .await
    }

    /// Runs a pipeline (or a `MULTI`/`EXEC` transaction); counted as a write.
    ///
    /// # Errors
    ///
    /// As [`query`](Self::query).
    pub async fn query_pipeline<T: FromRedisValue>(&self, pipeline: &Pipeline) -> Result<T, Error> {
        self.call(true, |mut conn| async move {
            pipeline.query_async(&mut conn).await
        })
        .await
    }

    /// Runs a Lua script with `EVALSHA`, loading it on `NOSCRIPT`; counted as a write.
    ///
    /// # Errors
    ///
    /// As [`query`](Self::query).
    pub async fn invoke_script<T: FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, Error> {
        self.call(true, |mut conn| async move {
            invocation.invoke_async(&mut conn).await
        })
        .await
    }

    /// The core of every call: admission, deadline, classification.
    async fn call<T, F, Fut>(&self, write: bool, f: F) -> Result<T, Error>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let tracker = &self.inner.tracker;
        let metrics = tracker.metrics();
        if let Err(refusal) = tracker.admit(write) {
            metrics.rejected.inc();
            return Err(match refusal {
                Refusal::Degraded => Error::new(ErrorKind::Unavailable, "client is degraded"),
                Refusal::WritesRefused => {
                    Error::new(ErrorKind::WritesUnavailable, "redis refuses writes")
                }
            });
        }
        let conn = self
            .inner
            .conn
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(conn) = conn else {
            metrics.rejected.inc();
            tracker.on_unavailable("no connection");
            return Err(Error::new(ErrorKind::Unavailable, "no connection"));
        };
        match tokio::time::timeout(self.inner.config.call_timeout, f(conn)).await {
            Err(_) => {
                metrics.timeout.inc();
                tracker.on_timeout();
                Err(Error::new(
                    ErrorKind::Timeout,
                    "no reply within the call deadline",
                ))
            }
            Ok(Ok(value)) => {
                metrics.ok.inc();
                tracker.on_reply();
                Ok(value)
            }
            Ok(Err(error)) => Err(self.on_error(error)),
        }
    }

    fn on_error(&self, error: redis::RedisError) -> Error {
        let tracker = &self.inner.tracker;
        let metrics = tracker.metrics();
        match classify(&error) {
            Class::Command => {
                metrics.command_error.inc();
                tracker.on_reply();
                Error::with_source(ErrorKind::Command, error)
            }
            Class::Timeout => {
                metrics.timeout.inc();
                tracker.on_timeout();
                Error::with_source(ErrorKind::Timeout, error)
            }
            Class::Unavailable => {
                metrics.unavailable.inc();
                tracker.on_unavailable("connection error or server unavailable");
                Error::with_source(ErrorKind::Unavailable, error)
            }
            Class::Auth => {
                metrics.unavailable.inc();
                tracker.on_auth_failure();
                Error::with_source(ErrorKind::Unavailable, error)
            }
            Class::WritesRefused => {
                metrics.unavailable.inc();
                tracker.on_reply();
                tracker.on_writes_refused();
                Error::with_source(ErrorKind::WritesUnavailable, error)
            }
        }
    }
}

impl Inner {
    fn set_conn(&self, conn: Option<MultiplexedConnection>) {
        *self.conn.write().unwrap_or_else(PoisonError::into_inner) = conn;
    }

    /// Opens a multiplexed connection within the connect deadline (handshake
    /// included: a stopped server accepts TCP but never answers).
    async fn open(&self) -> redis::RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.connect_timeout))
            .set_response_timeout(None);
        match tokio::time::timeout(
            self.config.connect_timeout,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
        }
    }

    async fn open_main(&self) -> redis::RedisResult<MultiplexedConnection> {
        let conn = self.open().await?;
        self.tracker.metrics().main_connections.inc();
        Ok(conn)
    }
}

/// A `PING` on the probe connection, opening it if needed. `Err` carries the class of
/// the failure.
async fn probe(inner: &Inner, conn: &mut Option<MultiplexedConnection>) -> Result<(), Class> {
    if conn.is_none() {
        let opened = inner.open().await.map_err(|e| classify(&e))?;
        inner.tracker.metrics().probe_connections.inc();
        *conn = Some(opened);
    }
    let Some(c) = conn.as_mut() else {
        return Err(Class::Unavailable);
    };
    let start = Instant::now();
    let result = tokio::time::timeout(
        inner.config.call_timeout,
        redis::cmd("PING").query_async::<String>(c),
    )
    .await;
    inner
        .tracker
        .metrics()
        .probe_duration
        .observe(start.elapsed().as_secs_f64());
    let class = match result {
        Ok(Ok(_)) => {
            inner.tracker.set_auth_ok();
            return Ok(());
        }
        Ok(Err(e)) => classify(&e),
        Err(_) => Class::Timeout,
    };
    // Whatever went wrong, the next probe starts on a fresh connection.
    *conn = None;
    Err(class)
}

/// Whether Redis takes a write again after `OOM`/`READONLY`.
async fn probe_write(inner: &Inner) -> bool {
    let Some(mut conn) = inner
        .conn
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
    else {
        return false;
    };
    let mut cmd = redis::cmd("SET");
    cmd.arg("sc:redis-fallback:write-probe")
        .arg(1)
        .arg("PX")
        .arg(1000);
    matches!(
        tokio::time::timeout(inner.config.call_timeout, cmd.query_async::<()>(&mut conn)).await,
        Ok(Ok(()))
    )
}

/// ±20 % jitter without a random-number generator: the sub-microsecond part of the
/// clock is noise enough to keep many clients from probing in step.
fn jitter(delay: Duration) -> Duration {
    let noise = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let factor = 0.8 + f64::from(noise % 1000) / 1000.0 * 0.4;
    delay.mul_f64(factor)
}

/// The background task: probes, connection (re)building, recovery.
async fn supervise(inner: Arc<Inner>) {
    let config = inner.config.clone();
    let tracker = &inner.tracker;
    let mut probe_conn: Option<MultiplexedConnection> = None;
    let mut backoff = config.backoff_min;
    let mut first = true;
    loop {
        match tracker.health() {
            Health::Healthy => {
                backoff = config.backoff_min;
                let wake = tokio::time::timeout(config.probe_interval, tracker.wake.notified());
                let woken = wake.await.is_ok();
                if tracker.health() != Health::Healthy {
                    continue;
                }
                if tracker.take_rebuild() {
                    // Repeated timeouts on the main connection: replace it without
                    // making any call wait for the new one.
                    match inner.open_main().await {
                        Ok(conn) => inner.set_conn(Some(conn)),
                        Err(e) => {
                            tracker.on_unavailable("rebuilding the connection failed");
                            tracing::debug!(target: "secureconnect_redis_fallback", error = %e, "rebuild failed");
                        }
                    }
                    continue;
                }
                if tracker.writes_refused() {
                    if probe_write(&inner).await {
                        tracker.set_writes_ok();
                    } else {
                        tokio::time::sleep(jitter(backoff)).await;
                    }
                    continue;
                }
                if woken {
                    continue;
                }
                match probe(&inner, &mut probe_conn).await {
                    Ok(()) => {}
                    Err(Class::Auth) => tracker.on_auth_failure(),
                    Err(_) => {
                        tracker.degrade("probe failed");
                    }
                }
            }
            Health::Degraded => {
                // Drop the main connection: calls are refused anyway, and replies
                // still owed on it must not be waited for.
                inner.set_conn(None);
                if !first {
                    let delay = if tracker.auth_failed() {
                        config.auth_backoff
                    } else {
                        backoff
                    };
                    tokio::time::sleep(jitter(delay)).await;
                    backoff = backoff.mul_f64(1.5).min(config.backoff_max);
                }
                match probe(&inner, &mut probe_conn).await {
                    Ok(()) => match inner.open_main().await {
                        Ok(conn) => {
                            inner.set_conn(Some(conn));
                            if first {
                                tracker.become_healthy("connected");
                            } else {
                                tracker.start_recovering();
                            }
                        }
                        Err(e) if classify(&e) == Class::Auth => tracker.on_auth_failure(),
                        Err(_) => {}
                    },
                    Err(Class::Auth) => tracker.on_auth_failure(),
                    Err(_) => {}
                }
                if first && tracker.health() == Health::Degraded {
                    tracing::warn!(
                        target: "secureconnect_redis_fallback",
                        url = %redacted(&config.url),
                        "redis is not reachable at start; running degraded and retrying"
                    );
                }
                first = false;
            }
            Health::Recovering => {
                let _ =
                    tokio::time::timeout(config.recovery_interval, tracker.wake.notified()).await;
                if tracker.health() != Health::Recovering {
                    continue;
                }
                match probe(&inner, &mut probe_conn).await {
                    Ok(()) => {
                        if tracker.recovery_probe_succeeded() {
                            tracker.become_healthy("recovery probes succeeded");
                        }
                    }
                    Err(Class::Auth) => tracker.on_auth_failure(),
                    Err(_) => {
                        tracker.degrade("probe failed while recovering");
                    }
                }
            }
        }
    }
}

/// The URL without its password, for logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redacted("redis://:hunter2@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redacted("redis://host:6379"), "redis://host:6379");
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        for _ in 0..100 {
            let d = jitter(Duration::from_millis(100));
            assert!(
                d >= Duration::from_millis(80) && d <= Duration::from_millis(120),
                "{d:?}"
            );
        }
    }
}
