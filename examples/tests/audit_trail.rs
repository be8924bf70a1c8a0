//! The README's audit path end to end: the all-in-one binary with `AUDIT_FILE` (and
//! `AUDIT_KEY`), real traffic with denials from every service, and `audit-verify` on
//! the file, also after a `kill -9` in the middle of a stream of denials and after the
//! audit file's disk filled up.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::all_in_one::{audit_verify, AllInOne};
use secureconnect_testkit::exposition::{parse, value};
use secureconnect_testkit::tmpfs::Tmpfs;

/// One unauthenticated request to each service: four 401s, each recorded by the
/// service that answered it.
async fn denials(client: &reqwest::Client, system: &AllInOne) -> reqwest::Result<()> {
    let requests = [
        client.post(format!("{}/v1/calls", system.url("gateway"))),
        client.get(format!("{}/v1/conversations/c1", system.url("auth"))),
        client.post(format!("{}/v1/storage/upload-url", system.url("storage"))),
        client.post(format!("{}/v1/calls", system.url("video"))),
    ];
    for request in requests {
        let status = request.send().await?.status();
        assert_eq!(status, 401);
    }
    Ok(())
}

fn services_with_denials(events: &[serde_json::Value]) -> Vec<String> {
    let mut services: Vec<String> = events
        .iter()
        .filter(|e| e["outcome"] == "denied")
        .filter_map(|e| e["service"].as_str().map(str::to_owned))
        .collect();
    services.sort();
    services.dedup();
    services
}

#[tokio::test]
async fn the_all_in_one_binary_writes_one_verifiable_chain() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let mut system = AllInOne::start(dir.path(), &file, &[]).await;
    let client = reqwest::Client::new();
    denials(&client, &system).await.unwrap();

    // A storage denial: Bob asks for Alice's file.
    let gateway = system.url("gateway");
    let alice = common::register_and_login(&client, &gateway, "alice@example.org").await;
    let bob = common::register_and_login(&client, &gateway, "bob@example.org").await;
    let upload = common::json(
        client
            .post(format!("{gateway}/v1/storage/upload-url"))
            .bearer_auth(&alice.token)
            .json(&serde_json::json!({"file_name": "a.txt", "file_size": 5, "content_type": "text/plain"})),
    )
    .await;
    let file_id = upload["file_id"].as_str().unwrap().to_owned();
    // Through a trusted proxy in front of the gateway: the service behind the gateway
    // audits that proxy's client, not the proxy (the gateway forwards the client it
    // resolved, never the client's own line).
    let r = client
        .get(format!("{gateway}/v1/storage/download-url/{file_id}"))
        .bearer_auth(&bob.token)
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-for", "192.0.2.55")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Behind a trusted proxy that adds its own X-Forwarded-For line; the client's own
    // line and bytes that are not UTF-8 further left change nothing.
    let r = client
        .post(format!("{}/v1/calls", system.url("video")))
        .header("x-forwarded-for", "6.6.6.6")
        .header(
            "x-forwarded-for",
            reqwest::header::HeaderValue::from_bytes(b"\xff\xfe, 203.0.113.7").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .post(format!("{}/v1/calls", system.url("video")))
        .header("x-forwarded-for", "198.51.100.4")
        .header(
            "x-forwarded-for",
            reqwest::header::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    system.stop();
    let (code, text) = audit_verify(&file);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("keyed chain intact"), "{text}");

    let events = system.events();
    assert_eq!(
        services_with_denials(&events),
        ["auth", "gateway", "storage", "video"],
        "denials from every service, in one file"
    );
    // One event per denial per service: the storage handler recorded Bob's denial,
    // so the storage layer did not record its 403 again.
    let storage_denials: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["service"] == "storage" && e["outcome"] == "denied")
        .filter(|e| e["http"]["route"] == "/v1/storage/download-url/{file_id}")
        .collect();
    assert_eq!(storage_denials.len(), 1, "{storage_denials:?}");
    assert_eq!(storage_denials[0]["action"], "file.download");
    assert_eq!(storage_denials[0]["actor"]["id"], bob.user_id.as_str());
    assert_eq!(storage_denials[0]["client_ip"], "192.0.2.55");

    let forwarded: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["service"] == "video" && e["http"]["route"] == "/v1/calls")
        .skip(1)
        .collect();
    assert_eq!(forwarded.len(), 2);
    assert_eq!(forwarded[0]["client_ip"], "203.0.113.7");
    assert!(forwarded[1].get("client_ip").is_none(), "{}", forwarded[1]);
    assert!(
        forwarded[1]["flags"]
            .as_array()
            .unwrap()
            .contains(&"client_ip_unreadable".into()),
        "{}",
        forwarded[1]
    );
}

