//! Recovering 20,000 calls after a restart: this crate's store (`SSCAN` of the node's
//! set, pipelined `HMGET` + `HVALS`) side by side with the approach it replaces (`KEYS
//! call:*` then one `GET` per key), on the same server and the same data; how soon a
//! restarted hub serves (the calls listed, then loaded behind: a rejoin loads its call
//! at once); and the throughput of join and leave.
//!
//! ```text
//! cargo bench -p secureconnect-benches --bench callstate   # needs redis-server
//! ```

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use prometheus_client::registry::Registry;
use secureconnect_callstate::{
    CallHub, CallHubConfig, CallStore, Participant, ParticipantState, RedisCallStore,
    RedisCallStoreConfig, RejoinToken,
};
use secureconnect_redis_fallback::testing::RedisServer;
use secureconnect_redis_fallback::{RedisClient, RedisClientConfig};

const CALLS: usize = 20_000;

/// Every participant's rejoin token.
const TOKEN: &str = "bench-rejoin-token";

fn participant_json(call: usize, p: usize) -> String {
    serde_json::json!({
        "id": format!("p{p}"),
        "user_id": format!("user-{call}-{p}"),
        "token_hash": RejoinToken::from_client(TOKEN).hash(),
        "joined_at_ms": 1_700_000_000_000u64,
    })
    .to_string()
}

/// The same 20,000 calls (two participants each) in both layouts.
async fn populate(conn: &mut redis::aio::MultiplexedConnection) {
    for chunk in (0..CALLS).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            let id = format!("c-{i}");
            pipe.cmd("HSET")
                .arg(format!("sc:call:{{{id}}}"))
                .arg(&[
                    "owner", "bench", "epoch", "1", "version", "3", "created", "0", "schema", "1",
                ])
                .ignore();
            pipe.cmd("HSET")
                .arg(format!("sc:call:{{{id}}}:p"))
                .arg(&["p0", &participant_json(i, 0), "p1", &participant_json(i, 1)])
                .ignore();
            pipe.cmd("SADD")
                .arg("sc:node:{bench}:calls")
                .arg(&id)
                .ignore();
            // The replaced layout: one JSON snapshot per call.
            let snapshot = serde_json::json!({
                "id": id, "owner": "bench",
                "participants": [participant_json(i, 0), participant_json(i, 1)],
            });
            pipe.cmd("SET")
                .arg(format!("call:{id}"))
                .arg(snapshot.to_string())
                .ignore();
        }
        pipe.query_async::<()>(conn).await.unwrap();
    }
}

/// The replaced approach: `KEYS call:*`, then one `GET` per key.
async fn recover_with_keys(conn: &mut redis::aio::MultiplexedConnection) -> usize {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("call:*")
        .query_async(conn)
        .await
        .unwrap();
    let mut calls = 0;
    for key in keys {
        let snapshot: Option<String> = redis::cmd("GET").arg(key).query_async(conn).await.unwrap();
        let value: serde_json::Value = serde_json::from_str(&snapshot.unwrap()).unwrap();
        calls += usize::from(value.get("participants").is_some());
    }
    calls
}

