//! What other processes need to know about nodes and calls without serving them: a
//! node's lease and how many calls its set still holds ([`RedisCallStore::node_status`],
//! what an adoption task watches), and who owns a call ([`call_owner`], what a router in
//! front of several nodes asks).

use secureconnect_redis_fallback::redis::{self, Value};
use secureconnect_redis_fallback::RedisClient;

use super::scripts::{call_key, lease_key, node_calls_key};
use super::RedisCallStore;
use crate::error::{check_id, Error};

/// A node as Redis sees it: [`RedisCallStore::node_status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStatus {
    /// Whether its lease is alive (refreshed by its heartbeat).
    pub lease_alive: bool,
    /// How many calls its set holds: once its lease lapsed, the calls still to adopt.
    pub calls: u64,
}

impl RedisCallStore {
    /// Whether `node`'s lease is alive and how many calls its set holds, in one round
    /// trip (both keys carry the node's hash tag, so this runs on a Cluster too).
    ///
    /// # Errors
    ///
    /// [`Error::is_invalid_id`] for an unusable node id; Redis errors.
    pub async fn node_status(&self, node: &str) -> Result<NodeStatus, Error> {
        check_id(node)?;
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS").arg(lease_key(node));
        pipe.cmd("SCARD").arg(node_calls_key(node));
        let (alive, calls): (i64, u64) = self.inner.redis.query_pipeline(&pipe).await?;
        Ok(NodeStatus {
            lease_alive: alive == 1,
            calls,
        })
    }

    /// Lets go of a call another node owns now: no longer held (nor refreshed by the
    /// heartbeat), and out of this node's set (best effort, as after a refused write).
    pub(crate) async fn let_go(&self, call: &str) {
        self.forget(call);
        self.srem(call).await;
    }
}

/// The node that owns `call_id` in Redis (`None`: no such call, or it expired), read
/// with one `HGET`; for a router that sends each call's requests to its owner.
///
/// ```no_run
/// # async fn f(redis: secureconnect_redis_fallback::RedisClient) -> Result<(), secureconnect_callstate::Error> {
/// if let Some(node) = secureconnect_callstate::call_owner(&redis, "call-7").await? {
///     println!("call-7 is served by {node}");
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::is_invalid_id`] for an unusable call id, [`Error::is_corrupt`] for an
/// owner that is not text, Redis errors.
pub async fn call_owner(redis: &RedisClient, call_id: &str) -> Result<Option<String>, Error> {
    check_id(call_id)?;
    let mut cmd = redis::cmd("HGET");
    cmd.arg(call_key(call_id)).arg("owner");
    match redis.query::<Value>(&cmd).await? {
        Value::Nil => Ok(None),
        Value::BulkString(owner) => String::from_utf8(owner)
            .map(Some)
            .map_err(|_| Error::corrupt(call_id, "owner is not UTF-8".into())),
        Value::SimpleString(owner) => Ok(Some(owner)),
        other => Err(Error::corrupt(
            call_id,
            format!("unexpected owner {other:?}"),
        )),
    }
}
