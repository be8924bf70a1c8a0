//! The client against a real redis-server that is killed, paused, reconfigured and
//! put behind a faulty proxy.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use secureconnect_redis_fallback::testing::{FaultProxy, ProxyMode, RedisServer, Reply};
use secureconnect_redis_fallback::{ErrorKind, Health, RedisClient, RedisClientConfig};

async fn client(config: RedisClientConfig) -> RedisClient {
    RedisClient::connect(config, &mut Registry::default())
        .await
        .unwrap()
}

/// Waits up to `within` for `health`; true if reached.
async fn reaches(client: &RedisClient, health: Health, within: Duration) -> bool {
    client.wait_for(health, within).await
}

async fn set(
    client: &RedisClient,
    key: &str,
    value: &str,
) -> Result<(), secureconnect_redis_fallback::Error> {
    client
        .query::<()>(redis::cmd("SET").arg(key).arg(value))
        .await
}

async fn get(
    client: &RedisClient,
    key: &str,
) -> Result<Option<String>, secureconnect_redis_fallback::Error> {
    client.query(redis::cmd("GET").arg(key)).await
}

#[tokio::test]
async fn sigkill_degrades_at_the_first_failed_call_and_restart_heals_without_restarting_callers() {
    let mut server = RedisServer::start().unwrap();
    let redis = client(RedisClientConfig::new(server.url())).await;
    assert_eq!(redis.health(), Health::Healthy);
    set(&redis, "k", "v1").await.unwrap();
    assert_eq!(get(&redis, "k").await.unwrap().as_deref(), Some("v1"));

    server.kill().unwrap();
    let first = get(&redis, "k").await.unwrap_err();
    assert!(first.is_unavailable(), "{first}");
    assert_eq!(
        redis.health(),
        Health::Degraded,
        "degraded after the first failed call"
    );
    // Every later call is refused without touching the network.
    for _ in 0..1_000 {
        let e = get(&redis, "k").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(
            e.redis_error().is_none(),
            "refused locally, not by a network error: {e}"
        );
    }

    tokio::time::sleep(Duration::from_millis(700)).await;
    server.restart().unwrap();
    let restarted = Instant::now();
    assert!(
        reaches(&redis, Health::Healthy, Duration::from_secs(2)).await,
        "healthy again within 2 s of the restart"
    );
    eprintln!("healthy {:?} after the restart", restarted.elapsed());
    set(&redis, "k", "v2").await.unwrap();
    assert_eq!(get(&redis, "k").await.unwrap().as_deref(), Some("v2"));
}

