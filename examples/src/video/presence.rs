//! Several video nodes behind one gateway: each node publishes its presence in Redis
//! and adopts the calls of a node whose lease lapsed.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `sc:video:nodes` | set | the node ids seen (a node is dropped once its lease lapsed and its calls were adopted) |
//! | `sc:video:node:{<node>}` | string with TTL (the lease) | [`NodeInfo`] as JSON: node id, advertised `host:port`, load |
//! | `sc:video:adopting:{<node>}` | string with TTL (the lease) | the node adopting `<node>`'s calls now (one at a time) |
//!
//! Every third of `VIDEO_LEASE_SECS` a node refreshes its presence, then looks at every
//! other node of the set: one whose call-state lease (refreshed by its hub's heartbeat)
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
        let outcome = |o: &'static str| adoptions.get_or_create_owned(&vec![("outcome", o)]);
        Self {
            adopted: outcome("adopted"),
            failed: outcome("failed"),
            unadopted,
            live,
        }
    }
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

    /// Runs the task, every third of the lease, for the life of the process.
    pub(super) fn start(self) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval((self.lease / 3).max(Duration::from_millis(100)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Since when this node reaches Redis without a break.
            let mut connected_since: Option<Instant> = None;
            loop {
                tick.tick().await;
                if let Err(e) = self.publish().await {
                    tracing::debug!(error = %crate::error::chain(&e), "publishing this video node's presence failed");
                    connected_since = None;
                    continue;
                }
                // After an outage of Redis every lease may have lapsed: the other nodes
                // get one lease to renew theirs before this one adopts their calls.
                let since = *connected_since.get_or_insert_with(Instant::now);
                let may_adopt = since.elapsed() >= self.lease;
                if let Err(e) = self.look_around(may_adopt).await {
                    tracing::debug!(error = %crate::error::chain(&e), "looking for lapsed video nodes failed");
                }
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
    /// gauges.
    async fn look_around(&self, may_adopt: bool) -> Result<(), secureconnect_callstate::Error> {
        let nodes: Vec<String> = self
            .redis
            .query(redis::cmd("SMEMBERS").arg(NODES_KEY))
            .await?;
        let (mut live, mut unadopted) = (1i64, 0u64);
        for other in nodes.iter().filter(|n| **n != self.node) {
            let status = match self.store.node_status(other).await {
                Ok(status) => status,
                Err(e) if e.is_invalid_id() => continue,
                Err(e) => return Err(e),
            };
            if status.lease_alive {
                live += 1;
                continue;
            }
            if may_adopt && status.calls > 0 && self.lock(other).await? {
                self.adopt(other).await;
            }
            let left = self.store.node_status(other).await?;
            if left.lease_alive {
                live += 1;
            } else if left.calls == 0 {
                // Dead and nothing to adopt: forgotten until it comes back.
                let mut rem = redis::cmd("SREM");
                rem.arg(NODES_KEY).arg(other);
                self.redis.query::<i64>(&rem).await?;
            } else {
                unadopted += left.calls;
            }
        }
        self.metrics.live.set(live);
        self.metrics.unadopted.set(unadopted as i64);
        Ok(())
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
            Err(e) => {
                tracing::error!(from = %other, error = %crate::error::chain(&e), "adopting the calls of a lost video node failed");
                &self.metrics.failed
            }
        };
        outcome.inc();
    }
}
