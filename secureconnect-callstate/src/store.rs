//! The store interface.

use std::future::Future;

use crate::error::CallError;
use crate::model::{CallState, Participant};

/// What a leave did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    fn create(&self, call_id: &str) -> impl Future<Output = Result<CallState, CallError>> + Send;
    /// Adds (or replaces) a participant; returns the new version.
    fn join(
        &self,
        call_id: &str,
        participant: Participant,
    ) -> impl Future<Output = Result<u64, CallError>> + Send;
    /// Removes a participant; the call ends when the last one leaves.
    fn leave(
        &self,
        call_id: &str,
        participant_id: &str,
    ) -> impl Future<Output = Result<LeaveOutcome, CallError>> + Send;
    /// The call, if it exists.
    fn get(
        &self,
        call_id: &str,
    ) -> impl Future<Output = Result<Option<CallState>, CallError>> + Send;
    /// The ids of the calls this node owns.
    fn list_node_calls(&self) -> impl Future<Output = Result<Vec<String>, CallError>> + Send;
    /// Ends a call.
    fn end(&self, call_id: &str) -> impl Future<Output = Result<(), CallError>> + Send;
}
