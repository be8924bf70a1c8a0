//! The write-behind task: feeds the [`Replicator`] the queued changes, the outcomes of
//! writes, the client's health (its `watch` channel; writes accepted again count as a
//! heartbeat) and the heartbeat period, and
//! performs what it answers (write a change, drop a call adopted elsewhere, full
//! write-back). It decides nothing itself. The heartbeat (lease and TTLs) runs on a
//! task of its own, so that a long write-back never lets the lease lapse.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use secureconnect_redis_fallback::Health;
use tokio::sync::{mpsc, watch};

use super::replicator::{Action, Event, Op, Replicator, Written};
use super::Inner;
use crate::error::{Chain, Error};
use crate::redis_store::RedisCallStore;
use crate::store::CallStore;

/// Applies queued changes to Redis, as the [`Replicator`] decides: one by one while
/// streaming, in one full write-back once Redis is healthy after a failure.
pub(super) async fn run(weak: Weak<Inner>, mut rx: mpsc::Receiver<Op>) {
    let Some((mut health, mut writes)) = weak.upgrade().and_then(|i| {
        i.redis
            .as_ref()
            .map(|r| (r.redis().subscribe(), r.redis().subscribe_writes()))
    }) else {
        return;
    };
    let lease = weak
        .upgrade()
        .and_then(|i| i.redis.as_ref().map(RedisCallStore::lease_ttl))
        .unwrap_or(Duration::from_secs(15));
    // The lease and call TTLs are refreshed three times per lease period.
    let period = (lease / 3).max(Duration::from_millis(50));
    tokio::spawn(heartbeat(weak.clone(), health.clone(), period, lease));
    let mut heartbeat = tokio::time::interval(period);
    let start = *health.borrow_and_update();
    let mut pending = Event::Health(start);
    loop {
        {
            let Some(inner) = weak.upgrade() else { return };
            let actions = inner.replicator().step(pending);
            perform(&inner, actions, &mut rx, &mut health).await;
            inner.metrics.write_behind_depth.set(rx.len() as i64);
        }
        pending = loop {
            let next = tokio::select! {
                op = rx.recv() => match op {
                    Some(op) => Some(Event::Queued(op)),
                    None => return,
                },
                changed = health.changed() => {
                    if changed.is_err() { return; }
                    Some(Event::Health(*health.borrow_and_update()))
                }
                changed = writes.changed() => {
                    if changed.is_err() { return; }
                    // Writes accepted again (after OOM, READONLY, or a Sentinel
                    // failover that held them) while the client stayed healthy: a
                    // write-back that failed is retried now, as at a heartbeat.
                    (!*writes.borrow_and_update()).then_some(Event::Heartbeat)
                }
                _ = heartbeat.tick() => Some(Event::Heartbeat),
            };
            if let Some(event) = next {
                break event;
            }
        };
    }
}

/// Refreshes the lease and the calls' TTLs every `period` while the client is healthy
/// (the store counts and reports failures), until the hub is dropped. A heartbeat that
/// succeeds more than `lease` after the previous one (the process was paused, or cut
/// off from Redis) finds out which calls another node adopted meanwhile and drops them
/// ([`CallHub::drop_adopted`](super::CallHub::drop_adopted)); a check that fails is
/// retried after each later heartbeat until one succeeds. The gap is measured from the
/// previous heartbeat's start (the lease was refreshed no earlier).
async fn heartbeat(
    weak: Weak<Inner>,
    health: watch::Receiver<Health>,
    period: Duration,
    lease: Duration,
) {
    let mut tick = tokio::time::interval(period);
    // When the last successful heartbeat started: the lease was refreshed no earlier.
    let mut last_ok: Option<std::time::Instant> = None;
    // Whether a check for adopted calls is due (kept until one succeeds), and whether
    // one runs now.
    let due = Arc::new(AtomicBool::new(false));
    let running = Arc::new(AtomicBool::new(false));
    loop {
        tick.tick().await;
        let Some(redis) = weak.upgrade().and_then(|inner| inner.redis.clone()) else {
            return;
        };
        if *health.borrow() == Health::Healthy {
            let started = std::time::Instant::now();
            match redis.heartbeat().await {
                Ok(()) => {
                    // From the previous refresh (its start, at the earliest) to this one
                    // (its end, at the latest): the lease may have lapsed in between.
                    if last_ok.is_some_and(|t| t.elapsed() > lease) {
                        due.store(true, Ordering::Release);
                    }
                    last_ok = Some(started);
                    if due.load(Ordering::Acquire) && !running.swap(true, Ordering::AcqRel) {
                        let Some(inner) = weak.upgrade() else { return };
                        let hub = super::CallHub { inner };
                        let (due, running) = (due.clone(), running.clone());
                        tokio::spawn(async move {
                            match hub.drop_adopted().await {
                                Ok(_) => due.store(false, Ordering::Release),
                                // Still due: retried after the next heartbeat.
                                Err(e) => {
                                    tracing::warn!(error = %Chain(&e), "checking which calls were adopted failed; will retry")
                                }
                            }
                            running.store(false, Ordering::Release);
                        });
                    }
                }
                Err(e) if e.is_superseded() => {
                    let Some(inner) = weak.upgrade() else { return };
                    superseded(&inner, &e);
                }
                Err(e) => tracing::debug!(error = %Chain(&e), "call-state heartbeat failed"),
            }
        }
    }
}

/// Whether `call` is served here: in memory, being adopted (in this node's set
/// already, in memory shortly), or pending (adopted or recovered, loaded on use).
fn in_memory(inner: &Inner, call: &str) -> bool {
    inner.memory.with_call(call, |_| Ok(())).is_ok()
        || inner.is_adopting(call)
        || inner.is_pending(call)
}

