//! The write-behind replicator as a plain state machine: the one owner of what reaches
//! Redis. No I/O, no clock, no lock here: the hub feeds it the changes it could not
//! queue ([`Event::Dropped`]); the task in `write_behind` feeds it everything else
//! (queued changes, the outcome of each write, the client's health, the heartbeat
//! timer, each step of a full write-back) and performs the [`Action`]s it answers.
//!
//! ```text
//!              a write fails, a change is dropped,
//!              the client degrades
//!   Streaming ───────────────────────────────────► Dirty { ended }
//!       ▲                                               │ healthy: write back
//!       │  the write-back went through, nothing         │ (end `ended` and the calls
//!       │  changed meanwhile                            ▼  of this node's set that
//!       └─────────────────────────────────────── write-back   memory lacks, put the rest)
//! ```
//!
//! While `Dirty`, queued changes are not written one by one (the write-back covers
//! them), but every call that ended is kept in `ended` until Redis confirms it is gone:
//! an end can never be lost, whether its own write failed, it waited behind a write
//! that failed, or the queue was full.

use std::collections::BTreeSet;

use secureconnect_redis_fallback::Health;

use crate::error::{Error, ErrorKind};
use crate::model::Participant;

/// A change to write behind to Redis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Op {
    /// A call was created.
    Create(String),
    /// A participant joined a call.
    Join(String, Participant),
    /// A participant left a call that goes on.
    Leave(String, String),
    /// A call ended in memory (`end()`, or its last participant left): it must end in
    /// Redis too.
    Ended(String),
}

impl Op {
    /// The call it changes.
    pub(super) fn call(&self) -> &str {
        match self {
            Self::Create(call) | Self::Join(call, _) | Self::Leave(call, _) | Self::Ended(call) => {
                call
            }
        }
    }
}

/// How a write to Redis went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Written {
    /// Done.
    Done,
    /// No such call in Redis.
    NotFound,
    /// Another node owns the call now (or this node never held it).
    NotOwner,
    /// Redis is unavailable or refused the command.
    Failed {
        /// Redis is unavailable (rather than refusing the command).
        unavailable: bool,
    },
}

impl Written {
    /// How a store call went, from its result.
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

/// What the replicator is told.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Event {
    /// The next change in the queue.
    Queued(Op),
    /// The hub could not queue this change (the queue is full).
    Dropped(Op),
    /// The change answered by the last [`Action::Write`] was written, or not.
    Written(Written),
    /// The client's health is now this (at start and on every change).
    Health(Health),
    /// The heartbeat period passed (the heartbeat itself runs on a task of its own):
    /// a failed write-back is retried on it.
    Heartbeat,
    /// During a write-back: the calls of this node's set in Redis that memory does
    /// not hold.
    Scanned(Vec<String>),
    /// During a write-back: a call to end was ended in Redis, or not.
    EndWritten(String, Written),
    /// During a write-back: a call to end is in memory again; the put covers it.
    Superseded(String),
    /// During a write-back: a call in memory was put, or not.
    PutWritten(String, Written),
    /// During a write-back: a read failed (the scan of this node's set).
    ReadFailed,
    /// Every call in memory was put; `health_moved`: the client's health changed
    /// while the write-back ran (Redis may have lost what was written).
    PutsDone {
        /// The client's health changed meanwhile.
        health_moved: bool,
    },
}

/// What the replicator asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Action {
    /// Write this change, then report [`Event::Written`].
    Write(Op),
    /// Another node owns this call: drop it from memory.
    DropLocal(String),
    /// Write everything back: drain the queue (feeding each change as
    /// [`Event::Queued`]), scan this node's set ([`Event::Scanned`]), end the calls
    /// answered by [`Action::End`], put every call in memory ([`Event::PutWritten`]),
    /// then report [`Event::PutsDone`].
    WriteBack,
    /// End these calls in Redis (unless memory holds them again), each reported by
    /// [`Event::EndWritten`] or [`Event::Superseded`].
    End(Vec<String>),
    /// Stop the write-back: the rest stays queued for the next attempt.
    Stop,
}

