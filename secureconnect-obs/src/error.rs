//! The one error type of this crate.

use std::fmt;
use std::path::PathBuf;

/// An error in the configuration of a metric, an endpoint or the logging set-up.
///
/// Match on [`kind`](Self::kind) (or ask an `is_*` predicate). `Display` describes
/// this error only; the underlying cause, if any, is in
/// [`source`](std::error::Error::source).
///
/// ```
/// use secureconnect_obs::{ErrorKind, HttpMetricsConfig, HttpMetricsLayer};
/// use prometheus_client::registry::Registry;
///
/// let config = HttpMetricsConfig::default().buckets([1.0, 0.5]);
/// let err = HttpMetricsLayer::new(config, &mut Registry::default()).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidBuckets);
/// assert!(err.is_invalid_config());
/// ```
#[derive(Debug)]
pub struct Error {
    repr: Repr,
}

/// What went wrong, for matching on an [`Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Histogram bucket bounds must be finite and strictly increasing, and there must be
    /// at least one.
    InvalidBuckets,
    /// A metric prefix or label name does not match `[a-zA-Z_][a-zA-Z0-9_]*`, starts
    /// with `__`, or is a constant label named like a request label.
    InvalidName,
    /// The metrics path must start with `/`.
    InvalidPath,
    /// A bearer token must be non-empty visible ASCII.
    InvalidToken,
    /// The `RUST_LOG` (or given) filter directive could not be parsed.
    InvalidFilter,
    /// The log directory could not be created or its file opened.
    LogDir,
    /// A global tracing subscriber was already installed.
    SubscriberAlreadySet,
    /// The thread that writes the log lines could not be started.
    LogWriter,
    /// The OTLP span exporter the environment asks for (`OTEL_EXPORTER_OTLP_*`) could
    /// not be built, e.g. a malformed endpoint (feature `otlp`).
    TraceExport,
}

#[derive(Debug, thiserror::Error)]
enum Repr {
    #[error("invalid histogram buckets {0:?}: bounds must be finite and strictly increasing")]
    InvalidBuckets(Vec<f64>),
    #[error("invalid {what} {name:?}: must match [a-zA-Z_][a-zA-Z0-9_]* and not start with __")]
    InvalidName { what: &'static str, name: String },
    #[error("invalid metrics path {0:?}: must start with '/'")]
    InvalidPath(String),
    #[error("invalid bearer token: must be non-empty visible ASCII")]
    InvalidToken,
    // The parser's explanation is the source, not part of this message.
    #[error("invalid log filter {directive:?}")]
    InvalidFilter {
        directive: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("cannot write logs under {dir:?}")]
    LogDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a global tracing subscriber is already installed")]
    SubscriberAlreadySet,
    #[error("cannot start the log writer thread")]
    LogWriter {
        #[source]
        source: std::io::Error,
    },
    #[error("cannot export spans as OTEL_EXPORTER_OTLP_* asks")]
    #[cfg_attr(not(feature = "otlp"), allow(dead_code))]
    TraceExport {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        match &self.repr {
            Repr::InvalidBuckets(_) => ErrorKind::InvalidBuckets,
            Repr::InvalidName { .. } => ErrorKind::InvalidName,
            Repr::InvalidPath(_) => ErrorKind::InvalidPath,
            Repr::InvalidToken => ErrorKind::InvalidToken,
            Repr::InvalidFilter { .. } => ErrorKind::InvalidFilter,
            Repr::LogDir { .. } => ErrorKind::LogDir,
            Repr::SubscriberAlreadySet => ErrorKind::SubscriberAlreadySet,
            Repr::LogWriter { .. } => ErrorKind::LogWriter,
            Repr::TraceExport { .. } => ErrorKind::TraceExport,
        }
    }

    /// Whether a configuration value was refused (buckets, a name, the path, the token
    /// or the log filter): fix the configuration.
    pub fn is_invalid_config(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::InvalidBuckets
                | ErrorKind::InvalidName
                | ErrorKind::InvalidPath
                | ErrorKind::InvalidToken
                | ErrorKind::InvalidFilter
        )
    }

    /// Whether the log directory could not be created or written.
    pub fn is_log_dir(&self) -> bool {
        self.kind() == ErrorKind::LogDir
    }

    /// Whether the thread that writes the log lines could not be started.
    pub fn is_log_writer(&self) -> bool {
        self.kind() == ErrorKind::LogWriter
    }

    /// Whether a global tracing subscriber was installed already.
    pub fn is_subscriber_already_set(&self) -> bool {
        self.kind() == ErrorKind::SubscriberAlreadySet
    }

    /// Whether the span exporter the environment asks for could not be built.
    pub fn is_trace_export(&self) -> bool {
        self.kind() == ErrorKind::TraceExport
    }

    #[cfg(feature = "otlp")]
    pub(crate) fn trace_export(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Repr::TraceExport {
            source: Box::new(source),
        }
        .into()
    }

    pub(crate) fn invalid_buckets(buckets: Vec<f64>) -> Self {
        Repr::InvalidBuckets(buckets).into()
    }

    pub(crate) fn invalid_name(what: &'static str, name: &str) -> Self {
        Repr::InvalidName {
            what,
            name: name.to_owned(),
        }
        .into()
    }

    pub(crate) fn invalid_path(path: &str) -> Self {
        Repr::InvalidPath(path.to_owned()).into()
    }

    pub(crate) fn invalid_token() -> Self {
        Repr::InvalidToken.into()
    }

    pub(crate) fn invalid_filter(
        directive: &str,
        source: tracing_subscriber::filter::ParseError,
    ) -> Self {
        Repr::InvalidFilter {
            directive: directive.to_owned(),
            source,
        }
        .into()
    }

    pub(crate) fn log_dir(dir: PathBuf, source: std::io::Error) -> Self {
        Repr::LogDir { dir, source }.into()
    }

    pub(crate) fn log_writer(source: std::io::Error) -> Self {
        Repr::LogWriter { source }.into()
    }

    pub(crate) fn subscriber_already_set() -> Self {
        Repr::SubscriberAlreadySet.into()
    }
}

impl From<Repr> for Error {
    fn from(repr: Repr) -> Self {
        Self { repr }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.repr, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.repr)
    }
}

/// Whether `name` is a valid Prometheus metric or label name (no colons).
pub(crate) fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    !name.starts_with("__") && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(crate) fn check_name(what: &'static str, name: &str) -> Result<(), Error> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(Error::invalid_name(what, name))
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn names() {
        assert!(is_valid_name("http_server"));
        assert!(is_valid_name("_x1"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("1abc"));
        assert!(!is_valid_name("__reserved"));
        assert!(!is_valid_name("a-b"));
        assert!(!is_valid_name("a:b"));
    }

    #[test]
    fn display_does_not_repeat_the_source() {
        let io = std::io::Error::other("disk on fire");
        let err = Error::log_dir(PathBuf::from("/var/log/x"), io);
        assert_eq!(err.kind(), ErrorKind::LogDir);
        assert!(err.is_log_dir() && !err.is_invalid_config());
        assert_eq!(err.to_string(), "cannot write logs under \"/var/log/x\"");
        assert_eq!(
            err.source().map(ToString::to_string).as_deref(),
            Some("disk on fire")
        );
    }
}
