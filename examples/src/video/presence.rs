//! Several video nodes behind one gateway: each node publishes its presence in Redis
//! and adopts the calls of a node whose lease lapsed.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `sc:video:nodes` | set | the node ids seen (a node is dropped once its lease lapsed and its calls were adopted) |
//! | `sc:video:node:{<node>}` | string with TTL (the lease) | [`NodeInfo`] as JSON: node id, advertised `host:port`, load |
//! | `sc:video:adopting:{<node>}` | string with TTL (the lease) | the node adopting `<node>`'s calls now (one at a time) |
//!
//! Every third of `VIDEO_LEASE_SECS` a node refreshes its presence (on a task of its
//! own) and, on another task, looks at every other node of the set: one whose call-state lease (refreshed by its hub's heartbeat)
//! lapsed has its calls adopted by [`CallHub::adopt`] — by one node at a time, and each
//! call by at most one node whatever happens (the store's fenced script). A node adopts
//! only once it has reached Redis for a whole lease without a break: after an outage of
//! Redis, when every lease may have lapsed, the live nodes renew theirs first. The gateway
//! reads the presence entries to route new calls, and each call's owner to route its
//! requests.

use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use secureconnect_callstate::{CallHub, RedisCallStore};
use secureconnect_redis_fallback::redis;
use secureconnect_redis_fallback::RedisClient;
use serde::{Deserialize, Serialize};

/// The set of video node ids.
pub const NODES_KEY: &str = "sc:video:nodes";

/// The key of `node`'s presence entry.
pub fn presence_key(node: &str) -> String {
    format!("sc:video:node:{{{node}}}")
}

fn adopting_key(node: &str) -> String {
    format!("sc:video:adopting:{{{node}}}")
}

/// What a video node publishes about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its `VIDEO_NODE_ID`.
    pub node: String,
    /// Where the gateway reaches it (`VIDEO_ADVERTISE_ADDR`).
    pub addr: String,
    /// The calls it serves.
    pub load: usize,
}

/// The metrics of presence and adoption.
#[derive(Clone, Debug)]
struct Metrics {
    /// `video_adoptions_total{outcome="adopted"}`: adoptions of a lapsed node's calls
    /// run by this node that succeeded.
    adopted: Counter,
    /// `video_adoptions_total{outcome="failed"}`.
    failed: Counter,
    /// `video_unadopted_calls`: calls of nodes whose lease lapsed, still in their sets
    /// after this node's last look.
    unadopted: Gauge,
    /// `video_nodes_live`: nodes (this one included) whose lease is alive, at the last look.
    live: Gauge,
    /// `video_look_failures_total`: looks at the node set or at one node that failed.
    look_failures: Counter,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Self {
        let adoptions = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
        registry.register(
            "video_adoptions",
            "Adoptions of the calls of a video node whose lease lapsed, run by this node, by outcome: adopted, failed",
            adoptions.clone(),
        );
        let unadopted = Gauge::default();
        registry.register(
            "video_unadopted_calls",
            "Calls of video nodes whose lease lapsed, not adopted yet (as this node last saw them)",
            unadopted.clone(),
        );
        let live = Gauge::default();
        registry.register(
            "video_nodes_live",
            "Video nodes whose lease is alive (as this node last saw them)",
            live.clone(),
        );
        let look_failures = Counter::default();
        registry.register(
            "video_look_failures",
            "Looks for lapsed video nodes that failed (listing the nodes, or looking at one node)",
            look_failures.clone(),
        );
        let outcome = |o: &'static str| adoptions.get_or_create_owned(&vec![("outcome", o)]);
        Self {
            adopted: outcome("adopted"),
            failed: outcome("failed"),
            unadopted,
            live,
            look_failures,
        }
    }
}

/// What one look at another node found.
enum Seen {
    /// Its lease is alive.
    Live,
    /// Its lease lapsed and it has this many calls left to adopt.
    Unadopted(u64),
    /// Dead with nothing left (forgotten), or not a node id.
    Gone,
}

/// How this node's link to Redis stands, as its presence publishing saw it.
#[derive(Debug, Default)]
struct Link {
    /// Since when presence is published without a break (no failure, no gap longer
    /// than a lease between two successes).
    since: Option<Instant>,
    /// The last successful publish.
    last: Option<Instant>,
}

impl Link {
    /// Records a publish attempt that ended now.
    fn published(&mut self, ok: bool, lease: Duration) {
        let now = Instant::now();
        if !ok {
            self.since = None;
            return;
        }
        // A gap longer than a lease since the last success (this process paused, or
        // its publishing held up) is a break: other nodes' leases may have lapsed
        // meanwhile for the same reason.
        if self
            .last
            .is_none_or(|last| now.duration_since(last) > lease)
        {
            self.since = Some(now);
        }
        self.since.get_or_insert(now);
        self.last = Some(now);
    }

