//! Where the gateway sends a video request when several video nodes share one Redis.
//!
//! - A call's requests (`/v1/calls/{id}`, its WebSocket) go to the node that owns the
//!   call: its owner in Redis (`HGET` of the call's hash), at the address that node
//!   publishes ([`presence`](crate::video::presence)). The answer is cached for
//!   [`OWNER_TTL`]; a connection refused by the cached node drops the entry and the
//!   owner is looked up once more (the call may have been adopted meanwhile). An owner
//!   that is known but unreachable answers 503 with `Retry-After`: its calls are adopted
//!   within its lease.
//! - `POST /v1/calls` goes to the live nodes in turn (round robin), the next one when a
//!   node refuses the connection.
//! - While Redis is not healthy, or when it knows no owner for a call (created an
//!   instant ago, still written behind), the nodes of `VIDEO_UPSTREAMS` and the live
//!   ones are tried in turn: the first answer other than 404 or 503 wins.
//!
//! The live nodes are read from Redis every [`REFRESH`] by a background task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use secureconnect_redis_fallback::{redis, Health, RedisClient};

use crate::video::presence::{presence_key, NodeInfo, NODES_KEY};

/// How long a call's owner is remembered.
pub(super) const OWNER_TTL: Duration = Duration::from_secs(1);
/// How often the live nodes are read.
pub(super) const REFRESH: Duration = Duration::from_secs(1);
/// At most this many owners are remembered (then the cache starts again empty).
const OWNERS_MAX: usize = 16_384;

/// Where to send a video request.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Target {
    /// The call's owner, at this base URL.
    Owner { call: String, base: String },
    /// The call's owner is known but publishes no address: it is gone, and its calls
    /// are about to be adopted. Retry shortly.
    OwnerDown,
    /// Unknown owner: try these in turn; the first answer other than 404 or 503 wins.
    Probe(Vec<String>),
    /// A new call: try these in turn; the first node reached wins.
    Any(Vec<String>),
}

/// The live nodes, as last read from Redis.
#[derive(Debug, Default)]
struct Live {
    /// Base URLs, sorted.
    bases: Vec<String>,
    /// Node id → base URL.
    by_node: HashMap<String, String>,
}

/// The video nodes and the calls' owners, for the gateway.
#[derive(Debug)]
pub(super) struct VideoRoutes {
    redis: RedisClient,
    /// `VIDEO_UPSTREAMS`, as base URLs.
    configured: Vec<String>,
    live: RwLock<Arc<Live>>,
    owners: Mutex<HashMap<String, (String, Instant)>>,
    next: AtomicUsize,
}

fn base(addr: &str) -> String {
    format!("http://{addr}")
}

/// The call id in a path under `/v1/calls/`, if there is one.
fn call_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/calls/")?;
    let id = rest.split('/').next().unwrap_or(rest);
    (!id.is_empty()).then_some(id)
}

impl VideoRoutes {
    /// Routes to the nodes `upstreams` (`host:port`) until Redis says more; starts the
    /// task that reads the live nodes (it ends with the routes).
    pub(super) fn start(redis: RedisClient, upstreams: &[String]) -> Arc<Self> {
        let routes = Arc::new(Self {
            redis,
            configured: upstreams.iter().map(|u| base(u)).collect(),
            live: RwLock::new(Arc::new(Live::default())),
            owners: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
        });
        tokio::spawn(refresh(Arc::downgrade(&routes)));
        routes
    }

