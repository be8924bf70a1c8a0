//! Fencing against a real redis-server: a second process with the same node id, calls
//! adopted back and forth, ended calls written back by a process that missed the end,
//! a lost node-set update, a heartbeat over 20,000 calls. Epochs and versions never go
//! down.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use prometheus_client::registry::Registry;
use secureconnect_callstate::{
    CallState, CallStore, Participant, ParticipantState, RedisCallStore, RedisCallStoreConfig,
    RejoinToken,
};
use secureconnect_redis_fallback::redis;
use secureconnect_redis_fallback::testing::{FaultProxy, ProxyMode, RedisServer, Reply};
use secureconnect_redis_fallback::{Health, RedisClient, RedisClientConfig};

async fn client_at(url: String) -> RedisClient {
    RedisClient::connect(RedisClientConfig::new(url), &mut Registry::default())
        .await
        .unwrap()
}

async fn store(server: &RedisServer, node: &str) -> RedisCallStore {
    store_with(server, node, RedisCallStoreConfig::default()).await
}

async fn store_with(
    server: &RedisServer,
    node: &str,
    config: RedisCallStoreConfig,
) -> RedisCallStore {
    RedisCallStore::new(
        client_at(server.url()).await,
        node,
        config,
        &mut Registry::default(),
    )
    .unwrap()
}

fn participant(id: &str) -> Participant {
    Participant {
        id: id.into(),
        user_id: format!("user-{id}"),
        token_hash: RejoinToken::generate().hash(),
        joined_at_ms: 1,
        state: ParticipantState::Connected,
    }
}

async fn call(store: &RedisCallStore, id: &str) -> CallState {
    store.get(id).await.unwrap().unwrap()
}

fn integer(reply: Reply) -> i64 {
    match reply {
        Reply::Integer(i) => i,
        other => panic!("not an integer: {other:?}"),
    }
}

fn member(server: &mut RedisServer, node: &str, call: &str) -> bool {
    let set = format!("sc:node:{{{node}}}:calls");
    integer(server.command(&["SISMEMBER", &set, call]).unwrap()) == 1
}

/// The (epoch, version) pairs a call went through: neither ever goes down.
#[derive(Default)]
struct History(Vec<(u64, u64)>);

impl History {
    fn see(&mut self, call: &CallState) {
        if let Some(&(epoch, version)) = self.0.last() {
            assert!(
                call.epoch >= epoch && call.version >= version,
                "went down: ({epoch}, {version}) -> ({}, {})",
                call.epoch,
                call.version
            );
        }
        self.0.push((call.epoch, call.version));
    }
}

#[tokio::test]
async fn a_second_process_with_the_same_node_id_fences_out_the_first_by_recovering() {
    let mut server = RedisServer::start().unwrap();
    let old = store(&server, "node-a").await;
    let mut history = History::default();
    old.create("c").await.unwrap();
    old.join("c", participant("p1")).await.unwrap();
    old.join("c", participant("p2")).await.unwrap();
    let stale = call(&old, "c").await;
    history.see(&stale);

    // A rolling update: the new process starts with the same node id while the old
    // one still runs (or the old one was paused and resumes later).
    let incarnation = |server: &mut RedisServer| -> u64 {
        let value = server.command(&["GET", "sc:node:{node-a}:inc"]).unwrap();
        value.text().unwrap().parse().unwrap()
    };
    let old_incarnation = incarnation(&mut server);
    let new = store(&server, "node-a").await;
    let report = new.recover().await.unwrap();
    assert_eq!(report.calls.len(), 1);
    assert_eq!(report.calls[0].epoch, 1, "recovery writes no call");
    assert!(
        incarnation(&mut server) > old_incarnation,
        "the new process claimed a newer incarnation of the node id"
    );
    history.see(&call(&new, "c").await);

    let refused = |what: &str, e: secureconnect_callstate::Error| {
        assert!(e.is_not_owner(), "{what}: {e:?}");
    };
    refused(
        "join",
        old.join("c", participant("zombie")).await.unwrap_err(),
    );
    refused("leave", old.leave("c", "p1").await.unwrap_err());
    refused("put", old.put(&stale).await.unwrap_err());
    // Nor by writing back what it reads now: the fence is its incarnation.
    let read = call(&old, "c").await;
    assert_eq!(read.epoch, 1);
    refused("put of a fresh read", old.put(&read).await.unwrap_err());
    refused("end", old.end("c").await.unwrap_err());

    let now = call(&new, "c").await;
    history.see(&now);
    assert_eq!((now.owner.as_str(), now.epoch), ("node-a", 1));
    assert_eq!(
        now.participants.keys().collect::<Vec<_>>(),
        ["p1", "p2"],
        "nothing the old process sent was applied"
    );
    assert!(member(&mut server, "node-a", "c"), "the set keeps the call");

    // The new process works.
    new.join("c", participant("p3")).await.unwrap();
    history.see(&call(&new, "c").await);
    assert!(new.leave("c", "p1").await.unwrap().removed);
    let current = call(&new, "c").await;
    history.see(&current);
    new.put(&current).await.unwrap();
    history.see(&call(&new, "c").await);
    new.end("c").await.unwrap();
    assert_eq!(new.get("c").await.unwrap(), None);
    assert!(!member(&mut server, "node-a", "c"));
}

