//! `DbPoolMetrics` on a real sqlx pool (an SQLite file): the gauges follow the pool at
//! each scrape, the acquire wait is counted also when no connection came, and the
//! exposition passes `promtool check metrics`.
#![cfg(feature = "sqlx")]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use secureconnect_obs::db_pool::{DbPoolMetrics, DbPoolMetricsConfig};
use secureconnect_testkit::exposition::sample;
use secureconnect_testkit::promtool_check;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

fn scrape(registry: &Registry) -> String {
    let mut text = String::new();
    encode(&mut text, registry).unwrap();
    text
}

#[tokio::test]
async fn the_gauges_follow_the_pool_and_every_wait_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let pool = SqlitePoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_millis(200))
        .connect_lazy_with(
            SqliteConnectOptions::new()
                .filename(dir.path().join("t.db"))
                .create_if_missing(true),
        );
    let mut registry = Registry::default();
    let db = DbPoolMetrics::new(
        pool,
        DbPoolMetricsConfig::default().pool_name("users"),
        &mut registry,
    );
    let pool = [("pool", "users")];
    let text = scrape(&registry);
    assert_eq!(sample(&text, "db_connections_max", &pool), Some(2.0));
    assert_eq!(sample(&text, "db_connections_active", &pool), Some(0.0));
    assert_eq!(sample(&text, "db_connections_idle", &pool), Some(0.0));

    let first = db.acquire().await.unwrap();
    let second = db.acquire().await.unwrap();
    let text = scrape(&registry);
    assert_eq!(sample(&text, "db_connections_active", &pool), Some(2.0));
    assert_eq!(sample(&text, "db_connections_idle", &pool), Some(0.0));

    // Saturated: the third caller waits its acquire timeout and gets nothing; the wait
    // is recorded all the same.
    let refused = db.acquire().await;
    assert!(
        matches!(refused, Err(sqlx::Error::PoolTimedOut)),
        "{refused:?}"
    );
    let text = scrape(&registry);
    assert_eq!(
        sample(&text, "db_connection_acquire_seconds_count", &pool),
        Some(3.0)
    );
    let slow = sample(
        &text,
        "db_connection_acquire_seconds_bucket",
        &[("pool", "users"), ("le", "0.1")],
    )
    .unwrap();
    assert_eq!(slow, 2.0, "the timed-out wait is above 100 ms:\n{text}");

    drop(first);
    // The connection goes back to the pool on a task of its own.
    let mut idle = 0.0;
    for _ in 0..100 {
        idle = sample(&scrape(&registry), "db_connections_idle", &pool).unwrap();
        if idle == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(idle, 1.0);
    let text = scrape(&registry);
    assert_eq!(sample(&text, "db_connections_active", &pool), Some(1.0));
    promtool_check(&text);
    drop(second);
}
