//! The cost secureconnect-redis-fallback adds to a healthy Redis call, side by side with
//! raw redis-rs on the same server, and the time it takes to hand back a fallback
//! when Redis is down.
//!
//! ```text
//! cargo bench -p secureconnect-benches --bench redis_client
//! ```
//!
//! Needs `redis-server` on `PATH`: each run starts its own on a free loopback port.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use prometheus_client::registry::Registry;
use secureconnect_redis_fallback::kv::{FallbackKv, FallbackKvConfig};
use secureconnect_redis_fallback::rate_limit::{
    Policy, Quota, RateLimitMetrics, RateLimiter, RateLimiterConfig,
};
use secureconnect_redis_fallback::testing::RedisServer;
use secureconnect_redis_fallback::{Health, RedisClient, RedisClientConfig};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn healthy_call(c: &mut Criterion) {
    let rt = runtime();
    let server = RedisServer::start().unwrap();
    let (raw, ours) = rt.block_on(async {
        let raw = redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let ours = RedisClient::connect(
            RedisClientConfig::new(server.url()),
            &mut Registry::default(),
        )
        .await
        .unwrap();
        assert_eq!(ours.health(), Health::Healthy);
        ours.query::<()>(redis::cmd("SET").arg("bench").arg("value"))
            .await
            .unwrap();
        (raw, ours)
    });
    let get = {
        let mut cmd = redis::cmd("GET");
        cmd.arg("bench");
        cmd
    };

    let mut group = c.benchmark_group("redis_get_healthy");
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("redis_rs_multiplexed", |b| {
        b.to_async(&rt).iter(|| {
            let mut conn = raw.clone();
            let get = &get;
            async move { black_box(get.query_async::<Option<String>>(&mut conn).await.unwrap()) }
        })
    });
    group.bench_function("secureconnect_redis_fallback", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(ours.query::<Option<String>>(&get).await.unwrap()) })
    });
    group.finish();
}

fn degraded_fallback(c: &mut Criterion) {
    let rt = runtime();
    let mut server = RedisServer::start().unwrap();
    let mut registry = Registry::default();
    let (redis, limiter, kv) = rt.block_on(async {
        let redis = RedisClient::connect(RedisClientConfig::new(server.url()), &mut registry)
            .await
            .unwrap();
        let metrics = RateLimitMetrics::new(&mut registry);
        let limiter = RateLimiter::new(
            redis.clone(),
            RateLimiterConfig::new(
                "bench",
                Quota::new(1_000_000_000, Duration::from_secs(1)).unwrap(),
            )
            .policy(Policy::LocalApprox { instances: 2 }),
            &metrics,
        );
        let kv = FallbackKv::new(redis.clone(), FallbackKvConfig::new("bench").capacity(1024));
        (redis, limiter, kv)
    });
    server.kill().unwrap();
    rt.block_on(async {
        let _ = redis
            .query::<Option<String>>(redis::cmd("GET").arg("x"))
            .await;
        assert_eq!(redis.health(), Health::Degraded);
        kv.set("session", b"user", Duration::from_secs(3600))
            .await
            .unwrap();
    });
    let get = {
        let mut cmd = redis::cmd("GET");
        cmd.arg("bench");
        cmd
    };

    let mut group = c.benchmark_group("degraded");
    group.bench_function("call_returns_unavailable", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(redis.query::<Option<String>>(&get).await.unwrap_err()) })
    });
    group.bench_function("rate_limit_local_approx", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(limiter.check("user:1").await) })
    });
    group.bench_function("kv_get_local", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(kv.get("session").await.unwrap()) })
    });
    group.finish();
}

criterion_group!(benches, healthy_call, degraded_fallback);
criterion_main!(benches);
