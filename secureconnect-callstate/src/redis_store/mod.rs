//! The call store in Redis: [`RedisCallStore`], its construction and timing, and how a
//! script is run (pipelined with the node-set update, loaded again after `NOSCRIPT`).
//! The [`CallStore`](crate::CallStore) operations are in `calls`, the full `put` in
//! `put`, the heartbeat in `heartbeat`, the incarnation and its keys (one per hash slot
//! on a Cluster) in `incarnation`, recovery and adoption in `recovery`, a node's status and a call's owner
//! for other processes in `nodes`, the keys and
//! scripts in `scripts`.

mod calls;
mod config;
mod heartbeat;
mod incarnation;
mod nodes;
mod put;
mod recovery;
mod scripts;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use secureconnect_redis_fallback::redis::{self, Value};
use secureconnect_redis_fallback::RedisClient;

pub use self::config::RedisCallStoreConfig;
pub use self::nodes::{call_owner, NodeStatus};
pub use self::recovery::{RecoveryReport, Skipped};
use self::scripts::{node_calls_key, owned_by_this_id, Script, Scripts};
use crate::error::{check_id, Error};
use crate::model::Participant;

/// At most this many calls are remembered whose `end` failed (their epoch kept for a
/// retry), and as many that this node lost (their stale epoch kept for `put`).
const REMEMBERED_MAX: usize = 65_536;

#[derive(Debug)]
struct Inner {
    redis: RedisClient,
    node: String,
    config: RedisCallStoreConfig,
    scripts: Scripts,
    held: Mutex<Held>,
    /// This process's incarnation of its node id: claimed once, on first use.
    incarnation: tokio::sync::OnceCell<u64>,
    /// On a Cluster, when every slot's incarnation key was last claimed.
    full_claim: Mutex<Option<std::time::Instant>>,
    heartbeat_failures: Counter,
    /// Whether the last heartbeat failed (a warning is logged on each change to true).
    heartbeat_failing: AtomicBool,
}

/// The epoch this node holds for each call it serves (`live`, refreshed by the
/// heartbeat); for the calls whose `end` has not reached Redis yet (`ending`, kept for
/// a retry); and for the calls a write found lost (`lost`: the stale epoch is what a
/// later `put` of the call carries, so it stays refused).
#[derive(Debug, Default)]
struct Held {
    live: HashMap<String, u64>,
    ending: HashMap<String, u64>,
    lost: HashMap<String, u64>,
    /// Calls whose `create` may have reached Redis without this store hearing back
    /// (its reply lost): an `end` of one ends it if this node owns it.
    unsure: HashSet<String>,
}

impl Held {
    /// Remembers `epoch` for `call` in `map`, bounded (an arbitrary entry goes).
    fn remember(map: &mut HashMap<String, u64>, call: &str, epoch: u64) {
        if map.len() >= REMEMBERED_MAX && !map.contains_key(call) {
            if let Some(any) = map.keys().next().cloned() {
                map.remove(&any);
            }
        }
        map.insert(call.to_owned(), epoch);
    }
}

/// The call store in Redis, for one node. Cheap to clone.
///
/// ```no_run
/// # async fn f(redis: secureconnect_redis_fallback::RedisClient) -> Result<(), secureconnect_callstate::Error> {
/// use prometheus_client::registry::Registry;
/// use secureconnect_callstate::{CallStore, RedisCallStore, RedisCallStoreConfig};
///
/// let mut registry = Registry::default();
/// let store = RedisCallStore::new(redis, "video-1", RedisCallStoreConfig::default(), &mut registry)?;
/// let report = store.recover().await?; // the calls this node owned before a restart
/// store.heartbeat().await?;            // every few seconds, from a task
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RedisCallStore {
    inner: Arc<Inner>,
}