#[tokio::test]
async fn a_stale_put_never_lowers_the_epoch_after_adoptions_back_and_forth() {
    let server = RedisServer::start().unwrap();
    let mut history = History::default();
    // No heartbeat, so no lease: each node is adoptable at once.
    let a_old = store(&server, "node-a").await;
    let b = store(&server, "node-b").await;
    a_old.create("c").await.unwrap();
    a_old.join("c", participant("p1")).await.unwrap();
    a_old.join("c", participant("p2")).await.unwrap();
    let stale = call(&a_old, "c").await;
    history.see(&stale);
    assert_eq!(stale.epoch, 1);

    assert_eq!(b.adopt("node-a").await.unwrap(), ["c"]);
    let adopted = call(&b, "c").await;
    history.see(&adopted);
    assert_eq!((adopted.owner.as_str(), adopted.epoch), ("node-b", 2));

    let a_new = store(&server, "node-a").await;
    assert_eq!(a_new.adopt("node-b").await.unwrap(), ["c"]);
    let back = call(&a_new, "c").await;
    history.see(&back);
    assert_eq!((back.owner.as_str(), back.epoch), ("node-a", 3));

    // The stale node-a process writes its epoch-1 snapshot back: the owner matches
    // (node-a) but the epoch does not.
    let put = a_old.put(&stale).await;
    assert!(matches!(put, Err(ref e) if e.is_not_owner()), "{put:?}");
    let after = call(&a_new, "c").await;
    history.see(&after);
    assert_eq!(after, back, "nothing wiped, nothing changed");
    assert_eq!(after.epoch, 3);
    assert_eq!(after.participants.len(), 2);
    assert!(
        a_old
            .join("c", participant("zombie"))
            .await
            .is_err_and(|e| e.is_not_owner()),
        "the stale process lost the call"
    );
    a_new.join("c", participant("p3")).await.unwrap();
    let joined = call(&a_new, "c").await;
    history.see(&joined);
    assert_eq!(joined.participants.len(), 3);
}

#[tokio::test]
async fn an_ended_call_is_never_recreated_by_a_stale_put_or_create() {
    let mut server = RedisServer::start().unwrap();
    let a = store(&server, "node-a").await;
    let b = store(&server, "node-b").await;

    // Ended by its owner.
    a.create("ended").await.unwrap();
    a.join("ended", participant("p1")).await.unwrap();
    let stale = call(&a, "ended").await;
    a.end("ended").await.unwrap();
    assert!(a.put(&stale).await.is_err_and(|e| e.is_not_owner()));
    assert_eq!(a.get("ended").await.unwrap(), None);
    assert!(a
        .create("ended")
        .await
        .is_err_and(|e| e.is_already_exists()));
    assert_eq!(a.get("ended").await.unwrap(), None);
    assert!(!member(&mut server, "node-a", "ended"));
    let fence = server
        .command(&["HGET", "sc:call:{ended}:t", "ended"])
        .unwrap();
    assert_eq!(fence.text().as_deref(), Some("1"));
    let ttl = integer(server.command(&["PTTL", "sc:call:{ended}:t"]).unwrap());
    assert!(ttl > 0, "the tombstone expires: {ttl}");

    // Ended by its last leave.
    a.create("left").await.unwrap();
    a.join("left", participant("p1")).await.unwrap();
    let stale = call(&a, "left").await;
    assert!(a.leave("left", "p1").await.unwrap().call_ended);
    assert!(a.put(&stale).await.is_err_and(|e| e.is_not_owner()));
    assert_eq!(a.get("left").await.unwrap(), None);

    // Adopted, then ended by the adopter: the partitioned owner comes back.
    a.create("moved").await.unwrap();
    a.join("moved", participant("p1")).await.unwrap();
    a.join("moved", participant("p2")).await.unwrap();
    let stale = call(&a, "moved").await;
    assert_eq!(b.adopt("node-a").await.unwrap(), ["moved"]);
    b.end("moved").await.unwrap();
    let put = a.put(&stale).await;
    assert!(matches!(put, Err(ref e) if e.is_not_owner()), "{put:?}");
    assert_eq!(a.get("moved").await.unwrap(), None, "not resurrected");
    assert!(a
        .create("moved")
        .await
        .is_err_and(|e| e.is_already_exists()));
    assert_eq!(a.get("moved").await.unwrap(), None);
    assert!(!member(&mut server, "node-a", "moved"));
    assert!(!member(&mut server, "node-b", "moved"));

    // Adopted, then expired (its adopter died too): the fence still refuses the
    // epoch-1 snapshot.
    let a2 = store(&server, "node-a").await;
    a2.create("expired").await.unwrap();
    a2.join("expired", participant("p1")).await.unwrap();
    let stale = call(&a2, "expired").await;
    assert_eq!(b.adopt("node-a").await.unwrap(), ["expired"]);
    server
        .command(&["DEL", "sc:call:{expired}", "sc:call:{expired}:p"])
        .unwrap();
    assert!(a2.put(&stale).await.is_err_and(|e| e.is_not_owner()));
    assert_eq!(a2.get("expired").await.unwrap(), None);
}

