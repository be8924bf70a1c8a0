//! The store interface shared by [`RedisCallStore`](crate::RedisCallStore) and
//! [`MemoryCallStore`](crate::MemoryCallStore).

use std::future::Future;

use crate::error::Error;
use crate::model::{CallState, Participant};

/// What a leave did. More fields may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaveOutcome {
    /// The call's version after the leave.
    pub version: u64,
    /// Whether the participant was there (a duplicate leave changes nothing).
    pub removed: bool,
    /// Whether the call ended because its last participant left.
    pub call_ended: bool,
}

/// Where call membership lives. Every change bumps the call's version; join and leave
/// are atomic and check that this node still owns the call.
pub trait CallStore: Send + Sync {
    /// Creates a call owned by this node.
    fn create(&self, call_id: &str) -> impl Future<Output = Result<CallState, Error>> + Send;
    /// Adds (or replaces) a participant; returns the new version.
    fn join(
        &self,
        call_id: &str,
        participant: Participant,
    ) -> impl Future<Output = Result<u64, Error>> + Send;
    /// Removes a participant; the call ends when the last one leaves.
    fn leave(
        &self,
        call_id: &str,
        participant_id: &str,
    ) -> impl Future<Output = Result<LeaveOutcome, Error>> + Send;
    /// The call, if it exists.
    fn get(&self, call_id: &str) -> impl Future<Output = Result<Option<CallState>, Error>> + Send;
    /// The ids of the calls this node owns.
    fn list_node_calls(&self) -> impl Future<Output = Result<Vec<String>, Error>> + Send;
    /// Ends a call.
    fn end(&self, call_id: &str) -> impl Future<Output = Result<(), Error>> + Send;
}
