//! [`ResponseFuture`]: runs the inner future inside the request's span and logs the
//! response.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use opentelemetry::trace::SpanContext;
use pin_project_lite::pin_project;
use tracing::Span;

pin_project! {
    /// Response future of [`RequestTrace`](super::RequestTrace).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        span: Span,
        span_context: Option<SpanContext>,
        start: quanta::Instant,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, span: Span, span_context: Option<SpanContext>) -> Self {
        Self {
            inner,
            span,
            span_context,
            start: quanta::Instant::now(),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let result = ready!(this.inner.poll(cx));
        let latency = quanta::Instant::now().saturating_duration_since(*this.start);
        match result {
            Ok(mut response) => {
                crate::trace::finished(response.status().as_u16(), latency);
                if let Some(span_context) = this.span_context.take() {
                    response.extensions_mut().insert(span_context);
                }
                Poll::Ready(Ok(response))
            }
            Err(error) => {
                crate::trace::failed(latency);
                Poll::Ready(Err(error))
            }
        }
    }
}
