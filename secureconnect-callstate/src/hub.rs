//! The signaling hub's view of calls; see [`CallHub`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use secureconnect_redis_fallback::Health;
use tokio::sync::{broadcast, mpsc};

use crate::error::{check_id, CallError};
use crate::memory_store::MemoryCallStore;
use crate::model::{now_ms, CallState, Participant, ParticipantState, RejoinToken};
use crate::redis_store::{RecoveryReport, RedisCallStore, Skipped};
use crate::store::CallStore;

/// How many changes may wait for Redis before the hub falls back to a full write-back.
const WRITE_BEHIND: usize = 4096;
/// Signaling messages buffered per call.
const SIGNALS: usize = 256;

/// A signaling message between participants of a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signal {
    /// The sender.
    pub from: String,
    /// The recipient, or `None` for every other participant.
    pub to: Option<String>,
    /// The message as the client sent it (an SDP offer or answer, an ICE candidate…).
    pub payload: String,
}

#[derive(Debug)]
enum Op {
    Create(String),
    Join(String, Participant),
    Leave(String, String),
    End(String),
}

#[derive(Clone, Debug)]
struct Metrics {
    calls: Gauge,
    participants: Gauge,
    recovery_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    recovered: Family<Vec<(&'static str, &'static str)>, Counter>,
    write_behind_depth: Gauge,
    write_backs: Counter,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Self {
        let calls = Gauge::default();
        registry.register("calls_active", "Calls this node serves", calls.clone());
        let participants = Gauge::default();
        registry.register(
            "call_participants",
            "Participants of the calls this node serves",
            participants.clone(),
        );
        let recovery_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "call_recovery_duration_seconds",
            "Duration of the last recovery of calls from Redis",
            recovery_seconds.clone(),
        );
        let recovered = Family::default();
        registry.register(
            "call_recovery_calls",
            "Calls met at recovery, by outcome: recovered, corrupt, foreign, dangling",
            recovered.clone(),
        );
        let write_behind_depth = Gauge::default();
        registry.register(
            "call_write_behind_depth",
            "Call changes waiting to be written to Redis",
            write_behind_depth.clone(),
        );
        let write_backs = Counter::default();
        registry.register(
            "call_full_write_backs",
            "Full write-backs of every call to Redis after it was unavailable",
            write_backs.clone(),
        );
        Self {
            calls,
            participants,
            recovery_seconds,
            recovered,
            write_behind_depth,
            write_backs,
        }
    }
}

#[derive(Debug)]
struct Inner {
    memory: MemoryCallStore,
    redis: Option<RedisCallStore>,
    tx: mpsc::Sender<Op>,
    dirty: AtomicBool,
    ended_while_dirty: Mutex<HashSet<String>>,
    awaiting: Mutex<HashMap<(String, String), Instant>>,
    channels: Mutex<HashMap<String, broadcast::Sender<Signal>>>,
    metrics: Metrics,
}

/// A signaling hub's view of calls: in-memory state that is authoritative, written
/// behind to Redis, recovered from Redis at start, and written back in full when Redis
/// returns after an outage.
///
/// A WebSocket signaling service keeps one [`CallHub`]: on `join` it hands the
/// participant a [`RejoinToken`]; after a restart, [`CallHub::recover`] brings back the
/// calls this node owned with every participant [awaiting
/// rejoin](crate::ParticipantState::AwaitingRejoin); a participant that reconnects
/// and presents its token gets its place back ([`CallHub::rejoin`]); those that do not
/// within a grace period are removed ([`CallHub::expire_awaiting`]). Messages between
/// participants (offers, answers, ICE candidates) go through [`CallHub::relay`] and
/// [`CallHub::subscribe`].
///
/// With Redis, the hub refreshes this node's lease and its calls' TTLs three times per
/// lease period.
///
/// Every change is applied in memory first, so signaling goes on while Redis is away.
/// Changes are queued (bounded) for a background writer; if Redis fails or the queue
/// overflows, the hub marks itself dirty and, once Redis is healthy, writes every call
/// back in full and ends in Redis the calls that ended meanwhile.
///
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct CallHub {
    inner: Arc<Inner>,
}

