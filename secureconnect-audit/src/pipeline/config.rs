//! [`AuditPipelineConfig`] and its [`Overflow`] modes.

use std::time::Duration;

use crate::error::{Error, ErrorKind};

/// What a producer does when the queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Drop the event and count it in `audit_events_dropped_total{reason="queue_full"}`.
    /// Requests are never slowed down.
    DropAndCount,
    /// Wait up to this long for room, then drop and count. Nobody holds a lock while
    /// waiting, so producers wait side by side, each at most this long. The layer
    /// waits for its event without blocking a thread (the request's task is parked);
    /// [`AuditPipeline::record`](crate::AuditPipeline::record) and
    /// [`Auditor`](crate::Auditor) calls wait on the calling thread.
    Block(Duration),
    /// Refuse. The layer reserves room for one event before each request's handler
    /// runs and, when there is none, answers `503` without running it, so a refused
    /// request changed nothing (each request in flight holds its room until its event
    /// is queued or it ends). [`AuditPipeline::record`](crate::AuditPipeline::record)
    /// returns an error with [`is_refused`](crate::Error::is_refused), so a handler can
    /// refuse its operation; an [`Auditor`](crate::Auditor) uses its request's room
    /// first.
    FailClosed,
}

/// Configuration of an [`AuditPipeline`](crate::AuditPipeline).
///
/// ```
/// use std::time::Duration;
/// use secureconnect_audit::{AuditPipelineConfig, Overflow};
///
/// let config = AuditPipelineConfig::default()
///     .capacity(1024)
///     .overflow(Overflow::Block(Duration::from_millis(5)))
///     .batch(64);
/// ```
///
/// Values are checked once, by [`AuditPipeline::new`](crate::AuditPipeline::new).
#[derive(Clone, Copy, Debug)]
pub struct AuditPipelineConfig {
    pub(super) capacity: usize,
    pub(super) overflow: Overflow,
    pub(super) batch: usize,
}

impl Default for AuditPipelineConfig {
    fn default() -> Self {
        Self {
            capacity: 16_384,
            overflow: Overflow::DropAndCount,
            batch: 256,
        }
    }
}

impl AuditPipelineConfig {
    /// At most `capacity` events queued (default 16,384; at least 1).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// What to do when the queue is full (default [`Overflow::DropAndCount`]).
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// At most `batch` events handed to the sink in one write (default 256; at least
    /// 1).
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch;
        self
    }

    pub(super) fn validate(&self) -> Result<(), Error> {
        if self.capacity == 0 {
            return Err(Error::with_detail(
                ErrorKind::InvalidConfig,
                "the queue capacity must be at least 1",
            ));
        }
        if self.batch == 0 {
            return Err(Error::with_detail(
                ErrorKind::InvalidConfig,
                "the batch size must be at least 1",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_capacity_or_batch_is_refused_once_in_new() {
        assert!(AuditPipelineConfig::default().validate().is_ok());
        for config in [
            AuditPipelineConfig::default().capacity(0),
            AuditPipelineConfig::default().batch(0),
        ] {
            let error = config.validate().unwrap_err();
            assert_eq!(error.kind(), ErrorKind::InvalidConfig);
            assert!(error.to_string().contains("at least 1"), "{error}");
        }
    }
}
