//! Recovery of the calls this node owned before a restart: one attempt
//! ([`CallHub::recover`]) or attempts in the background until one succeeds
//! ([`CallHub::recover_in_background`]), for when Redis is unreachable at start.
//!
//! A recovery has two steps. The first lists the calls this node owns (a few round
//! trips however many there are); from then on the hub serves: a call not loaded yet
//! is loaded the moment someone asks for it ([`CallHub::rejoin`], [`CallHub::join`],
//! ...), while the second step loads the rest, batch after batch. Each call is taken
//! into memory once, by whichever of the two reads it first.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{CallHub, Inner};
use crate::error::{Chain, Error};
use crate::model::ParticipantState;
use crate::redis_store::{RecoveryReport, RedisCallStore, Skipped};

/// The first pause between two recovery attempts; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Where the hub's recovery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Recovery {
    /// None was started.
    Idle,
    /// Attempts in the background, since then, until one lists the calls.
    Running(Instant),
    /// The calls are listed (since the first attempt began) and loaded behind: every
    /// call this node owns is served, loaded first if need be.
    Loading(Instant),
    /// Done: every call this node owned is in memory.
    Done,
}

/// The calls listed by a recovery's first step and not loaded yet.
#[derive(Debug, Default)]
pub(super) struct Pending {
    /// When they were listed: their participants' rejoin grace runs from then.
    listed: Option<Instant>,
    calls: HashSet<String>,
}

impl CallHub {
    /// Loads the calls this node owned before a restart, every participant awaiting
    /// rejoin (and removed if it does not rejoin within
    /// [`rejoin_grace`](Self::rejoin_grace)). One attempt; without Redis there is
    /// nothing to recover. [`recover_in_background`](Self::recover_in_background)
    /// retries until it succeeds. An attempt that failed half-way leaves what it
    /// loaded in memory, and the next one loads the rest.
    ///
    /// As soon as the calls are listed (before they are read), a call this node owns
    /// is served: an operation on one not loaded yet loads it first. Attempts run one
    /// at a time; once one has loaded every call, later ones do nothing. The report
    /// lists the calls this attempt loaded (not those an operation loaded first).
    ///
    /// # Errors
    ///
    /// When Redis is unavailable ([`Error::is_unavailable`]) or refuses a command.
    pub async fn recover(&self) -> Result<RecoveryReport, Error> {
        let Some(redis) = &self.inner.redis else {
            return Ok(RecoveryReport::default());
        };
        // One attempt at a time; once one has loaded everything, there is nothing left.
        let _attempt = self.inner.attempt.lock().await;
        if *self.inner.lifecycle.recovery.borrow() == Recovery::Done {
            return Ok(RecoveryReport::default());
        }
        let started = Instant::now();
        if self.inner.pending().listed.is_none() {
            self.inner.recovering.store(true, Ordering::Release);
            let ids = redis.owned_calls().await?;
            self.inner.list_pending(ids);
            self.inner.lifecycle.recovery.send_modify(|state| {
                *state = match *state {
                    Recovery::Running(since) | Recovery::Loading(since) => Recovery::Loading(since),
                    Recovery::Idle | Recovery::Done => Recovery::Loading(started),
                }
            });
        }
        let mut report = RecoveryReport::default();
        let ids: Vec<String> = self.inner.pending().calls.iter().cloned().collect();
        // Each pipeline's calls are served as soon as they are parsed.
        redis
            .read_calls_with(&ids, |batch, part| {
                self.take(redis, batch, part, &mut report);
            })
            .await?;
        report.duration = started.elapsed();
        {
            // Done under the pending lock: a call is pending or in memory, never neither
            // while the write-back could take it for ended.
            let mut pending = self.inner.pending();
            pending.listed = None;
            // Calls an adoption could not read meanwhile stay pending.
            let left = !pending.calls.is_empty();
            self.inner.any_pending.store(left, Ordering::Release);
            self.inner.recovering.store(left, Ordering::Release);
            self.inner.lifecycle.recovery.send_replace(Recovery::Done);
        }
        self.inner.metrics.recovery_took(report.duration);
        self.update_gauges();
        tracing::info!(
            recovered = report.calls.len(),
            skipped = report.skipped.len(),
            dangling = report.dangling_removed,
            seconds = report.duration.as_secs_f64(),
            "calls recovered from redis"
        );
        // The recovery wrote nothing: refresh the calls' TTLs now rather than at the
        // next period, off this path.
        if !report.calls.is_empty() {
            let redis = redis.clone();
            tokio::spawn(async move {
                // A failure is counted and logged by the heartbeat itself.
                let _ = redis.heartbeat().await;
            });
        }
        Ok(report)
    }

