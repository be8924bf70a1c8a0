//! The crate's one error type: what went wrong, for callers that branch on it.

use std::fmt;

/// What went wrong, for callers that branch on it. More kinds may be added; prefer the
/// predicates on [`Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Redis is unavailable as this client sees it: the call was refused at once
    /// because the client is degraded, or it failed with a connection error or a
    /// server state such as `LOADING`, `BUSY`, `MASTERDOWN`, `CLUSTERDOWN`,
    /// `TRYAGAIN`, `NOAUTH`, or, on a Cluster, the master of the key's slot is down.
    /// Take the fallback.
    Unavailable,
    /// The call did not complete within its deadline. Take the fallback.
    Timeout,
    /// Writes are refused (`OOM`, `READONLY`): reads still work. Take the fallback for
    /// writes.
    WritesUnavailable,
    /// An ACL refuses this command or key to this client's user (`NOPERM`). Not a
    /// health signal: the caller's error (take a fallback for this call, fix the ACL).
    PermissionDenied,
    /// Redis answered with an error about the command itself (`WRONGTYPE`,
    /// `NOSCRIPT`, wrong arguments, a reply of an unexpected type). Not a health signal:
    /// the caller's bug.
    Command,
    /// The configuration (URL, durations, a rate-limit quota) is invalid.
    InvalidConfig,
}

/// The error of this crate: a Redis call made through [`RedisClient`](crate::RedisClient),
/// or a configuration refused at construction.
///
/// Its `Display` describes this level only; the Redis error behind it, if any, is its
/// [`source`](std::error::Error::source).
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: &'static str,
    source: Option<redis::RedisError>,
}

impl Error {
    pub(crate) const fn new(kind: ErrorKind, message: &'static str) -> Self {
        Self {
            kind,
            message,
            source: None,
        }
    }

    pub(crate) fn with_source(
        kind: ErrorKind,
        message: &'static str,
        source: redis::RedisError,
    ) -> Self {
        Self {
            kind,
            message,
            source: Some(source),
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the caller should take its fallback: Redis is unavailable, the call
    /// timed out, or writes are refused. Never a refusal of the call itself.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::WritesUnavailable
        )
    }

    /// Whether the call ran out of time.
    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::Timeout
    }

    /// Whether the configuration was refused at construction.
    pub fn is_invalid_config(&self) -> bool {
        self.kind == ErrorKind::InvalidConfig
    }

    /// Whether Redis rejected the command itself (the caller's error).
    pub fn is_command_error(&self) -> bool {
        self.kind == ErrorKind::Command
    }

    /// Whether an ACL refused the command or key (`NOPERM`): the caller's error.
    pub fn is_permission_denied(&self) -> bool {
        self.kind == ErrorKind::PermissionDenied
    }

    /// The Redis error, when there was one.
    pub fn redis_error(&self) -> Option<&redis::RedisError> {
        self.source.as_ref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ErrorKind::Unavailable => "redis unavailable",
            ErrorKind::Timeout => "redis call timed out",
            ErrorKind::WritesUnavailable => "redis refuses writes",
            ErrorKind::Command => "redis rejected the command",
            ErrorKind::PermissionDenied => "redis refuses this command to this user",
            ErrorKind::InvalidConfig => "invalid configuration",
        };
        f.write_str(what)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        // The Redis error is the source, not part of this message: reporters that walk
        // the chain would print it twice.
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// An error and its causes, `: `-separated, for the one log line that reports it
/// (each `Display` describes its own level only).
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
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

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn display_describes_this_level_and_leaves_the_cause_to_source() {
        let cause = redis::make_extension_error("WRONGTYPE".to_owned(), Some("not a list".into()));
        let cause_text = cause.to_string();
        let error = Error::with_source(ErrorKind::Command, "", cause);
        assert_eq!(error.to_string(), "redis rejected the command");
        assert_eq!(error.source().map(ToString::to_string), Some(cause_text));
        let error = Error::new(ErrorKind::Unavailable, "client is degraded");
        assert_eq!(error.to_string(), "redis unavailable: client is degraded");
        assert!(error.source().is_none());
        assert!(error.is_unavailable());
    }
}
