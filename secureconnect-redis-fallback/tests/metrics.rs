//! The client's metrics follow its health, and their exposition passes promtool.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use prometheus_client::registry::Registry;
use secureconnect_redis_fallback::testing::RedisServer;
use secureconnect_redis_fallback::{Health, RedisClient, RedisClientConfig};

fn render(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry).unwrap();
    text
}

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_follow_health_through_an_outage() {
    let mut server = RedisServer::start().unwrap();
    let mut registry = Registry::default();
    let redis = RedisClient::connect(
        RedisClientConfig::new(server.url()).name("cache"),
        &mut registry,
    )
    .await
    .unwrap();
    redis
        .query::<()>(redis::cmd("SET").arg("a").arg(1))
        .await
        .unwrap();
    let _ = redis
        .query::<i64>(redis::cmd("LPUSH").arg("a").arg(1))
        .await
        .unwrap_err();

    let text = render(&registry);
    secureconnect_testkit::promtool_check(&text);
    assert_eq!(sample(&text, "redis_up{redis=\"cache\"}"), 1.0);
    assert_eq!(
        sample(
            &text,
            "redis_health_state{redis=\"cache\",state=\"healthy\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "redis_commands_total{redis=\"cache\",outcome=\"ok\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "redis_commands_total{redis=\"cache\",outcome=\"command_error\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "redis_connections_total{redis=\"cache\",purpose=\"main\"}"
        ),
        1.0
    );

    server.kill().unwrap();
    for _ in 0..3 {
        let _ = redis
            .query::<Option<String>>(redis::cmd("GET").arg("a"))
            .await;
    }
    assert_eq!(redis.health(), Health::Degraded);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = render(&registry);
    secureconnect_testkit::promtool_check(&text);
    assert_eq!(sample(&text, "redis_up{redis=\"cache\"}"), 0.0);
    assert_eq!(
        sample(
            &text,
            "redis_health_state{redis=\"cache\",state=\"degraded\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "redis_health_state{redis=\"cache\",state=\"healthy\"}"
        ),
        0.0
    );
    assert_eq!(
        sample(
            &text,
            "redis_commands_total{redis=\"cache\",outcome=\"unavailable\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "redis_commands_total{redis=\"cache\",outcome=\"rejected\"}"
        ),
        2.0
    );
    let degraded = sample(&text, "redis_degraded_seconds_total{redis=\"cache\"}");
    assert!(degraded >= 0.25, "{degraded}");

    server.restart().unwrap();
    assert!(
        redis
            .wait_for(Health::Healthy, Duration::from_secs(3))
            .await
    );
    let text = render(&registry);
    assert_eq!(sample(&text, "redis_up{redis=\"cache\"}"), 1.0);
    let after = sample(&text, "redis_degraded_seconds_total{redis=\"cache\"}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        sample(
            &render(&registry),
            "redis_degraded_seconds_total{redis=\"cache\"}"
        ),
        after,
        "the degraded clock stops when healthy"
    );
    assert!(sample(&text, "redis_probe_duration_seconds_count{redis=\"cache\"}") >= 1.0);
}
