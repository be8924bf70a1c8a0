//! What a limiter decided, and who decided it.

use std::time::Duration;

/// Who took a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// The shared limit in Redis.
    Redis,
    /// The local approximation ([`Policy::LocalApprox`](super::Policy::LocalApprox)).
    Local,
    /// [`Policy::FailOpen`](super::Policy::FailOpen) without Redis.
    FailOpen,
    /// [`Policy::FailClosed`](super::Policy::FailClosed) without Redis.
    FailClosed,
}

impl Source {
    /// The `source` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Local => "local",
            Self::FailOpen => "fail_open",
            Self::FailClosed => "fail_closed",
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of [`RateLimiter::check`](super::RateLimiter::check).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decision {
    /// Whether the request may go ahead.
    pub allowed: bool,
    /// When refused, how long until a request of this key would be allowed.
    pub retry_after: Duration,
    /// Who decided.
    pub source: Source,
}

/// Every source, in the order of the resolved counters.
pub(crate) const SOURCES: [Source; 4] = [
    Source::Redis,
    Source::Local,
    Source::FailOpen,
    Source::FailClosed,
];
