//! Reading calls back from Redis: [`RedisCallStore::recover`] after a restart,
//! [`RedisCallStore::adopt`] of a dead node's calls, and the parsing of a stored call
//! that both rely on (a corrupt entry is reported, never fatal).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use secureconnect_redis_fallback::redis::{self, Value};

use super::scripts::{call_key, lease_key, node_calls_key, owned_by_this_id, participants_key};
use super::{script_reply, RedisCallStore};
use crate::error::{check_id, Chain, Error};
use crate::model::{CallState, Participant, SCHEMA_VERSION};

/// Why a call was not recovered. More reasons may be added.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
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

/// What [`RedisCallStore::recover`] found. More fields may be added.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
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

impl RedisCallStore {
    /// Reads back and takes over the calls this node owned: `SSCAN` of its set, then
    /// one pipeline per [`recovery_batch`](Self::recovery_batch) calls of, for each
    /// call, a small script that bumps its epoch, then two `HGETALL`s. A process still
    /// holding the old epoch (the same node id: a rolling update, a paused process
    /// that resumes) is fenced out: its later writes are refused
    /// ([`Error::is_not_owner`]). Corrupt entries are skipped and reported, set members
    /// whose call expired are removed, calls another node adopted are let go. `KEYS`
    /// is never used. Takes the lease.
    ///
    /// # Errors
    ///
    /// When Redis is unavailable ([`Error::is_unavailable`]) or refuses a command.
    pub async fn recover(&self) -> Result<RecoveryReport, Error> {
        let started = Instant::now();
        let mut report = RecoveryReport::default();
        self.heartbeat().await?;
        let mut ids = self.scan_node(&self.inner.node).await?;
        // Calls this process holds already (created, or taken over, since it started)
        // are current here: neither taken over again nor reported.
        {
            let held = self.held();
            ids.retain(|id| !held.live.contains_key(id));
        }
        if !ids.is_empty() {
            self.load_scripts().await?;
        }
        let mut dangling = Vec::new();
        let batches: Vec<&[String]> = ids
            .chunks(self.inner.config.recovery_batch.max(1))
            .collect();
        let mut values = match batches.first() {
            Some(batch) => self.exec(&self.recovery_pipeline(batch)).await?,
            None => Vec::new(),
        };
        for (k, batch) in batches.iter().enumerate() {
            // The next batch is sent before this one is read, so Redis runs it while
            // this one is parsed.
            let next = batches.get(k + 1).map(|b| self.recovery_pipeline(b));
            let fetch = async {
                match &next {
                    Some(pipe) => self.exec(pipe).await,
                    None => Ok(Vec::new()),
                }
            };
            let current = std::mem::take(&mut values);
            let read = async {
                // Let the connection send the next batch first.
                tokio::task::yield_now().await;
                self.take_batch(batch, &current, &mut report, &mut dangling);
            };
            let (fetched, ()) = tokio::join!(fetch, read);
            values = fetched?;
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

    /// Per call: the take-over first (the reads after it see the new epoch, and only
    /// this process may write the call from then on), then the call and its
    /// participants.
    fn recovery_pipeline(&self, batch: &[String]) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for id in batch {
            let mut script = self.inner.scripts.recover.on_call(id);
            script
                .arg(&self.inner.node)
                .arg(SCHEMA_VERSION)
                .arg(self.fence_ttl_ms());
            pipe.add_command(script);
            pipe.cmd("HGETALL").arg(call_key(id));
            pipe.cmd("HGETALL").arg(participants_key(id));
        }
        pipe
    }

    /// Reads a batch's replies into the report (three per call: the script's, whose
    /// failures show in the reads too, the call, its participants).
    fn take_batch(
        &self,
        batch: &[String],
        values: &[Value],
        report: &mut RecoveryReport,
        dangling: &mut Vec<String>,
    ) {
        for (id, replies) in batch.iter().zip(values.chunks(3)) {
            let call = replies.get(1).unwrap_or(&Value::Nil);
            match parse_call(id, call, replies.get(2).unwrap_or(&Value::Nil)) {
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

    pub(crate) async fn scan_node(&self, node: &str) -> Result<Vec<String>, Error> {
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
    /// becomes this node and its epoch is bumped (and recorded in the call's fence), so
    /// the dead node's late writes are refused, its `put` included, even after the
    /// call ends or expires. Per batch of calls, one round trip: each call is added to
    /// this node's set, adopted by a script, then removed from the dead node's set.
    /// Returns the adopted calls' ids.
    ///
    /// # Errors
    ///
    /// [`Error::is_not_owner`] (with [`Error::node`] naming the node) while its lease
    /// is alive; Redis errors.
    pub async fn adopt(&self, dead_node: &str) -> Result<Vec<String>, Error> {
        check_id(dead_node)?;
        let alive: i64 = self
            .inner
            .redis
            .query(redis::cmd("EXISTS").arg(lease_key(dead_node)))
            .await?;
        if alive == 1 {
            return Err(Error::lease_alive(dead_node));
        }
        let mine = node_calls_key(&self.inner.node);
        let theirs = node_calls_key(dead_node);
        let mut adopted = Vec::new();
        let ids = self.scan_node(dead_node).await?;
        if !ids.is_empty() {
            self.load_scripts().await?;
        }
        for batch in ids.chunks(self.inner.config.recovery_batch.max(1)) {
            // One round trip: into this node's set first, then the scripts, then out
            // of the dead node's set; a crash at any point leaves each call in a set.
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            pipe.cmd("SADD").arg(&mine).arg(batch).ignore();
            for id in batch {
                let mut script = self.inner.scripts.adopt.on_call(id);
                script
                    .arg(&self.inner.node)
                    .arg(dead_node)
                    .arg(self.ttl_ms())
                    .arg(self.fence_ttl_ms());
                pipe.add_command(script);
            }
            pipe.cmd("SREM").arg(&theirs).arg(batch).ignore();
            let values = self.exec(&pipe).await?;
            let mut not_ours = Vec::new();
            for (id, value) in batch.iter().zip(values) {
                match script_reply(id, value) {
                    Ok(reply) if reply.first() == Some(&1) => {
                        self.set_epoch(id, reply.get(1).map(|e| (*e).max(0) as u64));
                        adopted.push(id.clone());
                    }
                    Ok(reply) if owned_by_this_id(&reply) => {}
                    Ok(_) => not_ours.push(id.clone()),
                    Err(e) => {
                        tracing::warn!(call = %id, error = %Chain(&e), "could not adopt a call; left for recovery to report");
                    }
                }
            }
            if !not_ours.is_empty() {
                let mut cmd = redis::cmd("SREM");
                cmd.arg(&mine).arg(&not_ours);
                self.inner.redis.query::<i64>(&cmd).await?;
            }
        }
        Ok(adopted)
    }
}

/// A call as read from its two hashes.
pub(super) enum Parsed {
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

/// Reads a call from the replies of `HGETALL` on its hash and on its participants.
pub(super) fn parse_call(id: &str, call: &Value, participants: &Value) -> Parsed {
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
