//! The in-memory call store: the same semantics as Redis, inside one process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::error::{check_id, Error};
use crate::model::{now_ms, CallState, Participant};
use crate::store::{CallStore, LeaveOutcome};

/// Calls kept in this process only. Cheap to clone; clones share the calls.
#[derive(Clone, Debug)]
pub struct MemoryCallStore {
    node: Arc<str>,
    calls: Arc<Mutex<HashMap<String, CallState>>>,
}

impl MemoryCallStore {
    /// An empty store for node `node`.
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into().into(),
            calls: Arc::default(),
        }
    }

    fn calls(&self) -> MutexGuard<'_, HashMap<String, CallState>> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts a call as it is (a recovered one, for instance).
    pub fn insert(&self, call: CallState) {
        self.calls().insert(call.id.clone(), call);
    }

    /// Inserts a call unless one with its id is here already; whether it was inserted.
    pub(crate) fn insert_if_absent(&self, call: CallState) -> bool {
        match self.calls().entry(call.id.clone()) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(call);
                true
            }
        }
    }

    /// Removes a call without any checks (lost ownership).
    pub fn remove(&self, call_id: &str) -> Option<CallState> {
        self.calls().remove(call_id)
    }

    /// Every call.
    pub fn snapshot(&self) -> Vec<CallState> {
        self.calls().values().cloned().collect()
    }

    /// Runs `f` on a call.
    pub(crate) fn with_call<T>(
        &self,
        call_id: &str,
        f: impl FnOnce(&mut CallState) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut calls = self.calls();
        let call = calls
            .get_mut(call_id)
            .ok_or_else(|| Error::not_found(call_id))?;
        f(call)
    }

    /// Removes a participant if `still` says so, asked under the calls' lock (so
    /// nothing changes in between); the call ends with its last participant, as in
    /// [`leave`](CallStore::leave). `still` is not asked when the participant is gone.
    pub(crate) fn leave_if(
        &self,
        call_id: &str,
        participant_id: &str,
        still: impl FnOnce(&Participant) -> bool,
    ) -> Result<LeaveOutcome, Error> {
        let mut calls = self.calls();
        let call = calls
            .get_mut(call_id)
            .ok_or_else(|| Error::not_found(call_id))?;
        if !call.participants.get(participant_id).is_some_and(still) {
            return Ok(LeaveOutcome {
                version: call.version,
                removed: false,
                call_ended: false,
            });
        }
        call.participants.remove(participant_id);
        call.version += 1;
        let outcome = LeaveOutcome {
            version: call.version,
            removed: true,
            call_ended: call.participants.is_empty(),
        };
        if outcome.call_ended {
            calls.remove(call_id);
        }
        Ok(outcome)
    }

    /// Ends a call if `still` says so, asked under the calls' lock; returns the call
    /// ended.
    pub(crate) fn end_if(
        &self,
        call_id: &str,
        still: impl FnOnce(&CallState) -> bool,
    ) -> Option<CallState> {
        let mut calls = self.calls();
        if calls.get(call_id).is_some_and(still) {
            calls.remove(call_id)
        } else {
            None
        }
    }

    /// The ids of the calls without participants.
    pub(crate) fn empty_calls(&self) -> Vec<String> {
        self.calls()
            .values()
            .filter(|c| c.participants.is_empty())
            .map(|c| c.id.clone())
            .collect()
    }

    /// Number of calls and of participants.
    pub fn counts(&self) -> (usize, usize) {
        let calls = self.calls();
        (
            calls.len(),
            calls.values().map(|c| c.participants.len()).sum(),
        )
    }
}

impl CallStore for MemoryCallStore {
    async fn create(&self, call_id: &str) -> Result<CallState, Error> {
        check_id(call_id)?;
        let mut calls = self.calls();
        if calls.contains_key(call_id) {
            return Err(Error::already_exists(call_id));
        }
        let call = CallState {
            id: call_id.to_owned(),
            owner: self.node.to_string(),
            epoch: 1,
            version: 1,
            created_at_ms: now_ms(),
            participants: BTreeMap::new(),
        };
        calls.insert(call_id.to_owned(), call.clone());
        Ok(call)
    }

    async fn join(&self, call_id: &str, participant: Participant) -> Result<u64, Error> {
        check_id(&participant.id)?;
        self.with_call(call_id, |call| {
            call.participants
                .insert(participant.id.clone(), participant);
            call.version += 1;
            Ok(call.version)
        })
    }

    async fn leave(&self, call_id: &str, participant_id: &str) -> Result<LeaveOutcome, Error> {
        self.leave_if(call_id, participant_id, |_| true)
    }

    async fn get(&self, call_id: &str) -> Result<Option<CallState>, Error> {
        Ok(self.calls().get(call_id).cloned())
    }

    async fn list_node_calls(&self) -> Result<Vec<String>, Error> {
        Ok(self.calls().keys().cloned().collect())
    }

    async fn end(&self, call_id: &str) -> Result<(), Error> {
        self.calls()
            .remove(call_id)
            .map(|_| ())
            .ok_or_else(|| Error::not_found(call_id))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::model::ParticipantState;

    fn participant(id: &str, state: ParticipantState) -> Participant {
        Participant {
            id: id.to_owned(),
            user_id: "u".to_owned(),
            token_hash: String::new(),
            joined_at_ms: 0,
            state,
        }
    }

    #[tokio::test]
    async fn leave_if_and_end_if_change_nothing_unless_asked_to() {
        let store = MemoryCallStore::new("node-a");
        store.create("c").await.unwrap();
        store
            .join("c", participant("a", ParticipantState::Connected))
            .await
            .unwrap();
        store
            .join("c", participant("b", ParticipantState::AwaitingRejoin))
            .await
            .unwrap();
        let away = |p: &Participant| p.state == ParticipantState::AwaitingRejoin;
        let kept = store.leave_if("c", "a", away).unwrap();
        assert!(!kept.removed && !kept.call_ended);
        assert!(!store.leave_if("c", "nobody", |_| true).unwrap().removed);
        assert!(store
            .leave_if("gone", "a", |_| true)
            .is_err_and(|e| e.is_not_found()));
        assert!(store.end_if("c", |c| c.participants.is_empty()).is_none());
        let removed = store.leave_if("c", "b", away).unwrap();
        assert!(removed.removed && !removed.call_ended);
        assert_eq!(removed.version, 4);
        // The last one: the call ends with it.
        assert!(store.leave_if("c", "a", |_| true).unwrap().call_ended);
        assert!(store.get("c").await.unwrap().is_none());
        store.create("e").await.unwrap();
        assert!(store.end_if("e", |_| false).is_none());
        assert!(store.get("e").await.unwrap().is_some());
        let ended = store.end_if("e", |c| c.participants.is_empty());
        assert_eq!(ended.map(|c| c.id).as_deref(), Some("e"));
        assert!(store.end_if("e", |_| true).is_none(), "already ended");
    }
}