/// The progress of a full write-back while dirty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pass {
    /// Due as soon as the client is healthy (on any event).
    Ready,
    /// Running; `stale`: something changed meanwhile that it may not cover, so another
    /// one is due after it; `refused`: Redis refused some of its writes (not an
    /// outage: a key of the wrong type, an ACL), which the next attempt retries.
    Running {
        /// Another write-back is due after this one.
        stale: bool,
        /// Redis refused one of its writes.
        refused: bool,
    },
    /// The last attempt failed: wait for the next health change or heartbeat.
    Failed,
}

/// The replication state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// Every change is written as it comes.
    Streaming,
    /// Redis misses changes: a full write-back is due once the client is healthy.
    Dirty {
        /// Calls that ended in memory and are not yet known to be gone from Redis.
        ended: BTreeSet<String>,
        /// Where the write-back stands.
        pass: Pass,
    },
}

/// The write in flight in [`State::Streaming`].
#[derive(Clone, Debug, PartialEq, Eq)]
struct InFlight {
    call: String,
    ended: bool,
}

/// A hub's replication to Redis. Feed it with [`Replicator::step`].
#[derive(Debug)]
pub(super) struct Replicator {
    state: State,
    health: Health,
    in_flight: Option<InFlight>,
}

impl Default for Replicator {
    fn default() -> Self {
        Self {
            state: State::Streaming,
            health: Health::Healthy,
            in_flight: None,
        }
    }
}

impl Replicator {
    /// The state.
    #[cfg(test)]
    pub(super) fn state(&self) -> &State {
        &self.state
    }

    /// Whether Redis misses changes (a full write-back is due or running).
    pub(super) fn needs_write_back(&self) -> bool {
        matches!(self.state, State::Dirty { .. })
    }

    /// Goes dirty (or stays), remembering `ended` if given; a running write-back is
    /// marked stale.
    fn dirty(&mut self, ended: Option<String>, pass: Pass) {
        match &mut self.state {
            State::Streaming => {
                self.state = State::Dirty {
                    ended: ended.into_iter().collect(),
                    pass,
                };
            }
            State::Dirty {
                ended: set,
                pass: p,
            } => {
                set.extend(ended);
                match p {
                    Pass::Running { stale, .. } => *stale = true,
                    // Redis just failed a write: wait for it before writing back.
                    Pass::Ready if pass == Pass::Failed => *p = Pass::Failed,
                    Pass::Ready | Pass::Failed => {}
                }
            }
        }
    }

    /// Starts a write-back if one is due and the client is healthy.
    fn write_back_if_due(&mut self, retry_failed: bool, actions: &mut Vec<Action>) {
        if self.health != Health::Healthy {
            return;
        }
        if let State::Dirty { pass, .. } = &mut self.state {
            let due = match pass {
                Pass::Ready => true,
                Pass::Failed => retry_failed,
                Pass::Running { .. } => false,
            };
            if due {
                *pass = Pass::Running {
                    stale: false,
                    refused: false,
                };
                actions.push(Action::WriteBack);
            }
        }
    }

    /// The write-back stopped: the rest stays queued.
    fn fail_pass(&mut self) {
        if let State::Dirty { pass, .. } = &mut self.state {
            *pass = Pass::Failed;
        }
    }

    /// A write of the write-back failed: an outage stops it (the rest stays queued);
    /// a refusal of one call's write does not hold up the others' (the pass goes on,
    /// and is retried once it is done).
    fn failed_in_pass(&mut self, unavailable: bool, actions: &mut Vec<Action>) {
        if unavailable {
            self.fail_pass();
            actions.push(Action::Stop);
        } else if let State::Dirty {
            pass: Pass::Running { refused, .. },
            ..
        } = &mut self.state
        {
            *refused = true;
        }
    }