    fn live(&self) -> Arc<Live> {
        self.live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn healthy(&self) -> bool {
        self.redis.health() == Health::Healthy
    }

    /// The configured nodes, then the live ones not configured.
    fn every_node(&self) -> Vec<String> {
        let mut all = self.configured.clone();
        for b in &self.live().bases {
            if !all.contains(b) {
                all.push(b.clone());
            }
        }
        all
    }

    /// `nodes` rotated to start at the next turn.
    fn in_turn(&self, mut nodes: Vec<String>) -> Vec<String> {
        if !nodes.is_empty() {
            let n = self.next.fetch_add(1, Ordering::Relaxed) % nodes.len();
            nodes.rotate_left(n);
        }
        nodes
    }

    /// Where a request for `method` `path` goes.
    pub(super) async fn target(&self, method: &axum::http::Method, path: &str) -> Target {
        let Some(call) = call_of(path) else {
            if method == axum::http::Method::POST && path == "/v1/calls" {
                let live = self.live();
                let nodes = if self.healthy() && !live.bases.is_empty() {
                    live.bases.clone()
                } else {
                    self.configured.clone()
                };
                return Target::Any(self.in_turn(nodes));
            }
            return Target::Probe(self.every_node());
        };
        if let Some(base) = self.cached(call) {
            return Target::Owner {
                call: call.to_owned(),
                base,
            };
        }
        self.look_up(call).await
    }

    fn cached(&self, call: &str) -> Option<String> {
        let owners = self.owners.lock().unwrap_or_else(PoisonError::into_inner);
        owners
            .get(call)
            .filter(|(_, at)| at.elapsed() < OWNER_TTL)
            .map(|(base, _)| base.clone())
    }

    /// Remembers that `base` serves `call`.
    pub(super) fn remember(&self, call: &str, base: &str) {
        let mut owners = self.owners.lock().unwrap_or_else(PoisonError::into_inner);
        if owners.len() >= OWNERS_MAX && !owners.contains_key(call) {
            owners.clear();
        }
        owners.insert(call.to_owned(), (base.to_owned(), Instant::now()));
    }

    /// Forgets the owner of `call` (its node refused the connection).
    pub(super) fn forget(&self, call: &str) {
        self.owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(call);
    }

    /// The owner of `call` from Redis (the cache bypassed), or the nodes to probe.
    pub(super) async fn look_up(&self, call: &str) -> Target {
        if !self.healthy() {
            return Target::Probe(self.every_node());
        }
        let node = match secureconnect_callstate::call_owner(&self.redis, call).await {
            Ok(Some(node)) => node,
            // Not in Redis (yet), or Redis failed: ask the nodes.
            Ok(None) | Err(_) => return Target::Probe(self.every_node()),
        };
        let known = self.live().by_node.get(&node).cloned();
        let base = match known {
            Some(base) => Some(base),
            None => self.presence(&node).await.map(|info| base(&info.addr)),
        };
        match base {
            Some(base) => {
                self.remember(call, &base);
                Target::Owner {
                    call: call.to_owned(),
                    base,
                }
            }
            None => Target::OwnerDown,
        }
    }

    /// `node`'s presence entry, if it has a live, usable one.
    async fn presence(&self, node: &str) -> Option<NodeInfo> {
        let json: Option<String> = self
            .redis
            .query(redis::cmd("GET").arg(presence_key(node)))
            .await
            .ok()?;
        usable(node, &json?)
    }

    /// Reads the live nodes from Redis.
    async fn read_live(&self) -> Result<Live, secureconnect_redis_fallback::Error> {
        let nodes: Vec<String> = self
            .redis
            .query(redis::cmd("SMEMBERS").arg(NODES_KEY))
            .await?;
        let mut live = Live::default();
        for node in nodes {
            if let Some(info) = self.presence(&node).await {
                let b = base(&info.addr);
                live.bases.push(b.clone());
                live.by_node.insert(info.node, b);
            }
        }
        live.bases.sort();
        live.bases.dedup();
        Ok(live)
    }
}

/// The presence entry `json` read for `node`, if it is one the gateway may send
/// requests (and their tokens) to: it names `node` itself, and its address is a plain
/// `host:port` (as `VIDEO_ADVERTISE_ADDR` must be). Anything else written to Redis is
/// skipped with a warning: never `http://{whatever}`.
fn usable(node: &str, json: &str) -> Option<NodeInfo> {
    let info: NodeInfo = match serde_json::from_str(json) {
        Ok(info) => info,
        Err(e) => {
            tracing::warn!(node = %node, error = %e, "skipping a malformed video presence entry");
            return None;
        }
    };
    if info.node != node || !crate::config::is_host_port(&info.addr) {
        tracing::warn!(node = %node, named = %info.node, addr = %info.addr, "skipping a video presence entry with another node's name or an address that is not host:port");
        return None;
    }
    Some(info)
}

/// Reads the live nodes every [`REFRESH`] while the routes exist; a failed read keeps
/// the last one.
async fn refresh(routes: Weak<VideoRoutes>) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(routes) = routes.upgrade() else {
            return;
        };
        if !routes.healthy() {
            continue;
        }
        match routes.read_live().await {
            Ok(live) => {
                *routes.live.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(live);
            }
            Err(e) => {
                tracing::debug!(error = %crate::error::chain(&e), "reading the live video nodes failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{call_of, usable, NodeInfo};

    #[test]
    fn a_presence_entry_is_used_only_with_its_own_name_and_a_host_port() {
        let entry = |node: &str, addr: &str| {
            serde_json::to_string(&NodeInfo {
                node: node.into(),
                addr: addr.into(),
                load: 0,
            })
            .unwrap()
        };
        let good = usable("video-1", &entry("video-1", "10.0.0.7:8083")).unwrap();
        assert_eq!(good.addr, "10.0.0.7:8083");
        for addr in [
            "evil.example/steal?",
            "user@evil.example:80",
            "a:1/x",
            "http://a:1",
            "a b:1",
            "10.0.0.7",
            "",
        ] {
            assert!(
                usable("video-1", &entry("video-1", addr)).is_none(),
                "{addr}"
            );
        }
        assert!(usable("video-1", &entry("video-2", "10.0.0.7:8083")).is_none());
        assert!(usable("video-1", "not json").is_none());
    }

    #[test]
    fn the_call_is_the_first_segment_under_calls() {
        assert_eq!(call_of("/v1/calls/call-1"), Some("call-1"));
        assert_eq!(call_of("/v1/calls/call-1/ws"), Some("call-1"));
        assert_eq!(call_of("/v1/calls/"), None);
        assert_eq!(call_of("/v1/calls"), None);
        assert_eq!(call_of("/v1/auth/x"), None);
    }
}
