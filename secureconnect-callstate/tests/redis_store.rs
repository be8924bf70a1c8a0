//! The call store against a real redis-server.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use prometheus_client::registry::Registry;
use secureconnect_callstate::{
    CallHub, CallHubConfig, CallStore, Participant, ParticipantState, RedisCallStore,
    RedisCallStoreConfig, RejoinToken, Skipped,
};
use secureconnect_redis_fallback::testing::{RedisServer, Reply};
use secureconnect_redis_fallback::{Health, RedisClient, RedisClientConfig};

async fn client(server: &RedisServer) -> RedisClient {
    RedisClient::connect(
        RedisClientConfig::new(server.url()),
        &mut Registry::default(),
    )
    .await
    .unwrap()
}

async fn store(server: &RedisServer, node: &str, config: RedisCallStoreConfig) -> RedisCallStore {
    RedisCallStore::new(client(server).await, node, config, &mut Registry::default()).unwrap()
}

fn participant(id: &str, token: &RejoinToken) -> Participant {
    Participant {
        id: id.into(),
        user_id: format!("user-{id}"),
        token_hash: token.hash(),
        joined_at_ms: 1,
        state: ParticipantState::Connected,
    }
}

/// `KEYS` must never have been sent to this server.
fn assert_no_keys_command(server: &mut RedisServer) {
    let stats = server
        .command(&["INFO", "commandstats"])
        .unwrap()
        .text()
        .unwrap();
    assert!(stats.contains("cmdstat_"), "{stats}");
    assert!(!stats.contains("cmdstat_keys"), "KEYS was used:\n{stats}");
}

#[tokio::test]
async fn a_restarted_node_recovers_every_participant_awaiting_rejoin() {
    let mut server = RedisServer::start().unwrap();
    let mut tokens = Vec::new();
    let mut versions = Vec::new();
    {
        let before = store(&server, "video-1", RedisCallStoreConfig::default()).await;
        for c in 0..3 {
            let call = format!("call-{c}");
            before.create(&call).await.unwrap();
            for p in 0..4 {
                let token = RejoinToken::generate();
                before
                    .join(&call, participant(&format!("p{p}"), &token))
                    .await
                    .unwrap();
                tokens.push((call.clone(), format!("p{p}"), token));
            }
            versions.push(before.get(&call).await.unwrap().unwrap().version);
        }
        // The node dies here: no leave, no end, no clean-up.
    }

    let mut registry = Registry::default();
    let after = store(&server, "video-1", RedisCallStoreConfig::default()).await;
    let hub = CallHub::new(
        "video-1",
        Some(after.clone()),
        CallHubConfig::default(),
        &mut registry,
    )
    .unwrap();
    let report = hub.recover().await.unwrap();
    assert_eq!(report.calls.len(), 3);
    assert!(report.skipped.is_empty());
    let participants: usize = hub.calls().iter().map(|c| c.participants.len()).sum();
    assert_eq!(participants, 12);
    assert!(hub
        .calls()
        .iter()
        .flat_map(|c| c.participants.values())
        .all(|p| p.state == ParticipantState::AwaitingRejoin));
    for (call, version) in hub
        .calls()
        .iter()
        .map(|c| (c.id.clone(), c.version))
        .collect::<Vec<_>>()
    {
        let index: usize = call.trim_start_matches("call-").parse().unwrap();
        assert_eq!(version, versions[index]);
    }

    let (call, participant_id, token) = &tokens[0];
    let wrong = RejoinToken::from_client("guess");
    assert!(matches!(
        hub.rejoin(call, participant_id, &format!("user-{participant_id}"), &wrong).await,
        Err(e) if e.is_bad_token()
    ));
    assert!(
        matches!(
            hub.rejoin(call, participant_id, &format!("user-{participant_id}"), &tokens[1].2).await,
            Err(e) if e.is_bad_token()
        ),
        "another participant's token is refused"
    );
    let back = hub
        .rejoin(
            call,
            participant_id,
            &format!("user-{participant_id}"),
            token,
        )
        .await
        .unwrap();
    assert_eq!(back.state, ParticipantState::Connected);
    // Those who do not come back within the grace period are removed.
    assert_eq!(hub.expire_awaiting(Duration::ZERO).await, 11);
    assert_eq!(hub.get(call).unwrap().participants.len(), 1);

    // Versions only grow, in Redis too.
    after
        .join(call, participant("p9", &RejoinToken::generate()))
        .await
        .unwrap();
    let now = after.get(call).await.unwrap().unwrap().version;
    assert!(now > versions[0], "{now} > {}", versions[0]);
    assert_no_keys_command(&mut server);
}

