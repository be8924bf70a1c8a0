//! The writer thread: drains the queue in batches into the sink, and survives a sink
//! that fails or panics (its batch is counted as dropped).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::{Receiver, TryRecvError};

use super::metrics::Metrics;
use super::slots::Slots;
use crate::error::Causes;
use crate::event::AuditEvent;
use crate::sink::AuditSink;

/// How often a busy writer looks at the queue. Between looks producers never have to
/// wake it (a wake-up is a system call, a microsecond or more on the request path).
const TICK: Duration = Duration::from_millis(1);
/// After this many empty looks the writer blocks until the next event.
const IDLE_TICKS: u32 = 50;

pub(super) fn write_loop(
    mut sink: impl AuditSink,
    rx: &Receiver<AuditEvent>,
    slots: &Slots,
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
        // Off the queue: their room is free for producers again.
        slots.give(batch.len());
        write_batch(&mut sink, &mut batch, rx, metrics);
    }
    if let Ok(Err(error)) = catch_unwind(AssertUnwindSafe(|| sink.flush())) {
        metrics.sink_errors.inc();
        tracing::error!(target: "audit", error = %Causes(&error), "audit sink failed to flush at shutdown");
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
            tracing::error!(target: "audit", error = %Causes(&error), lost = n, "audit sink failed");
        }
        Err(_) => {
            metrics.sink_errors.inc();
            metrics.dropped_sink.inc_by(n);
            tracing::error!(target: "audit", lost = n, "audit sink panicked");
        }
    }
    batch.clear();
}
