//! The crate's one error type: [`Error`], with its [`ErrorKind`].

use std::error::Error as StdError;
use std::fmt;
use std::io;

/// What went wrong, for matching. New kinds may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The queue was full and the event was dropped (counted).
    Dropped,
    /// The queue was full in fail-closed mode: the operation must be refused.
    Refused,
    /// The pipeline was shut down.
    Closed,
    /// A sink failed to write or flush (I/O or its own failure, in
    /// [`source`](std::error::Error::source)).
    Sink,
    /// A configuration value is out of range or does not fit: an
    /// [`AuditPipelineConfig`](crate::AuditPipelineConfig) value, a short
    /// [`ChainKey`](crate::chain::ChainKey), a [`FileSink`](crate::FileSink) opened
    /// twice with different configurations or with the wrong key.
    InvalidConfig,
    /// A trusted proxy that is not an address or `ADDRESS/PREFIX`.
    InvalidProxy,
    /// A [`Checkpoint`](crate::chain::Checkpoint) that is not `LINES:HASH`.
    InvalidCheckpoint,
    /// Another process writes the audit file (see
    /// [`FileSink::open`](crate::FileSink::open)).
    Locked,
}

/// The error of every fallible operation of this crate: see [`kind`](Self::kind).
///
/// Its `Display` describes this level only; the cause, when there is one (an I/O error
/// of a sink), is its [`source`](std::error::Error::source).
///
/// ```
/// use secureconnect_audit::{Error, ErrorKind};
///
/// let error = Error::from(std::io::Error::other("disk full"));
/// assert_eq!(error.kind(), ErrorKind::Sink);
/// assert_eq!(error.to_string(), "audit sink failed");
/// assert_eq!(std::error::Error::source(&error).unwrap().to_string(), "disk full");
/// ```
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    /// What this level adds to the kind's text (the offending value); never a cause.
    detail: Option<Box<str>>,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl Error {
    pub(crate) const fn from_kind(kind: ErrorKind) -> Self {
        Self {
            kind,
            detail: None,
            source: None,
        }
    }

    pub(crate) fn with_detail(kind: ErrorKind, detail: impl Into<Box<str>>) -> Self {
        Self {
            kind,
            detail: Some(detail.into()),
            source: None,
        }
    }

    /// A sink failure caused by `cause` (an error, or a message), for custom
    /// [`AuditSink`](crate::AuditSink)s.
    ///
    /// ```
    /// let error = secureconnect_audit::Error::sink("disk on fire");
    /// assert!(error.is_sink());
    /// ```
    pub fn sink(cause: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self {
            kind: ErrorKind::Sink,
            detail: None,
            source: Some(cause.into()),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The event was dropped because the queue was full (counted).
    pub fn is_dropped(&self) -> bool {
        self.kind == ErrorKind::Dropped
    }

    /// Fail-closed refusal: the trail cannot take the event, so the operation must not
    /// proceed (the layer answers `503`).
    pub fn is_refused(&self) -> bool {
        self.kind == ErrorKind::Refused
    }

    /// The pipeline was shut down.
    pub fn is_closed(&self) -> bool {
        self.kind == ErrorKind::Closed
    }

    /// A sink failed.
    pub fn is_sink(&self) -> bool {
        self.kind == ErrorKind::Sink
    }

    /// Another process writes the audit file.
    pub fn is_locked(&self) -> bool {
        self.kind == ErrorKind::Locked
    }

    /// A configuration value, trusted proxy or checkpoint was malformed.
    pub fn is_invalid(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::InvalidConfig | ErrorKind::InvalidProxy | ErrorKind::InvalidCheckpoint
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let detail = self.detail.as_deref().unwrap_or_default();
        match self.kind {
            ErrorKind::Dropped => f.write_str("audit queue full: event dropped"),
            ErrorKind::Refused => {
                f.write_str("audit trail unavailable: the operation must be refused")
            }
            ErrorKind::Closed => f.write_str("audit pipeline shut down"),
            ErrorKind::Sink => f.write_str("audit sink failed"),
            ErrorKind::InvalidConfig => write!(f, "invalid audit configuration: {detail}"),
            ErrorKind::InvalidProxy => write!(
                f,
                "invalid trusted proxy {detail:?}: expected an address or ADDRESS/PREFIX"
            ),
            ErrorKind::InvalidCheckpoint => {
                f.write_str("a checkpoint is LINES:HASH, with 64 lowercase hex digits")
            }
            ErrorKind::Locked => write!(
                f,
                "audit file {detail} is written by another process (one writer per file)"
            ),
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

impl From<io::Error> for Error {
    fn from(error: io::Error) -> Self {
        Self::sink(error)
    }
}

/// An error and its causes, `: `-separated, for the one log line that reports it
/// (each `Display` describes its own level only).
pub(crate) struct Causes<'a>(pub(crate) &'a (dyn StdError + 'static));

impl fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
