//! [`Backend`]: what differs between one server, a Cluster and Sentinel, behind one
//! interface for the supervisor: how the main connection is opened, what a probe
//! checks, where a subscriber connects.
//!
//! | | main connection | probe |
//! |---|---|---|
//! | standalone | a multiplexed connection to the URL | `PING` |
//! | Cluster | redis-rs's cluster connection behind the slot view | `CLUSTER SLOTS` from any node, then `PING` to every master; marks each up or down |
//! | Sentinel | a multiplexed connection to the primary the sentinels name (highest config epoch), checked with `ROLE` | asks the sentinels again (a new primary: switch), then `PING` to the primary |

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, FromRedisValue, RedisError};

use crate::classify::classify;
use crate::cluster::backend::ClusterBackend;
use crate::cluster::view::ClusterView;
use crate::config::{RedisClientConfig, Topology};
use crate::conn::Conn;
use crate::error::{Error, ErrorKind};
use crate::health::Event;
use crate::metrics::ClientMetrics;
use crate::sentinel::SentinelBackend;

/// How this client reaches Redis.
#[derive(Debug)]
pub(crate) enum Backend {
    Standalone(Standalone),
    Cluster(ClusterBackend),
    Sentinel(SentinelBackend),
}

impl Backend {
    /// The backend for `config`'s topology, from its parsed URLs.
    pub(crate) fn new(
        config: &RedisClientConfig,
        infos: Vec<ConnectionInfo>,
    ) -> Result<Self, Error> {
        let first = infos
            .first()
            .cloned()
            .ok_or_else(|| Error::new(ErrorKind::InvalidConfig, "no redis URL given"))?;
        Ok(match &config.topology {
            Topology::Standalone(_) => Self::Standalone(Standalone {
                client: client(first)?,
                probes: Probes::default(),
            }),
            Topology::Cluster(_) => {
                Self::Cluster(ClusterBackend::new(infos, config.timeouts_to_degrade)?)
            }
            Topology::Sentinel { master, .. } => {
                Self::Sentinel(SentinelBackend::new(master.clone(), infos))
            }
        })
    }

    /// Opens the main connection (and, for a Cluster, reads its slot map).
    pub(crate) async fn open_main(
        &self,
        config: &RedisClientConfig,
        metrics: &ClientMetrics,
    ) -> redis::RedisResult<Conn> {
        let conn = match self {
            Self::Standalone(s) => Conn::Single(open(&s.client, config).await?),
            Self::Cluster(c) => c.open_main(config, metrics).await?,
            Self::Sentinel(s) => s.open_main(config, metrics).await?,
        };
        metrics.main_connections.inc();
        Ok(conn)
    }

    /// Looks at Redis on connections of the probe's own: [`Event::ProbeOk`],
    /// [`Event::AuthRefused`] or [`Event::ProbeFailed`].
    pub(crate) async fn probe(&self, config: &RedisClientConfig, metrics: &ClientMetrics) -> Event {
        match self {
            Self::Standalone(s) => {
                let info = s.client.get_connection_info().clone();
                match s.probes.ping("main", &info, config, metrics).await {
                    Ok(()) => Event::ProbeOk,
                    Err(e) => probe_failed(&e),
                }
            }
            Self::Cluster(c) => c.probe(config, metrics).await,
            Self::Sentinel(s) => s.probe(config, metrics).await,
        }
    }

    /// A client for a subscriber connection: the server, the current primary, or a
    /// master of the Cluster that is up (a Cluster forwards every `PUBLISH` to every
    /// node).
    pub(crate) fn pubsub_client(&self) -> Option<redis::Client> {
        match self {
            Self::Standalone(s) => Some(s.client.clone()),
            Self::Cluster(c) => c.pubsub_client(),
            Self::Sentinel(s) => s.pubsub_client(),
        }
    }

    /// Whether the main connection must be moved: Sentinel announced a new primary (or
    /// a probe found one), or Cluster slots moved to other masters; clears the request.
    pub(crate) fn take_switch(&self) -> bool {
        match self {
            Self::Sentinel(s) => s.take_switch(),
            Self::Cluster(c) => c.take_moved(),
            Self::Standalone(_) => false,
        }
    }

    /// Asks again for the main connection to be moved (a move that failed).
    pub(crate) fn request_switch(&self) {
        match self {
            Self::Sentinel(s) => s.request_switch(),
            Self::Cluster(c) => c.request_rebuild(),
            Self::Standalone(_) => {}
        }
    }

    /// Whether writes refused (`READONLY`) may mean the primary moved: Sentinel.
    pub(crate) fn follows_primary(&self) -> bool {
        matches!(self, Self::Sentinel(_))
    }

