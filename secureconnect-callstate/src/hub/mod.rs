//! The signaling hub's view of calls: [`CallHub`] and its operations. Signal relay is
//! in `signals`, the write-behind replication in `replicator` (the state machine) and
//! `write_behind` (the task that drives it), the metrics in `metrics`.

mod metrics;
mod replicator;
mod signals;
mod write_behind;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

use self::metrics::Metrics;
use self::replicator::{Event, Op, Replicator};
use self::signals::Channels;
pub use self::signals::{Signal, SignalReceiver};
use crate::error::{check_id, Error};
use crate::memory_store::MemoryCallStore;
use crate::model::{now_ms, CallState, Participant, ParticipantState, RejoinToken};
use crate::redis_store::{RecoveryReport, RedisCallStore};
use crate::store::{CallStore, LeaveOutcome};

/// How many changes may wait for Redis before the hub falls back to a full write-back.
const WRITE_BEHIND: usize = 4096;

#[derive(Debug)]
struct Inner {
    memory: MemoryCallStore,
    redis: Option<RedisCallStore>,
    tx: mpsc::Sender<Op>,
    replicator: Mutex<Replicator>,
    awaiting: Mutex<HashMap<(String, String), Instant>>,
    channels: Channels,
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
/// back in full: it ends in Redis every call of this node's set that memory no longer
/// holds (and every call that ended meanwhile), then puts the calls in memory. An end
/// is never lost: a call that ended stays due to end in Redis until Redis confirms it.
///
/// The hub has nothing to configure: the timing is the store's
/// ([`RedisCallStoreConfig`](crate::RedisCallStoreConfig)).
///
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct CallHub {
    inner: Arc<Inner>,
}

impl CallHub {
    /// A hub for node `node`, persisting to `redis` when given (else memory only); its
    /// metrics go to `registry`. Must be called inside a Tokio runtime: it starts the
    /// write-behind task.
    ///
    /// # Errors
    ///
    /// [`Error::is_invalid_id`] for an unusable node id.
    pub fn new(
        node: impl Into<String>,
        redis: Option<RedisCallStore>,
        registry: &mut Registry,
    ) -> Result<Self, Error> {
        let node = node.into();
        check_id(&node)?;
        let (tx, rx) = mpsc::channel(WRITE_BEHIND);
        let inner = Arc::new(Inner {
            memory: MemoryCallStore::new(node),
            redis,
            tx,
            replicator: Mutex::new(Replicator::default()),
            awaiting: Mutex::new(HashMap::new()),
            channels: Channels::default(),
            metrics: Metrics::register(registry),
        });
        if inner.redis.is_some() {
            tokio::spawn(write_behind::run(Arc::downgrade(&inner), rx));
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
        if let Err(mpsc::error::TrySendError::Full(op)) = self.inner.tx.try_send(op) {
            // Redis will get everything in one write-back instead; an end is kept.
            let _none = self.inner.replicator().step(Event::Dropped(op));
        }
        self.inner
            .metrics
            .write_behind_depth
            .set((WRITE_BEHIND - self.inner.tx.capacity()) as i64);
    }

    /// Loads the calls this node owned before a restart, every participant awaiting
    /// rejoin. Without Redis there is nothing to recover.
    ///
    /// # Errors
    ///
    /// When Redis is unavailable ([`Error::is_unavailable`]) or refuses a command.
    pub async fn recover(&self) -> Result<RecoveryReport, Error> {
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
        self.inner.metrics.recovered(&report);
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
    /// [`Error::is_already_exists`], [`Error::is_invalid_id`].
    pub async fn create(&self, call_id: &str) -> Result<CallState, Error> {
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
    /// [`Error::is_not_found`].
    pub async fn join(&self, call_id: &str, user_id: &str) -> Result<(String, RejoinToken), Error> {
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
    /// [`Error::is_bad_token`], [`Error::is_no_participant`], [`Error::is_not_found`].
    pub fn rejoin(
        &self,
        call_id: &str,
        participant_id: &str,
        token: &RejoinToken,
    ) -> Result<Participant, Error> {
        let participant = self.inner.memory.with_call(call_id, |call| {
            let p = call
                .participants
                .get_mut(participant_id)
                .ok_or_else(|| Error::no_participant(call_id, participant_id))?;
            if !token.matches(&p.token_hash) {
                return Err(Error::bad_token(call_id, participant_id));
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
    /// [`Error::is_not_found`].
    pub async fn leave(&self, call_id: &str, participant_id: &str) -> Result<LeaveOutcome, Error> {
        let outcome = self.inner.memory.leave(call_id, participant_id).await?;
        if outcome.call_ended {
            self.inner.channels.close(call_id);
            self.enqueue(Op::Ended(call_id.to_owned()));
        } else if outcome.removed {
            self.enqueue(Op::Leave(call_id.to_owned(), participant_id.to_owned()));
        }
        self.update_gauges();
        Ok(outcome)
    }

    /// Ends a call.
    ///
    /// # Errors
    ///
    /// [`Error::is_not_found`].
    pub async fn end(&self, call_id: &str) -> Result<(), Error> {
        self.inner.memory.end(call_id).await?;
        self.enqueue(Op::Ended(call_id.to_owned()));
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

    /// Whether changes are waiting for a full write-back to Redis.
    pub fn needs_write_back(&self) -> bool {
        self.inner.replicator().needs_write_back()
    }
}
