//! [`Tracker`]: one [`Machine`] shared by a client's calls and its supervisor, and the
//! views it is published through (an atomic byte, a `watch` channel, the metrics, the
//! log), updated together under one lock.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::{watch, Notify};

use super::{Event, Health, Machine, Step, Transition};
use crate::classify::Failure;
use crate::metrics::ClientMetrics;

/// One [`Machine`] shared by a client's calls and its supervisor, and the views it is
/// published through.
#[derive(Debug)]
pub(crate) struct Tracker {
    machine: Mutex<Machine>,
    /// The published state, read by every call without a lock.
    state: AtomicU8,
    /// The published "writes refused" flag, read by every call without a lock.
    writes_refused: AtomicBool,
    /// Whether timeouts are being counted: only then does a reply need the lock.
    counting: AtomicBool,
    tx: watch::Sender<Health>,
    /// Whether writes are refused, on every change.
    writes_tx: watch::Sender<bool>,
    /// Wakes the supervisor: a state change or a rebuild request.
    pub(crate) wake: Notify,
    metrics: ClientMetrics,
}

impl Tracker {
    pub(crate) fn new(metrics: ClientMetrics, machine: Machine) -> Self {
        let health = machine.health();
        let (tx, _) = watch::channel(health);
        let (writes_tx, _) = watch::channel(machine.writes_refused());
        metrics.set_health(health);
        Self {
            state: AtomicU8::new(health.to_u8()),
            writes_refused: AtomicBool::new(machine.writes_refused()),
            counting: AtomicBool::new(false),
            machine: Mutex::new(machine),
            tx,
            writes_tx,
            wake: Notify::new(),
            metrics,
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Machine> {
        self.machine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn health(&self) -> Health {
        Health::from_u8(self.state.load(Ordering::Acquire))
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Health> {
        self.tx.subscribe()
    }

    pub(crate) fn subscribe_writes(&self) -> watch::Receiver<bool> {
        self.writes_tx.subscribe()
    }

    pub(crate) fn metrics(&self) -> &ClientMetrics {
        &self.metrics
    }

    pub(crate) fn writes_refused(&self) -> bool {
        self.writes_refused.load(Ordering::Acquire)
    }

    pub(crate) fn auth_failed(&self) -> bool {
        self.lock().auth_failed()
    }

    /// Whether a call may go to Redis now; without a lock unless recovering.
    pub(crate) fn admit(&self, write: bool) -> Result<(), Failure> {
        match self.health() {
            Health::Healthy if write && self.writes_refused() => Err(Failure::WRITES_REFUSED),
            Health::Healthy => Ok(()),
            Health::Degraded => Err(Failure::DEGRADED),
            Health::Recovering => self.lock().admit(write),
        }
    }

    /// Takes a pending request to rebuild the main connection.
    pub(crate) fn take_rebuild(&self) -> bool {
        self.lock().take_rebuild()
    }

    /// Feeds `event` to the machine and publishes what changed.
    pub(crate) fn feed(&self, event: Event) -> Step {
        if event == Event::Reply && !self.counting.load(Ordering::Relaxed) {
            // The common case: nothing to reset, no lock.
            return Step::default();
        }
        let step = {
            let mut machine = self.lock();
            let step = machine.step(event);
            self.counting
                .store(machine.timeouts_in_a_row() != 0, Ordering::Relaxed);
            self.writes_refused
                .store(machine.writes_refused(), Ordering::Release);
            if let Some(refused) = step.writes_refused {
                self.writes_tx.send_replace(refused);
            }
            if let Some(t) = step.transition {
                // Published under the lock: two racing transitions publish in the
                // order they happened, so every view ends on the same state.
                self.state.store(t.to.to_u8(), Ordering::Release);
                self.metrics.set_health(t.to);
                self.tx.send_replace(t.to);
            }
            // Logged under the lock too: the log tells transitions in their order.
            self.report(&step);
            step
        };
        if step.wakes_supervisor() {
            self.wake.notify_one();
        }
        step
    }

    fn report(&self, step: &Step) {
        if step.auth_refused {
            tracing::error!(
                target: "secureconnect_redis_fallback",
                "redis refuses this client's credentials (NOAUTH/WRONGPASS): check the password \
                 in the redis URL; retrying slowly"
            );
        }
        match step.writes_refused {
            Some(true) if step.failover => tracing::warn!(
                target: "secureconnect_redis_fallback",
                "a sentinel failover of the primary is under way: writes take their fallback until the new primary is known, reads go on"
            ),
            Some(true) => tracing::warn!(
                target: "secureconnect_redis_fallback",
                "redis refuses writes (OOM or READONLY): writes take their fallback, reads go on"
            ),
            Some(false) => {
                tracing::info!(target: "secureconnect_redis_fallback", "redis accepts writes again");
            }
            None => {}
        }
        if let Some(Transition { from, to, reason }) = step.transition {
            match to {
                Health::Degraded => tracing::warn!(
                    target: "secureconnect_redis_fallback",
                    from = %from, reason, "redis degraded: calls take their fallback"
                ),
                _ => tracing::info!(
                    target: "secureconnect_redis_fallback",
                    from = %from, to = %to, reason, "redis health changed"
                ),
            }
        }
    }
}
