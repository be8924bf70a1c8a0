//! What a limiter enforces ([`Quota`]), what it does without Redis ([`Policy`]), and
//! its configuration ([`RateLimiterConfig`]).

use std::num::NonZeroU32;
use std::time::Duration;

use crate::{Error, ErrorKind};

/// `limit` requests per `period`, with bursts up to `limit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    limit: u32,
    period: Duration,
}

impl Quota {
    /// `limit` requests per `period`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidConfig`] if either is zero.
    pub fn new(limit: u32, period: Duration) -> Result<Self, Error> {
        if limit == 0 || period.is_zero() {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "invalid quota: the limit and the period must be greater than zero",
            ));
        }
        Ok(Self { limit, period })
    }

    /// The number of requests per period.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    pub(crate) fn emission(&self) -> Duration {
        self.period / self.limit
    }

    /// This quota split among `instances`, at least one request per period.
    pub(crate) fn share(&self, instances: u32) -> Self {
        Self {
            limit: (self.limit / instances.max(1)).max(1),
            period: self.period,
        }
    }

    pub(crate) fn to_governor(self) -> governor::Quota {
        let burst = NonZeroU32::new(self.limit).unwrap_or(NonZeroU32::MIN);
        governor::Quota::with_period(self.emission().max(Duration::from_nanos(1)))
            .unwrap_or_else(|| governor::Quota::per_second(burst))
            .allow_burst(burst)
    }
}

/// What a limiter does when Redis cannot decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Allow every request.
    FailOpen,
    /// Refuse every request.
    FailClosed,
    /// Limit each key locally to `limit ÷ instances`: with requests spread evenly over
    /// `instances` service instances, the total stays close to the shared limit.
    LocalApprox {
        /// How many instances of the service share the limit.
        instances: u32,
    },
}

impl Policy {
    /// `fail_open`, `fail_closed` or `local_approx`: the `policy` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FailOpen => "fail_open",
            Self::FailClosed => "fail_closed",
            Self::LocalApprox { .. } => "local_approx",
        }
    }
}

/// Configuration of a [`RateLimiter`](super::RateLimiter): its name, its quota per key
/// and its [`Policy`] without Redis.
///
/// ```
/// use std::time::Duration;
/// use secureconnect_redis_fallback::rate_limit::{Policy, Quota, RateLimiterConfig};
///
/// let config = RateLimiterConfig::new("api", Quota::new(100, Duration::from_secs(60))?)
///     .policy(Policy::LocalApprox { instances: 3 });
/// # Ok::<(), secureconnect_redis_fallback::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct RateLimiterConfig {
    pub(crate) name: String,
    pub(crate) quota: Quota,
    pub(crate) policy: Policy,
}

impl RateLimiterConfig {
    /// A limiter `name` (it names the Redis keys, `sc:rl:{<name>:<key>}`, one hash slot per key, and the
    /// metrics) enforcing `quota` per key, with the policy
    /// [`Policy::LocalApprox`] for one instance until [`policy`](Self::policy) says
    /// otherwise.
    pub fn new(name: impl Into<String>, quota: Quota) -> Self {
        Self {
            name: name.into(),
            quota,
            policy: Policy::LocalApprox { instances: 1 },
        }
    }

    /// What the limiter does when Redis cannot decide.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_shares_and_validation() {
        assert!(Quota::new(0, Duration::from_secs(1)).is_err());
        assert!(Quota::new(1, Duration::ZERO).is_err());
        let q = Quota::new(100, Duration::from_secs(10)).unwrap();
        assert_eq!(q.emission(), Duration::from_millis(100));
        assert_eq!(q.share(3).limit(), 33);
        assert_eq!(q.share(1000).limit(), 1);
    }
}
