//! Taking over the calls of a node that died: [`CallHub::adopt`] adopts them in Redis
//! (owner and epoch changed by the store's fenced script) and serves them from this
//! hub, every participant awaiting rejoin, as after a restart.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::CallHub;
use crate::error::{Chain, Error};
use crate::model::ParticipantState;

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
    /// held by this node in Redis (its heartbeat keeps it) and loaded on first use (as
    /// a recovered call not loaded yet) or by a retry in the background; meanwhile an
    /// operation on it answers [`Error::is_recovering`], and the write-back does not
    /// take it for a call that ended here. While the adoption runs, a call being
    /// adopted is waited for (up to
    /// [`recovery_wait`](crate::CallHubConfig::recovery_wait)), then answers
    /// [`Error::is_recovering`] rather than not found.
    pub async fn adopt(&self, dead_node: &str) -> Result<Vec<String>, Error> {
        let Some(redis) = &self.inner.redis else {
            return Ok(Vec::new());
        };
        // The dead node's calls count as served here from before their adoption puts
        // them in this node's set until they are in memory: a full write-back in
        // between does not end them.
        let candidates = redis.scan_node(dead_node).await?;
        self.inner.adopting().extend(candidates.iter().cloned());
        self.inner.adoptions.fetch_add(1, Ordering::AcqRel);
        let result = self.adopt_marked(redis, dead_node).await;
        {
            let mut adopting = self.inner.adopting();
            for call in &candidates {
                adopting.remove(call);
            }
        }
        self.inner.adoptions.fetch_sub(1, Ordering::AcqRel);
        self.inner.adopted.notify_waiters();
        result
    }

    async fn adopt_marked(
        &self,
        redis: &crate::redis_store::RedisCallStore,
        dead_node: &str,
    ) -> Result<Vec<String>, Error> {
        let adopted = match redis.adopt(dead_node).await {
            Ok(adopted) => adopted,
            Err(e) => {
                if e.is_superseded() {
                    self.inner.superseded.store(true, Ordering::Release);
                }
                return Err(e);
            }
        };
        let mut served = Vec::with_capacity(adopted.len());
        let mut left: Vec<String> = adopted;
        // Pipelined, batch after batch; a failed read is retried for what is left.
        for attempt in 1..=READ_ATTEMPTS {
            if left.is_empty() {
                break;
            }
            let ids = left.clone();
            let result = redis
                .read_calls_with(&ids, |batch, part| {
                    self.take_adopted(redis, batch, part, &mut served);
                    left.retain(|id| !batch.contains(id));
                    self.inner.adopted.notify_waiters();
                })
                .await;
            match result {
                Ok(()) => break,
                Err(e) if attempt < READ_ATTEMPTS => {
                    tracing::debug!(from = dead_node, error = %Chain(&e), "reading adopted calls failed; retrying");
                    tokio::time::sleep(READ_PAUSE).await;
                }
                Err(e) => {
                    tracing::error!(
                        from = dead_node,
                        calls = left.len(),
                        error = %Chain(&e),
                        "adopted calls but could not read them; they load on first use or by a retry"
                    );
                }
            }
        }
        if !left.is_empty() {
            // Held in Redis by this node: pending, like calls a recovery listed, so
            // that they load on first use and the write-back never ends them.
            self.inner.pend(left.iter().cloned());
            self.load_pending_in_background();
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

    /// Takes the adopted calls of `part` (read for `batch`) into memory, every
    /// participant awaiting rejoin; forgets those of `batch` that are gone. Pushes the
    /// ids now served to `served`.
    fn take_adopted(
        &self,
        redis: &crate::redis_store::RedisCallStore,
        batch: &[String],
        part: crate::redis_store::RecoveryReport,
        served: &mut Vec<String>,
    ) {
        let found: std::collections::HashSet<&str> =
            part.calls.iter().map(|c| c.id.as_str()).collect();
        for id in batch {
            if !found.contains(id.as_str()) {
                // Ended or expired since (or unreadable): nothing to serve here.
                redis.forget(id);
            }
        }
        for skipped in &part.skipped {
            tracing::error!(skipped = ?skipped, "adopted a call that cannot be read; not served");
        }
        for mut call in part.calls {
            for p in call.participants.values_mut() {
                p.state = ParticipantState::AwaitingRejoin;
            }
            let id = call.id.clone();
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
    }

    /// Waits (up to [`CallHubConfig::recovery_wait`](crate::CallHubConfig::recovery_wait))
    /// for an adoption under way to put `call_id` in memory. One atomic load when no
    /// adoption runs.
    ///
    /// # Errors
    ///
    /// [`Error::is_recovering`] when it is still being adopted after the wait.
    pub(super) async fn wait_for_adoption(&self, call_id: &str) -> Result<(), Error> {
        if self.inner.adoptions.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        let deadline = Instant::now() + self.inner.lifecycle.config.recovery_wait;
        loop {
            let notified = self.inner.adopted.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.inner.is_adopting(call_id)
                || self.inner.memory.with_call(call_id, |_| Ok(())).is_ok()
            {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline
                || tokio::time::timeout(deadline - now, notified)
                    .await
                    .is_err()
            {
                return Err(Error::recovering(call_id));
            }
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use prometheus_client::registry::Registry;
    use secureconnect_redis_fallback::testing::RedisServer;
    use secureconnect_redis_fallback::{RedisClient, RedisClientConfig};

    use crate::hub::replicator::{Event, Op};
    use crate::{
        CallHub, CallHubConfig, CallStore, ParticipantState, RedisCallStore, RedisCallStoreConfig,
    };

    async fn hub(url: &str, node: &str, config: CallHubConfig) -> (CallHub, RedisCallStore) {
        let mut registry = Registry::default();
        let client_config = RedisClientConfig::new(url);
        let redis = if url.ends_with(":1") {
            // Nothing listens there: no command must succeed.
            RedisClient::new(client_config, &mut registry).unwrap()
        } else {
            RedisClient::connect(client_config, &mut registry)
                .await
                .unwrap()
        };
        let store = RedisCallStore::new(
            redis,
            node,
            RedisCallStoreConfig::default().lease_ttl(Duration::from_millis(600)),
            &mut registry,
        )
        .unwrap();
        let hub = CallHub::new(node, Some(store.clone()), config, &mut registry).unwrap();
        (hub, store)
    }

    /// An adopted call whose read-back failed (pended, as `adopt` does after three
    /// failed reads) is not ended by a full write-back, and is loaded on first use
    /// with its participants awaiting rejoin.
    #[tokio::test]
    async fn an_adopted_call_not_read_back_is_kept_and_loaded_on_use() {
        let server = RedisServer::start().unwrap();
        let (a, a_store) = hub(&server.url(), "node-a", CallHubConfig::default()).await;
        let (b, b_store) = hub(&server.url(), "node-b", CallHubConfig::default()).await;
        // node-b recovered (nothing): from now on a call in its set but not served is
        // one that ended here, for the write-back.
        b.recover().await.unwrap();
        a.create("c1").await.unwrap();
        let (p1, t1) = a.join("c1", "alice").await.unwrap();
        for _ in 0..100 {
            if b_store
                .get("c1")
                .await
                .unwrap()
                .is_some_and(|c| c.participants.len() == 1)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(a);
        drop(a_store);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        // The owner moves in Redis; the read-back "fails": the call is pending.
        assert_eq!(b_store.adopt("node-a").await.unwrap(), ["c1"]);
        b.inner.pend(["c1".to_owned()]);
        // A full write-back meanwhile.
        let _ = b
            .inner
            .replicator()
            .step(Event::Dropped(Op::Create("zz".into())));
        assert!(b.needs_write_back());
        for _ in 0..100 {
            if !b.needs_write_back() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!b.needs_write_back());
        let kept = b_store.get("c1").await.unwrap();
        assert!(
            kept.is_some_and(|c| c.owner == "node-b"),
            "the write-back ended an adopted call"
        );
        // Loaded on first use.
        let call = b.find("c1").await.unwrap().unwrap();
        assert_eq!(
            call.participants[&p1].state,
            ParticipantState::AwaitingRejoin
        );
        b.rejoin("c1", &p1, "alice", &t1).await.unwrap();
        assert!(!b.inner.is_pending("c1"));
    }

    /// While an adoption runs, a call being adopted is waited for, then answers
    /// "recovering" rather than not found; once in memory it is found.
    #[tokio::test]
    async fn a_call_being_adopted_is_waited_for_then_recovering() {
        // No Redis command here must succeed.
        let wait = Duration::from_millis(200);
        let (b, _store) = hub(
            "redis://127.0.0.1:1",
            "node-b",
            CallHubConfig::default().recovery_wait(wait),
        )
        .await;
        b.inner.adopting().insert("c1".to_owned());
        b.inner
            .adoptions
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let e = b.find("c1").await.unwrap_err();
        assert!(e.is_recovering(), "{e:?}");
        let token = crate::RejoinToken::generate();
        let e = b.rejoin("c1", "p", "u", &token).await.unwrap_err();
        assert!(e.is_recovering(), "{e:?}");
        // Another call is not held up.
        assert!(b.find("c2").await.unwrap().is_none());
        // The adoption puts it in memory while a find waits.
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.find("c1").await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(b.inner.memory.insert_if_absent(crate::CallState {
            id: "c1".into(),
            owner: "node-b".into(),
            epoch: 2,
            version: 1,
            created_at_ms: 0,
            participants: Default::default(),
        }));
        b.inner.adopted.notify_waiters();
        assert_eq!(waiter.await.unwrap().unwrap().map(|c| c.epoch), Some(2));
    }
}
