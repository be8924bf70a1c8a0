//! Reading calls back from Redis: [`RedisCallStore::recover`] after a restart,
//! [`RedisCallStore::adopt`] of a dead node's calls, and the parsing of a stored call
//! that both rely on (a corrupt entry is reported, never fatal).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use secureconnect_redis_fallback::redis::{self, Value};

use super::scripts::{
    call_key, lease_key, node_calls_key, owned_by_this_id, participants_key, superseded,
};
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
    /// Reads back and takes over the calls this node owned: [`owned_calls`](Self::owned_calls)
    /// then [`load_calls`](Self::load_calls) of them all. First this process claims
    /// its incarnation of the node id (if it has none yet): from then on, a process
    /// still running with this node id (a rolling update, a paused process that
    /// resumes) is fenced out: its writes are refused ([`Error::is_not_owner`]). No
    /// call is written, so recovery costs Redis about what reading the calls costs.
    /// Corrupt entries are skipped and reported, set members whose call expired are
    /// removed, calls another node adopted are let go. `KEYS` is never used. Takes the
    /// lease; the calls' TTLs are refreshed by the next [`heartbeat`](Self::heartbeat)
    /// (run one right after).
    ///
    /// A service that must not wait for every call to be read (tens of thousands of
    /// them) runs the two steps itself, as [`CallHub`](crate::CallHub) does: it serves
    /// as soon as it knows which calls are its own and loads the rest behind.
    ///
    /// # Errors
    ///
    /// When Redis is unavailable ([`Error::is_unavailable`]) or refuses a command;
    /// nothing is held then, and a new attempt reads everything again.
    pub async fn recover(&self) -> Result<RecoveryReport, Error> {
        let started = Instant::now();
        let ids = self.owned_calls().await?;
        // Held all at once: a failed attempt leaves nothing half-held.
        let mut report = self.read_calls(&ids).await?;
        for call in &report.calls {
            self.hold(call);
        }
        report.duration = started.elapsed();
        Ok(report)
    }

    /// The first step of a recovery: claims this process's incarnation of the node id
    /// (see [`recover`](Self::recover)) and the lease, then lists (`SSCAN`) the calls
    /// of the node's set that this process does not hold yet — the calls it owned
    /// before a restart. Nothing is read of them: a few round trips however many
    /// there are. [`load_calls`](Self::load_calls) reads them.
    ///
    /// # Errors
    ///
    /// When Redis is unavailable ([`Error::is_unavailable`]) or refuses a command;
    /// [`Error::is_superseded`] when a newer process with this node id runs.
    pub async fn owned_calls(&self) -> Result<Vec<String>, Error> {
        self.incarnation().await?;
        self.refresh_lease().await?;
        let mut ids = self.scan_node(&self.inner.node).await?;
        // Calls this process holds already (created, or taken over, since it started)
        // are current here: neither taken over again nor reported.
        let held = self.held();
        ids.retain(|id| !held.live.contains_key(id));
        Ok(ids)
    }

    /// The second step of a recovery: reads the calls `ids` (per
    /// [`recovery_batch`](Self::recovery_batch) calls, one pipeline of two reads per
    /// call, `HMGET` and `HVALS`, the next batch sent while one is parsed) and holds
    /// those this node owns, every participant as stored. Corrupt entries are skipped
    /// and reported, ids whose call expired are removed from the node's set, calls
    /// another node adopted are let go.
    ///
    /// # Errors
    ///
    /// When Redis is unavailable ([`Error::is_unavailable`]) or refuses a command;
    /// nothing is held then.
    pub async fn load_calls(&self, ids: &[String]) -> Result<RecoveryReport, Error> {
        let started = Instant::now();
        let mut report = self.read_calls(ids).await?;
        for call in &report.calls {
            self.hold(call);
        }
        report.duration = started.elapsed();
        Ok(report)
    }

    /// Holds `call` (read by [`read_calls`](Self::read_calls)): its epoch is what this
    /// node's writes to it carry, and the heartbeat refreshes it.
    pub(crate) fn hold(&self, call: &CallState) {
        let mut held = self.held();
        held.ending.remove(&call.id);
        held.lost.remove(&call.id);
        held.live.insert(call.id.clone(), call.epoch);
    }

    /// Reads the calls `ids` into a report without holding any; removes from the node's
    /// set the ids whose call expired or moved to another node.
    pub(crate) async fn read_calls(&self, ids: &[String]) -> Result<RecoveryReport, Error> {
        let mut report = RecoveryReport::default();
        self.read_calls_with(ids, |_, part| {
            report.calls.extend(part.calls);
            report.skipped.extend(part.skipped);
            report.dangling_removed += part.dangling_removed;
        })
        .await?;
        Ok(report)
    }

    /// [`read_calls`](Self::read_calls), handing each pipeline's calls (the ids read,
    /// what was found) to `taken` as soon as they are parsed, so that they are served
    /// while the next ones are read, and kept if a later pipeline fails.
    pub(crate) async fn read_calls_with(
        &self,
        ids: &[String],
        mut taken: impl FnMut(&[String], RecoveryReport),
    ) -> Result<(), Error> {
        let mut dangling = Vec::new();
        let batches: Vec<&[String]> = ids
            .chunks(self.inner.config.recovery_batch.max(1))
            .collect();
        let mut values = match batches.first() {
            Some(batch) => self.exec(&recovery_pipeline(batch)).await?,
            None => Vec::new(),
        };
        for (k, batch) in batches.iter().enumerate() {
            // The next batch is sent before this one is read, so Redis runs it while
            // this one is parsed.
            let next = batches.get(k + 1).map(|b| recovery_pipeline(b));
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
                let mut part = RecoveryReport::default();
                self.take_batch(batch, &current, &mut part, &mut dangling);
                taken(batch, part);
            };
            let (fetched, ()) = tokio::join!(fetch, read);
            // Out of the node's set batch by batch, so that a recovery interrupted
            // half-way leaves no member behind that it will not read again.
            if !dangling.is_empty() {
                let mut cmd = redis::cmd("SREM");
                cmd.arg(node_calls_key(&self.inner.node)).arg(&dangling);
                self.inner.redis.query::<i64>(&cmd).await?;
                dangling.clear();
            }
            values = fetched?;
        }
        Ok(())
    }

    /// Reads a batch's replies (two per call: the call, its participants) into the
    /// report.
    fn take_batch(
        &self,
        batch: &[String],
        values: &[Value],
        report: &mut RecoveryReport,
        dangling: &mut Vec<String>,
    ) {
        for (id, replies) in batch.iter().zip(values.chunks(2)) {
            let call = replies.first().unwrap_or(&Value::Nil);
            match parse_call(id, call, replies.get(1).unwrap_or(&Value::Nil)) {
                Parsed::Call(call) if call.owner == self.inner.node => report.calls.push(call),
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
                .arg(5000);
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
        let incarnation = self.incarnation().await?;
        if !ids.is_empty() {
            self.load_scripts().await?;
        }
        for batch in ids.chunks(self.inner.config.recovery_batch.max(1)) {
            // Into this node's set first, then the scripts (in one round trip on one
            // Redis; on a Cluster, where the sets are in other slots, the set first);
            // out of the dead node's set only once the replies say which calls moved. A
            // crash at any point leaves each call in a set.
            let cluster = self.inner.redis.is_cluster();
            let mut sadd = redis::cmd("SADD");
            sadd.arg(&mine).arg(batch);
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            if cluster {
                self.inner.redis.query::<i64>(&sadd).await?;
            } else {
                pipe.add_command(sadd).ignore();
            }
            for id in batch {
                let mut script = self.inner.scripts.adopt.on_call(
                    id,
                    &self.incarnation_key_for(id),
                    incarnation,
                    self.fence_ttl_ms(),
                );
                script
                    .arg(&self.inner.node)
                    .arg(dead_node)
                    .arg(self.ttl_ms())
                    .arg(self.fence_ttl_ms());
                pipe.add_command(script);
            }
            let values = self.exec(&pipe).await?;
            // Not the dead node's any more: adopted, already this node id's, another
            // node's, or gone.
            let mut moved = Vec::new();
            // Not this node's either: another node's, or gone.
            let mut not_ours = Vec::new();
            for (id, value) in batch.iter().zip(values) {
                match script_reply(id, value) {
                    Ok(reply) if reply.first() == Some(&1) => {
                        self.set_epoch(id, reply.get(1).map(|e| (*e).max(0) as u64));
                        adopted.push(id.clone());
                        moved.push(id.clone());
                    }
                    Ok(reply) if superseded(&reply) => {
                        // A newer process with this node id runs: leave the calls to it.
                        self.srem_all(&mine, batch).await?;
                        return Err(Error::superseded(&self.inner.node));
                    }
                    Ok(reply) if owned_by_this_id(&reply) => moved.push(id.clone()),
                    Ok(_) => {
                        moved.push(id.clone());
                        not_ours.push(id.clone());
                    }
                    Err(e) => {
                        tracing::warn!(call = %id, error = %Chain(&e), "could not adopt a call; left for recovery to report");
                    }
                }
            }
            self.srem_all(&theirs, &moved).await?;
            self.srem_all(&mine, &not_ours).await?;
        }
        Ok(adopted)
    }
}

impl RedisCallStore {
    /// `SREM` of `calls` from `set` (nothing sent for none).
    async fn srem_all(&self, set: &str, calls: &[String]) -> Result<(), Error> {
        if !calls.is_empty() {
            let mut cmd = redis::cmd("SREM");
            cmd.arg(set).arg(calls);
            self.inner.redis.query::<i64>(&cmd).await?;
        }
        Ok(())
    }
}

/// The two reads of each call of `batch` ([`read_call`]).
fn recovery_pipeline(batch: &[String]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for id in batch {
        read_call(&mut pipe, id);
    }
    pipe
}

/// A call as read from its two hashes.
pub(super) enum Parsed {
    Call(CallState),
    Missing,
    Corrupt(String),
}

/// Adds to `pipe` the two reads of call `id` that [`parse_call`] takes: its fields
/// (`HMGET`, in [`CALL_FIELDS`] order) and its participants (`HVALS`: each one's JSON
/// holds its id).
pub(super) fn read_call(pipe: &mut redis::Pipeline, id: &str) {
    pipe.cmd("HMGET").arg(call_key(id)).arg(&CALL_FIELDS);
    pipe.cmd("HVALS").arg(participants_key(id));
}

/// The fields of a call's hash that [`read_call`] reads, in order.
const CALL_FIELDS: [&str; 5] = ["owner", "schema", "epoch", "version", "created"];

/// A string reply's bytes; `None` for a nil.
fn bulk(value: &Value) -> Result<Option<&[u8]>, String> {
    match value {
        Value::Nil => Ok(None),
        Value::BulkString(b) => Ok(Some(b)),
        Value::SimpleString(s) => Ok(Some(s.as_bytes())),
        Value::ServerError(e) => Err(format!("wrong key type ({})", e.code())),
        other => Err(format!("unexpected reply {other:?}")),
    }
}

/// The items of an array reply (an error for a key of the wrong type).
fn items(value: &Value) -> Result<&[Value], String> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(&[]),
        Value::ServerError(e) => Err(format!("wrong key type ({})", e.code())),
        other => Err(format!("unexpected reply {other:?}")),
    }
}

