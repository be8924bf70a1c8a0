//! [`ResponseFuture`]: the metrics answer, ready at once, or the wrapped service's
//! future.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use pin_project_lite::pin_project;

use super::respond::plain;
use super::ResponseBody;

pin_project! {
    /// Response future of [`MetricsEndpoint`](super::MetricsEndpoint).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        kind: FutureKind<F>,
    }
}

pin_project! {
    #[project = FutureKindProj]
    #[derive(Debug)]
    enum FutureKind<F> {
        Ready { response: Option<Response<Full<Bytes>>> },
        Inner { #[pin] future: F },
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn ready(response: Response<Full<Bytes>>) -> Self {
        Self {
            kind: FutureKind::Ready {
                response: Some(response),
            },
        }
    }

    pub(super) fn inner(future: F) -> Self {
        Self {
            kind: FutureKind::Inner { future },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            FutureKindProj::Ready { response } => Poll::Ready(Ok(response
                .take()
                .unwrap_or_else(|| plain(StatusCode::INTERNAL_SERVER_ERROR, "polled twice\n"))
                .map(ResponseBody::metrics))),
            FutureKindProj::Inner { future } => future
                .poll(cx)
                .map_ok(|response| response.map(ResponseBody::inner)),
        }
    }
}
