//! Real Redis for tests (feature `test-util`): a `redis-server` child process on a free
//! loopback port that a test can kill, pause (SIGSTOP), resume, restart on the same
//! port and reconfigure, and a TCP proxy that can blackhole, delay or reset
//! connections.
//!
//! ```no_run
//! use secureconnect_redis_fallback::testing::RedisServer;
//!
//! let mut server = RedisServer::start()?;
//! let url = server.url();          // redis://127.0.0.1:<port>/
//! server.pause()?;                  // SIGSTOP: connections hang
//! server.resume()?;                 // SIGCONT
//! server.kill()?;                   // SIGKILL: connections are refused
//! server.restart()?;                // a fresh server on the same port
//! server.command(&["CONFIG", "SET", "maxmemory", "1mb"])?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! [`RedisCluster`] makes six of them a Redis Cluster (3 masters, 3 replicas) and
//! [`RedisSentinel`] a primary, a replica and three sentinels, for failover tests.
//!
//! `redis-server` and `redis-cli` must be on `PATH` (Debian's `redis-server` and
//! `redis-tools` packages).

mod cluster;
mod proxy;
mod sentinel;
mod server;
mod watch;

pub use cluster::RedisCluster;
pub use proxy::{FaultProxy, ProxyMode};
pub use sentinel::{RedisSentinel, MASTER_NAME};
pub use server::{RedisServer, Reply};
pub use watch::{Sample, WriteWatch};
