//! Every interleaving of changes, writes, failures and health changes that matters,
//! without Redis.

use super::*;
use crate::model::ParticipantState;

const DOWN: Written = Written::Failed { unavailable: true };
const REFUSED: Written = Written::Failed { unavailable: false };

fn join(call: &str) -> Op {
    Op::Join(
        call.into(),
        Participant {
            id: "p1".into(),
            user_id: "u1".into(),
            token_hash: String::new(),
            joined_at_ms: 0,
            state: ParticipantState::Connected,
        },
    )
}

fn leave(call: &str) -> Op {
    Op::Leave(call.into(), "p1".into())
}

fn ended(call: &str) -> Op {
    Op::Ended(call.into())
}

fn ended_set(r: &Replicator) -> Vec<String> {
    match r.state() {
        State::Dirty { ended, .. } => ended.iter().cloned().collect(),
        State::Streaming => Vec::new(),
    }
}

/// Writes `op` while streaming.
fn write(r: &mut Replicator, op: Op, written: Written) -> Vec<Action> {
    assert_eq!(r.step(Event::Queued(op.clone())), [Action::Write(op)]);
    r.step(Event::Written(written))
}

/// Runs one write-back from its start: `orphans` scanned, every end done, every put
/// done; answers what `PutsDone` answers.
fn write_back(r: &mut Replicator, orphans: &[&str], puts: &[&str]) -> Vec<Action> {
    let scanned = r.step(Event::Scanned(
        orphans.iter().map(|c| c.to_string()).collect(),
    ));
    let [Action::End(calls)] = scanned.as_slice() else {
        panic!("expected the calls to end: {scanned:?}");
    };
    for call in calls.clone() {
        assert_eq!(r.step(Event::EndWritten(call, Written::Done)), []);
    }
    for call in puts {
        assert_eq!(
            r.step(Event::PutWritten(call.to_string(), Written::Done)),
            []
        );
    }
    r.step(Event::PutsDone {
        health_moved: false,
    })
}

fn degrade_and_recover(r: &mut Replicator) -> Vec<Action> {
    assert_eq!(r.step(Event::Health(Health::Degraded)), []);
    assert_eq!(r.step(Event::Health(Health::Recovering)), []);
    r.step(Event::Health(Health::Healthy))
}

#[test]
fn while_streaming_every_change_is_written_as_it_comes() {
    let mut r = Replicator::default();
    assert_eq!(write(&mut r, Op::Create("c".into()), Written::Done), []);
    assert_eq!(write(&mut r, join("c"), Written::Done), []);
    assert_eq!(write(&mut r, leave("c"), Written::Done), []);
    assert_eq!(write(&mut r, ended("c"), Written::Done), []);
    // An end that finds nothing (or a call held elsewhere) is done too.
    assert_eq!(write(&mut r, ended("d"), Written::NotFound), []);
    assert_eq!(write(&mut r, ended("e"), Written::NotOwner), []);
    assert_eq!(r.step(Event::Health(Health::Recovering)), []);
    assert_eq!(r.step(Event::Health(Health::Healthy)), []);
    assert_eq!(r.state(), &State::Streaming);
    assert!(!r.needs_write_back());
}

#[test]
fn a_call_adopted_elsewhere_is_dropped_locally_without_a_write_back() {
    let mut r = Replicator::default();
    assert_eq!(
        write(&mut r, join("c"), Written::NotOwner),
        [Action::DropLocal("c".into())]
    );
    assert_eq!(r.state(), &State::Streaming);
    // But an end refused as not owned drops nothing: memory may hold a new call with
    // the same id by now.
    assert_eq!(write(&mut r, ended("c"), Written::NotOwner), []);
}

#[test]
fn a_change_redis_lacks_the_call_for_brings_a_write_back() {
    let mut r = Replicator::default();
    assert_eq!(
        write(&mut r, join("c"), Written::NotFound),
        [Action::WriteBack]
    );
    assert_eq!(write_back(&mut r, &[], &["c"]), []);
    assert_eq!(r.state(), &State::Streaming);
}

#[test]
fn a_write_that_fails_or_times_out_waits_for_redis_then_writes_back() {
    let mut r = Replicator::default();
    assert_eq!(write(&mut r, join("c"), DOWN), []);
    assert!(r.needs_write_back());
    // Changes queued behind it are not written one by one, nor do they start a
    // write-back while Redis is away.
    assert_eq!(r.step(Event::Queued(leave("c"))), []);
    assert_eq!(r.step(Event::Queued(Op::Create("d".into()))), []);
    assert_eq!(r.step(Event::Heartbeat), [Action::WriteBack]);
    // (That attempt fails on its scan.)
    assert_eq!(r.step(Event::ReadFailed), []);
    assert_eq!(r.step(Event::Queued(join("d"))), []);
    assert_eq!(degrade_and_recover(&mut r), [Action::WriteBack]);
    assert_eq!(write_back(&mut r, &[], &["c", "d"]), []);
    assert_eq!(r.state(), &State::Streaming);
}

