//! Keeping instances in step: announcements of ended sessions heard from the others,
//! and the opens and ends made here without Redis written to it once it answers.

use std::sync::Weak;
use std::time::Duration;

use secureconnect_redis_fallback::kv::KvSource;
use secureconnect_redis_fallback::pubsub::Subscription;
use secureconnect_redis_fallback::Health;

use super::{Inner, ENDED_CHANNEL, MAX_SID};
use crate::token::unix_now;

impl Inner {
    /// Tells the other instances that `sid` ended; best effort (they refuse it within
    /// [`CACHE_TTL`] anyway).
    pub(super) async fn announce(&self, sid: &str, expires: u64) {
        let payload = format!("{sid} {expires}");
        if let Err(e) = self.pubsub.publish(ENDED_CHANNEL, payload.as_bytes()).await {
            tracing::warn!(error = %crate::error::chain(&e), "cannot announce an ended session");
        }
    }

    /// Writes what was opened and ended here while Redis could not be reached.
    async fn write_pending(&self) {
        let (opened, ended) = self.local.pending(unix_now());
        for (sid, user, expires) in opened {
            if self.local.is_revoked(&sid, 0) {
                self.local.written(&sid, true);
                continue;
            }
            let ttl = Duration::from_secs(expires.saturating_sub(unix_now()).max(1));
            if !matches!(
                self.kv.set(&sid, user.as_bytes(), ttl).await,
                Ok(KvSource::Redis)
            ) {
                return;
            }
            self.local.written(&sid, true);
            if self.local.is_revoked(&sid, 0) {
                // Ended while it was being written: the end is deferred or done; make
                // sure the write did not bring it back.
                if !matches!(self.kv.delete(&sid).await, Ok(KvSource::Redis)) {
                    self.local.defer_end(&sid, expires);
                }
            }
        }
        for (sid, expires) in ended {
            if !matches!(self.kv.delete(&sid).await, Ok(KvSource::Redis)) {
                return;
            }
            self.local.written(&sid, false);
            self.announce(&sid, expires).await;
        }
    }
}

/// Parses an announcement: `<sid> <expires>`.
fn parse_announcement(payload: &[u8]) -> Option<(&str, u64)> {
    let text = std::str::from_utf8(payload).ok()?;
    let (sid, expires) = text.split_once(' ')?;
    if sid.is_empty() || sid.len() > MAX_SID {
        return None;
    }
    Some((sid, expires.parse().ok()?))
}

/// Revokes every session announced as ended.
pub(super) async fn listen(mut announcements: Subscription, store: Weak<Inner>) {
    while let Some(message) = announcements.recv().await {
        let Some(inner) = store.upgrade() else {
            return;
        };
        if let Some((sid, expires)) = parse_announcement(&message.payload) {
            inner.local.revoke(sid, expires);
            if message.via_redis {
                inner.metrics.heard.inc();
            }
        }
    }
}

/// Writes deferred changes whenever Redis is healthy and some wait; drops expired
/// revocations.
pub(super) async fn write_back(
    mut health: tokio::sync::watch::Receiver<Health>,
    store: Weak<Inner>,
) {
    loop {
        let Some(local) = store.upgrade().map(|inner| inner.local.clone()) else {
            return;
        };
        tokio::select! {
            () = local.pending_added() => {}
            changed = health.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        local.purge(unix_now());
        if *health.borrow_and_update() != Health::Healthy || !local.has_pending() {
            continue;
        }
        let Some(inner) = store.upgrade() else {
            return;
        };
        inner.write_pending().await;
    }
}

#[cfg(test)]
mod tests {
    use super::parse_announcement;

    #[test]
    fn announcements_are_parsed_strictly() {
        assert_eq!(parse_announcement(b"abc 17"), Some(("abc", 17)));
        assert_eq!(parse_announcement(b"abc"), None);
        assert_eq!(parse_announcement(b" 17"), None);
        assert_eq!(parse_announcement(b"abc x"), None);
        assert_eq!(parse_announcement(&[0xff, b' ', b'1']), None);
        let long = format!("{} 1", "s".repeat(200));
        assert_eq!(parse_announcement(long.as_bytes()), None);
    }
}
