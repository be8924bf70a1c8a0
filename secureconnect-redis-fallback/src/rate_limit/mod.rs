//! A rate limiter shared through Redis that keeps deciding while Redis is away.
//!
//! With Redis healthy, every decision is one Lua script (GCRA, the generic cell rate
//! algorithm) run atomically in Redis, so all instances of a service share one limit
//! per key. When the client is degraded (or the call fails), the limiter's
//! [`Policy`] decides instead:
//!
//! | policy | decision without Redis |
//! |---|---|
//! | [`Policy::FailOpen`] | allow everything |
//! | [`Policy::FailClosed`] | refuse everything |
//! | [`Policy::LocalApprox`] | a local GCRA (`governor`) per key at `limit ÷ instances` |
//!
//! Every [`Decision`] says where it came from ([`Source`]), and is counted in
//! `rate_limit_decisions_total{limiter, source, decision}`; decisions taken without
//! Redis also count in `redis_fallback_total{primitive="rate_limiter", policy}`. Local
//! state is dropped, not merged, when Redis is healthy again.
//!
//! ```no_run
//! # async fn f(redis: secureconnect_redis_fallback::RedisClient) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use prometheus_client::registry::Registry;
//! use secureconnect_redis_fallback::rate_limit::{Policy, Quota, RateLimitMetrics, RateLimiter};
//!
//! let mut registry = Registry::default();
//! let metrics = RateLimitMetrics::register(&mut registry);
//! let limiter = RateLimiter::new(
//!     "api",
//!     redis,
//!     Quota::new(100, Duration::from_secs(60))?,
//!     Policy::LocalApprox { instances: 3 },
//!     &metrics,
//! );
//! let decision = limiter.check("user:42").await;
//! if !decision.allowed {
//!     println!("retry after {:?} ({})", decision.retry_after, decision.source);
//! }
//! # Ok(()) }
//! ```

mod layer;

use std::num::NonZeroU32;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::DefaultKeyedRateLimiter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

pub use self::layer::{KeyFn, RateLimitLayer, RateLimitService, ResponseFuture};
use crate::RedisClient;

/// GCRA in one atomic step. KEYS[1]: the key. ARGV[1]: emission interval (µs),
/// ARGV[2]: burst tolerance (µs). Returns {allowed, retry_after_us, remaining}.
const GCRA: &str = r"
local emission = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then
  return {0, allow_at - now, 0}
end
local new_tat = tat + emission
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, 0, math.floor((tolerance - (new_tat - now) + emission) / emission)}
";

/// At most how many keys the local limiter tracks before it forgets idle ones.
const LOCAL_KEYS: usize = 100_000;

/// `limit` requests per `period`, with bursts up to `limit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    limit: u32,
    period: Duration,
}

/// A quota that cannot be enforced.
#[derive(Debug, thiserror::Error)]
#[error("invalid quota: the limit and the period must be greater than zero")]
pub struct InvalidQuota;