#[test]
fn a_refused_write_writes_back_at_once() {
    let mut r = Replicator::default();
    assert_eq!(
        write(&mut r, Op::Create("c".into()), REFUSED),
        [Action::WriteBack]
    );
    assert_eq!(write_back(&mut r, &[], &["c"]), []);
    assert!(!r.needs_write_back());
}

#[test]
fn an_end_that_is_itself_the_failing_write_is_ended_by_the_write_back() {
    for failure in [DOWN, REFUSED] {
        let mut r = Replicator::default();
        let _ = write(&mut r, ended("gone"), failure);
        assert_eq!(ended_set(&r), ["gone"]);
        let _ = degrade_and_recover(&mut r);
        assert_eq!(
            r.step(Event::Scanned(Vec::new())),
            [Action::End(vec!["gone".into()])]
        );
        // Redis did not answer yet: the end stays due.
        assert_eq!(
            r.step(Event::EndWritten("gone".into(), DOWN)),
            [Action::Stop]
        );
        assert_eq!(ended_set(&r), ["gone"]);
        assert_eq!(r.step(Event::Heartbeat), [Action::WriteBack]);
        assert_eq!(write_back(&mut r, &[], &[]), []);
        assert_eq!(r.state(), &State::Streaming);
    }
}

#[test]
fn an_end_queued_behind_a_timeout_is_kept_when_the_queue_is_drained() {
    let mut r = Replicator::default();
    let _ = write(&mut r, join("c"), DOWN);
    // The queue is drained into the write-back: the end is kept, the rest covered.
    assert_eq!(r.step(Event::Queued(ended("c"))), []);
    assert_eq!(r.step(Event::Queued(Op::Create("x".into()))), []);
    assert_eq!(r.step(Event::Queued(ended("x"))), []);
    assert_eq!(ended_set(&r), ["c", "x"]);
    assert_eq!(r.step(Event::Health(Health::Healthy)), [Action::WriteBack]);
    assert_eq!(
        r.step(Event::Scanned(vec!["orphan".into()])),
        [Action::End(vec!["c".into(), "orphan".into(), "x".into()])]
    );
}

#[test]
fn a_full_queue_still_ends_the_call() {
    let mut r = Replicator::default();
    // The writer is busy with a change that will succeed; the queue overflows.
    assert_eq!(
        r.step(Event::Queued(join("busy"))),
        [Action::Write(join("busy"))]
    );
    assert_eq!(r.step(Event::Dropped(join("c"))), []);
    assert_eq!(r.step(Event::Dropped(ended("gone"))), []);
    assert!(r.needs_write_back());
    // The write in flight succeeds; Redis is healthy: write back now.
    assert_eq!(r.step(Event::Written(Written::Done)), [Action::WriteBack]);
    assert_eq!(
        r.step(Event::Scanned(Vec::new())),
        [Action::End(vec!["gone".into()])]
    );
}

#[test]
fn a_dropped_end_while_the_end_in_flight_fails_keeps_both() {
    let mut r = Replicator::default();
    assert_eq!(
        r.step(Event::Queued(ended("a"))),
        [Action::Write(ended("a"))]
    );
    assert_eq!(r.step(Event::Dropped(ended("b"))), []);
    assert_eq!(r.step(Event::Written(DOWN)), []);
    assert_eq!(ended_set(&r), ["a", "b"]);
}

#[test]
fn health_going_degraded_marks_dirty_even_without_failed_writes() {
    let mut r = Replicator::default();
    assert_eq!(r.step(Event::Health(Health::Degraded)), []);
    assert!(r.needs_write_back());
    // Nothing while degraded or recovering: not a heartbeat, not a write-back.
    assert_eq!(r.step(Event::Heartbeat), []);
    assert_eq!(r.step(Event::Queued(join("c"))), []);
    assert_eq!(r.step(Event::Health(Health::Recovering)), []);
    assert_eq!(r.step(Event::Heartbeat), []);
    // Back to degraded from recovering, then healthy.
    assert_eq!(r.step(Event::Health(Health::Degraded)), []);
    assert_eq!(r.step(Event::Health(Health::Healthy)), [Action::WriteBack]);
    assert_eq!(write_back(&mut r, &[], &["c"]), []);
    assert!(!r.needs_write_back());
}

