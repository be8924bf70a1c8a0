//! The key-value and pub/sub fallbacks against a real redis-server that is killed and
//! restarted.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use prometheus_client::registry::Registry;
use secureconnect_redis_fallback::kv::{FallbackKv, FallbackKvConfig, KvSource};
use secureconnect_redis_fallback::pubsub::{Delivery, FallbackPubSub, FallbackPubSubConfig};
use secureconnect_redis_fallback::testing::{RedisServer, Reply};
use secureconnect_redis_fallback::{Health, RedisClient, RedisClientConfig};

async fn client(url: &str) -> RedisClient {
    RedisClient::connect(RedisClientConfig::new(url), &mut Registry::default())
        .await
        .unwrap()
}

async fn healthy(redis: &RedisClient) {
    assert!(
        redis
            .wait_for(Health::Healthy, Duration::from_secs(3))
            .await,
        "healthy within 3 s"
    );
}

#[tokio::test]
async fn kv_uses_redis_then_a_bounded_local_map_then_redis_again() {
    let mut server = RedisServer::start().unwrap();
    let redis = client(&server.url()).await;
    let kv = FallbackKv::new(redis.clone(), FallbackKvConfig::new("session").capacity(5));

    assert_eq!(
        kv.set("t1", b"alice", Duration::from_secs(60))
            .await
            .unwrap(),
        KvSource::Redis
    );
    assert_eq!(
        server.command(&["GET", "sc:kv:session:t1"]).unwrap(),
        Reply::Bulk(Some(b"alice".to_vec())),
        "really stored in Redis"
    );
    assert_eq!(
        kv.get_with_source("t1").await.unwrap(),
        (Some(b"alice".to_vec()), KvSource::Redis)
    );
    kv.set("short", b"x", Duration::from_millis(100))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        kv.get("short").await.unwrap(),
        None,
        "TTL honoured in Redis"
    );

    server.kill().unwrap();
    assert_eq!(
        kv.set("t2", b"bob", Duration::from_secs(60)).await.unwrap(),
        KvSource::Local
    );
    assert_eq!(
        kv.get_with_source("t2").await.unwrap(),
        (Some(b"bob".to_vec()), KvSource::Local)
    );
    assert_eq!(
        kv.get("t1").await.unwrap(),
        None,
        "Redis's data is not in the local map"
    );
    kv.set("gone", b"x", Duration::from_millis(50))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(kv.get("gone").await.unwrap(), None, "TTL honoured locally");
    assert_eq!(kv.delete("t2").await.unwrap(), KvSource::Local);
    assert_eq!(kv.get("t2").await.unwrap(), None);
    for i in 0..20 {
        kv.set(&format!("k{i}"), b"v", Duration::from_secs(60 + i))
            .await
            .unwrap();
    }
    assert_eq!(kv.local_len(), 5, "bounded");
    assert_eq!(kv.get("k19").await.unwrap(), Some(b"v".to_vec()));

    server.restart().unwrap();
    healthy(&redis).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(kv.local_len(), 0, "local state dropped, not merged");
    assert_eq!(
        kv.get_with_source("k19").await.unwrap(),
        (None, KvSource::Redis)
    );
    assert_eq!(
        kv.set("t3", b"carol", Duration::from_secs(60))
            .await
            .unwrap(),
        KvSource::Redis
    );
}

#[tokio::test]
async fn kv_returns_command_errors_to_the_caller() {
    let mut server = RedisServer::start().unwrap();
    let redis = client(&server.url()).await;
    let kv = FallbackKv::new(
        redis.clone(),
        FallbackKvConfig::new("presence").capacity(10),
    );
    server
        .command(&["LPUSH", "sc:kv:presence:u1", "x"])
        .unwrap();
    let e = kv.get("u1").await.unwrap_err();
    assert!(e.is_command_error(), "{e}");
    assert_eq!(
        redis.health(),
        Health::Healthy,
        "WRONGTYPE is not a health signal"
    );
}

async fn next_message(
    sub: &mut secureconnect_redis_fallback::pubsub::Subscription,
    within: Duration,
) -> Option<secureconnect_redis_fallback::pubsub::Message> {
    tokio::time::timeout(within, sub.recv())
        .await
        .ok()
        .flatten()
}

