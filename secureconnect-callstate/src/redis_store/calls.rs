//! The [`CallStore`] operations of [`RedisCallStore`]: each one Lua script on the
//! call's keys; `create` adds the call to this node's set in the same round trip,
//! before the script.

use std::collections::BTreeMap;

use secureconnect_redis_fallback::redis::{self, Value};

use super::recovery::{parse_call, read_call, Parsed};
use super::scripts::{owned_by_this_id, status};
use super::{participant_json, Held, RedisCallStore};
use crate::error::{check_id, Error};
use crate::model::{now_ms, CallState, Participant, SCHEMA_VERSION};
use crate::store::{CallStore, LeaveOutcome};

impl CallStore for RedisCallStore {
    async fn create(&self, call_id: &str) -> Result<CallState, Error> {
        check_id(call_id)?;
        let created = now_ms();
        let mut script = self.script(&self.inner.scripts.create, call_id).await?;
        script
            .arg(&self.inner.node)
            .arg(self.ttl_ms())
            .arg(created)
            .arg(SCHEMA_VERSION);
        let reply = match self.run(call_id, Some(self.sadd(call_id)), script).await {
            Ok(reply) => reply,
            Err(e) => {
                // The script may have run with its reply lost: an `end` may end it.
                if e.is_unavailable() {
                    let mut held = self.held();
                    if held.unsure.len() < super::REMEMBERED_MAX {
                        held.unsure.insert(call_id.to_owned());
                    }
                }
                return Err(e);
            }
        };
        if let Err(e) = status(&reply, call_id) {
            if !owned_by_this_id(&reply) {
                self.srem(call_id).await;
            }
            return Err(e);
        }
        self.set_epoch(call_id, Some(1));
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
        let mut script = self.script(&self.inner.scripts.join, call_id).await?;
        script
            .arg(&self.inner.node)
            .arg(epoch)
            .arg(&participant.id)
            .arg(participant_json(&participant))
            .arg(self.ttl_ms());
        let reply = self.run(call_id, None, script).await?;
        if reply.first() == Some(&-1) {
            self.lose(call_id, epoch);
        }
        status(&reply, call_id)?;
        Ok(reply.get(1).copied().unwrap_or(0).max(0) as u64)
    }

    async fn leave(&self, call_id: &str, participant_id: &str) -> Result<LeaveOutcome, Error> {
        check_id(call_id)?;
        let epoch = self.epoch(call_id)?;
        let mut script = self.script(&self.inner.scripts.leave, call_id).await?;
        script
            .arg(&self.inner.node)
            .arg(epoch)
            .arg(participant_id)
            .arg(self.fence_ttl_ms());
        let reply = self.run(call_id, None, script).await?;
        if reply.first() == Some(&-1) {
            self.lose(call_id, epoch);
        }
        status(&reply, call_id)?;
        let outcome = LeaveOutcome {
            version: reply.get(1).copied().unwrap_or(0).max(0) as u64,
            removed: reply.get(2) == Some(&1),
            call_ended: reply.get(3) == Some(&1),
        };
        if outcome.call_ended {
            self.set_epoch(call_id, None);
            self.srem(call_id).await;
        }
        Ok(outcome)
    }

    async fn get(&self, call_id: &str) -> Result<Option<CallState>, Error> {
        check_id(call_id)?;
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        read_call(&mut pipe, call_id);
        let values: Vec<Value> = self.inner.redis.query_pipeline(&pipe).await?;
        match parse_call(
            call_id,
            values.first().unwrap_or(&Value::Nil),
            values.get(1).unwrap_or(&Value::Nil),
        ) {
            Parsed::Call(call) => Ok(Some(call)),
            Parsed::Missing => Ok(None),
            Parsed::Corrupt(reason) => Err(Error::corrupt(call_id, reason)),
        }
    }

    async fn list_node_calls(&self) -> Result<Vec<String>, Error> {
        self.scan_node(&self.inner.node).await
    }

    /// Ends the call and leaves its tombstone (see
    /// [`fence_ttl`](crate::RedisCallStoreConfig::fence_ttl)). The call stops being
    /// refreshed by the heartbeat at once, even when the write fails; its epoch is
    /// kept for a retry of `end`. A call whose `create` reply was lost (it may be in
    /// Redis, at an epoch this store never heard) is ended if this node owns it: only
    /// the newest process of a node id writes. Any other call this store holds no
    /// epoch for is refused ([`Error::is_not_owner`]) without a write.
    async fn end(&self, call_id: &str) -> Result<(), Error> {
        check_id(call_id)?;
        let epoch = {
            let mut held = self.held();
            let epoch = match held
                .live
                .remove(call_id)
                .or_else(|| held.ending.get(call_id).copied())
            {
                Some(epoch) => epoch,
                None if held.unsure.contains(call_id) => 0,
                None => return Err(Error::not_owner(call_id)),
            };
            Held::remember(&mut held.ending, call_id, epoch);
            epoch
        };
        let mut script = self.script(&self.inner.scripts.end, call_id).await?;
        script
            .arg(&self.inner.node)
            .arg(epoch)
            .arg(self.fence_ttl_ms());
        let reply = self.run(call_id, None, script).await?;
        if reply.first() == Some(&-1) {
            self.lose(call_id, epoch);
        } else {
            self.held().ending.remove(call_id);
        }
        if reply.first() != Some(&-1) || !owned_by_this_id(&reply) {
            self.srem(call_id).await;
        }
        status(&reply, call_id)
    }
}
