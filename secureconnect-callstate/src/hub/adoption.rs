//! Taking over the calls of a node that died: [`CallHub::adopt`] adopts them in Redis
//! (owner and epoch changed by the store's fenced script) and serves them from this
//! hub, every participant awaiting rejoin, as after a restart.

use std::time::{Duration, Instant};

use super::CallHub;
use crate::error::{Chain, Error};
use crate::model::ParticipantState;
use crate::store::CallStore;

/// Reads of an adopted call that failed are retried this many times, this far apart.
const READ_ATTEMPTS: u32 = 3;
const READ_PAUSE: Duration = Duration::from_millis(100);

impl CallHub {
    /// Adopts the calls of `dead_node`, whose lease lapsed, and serves them here: each
    /// call's owner becomes this node with a higher epoch (the dead node's late writes
    /// are refused), then the call is read back and put in memory with every
    /// participant awaiting rejoin (removed unless it rejoins within
    /// [`rejoin_grace`](Self::rejoin_grace)), so its participants rejoin here with
    /// their tokens. Returns the ids of the calls now served here; counts them in
    /// `call_adopted_calls_total`. Without Redis there is nothing to adopt.
    ///
    /// Several nodes may run this for one dead node at once: each call goes to one of
    /// them (the store's script changes its owner only if the dead node still holds
    /// it).
    ///
    /// ```no_run
    /// # async fn f(hub: secureconnect_callstate::CallHub) -> Result<(), secureconnect_callstate::Error> {
    /// match hub.adopt("video-2").await {
    ///     Ok(calls) => println!("now serving {} calls of video-2", calls.len()),
    ///     Err(e) if e.is_not_owner() => {} // video-2's lease is alive
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::is_not_owner`] (with [`Error::node`] naming it) while `dead_node`'s
    /// lease is alive, [`Error::is_superseded`] when a newer process with this node's
    /// id runs, Redis errors. A call adopted in Redis whose read fails three times is
    /// still held by this node in Redis (its heartbeat keeps it) but not served until
    /// this node reads it again (at its next recovery).
    pub async fn adopt(&self, dead_node: &str) -> Result<Vec<String>, Error> {
        let Some(redis) = &self.inner.redis else {
            return Ok(Vec::new());
        };
        // The dead node's calls count as served here from before their adoption puts
        // them in this node's set until they are in memory: a full write-back in
        // between does not end them.
        let candidates = redis.scan_node(dead_node).await?;
        self.inner.adopting().extend(candidates.iter().cloned());
        let result = self.adopt_marked(redis, dead_node).await;
        let mut adopting = self.inner.adopting();
        for call in &candidates {
            adopting.remove(call);
        }
        result
    }

    async fn adopt_marked(
        &self,
        redis: &crate::redis_store::RedisCallStore,
        dead_node: &str,
    ) -> Result<Vec<String>, Error> {
        let adopted = redis.adopt(dead_node).await?;
        let mut served = Vec::with_capacity(adopted.len());
        for id in adopted {
            let mut read = redis.get(&id).await;
            for _ in 1..READ_ATTEMPTS {
                if read.is_ok() {
                    break;
                }
                tokio::time::sleep(READ_PAUSE).await;
                read = redis.get(&id).await;
            }
            let mut call = match read {
                Ok(Some(call)) => call,
                Ok(None) => {
                    // Ended or expired since: nothing to serve, nothing to refresh.
                    redis.forget(&id);
                    continue;
                }
                Err(e) => {
                    tracing::error!(call = %id, from = dead_node, error = %Chain(&e), "adopted a call but could not read it");
                    continue;
                }
            };
            for p in call.participants.values_mut() {
                p.state = ParticipantState::AwaitingRejoin;
            }
            let keys: Vec<(String, String)> = call
                .participants
                .keys()
                .map(|p| (id.clone(), p.clone()))
                .collect();
            if self.inner.memory.insert_if_absent(call) {
                let now = Instant::now();
                let mut awaiting = self.inner.awaiting();
                for key in keys {
                    awaiting.insert(key, now);
                }
            }
            served.push(id);
        }
        self.inner.metrics.adopted.inc_by(served.len() as u64);
        self.update_gauges();
        if !served.is_empty() {
            tracing::warn!(
                from = dead_node,
                calls = served.len(),
                "adopted the calls of a node whose lease lapsed"
            );
        }
        Ok(served)
    }

    /// Drops the calls this hub serves that another node owns in Redis now (adopted
    /// while this node's lease had lapsed: the process was paused, or cut off from
    /// Redis): their sockets close, their participants rejoin through the adopter; they
    /// leave this node's set. One `HGET` per call served. The hub runs this itself after a heartbeat that
    /// follows the previous one by more than the lease. Returns the calls dropped.
    ///
    /// # Errors
    ///
    /// Redis errors; the calls checked before the error are dropped already.
    pub async fn drop_adopted(&self) -> Result<Vec<String>, Error> {
        let Some(redis) = &self.inner.redis else {
            return Ok(Vec::new());
        };
        let ids: Vec<String> = self
            .inner
            .memory
            .snapshot()
            .into_iter()
            .map(|c| c.id)
            .collect();
        let mut dropped = Vec::new();
        for id in ids {
            match crate::redis_store::call_owner(redis.redis(), &id).await? {
                Some(owner) if owner != redis.node() => {
                    super::write_behind::drop_local(&self.inner, &id);
                    redis.let_go(&id).await;
                    dropped.push(id);
                }
                _ => {}
            }
        }
        if !dropped.is_empty() {
            self.update_gauges();
        }
        Ok(dropped)
    }

    /// How many calls this hub serves and how many participants they have (what a
    /// node publishes as its load).
    pub fn counts(&self) -> (usize, usize) {
        self.inner.memory.counts()
    }
}

impl super::Inner {
    fn adopting(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.adopting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `call` is being adopted by this hub.
    pub(super) fn is_adopting(&self, call: &str) -> bool {
        self.adopting().contains(call)
    }
}
