//! What ends on its own — dropped participants, empty calls, calls beyond a user's cap —
//! and recovery retried until Redis answers: in memory and against a real redis-server.

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::time::Duration;

use prometheus_client::registry::Registry;
use secureconnect_callstate::{
    CallHub, CallHubConfig, CallStore, Participant, ParticipantState, RedisCallStore,
    RedisCallStoreConfig, RejoinToken,
};
use secureconnect_redis_fallback::testing::{RedisServer, Reply};
use secureconnect_redis_fallback::{RedisClient, RedisClientConfig};

/// Waits up to `deadline` for `condition`; whether it came true.
async fn eventually<F: Future<Output = bool>>(
    deadline: Duration,
    mut condition: impl FnMut() -> F,
) -> bool {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() > until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn memory_hub(config: CallHubConfig) -> CallHub {
    CallHub::new("node-a", None, config, &mut Registry::default()).unwrap()
}

async fn redis_store(server: &RedisServer, node: &str) -> RedisCallStore {
    redis_store_with(node, RedisClientConfig::new(server.url())).await
}

/// [`redis_store`] with a client configured by `config`.
async fn redis_store_with(node: &str, config: RedisClientConfig) -> RedisCallStore {
    let client = RedisClient::connect(config, &mut Registry::default())
        .await
        .unwrap();
    // Fences of ended calls (which keep an id from being created again) expire soon
    // here, so that Redis can be seen to return to empty.
    RedisCallStore::new(
        client,
        node,
        RedisCallStoreConfig::default().fence_ttl(Duration::from_secs(2)),
        &mut Registry::default(),
    )
    .unwrap()
}

fn state_of(hub: &CallHub, call: &str, participant: &str) -> Option<ParticipantState> {
    Some(hub.get(call)?.participants.get(participant)?.state)
}

#[tokio::test]
async fn a_dropped_participant_awaits_rejoin_and_is_removed_after_the_grace() {
    let hub = memory_hub(CallHubConfig::default().rejoin_grace(Duration::from_millis(300)));
    hub.create_for("c", "alice").await.unwrap();
    let (a, token_a) = hub.join("c", "alice").await.unwrap();
    let (b, _) = hub.join("c", "bob").await.unwrap();
    assert_eq!(state_of(&hub, "c", &a), Some(ParticipantState::Connected));

    hub.disconnect("c", &a).unwrap();
    assert_eq!(
        state_of(&hub, "c", &a),
        Some(ParticipantState::AwaitingRejoin)
    );
    hub.disconnect("c", &a).unwrap(); // idempotent
    assert!(hub
        .disconnect("c", "nobody")
        .is_err_and(|e| e.is_no_participant()));
    assert!(hub.disconnect("gone", &a).is_err_and(|e| e.is_not_found()));

    // Back within the grace period: connected again, and not expired later.
    let back = hub.rejoin("c", &a, "alice", &token_a).await.unwrap();
    assert_eq!(back.state, ParticipantState::Connected);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(state_of(&hub, "c", &a), Some(ParticipantState::Connected));

    // Dropped again and not back: removed by the hub's own sweep; the call goes on.
    hub.disconnect("c", &a).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            state_of(&hub, "c", &a).is_none()
        })
        .await,
        "removed after the grace"
    );
    assert_eq!(state_of(&hub, "c", &b), Some(ParticipantState::Connected));
    // The last one dropped and gone too: the call ends.
    hub.disconnect("c", &b).unwrap();
    assert!(eventually(Duration::from_secs(10), || async { hub.get("c").is_none() }).await);
}

#[tokio::test]
async fn a_call_without_participants_ends_after_its_ttl() {
    let hub = memory_hub(CallHubConfig::default().empty_call_ttl(Duration::from_millis(300)));
    hub.create_for("empty", "alice").await.unwrap();
    hub.create_for("busy", "alice").await.unwrap();
    hub.join("busy", "alice").await.unwrap();
    assert_eq!(hub.creator("empty").as_deref(), Some("alice"));
    assert!(
        eventually(Duration::from_secs(10), || async {
            hub.get("empty").is_none()
        })
        .await,
        "the empty call ended"
    );
    assert_eq!(hub.creator("empty"), None);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        hub.get("busy").is_some(),
        "a call with a participant goes on"
    );
}