#[test]
fn a_client_that_starts_degraded_writes_back_once_healthy() {
    let mut r = Replicator::default();
    assert_eq!(r.step(Event::Health(Health::Degraded)), []);
    assert_eq!(r.step(Event::Queued(Op::Create("c".into()))), []);
    assert_eq!(r.step(Event::Health(Health::Healthy)), [Action::WriteBack]);
}

#[test]
fn a_write_back_that_fails_half_way_keeps_the_remaining_work() {
    let mut r = Replicator::default();
    let _ = r.step(Event::Dropped(ended("a")));
    let _ = r.step(Event::Dropped(ended("b")));
    let _ = r.step(Event::Dropped(ended("c")));
    assert_eq!(r.step(Event::Heartbeat), [Action::WriteBack]);
    let _ = r.step(Event::Scanned(vec!["d".into()]));
    assert_eq!(r.step(Event::EndWritten("a".into(), Written::Done)), []);
    assert_eq!(r.step(Event::EndWritten("b".into(), Written::NotFound)), []);
    assert_eq!(r.step(Event::EndWritten("c".into(), DOWN)), [Action::Stop]);
    assert_eq!(ended_set(&r), ["c", "d"], "nothing dropped");
    // A failed attempt waits for health or the heartbeat, not for the next change.
    assert_eq!(r.step(Event::Queued(join("e"))), []);
    assert_eq!(r.step(Event::Heartbeat), [Action::WriteBack]);
    assert_eq!(
        r.step(Event::Scanned(Vec::new())),
        [Action::End(vec!["c".into(), "d".into()])]
    );
    assert_eq!(r.step(Event::Superseded("c".into())), []);
    assert_eq!(r.step(Event::EndWritten("d".into(), Written::Done)), []);
    // A put that fails for an outage: stop; the next attempt puts everything again.
    assert_eq!(r.step(Event::PutWritten("e".into(), DOWN)), [Action::Stop]);
    assert!(r.needs_write_back());
    assert_eq!(degrade_and_recover(&mut r), [Action::WriteBack]);
    assert_eq!(write_back(&mut r, &[], &["e"]), []);
    assert_eq!(r.state(), &State::Streaming);
}

/// One call whose writes Redis refuses (a key of the wrong type, an ACL) holds up no
/// other call: the write-back goes on past it, keeps its end, and is retried on the
/// next heartbeat (not at once, not forever in a loop).
#[test]
fn a_refused_call_does_not_hold_up_the_write_back_of_the_others() {
    let mut r = Replicator::default();
    let _ = r.step(Event::Dropped(ended("bad-end")));
    let _ = r.step(Event::Dropped(ended("good-end")));
    assert_eq!(r.step(Event::Heartbeat), [Action::WriteBack]);
    let _ = r.step(Event::Scanned(Vec::new()));
    assert_eq!(r.step(Event::EndWritten("bad-end".into(), REFUSED)), []);
    assert_eq!(
        r.step(Event::EndWritten("good-end".into(), Written::Done)),
        []
    );
    assert_eq!(r.step(Event::PutWritten("bad".into(), REFUSED)), []);
    assert_eq!(r.step(Event::PutWritten("good".into(), Written::Done)), []);
    assert_eq!(
        r.step(Event::PutsDone {
            health_moved: false
        }),
        []
    );
    assert_eq!(ended_set(&r), ["bad-end"], "the refused end is kept");
    assert!(r.needs_write_back());
    // Not retried on the next change, but on the heartbeat; once Redis takes the
    // writes, streaming resumes.
    assert_eq!(r.step(Event::Queued(join("good"))), []);
    assert_eq!(r.step(Event::Heartbeat), [Action::WriteBack]);
    assert_eq!(write_back(&mut r, &[], &["bad", "good"]), []);
    assert_eq!(r.state(), &State::Streaming);
}

#[test]
fn a_put_refused_as_not_owned_or_gone_drops_the_call_and_goes_on() {
    let mut r = Replicator::default();
    let _ = r.step(Event::Dropped(join("a")));
    assert_eq!(r.step(Event::Heartbeat), [Action::WriteBack]);
    assert_eq!(
        r.step(Event::Scanned(Vec::new())),
        [Action::End(Vec::new())]
    );
    assert_eq!(
        r.step(Event::PutWritten("a".into(), Written::NotOwner)),
        [Action::DropLocal("a".into())]
    );
    assert_eq!(
        r.step(Event::PutWritten("b".into(), Written::NotFound)),
        [Action::DropLocal("b".into())]
    );
    assert_eq!(
        r.step(Event::PutsDone {
            health_moved: false
        }),
        []
    );
    assert!(!r.needs_write_back());
}