impl Quota {
    /// `limit` requests per `period`.
    ///
    /// # Errors
    ///
    /// [`InvalidQuota`] if either is zero.
    pub fn new(limit: u32, period: Duration) -> Result<Self, InvalidQuota> {
        if limit == 0 || period.is_zero() {
            return Err(InvalidQuota);
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

    fn emission(&self) -> Duration {
        self.period / self.limit
    }

    /// This quota split among `instances`, at least one request per period.
    fn share(&self, instances: u32) -> Self {
        Self {
            limit: (self.limit / instances.max(1)).max(1),
            period: self.period,
        }
    }

    fn to_governor(self) -> governor::Quota {
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

/// Who took a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// The shared limit in Redis.
    Redis,
    /// The local approximation ([`Policy::LocalApprox`]).
    Local,
    /// [`Policy::FailOpen`] without Redis.
    FailOpen,
    /// [`Policy::FailClosed`] without Redis.
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

/// The outcome of [`RateLimiter::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go ahead.
    pub allowed: bool,
    /// When refused, how long until a request of this key would be allowed.
    pub retry_after: Duration,
    /// Who decided.
    pub source: Source,
}

type LocalLimiter = DefaultKeyedRateLimiter<String>;

#[derive(Debug)]
struct Inner {
    name: String,
    redis: RedisClient,
    quota: Quota,
    policy: Policy,
    script: redis::Script,
    local: RwLock<Option<Arc<LocalLimiter>>>,
    fallback: Counter,
    /// `[source][allowed]`, resolved once.
    decisions: [[Counter; 2]; 4],
}

const SOURCES: [Source; 4] = [
    Source::Redis,
    Source::Local,
    Source::FailOpen,
    Source::FailClosed,
];

/// The decision counters of every limiter of a service:
/// `rate_limit_decisions_total{limiter, source, decision}`. Register once per registry
/// and pass to each [`RateLimiter`].
#[derive(Clone, Debug)]
pub struct RateLimitMetrics {
    decisions: Family<Vec<(&'static str, String)>, Counter>,
}

impl RateLimitMetrics {
    /// Registers the family in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let decisions = Family::default();
        registry.register(
            "rate_limit_decisions",
            "Rate-limit decisions by limiter, source and outcome",
            decisions.clone(),
        );
        Self { decisions }
    }

    fn resolve(&self, limiter: &str) -> [[Counter; 2]; 4] {
        SOURCES.map(|source| {
            ["refused", "allowed"].map(|decision| {
                self.decisions.get_or_create_owned(&vec![
                    ("limiter", limiter.to_owned()),
                    ("source", source.as_str().to_owned()),
                    ("decision", decision.to_owned()),
                ])
            })
        })
    }
}

/// A named rate limiter; cheap to clone. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

impl RateLimiter {
    /// A limiter `name` (it names the Redis keys, `sc:rl:{name}:<key>`, and the
    /// metrics) enforcing `quota` per key. Must be called inside a Tokio runtime.
    pub fn new(
        name: impl Into<String>,
        redis: RedisClient,
        quota: Quota,
        policy: Policy,
        metrics: &RateLimitMetrics,
    ) -> Self {
        let name = name.into();
        let fallback = redis.fallback_counter("rate_limiter", policy.as_str());
        let decisions = metrics.resolve(&name);
        let inner = Arc::new(Inner {
            name,
            quota,
            policy,
            script: redis::Script::new(GCRA),
            local: RwLock::new(None),
            fallback,
            decisions,
            redis,
        });
        // The shared state in Redis is the truth again: local counts are not merged.
        inner.redis.on_healthy(Arc::downgrade(&inner), |inner| {
            inner
                .local
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
        });
        Self { inner }
    }

    /// The quota.
    pub fn quota(&self) -> Quota {
        self.inner.quota
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.inner.policy
    }

    /// Decides on one request of `key`. Never fails: without Redis the policy decides.
    pub async fn check(&self, key: &str) -> Decision {
        let inner = &*self.inner;
        let decision = match self.check_redis(key).await {
            Some(decision) => decision,
            None => {
                inner.fallback.inc();
                self.check_without_redis(key)
            }
        };
        let source = SOURCES
            .iter()
            .position(|s| *s == decision.source)
            .unwrap_or(0);
        inner.decisions[source][usize::from(decision.allowed)].inc();
        decision
    }

    async fn check_redis(&self, key: &str) -> Option<Decision> {
        let inner = &*self.inner;
        let emission = inner.quota.emission();
        let tolerance = emission * (inner.quota.limit - 1);
        let mut invocation = inner.script.prepare_invoke();
        invocation
            .key(format!("sc:rl:{{{}}}:{key}", inner.name))
            .arg(emission.as_micros() as u64)
            .arg(tolerance.as_micros() as u64);
        match inner
            .redis
            .invoke_script::<(i64, i64, i64)>(&invocation)
            .await
        {
            Ok((allowed, retry_us, _remaining)) => Some(Decision {
                allowed: allowed == 1,
                retry_after: Duration::from_micros(retry_us.max(0) as u64),
                source: Source::Redis,
            }),
            Err(error) => {
                if error.is_command_error() {
                    tracing::error!(
                        target: "secureconnect_redis_fallback",
                        limiter = %inner.name, %error, "rate-limit script failed; deciding locally"
                    );
                }
                None
            }
        }
    }

    fn check_without_redis(&self, key: &str) -> Decision {
        let inner = &*self.inner;
        match inner.policy {
            Policy::FailOpen => Decision {
                allowed: true,
                retry_after: Duration::ZERO,
                source: Source::FailOpen,
            },
            Policy::FailClosed => Decision {
                allowed: false,
                retry_after: Duration::from_secs(1),
                source: Source::FailClosed,
            },
            Policy::LocalApprox { instances } => {
                let limiter = self.local(instances);
                let key = key.to_owned();
                let outcome = limiter.check_key(&key);
                if limiter.len() > LOCAL_KEYS {
                    limiter.retain_recent();
                }
                match outcome {
                    Ok(()) => Decision {
                        allowed: true,
                        retry_after: Duration::ZERO,
                        source: Source::Local,
                    },
                    Err(not_until) => Decision {
                        allowed: false,
                        retry_after: not_until.wait_time_from(DefaultClock::default().now()),
                        source: Source::Local,
                    },
                }
            }
        }
    }

    fn local(&self, instances: u32) -> Arc<LocalLimiter> {
        if let Some(limiter) = &*self
            .inner
            .local
            .read()
            .unwrap_or_else(PoisonError::into_inner)
        {
            return Arc::clone(limiter);
        }
        let mut slot = self
            .inner
            .local
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(slot.get_or_insert_with(|| {
            Arc::new(LocalLimiter::keyed(
                self.inner.quota.share(instances).to_governor(),
            ))
        }))
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