/// Performs `actions` and whatever the replicator answers to their outcomes.
async fn perform(
    inner: &Inner,
    actions: Vec<Action>,
    rx: &mut mpsc::Receiver<Op>,
    health: &mut watch::Receiver<Health>,
) {
    let Some(redis) = &inner.redis else { return };
    let mut todo = std::collections::VecDeque::from(actions);
    while let Some(action) = todo.pop_front() {
        match action {
            Action::Write(op) => {
                let written = write(redis, op).await;
                todo.extend(inner.replicator().step(Event::Written(written)));
            }
            Action::DropLocal(call) => drop_local(inner, &call),
            Action::WriteBack => {
                todo.extend(write_back(inner, redis, rx, health).await);
            }
            // Only answered within a write-back.
            Action::End(_) | Action::Stop => {}
        }
    }
}

/// Writes one change; logs a refusal (an outage is the client's to report).
async fn write(redis: &RedisCallStore, op: Op) -> Written {
    let call = op.call().to_owned();
    let result = match op {
        Op::Create(call) => redis.create(&call).await.map(drop),
        Op::Join(call, participant) => redis.join(&call, participant).await.map(drop),
        Op::Leave(call, participant) => redis.leave(&call, &participant).await.map(drop),
        Op::Ended(call) => redis.end(&call).await,
    };
    report(&call, &result, "writing call state to redis failed");
    Written::of(&result)
}

fn report<T>(call: &str, result: &Result<T, Error>, what: &'static str) {
    if let Err(e) = result {
        if !(e.is_unavailable() || e.is_not_found() || e.is_not_owner()) {
            tracing::error!(call = %call, error = %Chain(e), "{what}");
        }
    }
}

/// A newer process with this node's id took over: none of the calls here may be
/// written any more. They are dropped, so their sockets close and their participants
/// rejoin through the newer process.
fn superseded(inner: &Inner, e: &Error) {
    inner
        .superseded
        .store(true, std::sync::atomic::Ordering::Release);
    inner.drop_pending();
    let calls = inner.memory.snapshot();
    if !calls.is_empty() {
        tracing::error!(error = %Chain(e), calls = calls.len(), "dropping every call here");
    }
    for call in calls {
        inner.memory.remove(&call.id);
        inner.channels.close(&call.id);
    }
}

pub(super) fn drop_local(inner: &Inner, call: &str) {
    tracing::warn!(call = %call, "another node owns this call now: dropping it here");
    inner.memory.remove(call);
    // Its subscribers' receivers end: the sockets close rather than hang.
    inner.channels.close(call);
}

/// One full write-back: drains the queue into the replicator, ends in Redis the calls
/// that ended (remembered, or in this node's set but not in memory), then puts every
/// call in memory. Answers the replicator's last actions.
async fn write_back(
    inner: &Inner,
    redis: &RedisCallStore,
    rx: &mut mpsc::Receiver<Op>,
    health: &mut watch::Receiver<Health>,
) -> Vec<Action> {
    // Everything queued so far is covered; the replicator keeps the ends.
    while let Ok(op) = rx.try_recv() {
        let _covered = inner.replicator().step(Event::Queued(op));
    }
    let scanned = match redis.scan_node(redis.node()).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %Chain(&e), "full write-back interrupted; will retry");
            return inner.replicator().step(Event::ReadFailed);
        }
    };
    // A call in the set but not in memory ended here, once a recovery has loaded every
    // call of this node; before that it may be one still to recover, never to end.
    let orphans = if inner.recovered() {
        scanned
            .into_iter()
            .filter(|call| !in_memory(inner, call))
            .collect()
    } else {
        Vec::new()
    };
    let to_end = inner.replicator().step(Event::Scanned(orphans));
    for action in to_end {
        let Action::End(calls) = action else { continue };
        for call in calls {
            let event = if in_memory(inner, &call) {
                Event::Superseded(call)
            } else {
                let result = redis.end(&call).await;
                report(&call, &result, "ending a call in redis failed");
                Event::EndWritten(call, Written::of(&result))
            };
            if stopped(inner, event) {
                return Vec::new();
            }
        }
    }
    // Pipelined: one round trip per batch of calls.
    let calls = inner.memory.snapshot();
    let outcomes = redis.put_all(&calls).await;
    for (call, result) in calls.iter().zip(outcomes) {
        report(&call.id, &result, "writing a call back to redis failed");
        let answer = inner
            .replicator()
            .step(Event::PutWritten(call.id.clone(), Written::of(&result)));
        for action in answer {
            match action {
                Action::DropLocal(id) => drop_local(inner, &id),
                Action::Stop => {
                    if let Err(e) = &result {
                        tracing::warn!(error = %Chain(e), "full write-back interrupted; will retry");
                    }
                    return Vec::new();
                }
                _ => {}
            }
        }
    }
    let health_moved = health.has_changed().unwrap_or(false);
    let next = inner.replicator().step(Event::PutsDone { health_moved });
    if !inner.replicator().needs_write_back() {
        inner.metrics.write_backs.inc();
        tracing::info!("call state written back to redis in full");
    }
    next
}

/// Feeds a write-back step; whether the replicator stopped the write-back.
fn stopped(inner: &Inner, event: Event) -> bool {
    let stop = inner.replicator().step(event).contains(&Action::Stop);
    if stop {
        tracing::warn!("full write-back interrupted; will retry");
    }
    stop
}

impl Inner {
    pub(super) fn replicator(&self) -> std::sync::MutexGuard<'_, Replicator> {
        self.replicator
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
