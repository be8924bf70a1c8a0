//! [`RedisCallStore::heartbeat`]: this node's lease, its calls' TTLs and its set,
//! refreshed in bounded pipelines; a failure is counted and logged.

use std::sync::atomic::Ordering;

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
    /// deadline. Stops at the first failing pipeline.
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
        for chunk in calls.chunks(self.inner.config.heartbeat_batch.max(1)) {
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
        Ok(())
    }

    /// Refreshes this node's lease and its set's TTL, and its incarnation key's, in one
    /// round trip. Fails ([`Error::is_not_owner`], naming the node) when a newer process
    /// with this node id has claimed it: this process's writes are refused from then
    /// on, and its calls are not refreshed any more.
    pub(super) async fn refresh_lease(&self) -> Result<(), Error> {
        let node = &self.inner.node;
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        pipe.cmd("SET")
            .arg(lease_key(node))
            .arg(now_ms())
            .arg("PX")
            .arg(self.inner.config.lease_ttl.as_millis() as u64);
        pipe.cmd("PEXPIRE")
            .arg(node_calls_key(node))
            .arg(self.ttl_ms() * 2);
        let mine = self.inner.incarnation.get().copied();
        if let Some(mine) = mine {
            let mut hold = self
                .inner
                .scripts
                .reassert
                .on_keys(&[incarnation_key(node)]);
            hold.arg(mine).arg(self.fence_ttl_ms());
            pipe.add_command(hold);
        }
        let values = self.exec(&pipe).await?;
        if let Some(Value::ServerError(e)) =
            values.iter().find(|v| matches!(v, Value::ServerError(_)))
        {
            return Err(Error::refused(node, e.clone()));
        }
        match (mine, values.get(2)) {
            (Some(mine), Some(Value::Int(newest)))
                if u64::try_from(*newest).is_ok_and(|n| n > mine) =>
            {
                Err(Error::superseded(node))
            }
            _ => Ok(()),
        }
    }
}
