//! [`RedisSentinel`]: a primary, its replica and three Redis Sentinels, all real
//! `redis-server` child processes on free loopback ports.

use std::io;
use std::time::{Duration, Instant};

use super::server::{RedisServer, Reply};

/// How long the sentinels have to find the primary, the replica and each other.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// The master name the sentinels monitor.
pub const MASTER_NAME: &str = "mymaster";

/// A primary, its replica and three sentinels (quorum 2) for tests; every process is
/// killed when dropped.
///
/// The sentinels consider the primary down after 2 s without an answer
/// (`down-after-milliseconds`), so a killed primary is replaced a few seconds later.
///
/// ```no_run
/// use std::time::Duration;
/// use secureconnect_redis_fallback::testing::RedisSentinel;
///
/// let mut sentinel = RedisSentinel::start()?;
/// let urls = sentinel.sentinel_urls();
/// let old = sentinel.primary()?;          // index of the primary (0 or 1)
/// sentinel.failover()?;                   // SENTINEL FAILOVER
/// let new = sentinel.wait_for_new_primary(old, Duration::from_secs(30))?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct RedisSentinel {
    /// The two data servers: the first starts as primary.
    servers: Vec<RedisServer>,
    sentinels: Vec<RedisServer>,
}

impl RedisSentinel {
    /// Starts the primary, its replica and three sentinels, and waits until every
    /// sentinel knows the replica and the two other sentinels (so that a failover can
    /// happen) and the replica is in sync.
    ///
    /// # Errors
    ///
    /// If a process does not start or the set-up is not ready within a minute.
    pub fn start() -> io::Result<Self> {
        let primary = RedisServer::start()?;
        let port = primary.port().to_string();
        let replica = RedisServer::start_with_args(&["--replicaof", "127.0.0.1", &port])?;
        let config = format!(
            "sentinel monitor {MASTER_NAME} 127.0.0.1 {port} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} 2000\n\
             sentinel failover-timeout {MASTER_NAME} 10000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n"
        );
        let mut sentinels = Vec::with_capacity(3);
        for _ in 0..3 {
            sentinels.push(RedisServer::start_with(
                &["--sentinel"],
                Some(&config),
                |_| Vec::new(),
            )?);
        }
        let mut set = Self {
            servers: vec![primary, replica],
            sentinels,
        };
        set.wait_until_ready(READY_DEADLINE)?;
        Ok(set)
    }

