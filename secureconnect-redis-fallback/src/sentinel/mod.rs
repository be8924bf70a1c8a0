//! [`SentinelBackend`]: the primary that Redis Sentinel names, followed through
//! failovers.
//!
//! - **Which primary**: every sentinel is asked `SENTINEL MASTER <name>`; the answer
//!   with the highest `config-epoch` wins (the newest failover's outcome, even while a
//!   sentinel that missed it still names the old primary). The primary must then say
//!   `master` to `ROLE` before the client uses it: a replica being promoted, or an old
//!   primary restarted with its old configuration but not named by the sentinels, is
//!   never written to.
//! - **Following a failover**: a task per sentinel subscribes to `+switch-master`;
//!   an announcement for this master wakes the supervisor, which looks the primary up
//!   again and moves the main connection at once, while the old primary is still
//!   writable (Sentinel demotes it ~10 s later). Backstops: every probe asks the
//!   sentinels again, and a `READONLY` or a lost connection makes the client look up
//!   the primary before it uses a connection again.
//! - **Holding writes during a failover**: between the replica's promotion and the
//!   `+switch-master` announcement (about half a second), the old primary still takes
//!   writes that the failover then discards. The same tasks listen to
//!   `+failover-state-send-slaveof-noone`, which the leading sentinel publishes just
//!   before it promotes the replica: from then on writes are refused at once
//!   ([`ErrorKind::WritesUnavailable`](crate::ErrorKind::WritesUnavailable), take the
//!   fallback; reads go on) until the client is on the new primary, or for at most
//!   [`FAILOVER_HOLD`] if the failover never completes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use redis::{ConnectionInfo, Value};

use crate::backend::{node_info, open, probe_failed, Probes};
use crate::config::RedisClientConfig;
use crate::conn::Conn;
use crate::health::Event;
use crate::metrics::ClientMetrics;

mod watch;

pub(crate) use self::watch::watch;

/// Writes are held at most this long after a failover starts, if the new primary is
/// never announced (an aborted failover).
pub(crate) const FAILOVER_HOLD: Duration = Duration::from_secs(10);

/// A primary found through sentinels.
#[derive(Debug)]
pub(crate) struct SentinelBackend {
    master: String,
    sentinels: Vec<ConnectionInfo>,
    /// The primary the main connection is on.
    current: Mutex<Option<(String, u16)>>,
    /// A new primary was announced or found: move the main connection.
    switch: AtomicBool,
    /// A failover started: writes are held until this moment, or the move.
    hold_until: Mutex<Option<Instant>>,
    probes: Probes,
}

impl SentinelBackend {
    pub(crate) fn new(master: String, sentinels: Vec<ConnectionInfo>) -> Self {
        Self {
            master,
            sentinels,
            current: Mutex::new(None),
            switch: AtomicBool::new(false),
            hold_until: Mutex::new(None),
            probes: Probes::default(),
        }
    }

    /// The sentinels' connection settings.
    pub(crate) fn sentinels(&self) -> &[ConnectionInfo] {
        &self.sentinels
    }

    /// The master name.
    pub(crate) fn master(&self) -> &str {
        &self.master
    }

    fn current(&self) -> Option<(String, u16)> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The primary's connection settings: the first sentinel's credentials, database and
    /// scheme at the primary's address.
    fn primary_info(&self, (host, port): &(String, u16)) -> Option<ConnectionInfo> {
        Some(node_info(self.sentinels.first()?, host, *port))
    }

    /// Asks the main connection to move to a new primary.
    pub(crate) fn request_switch(&self) {
        self.switch.store(true, Ordering::Release);
    }

    pub(crate) fn take_switch(&self) -> bool {
        self.switch.swap(false, Ordering::AcqRel)
    }

