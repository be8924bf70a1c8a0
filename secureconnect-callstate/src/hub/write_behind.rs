//! The write-behind task: feeds the [`Replicator`] the queued changes, the outcomes of
//! writes and the client's health, and performs what it answers (write a change, drop
//! a call adopted elsewhere, heartbeat, full write-back).

use std::sync::{PoisonError, Weak};
use std::time::Duration;

use secureconnect_redis_fallback::Health;
use tokio::sync::mpsc;

use super::replicator::{AfterPut, AfterWrite, Op, Replicator, Written};
use super::Inner;
use crate::error::Chain;
use crate::redis_store::RedisCallStore;
use crate::store::CallStore;

/// Applies queued changes to Redis; on failure the hub is marked dirty and, once Redis
/// is healthy again, every call is written back.
pub(super) async fn run(weak: Weak<Inner>, mut rx: mpsc::Receiver<Op>) {
    let Some(mut health) = weak
        .upgrade()
        .and_then(|i| i.redis.as_ref().map(|r| r.redis().subscribe()))
    else {
        return;
    };
    let lease = weak
        .upgrade()
        .and_then(|i| i.redis.as_ref().map(RedisCallStore::lease_ttl))
        .unwrap_or(Duration::from_secs(15));
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    // The lease and call TTLs are refreshed three times per lease period.
    let mut heartbeat = tokio::time::interval((lease / 3).max(Duration::from_millis(50)));
    loop {
        tokio::select! {
            op = rx.recv() => {
                let Some(op) = op else { return };
                let Some(inner) = weak.upgrade() else { return };
                apply(&inner, op).await;
                inner.metrics.write_behind_depth.set(rx.len() as i64);
            }
            changed = health.changed() => {
                if changed.is_err() { return; }
                let now = *health.borrow();
                if let Some(inner) = weak.upgrade() {
                    inner.replicator().health_changed(now);
                }
            }
            _ = tick.tick() => {}
            _ = heartbeat.tick() => {
                let Some(inner) = weak.upgrade() else { return };
                if let Some(redis) = &inner.redis {
                    if Replicator::heartbeat_due(*health.borrow()) {
                        if let Err(e) = redis.heartbeat().await {
                            tracing::debug!(error = %Chain(&e), "call-state heartbeat failed");
                        }
                    }
                }
            }
        }
        let Some(inner) = weak.upgrade() else { return };
        let now = *health.borrow();
        if inner.replicator().needs_write_back() && now == Health::Healthy {
            // Everything queued so far is covered by the full write-back. Drain first,
            // then take the calls that ended: a call ending in between is then either
            // in this write-back's list or still queued, never dropped from both.
            while rx.try_recv().is_ok() {}
            let due = inner.replicator().write_back_due(now);
            if let Some(ended) = due {
                write_back(&inner, ended).await;
            }
        }
    }
}

fn in_memory(inner: &Inner, call: &str) -> bool {
    inner.memory.with_call(call, |_| Ok(())).is_ok()
}

async fn apply(inner: &Inner, op: Op) {
    let Some(redis) = &inner.redis else { return };
    let Some(op) = inner.replicator().queued(op, |call| in_memory(inner, call)) else {
        return;
    };
    let call = op.call().to_owned();
    let result = match op {
        Op::Create(call) => redis.create(&call).await.map(drop),
        Op::Join(call, participant) => redis.join(&call, participant).await.map(drop),
        Op::Leave(call, participant) => redis.leave(&call, &participant).await.map(drop),
        Op::End(call) => redis.end(&call).await,
    };
    let after = inner.replicator().written(Written::of(&result));
    match (after, result) {
        (AfterWrite::DropLocal, _) => {
            tracing::warn!(call = %call, "another node owns this call now: dropping it here");
            inner.memory.remove(&call);
        }
        (AfterWrite::Failed { report: true }, Err(e)) => {
            tracing::error!(call = %call, error = %Chain(&e), "writing call state to redis failed");
        }
        _ => {}
    }
}

/// Ends in Redis the calls that ended meanwhile, then puts every call.
async fn write_back(inner: &Inner, ended: Vec<String>) {
    let Some(redis) = &inner.redis else { return };
    for call in ended {
        if !in_memory(inner, &call) && !Replicator::ended(Written::of(&redis.end(&call).await)) {
            return;
        }
    }
    for call in inner.memory.snapshot() {
        let result = redis.put(&call).await;
        match (Replicator::put(Written::of(&result)), result) {
            (AfterPut::Next, _) => {}
            (AfterPut::DropLocal, _) => {
                tracing::warn!(call = %call.id, "another node owns this call now: dropping it here");
                inner.memory.remove(&call.id);
            }
            (AfterPut::Abort, result) => {
                if let Err(e) = result {
                    tracing::warn!(error = %Chain(&e), "full write-back interrupted; will retry");
                }
                return;
            }
        }
    }
    inner.replicator().written_back();
    inner.metrics.write_backs.inc();
    tracing::info!("call state written back to redis in full");
}

impl Inner {
    pub(super) fn replicator(&self) -> std::sync::MutexGuard<'_, Replicator> {
        self.replicator
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
