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

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{
    bounded, Receiver, RecvTimeoutError, SendTimeoutError, Sender, TryRecvError, TrySendError,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::event::AuditEvent;
use crate::sink::AuditSink;

/// What a producer does when the queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Drop the event and count it in `audit_events_dropped_total{reason="queue_full"}`.
    /// Requests are never slowed down.
    DropAndCount,
    /// Wait up to this long for room, then drop and count.
    Block(Duration),
    /// Refuse: the layer answers the request `503`, and [`AuditPipeline::record`]
    /// returns [`AuditError::Unavailable`] so a handler can refuse its operation.
    FailClosed,
}

/// Why an event was not queued.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuditError {
    /// The queue was full and the event was dropped (counted).
    #[error("audit queue full: event dropped")]
    Dropped,
    /// The queue was full in fail-closed mode: the operation must not proceed.
    #[error("audit trail unavailable: the operation must be refused")]
    Unavailable,
    /// The pipeline was shut down.
    #[error("audit pipeline shut down")]
    Closed,
}

/// What [`AuditPipeline::shutdown`] achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Events written over the pipeline's life.
    pub written: u64,
    /// Events dropped over the pipeline's life.
    pub dropped: u64,
    /// Events still queued when the deadline passed (the sink hung); counted as
    /// dropped with reason `shutdown`.
    pub abandoned: u64,
}

/// Configuration of an [`AuditPipeline`].
#[derive(Clone, Copy, Debug)]
pub struct PipelineConfig {
    capacity: usize,
    overflow: Overflow,
    batch: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            capacity: 16_384,
            overflow: Overflow::DropAndCount,
            batch: 256,
        }
    }
}

impl PipelineConfig {
    /// At most `capacity` events queued (default 16,384).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// What to do when the queue is full (default [`Overflow::DropAndCount`]).
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }
}

#[derive(Clone, Debug)]
struct Metrics {
    /// Events handed to the sink and not yet accounted for. Whoever takes them (the
    /// writer when the sink returns, or a shutdown that gives up on a hung sink)
    /// counts them, exactly once.
    in_sink: Arc<AtomicU64>,
    produced: Counter,
    written: Counter,
    dropped_full: Counter,
    dropped_sink: Counter,
    dropped_shutdown: Counter,
    sink_errors: Counter,
    depth: Gauge,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Self {
        let produced = Counter::default();
        registry.register(
            "audit_events_produced",
            "Audit events produced",
            produced.clone(),
        );
        let written = Counter::default();
        registry.register(
            "audit_events_written",
            "Audit events written by the sink",
            written.clone(),
        );
        let dropped = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
        registry.register(
            "audit_events_dropped",
            "Audit events lost, by reason",
            dropped.clone(),
        );
        let sink_errors = Counter::default();
        registry.register(
            "audit_sink_errors",
            "Failed or panicked sink writes",
            sink_errors.clone(),
        );
        let depth = Gauge::default();
        registry.register(
            "audit_queue_depth",
            "Audit events waiting for the sink",
            depth.clone(),
        );
        let reason = |r| dropped.get_or_create_owned(&vec![("reason", r)]);
        Self {
            in_sink: Arc::new(AtomicU64::new(0)),
            produced,
            written,
            dropped_full: reason("queue_full"),
            dropped_sink: reason("sink_error"),
            dropped_shutdown: reason("shutdown"),
            sink_errors,
            depth,
        }
    }

    fn dropped(&self) -> u64 {
        self.dropped_full.get() + self.dropped_sink.get() + self.dropped_shutdown.get()
    }
}

#[derive(Debug)]
struct Queue {
    next_seq: u64,
    tx: Option<Sender<AuditEvent>>,
}

#[derive(Debug)]
struct Inner {
    /// Sequence numbers are taken and events queued under one lock, so the sink sees
    /// them in `seq` order and a gap always means a lost event.
    queue: Mutex<Queue>,
    rx: Receiver<AuditEvent>,
    overflow: Overflow,
    metrics: Metrics,
    done: Receiver<()>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// The queue and writer thread in front of one sink; cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditPipeline {
    inner: Arc<Inner>,
}

