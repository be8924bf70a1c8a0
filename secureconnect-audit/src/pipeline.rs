//! The bounded queue between producers (the layer, handlers) and the sink, and the
//! writer thread that drains it.
//!
//! Producers never wait on the sink. When the queue is full, the [`Overflow`] mode
//! decides: drop the event and count it (default), wait up to a timeout, or refuse the
//! request (fail closed). A sink that fails or panics costs the events of that batch,
//! counted; the writer goes on. Whatever happens, `produced = written + dropped +
//! queued` holds and is exported:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `audit_events_produced_total` | counter | |
//! | `audit_events_written_total` | counter | |
//! | `audit_events_dropped_total` | counter | `reason`: `queue_full`, `sink_error`, `shutdown` |
//! | `audit_sink_errors_total` | counter | |
//! | `audit_queue_depth` | gauge | |
//!
//! | `audit_requests_refused_total` | counter | |
//!
//! (`audit_requests_refused_total` counts requests the layer refused in fail-closed
//! mode before their handler ran.)
//!
//! The configuration is in [`config`], the metrics in [`metrics`], the writer thread in
//! [`writer`], the queue's free capacity in [`slots`]; this file holds the queue and its
//! producers' side.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};
use prometheus_client::registry::Registry;

use crate::error::{Error, ErrorKind};
use crate::event::AuditEvent;
use crate::sink::AuditSink;

mod config;
mod metrics;
mod slots;
mod writer;

pub use config::{AuditPipelineConfig, Overflow};
use metrics::Metrics;
use slots::Slots;
pub(crate) use slots::Wait;

/// What [`AuditPipeline::shutdown`] achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Events written over the pipeline's life.
    pub written: u64,
    /// Events dropped over the pipeline's life.
    pub dropped: u64,
    /// Events still queued when the deadline passed (the sink hung); counted as
    /// dropped with reason `shutdown`.
    pub abandoned: u64,
}

#[derive(Debug)]
struct Queue {
    next_seq: u64,
    tx: Option<Sender<AuditEvent>>,
}

#[derive(Debug)]
struct Inner {
    /// Sequence numbers are taken and events queued under one short lock (never held
    /// while waiting: room is reserved in `slots` first), so the sink sees them in
    /// `seq` order and a gap always means a lost event.
    queue: Mutex<Queue>,
    /// The queue's free capacity.
    slots: Arc<Slots>,
    rx: Receiver<AuditEvent>,
    overflow: Overflow,
    metrics: Metrics,
    done: Receiver<()>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Ends the timer thread of a blocking pipeline.
        self.slots.close();
    }
}

/// The queue and writer thread in front of one sink; cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditPipeline {
    inner: Arc<Inner>,
}

