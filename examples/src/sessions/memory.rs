//! [`LocalSessions`]: what one process knows about sessions without asking Redis.
//!
//! - revocations it made or heard of, kept until the token they revoke expires: they
//!   hold whatever Redis says (or cannot say);
//! - verdicts read from Redis, kept [`CACHE_TTL`](super::CACHE_TTL) at most;
//! - sessions opened and ended while Redis could not be reached, waiting to be written
//!   to Redis when it answers again.
//!
//! Everything is bounded: each map holds at most [`CAPACITY`] entries and makes room by
//! dropping the entry that expires first. One lock guards it all, held for a map
//! operation and never across an await.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::Notify;

/// At most this many entries in each of the maps.
pub(super) const CAPACITY: usize = 100_000;

/// A bounded map whose entries expire at a Unix time (in seconds); full, it drops the
/// entry that expires first.
#[derive(Debug)]
pub(super) struct ExpiryMap<V> {
    entries: HashMap<String, (V, u64)>,
    by_expiry: BTreeSet<(u64, String)>,
    capacity: usize,
}

impl<V> ExpiryMap<V> {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            by_expiry: BTreeSet::new(),
            capacity: capacity.max(1),
        }
    }

    pub(super) fn insert(&mut self, key: &str, value: V, expires: u64) {
        self.remove(key);
        while self.entries.len() >= self.capacity {
            let Some((_, first)) = self.by_expiry.pop_first() else {
                break;
            };
            self.entries.remove(&first);
        }
        self.entries.insert(key.to_owned(), (value, expires));
        self.by_expiry.insert((expires, key.to_owned()));
    }

    pub(super) fn remove(&mut self, key: &str) -> Option<(V, u64)> {
        let removed = self.entries.remove(key)?;
        self.by_expiry.remove(&(removed.1, key.to_owned()));
        Some(removed)
    }

    /// The live entry of `key`, if any (`now` in Unix seconds).
    pub(super) fn get(&self, key: &str, now: u64) -> Option<&V> {
        self.entries
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map(|(value, _)| value)
    }

    /// Drops the entries that expired by `now`.
    pub(super) fn purge(&mut self, now: u64) {
        while let Some((expires, key)) = self.by_expiry.first() {
            if *expires > now {
                break;
            }
            let key = key.clone();
            self.remove(&key);
        }
    }

    /// Every entry, live or not.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &V, u64)> {
        self.entries
            .iter()
            .map(|(key, (value, expires))| (key.as_str(), value, *expires))
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// A verdict read from Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cached {
    /// The session exists and belongs to the token's user.
    Valid,
    /// Redis does not have the session.
    Absent,
}

/// Verdicts read from Redis, each until an instant at most `CACHE_TTL` after the read
/// began.
#[derive(Debug, Default)]
pub(super) struct Cache {
    entries: HashMap<String, (Cached, Instant)>,
}

impl Cache {
    pub(super) fn get(&self, sid: &str, now: Instant) -> Option<Cached> {
        self.entries
            .get(sid)
            .filter(|(_, until)| *until > now)
            .map(|(verdict, _)| *verdict)
    }

    pub(super) fn insert(&mut self, sid: &str, verdict: Cached, until: Instant, now: Instant) {
        if self.entries.len() >= CAPACITY {
            self.entries.retain(|_, (_, u)| *u > now);
            if self.entries.len() >= CAPACITY {
                // Only a cache: forgetting it costs a Redis read per session.
                self.entries.clear();
            }
        }
        self.entries.insert(sid.to_owned(), (verdict, until));
    }

    pub(super) fn remove(&mut self, sid: &str) {
        self.entries.remove(sid);
    }
}

/// The maps behind the lock.
#[derive(Debug)]
pub(super) struct State {
    /// Sessions ended here or heard of as ended: session id → token expiry.
    pub(super) revoked: ExpiryMap<()>,
    /// Verdicts read from Redis.
    pub(super) cache: Cache,
    /// Sessions opened while Redis could not be reached: session id → user id.
    pub(super) opened: ExpiryMap<String>,
    /// Sessions ended while Redis could not be reached.
    pub(super) ended: ExpiryMap<()>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// Something was added to `opened` or `ended`.
    pending: Notify,
}

/// What one process knows about sessions: revocations it made or heard of, verdicts
/// read from Redis, and changes waiting for Redis to answer again; shared by the
/// [`SessionStore`](super::SessionStore)s of the services a process runs, so that in the
/// all-in-one binary a logout holds in all four at once, with or without Redis. Cheap
/// to clone.
#[derive(Clone, Debug)]
pub struct LocalSessions {
    inner: Arc<Inner>,
}

