//! Logout ends a token everywhere: at auth, storage, video and the gateway, on other
//! instances sharing Redis, on open WebSockets, and — for the logouts an instance made
//! itself — while Redis is away. The real binaries, a real redis-server.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::all_in_one::AllInOne;
use common::{json, recv, register_and_login, send, ws, System};
use secureconnect_redis_fallback::testing::RedisServer;

/// What a user touches at each service (`at` gives a service's base URL), as
/// `(where, status, error code)`.
async fn probe(
    c: &reqwest::Client,
    at: impl Fn(&str) -> String,
    token: &str,
    conversation: &str,
    call: &str,
) -> Vec<(String, u16, String)> {
    let requests = [
        (
            "auth",
            c.get(format!("{}/v1/conversations/{conversation}", at("auth"))),
        ),
        (
            "storage",
            c.post(format!("{}/v1/storage/upload-url", at("storage")))
                .json(&serde_json::json!({ "file_name": "a.txt", "file_size": 1 })),
        ),
        ("video", c.get(format!("{}/v1/calls/{call}", at("video")))),
        (
            "gateway",
            c.get(format!("{}/v1/calls/{call}", at("gateway"))),
        ),
    ];
    let mut seen = Vec::new();
    for (name, request) in requests {
        seen.push(status_of(name, request.bearer_auth(token)).await);
    }
    seen
}

async fn status_of(name: &str, request: reqwest::RequestBuilder) -> (String, u16, String) {
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    (
        name.to_owned(),
        status,
        body["error"].as_str().unwrap_or("").to_owned(),
    )
}

fn all_accepted(seen: &[(String, u16, String)]) -> bool {
    seen.iter()
        .all(|(_, status, _)| (200..300).contains(status))
}

fn all_ended(seen: &[(String, u16, String)]) -> bool {
    seen.iter()
        .all(|(_, status, code)| *status == 401 && code == "session_ended")
}

/// A conversation and a call of the user.
async fn resources(c: &reqwest::Client, g: &str, token: &str) -> (String, String) {
    let conversation = json(
        c.post(format!("{g}/v1/conversations"))
            .bearer_auth(token)
            .json(&serde_json::json!({})),
    )
    .await;
    let call = json(c.post(format!("{g}/v1/calls")).bearer_auth(token)).await;
    (
        conversation["id"].as_str().unwrap().to_owned(),
        call["call_id"].as_str().unwrap().to_owned(),
    )
}

async fn logout(c: &reqwest::Client, base: &str, token: &str) -> u16 {
    c.post(format!("{base}/v1/auth/logout"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn after_logout_every_service_refuses_the_token_and_its_websocket_closes() {
    let redis = RedisServer::start().unwrap();
    let system = System::start(&redis.url(), &[]).await;
    let g = system.gateway();
    let c = reqwest::Client::new();
    let alice = register_and_login(&c, &g, "alice@example.org").await;
    let (conversation, call) = resources(&c, &g, &alice.token).await;
    let before = probe(&c, |n| system.url(n), &alice.token, &conversation, &call).await;
    assert!(all_accepted(&before), "{before:?}");
    let mut socket = ws(&system, &call, &alice.token).await;
    send(&mut socket, serde_json::json!({ "type": "join" })).await;
    assert_eq!(recv(&mut socket).await["type"], "joined");

    assert_eq!(logout(&c, &g, &alice.token).await, 204);
    let logged_out = Instant::now();
    // The promise: a second after the logout's answer, whatever was cached or missed.
    tokio::time::sleep_until((logged_out + Duration::from_secs(1)).into()).await;
    let after = probe(&c, |n| system.url(n), &alice.token, &conversation, &call).await;
    assert!(all_ended(&after), "{after:?}");

    let closing = recv(&mut socket).await;
    assert_eq!(
        (closing["type"].as_str(), closing["code"].as_str()),
        (Some("error"), Some("session_ended")),
        "{closing}"
    );
    let url = format!(
        "ws://127.0.0.1:{}/v1/calls/{call}/ws?access_token={}",
        system.port("gateway"),
        alice.token
    );
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401);
        }
        other => panic!("a new WebSocket with the token is refused: {other:?}"),
    }
    assert_eq!(logout(&c, &g, &alice.token).await, 401, "logged out once");

    // Another session of the same user is untouched.
    let again = json(c.post(format!("{g}/v1/auth/login")).json(
        &serde_json::json!({ "email": "alice@example.org", "password": "correct horse battery" }),
    ))
    .await;
    let token = again["access_token"].as_str().unwrap();
    let fresh = probe(&c, |n| system.url(n), token, &conversation, &call).await;
    assert!(all_accepted(&fresh), "{fresh:?}");
}

