//! The reference services behind real Redis Sentinels (`REDIS_MODE=sentinel`: a primary,
//! a replica, three sentinels): `SENTINEL FAILOVER`, then a SIGKILL of the primary,
//! under load through the gateway. No request fails, writes reach the new primary
//! within seconds while the old one is still reachable, and the old primary, demoted
//! or restarted, is never written to.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::redis_load::{
    all_healthy, assert_all_ok, call_with_two, users, GatewayLoad, UNLIMITED,
};
use common::{json, System, SECRET};
use secureconnect_examples::token::Tokens;
use secureconnect_redis_fallback::testing::{RedisSentinel, Reply, WriteWatch, MASTER_NAME};

fn block<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Makes writes with `write` (which answers the key it wrote) until one is found on
/// server `index` within 200 ms of being made; how long that took from `since`.
async fn writes_reach<F, Fut>(
    set: &mut RedisSentinel,
    index: usize,
    since: Instant,
    mut write: F,
) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<String>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(key) = write().await {
            for _ in 0..10 {
                let found = block(|| set.server_mut(index).command(&["EXISTS", &key]));
                if matches!(found, Ok(Reply::Integer(1))) {
                    return Some(since.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    None
}

/// Signs `email` in through the gateway: the key of the session the auth service wrote.
async fn login(c: &reqwest::Client, gateway: &str, email: &str) -> Option<String> {
    let tokens = Tokens::new(SECRET, Duration::from_secs(60));
    let body = serde_json::json!({ "email": email, "password": "correct horse battery" });
    let login = json(c.post(format!("{gateway}/v1/auth/login")).json(&body)).await;
    let claims = tokens.verify(login["access_token"].as_str()?).ok()?;
    Some(format!("sc:kv:session:{}", claims.sid))
}

/// Makes a call through the gateway: the key the video service writes behind.
async fn new_call(c: &reqwest::Client, gateway: &str, token: &str) -> Option<String> {
    let made = json(c.post(format!("{gateway}/v1/calls")).bearer_auth(token)).await;
    Some(format!("sc:call:{{{}}}", made["call_id"].as_str()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_then_a_killed_primary_under_load_cost_no_request_and_no_write_to_the_old_one() {
    let mut set = block(RedisSentinel::start).unwrap();
    let mut env = UNLIMITED.to_vec();
    env.push(("REDIS_MODE", "sentinel"));
    env.push(("REDIS_SENTINEL_MASTER", MASTER_NAME));
    let system = System::start(&set.sentinel_urls().join(","), &env).await;
    let g = system.gateway();
    let c = reqwest::Client::new();
    let users = users(&c, &g, 6).await;
    let (call, _joined) = call_with_two(&system, &c, &users[0], &users[1]).await;
    let load = GatewayLoad::start(&g, &call, &users, 8);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // SENTINEL FAILOVER: the old primary stays reachable and writable for seconds.
    let old = block(|| set.primary()).unwrap();
    let watch = WriteWatch::start(set.server(old).port());
    let failover = Instant::now();
    block(|| set.failover()).unwrap();
    let new = block(|| set.wait_for_new_primary(old, Duration::from_secs(60))).unwrap();
    let promoted = Instant::now();
    let reached = writes_reach(&mut set, new, failover, || {
        login(&c, &g, "user2@example.org")
    })
    .await;
    let calls = writes_reach(&mut set, new, failover, || {
        new_call(&c, &g, &users[2].token)
    })
    .await;
    eprintln!(
        "SENTINEL FAILOVER: new primary named after {:?}; sessions on it {reached:?}, calls {calls:?} after the failover",
        promoted - failover
    );
    let reached = reached.expect("writes reach the new primary");
    assert!(reached < Duration::from_secs(5), "{reached:?}");
    assert!(
        calls.is_some_and(|t| t < Duration::from_secs(5)),
        "{calls:?}"
    );
    block(|| set.wait_for_replica(old, Duration::from_secs(60))).unwrap();
    let samples = watch.stop();
    assert!(
        samples
            .iter()
            .any(|s| s.role == "master" && s.at > promoted),
        "the old primary was still a primary after the new one was named"
    );
    assert!(
        WriteWatch::unwritten_as_primary_after(&samples, promoted),
        "no service wrote to the old primary once the new one was named"
    );
    assert_eq!(
        samples.last().map(|s| s.rejected),
        Some(0),
        "demoted, it refused nothing: nothing was sent to it"
    );

    // SIGKILL of the (new) primary; it comes back at once with its old role, a
    // primary, for seconds.
    let killed = Instant::now();
    block(|| set.server_mut(new).kill()).unwrap();
    let next = block(|| set.wait_for_new_primary(new, Duration::from_secs(60))).unwrap();
    let elected = killed.elapsed();
    block(|| set.server_mut(new).restart()).unwrap();
    let watch = WriteWatch::start(set.server(new).port());
    let reached = writes_reach(&mut set, next, killed, || {
        login(&c, &g, "user3@example.org")
    })
    .await;
    eprintln!("SIGKILL: next primary named {elected:?} after the kill; writes on it {reached:?} after the kill");
    assert!(
        reached.is_some_and(|r| r < elected + Duration::from_secs(5)),
        "{reached:?}"
    );
    block(|| set.wait_for_replica(new, Duration::from_secs(60))).unwrap();
    let samples = watch.stop();
    let as_primary: Vec<u64> = samples
        .iter()
        .filter(|s| s.role == "master")
        .map(|s| s.writes)
        .collect();
    eprintln!(
        "the restarted old primary was observed {} times as a primary",
        as_primary.len()
    );
    assert!(
        as_primary.iter().all(|w| *w == 0),
        "no service wrote to the restarted old primary: {as_primary:?}"
    );
    assert!(all_healthy(&c, &system, Duration::from_secs(10))
        .await
        .is_some());
    let answers = load.stop().await;
    eprintln!(
        "{} requests through the gateway, slowest {:?}",
        answers.len(),
        answers.iter().map(|a| a.took).max().unwrap()
    );
    assert_all_ok(&answers);
}
