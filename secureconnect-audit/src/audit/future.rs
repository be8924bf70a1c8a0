//! [`ResponseFuture`]: records the response when the policy asks for it, and answers
//! `503` instead when a fail-closed trail cannot take the event.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::header::HeaderValue;
use http::{Response, StatusCode};
use pin_project_lite::pin_project;

use crate::context::{method_label, RequestContext};
use crate::event::{Actor, AuditEvent, Outcome};

pin_project! {
    /// Response future of [`Audit`](super::Audit).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        ctx: Option<Arc<RequestContext>>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, ctx: Arc<RequestContext>) -> Self {
        Self {
            inner,
            ctx: Some(ctx),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Default,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let status = response.status().as_u16();
        let Some(ctx) = this.ctx.take() else {
            return Poll::Ready(Ok(response));
        };
        let shared = ctx.shared();
        if !shared.config.records(ctx.method(), status) {
            return Poll::Ready(Ok(response));
        }
        let actor = response
            .extensions()
            .get::<Actor>()
            .or_else(|| ctx.actor())
            .cloned()
            .unwrap_or(Actor::Anonymous);
        let event = http_event(&ctx, actor, status);
        match shared.pipeline.record(event) {
            Err(error) if error.is_refused() => {
                let mut refused = Response::new(B::default());
                *refused.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                refused
                    .headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
                Poll::Ready(Ok(refused))
            }
            _ => Poll::Ready(Ok(response)),
        }
    }
}

/// The `http.request` event of a response.
fn http_event(ctx: &RequestContext, actor: Actor, status: u16) -> AuditEvent {
    let defaults = ctx.defaults();
    let route = defaults.route();
    let outcome = match status {
        401 | 403 => Outcome::Denied,
        500.. => Outcome::Error,
        _ => Outcome::Allowed,
    };
    let mut builder = AuditEvent::builder("http.request", outcome)
        .actor(actor)
        .resource(route.clone())
        .http(method_label(ctx.method()), route, Some(status));
    builder = match status {
        401 => builder.reason(
            "unauthenticated",
            "HTTP 401: missing or invalid credentials",
        ),
        403 => builder.reason("forbidden", "HTTP 403: not allowed"),
        500.. => builder.reason("server_error", format!("HTTP {status}")),
        _ => builder,
    };
    builder.with_defaults(&defaults).build()
}
