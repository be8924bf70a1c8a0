//! The limiter: GCRA in one Lua script in Redis, the [`Policy`] without it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::DefaultKeyedRateLimiter;
use prometheus_client::metrics::counter::Counter;

use super::config::{Policy, Quota, RateLimiterConfig};
use super::decision::{Decision, Source, SOURCES};
use super::metrics::RateLimitMetrics;
use crate::error::Chain;
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
    /// Whether a refusal of the script (`NOPERM`, a bug) was logged at `error`: once,
    /// then at `debug`, so a refusing ACL does not flood the log.
    refusal_logged: AtomicBool,
}

/// The Redis key of `key` in limiter `name`: the whole of it is the hash tag, so a
/// Cluster spreads a limiter's keys over every slot instead of one hot slot.
pub(crate) fn redis_key(name: &str, key: &str) -> String {
    format!("sc:rl:{{{name}:{key}}}")
}

/// A named rate limiter; cheap to clone. See the [module docs](super).
#[derive(Clone, Debug)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

impl RateLimiter {
    /// A limiter on `redis` as `config` says, counting its decisions in `metrics`.
    /// Must be called inside a Tokio runtime.
    pub fn new(redis: RedisClient, config: RateLimiterConfig, metrics: &RateLimitMetrics) -> Self {
        let RateLimiterConfig {
            name,
            quota,
            policy,
        } = config;
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
            refusal_logged: AtomicBool::new(false),
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
        let tolerance = emission * (inner.quota.limit() - 1);
        let mut invocation = inner.script.prepare_invoke();
        invocation
            .key(redis_key(&inner.name, key))
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
                // Redis refused this call (an ACL without scripting, a bug): this call
                // takes the policy; the client stays healthy.
                if error.is_command_error() || error.is_permission_denied() {
                    if inner.refusal_logged.swap(true, Ordering::Relaxed) {
                        tracing::debug!(
                            target: "secureconnect_redis_fallback",
                            limiter = %inner.name, error = %Chain(&error), "rate-limit script refused; deciding without Redis"
                        );
                    } else {
                        tracing::error!(
                            target: "secureconnect_redis_fallback",
                            limiter = %inner.name, error = %Chain(&error), "rate-limit script refused; deciding without Redis (logged once)"
                        );
                    }
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
    use crate::cluster::key_slot;

    #[test]
    fn each_key_of_a_limiter_has_a_slot_of_its_own() {
        assert_eq!(redis_key("login", "alice"), "sc:rl:{login:alice}");
        let slots: std::collections::HashSet<u16> = (0..1000)
            .map(|i| key_slot(redis_key("login", &format!("user-{i}")).as_bytes()))
            .collect();
        assert!(
            slots.len() > 900,
            "spread over the cluster: {}",
            slots.len()
        );
    }
}
