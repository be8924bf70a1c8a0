//! The tower layer: `429 Too Many Requests` with `Retry-After`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{header, HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::{Decision, RateLimiter};

/// Extracts the rate-limit key of a request (a client address, a user id); `None`
/// lets the request through unlimited.
pub type KeyFn<B> = Arc<dyn Fn(&Request<B>) -> Option<String> + Send + Sync>;

/// [`Layer`] that checks every request against a [`RateLimiter`] and answers `429` with
/// `Retry-After` (whole seconds, rounded up) and `X-RateLimit-Source` when refused. An
/// allowed request carries its [`Decision`] in its extensions for the inner service; a
/// refusal carries it in the response's.
///
/// ```no_run
/// # fn f(limiter: secureconnect_redis_fallback::rate_limit::RateLimiter) {
/// use secureconnect_redis_fallback::rate_limit::RateLimitLayer;
///
/// let layer = RateLimitLayer::new(limiter, |req: &http::Request<axum::body::Body>| {
///     req.headers().get("x-user-id")?.to_str().ok().map(str::to_owned)
/// });
/// # let _ = layer; }
/// ```
pub struct RateLimitLayer<B> {
    limiter: RateLimiter,
    key: KeyFn<B>,
}

impl<B> RateLimitLayer<B> {
    /// Limits each request under the key `key` extracts.
    pub fn new(
        limiter: RateLimiter,
        key: impl Fn(&Request<B>) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            limiter,
            key: Arc::new(key),
        }
    }
}

impl<B> Clone for RateLimitLayer<B> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            key: Arc::clone(&self.key),
        }
    }
}

impl<B> std::fmt::Debug for RateLimitLayer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<S, B> Layer<S> for RateLimitLayer<B> {
    type Service = RateLimitService<S, B>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            limiter: self.limiter.clone(),
            key: Arc::clone(&self.key),
        }
    }
}

/// Middleware made by [`RateLimitLayer`].
pub struct RateLimitService<S, B> {
    inner: S,
    limiter: RateLimiter,
    key: KeyFn<B>,
}

impl<S: Clone, B> Clone for RateLimitService<S, B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            key: Arc::clone(&self.key),
        }
    }
}

impl<S: std::fmt::Debug, B> std::fmt::Debug for RateLimitService<S, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitService")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

type CheckFuture = Pin<Box<dyn Future<Output = Decision> + Send>>;

impl<S, B, ResBody> Service<Request<B>> for RateLimitService<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    ResBody: Default,
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
        let state = match (self.key)(&request) {
            None => State::Calling {
                future: inner.call(request),
            },
            Some(key) => {
                let limiter = self.limiter.clone();
                State::Checking {
                    check: Box::pin(async move { limiter.check(&key).await }),
                    request: Some(request),
                    inner,
                }
            }
        };
        ResponseFuture { state }
    }
}

pin_project! {
    /// Response future of [`RateLimitService`].
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        Checking { check: CheckFuture, request: Option<Request<B>>, inner: S },
        Calling { #[pin] future: S::Future },
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Checking {
                    check,
                    request,
                    inner,
                } => {
                    let decision = ready!(check.as_mut().poll(cx));
                    let request = request.take().filter(|_| decision.allowed);
                    let Some(mut request) = request else {
                        return Poll::Ready(Ok(too_many(decision)));
                    };
                    request.extensions_mut().insert(decision);
                    let future = inner.call(request);
                    this.state.set(State::Calling { future });
                }
                StateProj::Calling { future } => return future.poll(cx),
            }
        }
    }
}

fn too_many<B: Default>(decision: Decision) -> Response<B> {
    let seconds =
        decision.retry_after.as_secs() + u64::from(decision.retry_after.subsec_nanos() > 0);
    let mut response = Response::new(B::default());
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    headers.insert(
        "x-ratelimit-source",
        HeaderValue::from_static(decision.source.as_str()),
    );
    response.extensions_mut().insert(decision);
    response
}
