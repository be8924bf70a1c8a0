//! Sessions: a token is good only while its session lives.
//!
//! Login opens a session (`sid` in the token) in Redis, under
//! `sc:kv:session:<sid>` with the token's lifetime; logout deletes it. Every service
//! checks the session of each authenticated request after the token's signature:
//!
//! 1. a session revoked here (ended by this process, or announced as ended by another
//!    instance) is refused, whatever Redis says;
//! 2. a verdict read from Redis less than [`CACHE_TTL`] ago is reused;
//! 3. otherwise Redis is asked: present is valid, absent is refused (`401
//!    session_ended`).
//!
//! Logout deletes the session in Redis, then announces it on the pub/sub channel
//! `sc:session:ended`: every instance that hears it refuses the session at once. An
//! instance that misses the message (at-most-once delivery, a subscriber connection
//! being re-established) refuses it at the latest when its cached verdict runs out,
//! [`CACHE_TTL`] after it was read, and the read began before the delete: so a logout
//! holds everywhere within a second of its answer, message or not.
//!
//! # Without Redis
//!
//! An instance that cannot reach Redis cannot tell a live session from an ended one.
//! It accepts tokens on their signature (counted in `session_checks_total{result=
//! "unverified"}`), except sessions it knows are ended: a logout made on an instance
//! (in the all-in-one binary: in the process) holds there at once, Redis or not. Opens
//! and ends made without Redis are kept ([`LocalSessions`]) and written to Redis as
//! soon as it answers again, so such a logout then reaches every instance, and a session
//! opened during the outage stays valid. A Redis that loses its data (restarted without
//! persistence, flushed) ends every session in it: users log in again.

mod memory;
mod sync;

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use secureconnect_redis_fallback::kv::{FallbackKv, FallbackKvConfig, KvSource};
use secureconnect_redis_fallback::pubsub::{FallbackPubSub, FallbackPubSubConfig};
use secureconnect_redis_fallback::RedisClient;
use tokio::task::JoinHandle;

use self::memory::Cached;
pub use self::memory::LocalSessions;
use crate::error::ApiError;
use crate::token::{unix_now, Claims};

/// How long a verdict read from Redis is reused: the longest a logout can take to hold
/// on an instance that missed its announcement (counted from the start of the read).
pub const CACHE_TTL: Duration = Duration::from_millis(500);

/// The pub/sub channel announcing ended sessions: `<sid> <expiry, Unix seconds>`.
pub const ENDED_CHANNEL: &str = "sc:session:ended";

/// A revocation is kept this long after its token expires (the verifier's leeway, and
/// clocks that disagree a little).
const EXPIRY_MARGIN: u64 = 60;

/// The longest session id an announcement may carry.
const MAX_SID: usize = 128;

/// What a session check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The session lives.
    Valid,
    /// The session ended (logged out), or Redis does not know it.
    Ended,
    /// Redis could not be asked and the session is not known here as ended: accepted on
    /// the token's signature.
    Unverified,
}

#[derive(Debug)]
struct Metrics {
    valid: Counter,
    ended: Counter,
    unverified: Counter,
    heard: Counter,
    deferred: Counter,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Self {
        let checks = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
        registry.register(
            "session_checks",
            "Session checks of authenticated requests, by result (unverified: Redis could not \
             be asked, the token was accepted on its signature)",
            checks.clone(),
        );
        let heard = Counter::default();
        registry.register(
            "session_revocations_heard",
            "Ended sessions announced through Redis pub/sub and heard here (own announcements included)",
            heard.clone(),
        );
        let deferred = Counter::default();
        registry.register(
            "session_writes_deferred",
            "Session opens and ends kept here until Redis answers again",
            deferred.clone(),
        );
        let result = |r| checks.get_or_create(&vec![("result", r)]).clone();
        Self {
            valid: result("valid"),
            ended: result("ended"),
            unverified: result("unverified"),
            heard,
            deferred,
        }
    }
}

/// Aborts a background task when the store goes.
#[derive(Debug)]
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug)]
struct Inner {
    kv: FallbackKv,
    pubsub: FallbackPubSub,
    local: LocalSessions,
    metrics: Metrics,
}

/// One service's view of the sessions (see the [module docs](self)). Cheap to clone.
#[derive(Clone, Debug)]
pub struct SessionStore {
    inner: Arc<Inner>,
    _tasks: Arc<[Task; 2]>,
}

impl SessionStore {
    /// A store on `redis`, sharing `local` with the other services of the process.
    /// Must be called inside a Tokio runtime: it listens for announcements and writes
    /// deferred changes in the background.
    pub fn new(redis: RedisClient, local: LocalSessions, registry: &mut Registry) -> Self {
        let pubsub = FallbackPubSub::new(redis.clone(), FallbackPubSubConfig::default());
        let announcements = pubsub.subscribe(ENDED_CHANNEL);
        let health = redis.subscribe();
        let inner = Arc::new(Inner {
            kv: FallbackKv::new(
                redis,
                FallbackKvConfig::new("session").capacity(memory::CAPACITY),
            ),
            pubsub,
            local,
            metrics: Metrics::register(registry),
        });
        let tasks = [
            Task(tokio::spawn(sync::listen(
                announcements,
                Arc::downgrade(&inner),
            ))),
            Task(tokio::spawn(sync::write_back(
                health,
                Arc::downgrade(&inner),
            ))),
        ];
        Self {
            inner,
            _tasks: Arc::new(tasks),
        }
    }

