//! Redis Cluster support: hash slots ([`key_slot`]), and, inside the crate, the slot
//! view that lets a call to a master that is down fail at once while every other slot
//! keeps working.
//!
//! On a Cluster, the client's [`Health`](crate::Health) is the cluster's as a whole:
//! **Degraded** when no master answers (or none is reachable at all). One master down
//! degrades only its slots: calls whose key hashes there are refused at once with an
//! unavailable error (`redis_commands_total{outcome="rejected"}`), counted in
//! `redis_cluster_slots_down`, until the master answers again or the cluster promotes
//! its replica, which the client picks up from `CLUSTER SLOTS` on its next probe
//! (every 100 ms–1 s while a master is down).
//!
//! A master is marked down by a connection error on a call to it, by
//! [`timeouts_to_degrade`](crate::RedisClientConfig::timeouts_to_degrade) timeouts in
//! a row, or by a failed probe; a stopped master (SIGSTOP) costs each call to its slots
//! at most the call deadline until then.

pub(crate) mod backend;
pub(crate) mod conn;
pub(crate) mod slot;
pub(crate) mod view;

pub use self::slot::{key_slot, SLOTS};
