//! Hostile input over real HTTP: each yields exactly one valid JSON line per output,
//! with no forged second event, no control characters, and no secrets.

#![allow(clippy::unwrap_used)]

mod common;

use http::HeaderValue;
use secureconnect_audit::{AuditPipelineConfig, TrustedProxies};

fn dangerous(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Every output holds exactly `expected` lines, each one JSON object without a raw
/// dangerous character.
fn assert_clean_lines(service: &common::Service, expected: usize) {
    for (name, text) in service.outputs() {
        let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), expected, "{name}: one line per event:\n{text}");
        for line in lines {
            assert!(
                !line.chars().any(dangerous),
                "{name}: raw control character in {line:?}"
            );
            if name != "tracing" {
                let value: serde_json::Value = serde_json::from_str(line).unwrap();
                assert!(value.is_object());
            }
        }
    }
}

#[tokio::test]
async fn every_hostile_input_gives_one_clean_line() {
    let service = common::start(TrustedProxies::none(), AuditPipelineConfig::default()).await;
    let client = reqwest::Client::new();
    let url = |p: &str| format!("http://{}{p}", service.addr);

    // User ids that try to forge a second event or a log line, from a JSON body.
    let users = [
        "alice\n{\"outcome\":\"allowed\"}",
        "x\r\nLOGIN_SUCCESS user=admin",
        "nul\u{0}del\u{7f}nel\u{85}ls\u{2028}",
        "invoice\u{202E}fdp.exe",
        "\u{1b}[31mred\u{1b}[0m",
    ];
    for user in users {
        let r = client
            .post(url("/deny"))
            .json(&serde_json::json!({ "user": user }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    }
    // File names, owners and resources with ANSI, C1 and separator characters.
    let files = [
        serde_json::json!({ "name": "report \u{1b}]0;pwned\u{7}.pdf", "owner": "bob\r\n" }),
        serde_json::json!({ "name": "invoice\u{202E}fdp.exe", "resource": "a\u{2029}b\u{2066}c" }),
    ];
    for body in &files {
        let r = client
            .post(url("/files/f1"))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Non-UTF-8 bytes in a header (obs-text is valid HTTP).
    let r = client
        .get(url("/admin"))
        .header(
            "user-agent",
            HeaderValue::from_bytes(b"curl/8 [2J \xc3\x28\xff").unwrap(),
        )
        .header(
            "x-test-user",
            HeaderValue::from_bytes(b"eve\t\xfe").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A 1 MiB reason: cut and flagged. The route answers 403 too, and the layer
    // leaves the denial to the handler's event: one event.
    let huge = "why ".repeat(256 * 1024);
    let r = client
        .post(url("/files/f2"))
        .json(&serde_json::json!({ "reason": huge }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // An ESC in a header is not HTTP: the server refuses it before any handler.
    let mut raw = tokio::net::TcpStream::connect(service.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raw.write_all(b"GET /admin HTTP/1.1\r\nHost: x\r\nUser-Agent: a\x1b[2Jb\r\n\r\n")
        .await
        .unwrap();
    let mut reply = vec![0; 64];
    let n = raw.read(&mut reply).await.unwrap();
    assert!(String::from_utf8_lossy(&reply[..n]).starts_with("HTTP/1.1 400"));

    service.settle().await;
    let total = users.len() + files.len() + 1 + 1;
    assert_clean_lines(&service, total);

    let events = service.memory.events();
    assert_eq!(events.len(), total);
    for event in &events[..users.len()] {
        assert_eq!(event.outcome(), secureconnect_audit::Outcome::Denied);
        assert!(event.has_flag("escaped"), "{event:?}");
    }
    let text = std::fs::read_to_string(&service.native).unwrap();
    assert!(
        text.contains("invoice\\\\u{202e}fdp.exe"),
        "bidi override visible as an escape"
    );
    assert!(text.contains("\\\\u{001b}[31mred"), "ANSI escape visible");
    assert!(
        text.contains("alice\\\\u{000a}{\\\"outcome\\\":\\\"allowed\\\"}"),
        "{text}"
    );
    let ua_event = &events[users.len() + files.len()];
    let ua = ua_event.user_agent().unwrap();
    assert!(ua.contains("\\u{fffd}"), "{ua}");
    let huge_event = events
        .iter()
        .find(|e| e.reason().is_some_and(|r| r.code == "not_owner"))
        .unwrap();
    assert!(huge_event.reason().unwrap().text.len() <= 4096);
    assert!(huge_event.has_flag("truncated"));
}

#[tokio::test]
async fn secrets_never_reach_any_sink() {
    let service = common::start(TrustedProxies::none(), AuditPipelineConfig::default()).await;
    let client = reqwest::Client::new();
    let url = |p: &str| format!("http://{}{p}", service.addr);

    client
        .get(url(
            "/admin?token=SECRET-QUERY-TOKEN&access_token=SECRET-ACCESS",
        ))
        .header("authorization", "Bearer SECRET-BEARER-TOKEN")
        .header("cookie", "session=SECRET-COOKIE")
        .send()
        .await
        .unwrap();
    client
        .post(url("/login"))
        .header("authorization", "Basic U0VDUkVULUJBU0lD")
        .send()
        .await
        .unwrap();
    client
        .post(url("/files/f9"))
        .json(&serde_json::json!({
            "resource": "https://bucket.s3.amazonaws.com/f9?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=SECRET-CRED&X-Amz-Signature=SECRET-SIGNATURE",
            "name": "upload?X-Amz-Signature=SECRET-IN-NAME",
            "reason": "signed with Bearer SECRET-IN-REASON and password=SECRET-PASSWORD",
        }))
        .send()
        .await
        .unwrap();
    service.settle().await;
    // 403, 401, and the denied file event (its 403 is not recorded twice).
    assert_eq!(service.memory.events().len(), 3);
    for (name, text) in service.outputs() {
        assert!(!text.is_empty(), "{name} is empty");
        for secret in ["SECRET", "U0VDUkVU"] {
            assert!(!text.contains(secret), "{name} leaked {secret}:\n{text}");
        }
        assert!(!text.to_ascii_lowercase().contains("cookie"), "{name}");
    }
}
