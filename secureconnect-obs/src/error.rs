//! Errors of this crate.

/// An error in the configuration of a metric, an endpoint or the logging set-up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Histogram bucket bounds must be finite and strictly increasing, and there must be
    /// at least one.
    #[error("invalid histogram buckets {0:?}: bounds must be finite and strictly increasing")]
    InvalidBuckets(Vec<f64>),
    /// A metric prefix or label name does not match `[a-zA-Z_][a-zA-Z0-9_]*`.
    #[error("invalid {kind} {name:?}: must match [a-zA-Z_][a-zA-Z0-9_]* and not start with __")]
    InvalidName {
        /// What the name was for (`metric prefix`, `label name`).
        kind: &'static str,
        /// The offending name.
        name: String,
    },
    /// The metrics path must start with `/`.
    #[error("invalid metrics path {0:?}: must start with '/'")]
    InvalidPath(String),
    /// A bearer token must be non-empty visible ASCII.
    #[error("invalid bearer token: must be non-empty visible ASCII")]
    InvalidToken,
    /// The `RUST_LOG` (or given) filter directive could not be parsed.
    #[error("invalid log filter {directive:?}: {source}")]
    InvalidFilter {
        /// The directive as given.
        directive: String,
        /// Why it was refused.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// The log directory could not be created or its file opened.
    #[error("cannot write logs under {dir:?}: {source}")]
    LogDir {
        /// The directory.
        dir: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A global tracing subscriber was already installed.
    #[error("a global tracing subscriber is already installed")]
    SubscriberAlreadySet,
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

pub(crate) fn check_name(kind: &'static str, name: &str) -> Result<(), Error> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(Error::InvalidName {
            kind,
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::is_valid_name;

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
}
