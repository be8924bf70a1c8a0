//! The answer to a metrics request, shared by the layer and the stand-alone service:
//! the bearer-token check, negotiation, rendering and the HTTP response around them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use prometheus_client::registry::Registry;

use super::exposition::gzip;
use super::{accepts_gzip, negotiate, render};

/// What the layer and the stand-alone service share: the registry, the token and the
/// size of the last rendering (to allocate the next one in one go).
#[derive(Debug)]
pub(super) struct Responder {
    registry: Arc<Registry>,
    bearer: Option<Box<[u8]>>,
    last_len: AtomicUsize,
}

impl Responder {
    pub(super) fn new(registry: Arc<Registry>, bearer: Option<Box<[u8]>>) -> Self {
        Self {
            registry,
            bearer,
            last_len: AtomicUsize::new(4096),
        }
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.bearer else {
            return true;
        };
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .is_some_and(|given| constant_time_eq(given, expected))
    }

    pub(super) fn respond(&self, headers: &HeaderMap) -> Response<Full<Bytes>> {
        if !self.authorized(headers) {
            return plain(StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n")
                .with_header(header::WWW_AUTHENTICATE, "Bearer realm=\"metrics\"");
        }
        let header_str = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let format = negotiate(header_str(header::ACCEPT));
        let mut text = String::with_capacity(self.last_len.load(Ordering::Relaxed) + 1024);
        if let Err(error) = render(&mut text, &self.registry, format) {
            tracing::error!(%error, "a metric failed to encode; /metrics answered 500");
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "a registered metric failed to encode\n",
            );
        }
        self.last_len.store(text.len(), Ordering::Relaxed);

        let mut builder = Response::builder()
            .header(header::CONTENT_TYPE, format.content_type())
            .header(header::VARY, "accept, accept-encoding")
            .header(header::CACHE_CONTROL, "no-store");
        let body = if accepts_gzip(header_str(header::ACCEPT_ENCODING)) {
            match gzip(text.as_bytes()) {
                Ok(compressed) => {
                    builder = builder.header(header::CONTENT_ENCODING, "gzip");
                    Bytes::from(compressed)
                }
                Err(_) => Bytes::from(text),
            }
        } else {
            Bytes::from(text)
        };
        builder
            .body(Full::new(body))
            .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "\n"))
    }
}

/// Compares without an early exit, so the time taken does not reveal how much of a
/// guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(super) trait WithHeader {
    fn with_header(self, name: header::HeaderName, value: &'static str) -> Self;
}

impl WithHeader for Response<Full<Bytes>> {
    fn with_header(mut self, name: header::HeaderName, value: &'static str) -> Self {
        self.headers_mut()
            .insert(name, HeaderValue::from_static(value));
        self
    }
}

/// A short plain-text answer.
pub(super) fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.with_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
