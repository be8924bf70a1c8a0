//! The health state machine without Redis: every transition of [`Machine`], and
//! [`Tracker`] publishing racing transitions consistently.

use std::sync::{Arc, Barrier};

use prometheus_client::registry::Registry;

use super::*;
use crate::classify::Failure;
use crate::error::ErrorKind;
use crate::metrics::ClientMetrics;

/// 3 recovery probes, rebuild after 2 timeouts, degrade after 4: the defaults.
fn machine() -> Machine {
    Machine::new(3, 2, 4)
}

fn healthy() -> Machine {
    let mut m = machine();
    m.step(Event::Connected);
    assert_eq!(m.health(), Health::Healthy);
    m
}

fn recovering() -> Machine {
    let mut m = healthy();
    m.step(Event::Unavailable("test"));
    m.step(Event::ProbeOk);
    m.step(Event::Reconnected);
    assert_eq!(m.health(), Health::Recovering);
    m
}

fn to(step: Step) -> Option<Health> {
    step.transition.map(|t| t.to)
}

#[test]
fn starts_degraded_and_the_first_connection_makes_it_healthy() {
    let mut m = machine();
    assert_eq!(m.health(), Health::Degraded);
    assert_eq!(m.admit(false), Err(Failure::DEGRADED));
    let step = m.step(Event::Connected);
    assert_eq!(
        step.transition,
        Some(Transition {
            from: Health::Degraded,
            to: Health::Healthy,
            reason: "connected"
        })
    );
    assert!(step.wakes_supervisor());
    assert_eq!(m.admit(true), Ok(()));
}

#[test]
fn healthy_degrades_after_consecutive_timeouts_rebuilding_first() {
    let mut m = healthy();
    assert_eq!(m.step(Event::Timeout), Step::default());
    let second = m.step(Event::Timeout);
    assert!(
        second.rebuild,
        "2 timeouts in a row: rebuild the connection"
    );
    assert!(second.transition.is_none());
    assert!(second.wakes_supervisor());
    assert!(!m.step(Event::Timeout).rebuild, "asked once until taken");
    let fourth = m.step(Event::Timeout);
    assert_eq!(to(fourth), Some(Health::Degraded));
    assert_eq!(fourth.transition.map(|t| t.reason), Some("calls timed out"));
    assert!(m.take_rebuild());
    assert!(!m.take_rebuild());
}

#[test]
fn a_reply_resets_the_timeout_count() {
    let mut m = healthy();
    for _ in 0..3 {
        m.step(Event::Timeout);
    }
    m.step(Event::Reply);
    assert_eq!(m.timeouts_in_a_row(), 0);
    for _ in 0..3 {
        assert!(m.step(Event::Timeout).transition.is_none());
    }
    assert_eq!(to(m.step(Event::Timeout)), Some(Health::Degraded));
}

#[test]
fn healthy_degrades_at_once_on_a_connection_error() {
    let mut m = healthy();
    let step = m.step(Event::Unavailable("connection error or server unavailable"));
    assert_eq!(to(step), Some(Health::Degraded));
    assert_eq!(m.admit(false), Err(Failure::DEGRADED));
    assert_eq!(Failure::DEGRADED.kind, ErrorKind::Unavailable);
}

#[test]
fn healthy_degrades_on_a_failed_probe() {
    let mut m = healthy();
    let step = m.step(Event::ProbeFailed);
    assert_eq!(to(step), Some(Health::Degraded));
    assert_eq!(step.transition.map(|t| t.reason), Some("probe failed"));
}

#[test]
fn a_successful_probe_while_healthy_or_degraded_changes_nothing() {
    let mut m = healthy();
    assert!(m.step(Event::ProbeOk).transition.is_none());
    let mut m = machine();
    assert!(m.step(Event::ProbeOk).transition.is_none());
    assert_eq!(m.health(), Health::Degraded);
}

