//! Publish/subscribe through Redis that falls back to in-process broadcast.
//!
//! Subscribers get a [`Subscription`] per channel. While Redis is healthy, messages go
//! through Redis `PUBLISH`/`SUBSCRIBE`, so every instance of the service sees them.
//! While it is not, [`FallbackPubSub::publish`] delivers to the subscribers of this
//! process only, and the subscriber connection is re-established and every channel
//! resubscribed when Redis returns. Delivery is at most once, as with Redis pub/sub:
//! a message published while the subscriber connection is being re-established is
//! not seen by this process.
//!
//! Every channel buffers at most `capacity` messages per subscriber; a subscriber that
//! falls further behind skips the oldest and [`Subscription::recv`] counts them in
//! [`Subscription::skipped`]. A channel is dropped, and unsubscribed in Redis, when its
//! last [`Subscription`] is dropped; publishing to a channel nobody in this process
//! listens to creates nothing.
//!
//! On a Cluster the subscriber connection goes to one master that is up (a Cluster
//! forwards every `PUBLISH` to every node); behind Sentinel, to the primary.
//!
//! ```no_run
//! # async fn f(redis: secureconnect_redis_fallback::RedisClient) -> Result<(), secureconnect_redis_fallback::Error> {
//! use secureconnect_redis_fallback::pubsub::{FallbackPubSub, FallbackPubSubConfig};
//!
//! let pubsub = FallbackPubSub::new(redis, FallbackPubSubConfig::default().capacity(1024));
//! let mut room = pubsub.subscribe("room:7");
//! pubsub.publish("room:7", b"hello").await?;
//! let message = room.recv().await;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{broadcast, Notify};

use crate::client::AbortOnDrop;
use crate::{Error, Health, RedisClient};

/// Where a message travelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Through Redis; the number is how many subscriber connections (of all
    /// instances) Redis delivered to.
    Redis(u64),
    /// In-process only, because Redis was unavailable; the number is how many local
    /// subscribers received it.
    Local(usize),
}

/// A received message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// The channel.
    pub channel: Arc<str>,
    /// The payload.
    pub payload: Arc<[u8]>,
    /// Whether it came through Redis or in-process.
    pub via_redis: bool,
}

#[derive(Debug)]
struct Inner {
    redis: RedisClient,
    capacity: usize,
    channels: Mutex<HashMap<Arc<str>, broadcast::Sender<Message>>>,
    /// A channel was added or dropped: the subscriber connection must (un)subscribe.
    changed: Notify,
    fallback: Counter,
}

/// Configuration of a [`FallbackPubSub`].
#[derive(Clone, Debug)]
pub struct FallbackPubSubConfig {
    capacity: usize,
}

impl Default for FallbackPubSubConfig {
    /// Buffers up to 1024 messages per subscriber.
    fn default() -> Self {
        Self { capacity: 1024 }
    }
}

impl FallbackPubSubConfig {
    /// At most how many messages each subscriber of a channel buffers (at least 1).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }
}

/// See the [module docs](self). Cheap to clone; the subscriber connection closes when
/// the last clone is dropped.
#[derive(Clone, Debug)]
pub struct FallbackPubSub {
    inner: Arc<Inner>,
    _subscriber: Arc<AbortOnDrop>,
}

impl FallbackPubSub {
    /// Pub/sub on `redis` as `config` says. Must be called inside a Tokio runtime;
    /// opens its own subscriber connection.
    // By value, as every config of the family, though this one is only a number today.
    #[allow(clippy::needless_pass_by_value)]
    pub fn new(redis: RedisClient, config: FallbackPubSubConfig) -> Self {
        let FallbackPubSubConfig { capacity } = config;
        let inner = Arc::new(Inner {
            fallback: redis.fallback_counter("pubsub", "local"),
            redis,
            capacity: capacity.max(1),
            channels: Mutex::new(HashMap::new()),
            changed: Notify::new(),
        });
        let task = tokio::spawn(run_subscriber(Arc::downgrade(&inner)));
        Self {
            inner,
            _subscriber: Arc::new(AbortOnDrop(task)),
        }
    }

    fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, broadcast::Sender<Message>>> {
        self.inner
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Subscribes to `channel`.
    pub fn subscribe(&self, channel: &str) -> Subscription {
        let mut channels = self.channels();
        // Under the lock: a subscription being dropped cannot remove the channel
        // between its lookup and this receiver.
        let rx = match channels.get(channel) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, rx) = broadcast::channel(self.inner.capacity);
                channels.insert(channel.into(), sender);
                self.inner.changed.notify_one();
                rx
            }
        };
        Subscription {
            rx,
            skipped: 0,
            channel: channel.into(),
            owner: Arc::downgrade(&self.inner),
        }
    }

    /// How many channels have subscribers in this process.
    pub fn channel_count(&self) -> usize {
        self.channels().len()
    }

    /// Publishes `payload` on `channel`: through Redis when it is usable, else to this
    /// process's subscribers.
    ///
    /// # Errors
    ///
    /// Only [`Error::is_command_error`] errors.
    pub async fn publish(&self, channel: &str, payload: &[u8]) -> Result<Delivery, Error> {
        match self
            .inner
            .redis
            .query::<u64>(redis::cmd("PUBLISH").arg(channel).arg(payload))
            .await
        {
            Ok(receivers) => Ok(Delivery::Redis(receivers)),
            Err(e) if e.is_unavailable() => {
                self.inner.fallback.inc();
                let Some(sender) = self.channels().get(channel).cloned() else {
                    return Ok(Delivery::Local(0));
                };
                let message = Message {
                    channel: channel.into(),
                    payload: payload.into(),
                    via_redis: false,
                };
                Ok(Delivery::Local(sender.send(message).unwrap_or(0)))
            }
            Err(e) => Err(e),
        }
    }
}

/// The messages of one channel. Dropping the last subscription of a channel drops the
/// channel (and its subscription in Redis).
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Message>,
    skipped: u64,
    channel: Arc<str>,
    owner: Weak<Inner>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(inner) = self.owner.upgrade() else {
            return;
        };
        let mut channels = inner
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // This subscription's receiver is still alive here: it is the last when it is
        // the only one.
        if channels
            .get(&self.channel)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            channels.remove(&self.channel);
            inner.changed.notify_one();
        }
    }
}

impl Subscription {
    /// The next message; `None` once every clone of the [`FallbackPubSub`] is gone.
    pub async fn recv(&mut self) -> Option<Message> {
        loop {
            match self.rx.recv().await {
                Ok(message) => return Some(message),
                Err(broadcast::error::RecvError::Lagged(n)) => self.skipped += n,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// How many messages this subscriber missed by falling behind.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

/// Keeps one subscriber connection while Redis is healthy, subscribed to every
/// channel that has subscribers, and hands its messages to them.
async fn run_subscriber(weak: Weak<Inner>) {
    let Some(mut health) = weak.upgrade().map(|i| i.redis.subscribe()) else {
        return;
    };
    loop {
        // Wait for a healthy Redis.
        if health.wait_for(|h| *h == Health::Healthy).await.is_err() {
            return;
        }
        let Some(inner) = weak.upgrade() else {
            return;
        };
        let connect = async {
            match inner.redis.pubsub_client() {
                Some(client) => client.get_async_pubsub().await.map_err(drop),
                None => Err(()),
            }
        };
        let connect = tokio::time::timeout(inner.redis.config().connect_timeout, connect).await;
        let Ok(Ok(pubsub)) = connect else {
            drop(inner);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let (mut sink, mut stream) = pubsub.split();
        let mut subscribed: Vec<Arc<str>> = Vec::new();
        let mut failed = false;
        loop {
            // Subscribe to channels we do not have yet; drop those nobody listens to.
            let (wanted, unwanted): (Vec<Arc<str>>, Vec<Arc<str>>) = {
                let channels = inner
                    .channels
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let wanted = channels
                    .keys()
                    .filter(|c| !subscribed.contains(c))
                    .cloned()
                    .collect();
                let unwanted = subscribed
                    .iter()
                    .filter(|c| !channels.contains_key(*c))
                    .cloned()
                    .collect();
                (wanted, unwanted)
            };
            for channel in unwanted {
                let done = tokio::time::timeout(
                    inner.redis.config().call_timeout * 4,
                    sink.unsubscribe(&*channel),
                )
                .await;
                if !matches!(done, Ok(Ok(()))) {
                    failed = true;
                    break;
                }
                subscribed.retain(|c| *c != channel);
            }
            for channel in wanted {
                if failed {
                    break;
                }
                let done = tokio::time::timeout(
                    inner.redis.config().call_timeout * 4,
                    sink.subscribe(&*channel),
                )
                .await;
                if !matches!(done, Ok(Ok(()))) {
                    failed = true;
                    break;
                }
                subscribed.push(channel);
            }
            if failed {
                break;
            }
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else { break };
                    let channel = message.get_channel_name();
                    let sender = inner
                        .channels
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get(channel)
                        .cloned();
                    if let Some(sender) = sender {
                        let _ = sender.send(Message {
                            channel: channel.into(),
                            payload: message.get_payload_bytes().into(),
                            via_redis: true,
                        });
                    }
                }
                () = inner.changed.notified() => {}
                changed = health.changed() => {
                    if changed.is_err() || *health.borrow() != Health::Healthy {
                        break;
                    }
                }
            }
        }
        drop(inner);
        if failed {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
