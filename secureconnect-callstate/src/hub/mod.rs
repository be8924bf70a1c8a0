//! The signaling hub's view of calls: [`CallHub`] and its operations. Signal relay is
//! in `signals`, the write-behind replication in `replicator` (the state machine) and
//! `write_behind` (the task that drives it), the adoption of a dead node's calls in
//! `adoption`, the metrics in `metrics`.

mod adoption;
mod config;
mod lifecycle;
mod metrics;
mod recovery;
mod replicator;
mod signals;
mod write_behind;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

pub use self::config::CallHubConfig;
use self::lifecycle::Lifecycle;
use self::metrics::Metrics;
use self::replicator::{Event, Op, Replicator};
use self::signals::Channels;
pub use self::signals::{Signal, SignalReceiver};
use crate::error::{check_id, Error};
use crate::memory_store::MemoryCallStore;
use crate::model::{now_ms, CallState, Participant, ParticipantState, RejoinToken};
use crate::redis_store::RedisCallStore;
use crate::store::{CallStore, LeaveOutcome};

/// How many changes may wait for Redis before the hub falls back to a full write-back.
const WRITE_BEHIND: usize = 4096;

/// How many ended calls a receiver of [`CallHub::ended_calls`] may fall behind by.
const ENDED_BACKLOG: usize = 1024;

#[derive(Debug)]
struct Inner {
    memory: MemoryCallStore,
    redis: Option<RedisCallStore>,
    tx: mpsc::Sender<Op>,
    replicator: Mutex<Replicator>,
    awaiting: Mutex<HashMap<(String, String), Instant>>,
    /// Calls being adopted (in this node's set before they are in memory): a full
    /// write-back meanwhile must not take them for calls that ended here.
    adopting: Mutex<std::collections::HashSet<String>>,
    /// How many adoptions run: a lock-free check on every operation.
    adoptions: std::sync::atomic::AtomicUsize,
    /// Woken when an adoption puts calls in memory or ends.
    adopted: tokio::sync::Notify,
    channels: Channels,
    metrics: Metrics,
    lifecycle: Lifecycle,
    /// The calls a recovery listed and has still to load.
    pending: Mutex<recovery::Pending>,
    /// Whether `pending` holds any call.
    any_pending: AtomicBool,
    /// Whether a recovery is under way: a lock-free check on every operation.
    recovering: AtomicBool,
    /// The ids of the calls that end here, for [`CallHub::ended_calls`].
    ended: tokio::sync::broadcast::Sender<String>,
    /// Whether the background recovery task was started (once per hub).
    background: AtomicBool,
    /// Whether a newer process with this node's id took over.
    superseded: AtomicBool,
    /// Held by a recovery attempt: one at a time.
    attempt: tokio::sync::Mutex<()>,
}

/// A signaling hub's view of calls: in-memory state that is authoritative, written
/// behind to Redis, recovered from Redis at start, and written back in full when Redis
/// returns after an outage.
///
/// A WebSocket signaling service keeps one [`CallHub`]: on `join` it hands the
/// participant a [`RejoinToken`]; when the participant's connection closes without a
/// leave it calls [`CallHub::disconnect`], and the participant awaits
/// rejoin ([`ParticipantState::AwaitingRejoin`](crate::ParticipantState::AwaitingRejoin));
/// after a restart, [`CallHub::recover_in_background`] brings back the calls this node
/// owned with every participant awaiting rejoin. A participant that reconnects and
/// presents its token gets its place back ([`CallHub::rejoin`]); those that do not
/// within [`CallHubConfig::rejoin_grace`] are removed, and a call left without
/// participants for [`CallHubConfig::empty_call_ttl`] ends, both by a background
/// sweep. [`CallHub::create_for`] holds each user to
/// [`CallHubConfig::calls_per_user`] open calls. Messages between participants
/// (offers, answers, ICE candidates) go through [`CallHub::relay`] and
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
/// The expiry is configured by [`CallHubConfig`]; the Redis timing is the store's
/// ([`RedisCallStoreConfig`](crate::RedisCallStoreConfig)).
///
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct CallHub {
    inner: Arc<Inner>,
}