#[tokio::test]
async fn a_logout_at_one_instance_holds_at_the_others_sharing_redis() {
    let redis = RedisServer::start().unwrap();
    let mut system = System::start(&redis.url(), &[]).await;
    let auth2 = system.spawn_another("auth").await;
    let storage2 = system.spawn_another("storage").await;
    let g = system.gateway();
    let c = reqwest::Client::new();
    // Logged in through the gateway, that is at the first auth instance.
    let alice = register_and_login(&c, &g, "alice@example.org").await;
    let (conversation, call) = resources(&c, &g, &alice.token).await;
    let second_storage = || {
        status_of(
            "storage-2",
            c.post(format!("http://127.0.0.1:{storage2}/v1/storage/upload-url"))
                .bearer_auth(&alice.token)
                .json(&serde_json::json!({ "file_name": "a.txt", "file_size": 1 })),
        )
    };
    assert_eq!(second_storage().await.1, 201);

    // Logged out at the second auth instance.
    assert_eq!(
        logout(&c, &format!("http://127.0.0.1:{auth2}"), &alice.token).await,
        204
    );
    let logged_out = Instant::now();
    tokio::time::sleep_until((logged_out + Duration::from_secs(1)).into()).await;
    let mut after = probe(&c, |n| system.url(n), &alice.token, &conversation, &call).await;
    after.push(second_storage().await);
    assert!(all_ended(&after), "{after:?}");
}

#[tokio::test]
async fn without_redis_a_logout_holds_where_it_was_made_and_everywhere_once_redis_returns() {
    let redis = RedisServer::start().unwrap();
    let system = System::start(&redis.url(), &[]).await;
    let g = system.gateway();
    let c = reqwest::Client::new();
    let alice = register_and_login(&c, &g, "alice@example.org").await;
    let (conversation, call) = resources(&c, &g, &alice.token).await;

    // Paused, not killed: Redis keeps the session, as after a network partition.
    redis.pause().unwrap();
    for name in ["auth", "storage"] {
        assert!(
            wait_for_redis(&c, &system, name, "degraded").await,
            "{name} notices"
        );
    }
    let auth = system.url("auth");
    assert_eq!(logout(&c, &auth, &alice.token).await, 204);
    let seen = probe(&c, |n| system.url(n), &alice.token, &conversation, &call).await;
    assert_eq!(
        (seen[0].1, seen[0].2.as_str()),
        (401, "session_ended"),
        "held where it was made: {seen:?}"
    );
    assert_eq!(
        seen[1].1, 201,
        "another instance without Redis cannot know: it accepts the signature (documented)"
    );

    redis.resume().unwrap();
    let mut ended = false;
    for _ in 0..100 {
        let seen = probe(&c, |n| system.url(n), &alice.token, &conversation, &call).await;
        if all_ended(&seen) {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ended,
        "once Redis answers, the logout made without it reaches every service"
    );
}

/// Polls `name`'s `/ready` until Redis is `state` (up to 10 s).
async fn wait_for_redis(c: &reqwest::Client, system: &System, name: &str, state: &str) -> bool {
    for _ in 0..100 {
        let ready = json(c.get(format!("{}/ready", system.url(name)))).await;
        if ready["redis"] == state {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn the_all_in_one_binary_guards_metrics_and_ends_a_session_in_all_four_services_without_redis(
) {
    const TOKEN: &str = "metrics-token-for-the-test";
    // Without Redis: the process runs degraded from the start.
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let system = AllInOne::start(dir.path(), &audit, &[("METRICS_TOKEN", TOKEN)]).await;
    let c = reqwest::Client::new();
    for name in ["gateway", "auth", "storage", "video"] {
        let metrics = format!("{}/metrics", system.url(name));
        let bare = c.get(&metrics).send().await.unwrap();
        assert_eq!(bare.status(), 401, "{name} without the token");
        let wrong = c.get(&metrics).bearer_auth("wrong").send().await.unwrap();
        assert_eq!(wrong.status(), 401, "{name} with a wrong token");
        let right = c.get(&metrics).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(right.status(), 200, "{name} with the token");
        assert!(right.text().await.unwrap().contains("session_checks_total"));
        let health = c
            .get(format!("{}/health", system.url(name)))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200, "only /metrics is guarded");
    }

    let g = system.url("gateway");
    let alice = register_and_login(&c, &g, "alice@example.org").await;
    let (conversation, call) = resources(&c, &g, &alice.token).await;
    let before = probe(&c, |n| system.url(n), &alice.token, &conversation, &call).await;
    assert!(all_accepted(&before), "{before:?}");
    assert_eq!(logout(&c, &g, &alice.token).await, 204);
    // No Redis, no waiting: the process's services share what it knows.
    let after = probe(&c, |n| system.url(n), &alice.token, &conversation, &call).await;
    assert!(all_ended(&after), "{after:?}");
}
