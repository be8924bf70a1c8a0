//! [`Slots`]: the queue's free capacity, taken before an event is queued and given back
//! when the writer takes events off the queue.
//!
//! Taking a slot is one compare-and-swap; no lock is held while anybody waits. Waiting
//! (for [`Overflow::Block`](super::Overflow::Block)) is either on the caller's thread
//! ([`Slots::take_blocking`]) or, for the layer, asynchronous ([`Wait`]): a waiting
//! request parks its task, and is woken when the writer frees slots or, by the timer
//! thread of a blocking pipeline, when its deadline passes. So k waiting producers wait
//! at most the timeout each, at the same time, and park no runtime thread.

use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(super) struct Slots {
    /// Below zero when events were queued past the capacity ([`Slots::take_anyway`]).
    free: AtomicIsize,
    /// Waiters registered in `list` plus those blocked on `cond`: givers look at the
    /// list only when there are some.
    waiting: AtomicUsize,
    list: Mutex<WaitList>,
    /// Blocked producers and the timer thread wait on it.
    cond: Condvar,
}

#[derive(Debug, Default)]
struct WaitList {
    next_id: u64,
    parked: Vec<Parked>,
    closed: bool,
}

#[derive(Debug)]
struct Parked {
    id: u64,
    waker: Waker,
    deadline: Instant,
}

