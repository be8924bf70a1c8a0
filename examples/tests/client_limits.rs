//! The gateway's per-client limit keys on the client behind a trusted proxy, not on the
//! proxy, and a client cannot choose its key with an `X-Forwarded-For` of its own. The
//! real gateway binary, a real redis-server.

#![allow(clippy::unwrap_used)]

mod common;

use common::System;
use secureconnect_redis_fallback::testing::RedisServer;

/// A request to a limited route (no token: 401 once past the per-client limit, 429 when
/// refused by it) with these `X-Forwarded-For` lines.
async fn status(c: &reqwest::Client, g: &str, forwarded: &[&str]) -> u16 {
    let mut request = c.get(format!("{g}/v1/calls"));
    for line in forwarded {
        request = request.header("x-forwarded-for", *line);
    }
    request.send().await.unwrap().status().as_u16()
}

async fn gateway(redis: &RedisServer, extra: &[(&str, &str)]) -> System {
    let mut settings = vec![("RATE_LIMIT_CLIENT_PER_MINUTE", "5")];
    settings.extend_from_slice(extra);
    System::start_only(&["gateway"], &redis.url(), &settings).await
}

#[tokio::test]
async fn clients_behind_a_trusted_proxy_are_limited_one_by_one() {
    let redis = RedisServer::start().unwrap();
    // The test talks from 127.0.0.1: it is the proxy.
    let system = gateway(&redis, &[("TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let (g, c) = (system.gateway(), reqwest::Client::new());

    for _ in 0..5 {
        assert_eq!(status(&c, &g, &["203.0.113.1"]).await, 401);
    }
    assert_eq!(status(&c, &g, &["203.0.113.1"]).await, 429);
    assert_eq!(
        status(&c, &g, &["203.0.113.2"]).await,
        401,
        "another client behind the same proxy has a budget of its own"
    );
    // The client's own claim comes first; the proxy appends what it saw, here on a
    // header line of its own.
    assert_eq!(
        status(&c, &g, &["198.51.100.77", "203.0.113.1"]).await,
        429,
        "a claimed address does not give the limited client a new budget"
    );
    assert_eq!(
        status(&c, &g, &["198.51.100.77, 203.0.113.1"]).await,
        429,
        "nor on the same line"
    );

    // IPv6 clients by their /64.
    for _ in 0..5 {
        assert_eq!(status(&c, &g, &["2001:db8:1:2::1"]).await, 401);
    }
    assert_eq!(
        status(&c, &g, &["2001:db8:1:2:ffff::9"]).await,
        429,
        "the same /64"
    );
    assert_eq!(
        status(&c, &g, &["2001:db8:1:3::1"]).await,
        401,
        "another /64"
    );
}

#[tokio::test]
async fn a_client_that_is_not_a_trusted_proxy_cannot_pick_its_key() {
    let redis = RedisServer::start().unwrap();
    let system = gateway(&redis, &[]).await;
    let (g, c) = (system.gateway(), reqwest::Client::new());
    for i in 0..5 {
        let claimed = format!("203.0.113.{i}");
        assert_eq!(status(&c, &g, &[claimed.as_str()]).await, 401);
    }
    assert_eq!(
        status(&c, &g, &["203.0.113.99"]).await,
        429,
        "keyed on the peer, whatever it claims"
    );
    assert_eq!(status(&c, &g, &[]).await, 429);
}