impl CallHub {
    /// A hub for node `node`, persisting to `redis` when given (else memory only).
    /// Must be called inside a Tokio runtime: it starts the write-behind task.
    ///
    /// # Errors
    ///
    /// [`CallError::InvalidId`] for an unusable node id.
    pub fn new(
        node: &str,
        redis: Option<RedisCallStore>,
        registry: &mut Registry,
    ) -> Result<Self, CallError> {
        check_id(node)?;
        let (tx, rx) = mpsc::channel(WRITE_BEHIND);
        let inner = Arc::new(Inner {
            memory: MemoryCallStore::new(node),
            redis,
            tx,
            dirty: AtomicBool::new(false),
            ended_while_dirty: Mutex::new(HashSet::new()),
            awaiting: Mutex::new(HashMap::new()),
            channels: Mutex::new(HashMap::new()),
            metrics: Metrics::register(registry),
        });
        if inner.redis.is_some() {
            tokio::spawn(write_behind(Arc::downgrade(&inner), rx));
        }
        Ok(Self { inner })
    }

    fn update_gauges(&self) {
        let (calls, participants) = self.inner.memory.counts();
        self.inner.metrics.calls.set(calls as i64);
        self.inner.metrics.participants.set(participants as i64);
    }

    fn enqueue(&self, op: Op) {
        if self.inner.redis.is_none() {
            return;
        }
        if self.inner.tx.try_send(op).is_err() {
            // Redis will get everything in one write-back instead.
            self.inner.dirty.store(true, Ordering::Release);
        }
        self.inner
            .metrics
            .write_behind_depth
            .set((WRITE_BEHIND - self.inner.tx.capacity()) as i64);
    }