impl Slots {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            free: AtomicIsize::new(isize::try_from(capacity).unwrap_or(isize::MAX)),
            waiting: AtomicUsize::new(0),
            list: Mutex::new(WaitList::default()),
            cond: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, WaitList> {
        self.list.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a free slot, if there is one.
    pub(super) fn try_take(&self) -> bool {
        let mut free = self.free.load(Ordering::Relaxed);
        loop {
            if free <= 0 {
                return false;
            }
            match self.free.compare_exchange_weak(
                free,
                free - 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => free = now,
            }
        }
    }

    /// Takes a slot even past the capacity.
    pub(super) fn take_anyway(&self) {
        self.free.fetch_sub(1, Ordering::AcqRel);
    }

    /// Gives `n` slots back and wakes whoever waits for one.
    pub(super) fn give(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.free
            .fetch_add(isize::try_from(n).unwrap_or(isize::MAX), Ordering::SeqCst);
        // A waiter registers (under the lock) before its last look at `free`: either
        // it sees these slots, or this sees it.
        if self.waiting.load(Ordering::SeqCst) > 0 {
            let mut list = self.lock();
            let parked = std::mem::take(&mut list.parked);
            self.waiting.fetch_sub(parked.len(), Ordering::SeqCst);
            drop(list);
            self.cond.notify_all();
            for p in parked {
                p.waker.wake();
            }
        }
    }

    /// Waits on this thread, up to `timeout`, for a slot. Holds no lock while it waits.
    pub(super) fn take_blocking(&self, timeout: Duration) -> bool {
        if self.try_take() {
            return true;
        }
        let deadline = Instant::now() + timeout;
        let mut list = self.lock();
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let taken = loop {
            if self.try_take() {
                break true;
            }
            let now = Instant::now();
            if now >= deadline || list.closed {
                break false;
            }
            list = self
                .cond
                .wait_timeout(list, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        taken
    }

    /// One step of an asynchronous wait: `Ready(true)` with a slot, `Ready(false)` once
    /// `deadline` passed (or the pipeline closed), else parked until woken.
    fn poll_take(
        &self,
        cx: &mut Context<'_>,
        id: &mut Option<u64>,
        deadline: Instant,
    ) -> Poll<bool> {
        if self.try_take() {
            self.unpark(id);
            return Poll::Ready(true);
        }
        let mut list = self.lock();
        remove(&mut list, &self.waiting, id);
        if list.closed || Instant::now() >= deadline {
            // A last look: a slot freed just now is still taken.
            return Poll::Ready(self.try_take());
        }
        // Registered (and counted in `waiting`) before the last look at `free`: a
        // `give` either frees a slot this look sees, or sees this waiter and wakes it.
        let new = list.next_id;
        list.next_id += 1;
        list.parked.push(Parked {
            id: new,
            waker: cx.waker().clone(),
            deadline,
        });
        self.waiting.fetch_add(1, Ordering::SeqCst);
        *id = Some(new);
        if self.try_take() {
            remove(&mut list, &self.waiting, id);
            return Poll::Ready(true);
        }
        drop(list);
        // The timer thread learns of the new deadline.
        self.cond.notify_all();
        Poll::Pending
    }

    fn unpark(&self, id: &mut Option<u64>) {
        if id.is_some() {
            remove(&mut self.lock(), &self.waiting, id);
        }
    }

    /// Wakes every waiter for good (the pipeline is gone or shut down).
    pub(super) fn close(&self) {
        let mut list = self.lock();
        list.closed = true;
        let parked = std::mem::take(&mut list.parked);
        self.waiting.fetch_sub(parked.len(), Ordering::SeqCst);
        drop(list);
        self.cond.notify_all();
        for p in parked {
            p.waker.wake();
        }
    }

    /// The timer of a blocking pipeline: wakes parked waiters whose deadline passed,
    /// until [`close`](Self::close).
    pub(super) fn run_timer(&self) {
        let mut list = self.lock();
        loop {
            if list.closed {
                return;
            }
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            let mut expired = 0;
            list.parked.retain(|p| {
                if p.deadline <= now {
                    p.waker.wake_by_ref();
                    expired += 1;
                    false
                } else {
                    next = Some(next.map_or(p.deadline, |n| n.min(p.deadline)));
                    true
                }
            });
            self.waiting.fetch_sub(expired, Ordering::SeqCst);
            list = match next {
                Some(next) => {
                    self.cond
                        .wait_timeout(list, next - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self.cond.wait(list).unwrap_or_else(PoisonError::into_inner),
            };
        }
    }
}

/// Removes waiter `id` from the list, if it is still there.
fn remove(list: &mut WaitList, waiting: &AtomicUsize, id: &mut Option<u64>) {
    if let Some(id) = id.take() {
        if let Some(i) = list.parked.iter().position(|p| p.id == id) {
            list.parked.swap_remove(i);
            waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// An asynchronous wait for a slot, up to a deadline; unregisters itself when dropped.
#[derive(Debug)]
pub(crate) struct Wait {
    slots: Arc<Slots>,
    id: Option<u64>,
    deadline: Instant,
}

impl Wait {
    pub(super) fn new(slots: Arc<Slots>, timeout: Duration) -> Self {
        Self {
            slots,
            id: None,
            deadline: Instant::now() + timeout,
        }
    }

    /// `Ready(true)`: a slot is taken. `Ready(false)`: the time is up.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        self.slots.poll_take(cx, &mut self.id, self.deadline)
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        self.slots.unpark(&mut self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn slots_are_taken_and_given_back() {
        let slots = Slots::new(2);
        assert!(slots.try_take() && slots.try_take());
        assert!(!slots.try_take());
        slots.give(1);
        assert!(slots.try_take());
        assert!(!slots.take_blocking(Duration::from_millis(10)));
    }

    #[test]
    fn a_parked_waiter_is_woken_by_a_given_slot_and_unregisters_on_drop() {
        let slots = Arc::new(Slots::new(0));
        let flag = Arc::new(Flag(false.into()));
        let waker = Waker::from(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        let mut wait = Wait::new(Arc::clone(&slots), Duration::from_secs(60));
        assert_eq!(wait.poll(&mut cx), Poll::Pending);
        assert_eq!(slots.waiting.load(Ordering::SeqCst), 1);
        slots.give(1);
        assert!(flag.0.load(Ordering::SeqCst), "woken");
        assert_eq!(wait.poll(&mut cx), Poll::Ready(true));
        let mut other = Wait::new(Arc::clone(&slots), Duration::from_secs(60));
        assert_eq!(other.poll(&mut cx), Poll::Pending);
        drop(other);
        assert_eq!(slots.waiting.load(Ordering::SeqCst), 0);
        assert!(slots.lock().parked.is_empty());
    }
}