/// Sends denials to every service until `stop`, ignoring connection errors (the
/// process may be dead).
fn stream(system: &AllInOne, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let urls: Vec<String> = ["gateway", "auth", "storage", "video"]
        .iter()
        .map(|s| system.url(s))
        .collect();
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        while !stop.load(Ordering::SeqCst) {
            for url in &urls {
                let _ = client.post(format!("{url}/v1/calls")).send().await;
            }
        }
    })
}

#[tokio::test]
async fn kill_9_in_a_stream_of_denials_then_restart_leaves_a_verifiable_chain() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let mut system = AllInOne::start(dir.path(), &file, &[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = stream(&system, Arc::clone(&stop));
    system.wait_for_events(200).await;
    system.kill();
    stop.store(true, Ordering::SeqCst);
    traffic.await.unwrap();

    // kill -9 can stop a write between two pages; make sure the file ends the way
    // such a kill leaves it: with the start of a line.
    let mut text = std::fs::read(&file).unwrap();
    if text.ends_with(b"\n") {
        text.extend_from_slice(br#"{"schema_version":1,"seq":4242,"time":"2026-11-"#);
        std::fs::write(&file, &text).unwrap();
    }
    let whole = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let torn = text.len() - whole;
    let lines_before = text[..whole].iter().filter(|b| **b == b'\n').count();

    system.spawn().await;
    let client = reqwest::Client::new();
    for _ in 0..5 {
        denials(&client, &system).await.unwrap();
    }
    system.stop();

    let (code, out) = audit_verify(&file);
    assert_eq!(code, 0, "{out}");
    let events = system.events();
    assert_eq!(
        events.len(),
        lines_before + 1 + 20,
        "the whole lines, the note, the new denials"
    );
    let note = &events[lines_before];
    assert_eq!(note["action"], "audit.recovered");
    assert_eq!(note["reason"]["code"], "torn_tail");
    let reason = note["reason"]["text"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!("{torn} bytes lost")),
        "{reason}"
    );
}

#[tokio::test]
async fn a_full_disk_costs_audit_events_not_requests_and_the_chain_survives() {
    let Some(fs) = Tmpfs::mount(512 * 1024) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = fs.path().join("audit.jsonl");
    let mut system = AllInOne::start(dir.path(), &file, &[]).await;
    let client = reqwest::Client::new();
    denials(&client, &system).await.unwrap();
    system.wait_for_events(4).await;

    let filler = fs.fill("filler");
    for _ in 0..50 {
        // Every request is still answered (401), the disk being full.
        denials(&client, &system).await.unwrap();
    }
    let mut lost = 0.0;
    for _ in 0..200 {
        lost = 0.0;
        for service in ["gateway", "auth", "storage", "video"] {
            let text = client
                .get(format!("{}/metrics", system.url(service)))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            lost += value(
                &parse(&text),
                "audit_events_dropped_total",
                &[("reason", "sink_error")],
            )
            .unwrap_or(0.0);
        }
        if lost >= 200.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(lost >= 1.0, "the lost events are counted");
    let (code, out) = audit_verify(&file);
    assert_eq!(code, 0, "verifiable while the disk is full: {out}");

    std::fs::remove_file(filler).unwrap();
    for _ in 0..5 {
        denials(&client, &system).await.unwrap();
    }
    system.stop();
    let (code, out) = audit_verify(&file);
    assert_eq!(code, 0, "{out}");
    let events = system.events();
    assert!(events.len() >= 4 + 20, "{}", events.len());
    assert_eq!(services_with_denials(&events).len(), 4);
}