fn recovery(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = RedisServer::start().unwrap();
    let (mut conn, redis, store) = rt.block_on(async {
        let mut conn = redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        populate(&mut conn).await;
        let redis = RedisClient::connect(
            RedisClientConfig::new(server.url()).call_timeout(Duration::from_secs(5)),
            &mut Registry::default(),
        )
        .await
        .unwrap();
        let store = RedisCallStore::new(
            redis.clone(),
            "bench",
            RedisCallStoreConfig::default(),
            &mut Registry::default(),
        )
        .unwrap();
        (conn, redis, store)
    });
    let check = rt.block_on(store.recover()).unwrap();
    assert_eq!(check.calls.len(), CALLS);
    assert_eq!(rt.block_on(recover_with_keys(&mut conn)), CALLS);

    let mut group = c.benchmark_group("recover_20000_calls");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    // A fresh store per iteration, as after a restart: a store skips the calls it
    // holds already, so recovering twice with one store would measure nothing.
    group.bench_function("sscan_pipelined_hgetall", |b| {
        b.to_async(&rt).iter_batched(
            || {
                RedisCallStore::new(
                    redis.clone(),
                    "bench",
                    RedisCallStoreConfig::default(),
                    &mut Registry::default(),
                )
                .unwrap()
            },
            |fresh| async move { black_box(fresh.recover().await.unwrap().calls.len()) },
            BatchSize::PerIteration,
        )
    });
    // The first step alone: the incarnation, the lease and the listing of the calls.
    // A hub serves from here on (a call not loaded yet is loaded when asked for).
    group.bench_function("list_owned_calls", |b| {
        b.to_async(&rt).iter_batched(
            || {
                RedisCallStore::new(
                    redis.clone(),
                    "bench",
                    RedisCallStoreConfig::default(),
                    &mut Registry::default(),
                )
                .unwrap()
            },
            |fresh| async move { black_box(fresh.owned_calls().await.unwrap().len()) },
            BatchSize::PerIteration,
        )
    });
    // What a participant sees: a hub restarted with 20,000 calls to recover, and a
    // rejoin to one of them (loaded on demand while the rest loads behind).
    group.bench_function("restarted_hub_first_rejoin", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let redis = redis.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let store = RedisCallStore::new(
                        redis.clone(),
                        "bench",
                        RedisCallStoreConfig::default(),
                        &mut Registry::default(),
                    )
                    .unwrap();
                    let hub = CallHub::new(
                        "bench",
                        Some(store),
                        CallHubConfig::default(),
                        &mut Registry::default(),
                    )
                    .unwrap();
                    let token = RejoinToken::from_client(TOKEN);
                    let started = std::time::Instant::now();
                    hub.recover_in_background();
                    let back = hub.rejoin("c-12345", "p1", "user-12345-1", &token).await;
                    total += started.elapsed();
                    black_box(back.unwrap());
                    // Untimed: the rest loads, and the heartbeat that follows a
                    // recovery runs, before the next restart.
                    assert!(hub.wait_for_recovery(Duration::from_secs(30)).await);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                total
            }
        })
    });
    // What the heartbeat that follows a recovery costs (every period, too): the
    // lease, then each call's TTLs, in pipelines of 500 calls. By the newest process
    // of the node id (each recovery above was a new one).
    let latest = RedisCallStore::new(
        redis.clone(),
        "bench",
        RedisCallStoreConfig::default(),
        &mut Registry::default(),
    )
    .unwrap();
    assert_eq!(rt.block_on(latest.recover()).unwrap().calls.len(), CALLS);
    group.bench_function("then_heartbeat", |b| {
        b.to_async(&rt)
            .iter(|| async { latest.heartbeat().await.unwrap() })
    });
    group.bench_function("keys_then_get_each", |b| {
        b.to_async(&rt).iter(|| {
            let mut conn = conn.clone();
            async move { black_box(recover_with_keys(&mut conn).await) }
        })
    });
    group.finish();

    let throughput_store = latest.clone();
    rt.block_on(async {
        throughput_store.create("hot").await.unwrap();
        let keep = Participant {
            id: "keep".into(),
            user_id: "u".into(),
            token_hash: RejoinToken::generate().hash(),
            joined_at_ms: 0,
            state: ParticipantState::Connected,
        };
        throughput_store.join("hot", keep).await.unwrap();
    });
    let mut group = c.benchmark_group("call_membership");
    group.throughput(Throughput::Elements(2));
    // The floor: two round trips to the same Redis through the same client. A join
    // and a leave that take about this long take one round trip each.
    let ping_client = redis.clone();
    group.bench_function("two_pings", |b| {
        b.to_async(&rt).iter(|| async {
            for _ in 0..2 {
                let pong: String = ping_client.query(&redis::cmd("PING")).await.unwrap();
                black_box(pong);
            }
        })
    });
    group.bench_function("join_then_leave", |b| {
        b.to_async(&rt).iter(|| async {
            let p = Participant {
                id: "p".into(),
                user_id: "u".into(),
                token_hash: String::new(),
                joined_at_ms: 0,
                state: ParticipantState::Connected,
            };
            throughput_store.join("hot", p).await.unwrap();
            black_box(throughput_store.leave("hot", "p").await.unwrap());
        })
    });
    group.throughput(Throughput::Elements(2 * 64));
    group.bench_function("join_then_leave_64_concurrent", |b| {
        b.to_async(&rt).iter(|| {
            let store = throughput_store.clone();
            async move {
                let tasks: Vec<_> = (0..64)
                    .map(|i| {
                        let store = store.clone();
                        tokio::spawn(async move {
                            let id = format!("c{i}");
                            let p = Participant {
                                id: id.clone(),
                                user_id: "u".into(),
                                token_hash: String::new(),
                                joined_at_ms: 0,
                                state: ParticipantState::Connected,
                            };
                            store.join("hot", p).await.unwrap();
                            store.leave("hot", &id).await.unwrap();
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            }
        })
    });
    group.finish();
}

criterion_group!(benches, recovery);
criterion_main!(benches);
