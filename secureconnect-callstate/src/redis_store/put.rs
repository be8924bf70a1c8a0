//! [`RedisCallStore::put`] and [`RedisCallStore::put_all`]: a whole call written back
//! (after Redis was away), fenced so that it never recreates a call that ended or was
//! taken over, and never lowers its epoch or version.

use secureconnect_redis_fallback::redis::{self, Value};

use super::scripts::{node_calls_key, status};
use super::{participant_json, script_reply, RedisCallStore};
use crate::error::Error;
use crate::model::{CallState, SCHEMA_VERSION};

/// At most this many calls are put per round trip by [`RedisCallStore::put_all`].
const PUT_BATCH: usize = 100;

impl RedisCallStore {
    /// Writes a whole call as this node knows it (after Redis was away). Refused
    /// ([`Error::is_not_owner`]) when another node owns it now, when its epoch in Redis
    /// is above `call.epoch` (another process with this node id recovered it), or when
    /// it ended (its fence says so, even after its keys are gone): a call is never
    /// recreated by a process that missed its end or its take-over. The epoch and the
    /// version in Redis never go down. The call is added to this node's set in the same
    /// round trip, before the script.
    ///
    /// The epoch written is the one this store holds for the call (from `create`,
    /// `recover`, `adopt` or an earlier `put`; or the one a refused write carried),
    /// and `call.epoch` only for a call it never held (created while Redis was away): a
    /// process cannot pass the fence by reading the call's current epoch and writing
    /// it back.
    ///
    /// # Errors
    ///
    /// [`Error::is_not_owner`] as above (drop the call locally); Redis errors.
    pub async fn put(&self, call: &CallState) -> Result<u64, Error> {
        let (epoch, script) = self.put_script(call).await?;
        let reply = self
            .run(&call.id, Some(self.sadd(&call.id)), script)
            .await?;
        self.put_done(call, epoch, &reply).await
    }

    /// [`put`](Self::put) of each call of `calls`, pipelined: one round trip per
    /// 100 calls at most (each call's set update sent before its script, as `put`
    /// does; on a Cluster, the batch's set update first, then its scripts; a round trip
    /// of whole calls stays well within the call deadline). Answers each call's
    /// outcome, in order. When a
    /// round trip fails (Redis unavailable), no later one is sent: the first call not
    /// written gets that error, every other one an error of the same kind.
    pub async fn put_all(&self, calls: &[CallState]) -> Vec<Result<u64, Error>> {
        let mut outcomes = Vec::with_capacity(calls.len());
        for chunk in calls.chunks(PUT_BATCH.min(self.inner.config.heartbeat_batch).max(1)) {
            if let Err(e) = self.put_chunk(chunk, &mut outcomes).await {
                let rest = &calls[outcomes.len()..];
                let others: Vec<_> = rest
                    .iter()
                    .skip(1)
                    .map(|c| Err(e.same_for(&c.id)))
                    .collect();
                outcomes.push(Err(e));
                outcomes.extend(others);
                break;
            }
        }
        outcomes
    }

    async fn put_chunk(
        &self,
        chunk: &[CallState],
        outcomes: &mut Vec<Result<u64, Error>>,
    ) -> Result<(), Error> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut epochs = Vec::with_capacity(chunk.len());
        let cluster = self.inner.redis.is_cluster();
        if cluster {
            // The node's set is in another slot than the calls: filled first, so a
            // crash in between leaves no call in no set.
            let ids: Vec<&str> = chunk.iter().map(|c| c.id.as_str()).collect();
            let mut sadd = redis::cmd("SADD");
            sadd.arg(node_calls_key(&self.inner.node)).arg(&ids);
            self.inner.redis.query::<Value>(&sadd).await?;
        }
        for call in chunk {
            let (epoch, script) = self.put_script(call).await?;
            epochs.push(epoch);
            if !cluster {
                pipe.add_command(self.sadd(&call.id)).ignore();
            }
            pipe.add_command(script);
        }
        let values = self.exec(&pipe).await?;
        let mut values = values.into_iter();
        for (call, epoch) in chunk.iter().zip(epochs) {
            let reply = script_reply(&call.id, values.next().unwrap_or(Value::Nil));
            outcomes.push(match reply {
                Ok(reply) => self.put_done(call, epoch, &reply).await,
                Err(e) => Err(e),
            });
        }
        Ok(())
    }

    /// The epoch a `put` of `call` carries, and its script.
    async fn put_script(&self, call: &CallState) -> Result<(u64, redis::Cmd), Error> {
        let epoch = {
            let held = self.held();
            held.live
                .get(&call.id)
                .or_else(|| held.lost.get(&call.id))
                .copied()
                .unwrap_or(call.epoch)
        };
        let mut script = self.script(&self.inner.scripts.put, &call.id).await?;
        script
            .arg(&self.inner.node)
            .arg(epoch)
            .arg(call.version)
            .arg(call.created_at_ms)
            .arg(SCHEMA_VERSION)
            .arg(self.ttl_ms());
        for p in call.participants.values() {
            script.arg(&p.id).arg(participant_json(p));
        }
        Ok((epoch, script))
    }

    /// A `put`'s reply: the version written, or the refusal (the call is lost then).
    async fn put_done(&self, call: &CallState, epoch: u64, reply: &[i64]) -> Result<u64, Error> {
        if let Err(e) = status(reply, &call.id) {
            if e.is_not_owner() {
                self.refused(&call.id, epoch, reply).await;
            }
            return Err(e);
        }
        self.set_epoch(&call.id, Some(epoch));
        Ok(reply.get(1).map_or(call.version, |v| (*v).max(0) as u64))
    }
}
