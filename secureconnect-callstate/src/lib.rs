//! Call state that survives a restart of the video service.
//!
//! Only membership and ownership are persisted, never media. After a restart, clients
//! are told to rejoin and renegotiate; a rejoin with the right token restores their
//! place in the call.
//!
//! - [`RedisCallStore`]: each call is a hash `sc:call:{<id>}` and a hash of
//!   participants `sc:call:{<id>}:p` sharing one hash tag, so one Lua script changes a
//!   call atomically on a single Redis or a Redis Cluster. Every write checks the
//!   owner and its fencing epoch, which only grows (bumped by adoption and recovery):
//!   a node or an old process that lost a call cannot overwrite it, and a call that
//!   ended is never written back (a tombstone `sc:call:{<id>}:t`). Each node keeps a
//!   set of the calls it owns and a lease refreshed by [`RedisCallStore::heartbeat`];
//!   call keys expire unless refreshed, so abandoned calls go away, and another node
//!   may [`adopt`](RedisCallStore::adopt) the calls of a node whose lease lapsed.
//!   [`RedisCallStore::recover`] reads the node's own set with `SSCAN` and takes the
//!   calls over with pipelined scripts; `KEYS` is never used; a corrupt entry is
//!   skipped and reported, the others recover.
//! - [`MemoryCallStore`]: the same semantics in one process.
//! - [`CallHub`]: what a signaling service holds — memory authoritative, Redis written
//!   behind, full write-back after an outage, recovery retried until Redis answers,
//!   rejoin tokens, expiry of dropped participants and empty calls, a cap on open calls
//!   per user ([`CallHubConfig`]), signal relay.
//!
//! Every operation fails with the one [`Error`]: branch on its predicates
//! ([`Error::is_unavailable`]: Redis is unavailable, take the in-memory path;
//! [`Error::is_not_owner`], [`Error::is_bad_token`], …) or on [`Error::kind`].
//!
//! ```no_run
//! # async fn f(redis: secureconnect_redis_fallback::RedisClient) -> Result<(), secureconnect_callstate::Error> {
//! use prometheus_client::registry::Registry;
//! use secureconnect_callstate::{CallHub, CallHubConfig, RedisCallStore, RedisCallStoreConfig};
//!
//! let mut registry = Registry::default();
//! let store = RedisCallStore::new(redis, "video-1", RedisCallStoreConfig::default(), &mut registry)?;
//! let hub = CallHub::new("video-1", Some(store), CallHubConfig::default(), &mut registry)?;
//! hub.recover_in_background();                // calls from before a restart
//! hub.create_for("call-7", "user-1").await?;  // at most 20 open calls per user
//! let (me, token) = hub.join("call-7", "user-1").await?;
//! hub.disconnect("call-7", &me)?;             // the socket closed without a leave
//! // … within the grace period (or after a restart), the client presents `token`:
//! hub.rejoin("call-7", &me, "user-1", &token).await?;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod error;
mod hub;
mod memory_store;
mod model;
mod redis_store;
mod store;

pub use error::{Error, ErrorKind};
pub use hub::{CallHub, CallHubConfig, Signal, SignalReceiver};
pub use memory_store::MemoryCallStore;
pub use model::{CallState, Participant, ParticipantState, RejoinToken, SCHEMA_VERSION};
pub use redis_store::{
    call_owner, NodeStatus, RecoveryReport, RedisCallStore, RedisCallStoreConfig, Skipped,
};
pub use store::{CallStore, LeaveOutcome};
