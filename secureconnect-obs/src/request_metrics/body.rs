//! [`ResponseBody`]: records the request when the response body ends.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::InFlight;

pin_project! {
    /// Response body of [`HttpMetrics`](super::HttpMetrics).
    ///
    /// Records the request when the body has ended, failed or been dropped, whichever
    /// comes first.
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        in_flight: Option<InFlight>,
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn new(inner: B, in_flight: Option<InFlight>) -> Self {
        Self { inner, in_flight }
    }
}

/// An empty body that records nothing: what a middleware outside [`HttpMetrics`]
/// answers with when it refuses a request itself (an audit trail that is full in
/// fail-closed mode answers `503` with `ResponseBody::default()`).
///
/// [`HttpMetrics`]: super::HttpMetrics
impl<B: Default> Default for ResponseBody<B> {
    fn default() -> Self {
        Self::new(B::default(), None)
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        let finished = match &frame {
            Some(Ok(_)) => this.inner.is_end_stream(),
            Some(Err(_)) | None => true,
        };
        if finished {
            // Dropping the record stops the clock and releases the gauge.
            this.in_flight.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
