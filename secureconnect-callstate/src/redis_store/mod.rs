//! The call store in Redis: [`RedisCallStore`], its construction and timing, the
//! per-call operations (each one Lua script), the heartbeat and the full `put`.
//! Recovery and adoption are in `recovery`, the keys and scripts in `scripts`.

mod config;
mod recovery;
mod scripts;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use secureconnect_redis_fallback::redis::{self, Value};
use secureconnect_redis_fallback::RedisClient;

pub use self::config::RedisCallStoreConfig;
use self::recovery::{parse_call, Parsed};
pub use self::recovery::{RecoveryReport, Skipped};
use self::scripts::{call_key, node_calls_key, participants_key, status, Scripts};
use crate::error::{check_id, Error};
use crate::model::{now_ms, CallState, Participant, SCHEMA_VERSION};
use crate::store::{CallStore, LeaveOutcome};

#[derive(Debug)]
struct Inner {
    redis: RedisClient,
    node: String,
    config: RedisCallStoreConfig,
    scripts: Scripts,
    /// The epoch this node holds for each call it owns.
    epochs: Mutex<HashMap<String, u64>>,
}

/// The call store in Redis, for one node. Cheap to clone.
///
/// ```no_run
/// # async fn f(redis: secureconnect_redis_fallback::RedisClient) -> Result<(), secureconnect_callstate::Error> {
/// use secureconnect_callstate::{CallStore, RedisCallStore, RedisCallStoreConfig};
///
/// let store = RedisCallStore::new(redis, "video-1", RedisCallStoreConfig::default())?;
/// let report = store.recover().await?; // the calls this node owned before a restart
/// store.heartbeat().await?;            // every few seconds, from a task
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RedisCallStore {
    inner: Arc<Inner>,
}

