//! A Redis client that notices failure fast, degrades to local fallbacks, and recovers
//! by itself.
//!
//! redis-rs's `ConnectionManager` does not notice a hung server (a stopped Redis gives
//! timeouts forever on the same connection) and makes callers wait on its reconnection
//! after a crash. [`RedisClient`] owns the deadline of every call (250 ms by default),
//! never awaits a reconnection on a caller's path, and keeps a small health state
//! machine ([`Health`]): while degraded, every call fails at once with an error whose
//! [`is_unavailable`](Error::is_unavailable) is true, so the caller takes its fallback
//! in well under a microsecond. A background task probes Redis on a connection of its
//! own and brings the client back.
//!
//! ```no_run
//! # async fn f() -> Result<(), secureconnect_redis_fallback::Error> {
//! use prometheus_client::registry::Registry;
//! use secureconnect_redis_fallback::{Health, RedisClient, RedisClientConfig};
//!
//! let mut registry = Registry::default();
//! let redis = RedisClient::connect(RedisClientConfig::new("redis://127.0.0.1:6379/"), &mut registry).await?;
//! let mut health = redis.subscribe();
//! tokio::spawn(async move {
//!     while health.changed().await.is_ok() {
//!         println!("redis is now {}", *health.borrow());
//!     }
//! });
//! let hits: i64 = redis.query(redis::cmd("INCR").arg("hits")).await.unwrap_or(0);
//! # Ok(()) }
//! ```
//!
//! Errors are classified by what they say about Redis: connection errors, timeouts, `LOADING`,
//! `BUSY`, `MASTERDOWN`, `CLUSTERDOWN` and `TRYAGAIN` make Redis unavailable;
//! `NOAUTH`/`WRONGPASS` degrade with a loud log and slow retries; `OOM` and `READONLY`
//! refuse writes only; `WRONGTYPE`, `NOSCRIPT`, `NOPERM` and bad arguments are the
//! caller's errors and say nothing about health.
//!
//! The same client talks to one server ([`RedisClientConfig::new`]), a Redis Cluster
//! ([`RedisClientConfig::cluster`]: a master that is down fails only its hash slots, see
//! [`cluster`]) or the primary Redis Sentinel names ([`RedisClientConfig::sentinel`]:
//! failovers followed as Sentinel announces them, writes held while a replica is being
//! promoted).

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod backend;
mod classify;
mod client;
pub mod cluster;
mod config;
mod conn;
mod error;
mod health;
pub mod kv;
pub mod metrics;
pub mod pubsub;
pub mod rate_limit;
mod sentinel;
mod supervisor;
#[cfg(feature = "test-util")]
pub mod testing;

pub use client::RedisClient;
pub use config::RedisClientConfig;
pub use error::{Error, ErrorKind};
pub use health::Health;
pub use redis;
