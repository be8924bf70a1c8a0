//! [`ResponseFuture`] of [`RateLimit`](super::RateLimit), and the 429 it answers.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::Decision;

type CheckFuture = Pin<Box<dyn Future<Output = Decision> + Send>>;

pin_project! {
    /// Response future of [`RateLimit`](super::RateLimit). It owns the inner service
    /// and the request while the limiter decides, hence its parameters.
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
        Checking { check: CheckFuture, request: Option<Request<B>>, inner: S, refusal: Refusal },
        Calling { #[pin] future: S::Future },
    }
}

impl<S: Service<Request<B>>, B> ResponseFuture<S, B> {
    pub(crate) fn calling(future: S::Future) -> Self {
        Self {
            state: State::Calling { future },
        }
    }

    pub(crate) fn checking(
        check: CheckFuture,
        request: Request<B>,
        inner: S,
        refusal: Refusal,
    ) -> Self {
        Self {
            state: State::Checking {
                check,
                request: Some(request),
                inner,
                refusal,
            },
        }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
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
                    refusal,
                } => {
                    let decision = ready!(check.as_mut().poll(cx));
                    let request = request.take().filter(|_| decision.allowed);
                    let Some(mut request) = request else {
                        return Poll::Ready(Ok(refusal.respond(decision)));
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

/// How a refusal is answered: `429` with `Retry-After` and `X-RateLimit-Source`, and a
/// body (empty unless set).
#[derive(Clone, Debug, Default)]
pub(crate) struct Refusal {
    body: Option<(HeaderValue, Bytes)>,
}

impl Refusal {
    pub(crate) fn with_body(content_type: HeaderValue, body: Bytes) -> Self {
        Self {
            body: Some((content_type, body)),
        }
    }

    fn respond<B: From<Bytes>>(&self, decision: Decision) -> Response<B> {
        let seconds =
            decision.retry_after.as_secs() + u64::from(decision.retry_after.subsec_nanos() > 0);
        let (content_type, body) = match &self.body {
            Some((content_type, body)) => (Some(content_type.clone()), body.clone()),
            None => (None, Bytes::new()),
        };
        let mut response = Response::new(B::from(body));
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        let headers = response.headers_mut();
        if let Some(content_type) = content_type {
            headers.insert(header::CONTENT_TYPE, content_type);
        }
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        headers.insert(
            "x-ratelimit-source",
            HeaderValue::from_static(decision.source.as_str()),
        );
        response.extensions_mut().insert(decision);
        response
    }
}
