//! The hub's adoption of a dead node's calls, on a real redis-server: the adopter
//! serves them with every participant awaiting rejoin and the right tokens, the owner
//! in Redis is the adopter with a higher epoch, the dead node's status tells what is
//! left to adopt, and a live node's calls are refused.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use prometheus_client::registry::Registry;
use secureconnect_callstate::{
    call_owner, CallHub, CallHubConfig, CallStore, ParticipantState, RedisCallStore,
    RedisCallStoreConfig,
};
use secureconnect_redis_fallback::testing::RedisServer;
use secureconnect_redis_fallback::{RedisClient, RedisClientConfig};

async fn client(server: &RedisServer) -> RedisClient {
    RedisClient::connect(
        RedisClientConfig::new(server.url()),
        &mut Registry::default(),
    )
    .await
    .unwrap()
}

async fn hub(
    server: &RedisServer,
    node: &str,
    registry: &mut Registry,
) -> (CallHub, RedisCallStore) {
    let config = RedisCallStoreConfig::default().lease_ttl(Duration::from_millis(600));
    let store = RedisCallStore::new(client(server).await, node, config, registry).unwrap();
    let hub = CallHub::new(
        node,
        Some(store.clone()),
        CallHubConfig::default(),
        registry,
    )
    .unwrap();
    (hub, store)
}

#[tokio::test]
async fn a_dead_nodes_calls_are_served_by_the_adopter_with_a_higher_epoch() {
    let server = RedisServer::start().unwrap();
    let mut a_registry = Registry::default();
    let (a, a_store) = hub(&server, "node-a", &mut a_registry).await;
    let mut b_registry = Registry::default();
    let (b, b_store) = hub(&server, "node-b", &mut b_registry).await;
    a.create("c1").await.unwrap();
    let (p1, t1) = a.join("c1", "alice").await.unwrap();
    let (p2, t2) = a.join("c1", "bob").await.unwrap();
    // Written behind: wait until Redis has both participants.
    for _ in 0..100 {
        if b_store
            .get("c1")
            .await
            .unwrap()
            .is_some_and(|c| c.participants.len() == 2)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = b_store.get("c1").await.unwrap().unwrap();
    assert_eq!(before.owner, "node-a");

    // node-a's heartbeat holds its lease: adoption is refused.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = b.adopt("node-a").await.unwrap_err();
    assert!(refused.is_not_owner(), "{refused:?}");
    assert_eq!(refused.node(), Some("node-a"));
    let status = b_store.node_status("node-a").await.unwrap();
    assert!(status.lease_alive);
    assert_eq!(status.calls, 1);

    // node-a dies: its heartbeat stops with the hub; the lease lapses.
    drop(a);
    drop(a_store);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!b_store.node_status("node-a").await.unwrap().lease_alive);
    assert_eq!(b.adopt("node-a").await.unwrap(), ["c1"]);
    let after = b_store.get("c1").await.unwrap().unwrap();
    assert_eq!(after.owner, "node-b");
    assert!(
        after.epoch > before.epoch,
        "{} > {}",
        after.epoch,
        before.epoch
    );
    assert_eq!(
        call_owner(b_store.redis(), "c1").await.unwrap().as_deref(),
        Some("node-b")
    );
    assert_eq!(b_store.node_status("node-a").await.unwrap().calls, 0);
    let served = b.get("c1").unwrap();
    assert!(served
        .participants
        .values()
        .all(|p| p.state == ParticipantState::AwaitingRejoin));
    // Each participant rejoins with its own token, never with another's.
    let wrong = b.rejoin("c1", &p1, "alice", &t2).await.unwrap_err();
    assert!(wrong.is_bad_token(), "{wrong:?}");
    b.rejoin("c1", &p1, "alice", &t1).await.unwrap();
    b.rejoin("c1", &p2, "bob", &t2).await.unwrap();
    // The adopter writes the call: a join reaches Redis with its epoch.
    b.join("c1", "carol").await.unwrap();
    for _ in 0..100 {
        if b_store
            .get("c1")
            .await
            .unwrap()
            .is_some_and(|c| c.participants.len() == 3)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        b_store.get("c1").await.unwrap().unwrap().participants.len(),
        3
    );
    let exposition = {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &b_registry).unwrap();
        text
    };
    assert!(
        exposition.contains("call_adopted_calls_total 1"),
        "{exposition}"
    );
    // Nothing left to adopt; a second adoption finds nothing.
    assert!(b.adopt("node-a").await.unwrap().is_empty());
    assert_eq!(call_owner(b_store.redis(), "nope").await.unwrap(), None);
}

/// A node cut off from Redis past its lease: its call is adopted; once it reaches Redis
/// again its hub drops the call (its subscribers' receivers end) and writes nothing to
/// it.
#[tokio::test]
async fn a_node_back_after_its_lease_lapsed_drops_the_calls_adopted_meanwhile() {
    use secureconnect_redis_fallback::testing::{FaultProxy, ProxyMode};
    let server = RedisServer::start().unwrap();
    let proxy = FaultProxy::start(([127, 0, 0, 1], server.port()).into())
        .await
        .unwrap();
    let mut registry = Registry::default();
    let a_client = RedisClient::connect(
        RedisClientConfig::new(proxy.url())
            .probe_interval(Duration::from_millis(200))
            .timeouts_to_rebuild(1),
        &mut registry,
    )
    .await
    .unwrap();
    let a_store = RedisCallStore::new(
        a_client,
        "node-a",
        RedisCallStoreConfig::default().lease_ttl(Duration::from_millis(600)),
        &mut registry,
    )
    .unwrap();
    let a = CallHub::new(
        "node-a",
        Some(a_store),
        CallHubConfig::default(),
        &mut registry,
    )
    .unwrap();
    let (b, b_store) = hub(&server, "node-b", &mut Registry::default()).await;
    a.create("c1").await.unwrap();
    let (p1, _) = a.join("c1", "alice").await.unwrap();
    let mut signals = a.subscribe("c1", &p1).unwrap();
    for _ in 0..100 {
        if b_store
            .get("c1")
            .await
            .unwrap()
            .is_some_and(|c| c.participants.len() == 1)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    proxy.set_mode(ProxyMode::Blackhole);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(b.adopt("node-a").await.unwrap(), ["c1"]);
    let adopted = b_store.get("c1").await.unwrap().unwrap();
    assert!(a.get("c1").is_some(), "cut off, node-a cannot know yet");

    proxy.set_mode(ProxyMode::Forward);
    let dropped = tokio::time::timeout(Duration::from_secs(10), signals.recv()).await;
    assert!(matches!(dropped, Ok(None)), "the call's channel closes");
    assert!(a.get("c1").is_none());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        b_store.get("c1").await.unwrap().unwrap(),
        adopted,
        "node-a wrote the call"
    );
    assert_eq!(
        b_store.node_status("node-a").await.unwrap().calls,
        0,
        "left in node-a's set"
    );
}