#[tokio::test]
async fn sigstop_under_200_concurrent_callers_keeps_deadlines_and_replies_straight() {
    let server = RedisServer::start().unwrap();
    let deadline = Duration::from_millis(250);
    let redis = client(RedisClientConfig::new(server.url()).call_timeout(deadline)).await;
    for i in 0..200 {
        set(&redis, &format!("key:{i}"), &format!("value:{i}"))
            .await
            .unwrap();
    }
    let mut states = redis.subscribe();
    let seen_degraded =
        tokio::spawn(async move { states.wait_for(|h| *h == Health::Degraded).await.is_ok() });

    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let run_until = Instant::now() + Duration::from_millis(4_500);
    let callers: Vec<_> = (0..200)
        .map(|i| {
            let redis = redis.clone();
            let (ok, failed) = (Arc::clone(&ok), Arc::clone(&failed));
            tokio::spawn(async move {
                let mut slowest = Duration::ZERO;
                while Instant::now() < run_until {
                    let started = Instant::now();
                    let result = get(&redis, &format!("key:{i}")).await;
                    slowest = slowest.max(started.elapsed());
                    match result {
                        Ok(value) => {
                            assert_eq!(
                                value,
                                Some(format!("value:{i}")),
                                "caller {i} got another's reply"
                            );
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            assert!(e.is_unavailable(), "{e}");
                            failed.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
                slowest
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(500)).await;
    server.pause().unwrap();
    let ok_before = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.resume().unwrap();

    let mut slowest = Duration::ZERO;
    for caller in callers {
        slowest = slowest.max(caller.await.unwrap());
    }
    assert!(seen_degraded.await.unwrap(), "the client turned degraded");
    assert!(
        slowest < deadline + Duration::from_millis(150),
        "a call outlived its deadline: {slowest:?}"
    );
    assert!(ok_before > 0 && failed.load(Ordering::Relaxed) > 0);
    assert!(
        reaches(&redis, Health::Healthy, Duration::from_secs(3)).await,
        "healthy after SIGCONT"
    );
    let ok_after = ok.load(Ordering::Relaxed);
    assert!(ok_after > ok_before, "calls succeeded again after SIGCONT");
    for i in 0..200 {
        assert_eq!(
            get(&redis, &format!("key:{i}")).await.unwrap(),
            Some(format!("value:{i}"))
        );
    }
}

#[tokio::test]
async fn starting_while_redis_is_down_then_it_comes_up() {
    let mut server = RedisServer::start().unwrap();
    server.kill().unwrap();
    let redis = client(RedisClientConfig::new(server.url())).await;
    assert_eq!(redis.health(), Health::Degraded);
    assert!(get(&redis, "x").await.unwrap_err().is_unavailable());
    server.restart().unwrap();
    assert!(reaches(&redis, Health::Healthy, Duration::from_secs(3)).await);
    set(&redis, "x", "1").await.unwrap();
}

#[tokio::test]
async fn requirepass_mid_run_degrades_loudly_and_heals_when_lifted() {
    let mut server = RedisServer::start().unwrap();
    let redis =
        client(RedisClientConfig::new(server.url()).auth_backoff(Duration::from_millis(800))).await;
    set(&redis, "a", "1").await.unwrap();

    server.config_set("requirepass", "s3cret").unwrap();
    // Existing connections stay authenticated; cut them so the client must reconnect.
    server
        .command(&["CLIENT", "KILL", "TYPE", "normal"])
        .unwrap();
    // The client notices on its next call or probe.
    let mut degraded = false;
    for _ in 0..50 {
        if get(&redis, "a").await.is_err() && redis.health() == Health::Degraded {
            degraded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(degraded, "NOAUTH turned the client degraded");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        redis.health(),
        Health::Degraded,
        "stays degraded while refused"
    );

    server.config_set("requirepass", "").unwrap();
    assert!(reaches(&redis, Health::Healthy, Duration::from_secs(4)).await);
    assert_eq!(get(&redis, "a").await.unwrap().as_deref(), Some("1"));
}

#[tokio::test]
async fn oom_refuses_writes_but_reads_go_on() {
    let mut server = RedisServer::start().unwrap();
    let redis = client(RedisClientConfig::new(server.url())).await;
    set(&redis, "kept", "yes").await.unwrap();
    server.config_set("maxmemory-policy", "noeviction").unwrap();
    server.config_set("maxmemory", "1").unwrap();

    let e = set(&redis, "new", "x").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WritesUnavailable, "{e}");
    assert!(redis.writes_refused());
    assert_eq!(redis.health(), Health::Healthy, "OOM is not an outage");
    // Writes are now refused locally; reads go to Redis.
    let e = set(&redis, "new", "x").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WritesUnavailable);
    assert!(e.redis_error().is_none());
    assert_eq!(get(&redis, "kept").await.unwrap().as_deref(), Some("yes"));

    server.config_set("maxmemory", "0").unwrap();
    let mut healed = false;
    for _ in 0..60 {
        if set(&redis, "new", "x").await.is_ok() {
            healed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healed, "writes accepted again once memory is free");
    assert!(!redis.writes_refused());
}

#[tokio::test]
async fn readonly_replica_refuses_writes_but_reads_go_on() {
    let primary = RedisServer::start().unwrap();
    let mut server = RedisServer::start().unwrap();
    let redis = client(RedisClientConfig::new(server.url())).await;
    server
        .command(&["REPLICAOF", "127.0.0.1", &primary.port().to_string()])
        .unwrap();
    let e = set(&redis, "k", "v").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WritesUnavailable, "{e}");
    assert_eq!(
        get(&redis, "k").await.unwrap(),
        None,
        "reads still answered"
    );
    assert_ne!(redis.health(), Health::Degraded);

    server.command(&["REPLICAOF", "NO", "ONE"]).unwrap();
    let mut healed = false;
    for _ in 0..60 {
        if set(&redis, "k", "v").await.is_ok() {
            healed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healed);
}

#[tokio::test]
async fn client_kill_is_survived() {
    let mut server = RedisServer::start().unwrap();
    let redis = client(RedisClientConfig::new(server.url())).await;
    set(&redis, "k", "v").await.unwrap();
    let killed = server
        .command(&["CLIENT", "KILL", "TYPE", "normal"])
        .unwrap();
    assert!(
        matches!(killed, Reply::Integer(n) if n >= 2),
        "main and probe connections: {killed:?}"
    );
    let e = get(&redis, "k").await.unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    assert!(reaches(&redis, Health::Healthy, Duration::from_secs(2)).await);
    assert_eq!(get(&redis, "k").await.unwrap().as_deref(), Some("v"));
}

#[tokio::test]
async fn blackholed_connection_times_out_then_degrades_then_heals() {
    let server = RedisServer::start().unwrap();
    let proxy = FaultProxy::start(([127, 0, 0, 1], server.port()).into())
        .await
        .unwrap();
    let redis = client(
        RedisClientConfig::new(proxy.url())
            .call_timeout(Duration::from_millis(100))
            .timeouts_to_rebuild(2)
            .timeouts_to_degrade(3),
    )
    .await;
    set(&redis, "k", "v").await.unwrap();

    proxy.set_mode(ProxyMode::Blackhole);
    let mut kinds = Vec::new();
    for _ in 0..5 {
        kinds.push(get(&redis, "k").await.unwrap_err().kind());
    }
    assert_eq!(&kinds[..3], &[ErrorKind::Timeout; 3], "{kinds:?}");
    assert_eq!(redis.health(), Health::Degraded);
    assert_eq!(kinds[4], ErrorKind::Unavailable, "then refused at once");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        redis.health(),
        Health::Degraded,
        "probes through the blackhole fail"
    );

    proxy.set_mode(ProxyMode::Forward);
    assert!(reaches(&redis, Health::Healthy, Duration::from_secs(3)).await);
    assert_eq!(get(&redis, "k").await.unwrap().as_deref(), Some("v"));
}

#[tokio::test]
async fn reset_connections_degrade_and_heal() {
    let server = RedisServer::start().unwrap();
    let proxy = FaultProxy::start(([127, 0, 0, 1], server.port()).into())
        .await
        .unwrap();
    let redis = client(RedisClientConfig::new(proxy.url())).await;
    set(&redis, "k", "v").await.unwrap();
    proxy.set_mode(ProxyMode::Reset);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(get(&redis, "k").await.unwrap_err().is_unavailable());
    assert_eq!(redis.health(), Health::Degraded);
    proxy.set_mode(ProxyMode::Forward);
    assert!(reaches(&redis, Health::Healthy, Duration::from_secs(3)).await);
}

#[tokio::test]
async fn flapping_redis_causes_no_reconnection_storm() {
    let mut server = RedisServer::start().unwrap();
    let redis = client(RedisClientConfig::new(server.url())).await;
    let caller = {
        let redis = redis.clone();
        tokio::spawn(async move {
            let mut calls = 0u64;
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until {
                let _ = get(&redis, "k").await;
                calls += 1;
                tokio::task::yield_now().await;
            }
            calls
        })
    };
    let mut connections_seen = 0u64;
    let mut own = 0u64;
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Count what this instance received before it dies (minus our INFO connection).
        if let Ok(n) = server.info_field("total_connections_received") {
            connections_seen += n.parse::<u64>().unwrap();
            own += 1;
        }
        server.restart().unwrap();
        own += 1; // the PING that checks the restarted server is up
    }
    let calls = caller.await.unwrap();
    let from_client = connections_seen.saturating_sub(own);
    eprintln!("{calls} calls, {from_client} connections from the client over 20 restarts");
    assert!(calls > 1_000, "the caller kept calling: {calls}");
    assert!(
        from_client <= 100,
        "reconnections stay bounded by the probe backoff: {from_client}"
    );
    assert!(reaches(&redis, Health::Healthy, Duration::from_secs(3)).await);
}
