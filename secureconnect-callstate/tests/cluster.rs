//! The call store, unchanged, on a real Redis Cluster (3 masters, 3 replicas): every
//! script is single-slot, two processes with one node id fence each other as on one
//! Redis (the incarnation claimed in every slot), adoption moves calls between nodes,
//! and `KEYS` is never sent to any node.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use secureconnect_callstate::{
    CallStore, Participant, ParticipantState, RedisCallStore, RedisCallStoreConfig, RejoinToken,
};
use secureconnect_redis_fallback::cluster::key_slot;
use secureconnect_redis_fallback::testing::{RedisCluster, Reply};
use secureconnect_redis_fallback::{Health, RedisClient, RedisClientConfig};

fn block<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

async fn client(cluster: &RedisCluster) -> RedisClient {
    // No node fails in these tests: a call deadline that the 16 384-slot claim keeps
    // in a debug build on a busy machine (the default, 250 ms, is meant for release).
    let redis = RedisClient::new(
        RedisClientConfig::cluster(cluster.urls()).call_timeout(Duration::from_secs(2)),
        &mut Registry::default(),
    )
    .unwrap();
    assert!(
        redis
            .wait_for(Health::Healthy, Duration::from_secs(30))
            .await
    );
    redis
}

async fn store(cluster: &RedisCluster, node: &str) -> RedisCallStore {
    RedisCallStore::new(
        client(cluster).await,
        node,
        RedisCallStoreConfig::default(),
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

/// Calls whose keys are on every master of the cluster.
fn call_ids(cluster: &mut RedisCluster, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("call-{i}")).collect();
    let masters: std::collections::HashSet<usize> = ids
        .iter()
        .map(|id| cluster.master_of(&format!("sc:call:{{{id}}}")).unwrap())
        .collect();
    assert_eq!(masters.len(), 3, "the calls are spread over every master");
    ids
}

/// `cmdstat_keys` on every running node: `KEYS` was never sent.
fn assert_no_keys_command(cluster: &mut RedisCluster) {
    for i in 0..6 {
        let node = cluster.node_mut(i);
        if node.pid().is_none() {
            continue;
        }
        let stats = node
            .command(&["INFO", "commandstats"])
            .unwrap()
            .text()
            .unwrap();
        assert!(
            !stats.contains("cmdstat_keys:"),
            "KEYS was sent to node {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_with_the_same_node_id_fences_out_the_first_in_every_slot() {
    let mut cluster = block(RedisCluster::start).unwrap();
    let ids = block(|| call_ids(&mut cluster, 30));
    let old = store(&cluster, "node-a").await;
    for id in &ids {
        old.create(id).await.unwrap();
        old.join(id, participant("p1")).await.unwrap();
        old.join(id, participant("p2")).await.unwrap();
    }
    let stale: Vec<_> = {
        let mut calls = Vec::new();
        for id in &ids {
            calls.push(old.get(id).await.unwrap().unwrap());
        }
        calls
    };

    // A rolling update: the new process recovers while the old one still runs.
    let new = store(&cluster, "node-a").await;
    let started = Instant::now();
    let report = new.recover().await.unwrap();
    eprintln!(
        "recovery of {} calls on the cluster (the incarnation claimed in 16384 slots): {:?}",
        report.calls.len(),
        started.elapsed()
    );
    assert_eq!(report.calls.len(), ids.len());
    assert!(
        report.calls.iter().all(|c| c.epoch == 1),
        "recovery writes no call"
    );

    for (id, stale) in ids.iter().zip(&stale) {
        let refused = |what: &str, e: secureconnect_callstate::Error| {
            assert!(e.is_not_owner(), "{what} {id}: {e:?}");
        };
        refused(
            "join",
            old.join(id, participant("zombie")).await.unwrap_err(),
        );
        refused("leave", old.leave(id, "p1").await.unwrap_err());
        refused("put", old.put(stale).await.unwrap_err());
    }
    for id in ids.iter().take(5) {
        assert!(old.end(id).await.unwrap_err().is_not_owner());
    }
    // A new call of the old process, in any slot: refused too.
    for i in 0..20 {
        let e = old.create(&format!("fresh-{i}")).await.unwrap_err();
        assert!(e.is_not_owner(), "{e:?}");
    }
    let superseded = old.heartbeat().await.unwrap_err();
    assert!(superseded.is_superseded(), "{superseded:?}");

    // Nothing the old process sent was applied; the new one works everywhere.
    for id in &ids {
        let now = new.get(id).await.unwrap().unwrap();
        assert_eq!(
            now.participants.keys().collect::<Vec<_>>(),
            ["p1", "p2"],
            "{id}"
        );
        new.join(id, participant("p3")).await.unwrap();
        assert!(new.leave(id, "p1").await.unwrap().removed);
        let current = new.get(id).await.unwrap().unwrap();
        new.put(&current).await.unwrap();
    }
    new.heartbeat().await.unwrap();
    for id in ids.iter().take(10) {
        new.end(id).await.unwrap();
        assert_eq!(new.get(id).await.unwrap(), None);
    }
    block(|| assert_no_keys_command(&mut cluster));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_slot_incarnation_key_is_set_again_and_the_old_process_stays_fenced() {
    let mut cluster = block(RedisCluster::start).unwrap();
    let ids = block(|| call_ids(&mut cluster, 12));
    let old = store(&cluster, "node-a").await;
    for id in &ids {
        old.create(id).await.unwrap();
    }
    let new = store(&cluster, "node-a").await;
    new.recover().await.unwrap();

    // Every slot's incarnation key of the node is lost (a failover that lost the
    // writes): the new process's writes and heartbeat set them again.
    let slots: Vec<u16> = ids
        .iter()
        .map(|id| key_slot(format!("sc:call:{{{id}}}").as_bytes()))
        .collect();
    let deleted = block(|| {
        let mut deleted = 0;
        for i in 0..6 {
            let node = cluster.node_mut(i);
            for &slot in &slots {
                let slot = slot.to_string();
                let Ok(Reply::Array(keys)) =
                    node.command(&["CLUSTER", "GETKEYSINSLOT", &slot, "100"])
                else {
                    continue;
                };
                for key in keys.iter().filter_map(Reply::text) {
                    if key.starts_with("sc:node:node-a:inc:")
                        && node.command(&["DEL", &key]).ok() == Some(Reply::Integer(1))
                    {
                        deleted += 1;
                    }
                }
            }
        }
        deleted
    });
    assert!(
        deleted >= 3,
        "the calls' slots had incarnation keys: {deleted}"
    );
    for id in &ids {
        new.join(id, participant("p1")).await.unwrap();
    }
    for id in &ids {
        let e = old.join(id, participant("zombie")).await.unwrap_err();
        assert!(e.is_not_owner(), "{e:?}");
    }
    new.heartbeat().await.unwrap();
    assert!(old.heartbeat().await.unwrap_err().is_superseded());
    block(|| assert_no_keys_command(&mut cluster));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adoption_across_slots_bumps_epochs_and_a_stale_put_is_refused() {
    let mut cluster = block(RedisCluster::start).unwrap();
    let ids = block(|| call_ids(&mut cluster, 30));
    let a = store(&cluster, "node-a").await;
    let b = store(&cluster, "node-b").await;
    for id in &ids {
        a.create(id).await.unwrap();
        a.join(id, participant("p1")).await.unwrap();
    }
    let stale = a.get(&ids[0]).await.unwrap().unwrap();
    // No heartbeat ran: node-a has no lease, so it can be adopted at once.
    let mut adopted = b.adopt("node-a").await.unwrap();
    adopted.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(adopted, expected);
    for id in &ids {
        let call = b.get(id).await.unwrap().unwrap();
        assert_eq!((call.owner.as_str(), call.epoch), ("node-b", 2), "{id}");
    }
    assert!(a.put(&stale).await.unwrap_err().is_not_owner());
    assert!(b.list_node_calls().await.unwrap().len() == ids.len());
    assert!(a.list_node_calls().await.unwrap().is_empty());
    block(|| assert_no_keys_command(&mut cluster));
}
