//! The storage service's promises against replays, races and hostile content, with the
//! real binaries: an upload URL uploads once, a failed upload leaves nothing, quota
//! reservations are atomic and expire, and downloads never run in a browser.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{json, register_and_login, Session, System};
use secureconnect_redis_fallback::testing::RedisServer;
use tokio::io::AsyncWriteExt;

const MIB: u64 = 1024 * 1024;

async fn start(extra: &[(&str, &str)]) -> (RedisServer, System) {
    let redis = RedisServer::start().unwrap();
    let system = System::start_only(&["auth", "storage", "gateway"], &redis.url(), extra).await;
    (redis, system)
}

/// Asks for an upload URL: `(status, body)`.
async fn upload_url(
    c: &reqwest::Client,
    base: &str,
    user: &Session,
    name: &str,
    size: u64,
    content_type: &str,
) -> (u16, serde_json::Value) {
    let r = c
        .post(format!("{base}/v1/storage/upload-url"))
        .bearer_auth(&user.token)
        .json(&serde_json::json!({
            "file_name": name, "file_size": size, "content_type": content_type,
        }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn put(c: &reqwest::Client, url: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
    let r = c.put(url).body(body).send().await.unwrap();
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    (status, body["error"].as_str().unwrap_or("").to_owned())
}

/// Downloads `file` as its owner: the response.
async fn download(c: &reqwest::Client, g: &str, user: &Session, file: &str) -> reqwest::Response {
    let dl = json(
        c.get(format!("{g}/v1/storage/download-url/{file}"))
            .bearer_auth(&user.token),
    )
    .await;
    c.get(format!("{g}{}", dl["download_url"].as_str().unwrap()))
        .send()
        .await
        .unwrap()
}

/// The names in the storage folder.
fn stored(system: &System) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(system.storage_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn an_upload_url_uploads_once_and_replays_leave_the_file_intact() {
    let (_redis, system) = start(&[]).await;
    let g = system.gateway();
    let c = reqwest::Client::new();
    let alice = register_and_login(&c, &g, "alice@example.org").await;
    let (status, up) = upload_url(&c, &g, &alice, "notes.txt", 11, "text/plain").await;
    assert_eq!(status, 201);
    let file = up["file_id"].as_str().unwrap();
    let url = format!("{g}{}", up["upload_url"].as_str().unwrap());
    assert_eq!(put(&c, &url, "hello world").await.0, 201);

    assert_eq!(
        put(&c, &url, "HELLO WORLD").await,
        (409, "already_uploaded".into()),
        "a replay of the same size"
    );
    assert_eq!(
        put(&c, &url, "x".repeat(100)).await,
        (409, "already_uploaded".into()),
        "a replay larger than announced"
    );
    assert_eq!(put(&c, &url, "").await.0, 409, "an empty replay");
    let r = download(&c, &g, &alice, file).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello world");
    assert_eq!(
        stored(&system),
        vec![file.to_owned()],
        "no temporary file left"
    );
}

#[tokio::test]
async fn of_concurrent_uploads_through_one_url_exactly_one_is_stored() {
    let (_redis, system) = start(&[]).await;
    let g = system.gateway();
    let c = reqwest::Client::new();
    let alice = register_and_login(&c, &g, "alice@example.org").await;
    let (_, up) = upload_url(&c, &g, &alice, "big.bin", 4 * MIB, "").await;
    let file = up["file_id"].as_str().unwrap().to_owned();
    let url = format!(
        "http://127.0.0.1:{}{}",
        system.port("storage"),
        up["upload_url"].as_str().unwrap()
    );
    let puts: Vec<_> = (0u8..8)
        .map(|i| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move { (i, put(&c, &url, vec![i; 4 * MIB as usize]).await) })
        })
        .collect();
    let mut winners = Vec::new();
    for task in puts {
        let (i, (status, code)) = task.await.unwrap();
        match status {
            201 => winners.push(i),
            409 => assert!(
                code == "upload_in_progress" || code == "already_uploaded",
                "{code}"
            ),
            other => panic!("PUT {i}: {other} {code}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let body = download(&c, &g, &alice, &file).await.bytes().await.unwrap();
    assert_eq!(body.len() as u64, 4 * MIB);
    assert!(
        body.iter().all(|b| *b == winners[0]),
        "the winner's bytes, unmixed"
    );
    assert_eq!(stored(&system), vec![file]);
}

#[tokio::test]
async fn a_too_large_or_aborted_upload_leaves_no_file_and_the_url_usable() {
    let (_redis, system) = start(&[]).await;
    let g = system.gateway();
    let c = reqwest::Client::new();
    let alice = register_and_login(&c, &g, "alice@example.org").await;
    let (_, up) = upload_url(&c, &g, &alice, "ten.txt", 10, "text/plain").await;
    let file = up["file_id"].as_str().unwrap().to_owned();
    let path = up["upload_url"].as_str().unwrap().to_owned();
    let url = format!("http://127.0.0.1:{}{path}", system.port("storage"));

    assert_eq!(
        put(&c, &url, "x".repeat(20)).await,
        (413, "too_large".into())
    );
    assert!(stored(&system).is_empty(), "{:?}", stored(&system));
    assert_eq!(
        download(&c, &g, &alice, &file).await.status(),
        404,
        "not uploaded"
    );

    // A client that announces 10 bytes, sends 4 and goes away.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", system.port("storage")))
        .await
        .unwrap();
    let head = format!("PUT {path} HTTP/1.1\r\nhost: storage\r\ncontent-length: 10\r\n\r\nabcd");
    tcp.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(tcp);
    let mut clean = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if stored(&system).is_empty() {
            clean = true;
            break;
        }
    }
    assert!(
        clean,
        "the aborted upload's temporary file is gone: {:?}",
        stored(&system)
    );
    assert_eq!(download(&c, &g, &alice, &file).await.status(), 404);

    assert_eq!(
        put(&c, &url, "0123456789").await.0,
        201,
        "the URL still uploads"
    );
    let r = download(&c, &g, &alice, &file).await;
    assert_eq!(r.text().await.unwrap(), "0123456789");
    assert_eq!(stored(&system), vec![file]);
}

#[tokio::test]
async fn downloads_are_attachments_of_inert_types_that_no_browser_sniffs() {
    let (_redis, system) = start(&[]).await;
    let g = system.gateway();
    let c = reqwest::Client::new();
    let alice = register_and_login(&c, &g, "alice@example.org").await;
    let page = "<script>alert(document.cookie)</script>";
    let cases = [
        (
            "x\".html",
            "text/html; charset=utf-8",
            "application/octet-stream",
        ),
        ("pic.svg", "image/svg+xml", "application/octet-stream"),
        ("résumé.png", "IMAGE/PNG", "image/png"),
        ("notes.txt", "text/plain; charset=utf-8", "text/plain"),
    ];
    for (name, stored_type, served) in cases {
        let (_, up) = upload_url(&c, &g, &alice, name, page.len() as u64, stored_type).await;
        let url = format!("{g}{}", up["upload_url"].as_str().unwrap());
        assert_eq!(put(&c, &url, page).await.0, 201);
        let r = download(&c, &g, &alice, up["file_id"].as_str().unwrap()).await;
        assert_eq!(r.status(), 200);
        let header = |h: &str| {
            r.headers()
                .get(h)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        assert_eq!(
            header("content-type"),
            served,
            "{name} stored as {stored_type}"
        );
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert!(header("content-security-policy").contains("sandbox"));
        let disposition = header("content-disposition");
        assert!(
            disposition.starts_with("attachment; filename=\""),
            "{disposition}"
        );
        assert!(
            !disposition.contains("x\".html"),
            "quotes are not echoed raw"
        );
        if name.starts_with("résumé") {
            assert!(disposition.ends_with("filename*=UTF-8''r%C3%A9sum%C3%A9.png"));
        }
        assert_eq!(r.text().await.unwrap(), page, "the bytes as uploaded");
    }
}

#[tokio::test]
async fn concurrent_reservations_cannot_exceed_the_quota() {
    let quota = (250 * MIB).to_string();
    let (_redis, system) = start(&[("STORAGE_QUOTA_BYTES", quota.as_str())]).await;
    let g = system.gateway();
    let c = reqwest::Client::new();
    let alice = register_and_login(&c, &g, "alice@example.org").await;
    let storage = system.url("storage");
    let alice = std::sync::Arc::new(alice);
    let requests: Vec<_> = (0..20)
        .map(|i| {
            let (c, storage, alice) = (c.clone(), storage.clone(), alice.clone());
            tokio::spawn(async move {
                upload_url(&c, &storage, &alice, &format!("{i}.bin"), 100 * MIB, "").await
            })
        })
        .collect();
    let mut granted = Vec::new();
    for request in requests {
        let (status, body) = request.await.unwrap();
        match status {
            201 => granted.push(body["file_id"].as_str().unwrap().to_owned()),
            413 => assert_eq!(body["error"], "quota_exceeded"),
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(granted.len(), 2, "250 MiB hold two 100 MiB reservations");

    // Deleting one gives its bytes back.
    let r = c
        .delete(format!("{g}/v1/storage/files/{}", granted[0]))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        upload_url(&c, &g, &alice, "again.bin", 100 * MIB, "")
            .await
            .0,
        201
    );
    assert_eq!(
        upload_url(&c, &g, &alice, "more.bin", 100 * MIB, "")
            .await
            .0,
        413
    );
}

#[tokio::test]
async fn an_unused_reservation_expires_and_gives_its_bytes_back() {
    let quota = (150 * MIB).to_string();
    let (_redis, system) = start(&[
        ("STORAGE_QUOTA_BYTES", quota.as_str()),
        ("STORAGE_RESERVATION_TTL_SECS", "1"),
    ])
    .await;
    let g = system.gateway();
    let c = reqwest::Client::new();
    let alice = register_and_login(&c, &g, "alice@example.org").await;
    let (status, first) = upload_url(&c, &g, &alice, "a.bin", 100 * MIB, "").await;
    assert_eq!((status, first["expires_in"].as_u64()), (201, Some(1)));
    assert_eq!(
        upload_url(&c, &g, &alice, "b.bin", 100 * MIB, "").await.0,
        413
    );
    // Valid through the second it names, gone after it.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        upload_url(&c, &g, &alice, "b.bin", 100 * MIB, "").await.0,
        201,
        "the unused reservation expired"
    );
    let url = format!("{g}{}", first["upload_url"].as_str().unwrap());
    assert_eq!(put(&c, &url, "x").await.0, 403, "its URL expired with it");
}
