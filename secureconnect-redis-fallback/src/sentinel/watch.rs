//! The tasks that listen to the sentinels' announcements: `+switch-master` (move to the
//! new primary) and `+failover-state-send-slaveof-noone` (hold writes: a replica is
//! about to be promoted).

use std::sync::Weak;
use std::time::Duration;

use futures_util::StreamExt;

use crate::client::Inner;
use crate::health::Event;

/// The channel Sentinel announces a new primary on.
const SWITCH_MASTER: &str = "+switch-master";

/// The channel the leading sentinel announces, just before it promotes the replica.
const PROMOTING: &str = "+failover-state-send-slaveof-noone";

/// Whether a `+switch-master` payload (`<name> <old ip> <old port> <new ip> <new
/// port>`) is about `master`.
fn is_switch_of(payload: &str, master: &str) -> bool {
    let mut words = payload.split_ascii_whitespace();
    words.next() == Some(master) && words.count() == 4
}

/// Whether an instance event's payload (`<type> <name> <ip> <port> @ <master> <ip>
/// <port>`) is about `master`.
fn is_event_of(payload: &str, master: &str) -> bool {
    let mut words = payload.split_ascii_whitespace();
    words.any(|w| w == "@") && words.next() == Some(master)
}

/// Listens to one sentinel's `+switch-master` and `+failover-state-send-slaveof-noone`
/// announcements for as long as the client lives, reconnecting after a failure. For
/// the client's master, the first holds writes, the second wakes the supervisor to
/// move to the new primary.
pub(crate) async fn watch(inner: Weak<Inner>, sentinel: usize) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let Some(backend) = strong.backend.sentinel() else {
            return;
        };
        let Some(info) = backend.sentinels().get(sentinel).cloned() else {
            return;
        };
        let master = backend.master().to_owned();
        let timeout = strong.config.connect_timeout + strong.config.call_timeout;
        drop(strong);
        let subscribed = async {
            let client = redis::Client::open(info)?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&[SWITCH_MASTER, PROMOTING]).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        if let Ok(Ok(mut pubsub)) = tokio::time::timeout(timeout, subscribed).await {
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let payload: String = message.get_payload().unwrap_or_default();
                let promoting = message.get_channel_name() == PROMOTING;
                let relevant = if promoting {
                    is_event_of(&payload, &master)
                } else {
                    is_switch_of(&payload, &master)
                };
                if !relevant {
                    continue;
                }
                let Some(strong) = inner.upgrade() else {
                    return;
                };
                let Some(backend) = strong.backend.sentinel() else {
                    return;
                };
                if promoting {
                    backend.hold_writes();
                    strong.tracker.feed(Event::FailoverStarted);
                } else {
                    tracing::info!(target: "secureconnect_redis_fallback", %payload, "sentinel announced a new primary");
                    backend.request_switch();
                    strong.tracker.wake.notify_one();
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_are_read() {
        assert!(is_switch_of("mymaster 127.0.0.1 1 127.0.0.1 2", "mymaster"));
        assert!(!is_switch_of("other 127.0.0.1 1 127.0.0.1 2", "mymaster"));
        assert!(!is_switch_of("mymaster", "mymaster"));
        let promoting = "slave 127.0.0.1:18002 127.0.0.1 18002 @ mymaster 127.0.0.1 18001";
        assert!(is_event_of(promoting, "mymaster"));
        assert!(!is_event_of(promoting, "other"));
        assert!(!is_event_of("master mymaster 127.0.0.1 1", "mymaster"));
    }
}