#[tokio::test]
async fn a_user_holds_at_most_calls_per_user_open_calls() {
    let hub = memory_hub(CallHubConfig::default().calls_per_user(2));
    assert_eq!(hub.calls_per_user(), 2);
    hub.create_for("a1", "alice").await.unwrap();
    hub.create_for("a2", "alice").await.unwrap();
    let refused = hub.create_for("a3", "alice").await.unwrap_err();
    assert!(refused.is_too_many_calls(), "{refused:?}");
    assert!(hub.get("a3").is_none());
    // A refused or failed creation takes no slot; another user has their own.
    assert!(hub
        .create_for("a1", "bob")
        .await
        .is_err_and(|e| e.is_already_exists()));
    hub.create_for("b1", "bob").await.unwrap();
    hub.create_for("b2", "bob").await.unwrap();
    // A call that ends frees its slot.
    hub.end("a1").await.unwrap();
    hub.create_for("a3", "alice").await.unwrap();
    assert!(hub
        .create_for("a4", "alice")
        .await
        .is_err_and(|e| e.is_too_many_calls()));
    // Concurrent creations by one user never go past the cap.
    let hub2 = memory_hub(CallHubConfig::default().calls_per_user(5));
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let hub = hub2.clone();
            tokio::spawn(async move { hub.create_for(&format!("c{i}"), "carol").await.is_ok() })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        created += usize::from(t.await.unwrap());
    }
    assert_eq!(created, 5);
}

#[tokio::test]
async fn a_rejoin_with_another_users_token_changes_nothing() {
    let hub = memory_hub(CallHubConfig::default().rejoin_grace(Duration::from_millis(300)));
    hub.create("c").await.unwrap();
    let (a, token_a) = hub.join("c", "alice").await.unwrap();
    hub.disconnect("c", &a).unwrap();
    let refused = hub.rejoin("c", &a, "mallory", &token_a).await.unwrap_err();
    assert!(refused.is_bad_token(), "{refused:?}");
    assert_eq!(
        state_of(&hub, "c", &a),
        Some(ParticipantState::AwaitingRejoin),
        "still awaiting its owner"
    );
    // And still expires: the refused rejoin did not take it off the awaiting list.
    assert!(eventually(Duration::from_secs(10), || async { hub.get("c").is_none() }).await);
}