    /// Takes into memory the calls of `part` (read for `batch`) that are still pending,
    /// each participant awaiting rejoin since the calls were listed, and drops every id
    /// of `batch` from the pending ones. Adds what it took to `report`.
    fn take(
        &self,
        redis: &RedisCallStore,
        batch: &[String],
        part: RecoveryReport,
        report: &mut RecoveryReport,
    ) {
        let mut pending = self.inner.pending();
        let since = pending.listed.unwrap_or_else(Instant::now);
        // Only what is still pending is taken (and counted): whichever read of a call
        // comes first takes it, so a call that ended after an operation loaded it is
        // not brought back by a later read.
        let was_pending: HashSet<&String> = batch
            .iter()
            .filter(|id| pending.calls.remove(*id))
            .collect();
        if was_pending.is_empty() {
            return;
        }
        let mut taken = RecoveryReport {
            skipped: part
                .skipped
                .into_iter()
                .filter(|s| was_pending.contains(&skipped_call(s).to_owned()))
                .collect(),
            dangling_removed: part.dangling_removed,
            ..RecoveryReport::default()
        };
        for mut call in part.calls {
            // A call made here while the recovery was retried is the current one: it is
            // neither replaced nor marked awaiting. (No other insertion of a pending id
            // can happen while the pending lock is held.)
            if !was_pending.contains(&call.id)
                || self.inner.memory.with_call(&call.id, |_| Ok(())).is_ok()
            {
                continue;
            }
            for p in call.participants.values_mut() {
                p.state = ParticipantState::AwaitingRejoin;
            }
            // Held, and its participants awaiting, before anyone can see it in memory:
            // a write to it carries its epoch from the first.
            redis.hold(&call);
            {
                let mut awaiting = self.inner.awaiting();
                for p in call.participants.keys() {
                    awaiting.insert((call.id.clone(), p.clone()), since);
                }
            }
            self.inner.memory.insert(call.clone());
            taken.calls.push(call);
        }
        if pending.calls.is_empty() {
            self.inner.any_pending.store(false, Ordering::Release);
            if self.inner.recovered() {
                // Adopted calls were the last pending ones.
                self.inner.recovering.store(false, Ordering::Release);
            }
        }
        drop(pending);
        self.inner.metrics.recovered(&taken);
        self.update_gauges();
        report.calls.append(&mut taken.calls);
        report.skipped.append(&mut taken.skipped);
        report.dangling_removed += taken.dangling_removed;
    }

    /// Makes `call_id` ready for an operation while a recovery is under way: loads it
    /// if the recovery listed it and it is not loaded yet. Does not wait for the
    /// listing: before it, memory answers (as without Redis). One atomic load when no
    /// recovery is under way.
    ///
    /// # Errors
    ///
    /// [`Error::is_recovering`] when Redis does not answer (retry shortly).
    pub(super) async fn loaded(&self, call_id: &str) -> Result<(), Error> {
        self.wait_for_adoption(call_id).await?;
        if !self.inner.recovering.load(Ordering::Acquire)
            || self.inner.memory.with_call(call_id, |_| Ok(())).is_ok()
        {
            return Ok(());
        }
        self.load_if_pending(call_id).await
    }