impl AuditPipeline {
    /// Starts the writer thread for `sink` and registers the metrics in `registry`.
    pub fn new(sink: impl AuditSink, config: PipelineConfig, registry: &mut Registry) -> Self {
        let (tx, rx) = bounded::<AuditEvent>(config.capacity);
        let (done_tx, done) = bounded::<()>(1);
        let metrics = Metrics::register(registry);
        let writer = {
            let rx = rx.clone();
            let metrics = metrics.clone();
            let batch = config.batch;
            std::thread::Builder::new()
                .name("audit-writer".into())
                .spawn(move || {
                    write_loop(sink, &rx, &metrics, batch);
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
        Self {
            inner: Arc::new(Inner {
                queue: Mutex::new(Queue {
                    next_seq: 1,
                    tx: writer.as_ref().map(|_| tx),
                }),
                rx,
                overflow: config.overflow,
                metrics,
                done,
                writer: Mutex::new(writer),
            }),
        }
    }

    /// The overflow mode.
    pub fn overflow(&self) -> Overflow {
        self.inner.overflow
    }

    /// Queues `event`, giving it the next sequence number.
    ///
    /// # Errors
    ///
    /// [`AuditError::Dropped`] (counted) or, in fail-closed mode,
    /// [`AuditError::Unavailable`] when the queue is full; [`AuditError::Closed`] after
    /// shutdown.
    pub fn record(&self, mut event: AuditEvent) -> Result<(), AuditError> {
        let metrics = &self.inner.metrics;
        let mut queue = self
            .inner
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let seq = queue.next_seq;
        let Some(tx) = &queue.tx else {
            return Err(AuditError::Closed);
        };
        event.set_seq(seq);
        let result = match self.inner.overflow {
            Overflow::Block(timeout) => tx.send_timeout(event, timeout).map_err(|e| match e {
                SendTimeoutError::Timeout(_) => AuditError::Dropped,
                SendTimeoutError::Disconnected(_) => AuditError::Closed,
            }),
            Overflow::DropAndCount => tx.try_send(event).map_err(|e| match e {
                TrySendError::Full(_) => AuditError::Dropped,
                TrySendError::Disconnected(_) => AuditError::Closed,
            }),
            Overflow::FailClosed => tx.try_send(event).map_err(|e| match e {
                TrySendError::Full(_) => AuditError::Unavailable,
                TrySendError::Disconnected(_) => AuditError::Closed,
            }),
        };
        // A dropped event still used its number: the gap shows in the trail.
        queue.next_seq += 1;
        drop(queue);
        metrics.produced.inc();
        match result {
            Ok(()) => {
                metrics.depth.set(self.inner.rx.len() as i64);
                Ok(())
            }
            Err(error) => {
                metrics.dropped_full.inc();
                Err(error)
            }
        }
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

/// How often a busy writer looks at the queue. Between looks producers never have to
/// wake it (a wake-up is a system call, a microsecond or more on the request path).
const TICK: Duration = Duration::from_millis(1);
/// After this many empty looks the writer blocks until the next event.
const IDLE_TICKS: u32 = 50;

fn write_loop(
    mut sink: impl AuditSink,
    rx: &Receiver<AuditEvent>,
    metrics: &Metrics,
    batch_size: usize,
) {
    let mut batch = Vec::with_capacity(batch_size);
    let mut idle = 0;
    loop {
        let mut disconnected = false;
        while batch.len() < batch_size {
            match rx.try_recv() {
                Ok(event) => batch.push(event),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        if batch.is_empty() {
            if disconnected {
                break;
            }
            idle += 1;
            if idle < IDLE_TICKS {
                std::thread::sleep(TICK);
                continue;
            }
            // Quiet: sleep until an event arrives (its producer pays one wake-up).
            match rx.recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        idle = 0;
        write_batch(&mut sink, &mut batch, rx, metrics);
    }
    if let Ok(Err(error)) = catch_unwind(AssertUnwindSafe(|| sink.flush())) {
        metrics.sink_errors.inc();
        tracing::error!(target: "audit", %error, "audit sink failed to flush at shutdown");
    }
}

fn write_batch(
    sink: &mut impl AuditSink,
    batch: &mut Vec<AuditEvent>,
    rx: &Receiver<AuditEvent>,
    metrics: &Metrics,
) {
    metrics.depth.set(rx.len() as i64);
    metrics.in_sink.store(batch.len() as u64, Ordering::Release);
    let result = catch_unwind(AssertUnwindSafe(|| sink.write(batch)));
    // Zero when a shutdown has already counted this batch as abandoned.
    let n = metrics.in_sink.swap(0, Ordering::AcqRel);
    match result {
        Ok(Ok(())) => {
            metrics.written.inc_by(n);
        }
        Ok(Err(error)) => {
            metrics.sink_errors.inc();
            metrics.dropped_sink.inc_by(n);
            tracing::error!(target: "audit", %error, lost = n, "audit sink failed");
        }
        Err(_) => {
            metrics.sink_errors.inc();
            metrics.dropped_sink.inc_by(n);
            tracing::error!(target: "audit", lost = n, "audit sink panicked");
        }
    }
    batch.clear();
}