#[tokio::test]
async fn every_rejoin_is_counted_by_its_outcome() {
    let mut registry = Registry::default();
    let hub = CallHub::new("node-a", None, CallHubConfig::default(), &mut registry).unwrap();
    let count = |outcome: &str| {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let line = format!("call_rejoins_total{{outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .map(|v| v.parse::<u64>().unwrap())
    };
    // Every outcome is exported before the first rejoin, so a dashboard has a series.
    for outcome in ["rejoined", "bad_token", "not_found", "recovering"] {
        assert_eq!(count(outcome), Some(0), "{outcome}");
    }
    hub.create("c").await.unwrap();
    let (a, token) = hub.join("c", "alice").await.unwrap();
    hub.disconnect("c", &a).unwrap();
    hub.rejoin("c", &a, "mallory", &token).await.unwrap_err();
    hub.rejoin("c", &a, "alice", &token).await.unwrap();
    hub.rejoin("c", "p-nobody", "alice", &token)
        .await
        .unwrap_err();
    hub.rejoin("no-such-call", &a, "alice", &token)
        .await
        .unwrap_err();
    assert_eq!(count("rejoined"), Some(1));
    assert_eq!(count("bad_token"), Some(1));
    assert_eq!(count("not_found"), Some(2));
    assert_eq!(count("recovering"), Some(0));
}

#[tokio::test]
async fn recovery_retries_until_redis_answers_and_rejoins_say_recovering_meanwhile() {
    let server = RedisServer::start().unwrap();
    let (call, participants) = {
        let store = redis_store(&server, "video-1").await;
        let hub = CallHub::new(
            "video-1",
            Some(store.clone()),
            CallHubConfig::default(),
            &mut Registry::default(),
        )
        .unwrap();
        hub.create_for("call-1", "alice").await.unwrap();
        let a = hub.join("call-1", "alice").await.unwrap();
        let b = hub.join("call-1", "bob").await.unwrap();
        assert!(
            eventually(Duration::from_secs(5), || async {
                store
                    .get("call-1")
                    .await
                    .is_ok_and(|c| c.is_some_and(|c| c.participants.len() == 2))
            })
            .await
        );
        ("call-1", [("alice", a), ("bob", b)])
        // The process dies here.
    };

    // Redis hangs while the service starts again.
    server.pause().unwrap();
    let store = redis_store(&server, "video-1").await;
    let hub = CallHub::new(
        "video-1",
        Some(store),
        CallHubConfig::default().recovery_wait(Duration::from_millis(200)),
        &mut Registry::default(),
    )
    .unwrap();
    hub.recover_in_background();
    assert!(hub.is_recovering());
    let (user, (p, token)) = &participants[0];
    let early = hub.rejoin(call, p, user, token).await.unwrap_err();
    assert!(early.is_recovering(), "{early:?}");
    assert!(!hub.wait_for_recovery(Duration::from_millis(300)).await);

    tokio::time::sleep(Duration::from_secs(1)).await;
    server.resume().unwrap();
    assert!(
        hub.wait_for_recovery(Duration::from_secs(20)).await,
        "recovered in the background once Redis answered"
    );
    assert!(!hub.is_recovering());
    for (user, (p, token)) in &participants {
        assert_eq!(
            state_of(&hub, call, p),
            Some(ParticipantState::AwaitingRejoin)
        );
        let back = hub.rejoin(call, p, user, token).await.unwrap();
        assert_eq!(back.state, ParticipantState::Connected);
    }
}

#[tokio::test]
async fn a_rejoin_during_recovery_waits_for_it() {
    let server = RedisServer::start().unwrap();
    let store = redis_store(&server, "video-1").await;
    {
        let hub = CallHub::new(
            "video-1",
            Some(store.clone()),
            CallHubConfig::default(),
            &mut Registry::default(),
        )
        .unwrap();
        hub.create("c").await.unwrap();
        let joined = hub.join("c", "alice").await.unwrap();
        assert!(
            eventually(Duration::from_secs(5), || async {
                store
                    .get("c")
                    .await
                    .is_ok_and(|c| c.is_some_and(|c| !c.participants.is_empty()))
            })
            .await
        );
        server.pause().unwrap();
        let store = redis_store(&server, "video-1").await;
        let hub = CallHub::new(
            "video-1",
            Some(store),
            CallHubConfig::default().recovery_wait(Duration::from_secs(20)),
            &mut Registry::default(),
        )
        .unwrap();
        hub.recover_in_background();
        let resume = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            server.resume().unwrap();
            server
        });
        let back = hub
            .rejoin("c", &joined.0, "alice", &joined.1)
            .await
            .unwrap();
        assert_eq!(back.state, ParticipantState::Connected);
        drop(resume.await.unwrap());
    }
}