#[tokio::test]
async fn a_surviving_node_adopts_the_calls_of_a_dead_one_and_fences_it_off() {
    let mut server = RedisServer::start().unwrap();
    let short = RedisCallStoreConfig::default().lease_ttl(Duration::from_millis(300));
    let a = store(&server, "node-a", short.clone()).await;
    let b = store(&server, "node-b", short).await;
    a.create("call-x").await.unwrap();
    a.join("call-x", participant("p1", &RejoinToken::generate()))
        .await
        .unwrap();
    a.heartbeat().await.unwrap();
    assert!(
        matches!(b.adopt("node-a").await, Err(e) if e.is_not_owner()),
        "lease alive"
    );

    // A stops heartbeating; its lease lapses.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(b.adopt("node-a").await.unwrap(), vec!["call-x".to_owned()]);
    let call = b.get("call-x").await.unwrap().unwrap();
    assert_eq!((call.owner.as_str(), call.epoch), ("node-b", 2));
    assert_eq!(call.participants.len(), 1);

    // A's late write is refused; B's goes through.
    let late = a
        .join("call-x", participant("p2", &RejoinToken::generate()))
        .await;
    assert!(matches!(late, Err(ref e) if e.is_not_owner()), "{late:?}");
    assert!(matches!(
        a.leave("call-x", "p1").await,
        Err(e) if e.is_not_owner()
    ));
    b.join("call-x", participant("p3", &RejoinToken::generate()))
        .await
        .unwrap();
    assert_eq!(
        b.get("call-x").await.unwrap().unwrap().participants.len(),
        2
    );
    assert_eq!(
        b.list_node_calls().await.unwrap(),
        vec!["call-x".to_owned()]
    );
    assert!(a.list_node_calls().await.unwrap().is_empty());
    assert_no_keys_command(&mut server);
}

#[tokio::test]
async fn concurrent_joins_and_duplicate_leaves_give_exact_counts_and_versions() {
    let mut server = RedisServer::start().unwrap();
    let s = store(&server, "node-a", RedisCallStoreConfig::default()).await;
    s.create("busy").await.unwrap();
    let joins = (0..100).map(|i| {
        let s = s.clone();
        tokio::spawn(async move {
            s.join(
                "busy",
                participant(&format!("p{i}"), &RejoinToken::generate()),
            )
            .await
        })
    });
    for j in joins.collect::<Vec<_>>() {
        j.await.unwrap().unwrap();
    }
    let leaves = (0..50).flat_map(|i| [i, i]).map(|i| {
        let s = s.clone();
        tokio::spawn(async move { s.leave("busy", &format!("p{i}")).await })
    });
    let mut removed = 0;
    for l in leaves.collect::<Vec<_>>() {
        if l.await.unwrap().unwrap().removed {
            removed += 1;
        }
    }
    assert_eq!(
        removed, 50,
        "each participant leaves once; duplicates change nothing"
    );
    let call = s.get("busy").await.unwrap().unwrap();
    assert_eq!(call.participants.len(), 50);
    let left: BTreeSet<_> = call.participants.keys().cloned().collect();
    assert!((50..100).all(|i| left.contains(&format!("p{i}"))));
    assert_eq!(call.version, 1 + 100 + 50, "created, 100 joins, 50 leaves");
    assert_no_keys_command(&mut server);
}

