//! [`RedisCallStore::heartbeat`]: this node's lease, its calls' TTLs and its set,
//! refreshed in bounded pipelines; a failure is counted and logged.

use std::sync::atomic::Ordering;

use secureconnect_redis_fallback::cluster::key_slot;
use secureconnect_redis_fallback::redis::{self, Value};

use super::scripts::{
    call_key, fence_key, incarnation_key, lease_key, node_calls_key, participants_key,
};
use super::RedisCallStore;
use crate::error::{Chain, Error};
use crate::model::now_ms;

impl RedisCallStore {
    /// Refreshes this node's lease, then the TTL of every call it owns and its
    /// membership in the node's set (re-added, so a call whose `SADD` was lost is found
    /// again by recovery and adoption), in pipelines of
    /// [`heartbeat_batch`](Self::heartbeat_batch) calls, each within the client's call
    /// deadline. Stops at the first failing pipeline. On a Cluster it also holds this
    /// process's incarnation in the slots of its calls, and in every slot once a
    /// quarter of the fence TTL.
    ///
    /// A failure counts in `call_heartbeat_failures_total` and logs a warning when
    /// heartbeats start failing (not at each one); success after failures is logged too.
    ///
    /// # Errors
    ///
    /// When Redis is unavailable ([`Error::is_unavailable`]) or refuses a command.
    pub async fn heartbeat(&self) -> Result<(), Error> {
        let result = self.refresh().await;
        match &result {
            Ok(()) => {
                if self.inner.heartbeat_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(node = %self.inner.node, "call-state heartbeat succeeds again");
                }
            }
            Err(e) => {
                self.inner.heartbeat_failures.inc();
                if !self.inner.heartbeat_failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        node = %self.inner.node,
                        error = %Chain(e),
                        "call-state heartbeat failed: the lease and call TTLs are not refreshed"
                    );
                }
            }
        }
        result
    }

    async fn refresh(&self) -> Result<(), Error> {
        let calls: Vec<String> = self.held().live.keys().cloned().collect();
        let ttl = self.ttl_ms();
        let fence_ttl = self.fence_ttl_ms();
        let set = node_calls_key(&self.inner.node);
        self.refresh_lease().await?;
        let cluster = self.inner.redis.is_cluster();
        let incarnation = self.inner.incarnation.get().copied();
        if let (true, Some(incarnation)) = (cluster, incarnation) {
            self.reclaim_all_if_due(incarnation).await?;
        }
        for chunk in calls.chunks(self.inner.config.heartbeat_batch.max(1)) {
            if let (true, Some(incarnation)) = (cluster, incarnation) {
                // The incarnation keys of the slots these calls live in, held as the
                // node's one key is on one Redis.
                let mut slots: Vec<u16> = chunk
                    .iter()
                    .map(|c| key_slot(call_key(c).as_bytes()))
                    .collect();
                slots.sort_unstable();
                slots.dedup();
                self.claim_slots(incarnation, slots).await?;
            }
            let mut pipe = redis::pipe();
            pipe.cmd("SADD").arg(&set).arg(chunk).ignore();
            pipe.cmd("PEXPIRE").arg(&set).arg(ttl * 2).ignore();
            for call in chunk {
                pipe.cmd("PEXPIRE").arg(call_key(call)).arg(ttl).ignore();
                pipe.cmd("PEXPIRE")
                    .arg(participants_key(call))
                    .arg(ttl)
                    .ignore();
                pipe.cmd("PEXPIRE")
                    .arg(fence_key(call))
                    .arg(fence_ttl)
                    .ignore();
            }
            self.inner.redis.query_pipeline::<()>(&pipe).await?;
        }
        // A call let go of while this heartbeat ran (ended, or found adopted by another
        // node) may have been added back to the set above, after its own `SREM`: drop
        // it again. One whose end is still to confirm stays, for the write-back.
        let gone: Vec<String> = {
            let held = self.held();
            calls
                .into_iter()
                .filter(|c| !held.live.contains_key(c) && !held.ending.contains_key(c))
                .collect()
        };
        if !gone.is_empty() {
            let mut cmd = redis::cmd("SREM");
            cmd.arg(&set).arg(&gone);
            self.inner.redis.query::<i64>(&cmd).await?;
        }
        Ok(())
    }

    /// Refreshes this node's lease and its set's TTL, and its incarnation key's, in one
    /// round trip. Fails ([`Error::is_not_owner`], naming the node) when a newer process
    /// with this node id has claimed it: this process's writes are refused from then
    /// on, and its calls are not refreshed any more.
    pub(super) async fn refresh_lease(&self) -> Result<(), Error> {
        let node = &self.inner.node;
        let lease_ttl = self.inner.config.lease_ttl.as_millis() as u64;
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mine = self.inner.incarnation.get().copied();
        match mine {
            // The lease only if no newer process claimed the node id.
            Some(mine) => {
                let mut hold = self
                    .inner
                    .scripts
                    .reassert
                    .on_keys(&[incarnation_key(node), lease_key(node)]);
                hold.arg(mine)
                    .arg(self.fence_ttl_ms())
                    .arg(now_ms())
                    .arg(lease_ttl);
                pipe.add_command(hold);
            }
            // Nothing written yet: nothing to hold but the lease.
            None => {
                pipe.cmd("SET")
                    .arg(lease_key(node))
                    .arg(now_ms())
                    .arg("PX")
                    .arg(lease_ttl);
            }
        }
        pipe.cmd("PEXPIRE")
            .arg(node_calls_key(node))
            .arg(self.ttl_ms() * 2);
        let values = self.exec(&pipe).await?;
        if let Some(Value::ServerError(e)) =
            values.iter().find(|v| matches!(v, Value::ServerError(_)))
        {
            return Err(Error::refused(node, e.clone()));
        }
        match (mine, values.first()) {
            (Some(mine), Some(Value::Int(newest)))
                if u64::try_from(*newest).is_ok_and(|n| n > mine) =>
            {
                Err(Error::superseded(node))
            }
            _ => Ok(()),
        }
    }
}
