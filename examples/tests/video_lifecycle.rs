//! The video service's call lifecycle as real processes against a real redis-server:
//! recovery while Redis hangs at start, the per-user cap, calls that end, sockets that
//! drop, and settings that are checked at start.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_port, json, recv, register_and_login, send, ws, Socket, System, SECRET};
use secureconnect_redis_fallback::testing::RedisServer;
use serde_json::{json as j, Value};

/// Joins `call` over a WebSocket: the socket, the participant id and its rejoin token.
async fn join(system: &System, call: &str, token: &str) -> (Socket, String, String) {
    let mut socket = ws(system, call, token).await;
    send(&mut socket, j!({ "type": "join" })).await;
    let joined = recv(&mut socket).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    let id = joined["participant_id"].as_str().unwrap().to_owned();
    let rejoin = joined["rejoin_token"].as_str().unwrap().to_owned();
    (socket, id, rejoin)
}

/// `GET /v1/calls/{id}`: the status and the body.
async fn get_call(c: &reqwest::Client, g: &str, call: &str, token: &str) -> (u16, Value) {
    let r = c
        .get(format!("{g}/v1/calls/{call}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn state_of(call: &Value, participant: &str) -> Option<String> {
    call["participants"]
        .as_array()?
        .iter()
        .find(|p| p["participant_id"] == participant)
        .and_then(|p| p["state"].as_str().map(str::to_owned))
}

/// Polls `GET /v1/calls/{id}` until `done` holds for its answer, up to `deadline`.
async fn wait_for_call(
    c: &reqwest::Client,
    g: &str,
    call: &str,
    token: &str,
    deadline: Duration,
    done: impl Fn(u16, &Value) -> bool,
) -> (u16, Value) {
    let until = Instant::now() + deadline;
    loop {
        let (status, body) = get_call(c, g, call, token).await;
        if done(status, &body) || Instant::now() > until {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn video_started_while_redis_hangs_recovers_its_calls_once_redis_resumes() {
    let redis = RedisServer::start().unwrap();
    let mut system = System::start(&redis.url(), &[]).await;
    let g = system.gateway();
    let c = reqwest::Client::new();
    let alice = register_and_login(&c, &g, "alice@example.org").await;
    let bob = register_and_login(&c, &g, "bob@example.org").await;
    let call = json(c.post(format!("{g}/v1/calls")).bearer_auth(&alice.token)).await;
    let call = call["call_id"].as_str().unwrap().to_owned();
    let (a, pa, ta) = join(&system, &call, &alice.token).await;
    let (b, pb, tb) = join(&system, &call, &bob.token).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // written behind to Redis

    // Video and Redis go down together; video comes back first, Redis hangs.
    system.kill("video");
    drop((a, b));
    redis.pause().unwrap();
    let paused = Instant::now();
    system.spawn("video").await;
    let (status, body) = get_call(&c, &g, &call, &alice.token).await;
    assert_eq!(status, 503, "while recovering: {body}");
    assert_eq!(body["error"], "recovering", "{body}");

    tokio::time::sleep(Duration::from_secs(5).saturating_sub(paused.elapsed())).await;
    redis.resume().unwrap();
    let (status, body) = wait_for_call(
        &c,
        &g,
        &call,
        &alice.token,
        Duration::from_secs(30),
        |s, _| s == 200,
    )
    .await;
    assert_eq!(status, 200, "recovered once Redis resumed: {body}");
    assert_eq!(
        state_of(&body, &pa).as_deref(),
        Some("awaiting_rejoin"),
        "{body}"
    );
    assert_eq!(
        state_of(&body, &pb).as_deref(),
        Some("awaiting_rejoin"),
        "{body}"
    );

    let mut a = ws(&system, &call, &alice.token).await;
    send(
        &mut a,
        j!({ "type": "rejoin", "participant_id": pa, "token": ta }),
    )
    .await;
    assert_eq!(recv(&mut a).await["type"], "rejoined");
    let mut b = ws(&system, &call, &bob.token).await;
    send(
        &mut b,
        j!({ "type": "rejoin", "participant_id": pb, "token": tb }),
    )
    .await;
    assert_eq!(recv(&mut b).await["type"], "rejoined");
    send(
        &mut a,
        j!({ "type": "offer", "to": pb, "payload": { "sdp": "v=0" } }),
    )
    .await;
    assert_eq!(recv(&mut b).await["from"], pa.as_str());
    let (_, body) = get_call(&c, &g, &call, &alice.token).await;
    assert_eq!(state_of(&body, &pa).as_deref(), Some("connected"), "{body}");
    assert_eq!(state_of(&body, &pb).as_deref(), Some("connected"), "{body}");
}

#[tokio::test]
async fn the_cap_answers_429_ended_calls_404_and_dropped_sockets_await_rejoin() {
    let redis = RedisServer::start().unwrap();
    let system = System::start(
        &redis.url(),
        &[
            ("CALLS_PER_USER_MAX", "2"),
            ("CALL_EMPTY_TTL_SECS", "1"),
            ("REJOIN_GRACE_SECS", "1"),
        ],
    )
    .await;
    let g = system.gateway();
    let c = reqwest::Client::new();
    let alice = register_and_login(&c, &g, "alice@example.org").await;
    let bob = register_and_login(&c, &g, "bob@example.org").await;
    let create = |token: &str| c.post(format!("{g}/v1/calls")).bearer_auth(token).send();

    let first = create(&alice.token).await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let first = first["call_id"].as_str().unwrap().to_owned();
    let second = create(&alice.token).await.unwrap();
    assert_eq!(second.status(), 201);
    let second: Value = second.json().await.unwrap();
    let second = second["call_id"].as_str().unwrap().to_owned();
    let third = create(&alice.token).await.unwrap();
    assert_eq!(third.status(), 429);
    let body: Value = third.json().await.unwrap();
    assert_eq!(body["error"], "too_many_calls", "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert_eq!(
        create(&bob.token).await.unwrap().status(),
        201,
        "bob has his own"
    );

    // A socket that drops without leave: its participant awaits rejoin, then goes.
    let (a, pa, _) = join(&system, &first, &alice.token).await;
    let (mut b, pb, _) = join(&system, &first, &bob.token).await;
    drop(a);
    let (_, body) = wait_for_call(
        &c,
        &g,
        &first,
        &bob.token,
        Duration::from_secs(10),
        |_, b| state_of(b, &pa).as_deref() == Some("awaiting_rejoin"),
    )
    .await;
    assert_eq!(
        state_of(&body, &pa).as_deref(),
        Some("awaiting_rejoin"),
        "{body}"
    );
    assert_eq!(state_of(&body, &pb).as_deref(), Some("connected"), "{body}");
    let (_, body) = wait_for_call(
        &c,
        &g,
        &first,
        &bob.token,
        Duration::from_secs(15),
        |_, b| state_of(b, &pa).is_none(),
    )
    .await;
    assert_eq!(
        state_of(&body, &pa),
        None,
        "removed after the grace: {body}"
    );
    assert_eq!(state_of(&body, &pb).as_deref(), Some("connected"), "{body}");

    // The last one leaves: the call ended, 404.
    send(&mut b, j!({ "type": "leave" })).await;
    assert_eq!(recv(&mut b).await["type"], "left");
    let (status, body) = get_call(&c, &g, &first, &alice.token).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "not_found", "{body}");
    // The call nobody joined ends after its TTL; alice may create again.
    let (status, body) = wait_for_call(
        &c,
        &g,
        &second,
        &alice.token,
        Duration::from_secs(15),
        |s, _| s == 404,
    )
    .await;
    assert_eq!(status, 404, "the empty call ended: {body}");
    assert_eq!(create(&alice.token).await.unwrap().status(), 201);
}

#[test]
fn malformed_settings_stop_the_service_at_start_with_the_variable_named() {
    for (name, value) in [
        ("CALLS_PER_USER_MAX", "lots"),
        ("REJOIN_GRACE_SECS", "-1"),
        ("CALL_EMPTY_TTL_SECS", "0"),
        // Too short for a heartbeat a third of it; far too long (and `lease * 4` near
        // an overflow).
        ("VIDEO_LEASE_SECS", "2"),
        ("VIDEO_LEASE_SECS", "18446744073709551615"),
        // Listening on every interface: nothing to advertise to the gateway.
        ("VIDEO_ADDR", "0.0.0.0:8083"),
        ("VIDEO_ADDR", "[::]:8083"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_video"))
            .env("JWT_SECRET", SECRET)
            .env("VIDEO_ADDR", format!("127.0.0.1:{}", free_port()))
            .env("REDIS_URL", format!("redis://127.0.0.1:{}/", free_port()))
            .env(name, value)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name}={value} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(name), "{name}={value}: {stderr}");
        if name == "VIDEO_ADDR" {
            assert!(stderr.contains("VIDEO_ADVERTISE_ADDR"), "{stderr}");
        }
    }
}
