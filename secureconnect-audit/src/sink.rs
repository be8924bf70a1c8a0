//! Where events end up.
//!
//! | sink | for |
//! |---|---|
//! | [`TracingSink`] | the service's log stream: one `tracing` event per audit event, target `audit`, with the JSON in field `audit_event` (secureconnect-obs's JSON lines nest it as an object) |
//! | [`FileSink`] | a JSON-lines file, optionally hash-chained (see [`chain`](crate::chain)) |
//! | [`MemorySink`] | tests |
//!
//! Each writes the project's own JSON ([`Format::Native`]) or OCSF ([`Format::Ocsf`]).
//! A sink runs on the pipeline's writer thread, never on a request path.

use std::sync::{Arc, Mutex, PoisonError};

use crate::error::Error;
use crate::event::AuditEvent;

mod file;

pub use file::{FileSink, FileSinkConfig};

/// A destination for audit events. Runs on the writer thread.
pub trait AuditSink: Send + 'static {
    /// Writes a batch, in order.
    ///
    /// # Errors
    ///
    /// Any failure ([`Error::sink`], or an [`io::Error`](std::io::Error) through `?`); the whole batch
    /// counts as dropped.
    fn write(&mut self, events: &[AuditEvent]) -> Result<(), Error>;

    /// Makes written events durable (called at shutdown).
    ///
    /// # Errors
    ///
    /// Any failure.
    fn flush(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

/// The layout of written events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// This crate's JSON ([`AuditEvent`]'s fields).
    #[default]
    Native,
    /// OCSF 1.3: Web Resource Access Activity (6004) for HTTP events, File Hosting
    /// Activity (6006) for file events.
    Ocsf,
}

impl Format {
    /// One event as one JSON line, without the newline.
    pub fn render(self, event: &AuditEvent) -> String {
        match self {
            Self::Native => event.to_json(),
            Self::Ocsf => crate::ocsf::render(event).to_string(),
        }
    }

    /// Appends one event as one JSON line, without the newline, to `out`.
    pub(crate) fn render_into(self, event: &AuditEvent, out: &mut Vec<u8>) {
        // Serializing these types into a Vec cannot fail (see `AuditEvent::to_json`).
        let start = out.len();
        let written = match self {
            Self::Native => serde_json::to_writer(&mut *out, event),
            Self::Ocsf => serde_json::to_writer(&mut *out, &crate::ocsf::render(event)),
        };
        if written.is_err() {
            out.truncate(start);
            out.extend_from_slice(self.render(event).as_bytes());
        }
    }
}

/// Emits each event as a `tracing` event with target `audit` at level `INFO`
/// (`WARN` for denials), the whole event in the field `audit_event`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TracingSink {
    format: Format,
}

impl TracingSink {
    /// A tracing sink writing `format`.
    pub fn new(format: Format) -> Self {
        Self { format }
    }
}

impl AuditSink for TracingSink {
    fn write(&mut self, events: &[AuditEvent]) -> Result<(), Error> {
        for event in events {
            let json = self.format.render(event);
            if event.outcome() == crate::Outcome::Allowed {
                tracing::info!(target: "audit", audit_event = %json, "audit");
            } else {
                tracing::warn!(target: "audit", audit_event = %json, "audit");
            }
        }
        Ok(())
    }
}

/// Keeps events in memory, for tests. Clones share the same events.
#[derive(Clone, Debug, Default)]
pub struct MemorySink {
    events: Arc<Mutex<Vec<AuditEvent>>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of every event written so far.
    pub fn events(&self) -> Vec<AuditEvent> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl AuditSink for MemorySink {
    fn write(&mut self, events: &[AuditEvent]) -> Result<(), Error> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(events);
        Ok(())
    }
}
