//! The call store in Redis.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use secureconnect_redis_fallback::redis::{self, Value};
use secureconnect_redis_fallback::RedisClient;

use crate::error::{check_id, CallError};
use crate::model::{now_ms, CallState, Participant, SCHEMA_VERSION};
use crate::scripts;
use crate::store::{CallStore, LeaveOutcome};

/// Timing of a [`RedisCallStore`].
#[derive(Clone, Copy, Debug)]
pub struct StoreConfig {
    /// How long a call's keys live without a refresh (default 60 s). The heartbeat
    /// refreshes them; a call whose node is gone expires after this.
    pub call_ttl: Duration,
    /// How long a node's lease lives without a refresh (default 15 s). Another node may
    /// adopt the calls of a node whose lease has lapsed.
    pub lease_ttl: Duration,
    /// Calls read per pipelined batch at recovery (default 500).
    pub recovery_batch: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            call_ttl: Duration::from_secs(60),
            lease_ttl: Duration::from_secs(15),
            recovery_batch: 500,
        }
    }
}

/// Why a call was not recovered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skipped {
    /// The entry could not be read (bad JSON, unknown schema version, wrong key type,
    /// missing owner); it is left in Redis for inspection.
    Corrupt {
        /// The call.
        call: String,
        /// What is wrong.
        reason: String,
    },
    /// The call belongs to another node now (it was adopted).
    Foreign {
        /// The call.
        call: String,
        /// Its owner.
        owner: String,
    },
}

/// What [`RedisCallStore::recover`] found.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    /// Calls recovered, every participant awaiting rejoin.
    pub calls: Vec<CallState>,
    /// Calls skipped, with why.
    pub skipped: Vec<Skipped>,
    /// Set members whose call had expired; removed from the set.
    pub dangling_removed: usize,
    /// How long it took.
    pub duration: Duration,
}

/// Key layout. Every key of one call carries the hash tag `{<call id>}`.
pub(crate) fn call_key(id: &str) -> String {
    format!("sc:call:{{{id}}}")
}
pub(crate) fn participants_key(id: &str) -> String {
    format!("sc:call:{{{id}}}:p")
}
fn node_calls_key(node: &str) -> String {
    format!("sc:node:{{{node}}}:calls")
}
fn lease_key(node: &str) -> String {
    format!("sc:node:{{{node}}}:lease")
}

struct Scripts {
    create: redis::Script,
    join: redis::Script,
    leave: redis::Script,
    end: redis::Script,
    adopt: redis::Script,
    put: redis::Script,
}

impl std::fmt::Debug for Scripts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scripts")
    }
}

#[derive(Debug)]
struct Inner {
    redis: RedisClient,
    node: String,
    config: StoreConfig,
    scripts: Scripts,
    /// The epoch this node holds for each call it owns.
    epochs: Mutex<HashMap<String, u64>>,
}

/// The call store in Redis, for one node. Cheap to clone.
///
/// ```no_run
/// # async fn f(redis: secureconnect_redis_fallback::RedisClient) -> Result<(), secureconnect_callstate::CallError> {
/// use secureconnect_callstate::{CallStore, RedisCallStore, StoreConfig};
///
/// let store = RedisCallStore::new(redis, "video-1", StoreConfig::default())?;
/// let report = store.recover().await?; // the calls this node owned before a restart
/// store.heartbeat().await?;            // every few seconds, from a task
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RedisCallStore {
    inner: Arc<Inner>,
}

fn status(values: &[i64], call: &str) -> Result<(), CallError> {
    match values.first() {
        Some(1) => Ok(()),
        Some(0) => Err(CallError::NotFound(call.to_owned())),
        Some(-1) => Err(CallError::NotOwner(call.to_owned())),
        Some(-2) => Err(CallError::AlreadyExists(call.to_owned())),
        _ => Err(CallError::Corrupt {
            call: call.to_owned(),
            reason: format!("unexpected script reply {values:?}"),
        }),
    }
}