#[tokio::test]
async fn the_last_leave_ends_the_call() {
    let server = RedisServer::start().unwrap();
    let s = store(&server, "node-a", RedisCallStoreConfig::default()).await;
    s.create("c").await.unwrap();
    s.join("c", participant("p1", &RejoinToken::generate()))
        .await
        .unwrap();
    let out = s.leave("c", "p1").await.unwrap();
    assert!(out.call_ended);
    assert_eq!(s.get("c").await.unwrap(), None);
    assert!(s.list_node_calls().await.unwrap().is_empty());
    assert!(matches!(
        s.create("bad{id}").await,
        Err(e) if e.is_invalid_id()
    ));
}

#[tokio::test]
async fn abandoned_calls_expire_and_dangling_members_are_cleaned() {
    let mut server = RedisServer::start().unwrap();
    let config = RedisCallStoreConfig::default().call_ttl(Duration::from_millis(300));
    {
        let s = store(&server, "node-a", config.clone()).await;
        s.create("old").await.unwrap();
        s.join("old", participant("p1", &RejoinToken::generate()))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        server
            .command(&["EXISTS", "sc:call:{old}", "sc:call:{old}:p"])
            .unwrap(),
        Reply::Integer(0)
    );
    assert_eq!(
        server
            .command(&["SISMEMBER", "sc:node:{node-a}:calls", "old"])
            .unwrap(),
        Reply::Integer(1),
        "the set still names it"
    );
    let s = store(&server, "node-a", config).await;
    let report = s.recover().await.unwrap();
    assert!(report.calls.is_empty());
    assert_eq!(report.dangling_removed, 1);
    assert_eq!(
        server
            .command(&["SISMEMBER", "sc:node:{node-a}:calls", "old"])
            .unwrap(),
        Reply::Integer(0)
    );
    assert_no_keys_command(&mut server);
}