    /// Loads the calls this node owned before a restart, every participant awaiting
    /// rejoin. Without Redis, or with Redis unavailable, there is nothing to recover.
    ///
    /// # Errors
    ///
    /// When Redis is unavailable.
    pub async fn recover(&self) -> Result<RecoveryReport, CallError> {
        let Some(redis) = &self.inner.redis else {
            return Ok(RecoveryReport::default());
        };
        let report = redis.recover().await?;
        let now = Instant::now();
        let mut awaiting = self
            .inner
            .awaiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for call in &report.calls {
            for id in call.participants.keys() {
                awaiting.insert((call.id.clone(), id.clone()), now);
            }
            self.inner.memory.insert(call.clone());
        }
        drop(awaiting);
        let m = &self.inner.metrics;
        m.recovery_seconds.set(report.duration.as_secs_f64());
        let count = |outcome: &'static str, n: usize| {
            m.recovered
                .get_or_create(&vec![("outcome", outcome)])
                .inc_by(n as u64);
        };
        count("recovered", report.calls.len());
        count("dangling", report.dangling_removed);
        let corrupt = report
            .skipped
            .iter()
            .filter(|s| matches!(s, Skipped::Corrupt { .. }))
            .count();
        count("corrupt", corrupt);
        count("foreign", report.skipped.len() - corrupt);
        self.update_gauges();
        tracing::info!(
            recovered = report.calls.len(),
            skipped = report.skipped.len(),
            dangling = report.dangling_removed,
            seconds = report.duration.as_secs_f64(),
            "calls recovered from redis"
        );
        Ok(report)
    }

    /// Creates a call served by this node.
    ///
    /// # Errors
    ///
    /// [`CallError::AlreadyExists`], [`CallError::InvalidId`].
    pub async fn create(&self, call_id: &str) -> Result<CallState, CallError> {
        let call = self.inner.memory.create(call_id).await?;
        self.enqueue(Op::Create(call_id.to_owned()));
        self.update_gauges();
        Ok(call)
    }

    /// Adds a participant for `user_id`; returns its id and the token it needs to
    /// rejoin after a restart (give it to the client once; only its hash is kept).
    ///
    /// # Errors
    ///
    /// [`CallError::NotFound`].
    pub async fn join(
        &self,
        call_id: &str,
        user_id: &str,
    ) -> Result<(String, RejoinToken), CallError> {
        let token = RejoinToken::generate();
        let participant = Participant {
            id: format!("p-{}", &RejoinToken::generate().secret()[..16]),
            user_id: user_id.to_owned(),
            token_hash: token.hash(),
            joined_at_ms: now_ms(),
            state: ParticipantState::Connected,
        };
        let id = participant.id.clone();
        self.inner.memory.join(call_id, participant.clone()).await?;
        self.enqueue(Op::Join(call_id.to_owned(), participant));
        self.update_gauges();
        Ok((id, token))
    }

    /// Gives a participant its place back after a restart if `token` is right.
    ///
    /// # Errors
    ///
    /// [`CallError::BadToken`], [`CallError::NoParticipant`], [`CallError::NotFound`].
    pub fn rejoin(
        &self,
        call_id: &str,
        participant_id: &str,
        token: &RejoinToken,
    ) -> Result<Participant, CallError> {
        let participant = self.inner.memory.with_call(call_id, |call| {
            let p = call.participants.get_mut(participant_id).ok_or_else(|| {
                CallError::NoParticipant {
                    call: call_id.to_owned(),
                    participant: participant_id.to_owned(),
                }
            })?;
            if !token.matches(&p.token_hash) {
                return Err(CallError::BadToken {
                    call: call_id.to_owned(),
                    participant: participant_id.to_owned(),
                });
            }
            p.state = ParticipantState::Connected;
            Ok(p.clone())
        })?;
        self.inner
            .awaiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(call_id.to_owned(), participant_id.to_owned()));
        Ok(participant)
    }

    /// Removes a participant; the call ends with its last participant.
    ///
    /// # Errors
    ///
    /// [`CallError::NotFound`].
    pub async fn leave(
        &self,
        call_id: &str,
        participant_id: &str,
    ) -> Result<crate::LeaveOutcome, CallError> {
        let outcome = self.inner.memory.leave(call_id, participant_id).await?;
        if outcome.removed {
            self.enqueue(Op::Leave(call_id.to_owned(), participant_id.to_owned()));
        }
        if outcome.call_ended {
            self.inner
                .channels
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(call_id);
            if self.inner.dirty.load(Ordering::Acquire) {
                self.inner
                    .ended_while_dirty
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(call_id.to_owned());
            }
        }
        self.update_gauges();
        Ok(outcome)
    }

    /// Ends a call.
    ///
    /// # Errors
    ///
    /// [`CallError::NotFound`].
    pub async fn end(&self, call_id: &str) -> Result<(), CallError> {
        self.inner.memory.end(call_id).await?;
        self.enqueue(Op::End(call_id.to_owned()));
        self.update_gauges();
        Ok(())
    }

    /// The call as this node knows it.
    pub fn get(&self, call_id: &str) -> Option<CallState> {
        self.inner.memory.with_call(call_id, |c| Ok(c.clone())).ok()
    }

    /// Every call this node serves.
    pub fn calls(&self) -> Vec<CallState> {
        self.inner.memory.snapshot()
    }

    /// Removes the participants still awaiting rejoin after `grace`; returns how many.
    pub async fn expire_awaiting(&self, grace: Duration) -> usize {
        let expired: Vec<(String, String)> = {
            let mut awaiting = self
                .inner
                .awaiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let expired: Vec<_> = awaiting
                .iter()
                .filter(|(_, since)| since.elapsed() >= grace)
                .map(|(k, _)| k.clone())
                .collect();
            for key in &expired {
                awaiting.remove(key);
            }
            expired
        };
        let mut removed = 0;
        for (call, participant) in expired {
            if matches!(self.leave(&call, &participant).await, Ok(o) if o.removed) {
                removed += 1;
            }
        }
        removed
    }

    /// Receives the signals of a call addressed to `participant_id` or to everyone
    /// (its own are left out by [`SignalReceiver::recv`]).
    ///
    /// # Errors
    ///
    /// [`CallError::NotFound`].
    pub fn subscribe(
        &self,
        call_id: &str,
        participant_id: &str,
    ) -> Result<SignalReceiver, CallError> {
        self.inner.memory.with_call(call_id, |_| Ok(()))?;
        let mut channels = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let sender = channels
            .entry(call_id.to_owned())
            .or_insert_with(|| broadcast::channel(SIGNALS).0);
        Ok(SignalReceiver {
            rx: sender.subscribe(),
            me: participant_id.to_owned(),
        })
    }

    /// Sends a signal to one participant (`to`) or to every other one; returns how many
    /// subscriptions it reached.
    ///
    /// # Errors
    ///
    /// [`CallError::NotFound`], [`CallError::NoParticipant`] for an unknown sender.
    pub fn relay(&self, call_id: &str, signal: Signal) -> Result<usize, CallError> {
        self.inner.memory.with_call(call_id, |call| {
            if call.participants.contains_key(&signal.from) {
                Ok(())
            } else {
                Err(CallError::NoParticipant {
                    call: call_id.to_owned(),
                    participant: signal.from.clone(),
                })
            }
        })?;
        let sender = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(call_id)
            .cloned();
        Ok(sender.map_or(0, |s| s.send(signal).unwrap_or(0)))
    }

    /// Whether changes are waiting for a full write-back to Redis.
    pub fn needs_write_back(&self) -> bool {
        self.inner.dirty.load(Ordering::Acquire)
    }
}

