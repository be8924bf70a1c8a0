//! [`ResponseFuture`]: hands the in-flight record from the request to the response body.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use super::{InFlight, ResponseBody, STATUS_SERVICE_ERROR};

pin_project! {
    /// Response future of [`HttpMetrics`](super::HttpMetrics).
    ///
    /// Hands the in-flight record to the response body; if this future is dropped before
    /// the response exists, the request is recorded with status 499.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, in_flight: Option<InFlight>) -> Self {
        Self { inner, in_flight }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let mut in_flight = this.in_flight.take();
        Poll::Ready(match result {
            Ok(response) => {
                if let Some(in_flight) = &mut in_flight {
                    in_flight.set_status(response.status().as_u16());
                }
                Ok(response.map(|body| ResponseBody::new(body, in_flight)))
            }
            Err(error) => {
                if let Some(mut in_flight) = in_flight {
                    in_flight.set_status(STATUS_SERVICE_ERROR);
                }
                Err(error)
            }
        })
    }
}
