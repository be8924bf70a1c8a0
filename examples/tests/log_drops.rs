//! A service whose stdout nobody reads (a stalled collector, a full pipe) keeps serving:
//! the access-log lines that do not fit are dropped and counted, and the count is on the
//! service's own `/metrics` (`log_lines_dropped_total`), read by a real exposition
//! parser from the real binary.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use secureconnect_testkit::exposition::sample;
use secureconnect_testkit::process::{wait_until_ok, ChildProcess};

mod common;
use common::{free_port, text, SECRET};

/// More access-log lines than the queue (8192) and a pipe (64 KiB) hold together.
const REQUESTS: usize = 10_000;

#[tokio::test]
async fn a_stalled_stdout_costs_lines_never_requests_and_metrics_count_them() {
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_gateway"));
    command
        .env("JWT_SECRET", SECRET)
        // No Redis there: the gateway serves in degraded mode.
        .env("REDIS_URL", format!("redis://127.0.0.1:{}", free_port()))
        .env("GATEWAY_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info")
        // A pipe that is never read: it fills, then the writer thread blocks on it.
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let gateway = ChildProcess::spawn(&mut command).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    assert!(wait_until_ok(&format!("{base}/health"), Duration::from_secs(60)).await);

    let client = reqwest::Client::new();
    let scrape = || async {
        let text = text(client.get(format!("{base}/metrics"))).await;
        sample(&text, "log_lines_dropped_total", &[])
            .unwrap_or_else(|| panic!("/metrics lacks log_lines_dropped_total:\n{text}"))
    };
    assert_eq!(scrape().await, 0.0, "nothing dropped before the pipe fills");

    let workers: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            let url = format!("{base}/health");
            tokio::spawn(async move {
                for _ in 0..REQUESTS / 8 {
                    let response =
                        tokio::time::timeout(Duration::from_secs(10), client.get(&url).send())
                            .await
                            .expect("a request never waits for the log")
                            .unwrap();
                    assert_eq!(response.status(), 200);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let dropped = scrape().await;
    // Lines written before the pipe filled, and the queue's 8192, are not dropped.
    assert!(
        dropped > 0.0 && dropped < REQUESTS as f64,
        "dropped {dropped} of {REQUESTS} lines"
    );
    drop(gateway);
}