impl AuditPipeline {
    /// Starts the writer thread for `sink` and registers the metrics in `registry`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidConfig`] when a value of `config` is out of range (a
    /// capacity or batch size of 0).
    pub fn new(
        sink: impl AuditSink,
        config: AuditPipelineConfig,
        registry: &mut Registry,
    ) -> Result<Self, Error> {
        config.validate()?;
        // The capacity is kept by `slots`; the channel itself never refuses.
        let (tx, rx) = unbounded::<AuditEvent>();
        let (done_tx, done) = bounded::<()>(1);
        let metrics = Metrics::register(registry);
        let slots = Arc::new(Slots::new(config.capacity));
        let writer = {
            let rx = rx.clone();
            let metrics = metrics.clone();
            let slots = Arc::clone(&slots);
            let batch = config.batch;
            std::thread::Builder::new()
                .name("audit-writer".into())
                .spawn(move || {
                    writer::write_loop(sink, &rx, &slots, &metrics, batch);
                    let _ = done_tx.send(());
                })
        };
        let writer = match writer {
            Ok(handle) => Some(handle),
            Err(error) => {
                tracing::error!(target: "audit", %error, "cannot start the audit writer thread");
                None
            }
        };
        if let Overflow::Block(_) = config.overflow {
            let slots = Arc::clone(&slots);
            // Detached: it ends when the pipeline is shut down or dropped.
            if let Err(error) = std::thread::Builder::new()
                .name("audit-timer".into())
                .spawn(move || slots.run_timer())
            {
                tracing::error!(target: "audit", %error, "cannot start the audit timer thread: waiting requests are woken only by room in the queue");
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                queue: Mutex::new(Queue {
                    next_seq: 1,
                    tx: writer.as_ref().map(|_| tx),
                }),
                slots,
                rx,
                overflow: config.overflow,
                metrics,
                done,
                writer: Mutex::new(writer),
            }),
        })
    }

    /// The overflow mode.
    pub fn overflow(&self) -> Overflow {
        self.inner.overflow
    }

    /// Queues `event`, giving it the next sequence number.
    ///
    /// With [`Overflow::Block`] this waits, on the calling thread, up to the timeout for
    /// room in the queue (holding no lock, so other producers go on). The
    /// [`AuditLayer`](crate::AuditLayer) waits for its own events without blocking a
    /// thread.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Dropped`] (counted) or, in fail-closed mode,
    /// [`ErrorKind::Refused`] when the queue is full; [`ErrorKind::Closed`] after
    /// shutdown.
    pub fn record(&self, event: AuditEvent) -> Result<(), Error> {
        let room = match self.inner.overflow {
            Overflow::DropAndCount | Overflow::FailClosed => self.inner.slots.try_take(),
            Overflow::Block(timeout) => self.inner.slots.take_blocking(timeout),
        };
        if room {
            self.record_reserved(event)
        } else {
            Err(self.lost())
        }
    }

    /// Takes room for one event, if there is some; give it back with
    /// [`unreserve`](Self::unreserve) or use it with
    /// [`record_reserved`](Self::record_reserved).
    pub(crate) fn try_reserve(&self) -> bool {
        self.inner.slots.try_take()
    }

    /// Gives back room taken by [`try_reserve`](Self::try_reserve) and not used.
    pub(crate) fn unreserve(&self) {
        self.inner.slots.give(1);
    }

    /// Queues `event` even past the capacity: for the one more event of a request
    /// that was given room before its handler ran (fail-closed), whose handler already
    /// acted.
    pub(crate) fn record_anyway(&self, event: AuditEvent) -> Result<(), Error> {
        self.inner.slots.take_anyway();
        self.record_reserved(event)
    }

    /// Waits, without blocking a thread, up to `timeout` for room for one event.
    pub(crate) fn wait_for_room(&self, timeout: Duration) -> Wait {
        Wait::new(Arc::clone(&self.inner.slots), timeout)
    }

    /// Counts an event that found no room, and says what that means in this mode.
    pub(crate) fn lost(&self) -> Error {
        let metrics = &self.inner.metrics;
        let mut queue = self
            .inner
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if queue.tx.is_none() {
            return Error::from_kind(ErrorKind::Closed);
        }
        // A dropped event still uses its number: the gap shows in the trail.
        queue.next_seq += 1;
        drop(queue);
        metrics.produced.inc();
        metrics.dropped_full.inc();
        Error::from_kind(match self.inner.overflow {
            Overflow::FailClosed => ErrorKind::Refused,
            _ => ErrorKind::Dropped,
        })
    }

    /// Counts a request the layer refused before its handler ran (fail-closed).
    pub(crate) fn refused_request(&self) {
        self.inner.metrics.refused_requests.inc();
    }

    /// Queues `event` into room already reserved (given back if it cannot be queued).
    pub(crate) fn record_reserved(&self, mut event: AuditEvent) -> Result<(), Error> {
        let metrics = &self.inner.metrics;
        let mut queue = self
            .inner
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let seq = queue.next_seq;
        event.set_seq(seq);
        let sent = match &queue.tx {
            Some(tx) => tx.send(event).is_ok(),
            None => false,
        };
        if !sent {
            drop(queue);
            self.inner.slots.give(1);
            return Err(Error::from_kind(ErrorKind::Closed));
        }
        queue.next_seq += 1;
        drop(queue);
        metrics.produced.inc();
        metrics.depth.set(self.inner.rx.len() as i64);
        Ok(())
    }

    /// Events written so far.
    pub fn written(&self) -> u64 {
        self.inner.metrics.written.get()
    }

    /// Events dropped so far, for any reason.
    pub fn dropped(&self) -> u64 {
        self.inner.metrics.dropped()
    }

    /// Events produced so far (written + dropped + queued).
    pub fn produced(&self) -> u64 {
        self.inner.metrics.produced.get()
    }

    /// Stops taking events, lets the writer drain the queue and flush the sink, and
    /// waits for it up to `deadline`. Events still queued then are counted as dropped.
    /// Later calls only report.
    pub fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let closed = self
            .inner
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tx
            .take()
            .is_some();
        // Producers waiting for room give up now.
        self.inner.slots.close();
        let mut abandoned = 0;
        if closed {
            match self.inner.done.recv_timeout(deadline) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                    if let Some(handle) = self
                        .inner
                        .writer
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .take()
                    {
                        let _ = handle.join();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    // The sink hangs: take what is left so it is counted, not lost
                    // silently, with the batch stuck inside the sink.
                    while self.inner.rx.try_recv().is_ok() {
                        abandoned += 1;
                    }
                    abandoned += self.inner.metrics.in_sink.swap(0, Ordering::AcqRel);
                    self.inner.metrics.dropped_shutdown.inc_by(abandoned);
                    tracing::error!(target: "audit", abandoned, "audit sink did not drain before the shutdown deadline");
                }
            }
        }
        ShutdownReport {
            written: self.written(),
            dropped: self.dropped(),
            abandoned,
        }
    }
}