    /// Opens session `sid` of `user`, until `expires` (Unix seconds).
    ///
    /// # Errors
    ///
    /// 500 if Redis refuses the command (not when it is unavailable: the session is then
    /// kept here and written later).
    pub async fn open(&self, sid: &str, user: &str, expires: u64) -> Result<(), ApiError> {
        let ttl = Duration::from_secs(expires.saturating_sub(unix_now()).max(1));
        match self.inner.kv.set(sid, user.as_bytes(), ttl).await {
            Ok(KvSource::Redis) => Ok(()),
            Ok(KvSource::Local) => {
                self.inner.local.defer_open(sid, user, expires);
                self.inner.metrics.deferred.inc();
                Ok(())
            }
            Err(e) => Err(store_error(&e)),
        }
    }

    /// Ends the session of `claims`: refused here at once, everywhere within
    /// [`CACHE_TTL`] once Redis has it.
    ///
    /// # Errors
    ///
    /// 500 if Redis refuses the command; the session is refused here all the same.
    pub async fn end(&self, claims: &Claims) -> Result<(), ApiError> {
        let expires = claims.exp.saturating_add(EXPIRY_MARGIN);
        self.inner.local.revoke(&claims.sid, expires);
        match self.inner.kv.delete(&claims.sid).await {
            Ok(KvSource::Redis) => {
                self.inner.announce(&claims.sid, expires).await;
                Ok(())
            }
            Ok(KvSource::Local) => {
                self.inner.local.defer_end(&claims.sid, expires);
                self.inner.metrics.deferred.inc();
                Ok(())
            }
            Err(e) => Err(store_error(&e)),
        }
    }

    /// Whether the session of `claims` lives (see the [module docs](self)).
    ///
    /// # Errors
    ///
    /// 500 if Redis refuses the command (a key of another type).
    pub async fn check(&self, claims: &Claims) -> Result<Verdict, ApiError> {
        let verdict = self.inner.check(claims).await?;
        let metrics = &self.inner.metrics;
        match verdict {
            Verdict::Valid => metrics.valid.inc(),
            Verdict::Ended => metrics.ended.inc(),
            Verdict::Unverified => metrics.unverified.inc(),
        };
        Ok(verdict)
    }

    /// [`check`](Self::check) as a request sees it: `401 session_ended` for an ended
    /// session.
    ///
    /// # Errors
    ///
    /// 401 `session_ended`, or 500 as [`check`](Self::check).
    pub async fn require(&self, claims: &Claims) -> Result<(), ApiError> {
        match self.check(claims).await? {
            Verdict::Valid | Verdict::Unverified => Ok(()),
            Verdict::Ended => Err(ended()),
        }
    }
}

/// The answer to a token whose session ended.
pub fn ended() -> ApiError {
    ApiError::unauthorized(
        "session_ended",
        "this session has ended (logged out): log in again",
    )
}

fn store_error(e: &secureconnect_redis_fallback::Error) -> ApiError {
    ApiError::internal(format!("session store: {}", crate::error::chain(e)))
}

impl Inner {
    async fn check(&self, claims: &Claims) -> Result<Verdict, ApiError> {
        let sid = claims.sid.as_str();
        let started = Instant::now();
        {
            let state = self.local.lock();
            if state.revoked.get(sid, unix_now()).is_some() {
                return Ok(Verdict::Ended);
            }
            match state.cache.get(sid, started) {
                Some(Cached::Valid) => return Ok(Verdict::Valid),
                Some(Cached::Absent) => return Ok(Verdict::Ended),
                None => {}
            }
        }
        let (value, source) = self
            .kv
            .get_with_source(sid)
            .await
            .map_err(|e| store_error(&e))?;
        let found = value.is_some_and(|user| user == claims.sub.as_bytes());
        let now = unix_now();
        let mut state = self.local.lock();
        if state.revoked.get(sid, now).is_some() {
            // Ended while Redis was being asked.
            return Ok(Verdict::Ended);
        }
        let opened_here = state
            .opened
            .get(sid, now)
            .is_some_and(|user| *user == claims.sub);
        Ok(match source {
            // Not in Redis yet: opened here without Redis, and about to be written.
            KvSource::Redis if !found && opened_here => Verdict::Valid,
            KvSource::Redis => {
                let verdict = if found { Cached::Valid } else { Cached::Absent };
                state
                    .cache
                    .insert(sid, verdict, started + CACHE_TTL, Instant::now());
                if found {
                    Verdict::Valid
                } else {
                    Verdict::Ended
                }
            }
            KvSource::Local if found || opened_here => Verdict::Valid,
            KvSource::Local => Verdict::Unverified,
        })
    }
}
