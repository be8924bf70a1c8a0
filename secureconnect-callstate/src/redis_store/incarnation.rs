//! This process's incarnation of its node id, and the keys that fence older processes
//! out, on one Redis and on a Redis Cluster.
//!
//! The incarnation is claimed on the node's key `sc:node:{<node>}:inc` (above its value
//! and above Redis's clock in ms): a number no older process with this node id has. Every write script compares it with an
//! incarnation key **in the call's hash slot** (a script may only touch one slot on a
//! Cluster):
//!
//! - on one Redis (or a Sentinel-managed primary) that is the node's key itself;
//! - on a Cluster, one key per hash slot, `sc:node:<node>:inc:{<tag>}`, where `<tag>`
//!   is the shortest string whose slot is the call's ([`slot_tag`]). The process
//!   claims its incarnation in all 16 384 of them (max semantics: a key is only ever
//!   raised) before it reads or writes a call, so from then on every older process's
//!   write is refused in every slot, as on one Redis. The heartbeat holds the keys
//!   of the slots its calls live in, and every quarter of
//!   [`fence_ttl`](crate::RedisCallStoreConfig::fence_ttl) all of them, so none
//!   expires while the process lives; a key lost to a failover is set again by the
//!   next write, heartbeat or full claim.

use std::sync::OnceLock;
use std::time::Instant;

use secureconnect_redis_fallback::cluster::{key_slot, SLOTS};
use secureconnect_redis_fallback::redis::{self, Value};

use super::scripts::{call_key, incarnation_key};
use super::RedisCallStore;
use crate::error::Error;

/// Slots claimed per round trip (split by the client into one pipeline per master).
const CLAIM_BATCH: usize = 2048;

/// The shortest string (of `0-9a-zA-Z`) whose hash slot is `slot`, for every slot:
/// the hash tags of the per-slot incarnation keys. Computed once, the same in every
/// process.
pub(super) fn slot_tag(slot: u16) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        let mut tags: Vec<Option<String>> = vec![None; usize::from(SLOTS)];
        let mut missing = usize::from(SLOTS);
        // Every string of length 1, then 2, …, in order: the first found for a slot is
        // the shortest.
        'lengths: for len in 1..=4u32 {
            for n in 0..ALPHABET.len().pow(len) {
                let mut tag = vec![0u8; len as usize];
                let mut rest = n;
                for byte in tag.iter_mut().rev() {
                    *byte = ALPHABET[rest % ALPHABET.len()];
                    rest /= ALPHABET.len();
                }
                let slot = usize::from(key_slot(&tag));
                if tags[slot].is_none() {
                    tags[slot] = Some(String::from_utf8_lossy(&tag).into_owned());
                    missing -= 1;
                    if missing == 0 {
                        break 'lengths;
                    }
                }
            }
        }
        tags.into_iter()
            .enumerate()
            .map(|(slot, tag)| tag.unwrap_or_else(|| format!("slot-{slot}")))
            .collect()
    });
    &tags[usize::from(slot) % tags.len()]
}

/// The incarnation key of `node` in hash slot `slot` (on a Cluster).
pub(super) fn slot_incarnation_key(node: &str, slot: u16) -> String {
    format!("sc:node:{node}:inc:{{{}}}", slot_tag(slot))
}

impl RedisCallStore {
    /// The incarnation key a write to `call` checks: the node's key on one Redis, the
    /// node's key in the call's slot on a Cluster.
    pub(super) fn incarnation_key_for(&self, call: &str) -> String {
        if self.inner.redis.is_cluster() {
            slot_incarnation_key(&self.inner.node, key_slot(call_key(call).as_bytes()))
        } else {
            incarnation_key(&self.inner.node)
        }
    }