/// Reads a call from the replies of [`read_call`]'s two commands.
pub(super) fn parse_call(id: &str, call: &Value, participants: &Value) -> Parsed {
    let fields =
        match items(call).and_then(|items| items.iter().map(bulk).collect::<Result<Vec<_>, _>>()) {
            Ok(fields) if fields.len() == CALL_FIELDS.len() => fields,
            Ok(fields) => return Parsed::Corrupt(format!("{} fields read", fields.len())),
            Err(reason) => return Parsed::Corrupt(reason),
        };
    if fields.iter().all(Option::is_none) {
        return Parsed::Missing;
    }
    let number = |v: Option<&[u8]>| {
        v.and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let Some(owner) = fields[0]
        .and_then(|o| std::str::from_utf8(o).ok())
        .filter(|o| !o.is_empty())
    else {
        return Parsed::Corrupt("missing owner".into());
    };
    match (fields[1], number(fields[1])) {
        (_, Some(v)) if v == u64::from(SCHEMA_VERSION) => {}
        (_, Some(other)) => return Parsed::Corrupt(format!("unknown schema version {other}")),
        _ => return Parsed::Corrupt("missing schema version".into()),
    }
    let (Some(epoch), Some(version)) = (number(fields[2]), number(fields[3])) else {
        return Parsed::Corrupt("missing epoch or version".into());
    };
    let values = match items(participants) {
        Ok(values) => values,
        Err(reason) => return Parsed::Corrupt(format!("participants: {reason}")),
    };
    let mut members = BTreeMap::new();
    for value in values {
        let json = match bulk(value) {
            Ok(Some(json)) => json,
            Ok(None) => return Parsed::Corrupt("participants: a nil value".into()),
            Err(reason) => return Parsed::Corrupt(format!("participants: {reason}")),
        };
        match serde_json::from_slice::<Participant>(json) {
            Ok(p) => {
                if let Some(twice) = members.insert(p.id.clone(), p) {
                    return Parsed::Corrupt(format!("participant {}: stored twice", twice.id));
                }
            }
            Err(e) => return Parsed::Corrupt(format!("participant: bad JSON ({e})")),
        }
    }
    Parsed::Call(CallState {
        id: id.to_owned(),
        owner: owner.to_owned(),
        epoch,
        version,
        created_at_ms: number(fields[4]).unwrap_or(0),
        participants: members,
    })
}
