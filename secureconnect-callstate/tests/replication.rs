//! The hub's replication to a real redis-server when writes are lost: an end is never
//! lost, whatever write fails and however full the queue, and a partitioned owner's
//! write-back never brings back a call that another node adopted.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use prometheus_client::registry::Registry;
use secureconnect_callstate::{
    CallHub, CallHubConfig, CallStore, RedisCallStore, RedisCallStoreConfig,
};
use secureconnect_redis_fallback::testing::{FaultProxy, ProxyMode, RedisServer};
use secureconnect_redis_fallback::{RedisClient, RedisClientConfig};

/// How long Redis has to settle after it returns.
const SETTLE: Duration = Duration::from_secs(10);

async fn client(url: String) -> RedisClient {
    let config = RedisClientConfig::new(url)
        .probe_interval(Duration::from_millis(200))
        .timeouts_to_rebuild(1);
    RedisClient::connect(config, &mut Registry::default())
        .await
        .unwrap()
}

/// A short lease: the heartbeat (a third of it) comes every 300 ms.
fn config() -> RedisCallStoreConfig {
    RedisCallStoreConfig::default().lease_ttl(Duration::from_millis(900))
}

async fn store(url: String, node: &str) -> RedisCallStore {
    RedisCallStore::new(client(url).await, node, config(), &mut Registry::default()).unwrap()
}

fn hub(store: &RedisCallStore) -> CallHub {
    CallHub::new(
        store.node(),
        Some(store.clone()),
        CallHubConfig::default(),
        &mut Registry::default(),
    )
    .unwrap()
}

fn proxied(server: &RedisServer) -> impl std::future::Future<Output = std::io::Result<FaultProxy>> {
    FaultProxy::start(([127, 0, 0, 1], server.port()).into())
}