    /// A new incarnation from the node's incarnation key (the `CLAIM` script: above
    /// the key's value and above Redis's clock in ms, with the key's TTL): higher than
    /// any older process's with this node id, also after the key was lost.
    pub(super) async fn new_incarnation(&self) -> Result<u64, Error> {
        let mut claim = self
            .inner
            .scripts
            .claim
            .on_keys(&[incarnation_key(&self.inner.node)]);
        claim.arg(self.fence_ttl_ms());
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        pipe.add_command(claim);
        match self.exec(&pipe).await?.into_iter().next() {
            Some(Value::Int(n)) if n > 0 => Ok(n as u64),
            Some(Value::ServerError(e)) => Err(Error::refused(&self.inner.node, e)),
            other => Err(Error::corrupt(
                &self.inner.node,
                format!("unexpected incarnation claim reply {other:?}"),
            )),
        }
    }

    /// On a Cluster, raises the node's incarnation key of every slot in `slots` to
    /// `incarnation` (never lowers one), refreshing its TTL: pipelined, one pipeline per
    /// slot's master, [`CLAIM_BATCH`] slots per round trip. [`Error::is_not_owner`]
    /// (superseded) if a newer incarnation holds any of them.
    pub(super) async fn claim_slots(
        &self,
        incarnation: u64,
        slots: impl IntoIterator<Item = u16>,
    ) -> Result<(), Error> {
        let slots: Vec<u16> = slots.into_iter().collect();
        for batch in slots.chunks(CLAIM_BATCH) {
            self.claim_batch(incarnation, batch).await?;
        }
        Ok(())
    }

    async fn claim_batch(&self, incarnation: u64, slots: &[u16]) -> Result<(), Error> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for &slot in slots {
            let mut cmd = self
                .inner
                .scripts
                .claim_slot
                .on_keys(&[slot_incarnation_key(&self.inner.node, slot)]);
            cmd.arg(incarnation).arg(self.fence_ttl_ms());
            pipe.add_command(cmd);
        }
        if pipe.is_empty() {
            return Ok(());
        }
        let values = self.exec(&pipe).await?;
        for value in values {
            match value {
                Value::Int(newest) if u64::try_from(newest).is_ok_and(|n| n > incarnation) => {
                    return Err(Error::superseded(&self.inner.node));
                }
                Value::Int(_) => {}
                Value::ServerError(e) => return Err(Error::refused(&self.inner.node, e)),
                other => {
                    return Err(Error::corrupt(
                        &self.inner.node,
                        format!("unexpected reply to an incarnation claim {other:?}"),
                    ))
                }
            }
        }
        Ok(())
    }

    /// On a Cluster, claims every slot again once a quarter of the fence TTL has passed
    /// since the last full claim (the heartbeat calls this).
    pub(super) async fn reclaim_all_if_due(&self, incarnation: u64) -> Result<(), Error> {
        let due = {
            let last = self
                .inner
                .full_claim
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            last.is_none_or(|at| at.elapsed() >= self.inner.config.fence_ttl / 4)
        };
        if !due {
            return Ok(());
        }
        self.claim_slots(incarnation, 0..SLOTS).await?;
        *self
            .inner
            .full_claim
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_has_a_short_tag_of_its_own() {
        let mut longest = 0;
        for slot in 0..SLOTS {
            let tag = slot_tag(slot);
            assert_eq!(key_slot(tag.as_bytes()), slot, "{tag}");
            longest = longest.max(tag.len());
            let key = slot_incarnation_key("video-1", slot);
            assert_eq!(key_slot(key.as_bytes()), slot, "{key}");
        }
        assert!(longest <= 4, "{longest}");
        assert_eq!(slot_tag(0), slot_tag(0), "deterministic");
    }

    #[test]
    fn a_calls_incarnation_key_is_in_the_calls_slot() {
        for call in ["c1", "room-42", "0192f1c2-7a0e-7000-8000-000000000000"] {
            let slot = key_slot(call_key(call).as_bytes());
            assert_eq!(
                key_slot(slot_incarnation_key("node", slot).as_bytes()),
                slot
            );
        }
    }
}
