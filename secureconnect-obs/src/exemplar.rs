//! Exemplars of the request-duration histogram: per bucket, the trace id of a recent
//! sampled request that landed in it, its duration and when it ended.
//!
//! Written on the request path without a lock or an allocation: each bucket's slot is a
//! sequence lock that a writer only ever *tries* (one compare-and-swap; a slot being
//! written by another request is left to that one, which is as recent). A reader copies
//! the fields between two reads of the sequence and keeps the copy only if no writer
//! came in between.

use std::cell::RefCell;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// One exemplar, as read back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Exemplar {
    pub(crate) trace_id: u128,
    pub(crate) value: f64,
    /// When the request ended.
    pub(crate) time: SystemTime,
}

/// The exemplar of one bucket.
#[derive(Debug, Default)]
pub(crate) struct ExemplarSlot {
    /// Even: stable; odd: being written. Starts at 0 (and `trace_hi`/`trace_lo` at 0:
    /// empty, as no valid trace id is 0).
    seq: AtomicU64,
    trace_hi: AtomicU64,
    trace_lo: AtomicU64,
    value: AtomicU64,
    /// Nanoseconds since the [`Clock`]'s start.
    at: AtomicU64,
}

impl ExemplarSlot {
    /// Records `trace_id` (non-zero) with `value`, `at` nanoseconds after the clock's
    /// start, unless another request is writing this slot right now.
    pub(crate) fn store(&self, trace_id: u128, value: f64, at: u64) {
        let seq = self.seq.load(Ordering::Relaxed);
        if seq & 1 == 1
            || self
                .seq
                .compare_exchange(
                    seq,
                    seq.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        // The fields are written after the odd sequence is visible...
        fence(Ordering::Release);
        self.trace_hi
            .store((trace_id >> 64) as u64, Ordering::Relaxed);
        self.trace_lo.store(trace_id as u64, Ordering::Relaxed);
        self.value.store(value.to_bits(), Ordering::Relaxed);
        self.at.store(at, Ordering::Relaxed);
        // ...and before the even one.
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    /// The slot's exemplar, if it has one and no writer changed it while it was read.
    pub(crate) fn load(&self, clock: &Clock) -> Option<Exemplar> {
        for _ in 0..4 {
            let before = self.seq.load(Ordering::Acquire);
            if before & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let hi = self.trace_hi.load(Ordering::Relaxed);
            let lo = self.trace_lo.load(Ordering::Relaxed);
            let value = self.value.load(Ordering::Relaxed);
            let at = self.at.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) != before {
                continue;
            }
            let trace_id = (u128::from(hi) << 64) | u128::from(lo);
            return (trace_id != 0).then(|| Exemplar {
                trace_id,
                value: f64::from_bits(value),
                time: clock.wall(at),
            });
        }
        None
    }
}

/// Wall-clock times from the request path's monotonic clock: one reading of both at
/// start, then an exemplar's time is the start plus the monotonic time since.
#[derive(Debug)]
pub(crate) struct Clock {
    start: quanta::Instant,
    wall: SystemTime,
}

impl Clock {
    pub(crate) fn new() -> Self {
        // Also calibrates quanta's clock now rather than on the first request.
        Self {
            start: quanta::Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// The monotonic start, for [`since`].
    pub(crate) fn epoch(&self) -> quanta::Instant {
        self.start
    }

    fn wall(&self, nanos: u64) -> SystemTime {
        self.wall + Duration::from_nanos(nanos)
    }
}

/// The exemplars of one histogram family as it was encoded: how many bucket lines it
/// wrote, and the exemplar of the n-th of them, for those that have one.
#[derive(Debug, Default)]
pub(crate) struct FamilyExemplars {
    pub(crate) bucket_lines: usize,
    pub(crate) exemplars: Vec<(usize, Exemplar)>,
}

thread_local! {
    /// Set while [`collect`] encodes a registry: what the families encoded meanwhile on
    /// this thread have as exemplars.
    static COLLECTED: RefCell<Option<Vec<FamilyExemplars>>> = const { RefCell::new(None) };
}

/// Runs `encode` (which encodes a registry on this thread), and returns with its result
/// the exemplars of the duration families it encoded, in order.
pub(crate) fn collect<R>(encode: impl FnOnce() -> R) -> (R, Vec<FamilyExemplars>) {
    let outer = COLLECTED.with(|c| c.replace(Some(Vec::new())));
    let result = encode();
    let collected = COLLECTED.with(|c| c.replace(outer)).unwrap_or_default();
    (result, collected)
}

/// Whether a [`collect`] is under way on this thread (exemplars are only worth reading
/// then).
pub(crate) fn collecting() -> bool {
    COLLECTED.with(|c| c.borrow().is_some())
}

/// Hands the exemplars of a family just encoded to the [`collect`] under way.
pub(crate) fn collected(family: FamilyExemplars) {
    COLLECTED.with(|c| {
        if let Some(families) = c.borrow_mut().as_mut() {
            families.push(family);
        }
    });
}

/// Nanoseconds from `epoch` (a [`Clock::epoch`]) to `now`.
pub(crate) fn since(epoch: quanta::Instant, now: quanta::Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn an_empty_slot_has_no_exemplar_and_a_stored_one_reads_back() {
        let clock = Clock::new();
        let slot = ExemplarSlot::default();
        assert_eq!(slot.load(&clock), None);
        let id = 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128;
        slot.store(id, 0.042, 1_500_000_000);
        let exemplar = slot.load(&clock).unwrap();
        assert_eq!(exemplar.trace_id, id);
        assert_eq!(exemplar.value, 0.042);
        assert_eq!(
            exemplar.time.duration_since(clock.wall).unwrap(),
            Duration::from_millis(1500)
        );
        slot.store(7, 0.05, 0);
        assert_eq!(slot.load(&clock).unwrap().trace_id, 7, "the latest wins");
    }

    #[test]
    fn concurrent_writers_never_tear_an_exemplar() {
        // Each writer stores a trace id whose halves, value and time all encode the
        // same number: a torn read would mix two numbers.
        let clock = Arc::new(Clock::new());
        let slot = Arc::new(ExemplarSlot::default());
        let writers: Vec<_> = (1..=3u64)
            .map(|w| {
                let slot = Arc::clone(&slot);
                std::thread::spawn(move || {
                    for i in 0..50_000u64 {
                        let n = w * 1_000_000 + i;
                        slot.store((u128::from(n) << 64) | u128::from(n), n as f64, n);
                    }
                })
            })
            .collect();
        let mut read = 0;
        while read < 20_000 {
            if let Some(e) = slot.load(&clock) {
                let n = (e.trace_id >> 64) as u64;
                assert_eq!(e.trace_id as u64, n);
                assert_eq!(e.value, n as f64);
                assert_eq!(e.time, clock.wall(n));
                read += 1;
            }
        }
        for w in writers {
            w.join().unwrap();
        }
    }
}
