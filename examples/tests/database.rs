//! The reference system on a real database: the all-in-one binary restarted (SIGTERM)
//! and SIGKILLed on the embedded SQLite and on a private PostgreSQL cluster keeps its
//! accounts, conversations and files; a bad `DATABASE_URL` stops it at start with the
//! variable named and its password hidden; PostgreSQL stopped (`pg_ctl stop -m
//! immediate`) under traffic gets the requests a 503 within 3 s and `/ready` says so,
//! and once it is back the services heal by themselves.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::all_in_one::AllInOne;
use common::{free_port, json, register_and_login, Session, SECRET};
use secureconnect_testkit::postgres::PgServer;

const PASSWORD: &str = "correct horse battery";

/// What one run leaves behind: two accounts, a conversation of both, a file of Alice's.
struct Written {
    alice: Session,
    bob: Session,
    conversation: String,
    file: String,
    bytes: Vec<u8>,
}

async fn write(client: &reqwest::Client, gateway: &str) -> Written {
    let alice = register_and_login(client, gateway, "alice@example.org").await;
    let bob = register_and_login(client, gateway, "bob@example.org").await;
    let conversation = json(
        client
            .post(format!("{gateway}/v1/conversations"))
            .bearer_auth(&alice.token)
            .json(&serde_json::json!({ "members": [bob.user_id] })),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bytes: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let up = json(
        client
            .post(format!("{gateway}/v1/storage/upload-url"))
            .bearer_auth(&alice.token)
            .json(&serde_json::json!({
                "file_name": "notes.bin",
                "file_size": bytes.len(),
                "content_type": "application/octet-stream",
            })),
    )
    .await;
    let put = client
        .put(format!("{gateway}{}", up["upload_url"].as_str().unwrap()))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    Written {
        alice,
        bob,
        conversation,
        file: up["file_id"].as_str().unwrap().to_owned(),
        bytes,
    }
}

async fn login(client: &reqwest::Client, gateway: &str, email: &str) -> Session {
    let r = client
        .post(format!("{gateway}/v1/auth/login"))
        .json(&serde_json::json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{email} cannot log in after the restart");
    let v: serde_json::Value = r.json().await.unwrap();
    Session {
        user_id: v["user_id"].as_str().unwrap().to_owned(),
        token: v["access_token"].as_str().unwrap().to_owned(),
    }
}

/// Everything `written` is there: logins, the conversation for both members, the file
/// for its owner (bytes equal) and not for Bob, the email still taken.
async fn check(client: &reqwest::Client, gateway: &str, written: &Written) {
    let alice = login(client, gateway, "alice@example.org").await;
    let bob = login(client, gateway, "bob@example.org").await;
    assert_eq!(alice.user_id, written.alice.user_id);
    assert_eq!(bob.user_id, written.bob.user_id);
    let wrong = client
        .post(format!("{gateway}/v1/auth/login"))
        .json(&serde_json::json!({ "email": "alice@example.org", "password": "wrong password" }))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let again = client
        .post(format!("{gateway}/v1/auth/register"))
        .json(&serde_json::json!({ "email": "Alice@example.org", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409, "the account is still there");

    for who in [&alice, &bob] {
        let r = client
            .get(format!(
                "{gateway}/v1/conversations/{}",
                written.conversation
            ))
            .bearer_auth(&who.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        let mut expected = vec![alice.user_id.clone(), bob.user_id.clone()];
        expected.sort();
        assert_eq!(body["members"], serde_json::json!(expected));
    }

    let denied = client
        .get(format!(
            "{gateway}/v1/storage/download-url/{}",
            written.file
        ))
        .bearer_auth(&bob.token)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403, "the owner is kept too");
    let dl = json(
        client
            .get(format!(
                "{gateway}/v1/storage/download-url/{}",
                written.file
            ))
            .bearer_auth(&alice.token),
    )
    .await;
    let got = client
        .get(format!("{gateway}{}", dl["download_url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert!(got
        .headers()
        .get("content-disposition")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("notes.bin"));
    assert_eq!(
        got.bytes().await.unwrap().as_ref(),
        written.bytes.as_slice()
    );
}

/// Writes, then SIGKILL, start, check, SIGTERM, start, check.
async fn survives_restarts(extra: &[(&str, &str)]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let mut system = AllInOne::start(dir.path(), &audit, extra).await;
    let client = reqwest::Client::new();
    let gateway = system.url("gateway");
    let written = write(&client, &gateway).await;

    system.kill();
    system.spawn().await;
    check(&client, &gateway, &written).await;

    system.stop();
    system.spawn().await;
    check(&client, &gateway, &written).await;

    let ready: serde_json::Value = json(client.get(format!("{}/ready", system.url("auth")))).await;
    assert_eq!(ready["database"], "up", "{ready}");
    system.stop();
    let out = std::fs::read_to_string(dir.path().join("secureconnect.out")).unwrap();
    assert!(!out.contains("panicked"), "{out}");
    (dir, out)
}

#[tokio::test]
async fn the_embedded_sqlite_database_survives_kill_9_and_restart() {
    let (dir, _) = survives_restarts(&[]).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let data = dir.path().join("data");
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700, "DATA_DIR is private");
        assert_eq!(mode(&data.join("secureconnect.db")), 0o600);
    }
}

#[tokio::test]
async fn postgresql_survives_kill_9_and_restart_and_its_password_is_never_shown() {
    let pg = PgServer::start_new();
    // Trust authentication ignores the password; the services must not print it.
    let url = format!(
        "postgres://postgres:s3cret-pw@127.0.0.1:{}/postgres",
        pg.port()
    );
    let (_dir, out) = survives_restarts(&[("DATABASE_URL", &url), ("RUST_LOG", "info")]).await;
    assert!(!out.contains("s3cret-pw"), "{out}");
    assert!(
        out.contains(&format!("postgres://postgres:***@127.0.0.1:{}", pg.port())),
        "the database is named, password hidden: {out}"
    );
    let tables = pg.psql("SELECT count(*) FROM auth_users");
    assert_eq!(tables.trim(), "2");
}

#[test]
fn a_bad_database_url_stops_the_service_with_a_clear_message() {
    let dead = format!("postgres://app:hunter2@127.0.0.1:{}/sc", free_port());
    for (url, says) in [
        ("mysql://root:hunter2@127.0.0.1/sc", "neither sqlite"),
        (dead.as_str(), "migrations"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_auth"))
            .env("JWT_SECRET", SECRET)
            .env("AUTH_ADDR", format!("127.0.0.1:{}", free_port()))
            .env("REDIS_URL", format!("redis://127.0.0.1:{}/", free_port()))
            .env("DATA_DIR", dir.path())
            .env("DATABASE_URL", url)
            .env("DATABASE_TIMEOUT_MS", "200")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{url} was accepted");
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("DATABASE_URL="), "{text}");
        assert!(text.contains(says), "{url}: {text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("panicked"), "{text}");
    }
}

/// One request of the traffic during the outage: what it asked, its status, how long.
#[derive(Debug)]
struct Answer {
    what: &'static str,
    status: u16,
    took: Duration,
    at: Instant,
}

/// Requests that need the database, in a loop until `stop`: a conversation read (auth),
/// a login (auth) and an upload URL (storage, a write).
async fn traffic(
    gateway: String,
    token: String,
    conversation: String,
    stop: Arc<AtomicBool>,
) -> Vec<Answer> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut answers = Vec::new();
    for round in 0u64.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let (what, request) = match round % 3 {
            0 => (
                "conversation",
                client
                    .get(format!("{gateway}/v1/conversations/{conversation}"))
                    .bearer_auth(&token),
            ),
            1 => (
                "login",
                client.post(format!("{gateway}/v1/auth/login")).json(
                    &serde_json::json!({ "email": "alice@example.org", "password": PASSWORD }),
                ),
            ),
            _ => (
                "upload-url",
                client
                    .post(format!("{gateway}/v1/storage/upload-url"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({ "file_name": "x", "file_size": 1 })),
            ),
        };
        let at = Instant::now();
        let status = match request.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                if status == 503 {
                    let body: serde_json::Value = r.json().await.unwrap_or_default();
                    assert_eq!(body["error"], "database_unavailable", "{what}: {body}");
                }
                status
            }
            Err(e) => panic!("{what}: no answer: {e}"),
        };
        answers.push(Answer {
            what,
            status,
            took: at.elapsed(),
            at,
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    answers
}

#[tokio::test]
async fn postgresql_stopped_under_traffic_gets_503_quickly_and_the_service_heals() {
    let mut pg = PgServer::start_new();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let mut system = AllInOne::start(dir.path(), &audit, &[("DATABASE_URL", &pg.url())]).await;
    let client = reqwest::Client::new();
    let gateway = system.url("gateway");
    let written = write(&client, &gateway).await;

    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(traffic(
                gateway.clone(),
                written.alice.token.clone(),
                written.conversation.clone(),
                Arc::clone(&stop),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    pg.stop_immediate();
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Video keeps its call history there.
    for service in ["auth", "storage", "video"] {
        let r = client
            .get(format!("{}/ready", system.url(service)))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            503,
            "{service} is not ready without its database"
        );
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["database"], "down", "{service}: {body}");
    }

    pg.start();
    let started = Instant::now();
    let mut healed = None;
    while started.elapsed() < Duration::from_secs(30) {
        let r = client
            .get(format!(
                "{gateway}/v1/conversations/{}",
                written.conversation
            ))
            .bearer_auth(&written.alice.token)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            healed = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let healed = healed.expect("requests succeed again once PostgreSQL is back");
    assert!(healed < Duration::from_secs(15), "healed after {healed:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let mut answers = Vec::new();
    for worker in workers {
        answers.extend(worker.await.unwrap());
    }

    let during: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.at > stopped && a.at + a.took < started)
        .collect();
    assert!(
        during.iter().filter(|a| a.status == 503).count() >= 3,
        "requests during the outage got 503: {during:?}"
    );
    for a in &answers {
        assert!(
            matches!(a.status, 200 | 201 | 503),
            "only 503 as a 5xx, nothing else failed: {a:?}"
        );
        if a.status == 503 {
            assert!(a.took < Duration::from_secs(3), "503 within 3 s: {a:?}");
        }
    }
    let last = answers
        .iter()
        .rev()
        .find(|a| a.what == "upload-url")
        .unwrap();
    assert_eq!(last.status, 201, "writes work again: {last:?}");
    let slowest_503 = answers
        .iter()
        .filter(|a| a.status == 503)
        .map(|a| a.took)
        .max()
        .unwrap_or_default();
    eprintln!(
        "outage: {} requests, {} answered 503 (the slowest in {slowest_503:?}); \
         requests succeeded {healed:?} after PostgreSQL started again",
        answers.len(),
        answers.iter().filter(|a| a.status == 503).count(),
    );
    for service in ["auth", "storage"] {
        let ready: serde_json::Value =
            json(client.get(format!("{}/ready", system.url(service)))).await;
        assert_eq!(ready["database"], "up", "{service}: {ready}");
    }
    check(&client, &gateway, &written).await;
    system.stop();
    let out = std::fs::read_to_string(dir.path().join("secureconnect.out")).unwrap();
    assert!(!out.contains("panicked"), "{out}");
}
