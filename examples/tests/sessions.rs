//! Session checks as two instances see them, against a real redis-server that is paused:
//! an announced logout, a lost announcement, and what holds without Redis.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use prometheus_client::registry::Registry;
use secureconnect_examples::sessions::{LocalSessions, SessionStore, Verdict, CACHE_TTL};
use secureconnect_examples::token::{unix_now, Claims};
use secureconnect_redis_fallback::testing::RedisServer;
use secureconnect_redis_fallback::{Health, RedisClient, RedisClientConfig};
use secureconnect_testkit::exposition::sample;

/// One service instance: its Redis client, its store, its registry.
struct Instance {
    redis: RedisClient,
    store: SessionStore,
    registry: Registry,
}

impl Instance {
    async fn start(url: &str, local: &LocalSessions) -> Self {
        let mut registry = Registry::default();
        let redis = RedisClient::connect(RedisClientConfig::new(url), &mut registry)
            .await
            .unwrap();
        assert_eq!(redis.health(), Health::Healthy);
        let store = SessionStore::new(redis.clone(), local.clone(), &mut registry);
        Self {
            redis,
            store,
            registry,
        }
    }

    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        sample(&text, name, labels).unwrap_or(0.0)
    }

    async fn check(&self, claims: &Claims) -> Verdict {
        self.store.check(claims).await.unwrap()
    }

    /// Polls `check` every 50 ms for up to 5 s until it gives `want`.
    async fn eventually(&self, claims: &Claims, want: Verdict) -> bool {
        for _ in 0..100 {
            if self.check(claims).await == want {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

fn claims(sid: &str) -> Claims {
    let now = unix_now();
    Claims {
        sub: "u-1".into(),
        sid: sid.into(),
        iat: now,
        exp: now + 900,
    }
}

#[tokio::test]
async fn a_logout_is_announced_and_a_lost_announcement_is_caught_by_the_cache_ttl() {
    let mut redis = RedisServer::start().unwrap();
    let a = Instance::start(&redis.url(), &LocalSessions::new()).await;
    let b = Instance::start(&redis.url(), &LocalSessions::new()).await;

    let s1 = claims("s1");
    a.store.open("s1", "u-1", s1.exp).await.unwrap();
    assert_eq!(b.check(&s1).await, Verdict::Valid, "B reads A's session");
    let other_user = Claims {
        sub: "u-2".into(),
        ..claims("s1")
    };
    assert_eq!(
        a.check(&other_user).await,
        Verdict::Ended,
        "a session is its user's only"
    );

    // Announced: B hears it and refuses the session, cache or not.
    a.store.end(&s1).await.unwrap();
    assert_eq!(a.check(&s1).await, Verdict::Ended, "at once where it ended");
    let mut heard = false;
    for _ in 0..100 {
        if b.metric("session_revocations_heard_total", &[]) >= 1.0 {
            heard = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(heard, "B heard the announcement through Redis");
    assert_eq!(b.check(&s1).await, Verdict::Ended);

    // Lost: the session goes from Redis without an announcement; B's cached verdict
    // runs out within CACHE_TTL of its read.
    let s2 = claims("s2");
    a.store.open("s2", "u-1", s2.exp).await.unwrap();
    assert_eq!(b.check(&s2).await, Verdict::Valid);
    redis.command(&["DEL", "sc:kv:session:s2"]).unwrap();
    tokio::time::sleep(CACHE_TTL + Duration::from_millis(100)).await;
    assert_eq!(
        b.check(&s2).await,
        Verdict::Ended,
        "no verdict outlives CACHE_TTL"
    );
    assert!(b.metric("session_checks_total", &[("result", "ended")]) >= 2.0);

    // A session Redis never had (lost with its data) is ended too.
    assert_eq!(b.check(&claims("never")).await, Verdict::Ended);
}

#[tokio::test]
async fn without_redis_revocations_made_here_hold_and_reach_the_others_when_it_returns() {
    let redis = RedisServer::start().unwrap();
    let here = LocalSessions::new();
    // Two services of one process (they share what the process knows), and another
    // instance.
    let a = Instance::start(&redis.url(), &here).await;
    let a2 = Instance::start(&redis.url(), &here).await;
    let b = Instance::start(&redis.url(), &LocalSessions::new()).await;

    let before = claims("before");
    a.store.open("before", "u-1", before.exp).await.unwrap();
    assert_eq!(b.check(&before).await, Verdict::Valid);

    redis.pause().unwrap();
    tokio::time::sleep(CACHE_TTL + Duration::from_millis(100)).await;
    assert_eq!(
        a.check(&before).await,
        Verdict::Unverified,
        "without Redis a session cannot be verified: accepted on the signature"
    );
    a.store.end(&before).await.unwrap();
    assert_eq!(
        a.check(&before).await,
        Verdict::Ended,
        "held where it ended"
    );
    assert_eq!(
        a2.check(&before).await,
        Verdict::Ended,
        "and in its process"
    );
    assert_eq!(
        b.check(&before).await,
        Verdict::Unverified,
        "another instance cannot know yet"
    );
    let during = claims("during");
    a.store.open("during", "u-1", during.exp).await.unwrap();
    assert_eq!(a.check(&during).await, Verdict::Valid);
    assert!(a.metric("session_writes_deferred_total", &[]) >= 2.0);
    assert!(b.metric("session_checks_total", &[("result", "unverified")]) >= 1.0);

    redis.resume().unwrap();
    assert!(
        a.redis
            .wait_for(Health::Healthy, Duration::from_secs(10))
            .await
    );
    assert!(
        b.redis
            .wait_for(Health::Healthy, Duration::from_secs(10))
            .await
    );
    assert!(
        b.eventually(&before, Verdict::Ended).await,
        "the logout made without Redis reached B once Redis answered"
    );
    assert!(
        b.eventually(&during, Verdict::Valid).await,
        "the session opened without Redis was written to it"
    );
    assert_eq!(a.check(&before).await, Verdict::Ended);
    assert_eq!(a.check(&during).await, Verdict::Valid);
}
