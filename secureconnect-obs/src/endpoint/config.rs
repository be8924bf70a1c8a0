//! [`MetricsEndpointConfig`]: where the endpoint answers and the bearer token it asks
//! for. Validated by [`MetricsEndpointLayer::new`](super::MetricsEndpointLayer::new)
//! and [`MetricsService::new`](super::MetricsService::new).

use std::fmt;
use std::sync::Arc;

use crate::Error;

/// Configuration of the `/metrics` endpoint ([`MetricsEndpointLayer`](super::MetricsEndpointLayer),
/// [`MetricsService`](super::MetricsService)).
///
/// The default: no bearer token, and no path set, which means `/metrics` for the layer
/// and every path for a stand-alone [`MetricsService`](super::MetricsService) (mount it
/// as a route and the router chooses). Setters never fail; the values are checked
/// once, when the layer or service is made.
///
/// ```
/// use secureconnect_obs::MetricsEndpointConfig;
///
/// let config = MetricsEndpointConfig::default()
///     .path("/internal/metrics")
///     .bearer_token("s3cret");
/// assert!(!format!("{config:?}").contains("s3cret"), "Debug hides the token");
/// ```
#[derive(Clone, Default)]
pub struct MetricsEndpointConfig {
    path: Option<String>,
    bearer_token: Option<String>,
}

impl MetricsEndpointConfig {
    /// Answers at `path` only; it must start with `/`. The layer answers at
    /// [`DEFAULT_PATH`](super::DEFAULT_PATH) when no path is set.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Requires `Authorization: Bearer <token>`; requests without it get `401`. The
    /// token must be non-empty visible ASCII.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(token.into());
        self
    }

    /// Checks the path and the token.
    pub(super) fn validate(self) -> Result<Validated, Error> {
        Ok(Validated {
            path: self.path.as_deref().map(checked_path).transpose()?,
            bearer: self
                .bearer_token
                .as_deref()
                .map(checked_token)
                .transpose()?,
        })
    }
}

impl fmt::Debug for MetricsEndpointConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsEndpointConfig")
            .field("path", &self.path)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<hidden>"),
            )
            .finish()
    }
}

/// A configuration that passed [`MetricsEndpointConfig::validate`].
#[derive(Debug)]
pub(super) struct Validated {
    pub(super) path: Option<Arc<str>>,
    pub(super) bearer: Option<Box<[u8]>>,
}

fn checked_path(path: &str) -> Result<Arc<str>, Error> {
    if path.starts_with('/') {
        Ok(path.into())
    } else {
        Err(Error::invalid_path(path))
    }
}

fn checked_token(token: &str) -> Result<Box<[u8]>, Error> {
    if !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(token.as_bytes().into())
    } else {
        Err(Error::invalid_token())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_and_path_checks() {
        assert!(checked_token("bad token").is_err());
        assert!(checked_token("").is_err());
        assert!(checked_path("metrics").is_err());
    }
}
