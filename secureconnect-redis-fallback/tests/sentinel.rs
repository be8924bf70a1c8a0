//! The client behind real Redis Sentinels (a primary, a replica, three sentinels):
//! `SENTINEL FAILOVER` and a SIGKILLed primary under load. Writes follow the new
//! primary while the old one is still writable, and the old one, demoted or restarted
//! with its old role, is never written to.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{connect, eventually, Call, Load, SETUP};
use secureconnect_redis_fallback::testing::{RedisSentinel, WriteWatch, MASTER_NAME};
use secureconnect_redis_fallback::{RedisClient, RedisClientConfig};

fn block<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Writers: each call sets `w:<caller>:<seq>`.
fn writers(redis: &RedisClient) -> Load {
    let redis = redis.clone();
    Load::start(8, Duration::from_millis(5), move |caller, seq| {
        let redis = redis.clone();
        async move {
            redis
                .query::<()>(redis::cmd("SET").arg(format!("w:{caller}:{seq}")).arg(1))
                .await
        }
    })
}

/// The acknowledged writes that the server at `url` does not hold.
fn missing_on(url: &str, calls: &[Call]) -> Vec<Call> {
    let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
    let acked: Vec<&Call> = calls.iter().filter(|c| c.ok()).collect();
    let mut missing = Vec::new();
    for chunk in acked.chunks(500) {
        let keys: Vec<String> = chunk
            .iter()
            .map(|c| format!("w:{}:{}", c.caller, c.seq))
            .collect();
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut conn).unwrap();
        for (call, value) in chunk.iter().zip(values) {
            if value.is_none() {
                missing.push((*call).clone());
            }
        }
    }
    missing
}

