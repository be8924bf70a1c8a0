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
//! [`RateLimitLayer`] puts a limiter in front of a service ([`RateLimit`]), answering
//! `429 Too Many Requests` with `Retry-After` when it refuses. Here without Redis at
//! all, so the policy decides:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use prometheus_client::registry::Registry;
//! use secureconnect_redis_fallback::rate_limit::{
//!     Policy, Quota, RateLimit, RateLimitMetrics, RateLimiter, RateLimiterConfig,
//! };
//! use secureconnect_redis_fallback::{RedisClient, RedisClientConfig};
//! use tower_service::Service;
//!
//! let mut registry = Registry::default();
//! // Nothing listens there: the client stays degraded.
//! let redis = RedisClient::new(RedisClientConfig::new("redis://127.0.0.1:1/"), &mut registry)?;
//! let metrics = RateLimitMetrics::new(&mut registry);
//! let config = RateLimiterConfig::new("api", Quota::new(10, Duration::from_secs(60))?)
//!     .policy(Policy::FailClosed);
//! let limiter = RateLimiter::new(redis, config, &metrics);
//!
//! let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
//! let mut service = RateLimit::new(app, limiter, |_: &http::request::Parts| {
//!     Some("everyone".to_owned())
//! });
//! let request = http::Request::new(axum::body::Body::empty());
//! std::future::poll_fn(|cx| {
//!     Service::<http::Request<axum::body::Body>>::poll_ready(&mut service, cx)
//! })
//! .await?;
//! let response = service.call(request).await?;
//! assert_eq!(response.status(), http::StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(response.headers()["x-ratelimit-source"], "fail_closed");
//! assert_eq!(response.headers()["retry-after"], "1");
//! # Ok(()) }
//! ```
//!
//! ```no_run
//! # async fn f(redis: secureconnect_redis_fallback::RedisClient) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use prometheus_client::registry::Registry;
//! use secureconnect_redis_fallback::rate_limit::{
//!     Policy, Quota, RateLimitMetrics, RateLimiter, RateLimiterConfig,
//! };
//!
//! let mut registry = Registry::default();
//! let metrics = RateLimitMetrics::new(&mut registry);
//! let limiter = RateLimiter::new(
//!     redis,
//!     RateLimiterConfig::new("api", Quota::new(100, Duration::from_secs(60))?)
//!         .policy(Policy::LocalApprox { instances: 3 }),
//!     &metrics,
//! );
//! let decision = limiter.check("user:42").await;
//! if !decision.allowed {
//!     println!("retry after {:?} ({})", decision.retry_after, decision.source);
//! }
//! # Ok(()) }
//! ```

mod config;
mod decision;
mod future;
mod layer;
mod limiter;
mod metrics;
mod service;

pub use self::config::{Policy, Quota, RateLimiterConfig};
pub use self::decision::{Decision, Source};
pub use self::future::ResponseFuture;
pub use self::layer::RateLimitLayer;
pub use self::limiter::RateLimiter;
pub use self::metrics::RateLimitMetrics;
pub use self::service::RateLimit;
