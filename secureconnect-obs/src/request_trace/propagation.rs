//! W3C trace context in HTTP headers: [`extract`] from an incoming request, [`inject`]
//! into an outgoing one.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let Ok(name) = HeaderName::from_bytes(key.as_bytes()) else {
            return;
        };
        if value.is_empty() {
            self.0.remove(name);
        } else if let Ok(value) = HeaderValue::from_str(&value) {
            self.0.insert(name, value);
        }
    }
}

/// The remote context of `headers`' `traceparent` (and `tracestate`); an empty context
/// when there is none or it is malformed (then a new trace starts).
pub fn extract(headers: &HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Writes the trace context of `span` into `headers` as `traceparent` (and `tracestate`
/// when it has one), replacing what they carried: the service they go to continues the
/// trace as a child of `span`. Without a trace context (no OpenTelemetry layer in the
/// subscriber, or a disabled span) `headers` keep what they have.
///
/// ```
/// # let mut request = http::Request::new(());
/// // In a handler inside `RequestTraceLayer`, before sending `request` upstream:
/// secureconnect_obs::request_trace::inject(&tracing::Span::current(), request.headers_mut());
/// ```
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
    }
}
