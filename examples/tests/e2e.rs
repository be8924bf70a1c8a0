//! The reference services as real processes, driven over HTTP and WebSocket as a client
//! would, against a real redis-server that is killed and restarted.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{json, recv, register_and_login, send, text, ws, System};
use secureconnect_redis_fallback::testing::RedisServer;
use secureconnect_testkit::exposition::sample;

#[tokio::test]
async fn files_through_the_gateway_with_denials_audited_and_metrics_everywhere() {
    let redis = RedisServer::start().unwrap();
    let system = System::start(&redis.url(), &[]).await;
    let g = system.gateway();
    let c = reqwest::Client::new();
    let alice = register_and_login(&c, &g, "alice@example.org").await;
    let bob = register_and_login(&c, &g, "bob@example.org").await;

    let up = json(c
        .post(format!("{g}/v1/storage/upload-url"))
        .bearer_auth(&alice.token)
        .json(&serde_json::json!({ "file_name": "notes.txt", "file_size": 11, "content_type": "text/plain" }))).await;
    let file_id = up["file_id"].as_str().unwrap().to_owned();
    let put = c
        .put(format!("{g}{}", up["upload_url"].as_str().unwrap()))
        .body("hello world")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);

    // Bob is refused, and the refusal is in the storage service's audit trail.
    let denied = c
        .get(format!("{g}/v1/storage/download-url/{file_id}"))
        .bearer_auth(&bob.token)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let denied_delete = c
        .delete(format!("{g}/v1/storage/files/{file_id}"))
        .bearer_auth(&bob.token)
        .send()
        .await
        .unwrap();
    assert_eq!(denied_delete.status(), 403);

    let dl = json(
        c.get(format!("{g}/v1/storage/download-url/{file_id}"))
            .bearer_auth(&alice.token),
    )
    .await;
    let bytes = c
        .get(format!("{g}{}", dl["download_url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(bytes.text().await.unwrap(), "hello world");
    let deleted = c
        .delete(format!("{g}/v1/storage/files/{file_id}"))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);

    // Conversations: a non-member gets 403.
    let conv = json(
        c.post(format!("{g}/v1/conversations"))
            .bearer_auth(&alice.token)
            .json(&serde_json::json!({ "members": [] })),
    )
    .await;
    let conv_id = conv["id"].as_str().unwrap();
    let r = c
        .get(format!("{g}/v1/conversations/{conv_id}"))
        .bearer_auth(&bob.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .get(format!("{g}/v1/conversations/{conv_id}"))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let trail = std::fs::read_to_string(system.audit_file("storage")).unwrap();
    let events: Vec<serde_json::Value> = trail
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let denial = events
        .iter()
        .find(|e| e["action"] == "file.download" && e["outcome"] == "denied")
        .expect("the denied download is audited");
    assert_eq!(denial["actor"]["id"], bob.user_id.as_str());
    assert_eq!(denial["file"]["id"], file_id.as_str());
    assert_eq!(denial["file"]["owner"], alice.user_id.as_str());
    assert_eq!(denial["reason"]["code"], "not_owner");
    assert!(denial["request_id"].is_string() && denial["client_ip"].is_string());
    assert!(events
        .iter()
        .any(|e| e["action"] == "file.delete" && e["outcome"] == "denied"));
    assert!(events
        .iter()
        .any(|e| e["action"] == "file.delete" && e["outcome"] == "allowed"));
    assert!(events
        .iter()
        .any(|e| e["action"] == "file.upload_url" && e["outcome"] == "allowed"));
    assert!(
        !trail.contains("signature="),
        "signed URLs never reach the trail"
    );
    let auth_trail = std::fs::read_to_string(system.audit_file("auth")).unwrap();
    assert!(auth_trail.contains("\"outcome\":\"denied\"") && auth_trail.contains(&bob.user_id));
    let report = secureconnect_audit::chain::verify(
        std::io::BufReader::new(std::fs::File::open(system.audit_file("storage")).unwrap()),
        None,
        None,
    )
    .unwrap();
    assert_eq!(
        report.breaks,
        vec![],
        "the storage trail is an intact hash chain"
    );

    for service in ["gateway", "auth", "storage", "video"] {
        let text = c
            .get(format!("http://127.0.0.1:{}/metrics", system.port(service)))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            text.contains(&format!(
                "http_server_request_duration_seconds_count{{service=\"{service}\""
            )),
            "{service} /metrics lacks RED metrics:\n{text}"
        );
        // The process's log output reports its drops on every service's /metrics; stdout
        // goes to a file here, which keeps up.
        assert_eq!(
            sample(&text, "log_lines_dropped_total", &[]),
            Some(0.0),
            "{service} /metrics lacks log_lines_dropped_total:\n{text}"
        );
    }
}

#[tokio::test]
async fn redis_killed_under_traffic_causes_no_5xx_and_limits_follow_the_policy() {
    let mut redis = RedisServer::start().unwrap();
    let system = System::start(&redis.url(), &[("RATE_LIMIT_PER_MINUTE", "40")]).await;
    let g = system.gateway();
    let c = reqwest::Client::new();
    let alice = register_and_login(&c, &g, "alice@example.org").await;
    let conv = json(
        c.post(format!("{g}/v1/conversations"))
            .bearer_auth(&alice.token)
            .json(&serde_json::json!({})),
    )
    .await;
    let url = format!("{g}/v1/conversations/{}", conv["id"].as_str().unwrap());
    for _ in 0..5 {
        assert_eq!(
            c.get(&url)
                .bearer_auth(&alice.token)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }

    redis.kill().unwrap();
    let mut statuses = Vec::new();
    let mut sources = Vec::new();
    for _ in 0..60 {
        let r = c.get(&url).bearer_auth(&alice.token).send().await.unwrap();
        if let Some(source) = r.headers().get("x-ratelimit-source") {
            sources.push(source.to_str().unwrap().to_owned());
        }
        statuses.push(r.status().as_u16());
    }
    assert!(
        statuses.iter().all(|s| *s < 500),
        "no 5xx while Redis is down: {statuses:?}"
    );
    let allowed = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(
        allowed, 40,
        "LocalApprox with one gateway: the full limit, locally: {statuses:?}"
    );
    assert!(sources.iter().all(|s| s == "local"), "{sources:?}");
    // A new user still logs in (the session is kept by auth until Redis is back).
    let bob = register_and_login(&c, &g, "bob@example.org").await;
    assert!(!bob.token.is_empty());

    let ready = json(c.get(format!("{g}/ready"))).await;
    assert_eq!(ready["redis"], "degraded");
    let metrics = text(c.get(format!("{g}/metrics"))).await;
    assert_eq!(sample(&metrics, "redis_up", &[]), Some(0.0), "{metrics}");

    redis.restart().unwrap();
    let mut healthy = false;
    for _ in 0..60 {
        let ready = json(c.get(format!("{g}/ready"))).await;
        if ready["redis"] == "healthy" {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "the gateway sees Redis again within seconds");
    let metrics = text(c.get(format!("{g}/metrics"))).await;
    assert_eq!(sample(&metrics, "redis_up", &[]), Some(1.0));
    // This Redis restarted empty: the sessions it had are gone, so Alice's token is
    // refused and she logs in again; Bob's, opened during the outage, was written to
    // the new Redis by auth.
    // (Once verdicts cached before the restart have run out.)
    tokio::time::sleep(secureconnect_examples::sessions::CACHE_TTL).await;
    let r = c.get(&url).bearer_auth(&alice.token).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "session_ended"
    );
    let mut bob_in = false;
    for _ in 0..50 {
        let r = c
            .post(format!("{g}/v1/conversations"))
            .bearer_auth(&bob.token)
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        if r.status() == 201 {
            bob_in = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(bob_in, "a session opened without Redis outlives the outage");
    let again = json(c.post(format!("{g}/v1/auth/login")).json(
        &serde_json::json!({ "email": "alice@example.org", "password": "correct horse battery" }),
    ))
    .await;
    let alice_token = again["access_token"].as_str().unwrap();
    // Limits are shared through Redis again (a fresh Redis: a fresh budget).
    let r = c.get(&url).bearer_auth(alice_token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let metrics = text(c.get(format!("{g}/metrics"))).await;
    assert!(
        sample(
            &metrics,
            "rate_limit_decisions_total",
            &[("source", "redis"), ("decision", "allowed")]
        )
        .unwrap()
            > 0.0
    );
}

#[tokio::test]
async fn a_call_survives_kill_9_of_the_video_service() {
    let redis = RedisServer::start().unwrap();
    let mut system = System::start(&redis.url(), &[]).await;
    let g = system.gateway();
    let c = reqwest::Client::new();
    let alice = register_and_login(&c, &g, "alice@example.org").await;
    let bob = register_and_login(&c, &g, "bob@example.org").await;
    let call = json(c.post(format!("{g}/v1/calls")).bearer_auth(&alice.token)).await;
    let call_id = call["call_id"].as_str().unwrap().to_owned();

    let mut a = ws(&system, &call_id, &alice.token).await;
    send(&mut a, serde_json::json!({ "type": "join" })).await;
    let joined_a = recv(&mut a).await;
    assert_eq!(joined_a["type"], "joined");
    let mut b = ws(&system, &call_id, &bob.token).await;
    send(&mut b, serde_json::json!({ "type": "join" })).await;
    let joined_b = recv(&mut b).await;
    let (pa, ta) = (
        joined_a["participant_id"].as_str().unwrap().to_owned(),
        joined_a["rejoin_token"].as_str().unwrap().to_owned(),
    );
    let (pb, tb) = (
        joined_b["participant_id"].as_str().unwrap().to_owned(),
        joined_b["rejoin_token"].as_str().unwrap().to_owned(),
    );
    send(
        &mut a,
        serde_json::json!({ "type": "offer", "to": pb, "payload": { "sdp": "v=0 first" } }),
    )
    .await;
    let offer = recv(&mut b).await;
    assert_eq!(
        (offer["type"].as_str(), offer["from"].as_str()),
        (Some("offer"), Some(pa.as_str()))
    );
    tokio::time::sleep(Duration::from_millis(300)).await; // written behind to Redis

    system.kill("video");
    drop((a, b));
    system.spawn("video").await;

    let state = json(
        c.get(format!("{g}/v1/calls/{call_id}"))
            .bearer_auth(&alice.token),
    )
    .await;
    let participants = state["participants"].as_array().unwrap();
    assert_eq!(participants.len(), 2, "{state}");
    assert!(
        participants.iter().all(|p| p["state"] == "awaiting_rejoin"),
        "{state}"
    );

    // Bob presenting Alice's participant and token is refused, and nothing changes.
    let mut mallory = ws(&system, &call_id, &bob.token).await;
    send(
        &mut mallory,
        serde_json::json!({ "type": "rejoin", "participant_id": pa, "token": ta }),
    )
    .await;
    assert_eq!(recv(&mut mallory).await["code"], "bad_token");
    let state = json(
        c.get(format!("{g}/v1/calls/{call_id}"))
            .bearer_auth(&alice.token),
    )
    .await;
    assert!(
        state["participants"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["state"] == "awaiting_rejoin"),
        "a refused rejoin leaves the participant awaiting: {state}"
    );
    drop(mallory);

    let mut a = ws(&system, &call_id, &alice.token).await;
    send(
        &mut a,
        serde_json::json!({ "type": "rejoin", "participant_id": pa, "token": tb }),
    )
    .await;
    assert_eq!(
        recv(&mut a).await["code"],
        "bad_token",
        "another participant's token is refused"
    );
    send(
        &mut a,
        serde_json::json!({ "type": "rejoin", "participant_id": pa, "token": ta }),
    )
    .await;
    assert_eq!(recv(&mut a).await["type"], "rejoined");
    let mut b = ws(&system, &call_id, &bob.token).await;
    send(
        &mut b,
        serde_json::json!({ "type": "rejoin", "participant_id": pb, "token": tb }),
    )
    .await;
    assert_eq!(recv(&mut b).await["type"], "rejoined");

    send(
        &mut b,
        serde_json::json!({ "type": "answer", "to": pa, "payload": { "sdp": "v=0 again" } }),
    )
    .await;
    let answer = recv(&mut a).await;
    assert_eq!(
        (answer["type"].as_str(), answer["from"].as_str()),
        (Some("answer"), Some(pb.as_str()))
    );
    assert_eq!(answer["payload"]["sdp"], "v=0 again");
    send(
        &mut a,
        serde_json::json!({ "type": "ice", "payload": { "candidate": "c1" } }),
    )
    .await;
    assert_eq!(recv(&mut b).await["payload"]["candidate"], "c1");
}

#[tokio::test]
async fn bad_requests_get_clear_4xx_and_nothing_panics() {
    let redis = RedisServer::start().unwrap();
    let system = System::start(&redis.url(), &[]).await;
    let g = system.gateway();
    let c = reqwest::Client::new();
    let alice = register_and_login(&c, &g, "alice@example.org").await;

    let other = secureconnect_examples::token::Tokens::new(
        "another-secret-another-secret-4242",
        Duration::from_secs(60),
    );
    let forged = other.issue(&alice.user_id, "s").unwrap();
    let expired = secureconnect_examples::token::Tokens::new(common::SECRET, Duration::ZERO)
        .issue(&alice.user_id, "s")
        .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await; // past the 5 s leeway
    for (token, code) in [
        (forged.as_str(), "invalid_token"),
        (expired.as_str(), "token_expired"),
        ("not.a.jwt", "invalid_token"),
    ] {
        let r = c
            .post(format!("{g}/v1/calls"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], code);
    }
    let r = c.post(format!("{g}/v1/calls")).send().await.unwrap();
    assert_eq!(r.status(), 401);

    let r = c
        .post(format!("{g}/v1/auth/login"))
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "bad_request");

    let huge = serde_json::json!({ "email": "x@y.z", "password": "p".repeat(3 * 1024 * 1024) });
    let r = c
        .post(format!("{g}/v1/auth/register"))
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // Video request bodies are buffered by the gateway (to be sent again to another
    // node): a few KiB at most.
    let big = serde_json::json!({ "id": "x".repeat(8 * 1024) });
    let r = c
        .post(format!("{g}/v1/calls"))
        .bearer_auth(&alice.token)
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "declared");

    let r = c.get(format!("{g}/v1/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .get(format!("{g}/v1/storage/blobs/f-1?expires=1&signature=00"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "an expired signed URL");

    for service in ["gateway", "auth", "storage", "video"] {
        let r = c
            .get(format!("http://127.0.0.1:{}/health", system.port(service)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{service} survived");
        assert!(
            !system.stdout(service).contains("panicked"),
            "{service} panicked"
        );
    }
}

#[tokio::test]
async fn an_upstream_that_is_down_gives_502_with_a_clear_body() {
    let redis = RedisServer::start().unwrap();
    let mut system = System::start(&redis.url(), &[]).await;
    let g = system.gateway();
    let c = reqwest::Client::new();
    let alice = register_and_login(&c, &g, "alice@example.org").await;
    system.kill("storage");
    let r = c
        .post(format!("{g}/v1/storage/upload-url"))
        .bearer_auth(&alice.token)
        .json(&serde_json::json!({ "file_name": "a", "file_size": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "upstream_unavailable");
    assert!(body["message"].as_str().unwrap().contains("storage"));
}

#[tokio::test]
async fn an_upstream_that_hangs_gives_504() {
    let redis = RedisServer::start().unwrap();
    let system = System::start(&redis.url(), &[("UPSTREAM_TIMEOUT_MS", "500")]).await;
    let g = system.gateway();
    let c = reqwest::Client::new();
    let alice = register_and_login(&c, &g, "alice@example.org").await;
    system.signal("video", "STOP");
    let r = c
        .post(format!("{g}/v1/calls"))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    system.signal("video", "CONT");
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"], "upstream_timeout");
    assert!(body["message"].as_str().unwrap().contains("video"));
}