#[tokio::test]
async fn corrupted_entries_are_skipped_counted_and_the_rest_recovers() {
    let mut server = RedisServer::start().unwrap();
    {
        let s = store(&server, "node-a", RedisCallStoreConfig::default()).await;
        for c in ["good", "bad-json", "bad-schema", "bad-type", "no-owner"] {
            s.create(c).await.unwrap();
            s.join(c, participant("p1", &RejoinToken::generate()))
                .await
                .unwrap();
        }
    }
    server
        .command(&["HSET", "sc:call:{bad-json}:p", "p1", "{not json"])
        .unwrap();
    server
        .command(&["HSET", "sc:call:{bad-schema}", "schema", "99"])
        .unwrap();
    server.command(&["DEL", "sc:call:{bad-type}"]).unwrap();
    server
        .command(&["SET", "sc:call:{bad-type}", "a string"])
        .unwrap();
    server
        .command(&["HDEL", "sc:call:{no-owner}", "owner"])
        .unwrap();

    let mut registry = Registry::default();
    let hub = CallHub::new(
        "node-a",
        Some(store(&server, "node-a", RedisCallStoreConfig::default()).await),
        CallHubConfig::default(),
        &mut registry,
    )
    .unwrap();
    let report = hub.recover().await.unwrap();
    assert_eq!(
        report
            .calls
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>(),
        vec!["good"]
    );
    let mut reasons: Vec<(String, String)> = report
        .skipped
        .iter()
        .map(|s| match s {
            Skipped::Corrupt { call, reason } => (call.clone(), reason.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(
        reasons[0].0 == "bad-json" && reasons[0].1.contains("bad JSON"),
        "{reasons:?}"
    );
    assert!(reasons[1].0 == "bad-schema" && reasons[1].1.contains("schema version 99"));
    assert!(reasons[2].0 == "bad-type" && reasons[2].1.contains("wrong key type"));
    assert!(reasons[3].0 == "no-owner" && reasons[3].1.contains("owner"));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("call_recovery_calls_total{outcome=\"corrupt\"} 4"),
        "{text}"
    );
    assert!(text.contains("call_recovery_calls_total{outcome=\"recovered\"} 1"));
    assert_no_keys_command(&mut server);
}

#[tokio::test]
async fn redis_killed_mid_call_then_state_is_written_back() {
    let mut server = RedisServer::start().unwrap();
    let s = store(&server, "node-a", RedisCallStoreConfig::default()).await;
    let redis = s.redis().clone();
    let mut registry = Registry::default();
    let hub = CallHub::new(
        "node-a",
        Some(s.clone()),
        CallHubConfig::default(),
        &mut registry,
    )
    .unwrap();
    hub.create("live").await.unwrap();
    let (p1, _) = hub.join("live", "alice").await.unwrap();
    let (_p2, _) = hub.join("live", "bob").await.unwrap();
    hub.create("short").await.unwrap();
    let (p3, _) = hub.join("short", "carol").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.get("live").await.unwrap().unwrap().participants.len(), 2);

    server.kill().unwrap();
    // Signaling goes on in memory.
    let (p4, _) = hub.join("live", "dave").await.unwrap();
    hub.leave("live", &p1).await.unwrap();
    hub.leave("short", &p3).await.unwrap(); // ends "short"
    hub.create("new").await.unwrap();
    hub.join("new", "erin").await.unwrap();
    assert_eq!(hub.get("live").unwrap().participants.len(), 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(hub.needs_write_back());

    server.restart().unwrap();
    assert!(
        redis
            .wait_for(Health::Healthy, Duration::from_secs(3))
            .await
    );
    for _ in 0..60 {
        if !hub.needs_write_back() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!hub.needs_write_back(), "written back");
    for call in hub.calls() {
        let stored = s.get(&call.id).await.unwrap().unwrap();
        let ids = |c: &secureconnect_callstate::CallState| {
            c.participants.keys().cloned().collect::<Vec<_>>()
        };
        assert_eq!(ids(&stored), ids(&call), "call {}", call.id);
        assert_eq!(stored.owner, "node-a");
    }
    assert_eq!(s.get("short").await.unwrap(), None);
    let mut owned = s.list_node_calls().await.unwrap();
    owned.sort();
    assert_eq!(owned, vec!["live".to_owned(), "new".to_owned()]);
    assert!(hub.get("live").unwrap().participants.contains_key(&p4));
    assert_no_keys_command(&mut server);
}

#[tokio::test]
async fn signals_reach_the_addressed_participants() {
    let mut registry = Registry::default();
    let hub = CallHub::new("node-a", None, CallHubConfig::default(), &mut registry).unwrap();
    hub.create("c").await.unwrap();
    let (a, _) = hub.join("c", "alice").await.unwrap();
    let (b, _) = hub.join("c", "bob").await.unwrap();
    let mut to_a = hub.subscribe("c", &a).unwrap();
    let mut to_b = hub.subscribe("c", &b).unwrap();
    hub.relay(
        "c",
        secureconnect_callstate::Signal {
            from: a.clone(),
            to: Some(b.clone()),
            payload: raw(r#"{"sdp":"offer"}"#),
        },
    )
    .unwrap();
    hub.relay(
        "c",
        secureconnect_callstate::Signal {
            from: b.clone(),
            to: None,
            payload: raw("null"),
        },
    )
    .unwrap();
    assert_eq!(
        to_b.recv().await.unwrap().payload.get(),
        r#"{"sdp":"offer"}"#
    );
    assert_eq!(to_a.recv().await.unwrap().payload.get(), "null");
    assert!(hub
        .relay(
            "c",
            secureconnect_callstate::Signal {
                from: "nobody".into(),
                to: None,
                payload: raw("{}")
            }
        )
        .is_err());
}

#[tokio::test]
async fn a_redis_restarted_empty_gets_the_calls_back_even_without_changes_meanwhile() {
    let mut server = RedisServer::start().unwrap();
    let s = store(&server, "node-a", RedisCallStoreConfig::default()).await;
    let redis = s.redis().clone();
    let mut registry = Registry::default();
    let hub = CallHub::new(
        "node-a",
        Some(s.clone()),
        CallHubConfig::default(),
        &mut registry,
    )
    .unwrap();
    hub.create("quiet").await.unwrap();
    hub.join("quiet", "alice").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(s.get("quiet").await.unwrap().is_some());

    // Redis dies and comes back empty; nothing changed in the call meanwhile.
    server.kill().unwrap();
    let _ = s.get("quiet").await; // a call notices the outage
    assert!(
        redis
            .wait_for(Health::Degraded, Duration::from_secs(3))
            .await
    );
    server.restart().unwrap();
    assert!(
        redis
            .wait_for(Health::Healthy, Duration::from_secs(3))
            .await
    );
    let mut back = false;
    for _ in 0..60 {
        if s.get("quiet")
            .await
            .unwrap()
            .is_some_and(|c| c.participants.len() == 1)
        {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "the hub wrote the call back into the empty Redis");
    assert_no_keys_command(&mut server);
}

fn raw(json: &str) -> std::sync::Arc<serde_json::value::RawValue> {
    serde_json::value::RawValue::from_string(json.to_owned())
        .unwrap()
        .into()
}

/// A full write-back's puts go pipelined; each call gets its own outcome (a call
/// another node owns and a call that ended are refused, the others written), and an
/// outage fails every call not written, as unavailable.
#[tokio::test]
async fn put_all_answers_each_call_and_fails_the_rest_on_an_outage() {
    let mut server = RedisServer::start().unwrap();
    let config = RedisCallStoreConfig::default().heartbeat_batch(2);
    let a = store(&server, "node-a", config.clone()).await;
    let b = store(&server, "node-b", config).await;
    let token = RejoinToken::generate();
    // Two calls node-a loses while Redis is away: "theirs" is adopted by node-b (its
    // lease key is removed, as if it had lapsed), "ended" is adopted and ended there.
    let mut lost = Vec::new();
    for id in ["theirs", "ended"] {
        a.create(id).await.unwrap();
        a.join(id, participant("p1", &token)).await.unwrap();
        lost.push(a.get(id).await.unwrap().unwrap());
    }
    server.command(&["DEL", "sc:node:{node-a}:lease"]).unwrap();
    assert_eq!(b.adopt("node-a").await.unwrap().len(), 2);
    b.end("ended").await.unwrap();
    // And three it still has, changed in memory (their participant left).
    let mut mine = Vec::new();
    for id in ["d1", "d2", "d3"] {
        a.create(id).await.unwrap();
        a.join(id, participant("p1", &token)).await.unwrap();
        let mut call = a.get(id).await.unwrap().unwrap();
        call.participants.clear();
        mine.push(call);
    }
    let mut batch = mine.clone();
    batch.insert(1, lost[0].clone());
    batch.insert(3, lost[1].clone());
    let outcomes = a.put_all(&batch).await;
    let refused: Vec<bool> = outcomes
        .iter()
        .map(|o| o.as_ref().is_err_and(|e| e.is_not_owner()))
        .collect();
    assert_eq!(refused, [false, true, false, true, false], "{outcomes:?}");
    for call in &mine {
        let now = a.get(&call.id).await.unwrap().unwrap();
        assert!(now.participants.is_empty(), "written: {now:?}");
        assert!(now.version > call.version);
    }
    assert_eq!(b.get("theirs").await.unwrap().unwrap().owner, "node-b");
    assert_eq!(a.get("ended").await.unwrap(), None);

    server.kill().unwrap();
    let outcomes = a.put_all(&mine).await;
    assert_eq!(outcomes.len(), mine.len());
    assert!(
        outcomes
            .iter()
            .all(|o| o.as_ref().is_err_and(|e| e.is_unavailable())),
        "{outcomes:?}"
    );
}
