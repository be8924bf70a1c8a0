//! [`ClusterBackend`]: the main connection to a Redis Cluster and the probe that keeps
//! the [`ClusterView`] current: the slot map from `CLUSTER SLOTS` (any node that
//! answers: the known masters first, then the seeds), then a `PING` to every master,
//! each marked up or down by its answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::future::join_all;
use redis::cluster::ClusterClientBuilder;
use redis::{ConnectionInfo, Value};

use super::conn::ClusterConn;
use super::view::{ClusterView, SlotRange};
use crate::backend::{address, node_info, probe_failed, timed_out, Probes};
use crate::config::RedisClientConfig;
use crate::conn::Conn;
use crate::error::Error;
use crate::health::Event;
use crate::metrics::ClientMetrics;

/// redis-rs retries a request this many times (a `MOVED`, a reconnection) within the
/// call's deadline.
const RETRIES: u32 = 3;

/// A Redis Cluster found through seed nodes.
#[derive(Debug)]
pub(crate) struct ClusterBackend {
    seeds: Vec<ConnectionInfo>,
    view: Arc<ClusterView>,
    probes: Probes,
    /// Slots moved to another master: redis-rs's connection may still send them to the
    /// old one (a stopped master never answers `MOVED`), so the main connection is
    /// rebuilt on the new slot map.
    moved: AtomicBool,
}

impl ClusterBackend {
    pub(crate) fn new(seeds: Vec<ConnectionInfo>, timeouts_to_down: u32) -> Result<Self, Error> {
        Ok(Self {
            seeds,
            view: Arc::new(ClusterView::new(timeouts_to_down)),
            probes: Probes::default(),
            moved: AtomicBool::new(false),
        })
    }

    pub(crate) fn view(&self) -> &Arc<ClusterView> {
        &self.view
    }

    /// The connection settings of `host:port`, from the first seed's (credentials, TLS).
    fn node(&self, address: &str) -> Option<ConnectionInfo> {
        let (host, port) = address.rsplit_once(':')?;
        let template = self.seeds.first()?;
        Some(node_info(template, host, port.parse().ok()?))
    }

    /// Whether slots moved since the main connection was opened; clears it.
    pub(crate) fn take_moved(&self) -> bool {
        self.moved.swap(false, Ordering::AcqRel)
    }

    /// Asks for the main connection to be rebuilt.
    pub(crate) fn request_rebuild(&self) {
        self.moved.store(true, Ordering::Release);
    }

    /// A cluster connection (redis-rs reads the slot map and connects to every master),
    /// found through the masters known to be up, then the seeds; then a probe to fill
    /// the view.
    pub(crate) async fn open_main(
        &self,
        config: &RedisClientConfig,
        metrics: &ClientMetrics,
    ) -> redis::RedisResult<Conn> {
        let mut initial: Vec<ConnectionInfo> = self
            .view
            .masters()
            .iter()
            .filter(|(_, _, down)| !down)
            .filter_map(|(_, addr, _)| self.node(addr))
            .collect();
        initial.extend(self.seeds.iter().cloned());
        let builder = ClusterClientBuilder::new(initial)
            .connection_timeout(config.connect_timeout)
            .response_timeout(config.call_timeout)
            .retries(RETRIES)
            .min_retry_wait(10)
            .max_retry_wait(100);
        #[cfg(feature = "tls")]
        let builder = match config.tls_certificates() {
            Some(certificates) => builder.certs(certificates),
            None => builder,
        };
        let client = builder.build()?;
        // The seeds, the slot map, then a connection to every master: a few round trips.
        let deadline = config.connect_timeout * 2 + config.call_timeout;
        let conn = tokio::time::timeout(deadline, client.get_async_connection())
            .await
            .map_err(|_| timed_out())??;
        let _ = self.probe(config, metrics).await;
        Ok(Conn::Cluster(ClusterConn::new(
            conn,
            Arc::clone(&self.view),
        )))
    }

