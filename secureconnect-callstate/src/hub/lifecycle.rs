//! What ends on its own: participants whose connection dropped ([`CallHub::disconnect`],
//! then [`CallHub::rejoin`] or removal after the grace period), calls left empty (ended
//! after their TTL), and the per-user cap on open calls ([`CallHub::create_for`]). The
//! background sweep that drives the expiry is [`run`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::config::CallHubConfig;
use super::metrics::Rejoin;
use super::recovery::Recovery;
use super::{CallHub, Inner};
use crate::error::Error;
use crate::model::{CallState, Participant, ParticipantState, RejoinToken};

/// The hub's expiry state: its settings, when each empty call was first seen empty,
/// who created which call, and where recovery stands.
#[derive(Debug)]
pub(super) struct Lifecycle {
    pub(super) config: CallHubConfig,
    state: Mutex<State>,
    pub(super) recovery: watch::Sender<Recovery>,
}

#[derive(Debug, Default)]
struct State {
    /// Calls without participants, and since when.
    empty_since: HashMap<String, Instant>,
    /// The creator of each call created with `create_for`.
    creators: HashMap<String, String>,
    /// The open calls of each user, and the creations under way.
    by_user: HashMap<String, UserCalls>,
}

#[derive(Debug, Default)]
struct UserCalls {
    calls: HashSet<String>,
    pending: usize,
}