#[tokio::test]
async fn a_call_whose_set_update_was_lost_is_still_recovered_and_adopted() {
    let mut server = RedisServer::start().unwrap();
    server.config_set("slowlog-log-slower-than", "0").unwrap();
    server.config_set("slowlog-max-len", "1000").unwrap();
    let short = RedisCallStoreConfig::default().lease_ttl(Duration::from_millis(200));
    let a = store_with(&server, "node-a", short.clone()).await;

    // The set is updated before the script, in the same round trip.
    server.command(&["SLOWLOG", "RESET"]).unwrap();
    a.create("c1").await.unwrap();
    let log = server.command(&["SLOWLOG", "GET", "10"]).unwrap();
    let names = command_names(&log);
    let sadd = names.iter().position(|n| n == "SADD");
    let script = names.iter().position(|n| n == "EVALSHA");
    assert!(
        matches!((sadd, script), (Some(s), Some(e)) if s > e),
        "SADD before EVALSHA (the log is newest first): {names:?}"
    );

    a.join("c1", participant("p1")).await.unwrap();
    a.create("c2").await.unwrap();
    a.join("c2", participant("p1")).await.unwrap();
    // A crash between the script and the set update, as the old order could leave.
    server
        .command(&["SREM", "sc:node:{node-a}:calls", "c1", "c2"])
        .unwrap();
    a.heartbeat().await.unwrap();
    assert!(member(&mut server, "node-a", "c1"), "the heartbeat re-adds");
    assert!(member(&mut server, "node-a", "c2"));

    // A restarted node-a recovers them.
    server
        .command(&["SREM", "sc:node:{node-a}:calls", "c1", "c2"])
        .unwrap();
    a.heartbeat().await.unwrap();
    drop(a);
    let restarted = store_with(&server, "node-a", short.clone()).await;
    let report = restarted.recover().await.unwrap();
    let mut ids: Vec<_> = report.calls.iter().map(|c| c.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["c1", "c2"]);
    drop(restarted);

    // Another node adopts them once the lease lapses; they end up in its set only,
    // and a lost update of the adopter's set is repaired by its heartbeat too.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let b = store_with(&server, "node-b", short).await;
    let mut adopted = b.adopt("node-a").await.unwrap();
    adopted.sort();
    assert_eq!(adopted, ["c1", "c2"]);
    assert!(member(&mut server, "node-b", "c1") && member(&mut server, "node-b", "c2"));
    assert!(!member(&mut server, "node-a", "c1") && !member(&mut server, "node-a", "c2"));
    server
        .command(&["SREM", "sc:node:{node-b}:calls", "c1"])
        .unwrap();
    b.heartbeat().await.unwrap();
    assert!(member(&mut server, "node-b", "c1"));
    let c1 = call(&b, "c1").await;
    assert_eq!((c1.owner.as_str(), c1.epoch), ("node-b", 2));
}

