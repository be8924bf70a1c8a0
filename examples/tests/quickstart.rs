//! The quickstart router over real TCP: the one-line wrap answers `/metrics` and records
//! the application's routes.

#![allow(clippy::unwrap_used)]

use secureconnect_examples::quickstart;

#[tokio::test]
async fn wrapped_router_serves_metrics_and_records_routes() {
    let app = quickstart::instrument(quickstart::existing_router()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let user = reqwest::get(format!("http://{addr}/users/42"))
        .await
        .unwrap();
    assert_eq!(user.status(), 200);
    assert!(user.headers().contains_key("x-request-id"));
    assert!(user.text().await.unwrap().contains("user-42"));

    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("http_server_request_duration_seconds_count")
                && l.contains("http_route=\"/users/{id}\"")
        })
        .unwrap_or_else(|| panic!("no count for /users/{{id}}:\n{text}"));
    assert!(line.contains("service=\"quickstart\""));
    assert!(line.ends_with(" 1"), "{line}");
    assert!(text.contains("build_info{name=\"secureconnect-examples\""));
    assert!(text.contains("process_resident_memory_bytes"));
}