#[test]
fn degraded_recovers_then_turns_healthy_after_n_good_probes() {
    let mut m = healthy();
    m.step(Event::Unavailable("test"));
    assert_eq!(m.step(Event::ProbeOk), Step::default());
    let step = m.step(Event::Reconnected);
    assert_eq!(
        step.transition,
        Some(Transition {
            from: Health::Degraded,
            to: Health::Recovering,
            reason: "probe succeeded"
        })
    );
    // The probe that reopened the connection counts: two more make three.
    assert!(m.step(Event::ProbeOk).transition.is_none());
    assert_eq!(m.health(), Health::Recovering);
    let step = m.step(Event::ProbeOk);
    assert_eq!(
        step.transition,
        Some(Transition {
            from: Health::Recovering,
            to: Health::Healthy,
            reason: "recovery probes succeeded"
        })
    );
}

#[test]
fn reconnected_only_moves_a_degraded_client() {
    let mut m = healthy();
    assert!(m.step(Event::Reconnected).transition.is_none());
    assert_eq!(m.health(), Health::Healthy);
    let mut m = recovering();
    assert!(m.step(Event::Reconnected).transition.is_none());
    assert_eq!(m.health(), Health::Recovering);
}

#[test]
fn recovering_admits_a_growing_share_of_calls() {
    let mut m = recovering();
    // One probe of three succeeded: one call in three goes to Redis.
    let admitted = (0..9).filter(|_| m.admit(false).is_ok()).count();
    assert_eq!(admitted, 3);
    m.step(Event::ProbeOk);
    let admitted = (0..9).filter(|_| m.admit(false).is_ok()).count();
    assert_eq!(admitted, 6);
}

#[test]
fn recovering_degrades_on_a_failed_probe_or_call() {
    let mut m = recovering();
    let step = m.step(Event::ProbeFailed);
    assert_eq!(to(step), Some(Health::Degraded));
    assert_eq!(
        step.transition.map(|t| t.reason),
        Some("probe failed while recovering")
    );

    let mut m = recovering();
    assert_eq!(
        to(m.step(Event::Unavailable("test"))),
        Some(Health::Degraded)
    );

    let mut m = recovering();
    for _ in 0..3 {
        m.step(Event::Timeout);
    }
    assert_eq!(to(m.step(Event::Timeout)), Some(Health::Degraded));
}

#[test]
fn a_good_probe_after_a_failure_in_recovery_does_not_skip_degraded() {
    // A call degraded the client while a recovery probe was on its way: the probe's
    // success must not make it healthy.
    let mut m = recovering();
    m.step(Event::ProbeOk);
    m.step(Event::Unavailable("test"));
    assert!(m.step(Event::ProbeOk).transition.is_none());
    assert_eq!(m.health(), Health::Degraded);
}

#[test]
fn refused_credentials_degrade_and_are_reported_once() {
    let mut m = healthy();
    let first = m.step(Event::AuthRefused);
    assert!(first.auth_refused);
    assert_eq!(to(first), Some(Health::Degraded));
    assert_eq!(
        first.transition.map(|t| t.reason),
        Some("authentication refused")
    );
    assert!(m.auth_failed());
    let again = m.step(Event::AuthRefused);
    assert!(!again.auth_refused, "logged once");
    assert!(again.transition.is_none());
    m.step(Event::ProbeOk);
    assert!(!m.auth_failed(), "a good probe clears it");
    assert!(m.step(Event::AuthRefused).auth_refused);
}

#[test]
fn refused_credentials_while_recovering_degrade() {
    let mut m = recovering();
    assert_eq!(to(m.step(Event::AuthRefused)), Some(Health::Degraded));
}

#[test]
fn refused_writes_refuse_writes_only_until_accepted() {
    let mut m = healthy();
    m.step(Event::Timeout);
    let step = m.step(Event::WritesRefused);
    assert_eq!(step.writes_refused, Some(true));
    assert!(step.transition.is_none(), "Redis answered: still healthy");
    assert!(step.wakes_supervisor(), "the supervisor probes writes");
    assert_eq!(m.timeouts_in_a_row(), 0, "an answer resets the timeouts");
    assert_eq!(m.admit(false), Ok(()));
    assert_eq!(m.admit(true), Err(Failure::WRITES_REFUSED));
    assert_eq!(Failure::WRITES_REFUSED.kind, ErrorKind::WritesUnavailable);
    assert_eq!(m.step(Event::WritesRefused).writes_refused, None, "once");
    let step = m.step(Event::WritesAccepted);
    assert_eq!(step.writes_refused, Some(false));
    assert!(!step.wakes_supervisor());
    assert_eq!(m.admit(true), Ok(()));
    assert_eq!(m.step(Event::WritesAccepted), Step::default());
}