/// The command names in a `SLOWLOG GET` reply, newest first.
fn command_names(log: &Reply) -> Vec<String> {
    let Reply::Array(entries) = log else {
        panic!("{log:?}")
    };
    entries
        .iter()
        .filter_map(|entry| match entry {
            Reply::Array(fields) => match fields.get(3) {
                Some(Reply::Array(args)) => args.first().and_then(Reply::text),
                _ => None,
            },
            _ => None,
        })
        .map(|name| name.to_uppercase())
        .collect()
}

#[tokio::test]
async fn end_stops_the_refresh_even_when_the_write_fails_and_can_be_retried() {
    let mut server = RedisServer::start().unwrap();
    let proxy = FaultProxy::start(([127, 0, 0, 1], server.port()).into())
        .await
        .unwrap();
    let redis = client_at(proxy.url()).await;
    let s = RedisCallStore::new(
        redis.clone(),
        "node-a",
        RedisCallStoreConfig::default(),
        &mut Registry::default(),
    )
    .unwrap();
    s.create("c").await.unwrap();
    s.join("c", participant("p1")).await.unwrap();

    // The connection is reset: the script never reaches Redis.
    proxy.set_mode(ProxyMode::Reset);
    assert!(s.end("c").await.is_err());
    proxy.set_mode(ProxyMode::Forward);
    assert!(
        redis
            .wait_for(Health::Healthy, Duration::from_secs(10))
            .await
    );

    // A TTL above the call TTL: a heartbeat that still refreshed the call would lower it.
    server
        .command(&["PEXPIRE", "sc:call:{c}", "600000"])
        .unwrap();
    s.heartbeat().await.unwrap();
    let ttl = integer(server.command(&["PTTL", "sc:call:{c}"]).unwrap());
    assert!(ttl > 60_000, "the heartbeat no longer refreshes it: {ttl}");

    // The retry still carries the epoch, and ends the call.
    s.end("c").await.unwrap();
    assert_eq!(s.get("c").await.unwrap(), None);
    assert!(!member(&mut server, "node-a", "c"));
}

#[tokio::test]
async fn a_heartbeat_over_20000_calls_goes_in_chunks_and_failures_are_counted() {
    const CALLS: usize = 20_000;
    let mut server = RedisServer::start().unwrap();
    let mut registry = Registry::default();
    let redis = client_at(server.url()).await;
    let s = RedisCallStore::new(
        redis.clone(),
        "node-a",
        RedisCallStoreConfig::default(),
        &mut registry,
    )
    .unwrap();
    for chunk in (0..CALLS).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            let id = format!("c-{i}");
            pipe.cmd("HSET")
                .arg(format!("sc:call:{{{id}}}"))
                .arg(&[
                    "owner", "node-a", "epoch", "1", "version", "1", "created", "0", "schema", "1",
                ])
                .ignore();
            pipe.cmd("SADD")
                .arg("sc:node:{node-a}:calls")
                .arg(&id)
                .ignore();
        }
        redis.query_pipeline::<()>(&pipe).await.unwrap();
    }
    let report = s.recover().await.unwrap();
    assert_eq!(report.calls.len(), CALLS);
    assert!(report.calls.iter().all(|c| c.epoch == 1));

    // Every membership lost at once, every TTL about to lapse.
    server.command(&["DEL", "sc:node:{node-a}:calls"]).unwrap();
    server
        .command(&["PEXPIRE", "sc:call:{c-0}", "5000"])
        .unwrap();
    server
        .command(&["PEXPIRE", "sc:call:{c-19999}", "5000"])
        .unwrap();
    s.heartbeat().await.unwrap();
    assert_eq!(
        integer(
            server
                .command(&["SCARD", "sc:node:{node-a}:calls"])
                .unwrap()
        ),
        CALLS as i64
    );
    for key in ["sc:call:{c-0}", "sc:call:{c-19999}"] {
        assert!(integer(server.command(&["PTTL", key]).unwrap()) > 5000);
    }
    let metrics = |registry: &Registry| {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    };
    assert!(
        metrics(&registry).contains("call_heartbeat_failures_total 0"),
        "{}",
        metrics(&registry)
    );

    server.kill().unwrap();
    assert!(s.heartbeat().await.is_err());
    assert!(s.heartbeat().await.is_err());
    assert!(metrics(&registry).contains("call_heartbeat_failures_total 2"));
}