    /// Feeds one event; answers what to do, in order.
    pub(super) fn step(&mut self, event: Event) -> Vec<Action> {
        let mut actions = Vec::new();
        match event {
            Event::Queued(op) => match &mut self.state {
                State::Streaming => {
                    self.in_flight = Some(InFlight {
                        call: op.call().to_owned(),
                        ended: matches!(op, Op::Ended(_)),
                    });
                    actions.push(Action::Write(op));
                }
                State::Dirty { ended, .. } => {
                    // Covered by the write-back; only an end needs remembering.
                    if let Op::Ended(call) = op {
                        ended.insert(call);
                    }
                    self.write_back_if_due(false, &mut actions);
                }
            },
            Event::Dropped(op) => {
                let ended = match op {
                    Op::Ended(call) => Some(call),
                    _ => None,
                };
                self.dirty(ended, Pass::Ready);
            }
            Event::Written(written) => {
                let Some(InFlight { call, ended }) = self.in_flight.take() else {
                    return actions;
                };
                match written {
                    Written::Done => {}
                    // The call is gone from Redis, or held elsewhere: it stays ended.
                    Written::NotFound | Written::NotOwner if ended => {}
                    Written::NotOwner => actions.push(Action::DropLocal(call)),
                    // Redis lacks a call that memory has (expired, or Redis restarted
                    // empty): put it back.
                    Written::NotFound => self.dirty(None, Pass::Ready),
                    // Unavailable: wait for the client's recovery (or the heartbeat).
                    // Refused: a write-back settles it (a create that meets a call
                    // with its id: the put keeps it, or finds its real owner).
                    Written::Failed { unavailable } => {
                        let pass = if unavailable {
                            Pass::Failed
                        } else {
                            Pass::Ready
                        };
                        self.dirty(ended.then_some(call), pass);
                    }
                }
                self.write_back_if_due(false, &mut actions);
            }
            Event::Health(health) => {
                self.health = health;
                match health {
                    // Redis may come back empty: once degraded, everything is written
                    // back, with or without writes failing meanwhile.
                    Health::Degraded => self.dirty(None, Pass::Ready),
                    Health::Recovering => {}
                    Health::Healthy => self.write_back_if_due(true, &mut actions),
                }
            }
            Event::Heartbeat => self.write_back_if_due(true, &mut actions),
            Event::Scanned(orphans) => {
                if let State::Dirty { ended, .. } = &mut self.state {
                    ended.extend(orphans);
                    actions.push(Action::End(ended.iter().cloned().collect()));
                }
            }
            Event::EndWritten(call, written) => match written {
                Written::Done | Written::NotFound | Written::NotOwner => {
                    if let State::Dirty { ended, .. } = &mut self.state {
                        ended.remove(&call);
                    }
                }
                // The call stays in `ended` either way.
                Written::Failed { unavailable } => self.failed_in_pass(unavailable, &mut actions),
            },
            Event::Superseded(call) => {
                if let State::Dirty { ended, .. } = &mut self.state {
                    ended.remove(&call);
                }
            }
            Event::PutWritten(call, written) => match written {
                Written::Done => {}
                // Adopted by another node, or ended there: not this node's any more.
                Written::NotOwner | Written::NotFound => actions.push(Action::DropLocal(call)),
                Written::Failed { unavailable } => self.failed_in_pass(unavailable, &mut actions),
            },
            Event::ReadFailed => self.fail_pass(),
            Event::PutsDone { health_moved } => {
                if let State::Dirty { ended, pass } = &mut self.state {
                    if matches!(pass, Pass::Running { refused: true, .. }) {
                        // Retried on the next heartbeat or health change, not at once.
                        *pass = Pass::Failed;
                        return actions;
                    }
                    let stale = matches!(pass, Pass::Running { stale: true, .. });
                    if stale || health_moved || !ended.is_empty() {
                        *pass = Pass::Ready;
                        // Health events and queued changes start the next one.
                        if !health_moved {
                            self.write_back_if_due(false, &mut actions);
                        }
                    } else {
                        self.state = State::Streaming;
                    }
                }
            }
        }
        actions
    }
}

#[cfg(test)]
mod tests;