#[tokio::test]
async fn a_thousand_abandoned_calls_leave_memory_and_redis_empty() {
    let mut server = RedisServer::start().unwrap();
    let store = redis_store(&server, "node-a").await;
    let hub = CallHub::new(
        "node-a",
        Some(store.clone()),
        CallHubConfig::default()
            .rejoin_grace(Duration::from_millis(500))
            .empty_call_ttl(Duration::from_millis(500))
            .calls_per_user(1000),
        &mut Registry::default(),
    )
    .unwrap();
    for i in 0..1000 {
        let call = format!("call-{i}");
        hub.create_for(&call, &format!("user-{}", i % 10))
            .await
            .unwrap();
        // Half never joined; the other half lost their connection.
        if i % 2 == 0 {
            let (p, _) = hub.join(&call, "alice").await.unwrap();
            hub.disconnect(&call, &p).unwrap();
        }
    }
    assert_eq!(hub.calls().len(), 1000);
    assert!(
        eventually(Duration::from_secs(10), || async {
            store.list_node_calls().await.is_ok_and(|c| !c.is_empty())
        })
        .await,
        "the calls reached redis"
    );
    assert!(
        eventually(Duration::from_secs(60), || async { hub.calls().is_empty() }).await,
        "{} calls left in memory",
        hub.calls().len()
    );
    let mut call_keys = usize::MAX;
    let empty = eventually(Duration::from_secs(60), || {
        call_keys = match server
            .command(&["SCAN", "0", "MATCH", "sc:call:*", "COUNT", "100000"])
            .unwrap()
        {
            Reply::Array(parts) => match parts.get(1) {
                Some(Reply::Array(keys)) => keys.len(),
                _ => usize::MAX,
            },
            _ => usize::MAX,
        };
        let keys = call_keys;
        let store = store.clone();
        async move { keys == 0 && store.list_node_calls().await.is_ok_and(|c| c.is_empty()) }
    })
    .await;
    assert!(empty, "{call_keys} call keys left in redis");
    // Every user may create again.
    hub.create_for("again", "user-0").await.unwrap();
}

/// Participants that rejoin, some of them dropping again at once, while the sweep runs:
/// the sweep removes only those still awaiting rejoin since the grace, never one that
/// rejoined (the check and the removal are one step under the call's lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_never_removes_a_participant_that_rejoined_meanwhile() {
    // The hub's own sweep (60 s grace) stays out of the way; this test sweeps itself.
    let hub = memory_hub(CallHubConfig::default());
    let grace = Duration::from_millis(500);
    hub.create("c").await.unwrap();
    hub.join("c", "anchor").await.unwrap();
    for round in 0..3 {
        let mut joined = Vec::new();
        for i in 0..1000 {
            joined.push(hub.join("c", &format!("user-{i}")).await.unwrap());
        }
        for (p, _) in &joined {
            hub.disconnect("c", p).unwrap();
        }
        tokio::time::sleep(grace + Duration::from_millis(20)).await;
        let rejoining = {
            let hub = hub.clone();
            let joined = joined.clone();
            tokio::spawn(async move {
                let mut back = Vec::new();
                for (i, (p, token)) in joined.iter().enumerate() {
                    let user = format!("user-{i}");
                    if hub.rejoin("c", p, &user, token).await.is_ok() {
                        // Half of them drop again at once: a fresh grace.
                        if i % 2 == 0 {
                            hub.disconnect("c", p).unwrap();
                        }
                        back.push(p.clone());
                    }
                }
                back
            })
        };
        let sweep = {
            let hub = hub.clone();
            tokio::spawn(async move { hub.expire_awaiting(grace).await })
        };
        let (back, removed) = (rejoining.await.unwrap(), sweep.await.unwrap());
        let call = hub.get("c").unwrap();
        let lost: Vec<_> = back
            .iter()
            .filter(|p| !call.participants.contains_key(*p))
            .collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} of {} rejoined participants removed",
            lost.len(),
            back.len()
        );
        assert_eq!(removed + back.len(), joined.len(), "round {round}");
        for (p, _) in &joined {
            let _ = hub.leave("c", p).await;
        }
    }
}

