//! [`RateLimitLayer`]: puts a [`RateLimiter`] in front of a service.

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::HeaderValue;
use tower_layer::Layer;

use super::future::Refusal;
use super::service::{KeyFn, RateLimit};
use super::RateLimiter;

/// [`Layer`] that checks every request against a [`RateLimiter`] and answers `429` with
/// `Retry-After` (whole seconds, rounded up) and `X-RateLimit-Source` when refused. An
/// allowed request carries its [`Decision`](super::Decision) in its extensions for the
/// inner service; a refusal carries it in the response's. The refusal's body is empty
/// unless [`refusal_body`](Self::refusal_body) sets one.
///
/// ```no_run
/// # fn f(limiter: secureconnect_redis_fallback::rate_limit::RateLimiter) {
/// use secureconnect_redis_fallback::rate_limit::RateLimitLayer;
///
/// let layer = RateLimitLayer::new(limiter, |req: &http::request::Parts| {
///     req.headers.get("x-user-id")?.to_str().ok().map(str::to_owned)
/// });
/// # let _ = layer; }
/// ```
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: RateLimiter,
    key: KeyFn,
    refusal: Refusal,
}

impl RateLimitLayer {
    /// Limits each request under the key `key` extracts from its head (a client
    /// address, a user id); `None` lets the request through unlimited.
    pub fn new(
        limiter: RateLimiter,
        key: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            limiter,
            key: Arc::new(key),
            refusal: Refusal::default(),
        }
    }

    /// Answers every refusal with this body and `Content-Type` (an API's JSON error,
    /// say) instead of an empty one.
    pub fn refusal_body(mut self, content_type: HeaderValue, body: impl Into<Bytes>) -> Self {
        self.refusal = Refusal::with_body(content_type, body.into());
        self
    }
}

impl std::fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limiter", &self.limiter)
            .field("refusal", &self.refusal)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::from_parts(
            inner,
            self.limiter.clone(),
            Arc::clone(&self.key),
            self.refusal.clone(),
        )
    }
}