impl RedisCallStore {
    /// The store of node `node` (its calls, its lease). Its metric,
    /// `call_heartbeat_failures_total`, goes to `registry`.
    ///
    /// # Errors
    ///
    /// [`Error::is_invalid_id`] for an unusable node id, [`Error::is_invalid_config`]
    /// for a zero duration or batch size.
    pub fn new(
        redis: RedisClient,
        node: impl Into<String>,
        config: RedisCallStoreConfig,
        registry: &mut Registry,
    ) -> Result<Self, Error> {
        let node = node.into();
        check_id(&node)?;
        config.validate()?;
        let heartbeat_failures = Counter::default();
        registry.register(
            "call_heartbeat_failures",
            "Heartbeats (this node's lease and its calls' TTLs) that failed",
            heartbeat_failures.clone(),
        );
        Ok(Self {
            inner: Arc::new(Inner {
                redis,
                node,
                config,
                scripts: Scripts::new(),
                held: Mutex::new(Held::default()),
                incarnation: tokio::sync::OnceCell::new(),
                full_claim: Mutex::new(None),
                heartbeat_failures,
                heartbeat_failing: AtomicBool::new(false),
            }),
        })
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// How long a call's keys live without a refresh
    /// ([`RedisCallStoreConfig::call_ttl`]).
    pub fn call_ttl(&self) -> Duration {
        self.inner.config.call_ttl
    }

    /// How long this node's lease lives without a refresh
    /// ([`RedisCallStoreConfig::lease_ttl`]).
    pub fn lease_ttl(&self) -> Duration {
        self.inner.config.lease_ttl
    }

    /// Calls read per pipelined batch at recovery
    /// ([`RedisCallStoreConfig::recovery_batch`]).
    pub fn recovery_batch(&self) -> usize {
        self.inner.config.recovery_batch
    }

    /// Calls refreshed per pipeline by a heartbeat
    /// ([`RedisCallStoreConfig::heartbeat_batch`]).
    pub fn heartbeat_batch(&self) -> usize {
        self.inner.config.heartbeat_batch
    }

    /// How long a call's fence outlives it ([`RedisCallStoreConfig::fence_ttl`]).
    pub fn fence_ttl(&self) -> Duration {
        self.inner.config.fence_ttl
    }

    /// The client.
    pub fn redis(&self) -> &RedisClient {
        &self.inner.redis
    }

    fn ttl_ms(&self) -> u64 {
        self.inner.config.call_ttl.as_millis() as u64
    }

    fn fence_ttl_ms(&self) -> u64 {
        self.inner.config.fence_ttl.as_millis() as u64
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        self.inner
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn epoch(&self, call: &str) -> Result<u64, Error> {
        self.held()
            .live
            .get(call)
            .copied()
            .ok_or_else(|| Error::not_owner(call))
    }

    fn set_epoch(&self, call: &str, epoch: Option<u64>) {
        let mut held = self.held();
        held.ending.remove(call);
        held.unsure.remove(call);
        match epoch {
            Some(e) => {
                held.lost.remove(call);
                held.live.insert(call.to_owned(), e);
            }
            None => {
                held.live.remove(call);
            }
        }
    }

    /// Runs a pipeline built with `ignore_errors` (each script's failure is its own
    /// reply); after a `NOSCRIPT` (Redis restarted, or its script cache was flushed)
    /// loads the scripts and runs it once more. Every command in these pipelines may
    /// then run twice: set updates are idempotent, and a script that ran before the
    /// `NOSCRIPT` only bumps its epoch or version once more (they only grow).
    async fn exec(&self, pipe: &redis::Pipeline) -> Result<Vec<Value>, Error> {
        let values: Vec<Value> = self.inner.redis.query_pipeline(pipe).await?;
        let noscript = values
            .iter()
            .any(|v| matches!(v, Value::ServerError(e) if e.code() == "NOSCRIPT"));
        if !noscript {
            return Ok(values);
        }
        self.load_scripts().await?;
        Ok(self.inner.redis.query_pipeline(pipe).await?)
    }

    /// Loads every script: before the batches of `recover` and `adopt`, so that
    /// none of them meets a `NOSCRIPT` after some of its scripts ran (only a
    /// `SCRIPT FLUSH` from another client in between could make one run again).
    async fn load_scripts(&self) -> Result<(), Error> {
        self.inner
            .redis
            .query_pipeline::<()>(&self.inner.scripts.load())
            .await?;
        Ok(())
    }

    /// This process's incarnation of its node id, claimed on first use (the `CLAIM`
    /// script: above the node key's value and above Redis's clock, so the order holds
    /// when the key is lost), which fences out every older process with this node id
    /// at once (their writes carry a lower one); on a Cluster, then claimed in every
    /// hash slot's incarnation key before any call is read or written. Claimed once per
    /// store: a write in flight never meets a newer incarnation of its own process.
    pub(super) async fn incarnation(&self) -> Result<u64, Error> {
        let claimed = self
            .inner
            .incarnation
            .get_or_try_init(|| async {
                let incarnation = self.new_incarnation().await?;
                if self.inner.redis.is_cluster() {
                    let started = std::time::Instant::now();
                    self.claim_slots(incarnation, 0..secureconnect_redis_fallback::cluster::SLOTS)
                        .await?;
                    *self
                        .inner
                        .full_claim
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(std::time::Instant::now());
                    tracing::debug!(node = %self.inner.node, took = ?started.elapsed(), "claimed the incarnation in every cluster slot");
                }
                tracing::info!(
                    node = %self.inner.node,
                    incarnation,
                    "claimed this node id: older processes with it can no longer write its calls"
                );
                Ok::<_, Error>(incarnation)
            })
            .await?;
        Ok(*claimed)
    }

    /// `script` on `call`'s keys, with this process's incarnation (claimed first if
    /// need be); the caller adds the script's own arguments.
    async fn script(&self, script: &Script, call: &str) -> Result<redis::Cmd, Error> {
        let incarnation = self.incarnation().await?;
        Ok(script.on_call(
            call,
            &self.incarnation_key_for(call),
            incarnation,
            self.fence_ttl_ms(),
        ))
    }

    /// Runs one script invocation (after `before`: in the same round trip on one Redis;
    /// on a Cluster, where `before` is in another slot, once it is done) and reads its
    /// integer reply.
    async fn run(
        &self,
        call: &str,
        before: Option<redis::Cmd>,
        script: redis::Cmd,
    ) -> Result<Vec<i64>, Error> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        if let Some(cmd) = before {
            if self.inner.redis.is_cluster() {
                self.inner.redis.query::<Value>(&cmd).await?;
            } else {
                pipe.add_command(cmd).ignore();
            }
        }
        pipe.add_command(script);
        let values = self.exec(&pipe).await?;
        script_reply(call, values.into_iter().next().unwrap_or(Value::Nil))
    }

    /// `SADD` of `call` to this node's set: sent before the script that writes the
    /// call, in its round trip, so a crash between the two never leaves the call in no
    /// set (recovery drops members whose call is gone).
    fn sadd(&self, call: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("SADD");
        cmd.arg(node_calls_key(&self.inner.node)).arg(call);
        cmd
    }

    /// Drops `call` from this node's set, after the call ended or was found to be
    /// another node's. Best effort: the write it follows is done, and a member left
    /// behind is dropped by recovery (its call is gone or another node's).
    async fn srem(&self, call: &str) {
        let mut cmd = redis::cmd("SREM");
        cmd.arg(node_calls_key(&self.inner.node)).arg(call);
        if let Err(e) = self.inner.redis.query::<i64>(&cmd).await {
            tracing::debug!(call, error = %crate::error::Chain(&e), "could not drop a call from the node's set");
        }
    }

    /// A write carrying `epoch` was refused: the call is lost to this node (no longer
    /// refreshed nor written), and `epoch` is what a later `put` of it carries.
    fn lose(&self, call: &str, epoch: u64) {
        let mut held = self.held();
        held.live.remove(call);
        held.ending.remove(call);
        held.unsure.remove(call);
        // Epoch 0 (an `end` of a call never held): no epoch to keep for a `put`.
        if epoch > 0 {
            Held::remember(&mut held.lost, call, epoch);
        }
    }

    /// After a refused `put`: lose the call, and drop it from this node's set unless
    /// a process with this node's id owns it (the set is shared by the id).
    async fn refused(&self, call: &str, epoch: u64, reply: &[i64]) {
        self.lose(call, epoch);
        if !owned_by_this_id(reply) {
            self.srem(call).await;
        }
    }

    /// Forgets a call this node no longer serves (no Redis write).
    pub fn forget(&self, call: &str) {
        self.set_epoch(call, None);
    }
}

/// A script's reply: its integers, or the error it failed with.
fn script_reply(call: &str, value: Value) -> Result<Vec<i64>, Error> {
    match value {
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::Int(i) => Ok(i),
                other => Err(Error::corrupt(
                    call,
                    format!("unexpected script reply {other:?}"),
                )),
            })
            .collect(),
        Value::ServerError(e) => Err(Error::refused(call, e)),
        other => Err(Error::corrupt(
            call,
            format!("unexpected script reply {other:?}"),
        )),
    }
}

pub(super) fn participant_json(p: &Participant) -> String {
    serde_json::to_string(p).unwrap_or_default()
}