    /// Holds writes: a failover is promoting a replica.
    pub(crate) fn hold_writes(&self) {
        *self
            .hold_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + FAILOVER_HOLD);
    }

    /// Whether writes are held (a failover under way, the new primary not known yet).
    pub(crate) fn holding_writes(&self) -> bool {
        self.hold_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|until| Instant::now() < until)
    }

    /// The primary, as the sentinels that answer name it: the answer with the highest
    /// config epoch.
    async fn resolve(
        &self,
        config: &RedisClientConfig,
        metrics: &ClientMetrics,
    ) -> redis::RedisResult<(String, u16)> {
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg("MASTER").arg(&self.master);
        let cmd = &cmd;
        let answers = join_all(
            self.sentinels
                .iter()
                .enumerate()
                .map(|(i, info)| async move {
                    let key = format!("sentinel:{i}");
                    self.probes
                        .query::<Value>(&key, info, cmd, config, metrics)
                        .await
                }),
        )
        .await;
        let mut best: Option<(u64, (String, u16))> = None;
        let mut last_error = None;
        for answer in answers {
            match answer.map(|v| parse_master(&v)) {
                Ok(Some((epoch, addr))) => {
                    if best.as_ref().is_none_or(|(e, _)| epoch > *e) {
                        best = Some((epoch, addr));
                    }
                }
                Ok(None) => {}
                Err(e) => last_error = Some(e),
            }
        }
        match (best, last_error) {
            (Some((_, addr)), _) => Ok(addr),
            (None, Some(e)) => Err(e),
            (None, None) => Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "no sentinel names this master",
            ))),
        }
    }

    /// Opens the main connection to the primary the sentinels name, once it says
    /// `master` to `ROLE`.
    pub(crate) async fn open_main(
        &self,
        config: &RedisClientConfig,
        metrics: &ClientMetrics,
    ) -> redis::RedisResult<Conn> {
        let primary = self.resolve(config, metrics).await?;
        let info = self
            .primary_info(&primary)
            .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Io, "no sentinel")))?;
        let client = redis::Client::open(info)?;
        let mut conn = open(&client, config).await?;
        let role = tokio::time::timeout(
            config.call_timeout,
            redis::cmd("ROLE").query_async::<Value>(&mut conn),
        )
        .await
        .map_err(|_| crate::backend::timed_out())??;
        if !is_master(&role) {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "the server the sentinels name is not a primary (yet)",
            )));
        }
        let previous = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(primary.clone());
        if previous.as_ref().is_some_and(|p| *p != primary) {
            // On the new primary: writes go again.
            self.hold_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            tracing::info!(
                target: "secureconnect_redis_fallback",
                master = %self.master,
                primary = %format!("{}:{}", primary.0, primary.1),
                "following the new primary"
            );
        }
        Ok(Conn::Single(conn))
    }

    /// Asks the sentinels for the primary (a different one than the main connection's
    /// asks for a switch), then `PING`s it. Without an answer from any sentinel, the
    /// primary in use is pinged.
    pub(crate) async fn probe(&self, config: &RedisClientConfig, metrics: &ClientMetrics) -> Event {
        let primary = match self.resolve(config, metrics).await {
            Ok(primary) => {
                if self.current().is_some_and(|c| c != primary) {
                    self.request_switch();
                }
                primary
            }
            Err(e) => match self.current() {
                Some(current) => {
                    tracing::debug!(target: "secureconnect_redis_fallback", error = %e, "no sentinel answers; checking the primary in use");
                    current
                }
                None => return probe_failed(&e),
            },
        };
        let Some(info) = self.primary_info(&primary) else {
            return Event::ProbeFailed;
        };
        let key = format!("primary:{}:{}", primary.0, primary.1);
        match self.probes.ping(&key, &info, config, metrics).await {
            Ok(()) => Event::ProbeOk,
            Err(e) => probe_failed(&e),
        }
    }

    /// A client for the primary in use.
    pub(crate) fn pubsub_client(&self) -> Option<redis::Client> {
        let info = self.primary_info(&self.current()?)?;
        redis::Client::open(info).ok()
    }
}

/// The address and config epoch in a `SENTINEL MASTER` reply (RESP2 pairs or a RESP3
/// map).
fn parse_master(value: &Value) -> Option<(u64, (String, u16))> {
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    };
    let pairs: Vec<(String, String)> = match value {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|p| Some((text(p.first()?)?, text(p.get(1)?)?)))
            .collect(),
        Value::Map(items) => items
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
            .collect(),
        _ => return None,
    };
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let ip = field("ip")?.to_owned();
    let port = field("port")?.parse().ok()?;
    let epoch = field("config-epoch")
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    Some((epoch, (ip, port)))
}

/// Whether a `ROLE` reply says `master`.
fn is_master(role: &Value) -> bool {
    match role {
        Value::Array(items) => {
            matches!(
                items.first(),
                Some(Value::BulkString(b)) if b == b"master"
            ) || matches!(items.first(), Some(Value::SimpleString(s)) if s == "master")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn sentinel_replies_are_read() {
        let reply = Value::Array(
            [
                "name",
                "mymaster",
                "ip",
                "10.0.0.2",
                "port",
                "6380",
                "config-epoch",
                "7",
            ]
            .iter()
            .map(|s| bulk(s))
            .collect(),
        );
        assert_eq!(parse_master(&reply), Some((7, ("10.0.0.2".into(), 6380))));
        assert_eq!(parse_master(&Value::Nil), None);
        assert!(is_master(&Value::Array(vec![
            bulk("master"),
            Value::Int(0)
        ])));
        assert!(!is_master(&Value::Array(vec![bulk("slave")])));
    }
}
