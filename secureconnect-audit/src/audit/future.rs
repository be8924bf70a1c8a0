//! [`ResponseFuture`]: records the response when the policy asks for it; in fail-closed
//! mode answers `503` for a request refused before its handler ran; in blocking mode
//! waits for room without blocking a thread.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::header::HeaderValue;
use http::{Response, StatusCode};
use pin_project_lite::pin_project;

use super::scope::{Held, Scope};
use crate::context::RequestContext;
use crate::event::{Actor, AuditEvent, Outcome};
use crate::pipeline::Wait;
use crate::Overflow;

pin_project! {
    /// Response future of [`Audit`](super::Audit).
    pub struct ResponseFuture<F>
    where
        F: Future,
    {
        #[pin]
        kind: Kind<F>,
        ctx: Option<Held>,
        waiting: Option<Waiting<F::Output>>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        /// The handler runs.
        Inner { #[pin] future: F },
        /// Refused before the handler (fail-closed, no room): `503`.
        Refused,
    }
}

/// A response held back while its event waits for room (blocking mode).
struct Waiting<O> {
    output: O,
    event: AuditEvent,
    wait: Wait,
    ctx: Held,
}

impl<F: Future> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("refused", &matches!(self.kind, Kind::Refused))
            .field("waiting", &self.waiting.is_some())
            .finish_non_exhaustive()
    }
}

impl<F: Future> ResponseFuture<F> {
    pub(super) fn new(future: F, ctx: Option<Held>) -> Self {
        Self {
            kind: Kind::Inner { future },
            ctx,
            waiting: None,
        }
    }

    pub(super) fn refused() -> Self {
        Self {
            kind: Kind::Refused,
            ctx: None,
            waiting: None,
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
        if let Some(waiting) = this.waiting {
            let room = ready!(waiting.wait.poll(cx));
            if let Some(Waiting {
                output, event, ctx, ..
            }) = this.waiting.take()
            {
                let pipeline = &ctx.get().shared().pipeline;
                // Dropped and counted when the time is up; the response goes out as is.
                let _ = if room {
                    pipeline.record_reserved(event)
                } else {
                    Err(pipeline.lost())
                };
                return Poll::Ready(output);
            }
        }
        let response = match this.kind.project() {
            KindProj::Refused => return Poll::Ready(Ok(unavailable())),
            KindProj::Inner { future } => {
                // Handlers inside find the context while it is lent (`Auditor`).
                let polled = {
                    let _scope = Scope::enter(this.ctx);
                    future.poll(cx)
                };
                ready!(polled)?
            }
        };
        let Some(held) = this.ctx.take() else {
            return Poll::Ready(Ok(response));
        };
        let ctx = held.get();
        let mut response = response;
        ctx.echo_request_id(response.headers_mut());
        let status = response.status().as_u16();
        let shared = ctx.shared();
        // One event per denial: an Auditor already recorded this one.
        let recorded_by_handler = matches!(status, 401 | 403) && ctx.denial_recorded();
        if recorded_by_handler || !shared.config.records(ctx.method(), status) {
            return Poll::Ready(Ok(response));
        }
        let actor = response
            .extensions()
            .get::<Actor>()
            .or_else(|| ctx.actor())
            .unwrap_or(&Actor::Anonymous);
        let event = http_event(ctx, actor, status, response.extensions());
        let pipeline = &shared.pipeline;
        if ctx.take_reserved() || pipeline.try_reserve() {
            let _ = pipeline.record_reserved(event);
            return Poll::Ready(Ok(response));
        }
        match pipeline.overflow() {
            // Room was reserved before the handler ran and an Auditor used it: the
            // handler acted, so its event is queued even past the capacity.
            Overflow::FailClosed => {
                let _ = pipeline.record_anyway(event);
                Poll::Ready(Ok(response))
            }
            Overflow::Block(timeout) => {
                let mut wait = pipeline.wait_for_room(timeout);
                match wait.poll(cx) {
                    Poll::Ready(room) => {
                        let _ = if room {
                            pipeline.record_reserved(event)
                        } else {
                            Err(pipeline.lost())
                        };
                        Poll::Ready(Ok(response))
                    }
                    Poll::Pending => {
                        *this.waiting = Some(Waiting {
                            output: Ok(response),
                            event,
                            wait,
                            ctx: held,
                        });
                        Poll::Pending
                    }
                }
            }
            Overflow::DropAndCount => {
                let _ = pipeline.lost();
                Poll::Ready(Ok(response))
            }
        }
    }
}

/// The `503` of a request refused because a fail-closed trail is full.
fn unavailable<B: Default>() -> Response<B> {
    let mut refused = Response::new(B::default());
    *refused.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    refused
        .headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    refused
}

/// The `http.request` event of a response.
fn http_event(
    ctx: &RequestContext,
    actor: &Actor,
    status: u16,
    response: &http::Extensions,
) -> AuditEvent {
    let defaults = ctx.defaults(response);
    let route = defaults.route();
    let outcome = match status {
        401 | 403 => Outcome::Denied,
        500.. => Outcome::Error,
        _ => Outcome::Allowed,
    };
    let mut builder = AuditEvent::builder("http.request", outcome)
        .actor(actor)
        .resource(route)
        .http(ctx.method(), route, Some(status));
    builder = match status {
        401 => builder.reason(
            "unauthenticated",
            "HTTP 401: missing or invalid credentials",
        ),
        403 => builder.reason("forbidden", "HTTP 403: not allowed"),
        500.. => {
            let mut text = *b"HTTP 000";
            for (i, digit) in [status / 100 % 10, status / 10 % 10, status % 10]
                .into_iter()
                .enumerate()
            {
                text[5 + i] = b'0' + digit as u8;
            }
            builder.reason(
                "server_error",
                std::str::from_utf8(&text).unwrap_or("HTTP 5xx"),
            )
        }
        _ => builder,
    };
    builder.with_defaults(&defaults).build()
}