    /// [`loaded`](Self::loaded), after waiting (up to
    /// [`CallHubConfig::recovery_wait`](crate::CallHubConfig::recovery_wait)) for a
    /// recovery under way to list this node's calls: for a participant coming back
    /// after a restart, whose call is most likely one of them.
    ///
    /// # Errors
    ///
    /// [`Error::is_recovering`] when the calls are not listed in time or Redis does
    /// not answer (retry shortly).
    pub(super) async fn ready(&self, call_id: &str) -> Result<(), Error> {
        self.wait_for_adoption(call_id).await?;
        if !self.inner.recovering.load(Ordering::Acquire)
            || self.inner.memory.with_call(call_id, |_| Ok(())).is_ok()
        {
            return Ok(());
        }
        if self.is_listing() {
            let wait = self.inner.lifecycle.config.recovery_wait;
            if !self.wait_for_listing(wait).await {
                return Err(Error::recovering(call_id));
            }
        }
        self.load_if_pending(call_id).await
    }

    /// Loads `call_id` now if a recovery listed it and it is not loaded yet.
    async fn load_if_pending(&self, call_id: &str) -> Result<(), Error> {
        if !self.inner.any_pending.load(Ordering::Acquire) {
            return Ok(());
        }
        let Some(redis) = &self.inner.redis else {
            return Ok(());
        };
        if !self.inner.pending().calls.contains(call_id) {
            return Ok(());
        }
        let batch = [call_id.to_owned()];
        match redis.read_calls(&batch).await {
            Ok(part) => {
                let mut report = RecoveryReport::default();
                self.take(redis, &batch, part, &mut report);
                self.update_gauges();
                Ok(())
            }
            Err(e) => {
                tracing::debug!(call = %call_id, error = %Chain(&e), "loading a recovered call failed");
                // Past the rejoin grace its participants could not have kept their
                // places anyway: memory answers, as for a recovery that never ends.
                // A call pending with no recovery under way was adopted: it is held
                // here and will load.
                if self.is_recovering() || !self.recovery_under_way() {
                    Err(Error::recovering(call_id))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Recovers in the background, attempt after attempt (100 ms apart, doubling up to
    /// 2 s), until an attempt succeeds: Redis may be unreachable at start (restarted
    /// together with this service) and come back later. Meanwhile
    /// [`is_recovering`](Self::is_recovering) is true and a
    /// [`rejoin`](Self::rejoin) of a call not yet back waits for it briefly, then
    /// fails with [`Error::is_recovering`]. Does nothing without Redis or when a
    /// recovery is already under way or done. Must be called inside a Tokio runtime.
    pub fn recover_in_background(&self) {
        if self.inner.redis.is_none() {
            return;
        }
        // One background task for the hub's life; it may pick up where a failed
        // `recover` left off.
        if *self.inner.lifecycle.recovery.borrow() == Recovery::Done
            || self.inner.background.swap(true, Ordering::AcqRel)
        {
            return;
        }
        self.inner.lifecycle.recovery.send_if_modified(|state| {
            let idle = *state == Recovery::Idle;
            if idle {
                *state = Recovery::Running(Instant::now());
            }
            idle
        });
        self.inner.recovering.store(true, Ordering::Release);
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            for attempt in 1u32.. {
                let Some(inner) = weak.upgrade() else { return };
                let hub = CallHub { inner };
                match hub.recover().await {
                    Ok(_) => return,
                    Err(e) => tracing::warn!(
                        attempt,
                        retry_in_ms = backoff.as_millis() as u64,
                        error = %Chain(&e),
                        "recovering calls from redis failed; retrying"
                    ),
                }
                drop(hub);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
    }

    /// Whether a background recovery is under way (calls from before a restart may
    /// still come back, or are being loaded) and began less than
    /// [`rejoin_grace`](Self::rejoin_grace) ago. Past that, a participant of a call
    /// still to recover could not have kept its place anyway, and callers get what
    /// memory says (not found) instead of "retry" for ever — as with no Redis at all,
    /// where the recovery never ends. The recovery itself goes on.
    pub fn is_recovering(&self) -> bool {
        match *self.inner.lifecycle.recovery.borrow() {
            Recovery::Running(since) | Recovery::Loading(since) => {
                since.elapsed() < self.rejoin_grace()
            }
            Recovery::Idle | Recovery::Done => false,
        }
    }

    /// Whether a recovery has started and not finished (however long ago).
    fn recovery_under_way(&self) -> bool {
        matches!(
            *self.inner.lifecycle.recovery.borrow(),
            Recovery::Running(_) | Recovery::Loading(_)
        )
    }

    /// Loads the pending calls in the background, attempt after attempt (backing off
    /// like the recovery), until none is left: calls an adoption could not read. Must
    /// be called inside a Tokio runtime.
    pub(super) fn load_pending_in_background(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            loop {
                tokio::time::sleep(backoff).await;
                let Some(inner) = weak.upgrade() else { return };
                let hub = CallHub { inner };
                let Some(redis) = hub.inner.redis.clone() else {
                    return;
                };
                let ids: Vec<String> = hub.inner.pending().calls.iter().cloned().collect();
                if ids.is_empty() {
                    return;
                }
                let mut report = RecoveryReport::default();
                match redis
                    .read_calls_with(&ids, |batch, part| {
                        hub.take(&redis, batch, part, &mut report);
                    })
                    .await
                {
                    Ok(()) => {
                        hub.update_gauges();
                        tracing::info!(calls = report.calls.len(), "pending calls loaded");
                        return;
                    }
                    Err(e) => tracing::warn!(
                        calls = ids.len(),
                        retry_in_ms = backoff.as_millis() as u64,
                        error = %Chain(&e),
                        "loading pending calls failed; retrying"
                    ),
                }
                drop(hub);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
    }

    /// Whether callers should wait for a background recovery to list the calls: it
    /// has not yet, and began less than [`rejoin_grace`](Self::rejoin_grace) ago.
    pub(super) fn is_listing(&self) -> bool {
        match *self.inner.lifecycle.recovery.borrow() {
            Recovery::Running(since) => since.elapsed() < self.rejoin_grace(),
            Recovery::Idle | Recovery::Loading(_) | Recovery::Done => false,
        }
    }

    /// Waits up to `timeout` for a background recovery to list the calls; whether
    /// none is listing now.
    pub(super) async fn wait_for_listing(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.lifecycle.recovery.subscribe();
        let listed =
            tokio::time::timeout(timeout, rx.wait_for(|s| !matches!(s, Recovery::Running(_))))
                .await;
        matches!(listed, Ok(Ok(_))) || !self.is_listing()
    }

    /// Waits up to `timeout` for a background recovery to finish; whether none is under
    /// way now.
    pub async fn wait_for_recovery(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.lifecycle.recovery.subscribe();
        let done = tokio::time::timeout(
            timeout,
            rx.wait_for(|s| matches!(s, Recovery::Idle | Recovery::Done)),
        )
        .await;
        matches!(done, Ok(Ok(_))) || !self.is_recovering()
    }
}

/// The call a skipped entry names.
fn skipped_call(skipped: &Skipped) -> &str {
    match skipped {
        Skipped::Corrupt { call, .. } | Skipped::Foreign { call, .. } => call,
    }
}

impl Inner {
    pub(super) fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the calls a recovery's first step listed, but those in memory already.
    fn list_pending(&self, ids: Vec<String>) {
        let mut pending = self.pending();
        pending.listed = Some(Instant::now());
        pending.calls = ids
            .into_iter()
            .filter(|id| self.memory.with_call(id, |_| Ok(())).is_err())
            .collect();
        self.any_pending
            .store(!pending.calls.is_empty(), Ordering::Release);
    }

    /// Adds `ids` (held by this node in Redis, not read yet) to the calls still to
    /// load: loaded on first use, never ended by the write-back meanwhile.
    pub(super) fn pend(&self, ids: impl IntoIterator<Item = String>) {
        let mut pending = self.pending();
        pending.calls.extend(ids);
        self.any_pending.store(true, Ordering::Release);
        self.recovering.store(true, Ordering::Release);
    }

    /// Whether `call` is still to load.
    pub(super) fn is_pending(&self, call: &str) -> bool {
        self.any_pending.load(Ordering::Acquire) && self.pending().calls.contains(call)
    }

    /// Forgets the calls still to load (this process may not serve them any more).
    pub(super) fn drop_pending(&self) {
        let mut pending = self.pending();
        pending.calls.clear();
        self.any_pending.store(false, Ordering::Release);
    }

    /// Whether a recovery has completed in this process: every call this node owned in
    /// Redis was loaded, so a call in its set that memory lacks has ended here. Before
    /// that (never recovered, or still recovering), such a call may be one to recover.
    pub(super) fn recovered(&self) -> bool {
        *self.lifecycle.recovery.borrow() == Recovery::Done
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use prometheus_client::registry::Registry;
    use secureconnect_redis_fallback::{RedisClient, RedisClientConfig};

    use crate::redis_store::RecoveryReport;
    use crate::{CallHub, CallHubConfig, CallState, RedisCallStore, RedisCallStoreConfig};

    /// Whichever read of a pending call comes first takes it: a read that comes later
    /// (the background load, which read the call before it ended here) takes nothing.
    #[tokio::test]
    async fn a_call_is_taken_once_and_a_later_read_does_not_bring_it_back() {
        let mut registry = Registry::default();
        // No Redis is needed: nothing here sends a command that must succeed.
        let redis =
            RedisClient::new(RedisClientConfig::new("redis://127.0.0.1:1"), &mut registry).unwrap();
        let store = RedisCallStore::new(
            redis,
            "node-a",
            RedisCallStoreConfig::default(),
            &mut registry,
        )
        .unwrap();
        let hub = CallHub::new(
            "node-a",
            Some(store.clone()),
            CallHubConfig::default(),
            &mut registry,
        )
        .unwrap();
        hub.inner.list_pending(vec!["c".into(), "d".into()]);
        let read = || RecoveryReport {
            calls: vec![CallState {
                id: "c".into(),
                owner: "node-a".into(),
                epoch: 3,
                version: 1,
                created_at_ms: 0,
                participants: Default::default(),
            }],
            ..RecoveryReport::default()
        };
        let mut report = RecoveryReport::default();
        // An operation's read of "c".
        hub.take(&store, &["c".into()], read(), &mut report);
        assert_eq!(hub.get("c").map(|c| c.epoch), Some(3));
        hub.end("c").await.unwrap();
        // The background read of "c" and "d", made before "c" ended.
        hub.take(&store, &["c".into(), "d".into()], read(), &mut report);
        assert!(hub.get("c").is_none(), "an ended call came back");
        assert!(hub.inner.pending().calls.is_empty());
        assert_eq!(report.calls.len(), 1);
    }

    /// With no Redis to recover from (the embedded default), "recovering, retry" is
    /// answered for the rejoin grace only; then callers get what memory says.
    #[tokio::test]
    async fn an_endless_recovery_is_reported_for_the_grace_only() {
        let mut registry = Registry::default();
        // Nothing listens on port 1.
        let redis =
            RedisClient::new(RedisClientConfig::new("redis://127.0.0.1:1"), &mut registry).unwrap();
        let store = RedisCallStore::new(
            redis,
            "node-a",
            RedisCallStoreConfig::default(),
            &mut registry,
        )
        .unwrap();
        let grace = Duration::from_millis(300);
        let hub = CallHub::new(
            "node-a",
            Some(store),
            CallHubConfig::default().rejoin_grace(grace),
            &mut registry,
        )
        .unwrap();
        hub.recover_in_background();
        assert!(hub.is_recovering());
        assert!(!hub.wait_for_recovery(Duration::from_millis(50)).await);
        tokio::time::sleep(grace).await;
        assert!(!hub.is_recovering(), "past the grace");
        assert!(hub.wait_for_recovery(Duration::from_millis(50)).await);
        let token = crate::RejoinToken::generate();
        let e = hub.rejoin("c", "p", "u", &token).await.unwrap_err();
        assert!(e.is_not_found(), "{e:?}");
    }
}