/// Joins racing the sweep of empty calls, at every offset: each join either fails (the
/// call ended first) or keeps its call (the check and the end are one step under the
/// call's lock).
#[test]
fn a_join_racing_the_empty_call_sweep_fails_or_keeps_its_call() {
    use std::sync::{Arc, Barrier};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let hub = runtime.block_on(async { memory_hub(CallHubConfig::default()) });
    let barrier = Arc::new(Barrier::new(2));
    let rounds = 5_000;
    let joiner = {
        let (hub, barrier, handle) = (hub.clone(), barrier.clone(), runtime.handle().clone());
        std::thread::spawn(move || {
            let mut lost = Vec::new();
            for round in 0..rounds {
                let call = format!("c{round}");
                barrier.wait(); // created
                for _ in 0..round % 2000 {
                    std::hint::spin_loop();
                }
                if let Ok((p, _)) = handle.block_on(hub.join(&call, "alice")) {
                    barrier.wait(); // swept
                    if hub.subscribe(&call, &p).is_err() {
                        lost.push(call);
                    }
                } else {
                    barrier.wait();
                }
                barrier.wait(); // checked
            }
            lost
        })
    };
    for round in 0..rounds {
        let call = format!("c{round}");
        runtime.block_on(hub.create(&call)).unwrap();
        barrier.wait();
        runtime.block_on(hub.expire_empty(Duration::ZERO));
        barrier.wait();
        barrier.wait();
        let _ = runtime.block_on(hub.end(&call));
    }
    let lost = joiner.join().unwrap();
    assert!(
        lost.is_empty(),
        "{} of {rounds} joins got a call that was then ended",
        lost.len()
    );
}

#[tokio::test]
async fn the_signals_of_an_ended_call_end() {
    let hub = memory_hub(CallHubConfig::default().empty_call_ttl(Duration::from_millis(100)));
    for how in ["end", "expiry"] {
        hub.create("c").await.unwrap();
        // A socket subscribed to the call, its participant gone or never there.
        let mut signals = hub.subscribe("c", "a-socket").unwrap();
        if how == "end" {
            hub.end("c").await.unwrap();
        }
        let next = tokio::time::timeout(Duration::from_secs(5), signals.recv()).await;
        assert!(
            matches!(next, Ok(None)),
            "{how}: the receiver ends with the call"
        );
    }
}

