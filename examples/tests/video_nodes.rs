//! Two video nodes behind one gateway, as real processes against a real redis-server
//! (and a real Redis Cluster): calls created through the gateway land on both nodes and
//! are reachable through it; when a call's owner is SIGKILLed, or cut off from Redis
//! past its lease, the other node adopts the call within lease + 5 s, the participants
//! rejoin through the gateway with their tokens, and the old owner (restarted with its
//! id, or reconnected) neither takes the call back nor writes it.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::text;
use common::video_nodes::{killed_owner_scenario, partitioned_owner_scenario, Nodes, Observer};
use prometheus_client::registry::Registry;
use secureconnect_redis_fallback::testing::{FaultProxy, ProxyMode, RedisCluster, RedisServer};
use secureconnect_redis_fallback::{RedisClient, RedisClientConfig};

/// A raised limit: the tests create many calls for one user.
const ENV: [(&str, &str); 1] = [("CALLS_PER_USER_MAX", "50")];

async fn observer(config: RedisClientConfig) -> Observer {
    Observer(
        RedisClient::connect(config, &mut Registry::default())
            .await
            .unwrap(),
    )
}

fn no_env(_: &str) -> Vec<(String, String)> {
    Vec::new()
}

/// Two nodes, each reaching Redis through a fault proxy of its own (video-1 through
/// the first).
async fn behind_proxies(redis: &RedisServer) -> (Nodes, Vec<Arc<FaultProxy>>) {
    let mut proxies = Vec::new();
    for _ in 0..2 {
        proxies.push(Arc::new(
            FaultProxy::start(([127, 0, 0, 1], redis.port()).into())
                .await
                .unwrap(),
        ));
    }
    let urls = [proxies[0].url(), proxies[1].url()];
    let nodes = Nodes::start(&redis.url(), &ENV, &["video-1", "video-2"], |id| {
        let i = usize::from(id == "video-2");
        vec![("REDIS_URL".to_owned(), urls[i].clone())]
    })
    .await;
    (nodes, proxies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owners_calls_move_to_the_survivor_and_stay_there_after_its_restart() {
    let redis = RedisServer::start().unwrap();
    let nodes = Nodes::start(&redis.url(), &ENV, &["video-1", "video-2"], no_env).await;
    let observer = observer(RedisClientConfig::new(redis.url())).await;
    killed_owner_scenario(nodes, observer, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_redis_past_its_lease_loses_its_calls_and_drops_them() {
    let redis = RedisServer::start().unwrap();
    let (nodes, proxies) = behind_proxies(&redis).await;
    let observer = observer(RedisClientConfig::new(redis.url())).await;
    let proxy = |id: &str| proxies[usize::from(id == "video-2")].clone();
    partitioned_owner_scenario(
        nodes,
        observer,
        |_, owner| proxy(owner).set_mode(ProxyMode::Blackhole),
        |_, owner| proxy(owner).set_mode(ProxyMode::Forward),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_loses_its_calls_and_drops_them_when_it_resumes() {
    let redis = RedisServer::start().unwrap();
    let nodes = Nodes::start(&redis.url(), &ENV, &["video-1", "video-2"], no_env).await;
    let observer = observer(RedisClientConfig::new(redis.url())).await;
    partitioned_owner_scenario(
        nodes,
        observer,
        |nodes, owner| nodes.system.signal(owner, "STOP"),
        |nodes, owner| nodes.system.signal(owner, "CONT"),
    )
    .await;
}

fn cluster_env() -> Vec<(&'static str, &'static str)> {
    let mut env = ENV.to_vec();
    env.push(("REDIS_MODE", "cluster"));
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_killed_owners_calls_move_to_the_survivor() {
    let cluster = tokio::task::block_in_place(RedisCluster::start).unwrap();
    let urls = cluster.urls().join(",");
    let nodes = Nodes::start(&urls, &cluster_env(), &["video-1", "video-2"], no_env).await;
    let observer = observer(RedisClientConfig::cluster(cluster.urls())).await;
    killed_owner_scenario(nodes, observer, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_paused_owner_loses_its_calls_and_drops_them() {
    let cluster = tokio::task::block_in_place(RedisCluster::start).unwrap();
    let urls = cluster.urls().join(",");
    let nodes = Nodes::start(&urls, &cluster_env(), &["video-1", "video-2"], no_env).await;
    let observer = observer(RedisClientConfig::cluster(cluster.urls())).await;
    partitioned_owner_scenario(
        nodes,
        observer,
        |nodes, owner| nodes.system.signal(owner, "STOP"),
        |nodes, owner| nodes.system.signal(owner, "CONT"),
    )
    .await;
}

/// While Redis is down, the gateway sends new calls to the nodes of `VIDEO_UPSTREAMS`
/// in turn and finds each call by asking them: calls land on both nodes and each is
/// reachable through the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_the_gateway_uses_its_configured_nodes() {
    use common::video_nodes::{get_call, two_users};
    let mut redis = RedisServer::start().unwrap();
    let nodes = Nodes::start(&redis.url(), &ENV, &["video-1", "video-2"], no_env).await;
    let c = reqwest::Client::new();
    let g = nodes.gateway();
    let (alice, _) = two_users(&c, &nodes).await;
    tokio::task::block_in_place(|| redis.kill()).unwrap();
    let mut degraded = false;
    for _ in 0..100 {
        let ready: serde_json::Value = c
            .get(format!("{g}/ready"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ready["redis"] == "degraded" {
            degraded = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(degraded, "the gateway never saw Redis down");
    let mut on = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..4 {
        let r = c
            .post(format!("{g}/v1/calls"))
            .bearer_auth(&alice.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let body: serde_json::Value = r.json().await.unwrap();
        let call = body["call_id"].as_str().unwrap();
        assert_eq!(get_call(&c, &g, call, &alice.token).await.0, 200, "{call}");
        for (node, port) in &nodes.nodes {
            let direct = format!("http://127.0.0.1:{port}");
            if get_call(&c, &direct, call, &alice.token).await.0 == 200 {
                *on.entry(node.clone()).or_default() += 1;
            }
        }
    }
    assert_eq!(on.values().sum::<usize>(), 4, "{on:?}");
    assert_eq!(on.len(), 2, "both nodes: {on:?}");
}

/// Every node is cut off from Redis for longer than the lease, so every lease lapses:
/// once Redis is back for all of them, the nodes renew their leases before any of them
/// adopts, and no call changes owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_redis_outage_longer_than_the_lease_no_live_node_loses_its_calls() {
    use common::video_nodes::{create_calls, two_users, LEASE_SECS};
    let redis = RedisServer::start().unwrap();
    let (nodes, proxies) = behind_proxies(&redis).await;
    let observer = observer(RedisClientConfig::new(redis.url())).await;
    let c = reqwest::Client::new();
    let (alice, _) = two_users(&c, &nodes).await;
    let calls = create_calls(&c, &nodes, &observer, &alice, 4).await;
    let mut before = Vec::new();
    for (call, _) in &calls {
        before.push(observer.call(call).await.unwrap());
    }
    for proxy in &proxies {
        proxy.set_mode(ProxyMode::Blackhole);
    }
    tokio::time::sleep(std::time::Duration::from_secs(LEASE_SECS * 2)).await;
    for proxy in &proxies {
        proxy.set_mode(ProxyMode::Forward);
    }
    tokio::time::sleep(std::time::Duration::from_secs(LEASE_SECS * 3)).await;
    for ((call, _), was) in calls.iter().zip(&before) {
        let now = observer.call(call).await.unwrap();
        assert_eq!((&now.owner, now.epoch), (&was.owner, was.epoch), "{call}");
    }
    for (node, port) in &nodes.nodes {
        let metrics = text(c.get(format!("http://127.0.0.1:{port}/metrics"))).await;
        let adopted =
            secureconnect_testkit::exposition::sample(&metrics, "call_adopted_calls_total", &[]);
        assert_eq!(adopted, Some(0.0), "{node}");
    }
}