#[tokio::test]
async fn scripts_are_loaded_again_after_redis_forgets_them() {
    let mut server = RedisServer::start().unwrap();
    let a = store(&server, "node-a").await;
    let mut b = store(&server, "node-b").await;
    a.create("c").await.unwrap();
    for step in 0..4 {
        server.command(&["SCRIPT", "FLUSH"]).unwrap();
        match step {
            0 => drop(a.join("c", participant("p1")).await.unwrap()),
            1 => assert_eq!(b.adopt("node-a").await.unwrap(), ["c"]),
            2 => {
                // node-b restarted: the new process recovers the call it adopted.
                b = store(&server, "node-b").await;
                assert_eq!(b.recover().await.unwrap().calls.len(), 1);
            }
            _ => b.end("c").await.unwrap(),
        }
    }
    assert_eq!(b.get("c").await.unwrap(), None);
}

/// A recovery (retried, or run late) leaves alone the calls this process holds already
/// (it does not report them), and a process keeps its incarnation for life: recovering
/// again never fences out its own writes. The older process stays fenced out after the
/// call's keys are gone, and also when the incarnation key is lost (Redis restarted
/// empty): the newer process's next write sets it again.
#[tokio::test]
async fn recovery_leaves_this_process_calls_alone_and_the_old_process_stays_fenced() {
    let mut server = RedisServer::start().unwrap();
    let first = store(&server, "node-a").await;
    first.create("old").await.unwrap();
    first.join("old", participant("p1")).await.unwrap();
    let stale = call(&first, "old").await;

    // The same node id, restarted: it makes a call of its own, then recovers, twice.
    let second = store(&server, "node-a").await;
    second.create("mine").await.unwrap();
    let report = second.recover().await.unwrap();
    let recovered: Vec<&str> = report.calls.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(recovered, ["old"], "only the calls it did not hold");
    assert!(second.recover().await.unwrap().calls.is_empty());
    second.join("mine", participant("p2")).await.unwrap();
    second.join("old", participant("p3")).await.unwrap();

    // Once the call's keys are gone, the first process's put is refused.
    server
        .command(&["DEL", "sc:call:{old}", "sc:call:{old}:p"])
        .unwrap();
    let refused = first.put(&stale).await.unwrap_err();
    assert!(refused.is_not_owner(), "{refused:?}");
    assert_eq!(second.get("old").await.unwrap(), None);

    // The incarnation key is lost: the newer process's write sets it again, and the
    // older one is still refused.
    server.command(&["DEL", "sc:node:{node-a}:inc"]).unwrap();
    second.join("mine", participant("p4")).await.unwrap();
    let refused = first.create("new").await.unwrap_err();
    assert!(refused.is_not_owner(), "{refused:?}");
    assert!(second.heartbeat().await.is_ok());
    let superseded = first.heartbeat().await.unwrap_err();
    assert!(superseded.is_superseded(), "{superseded:?}");
    assert_eq!(superseded.node(), Some("node-a"));
}

/// A create whose reply is lost (it reached Redis after the client gave up) leaves a
/// call this store holds no epoch for: its `end` still ends it in Redis (this node owns
/// it, and the incarnation makes this process its only writer), so a restart cannot
/// bring it back. A call of another node is still refused.
#[tokio::test]
async fn an_end_after_a_create_whose_reply_was_lost_ends_the_call() {
    let mut server = RedisServer::start().unwrap();
    let proxy = FaultProxy::start(([127, 0, 0, 1], server.port()).into())
        .await
        .unwrap();
    let redis = RedisClient::connect(
        RedisClientConfig::new(proxy.url()).call_timeout(Duration::from_millis(200)),
        &mut Registry::default(),
    )
    .await
    .unwrap();
    let s = RedisCallStore::new(
        redis.clone(),
        "node-a",
        RedisCallStoreConfig::default(),
        &mut Registry::default(),
    )
    .unwrap();
    s.create("warm").await.unwrap(); // the incarnation is claimed, the scripts loaded

    proxy.set_mode(ProxyMode::Delay(Duration::from_millis(600)));
    let lost = s.create("c").await.unwrap_err();
    assert!(lost.is_unavailable(), "{lost:?}");
    tokio::time::sleep(Duration::from_millis(900)).await;
    proxy.set_mode(ProxyMode::Forward);
    assert!(
        redis
            .wait_for(Health::Healthy, Duration::from_secs(10))
            .await
    );
    assert!(
        s.get("c").await.unwrap().is_some(),
        "the create reached Redis after the client gave up"
    );

    s.end("c").await.unwrap();
    assert_eq!(s.get("c").await.unwrap(), None);
    assert_eq!(
        server
            .command(&["HGET", "sc:call:{c}:t", "ended"])
            .unwrap()
            .text(),
        Some("1".to_owned()),
        "a tombstone: the id is not reused"
    );
    assert!(!member(&mut server, "node-a", "c"));

    let other = store(&server, "node-b").await;
    other.create("theirs").await.unwrap();
    assert!(s.end("theirs").await.unwrap_err().is_not_owner());
    assert!(other.get("theirs").await.unwrap().is_some());
}

