//! The write-behind replicator as a plain state machine: which change to write, when
//! the hub must write everything back, which calls to drop. No I/O here: the task in
//! `write_behind` feeds it events (a queued change, the outcome of a write, a health
//! change) and performs what it answers; the hub reports overflows and ended calls.

use std::collections::HashSet;

use secureconnect_redis_fallback::Health;

use crate::error::{Error, ErrorKind};
use crate::model::Participant;

/// A change to write behind to Redis.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Op {
    Create(String),
    Join(String, Participant),
    Leave(String, String),
    End(String),
}

impl Op {
    /// The call it changes.
    pub(super) fn call(&self) -> &str {
        match self {
            Self::Create(call) | Self::Join(call, _) | Self::Leave(call, _) | Self::End(call) => {
                call
            }
        }
    }
}

/// How a write to Redis went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Written {
    Done,
    /// No such call in Redis.
    NotFound,
    /// Another node owns the call now.
    NotOwner,
    /// Redis is unavailable or refused the command.
    Failed {
        unavailable: bool,
    },
}

impl Written {
    pub(super) fn of<T>(result: &Result<T, Error>) -> Self {
        match result {
            Ok(_) => Self::Done,
            Err(e) => match e.kind() {
                ErrorKind::NotFound => Self::NotFound,
                ErrorKind::NotOwner => Self::NotOwner,
                _ => Self::Failed {
                    unavailable: e.is_unavailable(),
                },
            },
        }
    }
}

/// What to do after a change was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AfterWrite {
    /// Nothing more.
    Keep,
    /// Another node owns the call: drop it from memory.
    DropLocal,
    /// The write failed and the hub is now marked for a full write-back; `report`:
    /// log it (Redis refused the command rather than being unavailable).
    Failed { report: bool },
}

/// What to do after a call was put back during a full write-back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AfterPut {
    /// Put the next call.
    Next,
    /// Another node owns the call: drop it from memory, then put the next call.
    DropLocal,
    /// Stop; the write-back runs again later.
    Abort,
}

/// The replication state of a hub: whether Redis misses changes (dirty, so a full
/// write-back is due once Redis is healthy) and which calls ended meanwhile.
#[derive(Debug, Default)]
pub(super) struct Replicator {
    dirty: bool,
    ended_while_dirty: HashSet<String>,
}

impl Replicator {
    /// Whether changes are waiting for a full write-back.
    pub(super) fn needs_write_back(&self) -> bool {
        self.dirty
    }

    /// The hub could not queue a change: Redis gets everything in one write-back.
    pub(super) fn overflowed(&mut self) {
        self.dirty = true;
    }

    /// A call ended in memory (its last participant left).
    pub(super) fn call_ended(&mut self, call: &str) {
        if self.dirty {
            self.ended_while_dirty.insert(call.to_owned());
        }
    }

    /// The client's health changed; `health` is its value now. Redis may come back
    /// empty (a restart without persistence), with or without writes failing
    /// meanwhile: once degraded, everything is written back.
    pub(super) fn health_changed(&mut self, health: Health) {
        if health == Health::Degraded {
            self.dirty = true;
        }
    }

    /// The next queued change: the change to write now, or `None` when a full
    /// write-back is due anyway (then a call that `in_memory` no longer holds is
    /// remembered, to be ended in Redis).
    pub(super) fn queued(&mut self, op: Op, in_memory: impl FnOnce(&str) -> bool) -> Option<Op> {
        if !self.dirty {
            return Some(op);
        }
        if let Op::End(call) | Op::Leave(call, _) = &op {
            if !in_memory(call) {
                self.ended_while_dirty.insert(call.clone());
            }
        }
        None
    }

    /// A queued change was written.
    pub(super) fn written(&mut self, written: Written) -> AfterWrite {
        match written {
            Written::Done | Written::NotFound => AfterWrite::Keep,
            Written::NotOwner => AfterWrite::DropLocal,
            Written::Failed { unavailable } => {
                self.dirty = true;
                AfterWrite::Failed {
                    report: !unavailable,
                }
            }
        }
    }

    /// Whether a full write-back is due now, given the client's health: then the calls
    /// to end in Redis first (unless memory holds them again), taken out of the state.
    pub(super) fn write_back_due(&mut self, health: Health) -> Option<Vec<String>> {
        (self.dirty && health == Health::Healthy).then(|| self.ended_while_dirty.drain().collect())
    }

    /// During a write-back, a call was ended in Redis: whether to go on.
    pub(super) fn ended(written: Written) -> bool {
        !matches!(written, Written::Failed { .. })
    }

    /// During a write-back, a call was put.
    pub(super) fn put(written: Written) -> AfterPut {
        match written {
            Written::Done => AfterPut::Next,
            Written::NotOwner => AfterPut::DropLocal,
            Written::NotFound | Written::Failed { .. } => AfterPut::Abort,
        }
    }

    /// Every call was put: Redis has everything.
    pub(super) fn written_back(&mut self) {
        self.dirty = false;
    }