fn assert_only_fallbacks(calls: &[Call]) {
    let bad: Vec<&Call> = calls
        .iter()
        .filter(|c| c.error.as_ref().is_some_and(|e| !e.0))
        .collect();
    assert!(
        bad.is_empty(),
        "every failure is a fallback, none a 5xx: {bad:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_under_load_moves_writes_at_once_and_never_writes_the_demoted_primary() {
    let mut set = block(RedisSentinel::start).unwrap();
    let old = block(|| set.primary()).unwrap();
    let redis = connect(RedisClientConfig::sentinel(
        MASTER_NAME,
        set.sentinel_urls(),
    ))
    .await;
    let observer = WriteWatch::start(set.server(old).port());
    let load = writers(&redis);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let failover_at = Instant::now();
    block(|| set.failover()).unwrap();
    let new = block(|| set.wait_for_new_primary(old, SETUP)).unwrap();
    let new_url = set.server(new).url();
    // The client's writes land on the new primary while the old one is still a
    // writable primary (Sentinel demotes it ~10 s after the switch).
    assert!(
        eventually(Duration::from_secs(5), || async {
            let probe = format!("probe:{}", failover_at.elapsed().as_micros());
            redis
                .query::<()>(redis::cmd("SET").arg(&probe).arg(1))
                .await
                .is_ok()
                && block(|| {
                    let mut c = redis::Client::open(new_url.as_str())
                        .unwrap()
                        .get_connection()
                        .unwrap();
                    redis::cmd("EXISTS")
                        .arg(&probe)
                        .query::<i64>(&mut c)
                        .unwrap()
                        == 1
                })
        })
        .await,
        "writes reach the new primary within 5 s of the failover"
    );
    // Keep writing until the old primary is demoted, and a little after.
    block(|| set.wait_for_replica(old, Duration::from_secs(60))).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls = load.stop().await;
    let samples = observer.stop();

    assert_only_fallbacks(&calls);
    let missing = block(|| missing_on(&set.server(new).url(), &calls));
    // Writes were held (refused: take the fallback) from just before the promotion
    // until the client was on the new primary.
    let held_from = calls
        .iter()
        .filter(|c| {
            c.error
                .as_ref()
                .is_some_and(|e| e.2.contains("refuses writes"))
        })
        .map(|c| c.started)
        .min()
        .expect("writes were held during the failover");
    let moved_at = calls
        .iter()
        .filter(|c| c.ok() && c.started > held_from)
        .map(|c| c.started)
        .min()
        .expect("writes went on after the failover");
    let switch = moved_at - failover_at;
    eprintln!(
        "{} writes, {} failed, {} lost (acknowledged by the old primary); writes held {:?} after SENTINEL FAILOVER, for {:?}",
        calls.len(),
        calls.iter().filter(|c| !c.ok()).count(),
        missing.len(),
        held_from.saturating_duration_since(failover_at),
        moved_at - held_from,
    );
    assert!(
        switch < Duration::from_secs(5),
        "writes moved within 5 s: {switch:?}"
    );
    // A write the old primary acknowledged and the failover discarded was sent before
    // the hold began.
    let late: Vec<&Call> = missing
        .iter()
        .filter(|c| c.started > held_from + Duration::from_millis(100))
        .collect();
    assert!(
        late.is_empty(),
        "no write sent after the hold began was lost: {} were, first {:?}",
        late.len(),
        late.first()
    );
    let acked_after = calls
        .iter()
        .filter(|c| c.ok() && c.started > moved_at)
        .count();
    assert!(acked_after > 100, "the writers kept writing: {acked_after}");
    // The old primary, while still a primary after the client moved, took no write
    // from it; demoted, it refused none (the client never sent it one).
    assert!(
        WriteWatch::unwritten_as_primary_after(&samples, moved_at),
        "no write reached the old primary after the switch"
    );
    assert!(
        samples.iter().any(|s| s.role == "slave"),
        "the old primary was demoted while observed"
    );
    let rejected = samples.last().map_or(0, |s| s.rejected);
    assert_eq!(
        rejected, 0,
        "the demoted primary refused no write: none was sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_primary_under_load_moves_to_the_new_one_and_never_to_the_restarted_old_one()
{
    let mut set = block(RedisSentinel::start).unwrap();
    let old = block(|| set.primary()).unwrap();
    let redis = connect(RedisClientConfig::sentinel(
        MASTER_NAME,
        set.sentinel_urls(),
    ))
    .await;
    let load = writers(&redis);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let killed_at = Instant::now();
    block(|| set.server_mut(old).kill()).unwrap();
    let new = block(|| set.wait_for_new_primary(old, Duration::from_secs(60))).unwrap();
    let elected = killed_at.elapsed();
    let new_url = set.server(new).url();
    assert!(
        eventually(Duration::from_secs(5), || async {
            redis
                .query::<()>(redis::cmd("SET").arg("after-kill").arg(1))
                .await
                .is_ok()
        })
        .await,
        "writes work again within 5 s of the new primary's election"
    );
    let healed = killed_at.elapsed();
    // The old primary comes back as a primary of its own (its old configuration) and
    // stays one for seconds: the client must not go back to it.
    block(|| set.server_mut(old).restart()).unwrap();

    let observer = WriteWatch::start(set.server(old).port());
    block(|| set.wait_for_replica(old, Duration::from_secs(60))).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls = load.stop().await;
    let samples = observer.stop();
    eprintln!(
        "{} writes, {} failed; new primary elected {elected:?} and written {healed:?} after the kill",
        calls.len(),
        calls.iter().filter(|c| !c.ok()).count()
    );
    assert_only_fallbacks(&calls);
    assert!(
        samples.iter().any(|s| s.role == "master"),
        "the restarted old primary was observed as a primary"
    );
    let restarted_writes = samples
        .iter()
        .filter(|s| s.role == "master")
        .map(|s| s.writes)
        .max()
        .unwrap_or(0);
    assert_eq!(
        restarted_writes, 0,
        "no write reached the restarted old primary while it was one"
    );
    // Every write acknowledged after the new primary took over is on it.
    let after: Vec<Call> = calls
        .into_iter()
        .filter(|c| c.started > killed_at + elected)
        .collect();
    let missing = block(|| missing_on(&new_url, &after));
    assert!(
        missing.is_empty(),
        "lost after the election: {:?}",
        missing.first()
    );
}