impl CallHub {
    /// A hub for node `node`, persisting to `redis` when given (else memory only),
    /// expiring as `config` says; its metrics go to `registry`. Must be called inside a
    /// Tokio runtime: it starts the expiry sweep and the write-behind task.
    ///
    /// # Errors
    ///
    /// [`Error::is_invalid_id`] for an unusable node id, [`Error::is_invalid_config`]
    /// for a zero setting.
    pub fn new(
        node: impl Into<String>,
        redis: Option<RedisCallStore>,
        config: CallHubConfig,
        registry: &mut Registry,
    ) -> Result<Self, Error> {
        let node = node.into();
        check_id(&node)?;
        config.validate()?;
        let (tx, rx) = mpsc::channel(WRITE_BEHIND);
        let inner = Arc::new(Inner {
            memory: MemoryCallStore::new(node),
            redis,
            tx,
            replicator: Mutex::new(Replicator::default()),
            awaiting: Mutex::new(HashMap::new()),
            adopting: Mutex::new(std::collections::HashSet::new()),
            adoptions: std::sync::atomic::AtomicUsize::new(0),
            adopted: tokio::sync::Notify::new(),
            channels: Channels::default(),
            metrics: Metrics::register(registry),
            lifecycle: Lifecycle::new(config),
            pending: Mutex::default(),
            any_pending: AtomicBool::new(false),
            recovering: AtomicBool::new(false),
            ended: tokio::sync::broadcast::channel(ENDED_BACKLOG).0,
            background: AtomicBool::new(false),
            superseded: AtomicBool::new(false),
            attempt: tokio::sync::Mutex::new(()),
        });
        lifecycle::start(&inner);
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

    /// Creates a call served by this node.
    ///
    /// # Errors
    ///
    /// [`Error::is_already_exists`], [`Error::is_invalid_id`], [`Error::is_recovering`]
    /// (a recovered call with this id could not be loaded yet: retry shortly).
    pub async fn create(&self, call_id: &str) -> Result<CallState, Error> {
        // A recovered call not loaded yet exists all the same.
        self.loaded(call_id).await?;
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
    /// [`Error::is_not_found`], [`Error::is_recovering`] (a recovered call could not
    /// be loaded yet: retry shortly).
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
        self.loaded(call_id).await?;
        self.inner.memory.join(call_id, participant.clone()).await?;
        self.enqueue(Op::Join(call_id.to_owned(), participant));
        self.update_gauges();
        Ok((id, token))
    }

    /// Removes a participant; the call ends with its last participant.
    ///
    /// # Errors
    ///
    /// [`Error::is_not_found`], [`Error::is_recovering`] (a recovered call could not
    /// be loaded yet: retry shortly).
    pub async fn leave(&self, call_id: &str, participant_id: &str) -> Result<LeaveOutcome, Error> {
        self.loaded(call_id).await?;
        let outcome = self.inner.memory.leave(call_id, participant_id).await?;
        self.left(call_id, participant_id, &outcome);
        Ok(outcome)
    }

    /// What follows a removal from memory: the ops for Redis (the explicit end with
    /// the last participant), the channel closed with the call.
    fn left(&self, call_id: &str, participant_id: &str, outcome: &LeaveOutcome) {
        if outcome.call_ended {
            self.ended(call_id);
        } else if outcome.removed {
            self.enqueue(Op::Leave(call_id.to_owned(), participant_id.to_owned()));
            self.update_gauges();
        }
    }

    /// What follows the end of a call in memory: its subscribers' channel closes, and
    /// Redis gets the explicit end.
    fn ended(&self, call_id: &str) {
        self.inner.channels.close(call_id);
        self.enqueue(Op::Ended(call_id.to_owned()));
        self.update_gauges();
        if self.inner.ended.receiver_count() > 0 {
            // None listening: nothing to tell (and nothing allocated).
            let _ = self.inner.ended.send(call_id.to_owned());
        }
    }

    /// The ids of the calls that end on this hub from now on — with their last
    /// participant, by [`end`](Self::end), or empty past
    /// [`empty_call_ttl`](Self::empty_call_ttl) — for a call history or billing. Not
    /// the calls dropped here because another node took them over (they go on there).
    /// Bounded: a receiver more than 1,024 ends behind loses the oldest and learns how
    /// many (`RecvError::Lagged`).
    ///
    /// ```
    /// # async fn run(hub: secureconnect_callstate::CallHub) {
    /// let mut ended = hub.ended_calls();
    /// tokio::spawn(async move {
    ///     while let Ok(call) = ended.recv().await {
    ///         println!("{call} ended");
    ///     }
    /// });
    /// # }
    /// ```
    pub fn ended_calls(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.inner.ended.subscribe()
    }

    /// Ends a call; its participants' [`SignalReceiver`]s end.
    ///
    /// # Errors
    ///
    /// [`Error::is_not_found`], [`Error::is_recovering`] (a recovered call could not
    /// be loaded yet: retry shortly).
    pub async fn end(&self, call_id: &str) -> Result<(), Error> {
        self.loaded(call_id).await?;
        self.inner.memory.end(call_id).await?;
        self.ended(call_id);
        Ok(())
    }

    /// The call as this node knows it.
    pub fn get(&self, call_id: &str) -> Option<CallState> {
        self.inner.memory.with_call(call_id, |c| Ok(c.clone())).ok()
    }

    /// The call as this node knows it, once it is here: while a recovery is under way
    /// this waits (up to [`CallHubConfig::recovery_wait`]) for it to list this node's
    /// calls, and loads the call first if it is listed and not loaded yet. [`get`](Self::get)
    /// answers from memory alone.
    ///
    /// # Errors
    ///
    /// [`Error::is_recovering`]: the calls are not listed in time, or Redis did not
    /// answer (retry shortly).
    pub async fn find(&self, call_id: &str) -> Result<Option<CallState>, Error> {
        self.ready(call_id).await?;
        Ok(self.get(call_id))
    }

    /// Every call this node serves.
    pub fn calls(&self) -> Vec<CallState> {
        self.inner.memory.snapshot()
    }

    /// Whether a newer process with this node's id took over (its heartbeat or an
    /// adoption was refused as superseded): this hub serves nothing any more and
    /// should stop speaking for the node (presence, adoption).
    pub fn is_superseded(&self) -> bool {
        self.inner
            .superseded
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether changes are waiting for a full write-back to Redis.
    pub fn needs_write_back(&self) -> bool {
        self.inner.replicator().needs_write_back()
    }
}
