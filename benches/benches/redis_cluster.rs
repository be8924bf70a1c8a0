//! A `GET` on a real Redis Cluster (3 masters, 3 replicas on loopback) through
//! `RedisClient`, side by side with redis-rs's own cluster connection in the same run;
//! and what a call to a slot whose master is down costs (refused at once).
//!
//! ```text
//! cargo bench -p secureconnect-benches --bench redis_cluster
//! ```
//!
//! Needs `redis-server` and `redis-cli` on `PATH`: each run makes its own cluster.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use prometheus_client::registry::Registry;
use secureconnect_redis_fallback::testing::RedisCluster;
use secureconnect_redis_fallback::{Health, RedisClient, RedisClientConfig};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn cluster_get(c: &mut Criterion) {
    let rt = runtime();
    let mut cluster = RedisCluster::start().unwrap();
    let (raw, ours) = rt.block_on(async {
        let raw = redis::cluster::ClusterClient::new(cluster.urls())
            .unwrap()
            .get_async_connection()
            .await
            .unwrap();
        let ours = RedisClient::connect(
            RedisClientConfig::cluster(cluster.urls()),
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

    let mut group = c.benchmark_group("redis_cluster_get");
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("redis_rs_cluster_async", |b| {
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

    // The master of the key dies: its slots are refused at once, without the network.
    let master = cluster.master_of("bench").unwrap();
    cluster.node_mut(master).kill().unwrap();
    rt.block_on(async {
        for _ in 0..200 {
            if ours.slots_down() > 0 {
                break;
            }
            let _ = ours.query::<Option<String>>(&get).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(ours.slots_down() > 0);
    });
    let mut group = c.benchmark_group("redis_cluster_slot_down");
    group.bench_function("refused_at_once", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(ours.query::<Option<String>>(&get).await.unwrap_err()) })
    });
    group.finish();
}

criterion_group!(benches, cluster_get);
criterion_main!(benches);
