//! Recovery of the calls this node owned before a restart: one attempt
//! ([`CallHub::recover`]) or attempts in the background until one succeeds
//! ([`CallHub::recover_in_background`]), for when Redis is unreachable at start.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{CallHub, Inner};
use crate::error::{Chain, Error};
use crate::model::ParticipantState;
use crate::redis_store::RecoveryReport;

/// The first pause between two recovery attempts; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Where the hub's recovery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Recovery {
    /// None was started.
    Idle,
    /// Attempts in the background, since then, until one succeeds.
    Running(Instant),
    /// Done: every call this node owned is in memory.
    Done,
}

impl CallHub {
    /// Loads the calls this node owned before a restart, every participant awaiting
    /// rejoin (and removed if it does not rejoin within
    /// [`rejoin_grace`](Self::rejoin_grace)). One attempt; without Redis there is
    /// nothing to recover. [`recover_in_background`](Self::recover_in_background)
    /// retries until it succeeds.
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
        // A call this hub has in memory already (made here while the recovery was
        // retried) is the current one: it is neither replaced nor marked awaiting.
        let mut recovered = Vec::new();
        for call in &report.calls {
            let mut call = call.clone();
            for p in call.participants.values_mut() {
                p.state = ParticipantState::AwaitingRejoin;
            }
            let keys: Vec<(String, String)> = call
                .participants
                .keys()
                .map(|p| (call.id.clone(), p.clone()))
                .collect();
            if self.inner.memory.insert_if_absent(call) {
                recovered.extend(keys);
            }
        }
        {
            let mut awaiting = self.inner.awaiting();
            for key in recovered {
                awaiting.insert(key, now);
            }
        }
        self.inner.lifecycle.recovery.send_replace(Recovery::Done);
        self.inner.metrics.recovered(&report);
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
        let started = self.inner.lifecycle.recovery.send_if_modified(|state| {
            let idle = *state == Recovery::Idle;
            if idle {
                *state = Recovery::Running(Instant::now());
            }
            idle
        });
        if !started {
            return;
        }
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

    /// Whether callers should be told to wait for a background recovery: one is under
    /// way (calls from before a restart may still come back) and began less than
    /// [`rejoin_grace`](Self::rejoin_grace) ago. Past that, a participant of a call
    /// still to recover could not have kept its place anyway, and callers get what
    /// memory says (not found) instead of "retry" for ever — as with no Redis at all,
    /// where the recovery never ends. The recovery itself goes on.
    pub fn is_recovering(&self) -> bool {
        match *self.inner.lifecycle.recovery.borrow() {
            Recovery::Running(since) => since.elapsed() < self.rejoin_grace(),
            Recovery::Idle | Recovery::Done => false,
        }
    }

    /// Waits up to `timeout` for a background recovery to finish; whether none is under
    /// way now.
    pub async fn wait_for_recovery(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.lifecycle.recovery.subscribe();
        let done =
            tokio::time::timeout(timeout, rx.wait_for(|s| !matches!(s, Recovery::Running(_))))
                .await;
        matches!(done, Ok(Ok(_))) || !self.is_recovering()
    }
}

impl Inner {
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

    use crate::{CallHub, CallHubConfig, RedisCallStore, RedisCallStoreConfig};

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