/// The incarnation key is lost (Redis restarted empty): a process started after the
/// loss still claims a higher incarnation than one started before, so the older one
/// setting its own back cannot fence out the newer one; and the older one's heartbeat
/// no longer keeps the node's lease alive.
#[tokio::test]
async fn a_lost_incarnation_key_still_lets_the_newest_process_win() {
    let mut server = RedisServer::start().unwrap();
    let first = store(&server, "node-a").await;
    first.create("c0").await.unwrap();
    let second = store(&server, "node-a").await;
    second.create("c1").await.unwrap();
    server.command(&["FLUSHALL"]).unwrap();

    // The third process claims after the loss; the second then holds on to its own.
    let third = store(&server, "node-a").await;
    assert!(third.recover().await.unwrap().calls.is_empty());
    let held = second.heartbeat().await.unwrap_err();
    assert!(held.is_superseded(), "{held:?}");
    third.create("c2").await.unwrap();
    third.heartbeat().await.unwrap();
    let refused = second.create("c3").await.unwrap_err();
    assert!(refused.is_not_owner(), "{refused:?}");

    // Only the newest process keeps the lease alive.
    server.command(&["DEL", "sc:node:{node-a}:lease"]).unwrap();
    assert!(second.heartbeat().await.unwrap_err().is_superseded());
    assert!(first.heartbeat().await.unwrap_err().is_superseded());
    assert_eq!(
        integer(
            server
                .command(&["EXISTS", "sc:node:{node-a}:lease"])
                .unwrap()
        ),
        0,
        "a superseded process renewed the lease"
    );
    third.heartbeat().await.unwrap();
    assert_eq!(
        integer(
            server
                .command(&["EXISTS", "sc:node:{node-a}:lease"])
                .unwrap()
        ),
        1
    );
}

/// A superseded process cannot end a call it no longer holds (no epoch, its create's
/// outcome known), even when the call's owner is its node id: the newest process's
/// call lives on.
#[tokio::test]
async fn a_superseded_process_cannot_end_a_call_it_does_not_hold() {
    let server = RedisServer::start().unwrap();
    let old = store(&server, "node-a").await;
    old.create("c").await.unwrap();
    let new = store(&server, "node-a").await;
    assert_eq!(new.recover().await.unwrap().calls.len(), 1);
    old.forget("c");
    let refused = old.end("c").await.unwrap_err();
    assert!(refused.is_not_owner(), "{refused:?}");
    assert!(new.get("c").await.unwrap().is_some());
    new.join("c", participant("p1")).await.unwrap();
}

/// A superseded adopter takes nothing and leaves the dead node's set as it was, so the
/// newest process of its node id (or any other node) adopts the calls.
#[tokio::test]
async fn a_superseded_adopter_leaves_the_calls_to_adopt_in_place() {
    let mut server = RedisServer::start().unwrap();
    let short = RedisCallStoreConfig::default().lease_ttl(Duration::from_millis(300));
    let dead = store_with(&server, "node-d", short).await;
    dead.create("c").await.unwrap();
    drop(dead);
    tokio::time::sleep(Duration::from_millis(400)).await;

    let zombie = store(&server, "node-x").await;
    zombie.create("mine").await.unwrap();
    let newest = store(&server, "node-x").await;
    newest.recover().await.unwrap();
    let refused = zombie.adopt("node-d").await.unwrap_err();
    assert!(refused.is_superseded(), "{refused:?}");
    assert!(
        member(&mut server, "node-d", "c"),
        "still the dead node's to adopt"
    );
    assert!(!member(&mut server, "node-x", "c"));
    assert_eq!(call(&newest, "c").await.owner, "node-d");

    assert_eq!(newest.adopt("node-d").await.unwrap(), ["c"]);
    assert_eq!(call(&newest, "c").await.owner, "node-x");
    assert!(!member(&mut server, "node-d", "c"));
}
