//! The rate limiter against a real redis-server: one shared limit across instances
//! while Redis is up, each policy while it is killed, and the tower layer over TCP.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use secureconnect_redis_fallback::rate_limit::{
    Policy, Quota, RateLimitLayer, RateLimitMetrics, RateLimiter, RateLimiterConfig, Source,
};
use secureconnect_redis_fallback::testing::RedisServer;
use secureconnect_redis_fallback::{Health, RedisClient, RedisClientConfig};

/// One service instance: its own client, registry and limiter.
struct Instance {
    redis: RedisClient,
    limiter: RateLimiter,
    registry: Registry,
}

async fn instance(url: &str, policy: Policy, limit: u32) -> Instance {
    let mut registry = Registry::default();
    let redis = RedisClient::connect(RedisClientConfig::new(url), &mut registry)
        .await
        .unwrap();
    let metrics = RateLimitMetrics::new(&mut registry);
    let limiter = RateLimiter::new(
        redis.clone(),
        RateLimiterConfig::new("login", Quota::new(limit, Duration::from_secs(60)).unwrap())
            .policy(policy),
        &metrics,
    );
    Instance {
        redis,
        limiter,
        registry,
    }
}

fn exposition(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

#[tokio::test]
async fn two_instances_share_one_limit_through_redis() {
    let server = RedisServer::start().unwrap();
    let policy = Policy::LocalApprox { instances: 2 };
    let a = instance(&server.url(), policy, 10).await;
    let b = instance(&server.url(), policy, 10).await;
    let mut allowed = 0;
    for i in 0..30 {
        let limiter = if i % 2 == 0 { &a.limiter } else { &b.limiter };
        let d = limiter.check("user:1").await;
        assert_eq!(d.source, Source::Redis);
        if d.allowed {
            allowed += 1;
        } else {
            assert!(d.retry_after > Duration::ZERO && d.retry_after <= Duration::from_secs(6));
        }
    }
    assert_eq!(allowed, 10, "exactly the limit across both instances");
    // Another key has its own budget.
    assert!(a.limiter.check("user:2").await.allowed);
    let text = exposition(&a.registry);
    assert!(
        text.contains(
            "rate_limit_decisions_total{limiter=\"login\",source=\"redis\",decision=\"allowed\"}"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn each_policy_does_what_it_says_while_redis_is_killed() {
    let mut server = RedisServer::start().unwrap();
    let open = instance(&server.url(), Policy::FailOpen, 10).await;
    let closed = instance(&server.url(), Policy::FailClosed, 10).await;
    let local_a = instance(&server.url(), Policy::LocalApprox { instances: 2 }, 10).await;
    let local_b = instance(&server.url(), Policy::LocalApprox { instances: 2 }, 10).await;
    // Use part of the shared budget while Redis is up.
    for _ in 0..4 {
        assert!(local_a.limiter.check("user:9").await.allowed);
    }

    server.kill().unwrap();
    let mut open_allowed = 0;
    let mut closed_allowed = 0;
    let mut local_allowed = 0;
    for _ in 0..20 {
        let d = open.limiter.check("user:9").await;
        if d.allowed {
            open_allowed += 1;
        }
        let d = closed.limiter.check("user:9").await;
        if d.allowed {
            closed_allowed += 1;
        } else {
            assert_eq!(d.retry_after, Duration::from_secs(1));
        }
        for limiter in [&local_a.limiter, &local_b.limiter] {
            let d = limiter.check("user:9").await;
            assert_eq!(d.source, Source::Local);
            if d.allowed {
                local_allowed += 1;
            }
        }
    }
    assert_eq!(open_allowed, 20, "fail-open allows everything");
    assert_eq!(closed_allowed, 0, "fail-closed refuses everything");
    assert_eq!(local_allowed, 10, "limit ÷ instances each: 5 + 5");
    assert_eq!(open.limiter.check("x").await.source, Source::FailOpen);
    assert_eq!(closed.limiter.check("x").await.source, Source::FailClosed);
    let text = exposition(&local_a.registry);
    assert!(
        text.contains("redis_fallback_total{primitive=\"rate_limiter\",policy=\"local_approx\"}"),
        "{text}"
    );
    assert!(text.contains("redis_up 0"), "{text}");

    // Redis back: decisions are shared again, and local counts are not carried over.
    server.restart().unwrap();
    assert!(
        local_a
            .redis
            .wait_for(Health::Healthy, Duration::from_secs(3))
            .await
    );
    let d = local_a.limiter.check("user:9").await;
    assert_eq!(d.source, Source::Redis);
    assert!(d.allowed, "a fresh Redis has a fresh budget");
}

#[tokio::test]
async fn layer_answers_429_with_retry_after_over_tcp() {
    let server = RedisServer::start().unwrap();
    let node = instance(&server.url(), Policy::FailClosed, 2).await;
    let app = Router::new()
        .route("/login", get(|| async { "welcome" }))
        .layer(RateLimitLayer::new(
            node.limiter.clone(),
            |req: &http::request::Parts| {
                req.headers
                    .get("x-client")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let client = reqwest::Client::new();
    let call = |who: &'static str| {
        client
            .get(format!("http://{addr}/login"))
            .header("x-client", who)
            .send()
    };
    assert_eq!(call("a").await.unwrap().status(), 200);
    assert_eq!(call("a").await.unwrap().status(), 200);
    let refused = call("a").await.unwrap();
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    assert_eq!(refused.headers()["x-ratelimit-source"], "redis");
    assert_eq!(
        call("b").await.unwrap().status(),
        200,
        "other keys are not affected"
    );
    // No key: not limited.
    for _ in 0..5 {
        let r = client
            .get(format!("http://{addr}/login"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test]
async fn an_acl_refusing_scripts_makes_each_check_fall_back_and_the_client_stays_healthy() {
    let mut server = RedisServer::start().unwrap();
    let created = server
        .command(&[
            "ACL",
            "SETUSER",
            "limited",
            "on",
            ">pw",
            "~*",
            "&*",
            "+@all",
            "-@scripting",
        ])
        .unwrap();
    assert!(!created.is_error(), "{created:?}");
    let url = format!("redis://limited:pw@127.0.0.1:{}/", server.port());
    let node = instance(&url, Policy::FailClosed, 10).await;
    assert_eq!(node.redis.health(), Health::Healthy);
    for _ in 0..20 {
        let d = node.limiter.check("user:1").await;
        assert_eq!(
            d.source,
            Source::FailClosed,
            "NOPERM: this call takes the policy"
        );
    }
    assert_eq!(
        node.redis.health(),
        Health::Healthy,
        "NOPERM is not a health signal"
    );
    assert!(!node.redis.writes_refused());
    let value: Option<String> = node.redis.query(redis::cmd("GET").arg("k")).await.unwrap();
    assert_eq!(value, None, "other commands go on");
    // A key the ACL forbids: the caller's error, still no health signal.
    server
        .command(&["ACL", "SETUSER", "limited", "resetkeys", "~allowed:*"])
        .unwrap();
    let e = node
        .redis
        .query::<Option<String>>(redis::cmd("GET").arg("forbidden"))
        .await
        .unwrap_err();
    assert!(e.is_permission_denied(), "{e}");
    assert!(!e.is_unavailable());
    assert_eq!(node.redis.health(), Health::Healthy);
    let text = exposition(&node.registry);
    assert!(text.contains("redis_up 1"), "{text}");
    // Scripts allowed again: the limiter decides in Redis again, nothing restarted.
    server
        .command(&["ACL", "SETUSER", "limited", "~*", "+@scripting"])
        .unwrap();
    assert_eq!(node.limiter.check("allowed:1").await.source, Source::Redis);
}
