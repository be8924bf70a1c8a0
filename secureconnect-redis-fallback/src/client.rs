//! The resilient client: admission, deadline and classification of every call. Its
//! background task lives in [`supervisor`](crate::supervisor).

use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::registry::Registry;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, FromRedisValue, Pipeline};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::classify::{classify, is_read_only, Failure};
use crate::config::RedisClientConfig;
use crate::error::Error;
use crate::health::{Event, Health, Machine, Tracker};
use crate::metrics::{ClientMetrics, Outcome};
use crate::supervisor::supervise;

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
/// use secureconnect_redis_fallback::{RedisClient, RedisClientConfig};
///
/// let mut registry = Registry::default();
/// let redis = RedisClient::connect(RedisClientConfig::new("redis://127.0.0.1:6379/"), &mut registry).await?;
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

/// What the client and its supervisor share.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: RedisClientConfig,
    client: redis::Client,
    conn: RwLock<Option<MultiplexedConnection>>,
    pub(crate) tracker: Tracker,
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
    /// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig) for a malformed URL or zero durations.
    pub fn new(config: RedisClientConfig, registry: &mut Registry) -> Result<Self, Error> {
        let client = config.validate()?;
        let metrics = ClientMetrics::register(registry, config.name.as_deref());
        let machine = Machine::new(
            config.recovery_probes,
            config.timeouts_to_rebuild,
            config.timeouts_to_degrade,
        );
        let tracker = Tracker::new(metrics, machine);
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
    /// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig) for a malformed URL or zero durations.
    pub async fn connect(
        config: RedisClientConfig,
        registry: &mut Registry,
    ) -> Result<Self, Error> {
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
    pub fn config(&self) -> &RedisClientConfig {
        &self.inner.config
    }

    /// The deadline of every call.
    pub fn call_timeout(&self) -> Duration {
        self.inner.config.call_timeout
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
        if let Err(refused) = self.inner.tracker.admit(write) {
            return Err(self.fail(refused, None));
        }
        let Some(conn) = self.inner.conn() else {
            return Err(self.fail(Failure::NO_CONNECTION, None));
        };
        match tokio::time::timeout(self.inner.config.call_timeout, f(conn)).await {
            Err(_) => Err(self.fail(Failure::DEADLINE, None)),
            Ok(Ok(value)) => {
                self.inner.tracker.metrics().count(Outcome::Ok);
                self.inner.tracker.feed(Event::Reply);
                Ok(value)
            }
            Ok(Err(error)) => Err(self.fail(classify(&error), Some(error))),
        }
    }

    /// Counts a failure, tells the tracker what it says about Redis, and makes the
    /// caller's error.
    fn fail(&self, failure: Failure, source: Option<redis::RedisError>) -> Error {
        let tracker = &self.inner.tracker;
        tracker.metrics().count(failure.outcome);
        if let Some(event) = failure.event {
            tracker.feed(event);
        }
        match source {
            Some(source) => Error::with_source(failure.kind, failure.message, source),
            None => Error::new(failure.kind, failure.message),
        }
    }
}

impl Inner {
    pub(crate) fn set_conn(&self, conn: Option<MultiplexedConnection>) {
        *self.conn.write().unwrap_or_else(PoisonError::into_inner) = conn;
    }

    /// Opens a multiplexed connection within the connect deadline (handshake
    /// included: a stopped server accepts TCP but never answers).
    pub(crate) async fn open(&self) -> redis::RedisResult<MultiplexedConnection> {
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

    /// The main connection, if there is one.
    pub(crate) fn conn(&self) -> Option<MultiplexedConnection> {
        self.conn
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) async fn open_main(&self) -> redis::RedisResult<MultiplexedConnection> {
        let conn = self.open().await?;
        self.tracker.metrics().main_connections.inc();
        Ok(conn)
    }
}