    /// Whether to refresh the lease and the calls' TTLs now.
    pub(super) fn heartbeat_due(health: Health) -> bool {
        health == Health::Healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(call: &str) -> Op {
        Op::Leave(call.into(), "p1".into())
    }

    #[test]
    fn a_clean_replicator_writes_every_change_and_never_writes_back() {
        let mut r = Replicator::default();
        assert_eq!(r.queued(op("c"), |_| false), Some(op("c")));
        assert_eq!(r.written(Written::Done), AfterWrite::Keep);
        assert_eq!(r.written(Written::NotFound), AfterWrite::Keep);
        r.call_ended("c");
        r.health_changed(Health::Recovering);
        r.health_changed(Health::Healthy);
        assert!(!r.needs_write_back());
        assert_eq!(r.write_back_due(Health::Healthy), None);
    }

    #[test]
    fn a_call_adopted_elsewhere_is_dropped_locally_without_a_write_back() {
        let mut r = Replicator::default();
        assert_eq!(r.written(Written::NotOwner), AfterWrite::DropLocal);
        assert!(!r.needs_write_back());
    }

    #[test]
    fn a_failed_write_marks_for_write_back_and_reports_only_refusals() {
        let mut r = Replicator::default();
        assert_eq!(
            r.written(Written::Failed { unavailable: true }),
            AfterWrite::Failed { report: false }
        );
        assert!(r.needs_write_back());
        let mut r = Replicator::default();
        assert_eq!(
            r.written(Written::Failed { unavailable: false }),
            AfterWrite::Failed { report: true }
        );
        assert!(r.needs_write_back());
    }

    #[test]
    fn an_overflow_or_a_degraded_client_marks_for_write_back() {
        let mut r = Replicator::default();
        r.overflowed();
        assert!(r.needs_write_back());
        let mut r = Replicator::default();
        r.health_changed(Health::Degraded);
        assert!(r.needs_write_back());
    }

    #[test]
    fn while_dirty_changes_are_not_written_and_ended_calls_are_remembered() {
        let mut r = Replicator::default();
        r.overflowed();
        assert_eq!(r.queued(Op::Create("new".into()), |_| false), None);
        assert_eq!(r.queued(Op::End("gone".into()), |_| false), None);
        assert_eq!(r.queued(op("left-empty"), |_| false), None);
        assert_eq!(r.queued(op("still-busy"), |_| true), None);
        r.call_ended("last-leave");
        // Not while degraded or recovering.
        assert_eq!(r.write_back_due(Health::Degraded), None);
        assert_eq!(r.write_back_due(Health::Recovering), None);
        let mut ended = r.write_back_due(Health::Healthy).unwrap_or_default();
        ended.sort();
        assert_eq!(ended, ["gone", "last-leave", "left-empty"]);
        // Taken out: an interrupted write-back does not end them twice.
        assert_eq!(r.write_back_due(Health::Healthy), Some(Vec::new()));
        r.written_back();
        assert!(!r.needs_write_back());
        assert_eq!(r.write_back_due(Health::Healthy), None);
    }

    #[test]
    fn a_write_back_goes_on_past_gone_calls_and_stops_on_failures() {
        assert!(Replicator::ended(Written::Done));
        assert!(Replicator::ended(Written::NotFound));
        assert!(Replicator::ended(Written::NotOwner));
        assert!(!Replicator::ended(Written::Failed { unavailable: true }));
        assert_eq!(Replicator::put(Written::Done), AfterPut::Next);
        assert_eq!(Replicator::put(Written::NotOwner), AfterPut::DropLocal);
        assert_eq!(
            Replicator::put(Written::Failed { unavailable: false }),
            AfterPut::Abort
        );
        // An interrupted write-back leaves the hub dirty: it runs again.
        let mut r = Replicator::default();
        r.overflowed();
        assert!(r.write_back_due(Health::Healthy).is_some());
        assert!(r.needs_write_back());
    }

    #[test]
    fn a_call_ending_during_a_write_back_is_kept_for_the_next_one() {
        let mut r = Replicator::default();
        r.overflowed();
        assert_eq!(r.write_back_due(Health::Healthy), Some(Vec::new()));
        r.call_ended("late");
        // This write-back is interrupted; the next one ends the call.
        assert_eq!(
            r.write_back_due(Health::Healthy),
            Some(vec!["late".to_owned()])
        );
    }

    #[test]
    fn heartbeats_only_while_healthy() {
        assert!(Replicator::heartbeat_due(Health::Healthy));
        assert!(!Replicator::heartbeat_due(Health::Recovering));
        assert!(!Replicator::heartbeat_due(Health::Degraded));
    }

    #[test]
    fn written_classifies_errors_by_kind() {
        assert_eq!(Written::of(&Ok::<(), Error>(())), Written::Done);
        assert_eq!(
            Written::of::<()>(&Err(Error::not_found("c"))),
            Written::NotFound
        );
        assert_eq!(
            Written::of::<()>(&Err(Error::not_owner("c"))),
            Written::NotOwner
        );
        assert_eq!(
            Written::of::<()>(&Err(Error::corrupt("c", "x".into()))),
            Written::Failed { unavailable: false }
        );
    }
}