/// `n` calls (`c-<i>`) of `node` in Redis, two participants each (`p0` of
/// `user-<i>-0`, `p1` of `user-<i>-1`, both rejoining with `token`), written by a
/// process that then died.
async fn calls_left_by_a_dead_process(
    server: &RedisServer,
    node: &str,
    n: usize,
    token: &RejoinToken,
) {
    let store = redis_store_with(
        node,
        RedisClientConfig::new(server.url()).call_timeout(Duration::from_secs(2)),
    )
    .await;
    let writers: Vec<_> = (0..16)
        .map(|k| {
            let store = store.clone();
            let hash = token.hash();
            tokio::spawn(async move {
                for i in (k..n).step_by(16) {
                    let call = format!("c-{i}");
                    store.create(&call).await.unwrap();
                    for p in 0..2 {
                        let participant = Participant {
                            id: format!("p{p}"),
                            user_id: format!("user-{i}-{p}"),
                            token_hash: hash.clone(),
                            joined_at_ms: 0,
                            state: ParticipantState::Connected,
                        };
                        store.join(&call, participant).await.unwrap();
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
}

/// A restarted hub serves as soon as it has listed its calls: a rejoin loads its call
/// at once rather than waiting for every call to be read, and the calls loaded behind
/// come back exactly once — a call that ended after it was loaded on demand is not
/// brought back by the background load.
#[tokio::test]
async fn a_restarted_hub_serves_a_call_before_the_rest_is_loaded_and_loads_each_once() {
    const CALLS: usize = 20_000;
    let server = RedisServer::start().unwrap();
    let token = RejoinToken::generate();
    calls_left_by_a_dead_process(&server, "node-a", CALLS, &token).await;
    // A call deadline that the pipelines of a recovery keep in a debug build on a busy
    // machine (the default, 250 ms, is meant for release builds).
    let store = redis_store_with(
        "node-a",
        RedisClientConfig::new(server.url()).call_timeout(Duration::from_secs(2)),
    )
    .await;
    let hub = CallHub::new(
        "node-a",
        Some(store.clone()),
        CallHubConfig::default(),
        &mut Registry::default(),
    )
    .unwrap();
    hub.recover_in_background();
    let back = hub
        .rejoin("c-12345", "p1", "user-12345-1", &token)
        .await
        .unwrap();
    assert_eq!(back.state, ParticipantState::Connected);
    // Reading 20,000 calls takes far longer than listing them and reading one.
    let loaded = hub.calls().len();
    assert!(
        loaded < CALLS,
        "the rejoin waited for the whole recovery ({loaded} loaded)"
    );
    assert!(hub.is_recovering());
    // The call ends while the rest loads.
    hub.leave("c-12345", "p0").await.unwrap();
    assert!(hub.leave("c-12345", "p1").await.unwrap().call_ended);
    // A new participant joins another call not loaded yet (most likely): loaded first.
    let (newcomer, _) = hub.join("c-19999", "carol").await.unwrap();
    // A call this node owns cannot be created again, loaded or not.
    let e = hub.create("c-7").await.unwrap_err();
    assert!(e.is_already_exists(), "{e:?}");

    assert!(hub.wait_for_recovery(Duration::from_secs(60)).await);
    assert!(!hub.is_recovering());
    assert_eq!(
        hub.calls().len(),
        CALLS - 1,
        "every call but the ended one, once"
    );
    assert!(hub.get("c-12345").is_none(), "the ended call stays ended");
    let c19999 = hub.get("c-19999").unwrap();
    assert_eq!(c19999.participants.len(), 3, "the newcomer kept its place");
    assert_eq!(
        c19999.participants[&newcomer].state,
        ParticipantState::Connected
    );
    assert_eq!(
        state_of(&hub, "c-42", "p0"),
        Some(ParticipantState::AwaitingRejoin)
    );
    // Redis agrees: the ended call is gone, the others are there.
    assert!(
        eventually(Duration::from_secs(10), || async {
            store.get("c-12345").await.is_ok_and(|c| c.is_none())
        })
        .await
    );
    assert!(store.get("c-42").await.unwrap().is_some());
}

/// A recovery that loses Redis half-way keeps what it loaded and loads the rest once
/// Redis is back; meanwhile a call already loaded is served, and one not loaded yet is
/// answered "recovering" (retry), never "not found".
#[tokio::test]
async fn a_recovery_interrupted_half_way_loads_the_rest_when_redis_returns() {
    const CALLS: usize = 20_000;
    let server = RedisServer::start().unwrap();
    let token = RejoinToken::generate();
    calls_left_by_a_dead_process(&server, "node-a", CALLS, &token).await;
    // A call deadline that the pipelines of a recovery keep in a debug build on a busy
    // machine (the default, 250 ms, is meant for release builds).
    let store = redis_store_with(
        "node-a",
        RedisClientConfig::new(server.url()).call_timeout(Duration::from_secs(2)),
    )
    .await;
    let hub = CallHub::new(
        "node-a",
        Some(store),
        CallHubConfig::default(),
        &mut Registry::default(),
    )
    .unwrap();
    hub.recover_in_background();
    let rejoin = |i: usize, p: usize| {
        let hub = hub.clone();
        let token = token.clone();
        async move {
            hub.rejoin(
                &format!("c-{i}"),
                &format!("p{p}"),
                &format!("user-{i}-{p}"),
                &token,
            )
            .await
        }
    };
    rejoin(1, 0).await.unwrap();
    server.pause().unwrap();
    // Replies already on their way are taken in.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A call not loaded yet is answered "recovering" (retry), never "not found".
    let missing: Vec<usize> = (0..CALLS)
        .filter(|i| hub.get(&format!("c-{i}")).is_none())
        .collect();
    assert!(!missing.is_empty(), "paused before the load ended");
    let e = rejoin(missing[0], 0).await.unwrap_err();
    assert!(e.is_recovering(), "{e:?}");
    // A call loaded before the pause is served without Redis.
    assert_eq!(
        rejoin(1, 1).await.unwrap().state,
        ParticipantState::Connected
    );

    server.resume().unwrap();
    assert!(hub.wait_for_recovery(Duration::from_secs(60)).await);
    assert_eq!(hub.calls().len(), CALLS);
    for &i in missing.iter().take(10) {
        rejoin(i, 0).await.unwrap();
    }
    for p in [0, 1] {
        assert_eq!(
            state_of(&hub, "c-1", &format!("p{p}")),
            Some(ParticipantState::Connected),
            "a call loaded before the pause is not loaded again over its rejoins"
        );
    }
}