#[tokio::test]
async fn pubsub_goes_through_redis_falls_back_in_process_and_resubscribes() {
    let mut server = RedisServer::start().unwrap();
    let (redis_a, redis_b) = (client(&server.url()).await, client(&server.url()).await);
    let a = FallbackPubSub::new(
        redis_a.clone(),
        FallbackPubSubConfig::default().capacity(64),
    );
    let b = FallbackPubSub::new(
        redis_b.clone(),
        FallbackPubSubConfig::default().capacity(64),
    );
    let mut a_room = a.subscribe("room:1");
    let mut b_room = b.subscribe("room:1");

    // Wait until both subscriber connections are subscribed in Redis.
    let mut subscribed = false;
    for _ in 0..50 {
        if let Ok(Reply::Array(items)) = server.command(&["PUBSUB", "NUMSUB", "room:1"]) {
            if items.get(1) == Some(&Reply::Integer(2)) {
                subscribed = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(subscribed);

    assert_eq!(
        b.publish("room:1", b"hello").await.unwrap(),
        Delivery::Redis(2)
    );
    let got = next_message(&mut a_room, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!((&*got.payload, got.via_redis), (&b"hello"[..], true));
    assert_eq!(
        &*next_message(&mut b_room, Duration::from_secs(2))
            .await
            .unwrap()
            .payload,
        b"hello"
    );

    server.kill().unwrap();
    assert_eq!(
        a.publish("room:1", b"local").await.unwrap(),
        Delivery::Local(1)
    );
    let got = next_message(&mut a_room, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!((&*got.payload, got.via_redis), (&b"local"[..], false));
    assert!(
        next_message(&mut b_room, Duration::from_millis(200))
            .await
            .is_none(),
        "another instance cannot see in-process messages"
    );

    server.restart().unwrap();
    healthy(&redis_a).await;
    healthy(&redis_b).await;
    // Once resubscribed, messages from the other instance arrive through Redis again.
    let mut through_redis = false;
    for i in 0..50 {
        b.publish("room:1", format!("again-{i}").as_bytes())
            .await
            .unwrap();
        if let Some(m) = next_message(&mut a_room, Duration::from_millis(100)).await {
            if m.via_redis {
                through_redis = true;
                break;
            }
        }
    }
    assert!(through_redis, "resubscribed after Redis came back");
    assert_eq!(a_room.skipped(), 0);
}

/// `PUBSUB NUMSUB <channel>` on the server.
fn numsub(server: &mut RedisServer, channel: &str) -> Option<i64> {
    match server.command(&["PUBSUB", "NUMSUB", channel]).ok()? {
        Reply::Array(items) => match items.get(1) {
            Some(Reply::Integer(n)) => Some(*n),
            _ => None,
        },
        _ => None,
    }
}

async fn numsub_becomes(server: &mut RedisServer, channel: &str, n: i64) -> bool {
    for _ in 0..250 {
        if numsub(server, channel) == Some(n) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn a_channel_is_dropped_and_unsubscribed_with_its_last_subscriber() {
    let mut server = RedisServer::start().unwrap();
    let redis = client(&server.url()).await;
    let pubsub = FallbackPubSub::new(redis.clone(), FallbackPubSubConfig::default());
    let first = pubsub.subscribe("room:gone");
    let second = pubsub.subscribe("room:gone");
    let other = pubsub.subscribe("room:kept");
    assert!(numsub_becomes(&mut server, "room:gone", 1).await);
    assert!(numsub_becomes(&mut server, "room:kept", 1).await);
    assert_eq!(pubsub.channel_count(), 2);
    drop(first);
    assert_eq!(pubsub.channel_count(), 2, "one subscriber is left");
    drop(second);
    assert_eq!(pubsub.channel_count(), 1);
    assert!(
        numsub_becomes(&mut server, "room:gone", 0).await,
        "unsubscribed in Redis"
    );
    assert_eq!(
        numsub(&mut server, "room:kept"),
        Some(1),
        "the other channel stays"
    );
    // Subscribing again works, on a channel made anew.
    let again = pubsub.subscribe("room:gone");
    assert!(numsub_becomes(&mut server, "room:gone", 1).await);
    drop(again);
    drop(other);
    assert_eq!(pubsub.channel_count(), 0);

    // Publishing while Redis is away to channels nobody here listens to keeps nothing.
    server.kill().unwrap();
    for i in 0..100 {
        assert_eq!(
            pubsub.publish(&format!("room:{i}"), b"x").await.unwrap(),
            Delivery::Local(0)
        );
    }
    assert_eq!(pubsub.channel_count(), 0);
}
