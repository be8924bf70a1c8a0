//! The resilient client: admission, deadline and classification of every call. Its
//! background task lives in [`supervisor`](crate::supervisor).

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::registry::Registry;
use redis::{Cmd, FromRedisValue, Pipeline};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backend::Backend;
use crate::classify::{classify, is_read_only, Failure};
use crate::cluster::view::NodeEvent;
use crate::config::RedisClientConfig;
use crate::conn::Conn;
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
    _tasks: Arc<[AbortOnDrop]>,
}

/// What the client and its supervisor share.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: RedisClientConfig,
    pub(crate) backend: Backend,
    conn: RwLock<Option<Conn>>,
    pub(crate) tracker: Tracker,
}

/// What a call sends.
#[derive(Clone, Copy)]
enum Request<'a> {
    Cmd(&'a Cmd),
    Pipeline(&'a Pipeline),
    Script(&'a redis::ScriptInvocation<'a>),
}

impl Request<'_> {
    async fn send<T: FromRedisValue>(self, conn: &mut Conn) -> redis::RedisResult<T> {
        match self {
            Self::Cmd(cmd) => cmd.query_async(conn).await,
            Self::Pipeline(pipeline) => pipeline.query_async(conn).await,
            Self::Script(invocation) => invocation.invoke_async(conn).await,
        }
    }
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
        let infos = config.validate()?;
        let backend = Backend::new(&config, infos)?;
        let metrics = ClientMetrics::register(registry, config.name.as_deref());
        if let Some(view) = backend.cluster_view() {
            metrics.register_cluster(registry, config.name.as_deref(), Arc::clone(view));
        }
        let machine = Machine::new(
            config.recovery_probes,
            config.timeouts_to_rebuild,
            config.timeouts_to_degrade,
        );
        let tracker = Tracker::new(metrics, machine);
        let inner = Arc::new(Inner {
            config,
            backend,
            conn: RwLock::new(None),
            tracker,
        });
        let mut tasks = vec![AbortOnDrop(tokio::spawn(supervise(Arc::clone(&inner))))];
        if let Some(sentinel) = inner.backend.sentinel() {
            for i in 0..sentinel.sentinels().len() {
                let watch = crate::sentinel::watch(Arc::downgrade(&inner), i);
                tasks.push(AbortOnDrop(tokio::spawn(watch)));
            }
        }
        Ok(Self {
            inner,
            _tasks: tasks.into(),
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

    /// Every change of [`writes_refused`](Self::writes_refused), as it happens: `false`
    /// once writes are accepted again (after `OOM`, `READONLY`, or a Sentinel failover
    /// that held them), which the health alone does not show.
    pub fn subscribe_writes(&self) -> watch::Receiver<bool> {
        self.inner.tracker.subscribe_writes()
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

    /// Whether this client talks to a Redis Cluster: a script or a transaction must then
    /// keep its keys in one hash slot, and the commands of a pipeline are ordered only
    /// within a slot.
    pub fn is_cluster(&self) -> bool {
        self.inner.backend.cluster_view().is_some()
    }

    /// On a Cluster, how many hash slots are served by a master this client sees down
    /// (their calls are refused at once); 0 on one server or Sentinel.
    pub fn slots_down(&self) -> u32 {
        self.inner
            .backend
            .cluster_view()
            .map_or(0, |view| view.slots_down())
    }

    /// A redis-rs client for a subscriber connection of a primitive's own: the server,
    /// the current primary, or a master of the Cluster that is up.
    pub(crate) fn pubsub_client(&self) -> Option<redis::Client> {
        self.inner.backend.pubsub_client()
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
        self.call(writes(cmd), Request::Cmd(cmd)).await
    }

    /// Runs a pipeline (or a `MULTI`/`EXEC` transaction); a write if any of its
    /// commands writes, so a pipeline of reads still runs while writes are refused.
    ///
    /// On a Cluster, a pipeline whose commands span several hash slots is split into one
    /// pipeline per slot, sent concurrently (commands of one slot keep their order;
    /// commands of different slots are not ordered), and the replies are put back in
    /// order. A transaction must stay within one slot.
    ///
    /// # Errors
    ///
    /// As [`query`](Self::query).
    pub async fn query_pipeline<T: FromRedisValue>(&self, pipeline: &Pipeline) -> Result<T, Error> {
        let write = pipeline.cmd_iter().any(writes);
        self.call(write, Request::Pipeline(pipeline)).await
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
        self.call(true, Request::Script(invocation)).await
    }

    /// The core of every call: admission, deadline, classification.
    async fn call<T: FromRedisValue>(&self, write: bool, request: Request<'_>) -> Result<T, Error> {
        if let Err(refused) = self.inner.tracker.admit(write) {
            return Err(self.fail(refused, None, None));
        }
        if let (Request::Cmd(cmd), Some(view)) = (request, self.inner.backend.cluster_view()) {
            // A key whose master is down: refused before the connection is touched.
            let node = crate::cluster::slot::cmd_slot(cmd).and_then(|slot| view.owner(slot));
            if node.is_some_and(|node| view.is_down(node)) {
                return Err(self.fail(Failure::NODE_DOWN, None, None));
            }
        }
        let Some(mut conn) = self.inner.conn() else {
            return Err(self.fail(Failure::NO_CONNECTION, None, None));
        };
        let result =
            tokio::time::timeout(self.inner.config.call_timeout, request.send(&mut conn)).await;
        let touched = conn.touched();
        if touched.refused {
            return Err(self.fail(Failure::NODE_DOWN, None, None));
        }
        match result {
            Err(_) => Err(self.fail(Failure::DEADLINE, None, touched.node)),
            Ok(Ok(value)) => {
                self.inner.tracker.metrics().count(Outcome::Ok);
                if let (Some(node), Some(view)) = (touched.node, self.inner.backend.cluster_view())
                {
                    view.record(node, NodeEvent::Reply);
                }
                self.inner.tracker.feed(Event::Reply);
                Ok(value)
            }
            Ok(Err(error)) => Err(self.fail(classify(&error), Some(error), touched.node)),
        }
    }

    /// Counts a failure, tells the tracker (or, for one node of a Cluster, the slot
    /// view) what it says about Redis, and makes the caller's error.
    fn fail(
        &self,
        failure: Failure,
        source: Option<redis::RedisError>,
        node: Option<u16>,
    ) -> Error {
        let tracker = &self.inner.tracker;
        tracker.metrics().count(failure.outcome);
        match (failure.event, self.inner.backend.cluster_view()) {
            // On a Cluster, a node that fails is that node's business: its slots are
            // refused, the others keep working. A failure of no known node (a command
            // without a key) says nothing about the cluster: the probe decides.
            (Some(Event::Timeout | Event::Unavailable(_)), Some(view)) => {
                let event = match failure.event {
                    Some(Event::Timeout) => NodeEvent::Timeout,
                    _ => NodeEvent::Unavailable,
                };
                if node.is_some_and(|node| view.record(node, event)) {
                    tracker.wake.notify_one();
                }
            }
            (Some(event), _) => {
                tracker.feed(event);
            }
            (None, _) => {}
        }
        match source {
            Some(source) => Error::with_source(failure.kind, failure.message, source),
            None => Error::new(failure.kind, failure.message),
        }
    }
}

/// Whether a command may write (by its name: unknown commands count as writes).
fn writes(cmd: &Cmd) -> bool {
    !cmd.args_iter()
        .next()
        .is_some_and(|arg| matches!(arg, redis::Arg::Simple(name) if is_read_only(name)))
}

impl Inner {
    pub(crate) fn set_conn(&self, conn: Option<Conn>) {
        *self.conn.write().unwrap_or_else(PoisonError::into_inner) = conn;
    }

    /// The main connection, if there is one.
    pub(crate) fn conn(&self) -> Option<Conn> {
        self.conn
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Opens a main connection (it is not installed).
    pub(crate) async fn open_main(&self) -> redis::RedisResult<Conn> {
        self.backend
            .open_main(&self.config, self.tracker.metrics())
            .await
    }

    /// A probe, as the backend makes it.
    pub(crate) async fn probe(&self) -> Event {
        self.backend
            .probe(&self.config, self.tracker.metrics())
            .await
    }
}
