//! [`Audit`]: the middleware service. It captures the request context once, keeps it in
//! the [`ResponseFuture`] (lent to handlers while the inner service runs, see
//! `scope.rs`), which records the response.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::scope::Held;
use super::{AuditConfig, ResponseFuture, Shared};
use crate::context::RequestContext;
use crate::{AuditPipeline, Overflow};

/// Middleware that records every 401 and 403 (and what the
/// [`AuditPolicy`](crate::AuditPolicy) asks for); made by
/// [`AuditLayer`](crate::AuditLayer), or by [`Audit::new`] for plain tower users.
#[derive(Clone, Debug)]
pub struct Audit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Audit<S> {
    /// Wraps `inner`, recording into `pipeline` as `config` says.
    pub fn new(inner: S, pipeline: AuditPipeline, config: AuditConfig) -> Self {
        Self::from_shared(inner, Arc::new(Shared { pipeline, config }))
    }

    pub(super) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Audit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let pipeline = &self.shared.pipeline;
        // Fail-closed: room for the request's event before its handler runs, or no
        // handler at all.
        let reserved = pipeline.overflow() == Overflow::FailClosed;
        if reserved && !pipeline.try_reserve() {
            pipeline.refused_request();
            return ResponseFuture::refused();
        }
        let ctx = RequestContext::capture(&mut request, Arc::clone(&self.shared), reserved);
        // Kept in the future, lent to the thread while it polls the service inside
        // (where axum runs extractors and handlers): no allocation unless a handler
        // takes an `Auditor`.
        ResponseFuture::new(self.inner.call(request), Some(Held::Owned(ctx)))
    }
}