impl RedisCallStore {
    /// The store of node `node` (its calls, its lease). It registers no metrics: the
    /// [`CallHub`](crate::CallHub) does.
    ///
    /// # Errors
    ///
    /// [`Error::is_invalid_id`] for an unusable node id, [`Error::is_invalid_config`]
    /// for a zero duration or batch size.
    pub fn new(
        redis: RedisClient,
        node: impl Into<String>,
        config: RedisCallStoreConfig,
    ) -> Result<Self, Error> {
        let node = node.into();
        check_id(&node)?;
        config.validate()?;
        Ok(Self {
            inner: Arc::new(Inner {
                redis,
                node,
                config,
                scripts: Scripts::new(),
                epochs: Mutex::new(HashMap::new()),
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

    /// The client.
    pub fn redis(&self) -> &RedisClient {
        &self.inner.redis
    }

    fn ttl_ms(&self) -> u64 {
        self.inner.config.call_ttl.as_millis() as u64
    }

    fn epoch(&self, call: &str) -> Result<u64, Error> {
        self.inner
            .epochs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(call)
            .copied()
            .ok_or_else(|| Error::not_owner(call))
    }

    fn set_epoch(&self, call: &str, epoch: Option<u64>) {
        let mut epochs = self
            .inner
            .epochs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match epoch {
            Some(e) => {
                epochs.insert(call.to_owned(), e);
            }
            None => {
                epochs.remove(call);
            }
        }
    }

    async fn node_set(&self, add: bool, call: &str) -> Result<(), Error> {
        let mut cmd = redis::cmd(if add { "SADD" } else { "SREM" });
        cmd.arg(node_calls_key(&self.inner.node)).arg(call);
        self.inner.redis.query::<i64>(&cmd).await?;
        Ok(())
    }

    /// Refreshes this node's lease and the TTL of every call it owns (pipelined).
    ///
    /// # Errors
    ///
    /// When Redis is unavailable ([`Error::is_unavailable`]) or refuses a command.
    pub async fn heartbeat(&self) -> Result<(), Error> {
        let calls: Vec<String> = self
            .inner
            .epochs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        let ttl = self.ttl_ms();
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(scripts::lease_key(&self.inner.node))
            .arg(now_ms())
            .arg("PX")
            .arg(self.inner.config.lease_ttl.as_millis() as u64)
            .ignore();
        pipe.cmd("PEXPIRE")
            .arg(node_calls_key(&self.inner.node))
            .arg(ttl * 2)
            .ignore();
        for call in &calls {
            pipe.cmd("PEXPIRE").arg(call_key(call)).arg(ttl).ignore();
            pipe.cmd("PEXPIRE")
                .arg(participants_key(call))
                .arg(ttl)
                .ignore();
        }
        self.inner.redis.query_pipeline::<()>(&pipe).await?;
        Ok(())
    }

    /// Writes a whole call as this node knows it (after Redis was away), unless another
    /// node owns it now. The version in Redis never goes down.
    ///
    /// # Errors
    ///
    /// [`Error::is_not_owner`] if another node adopted it; Redis errors.
    pub async fn put(&self, call: &CallState) -> Result<u64, Error> {
        let mut invocation = self.inner.scripts.put.prepare_invoke();
        invocation
            .key(call_key(&call.id))
            .key(participants_key(&call.id))
            .arg(&self.inner.node)
            .arg(call.epoch)
            .arg(call.version)
            .arg(call.created_at_ms)
            .arg(SCHEMA_VERSION)
            .arg(self.ttl_ms());
        for p in call.participants.values() {
            invocation.arg(&p.id).arg(participant_json(p));
        }
        let reply: Vec<i64> = self.inner.redis.invoke_script(&invocation).await?;
        status(&reply, &call.id)?;
        self.set_epoch(&call.id, Some(call.epoch));
        self.node_set(true, &call.id).await?;
        Ok(reply.get(1).map_or(call.version, |v| (*v).max(0) as u64))
    }

    /// Forgets a call this node no longer serves (no Redis write).
    pub fn forget(&self, call: &str) {
        self.set_epoch(call, None);
    }
}

fn participant_json(p: &Participant) -> String {
    serde_json::to_string(p).unwrap_or_default()
}

impl CallStore for RedisCallStore {
    async fn create(&self, call_id: &str) -> Result<CallState, Error> {
        check_id(call_id)?;
        let created = now_ms();
        let mut invocation = self.inner.scripts.create.prepare_invoke();
        invocation
            .key(call_key(call_id))
            .key(participants_key(call_id))
            .arg(&self.inner.node)
            .arg(self.ttl_ms())
            .arg(created)
            .arg(SCHEMA_VERSION);
        let reply: Vec<i64> = self.inner.redis.invoke_script(&invocation).await?;
        status(&reply, call_id)?;
        self.set_epoch(call_id, Some(1));
        self.node_set(true, call_id).await?;
        Ok(CallState {
            id: call_id.to_owned(),
            owner: self.inner.node.clone(),
            epoch: 1,
            version: 1,
            created_at_ms: created,
            participants: BTreeMap::new(),
        })
    }

    async fn join(&self, call_id: &str, participant: Participant) -> Result<u64, Error> {
        check_id(call_id)?;
        check_id(&participant.id)?;
        let epoch = self.epoch(call_id)?;
        let mut invocation = self.inner.scripts.join.prepare_invoke();
        invocation
            .key(call_key(call_id))
            .key(participants_key(call_id))
            .arg(&self.inner.node)
            .arg(epoch)
            .arg(&participant.id)
            .arg(participant_json(&participant))
            .arg(self.ttl_ms());
        let reply: Vec<i64> = self.inner.redis.invoke_script(&invocation).await?;
        if reply.first() == Some(&-1) {
            self.set_epoch(call_id, None);
        }
        status(&reply, call_id)?;
        Ok(reply.get(1).copied().unwrap_or(0).max(0) as u64)
    }

    async fn leave(&self, call_id: &str, participant_id: &str) -> Result<LeaveOutcome, Error> {
        check_id(call_id)?;
        let epoch = self.epoch(call_id)?;
        let mut invocation = self.inner.scripts.leave.prepare_invoke();
        invocation
            .key(call_key(call_id))
            .key(participants_key(call_id))
            .arg(&self.inner.node)
            .arg(epoch)
            .arg(participant_id);
        let reply: Vec<i64> = self.inner.redis.invoke_script(&invocation).await?;
        if reply.first() == Some(&-1) {
            self.set_epoch(call_id, None);
        }
        status(&reply, call_id)?;
        let outcome = LeaveOutcome {
            version: reply.get(1).copied().unwrap_or(0).max(0) as u64,
            removed: reply.get(2) == Some(&1),
            call_ended: reply.get(3) == Some(&1),
        };
        if outcome.call_ended {
            self.set_epoch(call_id, None);
            self.node_set(false, call_id).await?;
        }
        Ok(outcome)
    }

    async fn get(&self, call_id: &str) -> Result<Option<CallState>, Error> {
        check_id(call_id)?;
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        pipe.cmd("HGETALL").arg(call_key(call_id));
        pipe.cmd("HGETALL").arg(participants_key(call_id));
        let values: Vec<Value> = self.inner.redis.query_pipeline(&pipe).await?;
        match parse_call(call_id, &values[0], values.get(1).unwrap_or(&Value::Nil)) {
            Parsed::Call(call) => Ok(Some(call)),
            Parsed::Missing => Ok(None),
            Parsed::Corrupt(reason) => Err(Error::corrupt(call_id, reason)),
        }
    }

    async fn list_node_calls(&self) -> Result<Vec<String>, Error> {
        self.scan_node(&self.inner.node).await
    }

    async fn end(&self, call_id: &str) -> Result<(), Error> {
        check_id(call_id)?;
        let epoch = self.epoch(call_id)?;
        let mut invocation = self.inner.scripts.end.prepare_invoke();
        invocation
            .key(call_key(call_id))
            .key(participants_key(call_id))
            .arg(&self.inner.node)
            .arg(epoch);
        let reply: Vec<i64> = self.inner.redis.invoke_script(&invocation).await?;
        self.set_epoch(call_id, None);
        self.node_set(false, call_id).await?;
        status(&reply, call_id)
    }
}