#[test]
fn every_event_in_every_state_keeps_the_machine_consistent() {
    let events = [
        Event::Reply,
        Event::Timeout,
        Event::Unavailable("test"),
        Event::AuthRefused,
        Event::WritesRefused,
        Event::FailoverStarted,
        Event::WritesAccepted,
        Event::ProbeOk,
        Event::ProbeFailed,
        Event::Connected,
        Event::Reconnected,
    ];
    for start in [machine(), healthy(), recovering()] {
        for event in events {
            let mut m = start.clone();
            let before = m.health();
            let step = m.step(event);
            match step.transition {
                Some(t) => {
                    assert_eq!(t.from, before, "{event:?}");
                    assert_ne!(t.from, t.to, "{event:?}");
                    assert_eq!(t.to, m.health(), "{event:?}");
                    assert_eq!(m.timeouts_in_a_row(), 0, "{event:?}");
                }
                None => assert_eq!(m.health(), before, "{event:?} from {before}"),
            }
        }
    }
}

fn tracker() -> Tracker {
    let metrics = ClientMetrics::register(&mut Registry::default(), None);
    Tracker::new(metrics, machine())
}

/// Every published view of the tracker: the atomic state, the watch channel, the
/// `redis_up` gauge, the `redis_health_state` gauges, and the machine itself.
fn assert_views_agree(tracker: &Tracker) {
    let health = tracker.health();
    assert_eq!(*tracker.subscribe().borrow(), health, "watch channel");
    assert_eq!(tracker.lock().health(), health, "machine");
    let metrics = tracker.metrics();
    assert_eq!(
        metrics.up.get(),
        i64::from(health != Health::Degraded),
        "redis_up for {health}"
    );
    assert_eq!(
        metrics.state_gauges(),
        [
            health == Health::Healthy,
            health == Health::Degraded,
            health == Health::Recovering
        ]
        .map(i64::from),
        "redis_health_state for {health}"
    );
}

#[test]
fn tracker_publishes_every_transition() {
    let tracker = tracker();
    let mut rx = tracker.subscribe();
    assert_views_agree(&tracker);
    tracker.feed(Event::Connected);
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), Health::Healthy);
    assert_views_agree(&tracker);
    let mut writes = tracker.subscribe_writes();
    tracker.feed(Event::WritesRefused);
    assert!(tracker.writes_refused());
    assert!(*writes.borrow_and_update(), "published");
    assert_eq!(tracker.admit(true), Err(Failure::WRITES_REFUSED));
    assert_eq!(tracker.admit(false), Ok(()));
    tracker.feed(Event::WritesAccepted);
    assert_eq!(tracker.admit(true), Ok(()));
    assert!(!*writes.borrow_and_update(), "published");
    for _ in 0..4 {
        tracker.feed(Event::Timeout);
    }
    assert!(tracker.take_rebuild());
    assert_eq!(*rx.borrow_and_update(), Health::Degraded);
    assert_views_agree(&tracker);
    tracker.feed(Event::Reconnected);
    assert_eq!(tracker.health(), Health::Recovering);
    assert_views_agree(&tracker);
    tracker.feed(Event::ProbeOk);
    tracker.feed(Event::ProbeOk);
    assert_eq!(*rx.borrow_and_update(), Health::Healthy);
    assert_views_agree(&tracker);
}

#[test]
fn a_reply_without_timeouts_does_nothing() {
    let tracker = tracker();
    tracker.feed(Event::Connected);
    assert_eq!(tracker.feed(Event::Reply), Step::default());
    tracker.feed(Event::Timeout);
    tracker.feed(Event::Reply);
    assert_eq!(tracker.lock().timeouts_in_a_row(), 0);
}