    /// Reads the slot map from the first node that answers, then pings every master and
    /// marks it up or down. [`Event::ProbeOk`] if some master answered.
    pub(crate) async fn probe(&self, config: &RedisClientConfig, metrics: &ClientMetrics) -> Event {
        let mut candidates: Vec<(String, ConnectionInfo)> = Vec::new();
        let masters = self.view.masters();
        let up_first = masters
            .iter()
            .filter(|m| !m.2)
            .chain(masters.iter().filter(|m| m.2));
        for (_, addr, _) in up_first {
            if let Some(info) = self.node(addr) {
                candidates.push((addr.clone(), info));
            }
        }
        for seed in &self.seeds {
            let addr = address(seed);
            if !candidates.iter().any(|(a, _)| *a == addr) {
                candidates.push((addr, seed.clone()));
            }
        }
        let mut last_error = None;
        let mut ranges = None;
        for (addr, info) in &candidates {
            let slots = self
                .probes
                .query::<Value>(
                    addr,
                    info,
                    redis::cmd("CLUSTER").arg("SLOTS"),
                    config,
                    metrics,
                )
                .await;
            match slots.map(|v| parse_slots(&v, addr)) {
                Ok(Some(r)) if !r.is_empty() => {
                    ranges = Some(r);
                    break;
                }
                Ok(_) => {}
                Err(e) => last_error = Some(e),
            }
        }
        let Some(ranges) = ranges else {
            return last_error.as_ref().map_or(Event::ProbeFailed, probe_failed);
        };
        let (masters, moved) = self.view.update(&ranges);
        if moved {
            tracing::info!(target: "secureconnect_redis_fallback", "cluster slots moved to other masters: reconnecting on the new slot map");
            self.moved.store(true, Ordering::Release);
        }
        let pings = masters.iter().map(|(node, addr)| async move {
            let ok = match self.node(addr) {
                Some(info) => self.probes.ping(addr, &info, config, metrics).await.is_ok(),
                None => false,
            };
            (*node, addr, ok)
        });
        let mut any_up = false;
        for (node, addr, ok) in join_all(pings).await {
            if self.view.is_down(node) == ok {
                if ok {
                    tracing::info!(target: "secureconnect_redis_fallback", node = %addr, "cluster master answers again");
                } else {
                    tracing::warn!(target: "secureconnect_redis_fallback", node = %addr, "cluster master down: calls to its slots take their fallback");
                }
            }
            self.view.set_down(node, !ok);
            any_up |= ok;
        }
        if any_up {
            Event::ProbeOk
        } else {
            Event::ProbeFailed
        }
    }

    /// A client for a master that is up.
    pub(crate) fn pubsub_client(&self) -> Option<redis::Client> {
        let masters = self.view.masters();
        let info = masters
            .iter()
            .find(|(_, _, down)| !down)
            .and_then(|(_, addr, _)| self.node(addr))
            .or_else(|| self.seeds.first().cloned())?;
        redis::Client::open(info).ok()
    }
}

/// The masters' slot ranges in a `CLUSTER SLOTS` reply; an empty host means the node
/// that answered (`asked`).
fn parse_slots(value: &Value, asked: &str) -> Option<Vec<SlotRange>> {
    let Value::Array(entries) = value else {
        return None;
    };
    let asked_host = asked.rsplit_once(':').map_or(asked, |(h, _)| h);
    let mut ranges = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(fields) = entry else {
            return None;
        };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return None;
        };
        let host = match master.first() {
            Some(Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
            Some(Value::SimpleString(h)) => h.clone(),
            _ => return None,
        };
        let host = if host.is_empty() || host == "?" {
            asked_host.to_owned()
        } else {
            host
        };
        let Some(Value::Int(port)) = master.get(1) else {
            return None;
        };
        ranges.push(SlotRange {
            start: u16::try_from(*start).ok()?,
            end: u16::try_from(*end).ok()?,
            master: format!("{host}:{port}"),
        });
    }
    Some(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn cluster_slots_replies_are_read() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(7001), bulk("id1")]),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(7004), bulk("id4")]),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                Value::Array(vec![bulk(""), Value::Int(7002), bulk("id2")]),
            ]),
        ]);
        assert_eq!(
            parse_slots(&reply, "10.0.0.9:7001"),
            Some(vec![
                SlotRange {
                    start: 0,
                    end: 5460,
                    master: "127.0.0.1:7001".into()
                },
                SlotRange {
                    start: 5461,
                    end: 16383,
                    master: "10.0.0.9:7002".into()
                },
            ])
        );
        assert_eq!(parse_slots(&Value::Nil, "x:1"), None);
    }
}