    /// Whether part of Redis is down while the client is healthy (a Cluster master):
    /// the supervisor then probes at the degraded pace.
    pub(crate) fn partly_down(&self) -> bool {
        match self {
            Self::Cluster(c) => c.view().any_down(),
            _ => false,
        }
    }

    /// The slot view of a Cluster.
    pub(crate) fn cluster_view(&self) -> Option<&Arc<ClusterView>> {
        match self {
            Self::Cluster(c) => Some(c.view()),
            _ => None,
        }
    }

    /// The Sentinel backend.
    pub(crate) fn sentinel(&self) -> Option<&SentinelBackend> {
        match self {
            Self::Sentinel(s) => Some(s),
            _ => None,
        }
    }
}

/// One server.
#[derive(Debug)]
pub(crate) struct Standalone {
    client: redis::Client,
    probes: Probes,
}

/// A failed probe: [`Event::AuthRefused`] when Redis refused our credentials, else
/// [`Event::ProbeFailed`].
pub(crate) fn probe_failed(error: &RedisError) -> Event {
    match classify(error).event {
        Some(Event::AuthRefused) => Event::AuthRefused,
        _ => Event::ProbeFailed,
    }
}

/// A redis-rs client for `info`.
pub(crate) fn client(info: ConnectionInfo) -> Result<redis::Client, Error> {
    redis::Client::open(info)
        .map_err(|e| Error::with_source(ErrorKind::InvalidConfig, "malformed redis URL", e))
}

/// `template` (credentials, database, TLS) at another host and port.
pub(crate) fn node_info(template: &ConnectionInfo, host: &str, port: u16) -> ConnectionInfo {
    let addr = match template.addr().clone() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure,
            tls_params,
        },
        _ => ConnectionAddr::Tcp(host.to_owned(), port),
    };
    template.clone().set_addr(addr)
}

/// `host:port` of a connection's address.
pub(crate) fn address(info: &ConnectionInfo) -> String {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            format!("{host}:{port}")
        }
        other => format!("{other:?}"),
    }
}

/// Opens a multiplexed connection within the connect deadline (handshake included: a
/// stopped server accepts TCP but never answers).
pub(crate) async fn open(
    client: &redis::Client,
    config: &RedisClientConfig,
) -> redis::RedisResult<MultiplexedConnection> {
    let connection = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(None);
    match tokio::time::timeout(
        config.connect_timeout,
        client.get_multiplexed_async_connection_with_config(&connection),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(timed_out()),
    }
}

pub(crate) fn timed_out() -> RedisError {
    std::io::Error::from(std::io::ErrorKind::TimedOut).into()
}

/// Connections that probes go on, one per node, opened when first needed and dropped
/// after any failure (the next probe starts on a fresh one).
#[derive(Debug, Default)]
pub(crate) struct Probes {
    conns: std::sync::Mutex<HashMap<String, MultiplexedConnection>>,
}

impl Probes {
    /// `cmd` on the probe connection `key` to `info`, within the call deadline.
    pub(crate) async fn query<T: FromRedisValue>(
        &self,
        key: &str,
        info: &ConnectionInfo,
        cmd: &redis::Cmd,
        config: &RedisClientConfig,
        metrics: &ClientMetrics,
    ) -> redis::RedisResult<T> {
        let cached = self.lock().get(key).cloned();
        let mut conn = match cached {
            Some(conn) => conn,
            None => {
                let conn = open(&client_of(info)?, config).await?;
                metrics.probe_connections.inc();
                self.lock().insert(key.to_owned(), conn.clone());
                conn
            }
        };
        let result =
            match tokio::time::timeout(config.call_timeout, cmd.query_async(&mut conn)).await {
                Ok(result) => result,
                Err(_) => Err(timed_out()),
            };
        if result.is_err() {
            self.lock().remove(key);
        }
        result
    }

    /// `PING` on the probe connection `key` to `info`, timed in
    /// `redis_probe_duration_seconds`.
    pub(crate) async fn ping(
        &self,
        key: &str,
        info: &ConnectionInfo,
        config: &RedisClientConfig,
        metrics: &ClientMetrics,
    ) -> redis::RedisResult<()> {
        let start = Instant::now();
        let result = self
            .query::<String>(key, info, &redis::cmd("PING"), config, metrics)
            .await;
        metrics
            .probe_duration
            .observe(start.elapsed().as_secs_f64());
        result.map(drop)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, MultiplexedConnection>> {
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn client_of(info: &ConnectionInfo) -> redis::RedisResult<redis::Client> {
    redis::Client::open(info.clone())
}