impl Lifecycle {
    pub(super) fn new(config: CallHubConfig) -> Self {
        Self {
            config,
            state: Mutex::default(),
            recovery: watch::Sender::new(Recovery::Idle),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Forgets `user`'s calls that ended (or were created again by someone else).
    fn prune(&mut self, user: &str, open: impl Fn(&str) -> bool) {
        let Some(mine) = self.by_user.get_mut(user) else {
            return;
        };
        let creators = &mut self.creators;
        mine.calls.retain(|call| {
            let kept = creators.get(call).is_some_and(|c| c == user) && open(call);
            if !kept && creators.get(call).is_some_and(|c| c == user) {
                creators.remove(call);
            }
            kept
        });
        if mine.calls.is_empty() && mine.pending == 0 {
            self.by_user.remove(user);
        }
    }
}

impl CallHub {
    fn open(&self, call_id: &str) -> bool {
        self.inner.memory.with_call(call_id, |_| Ok(())).is_ok()
    }

    /// How long a participant whose connection dropped keeps its place
    /// ([`CallHubConfig::rejoin_grace`]).
    pub fn rejoin_grace(&self) -> Duration {
        self.inner.lifecycle.config.rejoin_grace
    }

    /// How long a call with no participants lives ([`CallHubConfig::empty_call_ttl`]).
    pub fn empty_call_ttl(&self) -> Duration {
        self.inner.lifecycle.config.empty_call_ttl
    }

    /// How many open calls one user may create ([`CallHubConfig::calls_per_user`]).
    pub fn calls_per_user(&self) -> usize {
        self.inner.lifecycle.config.calls_per_user
    }

    /// Creates a call on behalf of `user_id`, who may hold at most
    /// [`calls_per_user`](Self::calls_per_user) open calls. A call ends with its last
    /// participant, with [`end`](Self::end), or after
    /// [`empty_call_ttl`](Self::empty_call_ttl) without participants; the user may
    /// then create another. (Creators are known to this hub only: calls recovered
    /// after a restart, and calls made with [`create`](Self::create), count for
    /// nobody.)
    ///
    /// # Errors
    ///
    /// [`Error::is_too_many_calls`], [`Error::is_already_exists`],
    /// [`Error::is_invalid_id`].
    pub async fn create_for(&self, call_id: &str, user_id: &str) -> Result<CallState, Error> {
        let limit = self.calls_per_user();
        {
            let mut state = self.inner.lifecycle.state();
            state.prune(user_id, |call| self.open(call));
            let mine = state.by_user.entry(user_id.to_owned()).or_default();
            if mine.calls.len() + mine.pending >= limit {
                return Err(Error::too_many_calls(user_id, limit));
            }
            mine.pending += 1;
        }
        let created = self.create(call_id).await;
        let mut state = self.inner.lifecycle.state();
        if let Some(mine) = state.by_user.get_mut(user_id) {
            mine.pending = mine.pending.saturating_sub(1);
        }
        if created.is_ok() {
            state.empty_since.insert(call_id.to_owned(), Instant::now());
            state
                .creators
                .insert(call_id.to_owned(), user_id.to_owned());
            state
                .by_user
                .entry(user_id.to_owned())
                .or_default()
                .calls
                .insert(call_id.to_owned());
        } else {
            state.prune(user_id, |call| self.open(call));
        }
        created
    }

    /// The user who created the call with [`create_for`](Self::create_for), while it
    /// is open.
    pub fn creator(&self, call_id: &str) -> Option<String> {
        let creator = self
            .inner
            .lifecycle
            .state()
            .creators
            .get(call_id)
            .cloned()?;
        self.open(call_id).then_some(creator)
    }

    /// A participant's connection closed without a leave: it keeps its place, awaiting
    /// rejoin ([`ParticipantState::AwaitingRejoin`]), for
    /// [`rejoin_grace`](Self::rejoin_grace), then it is removed. Idempotent.
    ///
    /// # Errors
    ///
    /// [`Error::is_not_found`], [`Error::is_no_participant`].
    pub fn disconnect(&self, call_id: &str, participant_id: &str) -> Result<(), Error> {
        self.inner.memory.with_call(call_id, |call| {
            let p = call
                .participants
                .get_mut(participant_id)
                .ok_or_else(|| Error::no_participant(call_id, participant_id))?;
            if p.state != ParticipantState::AwaitingRejoin {
                p.state = ParticipantState::AwaitingRejoin;
                // Under the call's lock, as rejoin does: the two never cross.
                self.inner.awaiting().insert(
                    (call_id.to_owned(), participant_id.to_owned()),
                    Instant::now(),
                );
            }
            Ok(())
        })
    }

    /// Gives a participant its place back — after a restart, or after its connection
    /// dropped — if it belongs to `user_id` and `token` is right. Nothing changes
    /// otherwise. While a recovery has yet to list this node's calls
    /// ([`is_recovering`](Self::is_recovering)), a call not in memory is waited for, up
    /// to [`CallHubConfig::recovery_wait`]; a call listed but not loaded yet is loaded
    /// at once.
    ///
    /// # Errors
    ///
    /// [`Error::is_bad_token`] (a wrong token, or another user's participant),
    /// [`Error::is_no_participant`], [`Error::is_not_found`], [`Error::is_recovering`]
    /// (retry shortly).
    pub async fn rejoin(
        &self,
        call_id: &str,
        participant_id: &str,
        user_id: &str,
        token: &RejoinToken,
    ) -> Result<Participant, Error> {
        let result = match self.ready(call_id).await {
            Ok(()) => self.rejoin_now(call_id, participant_id, user_id, token),
            Err(e) => Err(e),
        };
        self.inner.metrics.rejoin(match &result {
            Ok(_) => Rejoin::Rejoined,
            Err(e) if e.is_bad_token() => Rejoin::BadToken,
            Err(e) if e.is_recovering() => Rejoin::Recovering,
            Err(_) => Rejoin::NotFound,
        });
        result
    }

    fn rejoin_now(
        &self,
        call_id: &str,
        participant_id: &str,
        user_id: &str,
        token: &RejoinToken,
    ) -> Result<Participant, Error> {
        self.inner.memory.with_call(call_id, |call| {
            let p = call
                .participants
                .get_mut(participant_id)
                .ok_or_else(|| Error::no_participant(call_id, participant_id))?;
            // Both checks before anything changes.
            let token_ok = token.matches(&p.token_hash);
            if !token_ok || p.user_id != user_id {
                return Err(Error::bad_token(call_id, participant_id));
            }
            p.state = ParticipantState::Connected;
            self.inner
                .awaiting()
                .remove(&(call_id.to_owned(), participant_id.to_owned()));
            Ok(p.clone())
        })
    }

    /// Removes the participants still awaiting rejoin after `grace`; returns how many.
    /// The hub calls it with [`rejoin_grace`](Self::rejoin_grace) in the background.
    ///
    /// Whether a participant still awaits rejoin since `grace` ago is checked, and it is
    /// removed, in one step under its call's lock: one that rejoined (or rejoined and
    /// dropped again, with a fresh grace) in the meantime stays.
    pub async fn expire_awaiting(&self, grace: Duration) -> usize {
        let listed: Vec<(String, String)> = self
            .inner
            .awaiting()
            .iter()
            .filter(|(_, since)| since.elapsed() >= grace)
            .map(|(k, _)| k.clone())
            .collect();
        let mut removed = 0;
        for key in listed {
            let (call, participant) = &key;
            let outcome = self.inner.memory.leave_if(call, participant, |p| {
                // Under the call's lock, as disconnect and rejoin update both.
                let mut awaiting = self.inner.awaiting();
                let due = p.state == ParticipantState::AwaitingRejoin
                    && awaiting
                        .get(&key)
                        .is_some_and(|since| since.elapsed() >= grace);
                if due {
                    awaiting.remove(&key);
                }
                due
            });
            match outcome {
                Ok(outcome) if outcome.removed => {
                    self.left(call, participant, &outcome);
                    removed += 1;
                }
                // Gone (left, or its call ended) while awaiting: forget it, unless a
                // fresh entry (a recovered call) took its place.
                _ => {
                    let here = self
                        .inner
                        .memory
                        .with_call(call, |c| Ok(c.participants.contains_key(participant)));
                    if !here.unwrap_or(false) {
                        let mut awaiting = self.inner.awaiting();
                        if awaiting
                            .get(&key)
                            .is_some_and(|since| since.elapsed() >= grace)
                        {
                            awaiting.remove(&key);
                        }
                    }
                }
            }
        }
        removed
    }

    /// Ends the calls that have had no participants for `ttl`; returns how many. The
    /// hub calls it with [`empty_call_ttl`](Self::empty_call_ttl) in the background.
    ///
    /// Whether a call is still empty is checked, and it ends, in one step under its
    /// lock: a join in the meantime keeps it (or fails, the call gone).
    pub async fn expire_empty(&self, ttl: Duration) -> usize {
        let empty = self.inner.memory.empty_calls();
        let now = Instant::now();
        let due: Vec<String> = {
            let mut state = self.inner.lifecycle.state();
            let mut still = HashMap::with_capacity(empty.len());
            let mut due = Vec::new();
            for call in empty {
                let since = state.empty_since.get(&call).copied().unwrap_or(now);
                if now.duration_since(since) >= ttl {
                    due.push(call);
                } else {
                    still.insert(call, since);
                }
            }
            state.empty_since = still;
            due
        };
        let mut ended = 0;
        for call in due {
            if self
                .inner
                .memory
                .end_if(&call, |c| c.participants.is_empty())
                .is_some()
            {
                self.ended(&call);
                ended += 1;
            }
        }
        ended
    }

    /// Forgets the creators of calls that ended.
    fn prune_creators(&self) {
        let mut state = self.inner.lifecycle.state();
        let users: Vec<String> = state.by_user.keys().cloned().collect();
        for user in users {
            state.prune(&user, |call| self.open(call));
        }
        let state = &mut *state;
        state.creators.retain(|call, user| {
            state
                .by_user
                .get(user)
                .is_some_and(|u| u.calls.contains(call))
        });
    }
}

/// The background sweep: participants past their grace are removed, calls empty past
/// their TTL end, creators of ended calls are forgotten. Stops with the hub.
pub(super) async fn run(weak: Weak<Inner>) {
    let Some(period) = weak.upgrade().map(|i| i.lifecycle.config.sweep_interval()) else {
        return;
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        let hub = CallHub { inner };
        let removed = hub.expire_awaiting(hub.rejoin_grace()).await;
        if removed > 0 {
            tracing::info!(removed, "participants that did not rejoin were removed");
        }
        let ended = hub.expire_empty(hub.empty_call_ttl()).await;
        if ended > 0 {
            tracing::info!(ended, "calls without participants ended");
        }
        hub.prune_creators();
    }
}

impl Inner {
    pub(super) fn awaiting(&self) -> MutexGuard<'_, HashMap<(String, String), Instant>> {
        self.awaiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts the sweep of a new hub.
pub(super) fn start(inner: &Arc<Inner>) {
    tokio::spawn(run(Arc::downgrade(inner)));
}
