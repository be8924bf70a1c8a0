//! The client on a real Redis Cluster (3 masters, 3 replicas): keys, scripts and
//! pipelines across slots; a master SIGKILLed or SIGSTOPped under load fails only its
//! own slots, each call within its deadline, and the promoted replica takes them over.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{connect, eventually, Load, SETUP};
use prometheus_client::registry::Registry;
use redis::Value;
use secureconnect_redis_fallback::cluster::key_slot;
use secureconnect_redis_fallback::pubsub::{FallbackPubSub, FallbackPubSubConfig};
use secureconnect_redis_fallback::rate_limit::{
    Quota, RateLimitMetrics, RateLimiter, RateLimiterConfig, Source,
};
use secureconnect_redis_fallback::testing::RedisCluster;
use secureconnect_redis_fallback::{Health, RedisClient, RedisClientConfig};

fn block<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// 60 keys, and the index of the master serving each.
fn keys_by_master(cluster: &mut RedisCluster) -> Vec<(String, usize)> {
    (0..60)
        .map(|i| {
            let key = format!("load:{i}");
            let master = cluster.master_of(&key).unwrap();
            (key, master)
        })
        .collect()
}

async fn set(
    redis: &RedisClient,
    key: &str,
    value: &str,
) -> Result<(), secureconnect_redis_fallback::Error> {
    redis
        .query::<()>(redis::cmd("SET").arg(key).arg(value))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_scripts_and_pipelines_across_slots_work_on_a_cluster() {
    let cluster = block(RedisCluster::start).unwrap();
    let redis = connect(RedisClientConfig::cluster(cluster.urls())).await;
    assert_eq!(redis.slots_down(), 0);
    for i in 0..50 {
        set(&redis, &format!("k:{i}"), &format!("v:{i}"))
            .await
            .unwrap();
    }
    // A pipeline across slots (and so across masters): replies come back in order.
    let mut pipe = redis::pipe();
    for i in 0..50 {
        pipe.cmd("GET").arg(format!("k:{i}"));
    }
    pipe.cmd("SET").arg("k:new").arg("x").ignore();
    pipe.cmd("GET").arg("k:new");
    let values: Vec<String> = redis.query_pipeline(&pipe).await.unwrap();
    let mut expected: Vec<String> = (0..50).map(|i| format!("v:{i}")).collect();
    expected.push("x".into());
    assert_eq!(values, expected);
    let slots: std::collections::HashSet<u16> = (0..50)
        .map(|i| key_slot(format!("k:{i}").as_bytes()))
        .collect();
    assert!(slots.len() > 40, "the keys span many slots");

    // A script on keys of one hash tag, loaded on the master that needs it.
    let script = redis::Script::new(
        "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[2])",
    );
    let mut invocation = script.prepare_invoke();
    invocation.key("{tag}:a").key("{tag}:b").arg("1");
    let value: Option<String> = redis.invoke_script(&invocation).await.unwrap();
    assert_eq!(value, None);

    // A transaction of one slot.
    let mut tx = redis::pipe();
    tx.atomic()
        .cmd("INCR")
        .arg("{t}:n")
        .cmd("INCR")
        .arg("{t}:n");
    let (a, b): (i64, i64) = redis.query_pipeline(&tx).await.unwrap();
    assert_eq!((a, b), (1, 2));
    // A cross-slot script is the caller's error, not a health signal.
    let e = redis
        .query::<Value>(redis::cmd("EVAL").arg("return 1").arg(2).arg("a").arg("b"))
        .await
        .unwrap_err();
    assert!(e.is_command_error(), "{e}");
    assert_eq!(redis.health(), Health::Healthy);

    // The rate limiter: one key per slot, decided in Redis on every master.
    let metrics = RateLimitMetrics::new(&mut Registry::default());
    let limiter = RateLimiter::new(
        redis.clone(),
        RateLimiterConfig::new("api", Quota::new(2, Duration::from_secs(60)).unwrap()),
        &metrics,
    );
    for i in 0..30 {
        let key = format!("user-{i}");
        for expected in [true, true, false] {
            let d = limiter.check(&key).await;
            assert_eq!((d.source, d.allowed), (Source::Redis, expected), "{key}");
        }
    }

    // Pub/sub across the cluster: published through one node, received on another.
    let other = connect(RedisClientConfig::cluster(cluster.urls())).await;
    let (a, b) = (
        FallbackPubSub::new(redis.clone(), FallbackPubSubConfig::default()),
        FallbackPubSub::new(other, FallbackPubSubConfig::default()),
    );
    let mut room = a.subscribe("room:cluster");
    let deadline = Instant::now() + SETUP;
    let mut received = false;
    while !received && Instant::now() < deadline {
        b.publish("room:cluster", b"hi").await.unwrap();
        received = matches!(
            tokio::time::timeout(Duration::from_millis(100), room.recv()).await,
            Ok(Some(m)) if m.via_redis
        );
    }
    assert!(
        received,
        "a message published on the cluster reaches a subscriber"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_master_fails_only_its_slots_at_once_and_the_promoted_replica_takes_over() {
    let mut cluster = block(RedisCluster::start).unwrap();
    let keys = block(|| keys_by_master(&mut cluster));
    let victim = keys[0].1;
    let redis = connect(RedisClientConfig::cluster(cluster.urls())).await;
    for (key, _) in &keys {
        set(&redis, key, "before").await.unwrap();
    }
    let load_keys = keys.clone();
    let load = {
        let redis = redis.clone();
        Load::start(12, Duration::from_millis(5), move |caller, seq| {
            let redis = redis.clone();
            let key = load_keys[(caller * 5 + seq as usize) % load_keys.len()]
                .0
                .clone();
            async move { set(&redis, &key, &format!("{caller}:{seq}")).await }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed_at = Instant::now();
    block(|| cluster.node_mut(victim).kill()).unwrap();

    // Calls to the dead master's slots fail, soon at once; every other slot works.
    assert!(
        eventually(SETUP, || async { redis.slots_down() > 0 }).await,
        "the dead master's slots are marked down"
    );
    assert!(
        redis.slots_down() < 16_384 / 2,
        "only its slots: {}",
        redis.slots_down()
    );
    let e = set(&redis, &keys[0].0, "x").await.unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    assert!(e.redis_error().is_none(), "refused at once, locally: {e}");
    assert_eq!(
        redis.health(),
        Health::Healthy,
        "the cluster as a whole is up"
    );

    let promoted = block(|| cluster.wait_for_promotion(victim, Duration::from_secs(60))).unwrap();
    assert_ne!(promoted, victim);
    let promoted_at = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || async {
            redis.slots_down() == 0 && set(&redis, &keys[0].0, "after").await.is_ok()
        })
        .await,
        "the promoted replica serves the slots within 10 s"
    );
    eprintln!(
        "killed → promoted {:?}; promoted → served by the client {:?}",
        promoted_at - killed_at,
        promoted_at.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls = load.stop().await;
    let victim_keys: Vec<&str> = keys
        .iter()
        .filter(|(_, m)| *m == victim)
        .map(|(k, _)| k.as_str())
        .collect();
    let key_of = |c: &common::Call| {
        keys[(c.caller * 5 + c.seq as usize) % keys.len()]
            .0
            .as_str()
    };
    let others_failed: Vec<_> = calls
        .iter()
        .filter(|c| !c.ok() && !victim_keys.contains(&key_of(c)))
        .collect();
    assert!(
        others_failed.is_empty(),
        "calls to other masters' slots kept working: {} failed, first {:?}",
        others_failed.len(),
        others_failed.first()
    );
    let victim_failed: Vec<_> = calls.iter().filter(|c| !c.ok()).collect();
    assert!(!victim_failed.is_empty());
    let not_unavailable: Vec<_> = victim_failed
        .iter()
        .filter(|c| !c.error.as_ref().unwrap().0)
        .collect();
    assert!(
        not_unavailable.is_empty(),
        "every failure says unavailable: take the fallback; not: {not_unavailable:?}"
    );
    let refused_locally = victim_failed
        .iter()
        .filter(|c| c.error.as_ref().unwrap().1)
        .count();
    assert!(
        refused_locally * 10 >= victim_failed.len() * 9,
        "after the first failures the slots are refused at once: {refused_locally} of {}",
        victim_failed.len()
    );
    let slowest = calls.iter().map(|c| c.took).max().unwrap();
    assert!(
        slowest < Duration::from_millis(250) + Duration::from_millis(500),
        "{slowest:?}"
    );
    // The key written after the promotion reads back.
    let value: Option<String> = redis
        .query(redis::cmd("GET").arg(&keys[0].0))
        .await
        .unwrap();
    assert!(value.is_some());
    assert_eq!(redis.health(), Health::Healthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_of_a_master_costs_each_call_at_most_its_deadline() {
    let mut cluster = block(RedisCluster::start).unwrap();
    let keys = block(|| keys_by_master(&mut cluster));
    let victim = keys[0].1;
    let deadline = Duration::from_millis(250);
    let redis = connect(RedisClientConfig::cluster(cluster.urls()).call_timeout(deadline)).await;
    let load_keys = keys.clone();
    let load = {
        let redis = redis.clone();
        Load::start(12, Duration::from_millis(5), move |caller, seq| {
            let redis = redis.clone();
            let key = load_keys[(caller * 5 + seq as usize) % load_keys.len()]
                .0
                .clone();
            async move { set(&redis, &key, "v").await }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    block(|| cluster.node_mut(victim).pause()).unwrap();
    assert!(
        eventually(SETUP, || async { redis.slots_down() > 0 }).await,
        "the stopped master is marked down"
    );
    let promoted = block(|| cluster.wait_for_promotion(victim, Duration::from_secs(60))).unwrap();
    assert_ne!(promoted, victim);
    let served = eventually(Duration::from_secs(10), || async {
        redis.slots_down() == 0 && set(&redis, &keys[0].0, "after").await.is_ok()
    })
    .await;
    assert!(
        served,
        "the promoted replica serves the slots within 10 s: {} slots down, {:?}",
        redis.slots_down(),
        set(&redis, &keys[0].0, "after").await
    );
    block(|| cluster.node_mut(victim).resume()).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls = load.stop().await;
    let slowest = calls.iter().map(|c| c.took).max().unwrap();
    eprintln!("{} calls, slowest {slowest:?}", calls.len());
    // The deadline, plus scheduling slack on a loaded machine.
    assert!(
        slowest <= deadline + Duration::from_millis(400),
        "{slowest:?}"
    );
    let timeouts = calls
        .iter()
        .filter(|c| c.error.as_ref().is_some_and(|e| e.2.contains("timed out")))
        .count();
    assert!(
        timeouts > 0,
        "the stopped master's calls ran out of time first"
    );
    assert_eq!(redis.health(), Health::Healthy);
}