/// The race behind a client stuck degraded in its views while calls were admitted: the
/// supervisor decides to turn healthy, a call fails and degrades the client, then the
/// supervisor's decision arrives. Replayed in that order: the late healing event
/// changes nothing (each transition requires its prior state), and every view (the
/// atomic state calls are admitted by, the watch channel, `redis_up`, the state
/// gauges) says Degraded.
#[test]
fn a_healing_event_that_lost_the_race_to_a_failure_changes_nothing() {
    let tracker = tracker();
    let mut rx = tracker.subscribe();
    tracker.feed(Event::Connected);
    assert_eq!(*rx.borrow_and_update(), Health::Healthy);
    // A call fails while the supervisor is about to report a good probe and a new
    // connection.
    tracker.feed(Event::Unavailable("connection error or server unavailable"));
    assert_eq!(*rx.borrow_and_update(), Health::Degraded);
    for late in [Event::Connected, Event::ProbeOk] {
        let step = tracker.feed(late);
        assert_eq!(step.transition, None, "{late:?} arrived late");
        assert_eq!(tracker.health(), Health::Degraded);
        assert!(!rx.has_changed().unwrap(), "nothing published for {late:?}");
        assert_views_agree(&tracker);
        assert_eq!(tracker.admit(false), Err(Failure::DEGRADED));
    }
    // Only the recovery path heals it: a probe and a new connection, then probes.
    tracker.feed(Event::Reconnected);
    assert_eq!(tracker.health(), Health::Recovering);
    tracker.feed(Event::ProbeOk);
    tracker.feed(Event::ProbeOk);
    assert_eq!(tracker.health(), Health::Healthy);
    assert_views_agree(&tracker);
}

#[test]
fn connected_only_heals_a_client_that_never_connected() {
    let mut m = machine();
    assert_eq!(to(m.step(Event::Connected)), Some(Health::Healthy));
    m.step(Event::Unavailable("test"));
    assert!(m.step(Event::Connected).transition.is_none());
    assert_eq!(m.health(), Health::Degraded);
    let mut m = recovering();
    assert!(m.step(Event::Connected).transition.is_none());
    assert_eq!(m.health(), Health::Recovering);
}

/// Two threads degrade and heal the client at the same moment, many times over: after
/// each round every view shows the same state.
#[test]
fn racing_transitions_leave_every_view_agreeing() {
    let tracker = Arc::new(tracker());
    tracker.feed(Event::Connected);
    let rounds = 20_000;
    let barrier = Arc::new(Barrier::new(3));
    let spawn = |events: &'static [Event]| {
        let (tracker, barrier) = (Arc::clone(&tracker), Arc::clone(&barrier));
        std::thread::spawn(move || {
            for _ in 0..rounds {
                barrier.wait();
                for event in events {
                    tracker.feed(*event);
                }
                barrier.wait();
            }
        })
    };
    let degrading = spawn(&[Event::Unavailable("test")]);
    let healing = spawn(&[Event::Reconnected, Event::ProbeOk, Event::ProbeOk]);
    for _ in 0..rounds {
        barrier.wait();
        barrier.wait();
        assert_views_agree(&tracker);
    }
    degrading.join().unwrap();
    healing.join().unwrap();
}

/// Calls feeding events from several threads while the supervisor moves the state:
/// the views agree at the end, and the watch channel's last value is the state.
#[test]
fn racing_calls_and_supervisor_end_agreeing() {
    let tracker = Arc::new(tracker());
    std::thread::scope(|scope| {
        for events in [
            [Event::Timeout, Event::Reply, Event::ProbeFailed],
            [Event::Connected, Event::ProbeOk, Event::Reconnected],
            [Event::AuthRefused, Event::ProbeOk, Event::Connected],
            [
                Event::WritesRefused,
                Event::Unavailable("test"),
                Event::WritesAccepted,
            ],
        ] {
            let tracker = Arc::clone(&tracker);
            scope.spawn(move || {
                for i in 0..20_000 {
                    tracker.feed(events[i % 3]);
                    let _ = tracker.admit(i % 2 == 0);
                }
            });
        }
    });
    assert_views_agree(&tracker);
}
