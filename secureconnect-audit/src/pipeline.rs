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
//! The configuration is in [`config`], the metrics in [`metrics`], the writer thread in
//! [`writer`]; this file holds the queue and its producers' side.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{
    bounded, Receiver, RecvTimeoutError, SendTimeoutError, Sender, TrySendError,
};
use prometheus_client::registry::Registry;

use crate::error::{Error, ErrorKind};
use crate::event::AuditEvent;
use crate::sink::AuditSink;

mod config;
mod metrics;
mod writer;

pub use config::{AuditPipelineConfig, Overflow};
use metrics::Metrics;

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
                    writer::write_loop(sink, &rx, &metrics, batch);
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
        Ok(Self {
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
        })
    }

    /// The overflow mode.
    pub fn overflow(&self) -> Overflow {
        self.inner.overflow
    }

    /// Queues `event`, giving it the next sequence number.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Dropped`] (counted) or, in fail-closed mode,
    /// [`ErrorKind::Refused`] when the queue is full; [`ErrorKind::Closed`] after
    /// shutdown.
    pub fn record(&self, mut event: AuditEvent) -> Result<(), Error> {
        let metrics = &self.inner.metrics;
        let mut queue = self
            .inner
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let seq = queue.next_seq;
        let Some(tx) = &queue.tx else {
            return Err(Error::from_kind(ErrorKind::Closed));
        };
        event.set_seq(seq);
        let result = match self.inner.overflow {
            Overflow::Block(timeout) => tx.send_timeout(event, timeout).map_err(|e| match e {
                SendTimeoutError::Timeout(_) => Error::from_kind(ErrorKind::Dropped),
                SendTimeoutError::Disconnected(_) => Error::from_kind(ErrorKind::Closed),
            }),
            Overflow::DropAndCount => tx.try_send(event).map_err(|e| match e {
                TrySendError::Full(_) => Error::from_kind(ErrorKind::Dropped),
                TrySendError::Disconnected(_) => Error::from_kind(ErrorKind::Closed),
            }),
            Overflow::FailClosed => tx.try_send(event).map_err(|e| match e {
                TrySendError::Full(_) => Error::from_kind(ErrorKind::Refused),
                TrySendError::Disconnected(_) => Error::from_kind(ErrorKind::Closed),
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