/// Waits until Redis has `call` with `participants` participants.
async fn stored(observer: &RedisCallStore, call: &str, participants: usize) {
    for _ in 0..100 {
        if let Ok(Some(c)) = observer.get(call).await {
            if c.participants.len() == participants {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{call} never reached redis with {participants} participants");
}

/// Waits until the hub has nothing left to write back.
async fn written_back(hub: &CallHub) {
    let deadline = tokio::time::Instant::now() + SETTLE;
    while hub.needs_write_back() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!hub.needs_write_back(), "the hub never wrote back");
}

/// `call` is gone from Redis (waiting up to [`SETTLE`]), and a store restarted as
/// `node` does not recover it.
async fn assert_ended(observer: &RedisCallStore, url: String, node: &str, call: &str) {
    let deadline = tokio::time::Instant::now() + SETTLE;
    // An error (the observer's own client recovering) is not an answer: ask again.
    let mut left = observer.get(call).await;
    while !matches!(left, Ok(None)) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = observer.get(call).await;
    }
    assert_eq!(left.unwrap(), None, "{call} is still in redis");
    let restarted = store(url, node).await;
    let report = restarted.recover().await.unwrap();
    assert!(
        report.calls.iter().all(|c| c.id != call),
        "a restarted {node} recovered {call}: {:?}",
        report.calls
    );
    assert!(!restarted
        .list_node_calls()
        .await
        .unwrap()
        .contains(&call.to_owned()));
}

#[tokio::test]
async fn an_end_that_is_itself_the_lost_write_is_ended_once_redis_returns() {
    let server = RedisServer::start().unwrap();
    let proxy = proxied(&server).await.unwrap();
    let observer = store(server.url(), "observer").await;
    let a = store(proxy.url(), "node-a").await;
    let hub = hub(&a);
    hub.create("c").await.unwrap();
    hub.join("c", "alice").await.unwrap();
    stored(&observer, "c", 1).await;

    // The end's bytes never reach Redis.
    proxy.set_mode(ProxyMode::Blackhole);
    hub.end("c").await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(hub.needs_write_back());
    proxy.set_mode(ProxyMode::Forward);

    written_back(&hub).await;
    assert_ended(&observer, server.url(), "node-a", "c").await;
}

#[tokio::test]
async fn a_last_leave_that_is_itself_the_lost_write_is_ended_once_redis_returns() {
    let server = RedisServer::start().unwrap();
    let proxy = proxied(&server).await.unwrap();
    let observer = store(server.url(), "observer").await;
    let a = store(proxy.url(), "node-a").await;
    let hub = hub(&a);
    hub.create("c").await.unwrap();
    let (alice, _) = hub.join("c", "alice").await.unwrap();
    stored(&observer, "c", 1).await;

    proxy.set_mode(ProxyMode::Blackhole);
    assert!(hub.leave("c", &alice).await.unwrap().call_ended);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(hub.needs_write_back());
    proxy.set_mode(ProxyMode::Forward);

    written_back(&hub).await;
    assert_ended(&observer, server.url(), "node-a", "c").await;
}

#[tokio::test]
async fn an_end_queued_behind_a_write_that_times_out_is_not_drained_away() {
    let server = RedisServer::start().unwrap();
    let observer = store(server.url(), "observer").await;
    // Default degradation (4 timeouts): the client stays healthy after one timeout,
    // so the queue is drained into a write-back while Redis still hangs.
    let slow = RedisClientConfig::new(server.url()).probe_interval(Duration::from_secs(30));
    let redis = RedisClient::connect(slow, &mut Registry::default())
        .await
        .unwrap();
    let a = RedisCallStore::new(redis, "node-a", config(), &mut Registry::default()).unwrap();
    let hub = hub(&a);
    hub.create("c").await.unwrap();
    hub.join("c", "alice").await.unwrap();
    stored(&observer, "c", 1).await;

    server.pause().unwrap();
    // The join's write hangs; the end waits behind it in the queue.
    hub.join("c", "bob").await.unwrap();
    hub.end("c").await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.resume().unwrap();

    written_back(&hub).await;
    assert_ended(&observer, server.url(), "node-a", "c").await;
}

#[tokio::test]
async fn a_full_queue_that_drops_the_end_still_ends_the_call() {
    let server = RedisServer::start().unwrap();
    let observer = store(server.url(), "observer").await;
    let a = store(server.url(), "node-a").await;
    let hub = hub(&a);
    hub.create("doomed").await.unwrap();
    hub.join("doomed", "alice").await.unwrap();
    stored(&observer, "doomed", 1).await;

    // Without yielding to the writer (a current-thread runtime), fill the queue, then
    // end the call: its end is dropped.
    hub.create("filler").await.unwrap();
    for i in 0..4200 {
        hub.join("filler", &format!("user-{i}")).await.unwrap();
    }
    hub.end("doomed").await.unwrap();
    assert!(hub.needs_write_back(), "the queue overflowed");

    written_back(&hub).await;
    assert_ended(&observer, server.url(), "node-a", "doomed").await;
    stored(&observer, "filler", 4200).await;
}

/// Hub A, behind the proxy, is cut off past its lease; node-b adopts its calls.
async fn partition() -> (RedisServer, FaultProxy, CallHub, RedisCallStore) {
    let server = RedisServer::start().unwrap();
    let proxy = proxied(&server).await.unwrap();
    let b = store(server.url(), "node-b").await;
    let a = store(proxy.url(), "node-a").await;
    let hub = hub(&a);
    hub.create("c").await.unwrap();
    hub.join("c", "alice").await.unwrap();
    hub.join("c", "bob").await.unwrap();
    stored(&b, "c", 2).await;

    proxy.set_mode(ProxyMode::Blackhole);
    let mut adopted = Vec::new();
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(calls) = b.adopt("node-a").await {
            adopted = calls;
            break;
        }
    }
    assert_eq!(adopted, ["c"]);
    let call = b.get("c").await.unwrap().unwrap();
    assert_eq!((call.owner.as_str(), call.epoch), ("node-b", 2));
    assert!(hub.needs_write_back());
    (server, proxy, hub, b)
}

