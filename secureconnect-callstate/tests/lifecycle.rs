//! What ends on its own — dropped participants, empty calls, calls beyond a user's cap —
//! and recovery retried until Redis answers: in memory and against a real redis-server.

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::time::Duration;

use prometheus_client::registry::Registry;
use secureconnect_callstate::{
    CallHub, CallHubConfig, CallStore, ParticipantState, RedisCallStore, RedisCallStoreConfig,
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
    let client = RedisClient::connect(
        RedisClientConfig::new(server.url()),
        &mut Registry::default(),
    )
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
