//! [`RateLimit`]: the middleware made by [`RateLimitLayer`](super::RateLimitLayer).

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use tower_service::Service;

use super::future::{Refusal, ResponseFuture};
use super::RateLimiter;

/// Extracts the rate-limit key from a request's head.
pub(crate) type KeyFn = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

/// Checks every request against a [`RateLimiter`] before `S` sees it; see
/// [`RateLimitLayer`](super::RateLimitLayer).
pub struct RateLimit<S> {
    inner: S,
    limiter: RateLimiter,
    key: KeyFn,
    refusal: Refusal,
}

impl<S> RateLimit<S> {
    /// Limits the requests to `inner` under the key `key` extracts (`None`: unlimited),
    /// with an empty 429 body; for plain tower users (the layer is the usual way).
    pub fn new(
        inner: S,
        limiter: RateLimiter,
        key: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        Self::from_parts(inner, limiter, Arc::new(key), Refusal::default())
    }

    pub(crate) fn from_parts(inner: S, limiter: RateLimiter, key: KeyFn, refusal: Refusal) -> Self {
        Self {
            inner,
            limiter,
            key,
            refusal,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for RateLimit<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            key: Arc::clone(&self.key),
            refusal: self.refusal.clone(),
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<S, B, ResBody> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The service that was polled ready serves this request; a clone takes its
        // place for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = request.into_parts();
        let key = (self.key)(&parts);
        let request = Request::from_parts(parts, body);
        match key {
            None => ResponseFuture::calling(inner.call(request)),
            Some(key) => {
                let limiter = self.limiter.clone();
                ResponseFuture::checking(
                    Box::pin(async move { limiter.check(&key).await }),
                    request,
                    inner,
                    self.refusal.clone(),
                )
            }
        }
    }
}