    /// Whether this node may adopt: presence published without a break for a whole
    /// lease, the last success within the lease. `None`: not published lately, do
    /// not even look.
    fn may_adopt(&self, lease: Duration) -> Option<bool> {
        let last = self.last?;
        if last.elapsed() > lease {
            return None;
        }
        Some(self.since.is_some_and(|since| since.elapsed() >= lease))
    }
}

fn lock_link(link: &std::sync::Mutex<Link>) -> std::sync::MutexGuard<'_, Link> {
    link.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One node's presence and adoption task.
#[derive(Clone, Debug)]
pub(super) struct Presence {
    hub: CallHub,
    store: RedisCallStore,
    redis: RedisClient,
    node: String,
    addr: String,
    lease: Duration,
    metrics: Metrics,
}

impl Presence {
    /// Registers the metrics; [`start`](Self::start) runs the task.
    pub(super) fn new(
        hub: CallHub,
        store: RedisCallStore,
        addr: String,
        registry: &mut Registry,
    ) -> Self {
        Self {
            hub,
            redis: store.redis().clone(),
            node: store.node().to_owned(),
            lease: store.lease_ttl(),
            store,
            addr,
            metrics: Metrics::register(registry),
        }
    }

    /// Runs the tasks, every third of the lease, for the life of the process: one
    /// refreshes this node's presence, the other looks for lapsed nodes and adopts
    /// their calls. Apart, so that an adoption longer than a lease does not let this
    /// node's presence lapse (the gateway would stop routing to it).
    pub(super) fn start(self) {
        let period = (self.lease / 3).max(Duration::from_millis(100));
        let link = std::sync::Arc::new(std::sync::Mutex::new(Link::default()));
        let publisher = self.clone();
        let published = link.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if publisher.hub.is_superseded() {
                    // A newer process with this node id runs: it publishes, not this one.
                    tracing::error!("superseded by a newer process with this node id: presence no longer published");
                    return;
                }
                let result = publisher.publish().await;
                if let Err(e) = &result {
                    tracing::debug!(error = %crate::error::chain(e), "publishing this video node's presence failed");
                }
                lock_link(&published).published(result.is_ok(), publisher.lease);
            }
        });
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if self.hub.is_superseded() {
                    tracing::error!(
                        "superseded by a newer process with this node id: no longer adopting"
                    );
                    return;
                }
                // After an outage of Redis (or a pause of this process) every lease may
                // have lapsed: the other nodes get one lease to renew theirs before this
                // one adopts their calls.
                let Some(may_adopt) = lock_link(&link).may_adopt(self.lease) else {
                    continue;
                };
                self.look_around(may_adopt).await;
            }
        });
    }

    fn lease_ms(&self) -> u64 {
        self.lease.as_millis() as u64
    }

    /// Refreshes this node's presence entry and its membership of the node set.
    async fn publish(&self) -> Result<(), secureconnect_redis_fallback::Error> {
        let info = NodeInfo {
            node: self.node.clone(),
            addr: self.addr.clone(),
            load: self.hub.counts().0,
        };
        let json = serde_json::to_string(&info).unwrap_or_default();
        let mut set = redis::cmd("SET");
        set.arg(presence_key(&self.node))
            .arg(json)
            .arg("PX")
            .arg(self.lease_ms());
        self.redis.query::<()>(&set).await?;
        let mut add = redis::cmd("SADD");
        add.arg(NODES_KEY).arg(&self.node);
        self.redis.query::<i64>(&add).await?;
        Ok(())
    }

    /// Looks at every other node: adopts the calls of those whose lease lapsed (if
    /// `may_adopt`), drops from the set those with nothing left, and updates the
    /// gauges. An error about one node is logged and counted, and the others are
    /// looked at all the same; the gauges are set whatever happens (from what was
    /// seen).
    async fn look_around(&self, may_adopt: bool) {
        let nodes: Vec<String> = match self
            .redis
            .query(redis::cmd("SMEMBERS").arg(NODES_KEY))
            .await
        {
            Ok(nodes) => nodes,
            Err(e) => {
                tracing::debug!(error = %crate::error::chain(&e), "listing the video nodes failed");
                self.metrics.look_failures.inc();
                return;
            }
        };
        let (mut live, mut unadopted) = (1i64, 0u64);
        for other in nodes.iter().filter(|n| **n != self.node) {
            match self.look_at(other, may_adopt).await {
                Ok(Seen::Live) => live += 1,
                Ok(Seen::Unadopted(calls)) => unadopted += calls,
                Ok(Seen::Gone) => {}
                Err(e) => {
                    tracing::warn!(node = %other, error = %crate::error::chain(&e), "looking at a video node failed");
                    self.metrics.look_failures.inc();
                }
            }
        }
        self.metrics.live.set(live);
        self.metrics.unadopted.set(unadopted as i64);
    }

    /// Looks at one other node: adopts its calls if its lease lapsed (and
    /// `may_adopt`), forgets it if it is dead with nothing left.
    async fn look_at(
        &self,
        other: &str,
        may_adopt: bool,
    ) -> Result<Seen, secureconnect_callstate::Error> {
        let status = match self.store.node_status(other).await {
            Ok(status) => status,
            Err(e) if e.is_invalid_id() => return Ok(Seen::Gone),
            Err(e) => return Err(e),
        };
        if status.lease_alive {
            return Ok(Seen::Live);
        }
        if may_adopt && status.calls > 0 && self.lock(other).await? {
            self.adopt(other).await;
            // Released at once (if still this node's): another node may try next.
            self.unlock(other).await;
        }
        let left = self.store.node_status(other).await?;
        if left.lease_alive {
            Ok(Seen::Live)
        } else if left.calls == 0 {
            // Dead and nothing to adopt: forgotten until it comes back.
            let mut rem = redis::cmd("SREM");
            rem.arg(NODES_KEY).arg(other);
            self.redis.query::<i64>(&rem).await?;
            Ok(Seen::Gone)
        } else {
            Ok(Seen::Unadopted(left.calls))
        }
    }

    /// Releases the right to adopt `other`'s calls if this node still holds it
    /// (compare and delete: a lock taken by another node since is left alone).
    async fn unlock(&self, other: &str) {
        let mut eval = redis::cmd("EVAL");
        eval.arg(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
        )
        .arg(1)
        .arg(adopting_key(other))
        .arg(&self.node);
        if let Err(e) = self.redis.query::<i64>(&eval).await {
            // It lapses with its TTL (one lease).
            tracing::debug!(node = %other, error = %crate::error::chain(&e), "releasing the adoption lock failed");
        }
    }

    /// Takes the right to adopt `other`'s calls for one lease, unless another node has it.
    async fn lock(&self, other: &str) -> Result<bool, secureconnect_callstate::Error> {
        let mut set = redis::cmd("SET");
        set.arg(adopting_key(other))
            .arg(&self.node)
            .arg("NX")
            .arg("PX")
            .arg(self.lease_ms());
        let taken: Option<String> = self.redis.query(&set).await?;
        Ok(taken.is_some())
    }

    async fn adopt(&self, other: &str) {
        let outcome = match self.hub.adopt(other).await {
            Ok(calls) => {
                tracing::warn!(from = %other, calls = calls.len(), "video node lost: adopted its calls");
                &self.metrics.adopted
            }
            // Its lease came back meanwhile (a restart with its id).
            Err(e) if e.is_not_owner() => return,
            // A newer process with this node id runs: the tasks stop at their next tick.
            Err(e) if e.is_superseded() => return,
            Err(e) => {
                tracing::error!(from = %other, error = %crate::error::chain(&e), "adopting the calls of a lost video node failed");
                &self.metrics.failed
            }
        };
        outcome.inc();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Link;

    /// A node paused (or cut off) for longer than a lease does not adopt at once when
    /// it publishes again: it first publishes for a whole lease without a break.
    #[test]
    fn a_gap_longer_than_the_lease_restarts_the_wait_before_adopting() {
        let lease = Duration::from_millis(60);
        let mut link = Link::default();
        assert_eq!(link.may_adopt(lease), None, "never published");
        link.published(true, lease);
        assert_eq!(
            link.may_adopt(lease),
            Some(false),
            "published for less than a lease"
        );
        std::thread::sleep(lease / 2);
        link.published(true, lease);
        std::thread::sleep(lease / 2 + Duration::from_millis(5));
        link.published(true, lease);
        assert_eq!(
            link.may_adopt(lease),
            Some(true),
            "a whole lease without a break"
        );
        // A pause longer than the lease: not even a look until it publishes again...
        std::thread::sleep(lease * 2);
        assert_eq!(link.may_adopt(lease), None);
        // ...and then the wait starts over, although no publish failed.
        link.published(true, lease);
        assert_eq!(link.may_adopt(lease), Some(false));
        // A failed publish is a break too.
        link.published(false, lease);
        assert_eq!(link.may_adopt(lease), Some(false));
    }
}
