//! The supervisor: the background task of a [`RedisClient`](crate::RedisClient) that
//! probes Redis, (re)builds the main connection, and brings the client back.
//!
//! It holds no health logic of its own: each turn of its loop runs the step function of
//! the current [`Health`] ([`healthy`], [`degraded`], [`recovering`]), which waits,
//! probes, feeds what it saw to the [`Tracker`](crate::health::Tracker) as an
//! [`Event`], and performs the I/O the tracker's state calls for (rebuilding the main
//! connection, dropping it while degraded, probing writes while they are refused).

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use crate::classify::classify;
use crate::client::Inner;
use crate::health::{Event, Health};

/// What the loop carries from one turn to the next.
#[derive(Debug)]
struct Supervisor {
    inner: Arc<Inner>,
    /// The connection `PING` probes go on, separate from the calls'.
    probe_conn: Option<MultiplexedConnection>,
    /// The next probe delay while degraded.
    backoff: Duration,
    /// Whether no connection was attempted yet.
    first: bool,
}

/// The background task: one step per turn, chosen by the current health.
pub(crate) async fn supervise(inner: Arc<Inner>) {
    let mut supervisor = Supervisor {
        backoff: inner.config.backoff_min,
        inner,
        probe_conn: None,
        first: true,
    };
    loop {
        match supervisor.inner.tracker.health() {
            Health::Healthy => healthy(&mut supervisor).await,
            Health::Degraded => degraded(&mut supervisor).await,
            Health::Recovering => recovering(&mut supervisor).await,
        }
    }
}

/// Healthy: wait for a wake-up or the probe interval; then rebuild the main connection
/// if timeouts asked for it, probe writes while they are refused, or `PING`.
async fn healthy(s: &mut Supervisor) {
    let inner = Arc::clone(&s.inner);
    let (config, tracker) = (&inner.config, &inner.tracker);
    s.backoff = config.backoff_min;
    let wake = tokio::time::timeout(config.probe_interval, tracker.wake.notified());
    let woken = wake.await.is_ok();
    if tracker.health() != Health::Healthy {
        return;
    }
    if tracker.take_rebuild() {
        // Repeated timeouts on the main connection: replace it without making any call
        // wait for the new one.
        match inner.open_main().await {
            Ok(conn) => inner.set_conn(Some(conn)),
            Err(e) => {
                tracker.feed(Event::Unavailable("rebuilding the connection failed"));
                tracing::debug!(target: "secureconnect_redis_fallback", error = %e, "rebuild failed");
            }
        }
        return;
    }
    if tracker.writes_refused() {
        if probe_write(&inner).await {
            tracker.feed(Event::WritesAccepted);
        } else {
            tokio::time::sleep(jitter(s.backoff)).await;
        }
        return;
    }
    if woken {
        return;
    }
    let event = probe(&inner, &mut s.probe_conn).await;
    tracker.feed(event);
}

/// Degraded: drop the main connection, wait the backoff (slow while credentials are
/// refused), probe; on success open a new main connection and start recovering (or,
/// at start, be healthy at once).
async fn degraded(s: &mut Supervisor) {
    let inner = Arc::clone(&s.inner);
    let (config, tracker) = (&inner.config, &inner.tracker);
    // Calls are refused anyway, and replies still owed on the old connection must not
    // be waited for.
    inner.set_conn(None);
    if !s.first {
        let delay = if tracker.auth_failed() {
            config.auth_backoff
        } else {
            s.backoff
        };
        tokio::time::sleep(jitter(delay)).await;
        s.backoff = s
            .backoff
            .mul_f64(1.5)
            .min(config.backoff_max.max(config.backoff_min));
    }
    match probe(&inner, &mut s.probe_conn).await {
        Event::ProbeOk => {
            tracker.feed(Event::ProbeOk);
            match inner.open_main().await {
                Ok(conn) => {
                    inner.set_conn(Some(conn));
                    tracker.feed(if s.first {
                        Event::Connected
                    } else {
                        Event::Reconnected
                    });
                }
                Err(e) if classify(&e).event == Some(Event::AuthRefused) => {
                    tracker.feed(Event::AuthRefused);
                }
                Err(_) => {}
            }
        }
        Event::AuthRefused => {
            tracker.feed(Event::AuthRefused);
        }
        // Already degraded: a failed probe changes nothing.
        _ => {}
    }
    if s.first && tracker.health() == Health::Degraded {
        tracing::warn!(
            target: "secureconnect_redis_fallback",
            url = %redacted(&config.url),
            "redis is not reachable at start; running degraded and retrying"
        );
    }
    s.first = false;
}

/// Recovering: a probe every recovery interval; enough in a row make the client
/// healthy, one failure degrades it again.
async fn recovering(s: &mut Supervisor) {
    let inner = Arc::clone(&s.inner);
    let (config, tracker) = (&inner.config, &inner.tracker);
    let _ = tokio::time::timeout(config.recovery_interval, tracker.wake.notified()).await;
    if tracker.health() != Health::Recovering {
        return;
    }
    let event = probe(&inner, &mut s.probe_conn).await;
    tracker.feed(event);
}

/// A `PING` on the probe connection, opening it if needed: [`Event::ProbeOk`],
/// [`Event::AuthRefused`] or [`Event::ProbeFailed`].
async fn probe(inner: &Inner, conn: &mut Option<MultiplexedConnection>) -> Event {
    let failed = |error: &redis::RedisError| match classify(error).event {
        Some(Event::AuthRefused) => Event::AuthRefused,
        _ => Event::ProbeFailed,
    };
    if conn.is_none() {
        match inner.open().await {
            Ok(opened) => {
                inner.tracker.metrics().probe_connections.inc();
                *conn = Some(opened);
            }
            Err(e) => return failed(&e),
        }
    }
    let Some(c) = conn.as_mut() else {
        return Event::ProbeFailed;
    };
    let start = Instant::now();
    let result = tokio::time::timeout(
        inner.config.call_timeout,
        redis::cmd("PING").query_async::<String>(c),
    )
    .await;
    inner
        .tracker
        .metrics()
        .probe_duration
        .observe(start.elapsed().as_secs_f64());
    let event = match result {
        Ok(Ok(_)) => return Event::ProbeOk,
        Ok(Err(e)) => failed(&e),
        Err(_) => Event::ProbeFailed,
    };
    // Whatever went wrong, the next probe starts on a fresh connection.
    *conn = None;
    event
}

/// Whether Redis takes a write again after `OOM`/`READONLY`.
async fn probe_write(inner: &Inner) -> bool {
    let Some(mut conn) = inner.conn() else {
        return false;
    };
    let mut cmd = redis::cmd("SET");
    cmd.arg("sc:redis-fallback:write-probe")
        .arg(1)
        .arg("PX")
        .arg(1000);
    matches!(
        tokio::time::timeout(inner.config.call_timeout, cmd.query_async::<()>(&mut conn)).await,
        Ok(Ok(()))
    )
}

/// ±20 % jitter without a random-number generator: the sub-microsecond part of the
/// clock is noise enough to keep many clients from probing in step.
fn jitter(delay: Duration) -> Duration {
    let noise = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let factor = 0.8 + f64::from(noise % 1000) / 1000.0 * 0.4;
    delay.mul_f64(factor)
}

/// The URL without its password, for logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redacted("redis://:hunter2@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redacted("redis://host:6379"), "redis://host:6379");
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        for _ in 0..100 {
            let d = jitter(Duration::from_millis(100));
            assert!(
                d >= Duration::from_millis(80) && d <= Duration::from_millis(120),
                "{d:?}"
            );
        }
    }
}