/// Waits until hub A lets `call` go.
async fn dropped_by(hub: &CallHub, call: &str) {
    for _ in 0..200 {
        if hub.get(call).is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("hub A still serves {call}");
}

#[tokio::test]
async fn a_partitioned_owner_does_not_overwrite_a_call_adopted_elsewhere() {
    let (_server, proxy, hub, b) = partition().await;
    // B changes the call meanwhile.
    b.leave(
        "c",
        &hub.get("c")
            .unwrap()
            .participants
            .keys()
            .next()
            .unwrap()
            .clone(),
    )
    .await
    .unwrap();
    let before = b.get("c").await.unwrap().unwrap();
    let mut signals = hub.subscribe("c", "a-socket").unwrap();

    proxy.set_mode(ProxyMode::Forward);
    dropped_by(&hub, "c").await;
    let next = tokio::time::timeout(Duration::from_secs(5), signals.recv()).await;
    assert!(
        matches!(next, Ok(None)),
        "a socket on the dropped call ends rather than hang"
    );
    written_back(&hub).await;
    let after = b.get("c").await.unwrap().unwrap();
    assert_eq!(after, before, "A's write-back overwrote B's call");
}

#[tokio::test]
async fn a_partitioned_owner_does_not_resurrect_a_call_ended_elsewhere() {
    let (server, proxy, hub, b) = partition().await;
    b.end("c").await.unwrap();

    proxy.set_mode(ProxyMode::Forward);
    dropped_by(&hub, "c").await;
    written_back(&hub).await;
    assert_eq!(
        b.get("c").await.unwrap(),
        None,
        "A's write-back resurrected the call"
    );
    assert_ended(&b, server.url(), "node-a", "c").await;
}

/// A write-back that runs before the hub has recovered (Redis came back, the recovery
/// is still to come) ends no call of this node's set that memory lacks: those are
/// calls still to recover, not calls that ended here. The recovery then brings them
/// back.
#[tokio::test]
async fn a_write_back_before_recovery_leaves_the_calls_still_to_recover_alone() {
    let server = RedisServer::start().unwrap();
    let proxy = proxied(&server).await.unwrap();
    let observer = store(server.url(), "observer").await;
    // The previous process of node-a left a call with a participant.
    {
        let before = hub(&store(server.url(), "node-a").await);
        before.create("old").await.unwrap();
        before.join("old", "alice").await.unwrap();
        stored(&observer, "old", 1).await;
    }

    // The restarted process makes a call while Redis is away, then writes back.
    let a = store(proxy.url(), "node-a").await;
    let hub = hub(&a);
    proxy.set_mode(ProxyMode::Blackhole);
    hub.create("new").await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(hub.needs_write_back());
    proxy.set_mode(ProxyMode::Forward);
    written_back(&hub).await;
    stored(&observer, "new", 0).await;
    stored(&observer, "old", 1).await;
    assert!(a
        .list_node_calls()
        .await
        .unwrap()
        .contains(&"old".to_owned()));

    let report = hub.recover().await.unwrap();
    let ids: Vec<&str> = report.calls.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["old"]);
    stored(&observer, "old", 1).await;
}

/// A hub whose process was superseded by a newer one with the same node id (a rolling
/// update, a paused process that resumed) drops its calls at its next heartbeat: it
/// may not write them any more, so its sockets close and participants rejoin through
/// the newer process, which recovered the calls.
#[tokio::test]
async fn a_superseded_hub_drops_its_calls_at_its_next_heartbeat() {
    let server = RedisServer::start().unwrap();
    let old = hub(&store(server.url(), "node-a").await);
    old.create("c").await.unwrap();
    old.join("c", "alice").await.unwrap();
    let observer = store(server.url(), "observer").await;
    stored(&observer, "c", 1).await;

    let new = hub(&store(server.url(), "node-a").await);
    assert_eq!(new.recover().await.unwrap().calls.len(), 1);
    let deadline = tokio::time::Instant::now() + SETTLE;
    while old.get("c").is_some() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        old.get("c").is_none(),
        "the superseded hub still serves the call"
    );
    assert!(new.get("c").is_some());
    stored(&observer, "c", 1).await;
}
