//! The supervisor: the background task of a [`RedisClient`](crate::RedisClient) that
//! probes Redis, (re)builds the main connection, and brings the client back.
//!
//! It holds no health logic of its own: each turn of its loop runs the step function of
//! the current [`Health`] ([`healthy`], [`degraded`], [`recovering`]), which waits,
//! probes, feeds what it saw to the [`Tracker`](crate::health::Tracker) as an
//! [`Event`], and performs the I/O the tracker's state calls for (rebuilding the main
//! connection, dropping it while degraded, probing writes while they are refused,
//! moving it to a new Sentinel primary or onto a Cluster's new slot map). What a probe
//! and a main connection are for each topology is the [`Backend`](crate::backend)'s
//! business.

use std::sync::Arc;
use std::time::Duration;

use crate::classify::classify;
use crate::client::Inner;
use crate::health::{Event, Health};

/// What the loop carries from one turn to the next.
#[derive(Debug)]
struct Supervisor {
    inner: Arc<Inner>,
    /// The next probe delay while degraded (or while a Cluster master is down).
    backoff: Duration,
    /// Whether no connection was attempted yet.
    first: bool,
}

/// The background task: one step per turn, chosen by the current health.
pub(crate) async fn supervise(inner: Arc<Inner>) {
    let mut supervisor = Supervisor {
        backoff: inner.config.backoff_min,
        inner,
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

impl Supervisor {
    fn grow_backoff(&mut self) {
        let config = &self.inner.config;
        self.backoff = self
            .backoff
            .mul_f64(1.5)
            .min(config.backoff_max.max(config.backoff_min));
    }
}

/// Healthy: wait for a wake-up or the probe interval (the backoff while a Cluster
/// master is down); then move to a new primary if Sentinel named one, rebuild the main
/// connection if timeouts asked for it, probe writes while they are refused, or probe.
async fn healthy(s: &mut Supervisor) {
    let inner = Arc::clone(&s.inner);
    let (config, tracker) = (&inner.config, &inner.tracker);
    if inner.backend.take_switch() {
        switch(&inner).await;
        return;
    }
    let partly_down = inner.backend.partly_down();
    let wait = if partly_down || tracker.writes_refused() {
        jitter(s.backoff)
    } else {
        s.backoff = config.backoff_min;
        config.probe_interval
    };
    let woken = tokio::time::timeout(wait, tracker.wake.notified())
        .await
        .is_ok();
    if tracker.health() != Health::Healthy {
        return;
    }
    if inner.backend.take_switch() {
        switch(&inner).await;
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
        if inner.backend.sentinel().is_some_and(|s| s.holding_writes()) {
            // A failover is promoting a replica: wait for the announcement of the new
            // primary (it wakes this task) before writing anywhere.
            let _ = tokio::time::timeout(jitter(s.backoff), tracker.wake.notified()).await;
            return;
        }
        if inner.backend.follows_primary() {
            // READONLY from Sentinel's primary: it may have been demoted. Look it up.
            switch(&inner).await;
        }
        if probe_write(&inner).await {
            tracker.feed(Event::WritesAccepted);
        } else {
            tokio::time::sleep(jitter(s.backoff)).await;
        }
        return;
    }
    if woken && !inner.backend.partly_down() {
        return;
    }
    let event = inner.probe().await;
    tracker.feed(event);
    if inner.backend.take_switch() && tracker.health() == Health::Healthy {
        switch(&inner).await;
    }
    if partly_down {
        s.grow_backoff();
    }
}

/// Moves the main connection: to the primary the sentinels name now (if it cannot be
/// reached, the client degrades: the old primary is never written to again), or onto
/// a Cluster's new slot map (if that fails, the old connection stays and the next
/// probe tries again).
async fn switch(inner: &Inner) {
    match inner.open_main().await {
        Ok(conn) => inner.set_conn(Some(conn)),
        Err(e) if !inner.backend.follows_primary() => {
            tracing::debug!(target: "secureconnect_redis_fallback", error = %e, "reconnecting on the new slot map failed");
            inner.backend.request_switch();
        }
        Err(e) => {
            tracing::debug!(target: "secureconnect_redis_fallback", error = %e, "moving to the new primary failed");
            inner.tracker.feed(Event::Unavailable(
                "the primary moved and the new one is not usable yet",
            ));
        }
    }
}

/// Degraded: drop the main connection, wait the backoff (slow while credentials are
/// refused; cut short by a wake-up, such as Sentinel naming a new primary), probe; on
/// success open a new main connection and start recovering (or, at start, be healthy
/// at once).
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
        let _ = tokio::time::timeout(jitter(delay), tracker.wake.notified()).await;
        s.grow_backoff();
    }
    // The probe and the new main connection look the primary up anyway.
    let _ = inner.backend.take_switch();
    match inner.probe().await {
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
                Err(e) => {
                    tracing::debug!(target: "secureconnect_redis_fallback", error = %e, "opening the main connection failed");
                }
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
            url = %redacted(config.url()),
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
    if inner.backend.take_switch() {
        switch(&inner).await;
    }
    let event = inner.probe().await;
    tracker.feed(event);
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