    /// `redis://127.0.0.1:<port>/` of each sentinel.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(RedisServer::url).collect()
    }

    /// The master name the sentinels monitor, [`MASTER_NAME`].
    pub fn master_name(&self) -> &'static str {
        MASTER_NAME
    }

    /// Data server 0 or 1 (0 started as the primary).
    pub fn server(&self, index: usize) -> &RedisServer {
        &self.servers[index]
    }

    /// Data server 0 or 1, to kill, pause, resume or restart it.
    pub fn server_mut(&mut self, index: usize) -> &mut RedisServer {
        &mut self.servers[index]
    }

    /// Sentinel 0, 1 or 2.
    pub fn sentinel_mut(&mut self, index: usize) -> &mut RedisServer {
        &mut self.sentinels[index]
    }

    /// The index of the data server the first sentinel that answers names primary.
    ///
    /// # Errors
    ///
    /// If no sentinel answers, or it names neither server.
    pub fn primary(&mut self) -> io::Result<usize> {
        let mut last = io::Error::other("no sentinel answers");
        for sentinel in &mut self.sentinels {
            if sentinel.pid().is_none() {
                continue;
            }
            match sentinel.command(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME]) {
                Ok(Reply::Array(items)) => {
                    let port: Option<u16> = items
                        .get(1)
                        .and_then(Reply::text)
                        .and_then(|p| p.parse().ok());
                    return self
                        .servers
                        .iter()
                        .position(|s| Some(s.port()) == port)
                        .ok_or_else(|| {
                            io::Error::other(format!("the sentinel names port {port:?}"))
                        });
                }
                Ok(other) => last = io::Error::other(format!("unexpected reply {other:?}")),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// `SENTINEL FAILOVER` on the first sentinel: the replica is promoted; the old
    /// primary keeps running (Sentinel demotes it some seconds later).
    ///
    /// # Errors
    ///
    /// If the sentinel refuses (no good replica, a failover in progress).
    pub fn failover(&mut self) -> io::Result<()> {
        match self.sentinels[0].command(&["SENTINEL", "FAILOVER", MASTER_NAME])? {
            Reply::Status(_) => Ok(()),
            other => Err(io::Error::other(format!("SENTINEL FAILOVER: {other:?}"))),
        }
    }

    /// Waits until every running sentinel names a primary other than server `old`, and
    /// that server says `master` to `ROLE`; returns its index.
    ///
    /// # Errors
    ///
    /// If that does not happen within `within`.
    pub fn wait_for_new_primary(&mut self, old: usize, within: Duration) -> io::Result<usize> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(new) = self.agreed_primary().filter(|p| *p != old) {
                if role(&mut self.servers[new]).as_deref() == Some("master") {
                    return Ok(new);
                }
            }
            if Instant::now() > deadline {
                return Err(io::Error::other("no new primary in time"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The primary every running sentinel names, if they agree.
    fn agreed_primary(&mut self) -> Option<usize> {
        let mut agreed = None;
        for i in 0..self.sentinels.len() {
            if self.sentinels[i].pid().is_none() {
                continue;
            }
            let reply = self.sentinels[i]
                .command(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME])
                .ok()?;
            let Reply::Array(items) = reply else {
                return None;
            };
            let port: u16 = items.get(1).and_then(Reply::text)?.parse().ok()?;
            let index = self.servers.iter().position(|s| s.port() == port)?;
            if agreed.is_some_and(|a| a != index) {
                return None;
            }
            agreed = Some(index);
        }
        agreed
    }

    /// Waits until server `index` says `slave` to `ROLE` (Sentinel demoted it) and its
    /// link to the primary is up.
    ///
    /// # Errors
    ///
    /// If that does not happen within `within`.
    pub fn wait_for_replica(&mut self, index: usize, within: Duration) -> io::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let server = &mut self.servers[index];
            if role(server).as_deref() == Some("slave")
                && server.info_field("master_link_status").ok().as_deref() == Some("up")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "server {index} is not a replica in time"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every sentinel knows the replica and the other sentinels, and the
    /// replica is in sync.
    ///
    /// # Errors
    ///
    /// If that does not happen within `within`.
    pub fn wait_until_ready(&mut self, within: Duration) -> io::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if self.is_ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::other("the sentinels are not ready in time"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn is_ready(&mut self) -> bool {
        let Some(primary) = self.agreed_primary() else {
            return false;
        };
        let replica = 1 - primary;
        if self.servers[replica]
            .info_field("master_link_status")
            .ok()
            .as_deref()
            != Some("up")
        {
            return false;
        }
        self.sentinels.iter_mut().all(|s| {
            let Ok(Reply::Array(fields)) = s.command(&["SENTINEL", "MASTER", MASTER_NAME]) else {
                return false;
            };
            let field = |name: &str| {
                fields
                    .chunks(2)
                    .find(|p| p[0].text().as_deref() == Some(name))
                    .and_then(|p| p.get(1)?.text())
            };
            field("num-slaves").as_deref() == Some("1")
                && field("num-other-sentinels").as_deref() == Some("2")
                && field("flags").as_deref() == Some("master")
        })
    }
}

/// `master` or `slave`, from `ROLE`.
fn role(server: &mut RedisServer) -> Option<String> {
    match server.command(&["ROLE"]).ok()? {
        Reply::Array(items) => items.first().and_then(Reply::text),
        _ => None,
    }
}