/// The signals of one participant.
#[derive(Debug)]
pub struct SignalReceiver {
    rx: broadcast::Receiver<Signal>,
    me: String,
}

impl SignalReceiver {
    /// The next signal for this participant; `None` when the call is gone.
    pub async fn recv(&mut self) -> Option<Signal> {
        loop {
            match self.rx.recv().await {
                Ok(s) if s.from != self.me && s.to.as_ref().is_none_or(|to| *to == self.me) => {
                    return Some(s)
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// Applies queued changes to Redis; on failure marks the hub dirty and, once Redis is
/// healthy again, writes every call back.
async fn write_behind(weak: std::sync::Weak<Inner>, mut rx: mpsc::Receiver<Op>) {
    let Some(mut health) = weak
        .upgrade()
        .and_then(|i| i.redis.as_ref().map(|r| r.redis().subscribe()))
    else {
        return;
    };
    let lease = weak
        .upgrade()
        .and_then(|i| i.redis.as_ref().map(|r| r.config().lease_ttl))
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
                if *health.borrow() == Health::Degraded {
                    // Redis may come back empty (a restart without persistence), with
                    // or without writes failing meanwhile: write everything back then.
                    if let Some(inner) = weak.upgrade() {
                        inner.dirty.store(true, Ordering::Release);
                    }
                }
            }
            _ = tick.tick() => {}
            _ = heartbeat.tick() => {
                let Some(inner) = weak.upgrade() else { return };
                if let Some(redis) = &inner.redis {
                    if *health.borrow() == Health::Healthy {
                        if let Err(e) = redis.heartbeat().await {
                            tracing::debug!(error = %e, "call-state heartbeat failed");
                        }
                    }
                }
            }
        }
        let Some(inner) = weak.upgrade() else { return };
        if inner.dirty.load(Ordering::Acquire) && *health.borrow() == Health::Healthy {
            // Everything queued so far is covered by the full write-back.
            while rx.try_recv().is_ok() {}
            write_back(&inner).await;
        }
    }
}

async fn apply(inner: &Inner, op: Op) {
    let Some(redis) = &inner.redis else { return };
    if inner.dirty.load(Ordering::Acquire) {
        if let Op::End(call) | Op::Leave(call, _) = &op {
            if inner.memory.with_call(call, |_| Ok(())).is_err() {
                inner
                    .ended_while_dirty
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(call.clone());
            }
        }
        return;
    }
    let (call, result) = match op {
        Op::Create(call) => {
            let r = redis.create(&call).await.map(drop);
            (call, r)
        }
        Op::Join(call, participant) => {
            let r = redis.join(&call, participant).await.map(drop);
            (call, r)
        }
        Op::Leave(call, participant) => {
            let r = redis.leave(&call, &participant).await.map(drop);
            (call, r)
        }
        Op::End(call) => {
            let r = redis.end(&call).await;
            (call, r)
        }
    };
    match result {
        Ok(()) | Err(CallError::NotFound(_)) => {}
        Err(CallError::NotOwner(_)) => {
            tracing::warn!(call = %call, "another node owns this call now: dropping it here");
            inner.memory.remove(&call);
        }
        Err(e) => {
            if !e.is_unavailable() {
                tracing::error!(call = %call, error = %e, "writing call state to redis failed");
            }
            inner.dirty.store(true, Ordering::Release);
        }
    }
}

async fn write_back(inner: &Inner) {
    let Some(redis) = &inner.redis else { return };
    let ended: Vec<String> = inner
        .ended_while_dirty
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain()
        .collect();
    for call in ended {
        if inner.memory.with_call(&call, |_| Ok(())).is_err() {
            match redis.end(&call).await {
                Ok(()) | Err(CallError::NotFound(_) | CallError::NotOwner(_)) => {}
                Err(_) => return,
            }
        }
    }
    for call in inner.memory.snapshot() {
        match redis.put(&call).await {
            Ok(_) => {}
            Err(CallError::NotOwner(_)) => {
                tracing::warn!(call = %call.id, "another node owns this call now: dropping it here");
                inner.memory.remove(&call.id);
            }
            Err(e) => {
                tracing::warn!(error = %e, "full write-back interrupted; will retry");
                return;
            }
        }
    }
    inner.dirty.store(false, Ordering::Release);
    inner.metrics.write_backs.inc();
    tracing::info!("call state written back to redis in full");
}