impl Default for LocalSessions {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    revoked: ExpiryMap::new(CAPACITY),
                    cache: Cache::default(),
                    opened: ExpiryMap::new(CAPACITY),
                    ended: ExpiryMap::new(CAPACITY),
                }),
                pending: Notify::new(),
            }),
        }
    }
}

impl LocalSessions {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Session `sid` has ended: refused here until `expires`.
    pub(super) fn revoke(&self, sid: &str, expires: u64) {
        let mut state = self.lock();
        state.revoked.insert(sid, (), expires);
        state.cache.remove(sid);
        state.opened.remove(sid);
    }

    /// Session `sid` of `user` was opened without Redis: write it there later.
    pub(super) fn defer_open(&self, sid: &str, user: &str, expires: u64) {
        self.lock().opened.insert(sid, user.to_owned(), expires);
        self.inner.pending.notify_one();
    }

    /// Session `sid` was ended without Redis: delete it there later.
    pub(super) fn defer_end(&self, sid: &str, expires: u64) {
        self.lock().ended.insert(sid, (), expires);
        self.inner.pending.notify_one();
    }

    /// Whether writes wait for Redis.
    pub(super) fn has_pending(&self) -> bool {
        let state = self.lock();
        state.opened.len() + state.ended.len() > 0
    }

    /// Completes when a write is deferred.
    pub(super) async fn pending_added(&self) {
        self.inner.pending.notified().await;
    }

    /// The deferred writes, expired ones dropped: `(opened (sid, user, expires), ended
    /// (sid, expires))`. They stay deferred until [`written`](Self::written) says
    /// otherwise, so that a check meanwhile still finds a session opened here.
    #[allow(clippy::type_complexity)]
    pub(super) fn pending(&self, now: u64) -> (Vec<(String, String, u64)>, Vec<(String, u64)>) {
        let mut state = self.lock();
        state.opened.purge(now);
        state.ended.purge(now);
        let opened = state
            .opened
            .iter()
            .map(|(sid, user, expires)| (sid.to_owned(), user.clone(), expires))
            .collect();
        let ended = state
            .ended
            .iter()
            .map(|(sid, (), expires)| (sid.to_owned(), expires))
            .collect();
        (opened, ended)
    }

    /// The deferred open or end of `sid` is in Redis now.
    pub(super) fn written(&self, sid: &str, open: bool) {
        let mut state = self.lock();
        if open {
            state.opened.remove(sid);
        } else {
            state.ended.remove(sid);
        }
    }

    /// Whether `sid` was revoked here (or heard of as revoked).
    pub(super) fn is_revoked(&self, sid: &str, now: u64) -> bool {
        self.lock().revoked.get(sid, now).is_some()
    }

    /// Drops expired revocations (they no longer matter: their tokens are refused as
    /// expired).
    pub(super) fn purge(&self, now: u64) {
        let mut state = self.lock();
        state.revoked.purge(now);
        state.opened.purge(now);
        state.ended.purge(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_map_is_bounded_and_drops_the_first_to_expire() {
        let mut map = ExpiryMap::new(3);
        map.insert("a", (), 30);
        map.insert("b", (), 10);
        map.insert("c", (), 20);
        map.insert("d", (), 40);
        assert_eq!(map.len(), 3);
        assert!(map.get("b", 0).is_none(), "b expired first and made room");
        assert!(map.get("a", 0).is_some() && map.get("d", 0).is_some());
        assert!(map.get("c", 20).is_none(), "expired at 20");
        map.purge(25);
        assert_eq!(map.len(), 2);
        map.insert("a", (), 5);
        map.purge(6);
        assert_eq!(
            map.len(),
            1,
            "a re-inserted with an earlier expiry is purged"
        );
    }

    #[test]
    fn a_revocation_cancels_a_deferred_open_and_outlives_the_cache() {
        let local = LocalSessions::new();
        let now = Instant::now();
        local.defer_open("s1", "u1", 100);
        {
            let mut state = local.lock();
            state.cache.insert(
                "s1",
                Cached::Valid,
                now + std::time::Duration::from_secs(1),
                now,
            );
        }
        local.revoke("s1", 100);
        let state = local.lock();
        assert!(state.revoked.get("s1", 50).is_some());
        assert_eq!(state.cache.get("s1", now), None);
        assert_eq!(state.opened.len(), 0);
    }
}