#[test]
fn a_call_ending_during_a_write_back_is_ended_by_the_next_one() {
    let mut r = Replicator::default();
    let _ = r.step(Event::Health(Health::Degraded));
    assert_eq!(r.step(Event::Health(Health::Healthy)), [Action::WriteBack]);
    assert_eq!(
        r.step(Event::Scanned(Vec::new())),
        [Action::End(Vec::new())]
    );
    // The call ends while its put is under way; the queue is full.
    assert_eq!(r.step(Event::Dropped(ended("late"))), []);
    assert_eq!(r.step(Event::PutWritten("late".into(), Written::Done)), []);
    // The put may have brought it back: another write-back, which ends it.
    assert_eq!(
        r.step(Event::PutsDone {
            health_moved: false
        }),
        [Action::WriteBack]
    );
    assert_eq!(
        r.step(Event::Scanned(Vec::new())),
        [Action::End(vec!["late".into()])]
    );
    assert_eq!(r.step(Event::EndWritten("late".into(), Written::Done)), []);
    assert_eq!(
        r.step(Event::PutsDone {
            health_moved: false
        }),
        []
    );
    assert_eq!(r.state(), &State::Streaming);
}

#[test]
fn a_call_ending_during_a_write_back_through_the_queue_is_written_after_it() {
    let mut r = Replicator::default();
    let _ = r.step(Event::Health(Health::Degraded));
    assert_eq!(r.step(Event::Health(Health::Healthy)), [Action::WriteBack]);
    assert_eq!(write_back(&mut r, &[], &["late"]), []);
    // The end queued meanwhile is written as it comes.
    assert_eq!(
        r.step(Event::Queued(ended("late"))),
        [Action::Write(ended("late"))]
    );
}

#[test]
fn health_moving_during_a_write_back_makes_it_run_again() {
    let mut r = Replicator::default();
    let _ = r.step(Event::Health(Health::Degraded));
    let _ = r.step(Event::Health(Health::Healthy));
    let _ = r.step(Event::Scanned(Vec::new()));
    // Redis restarted empty while the write-back ran: what it wrote may be gone.
    assert_eq!(r.step(Event::PutsDone { health_moved: true }), []);
    assert!(r.needs_write_back());
    assert_eq!(r.step(Event::Health(Health::Healthy)), [Action::WriteBack]);

    // Seen as an event instead: the same.
    let mut r = Replicator::default();
    let _ = r.step(Event::Health(Health::Degraded));
    let _ = r.step(Event::Health(Health::Healthy));
    assert_eq!(r.step(Event::Health(Health::Degraded)), []);
    assert_eq!(
        r.step(Event::PutsDone {
            health_moved: false
        }),
        []
    );
    assert!(r.needs_write_back());
    assert_eq!(r.step(Event::Health(Health::Healthy)), [Action::WriteBack]);
}

#[test]
fn a_write_back_is_never_started_twice() {
    let mut r = Replicator::default();
    let _ = r.step(Event::Health(Health::Degraded));
    assert_eq!(r.step(Event::Health(Health::Healthy)), [Action::WriteBack]);
    assert_eq!(r.step(Event::Health(Health::Healthy)), []);
    assert_eq!(r.step(Event::Heartbeat), []);
    assert_eq!(r.step(Event::Queued(join("c"))), []);
}

#[test]
fn a_late_outcome_without_a_write_in_flight_changes_nothing() {
    let mut r = Replicator::default();
    assert_eq!(r.step(Event::Written(DOWN)), []);
    assert_eq!(r.state(), &State::Streaming);
}

#[test]
fn the_heartbeat_period_alone_changes_nothing_while_streaming() {
    let mut r = Replicator::default();
    assert_eq!(r.step(Event::Heartbeat), []);
    let _ = r.step(Event::Health(Health::Recovering));
    assert_eq!(r.step(Event::Heartbeat), []);
    let _ = r.step(Event::Health(Health::Degraded));
    assert_eq!(r.step(Event::Heartbeat), []);
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
    assert_eq!(Written::of::<()>(&Err(Error::already_exists("c"))), REFUSED);
    assert_eq!(
        Written::of::<()>(&Err(Error::corrupt("c", "x".into()))),
        REFUSED
    );
}