impl RedisCallStore {
    /// The store of node `node` (its calls, its lease).
    ///
    /// # Errors
    ///
    /// [`CallError::InvalidId`] for an unusable node id.
    pub fn new(
        redis: RedisClient,
        node: impl Into<String>,
        config: StoreConfig,
    ) -> Result<Self, CallError> {
        let node = node.into();
        check_id(&node)?;
        Ok(Self {
            inner: Arc::new(Inner {
                redis,
                node,
                config,
                scripts: Scripts {
                    create: redis::Script::new(scripts::CREATE),
                    join: redis::Script::new(scripts::JOIN),
                    leave: redis::Script::new(scripts::LEAVE),
                    end: redis::Script::new(scripts::END),
                    adopt: redis::Script::new(scripts::ADOPT),
                    put: redis::Script::new(scripts::PUT),
                },
                epochs: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// The timing.
    pub fn config(&self) -> StoreConfig {
        self.inner.config
    }

    /// The client.
    pub fn redis(&self) -> &RedisClient {
        &self.inner.redis
    }

    fn ttl_ms(&self) -> u64 {
        self.inner.config.call_ttl.as_millis() as u64
    }

    fn epoch(&self, call: &str) -> Result<u64, CallError> {
        self.inner
            .epochs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(call)
            .copied()
            .ok_or_else(|| CallError::NotOwner(call.to_owned()))
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

    async fn node_set(&self, add: bool, call: &str) -> Result<(), CallError> {
        let mut cmd = redis::cmd(if add { "SADD" } else { "SREM" });
        cmd.arg(node_calls_key(&self.inner.node)).arg(call);
        self.inner.redis.query::<i64>(&cmd).await?;
        Ok(())
    }

    /// Refreshes this node's lease and the TTL of every call it owns (pipelined).
    ///
    /// # Errors
    ///
    /// When Redis is unavailable.
    pub async fn heartbeat(&self) -> Result<(), CallError> {
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
            .arg(lease_key(&self.inner.node))
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

    /// Reads back the calls this node owned: `SSCAN` of its set, pipelined `HGETALL`s
    /// in batches. Corrupt entries are skipped and reported, set members whose call
    /// expired are removed, calls another node adopted are let go. `KEYS` is never
    /// used. Takes the lease.
    ///
    /// # Errors
    ///
    /// When Redis is unavailable.
    pub async fn recover(&self) -> Result<RecoveryReport, CallError> {
        let started = Instant::now();
        let mut report = RecoveryReport::default();
        self.heartbeat().await?;
        let ids = self.scan_node(&self.inner.node).await?;
        let mut dangling = Vec::new();
        for batch in ids.chunks(self.inner.config.recovery_batch.max(1)) {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for id in batch {
                pipe.cmd("HGETALL").arg(call_key(id));
                pipe.cmd("HGETALL").arg(participants_key(id));
            }
            let values: Vec<Value> = self.inner.redis.query_pipeline(&pipe).await?;
            for (id, pair) in batch.iter().zip(values.chunks(2)) {
                match parse_call(id, &pair[0], pair.get(1).unwrap_or(&Value::Nil)) {
                    Parsed::Call(call) if call.owner == self.inner.node => {
                        self.set_epoch(&call.id, Some(call.epoch));
                        report.calls.push(call);
                    }
                    Parsed::Call(call) => {
                        dangling.push(call.id.clone());
                        report.skipped.push(Skipped::Foreign {
                            call: call.id,
                            owner: call.owner,
                        });
                    }
                    Parsed::Missing => {
                        dangling.push(id.clone());
                        report.dangling_removed += 1;
                    }
                    Parsed::Corrupt(reason) => {
                        tracing::warn!(call = %id, %reason, "skipping a corrupt call entry at recovery");
                        report.skipped.push(Skipped::Corrupt {
                            call: id.clone(),
                            reason,
                        });
                    }
                }
            }
        }
        for chunk in dangling.chunks(500) {
            let mut cmd = redis::cmd("SREM");
            cmd.arg(node_calls_key(&self.inner.node)).arg(chunk);
            self.inner.redis.query::<i64>(&cmd).await?;
        }
        self.heartbeat().await?;
        report.duration = started.elapsed();
        Ok(report)
    }

    async fn scan_node(&self, node: &str) -> Result<Vec<String>, CallError> {
        let mut ids = Vec::new();
        let mut cursor = 0u64;
        loop {
            let mut cmd = redis::cmd("SSCAN");
            cmd.arg(node_calls_key(node))
                .arg(cursor)
                .arg("COUNT")
                .arg(1000);
            let (next, mut batch): (u64, Vec<String>) = self.inner.redis.query(&cmd).await?;
            ids.append(&mut batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Adopts the calls of `dead_node` once its lease has lapsed: each call's owner
    /// becomes this node and its epoch is bumped, so the dead node's late writes are
    /// refused. Returns the adopted calls' ids.
    ///
    /// # Errors
    ///
    /// [`CallError::NotOwner`] (naming the node) while its lease is alive; Redis errors.
    pub async fn adopt(&self, dead_node: &str) -> Result<Vec<String>, CallError> {
        check_id(dead_node)?;
        let alive: i64 = self
            .inner
            .redis
            .query(redis::cmd("EXISTS").arg(lease_key(dead_node)))
            .await?;
        if alive == 1 {
            return Err(CallError::NotOwner(format!(
                "node {dead_node} (lease alive)"
            )));
        }
        let mut adopted = Vec::new();
        for id in self.scan_node(dead_node).await? {
            let mut invocation = self.inner.scripts.adopt.prepare_invoke();
            invocation
                .key(call_key(&id))
                .key(participants_key(&id))
                .arg(&self.inner.node)
                .arg(dead_node)
                .arg(self.ttl_ms());
            let reply: Vec<i64> = self.inner.redis.invoke_script(&invocation).await?;
            if reply.first() == Some(&1) {
                self.set_epoch(&id, reply.get(1).map(|e| (*e).max(0) as u64));
                self.node_set(true, &id).await?;
                adopted.push(id.clone());
            }
            let mut cmd = redis::cmd("SREM");
            cmd.arg(node_calls_key(dead_node)).arg(&id);
            self.inner.redis.query::<i64>(&cmd).await?;
        }
        Ok(adopted)
    }

    /// Writes a whole call as this node knows it (after Redis was away), unless another
    /// node owns it now. The version in Redis never goes down.
    ///
    /// # Errors
    ///
    /// [`CallError::NotOwner`] if another node adopted it; Redis errors.
    pub async fn put(&self, call: &CallState) -> Result<u64, CallError> {
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

enum Parsed {
    Call(CallState),
    Missing,
    Corrupt(String),
}

fn hash_fields(value: &Value) -> Result<HashMap<String, String>, String> {
    match value {
        Value::ServerError(e) => Err(format!("wrong key type ({})", e.code())),
        other => redis::from_redis_value_ref::<HashMap<String, String>>(other)
            .map_err(|e| format!("unreadable hash: {e}")),
    }
}

fn parse_call(id: &str, call: &Value, participants: &Value) -> Parsed {
    let fields = match hash_fields(call) {
        Ok(f) => f,
        Err(reason) => return Parsed::Corrupt(reason),
    };
    if fields.is_empty() {
        return Parsed::Missing;
    }
    let Some(owner) = fields.get("owner").filter(|o| !o.is_empty()) else {
        return Parsed::Corrupt("missing owner".into());
    };
    match fields.get("schema").map(|s| s.parse::<u32>()) {
        Some(Ok(SCHEMA_VERSION)) => {}
        Some(Ok(other)) => return Parsed::Corrupt(format!("unknown schema version {other}")),
        _ => return Parsed::Corrupt("missing schema version".into()),
    }
    let number = |name: &str| fields.get(name).and_then(|v| v.parse::<u64>().ok());
    let (Some(epoch), Some(version)) = (number("epoch"), number("version")) else {
        return Parsed::Corrupt("missing epoch or version".into());
    };
    let raw = match hash_fields(participants) {
        Ok(f) => f,
        Err(reason) => return Parsed::Corrupt(format!("participants: {reason}")),
    };
    let mut members = BTreeMap::new();
    for (pid, json) in raw {
        match serde_json::from_str::<Participant>(&json) {
            Ok(p) if p.id == pid => {
                members.insert(pid, p);
            }
            Ok(_) => return Parsed::Corrupt(format!("participant {pid}: id mismatch")),
            Err(e) => return Parsed::Corrupt(format!("participant {pid}: bad JSON ({e})")),
        }
    }
    Parsed::Call(CallState {
        id: id.to_owned(),
        owner: owner.clone(),
        epoch,
        version,
        created_at_ms: number("created").unwrap_or(0),
        participants: members,
    })
}

impl CallStore for RedisCallStore {
    async fn create(&self, call_id: &str) -> Result<CallState, CallError> {
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

    async fn join(&self, call_id: &str, participant: Participant) -> Result<u64, CallError> {
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

    async fn leave(&self, call_id: &str, participant_id: &str) -> Result<LeaveOutcome, CallError> {
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

    async fn get(&self, call_id: &str) -> Result<Option<CallState>, CallError> {
        check_id(call_id)?;
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        pipe.cmd("HGETALL").arg(call_key(call_id));
        pipe.cmd("HGETALL").arg(participants_key(call_id));
        let values: Vec<Value> = self.inner.redis.query_pipeline(&pipe).await?;
        match parse_call(call_id, &values[0], values.get(1).unwrap_or(&Value::Nil)) {
            Parsed::Call(call) => Ok(Some(call)),
            Parsed::Missing => Ok(None),
            Parsed::Corrupt(reason) => Err(CallError::Corrupt {
                call: call_id.to_owned(),
                reason,
            }),
        }
    }

    async fn list_node_calls(&self) -> Result<Vec<String>, CallError> {
        self.scan_node(&self.inner.node).await
    }

    async fn end(&self, call_id: &str) -> Result<(), CallError> {
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
