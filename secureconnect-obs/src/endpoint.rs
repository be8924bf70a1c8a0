//! The `/metrics` endpoint: a layer that answers `GET /metrics` and passes everything
//! else through, and a stand-alone service for a separate listener.
//!
//! Rendering is kept apart from serving: [`negotiate`] picks the exposition format
//! from `Accept`, [`render`] encodes a registry, and both are pure functions.
//!
//! - OpenMetrics text (`application/openmetrics-text; version=1.0.0`, ending `# EOF`)
//!   when the client's `Accept` prefers it, as Prometheus does by default;
//!   otherwise the Prometheus text format with the exact content type
//!   `text/plain; version=0.0.4; charset=utf-8`.
//! - gzip when `Accept-Encoding` accepts it.
//! - An optional bearer token: without the right `Authorization: Bearer …` header the
//!   endpoint answers `401`.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use axum::{routing::get, Router};
//! use prometheus_client::registry::Registry;
//! use secureconnect_obs::MetricsEndpointLayer;
//!
//! let registry = Arc::new(Registry::default());
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(MetricsEndpointLayer::new(registry).with_bearer_token("s3cret")?);
//! # Ok::<(), secureconnect_obs::Error>(())
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;
use prometheus_client::registry::Registry;
use tower_layer::Layer;
use tower_service::Service;

use crate::Error;

/// The default path of the endpoint.
pub const DEFAULT_PATH: &str = "/metrics";

/// An exposition format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4.
    Prometheus,
    /// OpenMetrics text, version 1.0.0.
    OpenMetrics,
}

impl Format {
    /// The exact `Content-Type` of the format.
    pub const fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Picks the format from an `Accept` header value.
///
/// OpenMetrics is chosen when the client gives `application/openmetrics-text` a
/// quality at least as high as `text/plain` (or `*/*`); anything else, a missing
/// header included, gets the Prometheus text format.
///
/// ```
/// use secureconnect_obs::endpoint::{negotiate, Format};
///
/// // What Prometheus sends by default:
/// let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,\
///     application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
/// assert_eq!(negotiate(Some(prometheus)), Format::OpenMetrics);
/// assert_eq!(negotiate(Some("text/plain")), Format::Prometheus);
/// assert_eq!(negotiate(None), Format::Prometheus);
/// ```
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Prometheus;
    };
    let mut openmetrics = 0.0f32;
    let mut text = 0.0f32;
    for (media_type, params) in media_ranges(accept) {
        let q = quality(params);
        if media_type.eq_ignore_ascii_case("application/openmetrics-text") {
            let version_ok = params
                .split(';')
                .filter_map(|p| p.trim().split_once('='))
                .filter(|(k, _)| k.trim().eq_ignore_ascii_case("version"))
                .all(|(_, v)| v.trim() == "1.0.0");
            if version_ok {
                openmetrics = openmetrics.max(q);
            }
        } else if media_type.eq_ignore_ascii_case("text/plain")
            || media_type == "text/*"
            || media_type == "*/*"
        {
            text = text.max(q);
        }
    }
    if openmetrics > 0.0 && openmetrics >= text {
        Format::OpenMetrics
    } else {
        Format::Prometheus
    }
}

/// Whether an `Accept-Encoding` header value accepts gzip (`gzip` or `*` with a
/// non-zero quality).
///
/// ```
/// use secureconnect_obs::endpoint::accepts_gzip;
///
/// assert!(accepts_gzip(Some("gzip, deflate")));
/// assert!(!accepts_gzip(Some("gzip;q=0, br")));
/// assert!(!accepts_gzip(None));
/// ```
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    accept_encoding.is_some_and(|value| {
        media_ranges(value).any(|(coding, params)| {
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && quality(params) > 0.0
        })
    })
}

/// Splits a header value into `(token, parameters)` pairs.
fn media_ranges(value: &str) -> impl Iterator<Item = (&str, &str)> {
    value.split(',').filter_map(|part| {
        let part = part.trim();
        let (token, params) = part.split_once(';').unwrap_or((part, ""));
        let token = token.trim();
        (!token.is_empty()).then_some((token, params))
    })
}

/// The `q` parameter of a media range, 1 when absent, 0 when malformed.
fn quality(params: &str) -> f32 {
    params
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
        .map_or(1.0, |(_, v)| {
            v.trim()
                .parse::<f32>()
                .ok()
                .filter(|q| (0.0..=1.0).contains(q))
                .unwrap_or(0.0)
        })
}

/// Encodes `registry` in `format` into `buffer`.
///
/// # Errors
///
/// Fails only if a registered metric or collector fails to encode itself.
pub fn render(
    buffer: &mut String,
    registry: &Registry,
    format: Format,
) -> Result<(), std::fmt::Error> {
    match format {
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(buffer, registry)
        }
        Format::OpenMetrics => prometheus_client::encoding::text::encode(buffer, registry),
    }
}

/// Compresses `data` with gzip.
fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    encoder.write_all(data)?;
    encoder.finish()
}

/// Compares without an early exit, so the time taken does not reveal how much of a
/// guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the layer and the stand-alone service share: the registry, the token and the
/// size of the last rendering (to allocate the next one in one go).
#[derive(Debug)]
struct Exposition {
    registry: Arc<Registry>,
    bearer: Option<Box<[u8]>>,
    last_len: AtomicUsize,
}

impl Exposition {
    fn new(registry: Arc<Registry>) -> Self {
        Self {
            registry,
            bearer: None,
            last_len: AtomicUsize::new(4096),
        }
    }

    /// The same registry, guarded by `token`.
    fn with_token(&self, token: &str) -> Result<Self, Error> {
        Ok(Self {
            bearer: Some(checked_token(token)?),
            ..Self::new(Arc::clone(&self.registry))
        })
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

    fn respond(&self, headers: &HeaderMap) -> Response<Full<Bytes>> {
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

trait WithHeader {
    fn with_header(self, name: header::HeaderName, value: &'static str) -> Self;
}

impl WithHeader for Response<Full<Bytes>> {
    fn with_header(mut self, name: header::HeaderName, value: &'static str) -> Self {
        self.headers_mut()
            .insert(name, HeaderValue::from_static(value));
        self
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.with_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
}

fn checked_path(path: &str) -> Result<Arc<str>, Error> {
    if path.starts_with('/') {
        Ok(path.into())
    } else {
        Err(Error::InvalidPath(path.to_owned()))
    }
}

fn checked_token(token: &str) -> Result<Box<[u8]>, Error> {
    if !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(token.as_bytes().into())
    } else {
        Err(Error::InvalidToken)
    }
}

/// [`Layer`] that answers `GET /metrics` (path configurable) and passes every other
/// request to the wrapped service. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct MetricsEndpointLayer {
    exposition: Arc<Exposition>,
    path: Arc<str>,
}

impl MetricsEndpointLayer {
    /// Serves `registry` at `/metrics`, without a token.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self {
            exposition: Arc::new(Exposition::new(registry)),
            path: DEFAULT_PATH.into(),
        }
    }

    /// Serves at `path` instead of `/metrics`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPath`] if `path` does not start with `/`.
    pub fn with_path(mut self, path: &str) -> Result<Self, Error> {
        self.path = checked_path(path)?;
        Ok(self)
    }

    /// Requires `Authorization: Bearer <token>`; other requests to the path get 401.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidToken`] if the token is empty or not visible ASCII.
    pub fn with_bearer_token(mut self, token: &str) -> Result<Self, Error> {
        self.exposition = Arc::new(self.exposition.with_token(token)?);
        Ok(self)
    }

    /// A stand-alone service with the same registry, path and token, for a listener of
    /// its own: the metrics at the path, `404` elsewhere, `405` for methods other than
    /// `GET`.
    pub fn into_service(self) -> MetricsService {
        MetricsService {
            exposition: self.exposition,
            path: Some(self.path),
        }
    }
}

impl<S> Layer<S> for MetricsEndpointLayer {
    type Service = MetricsEndpoint<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsEndpoint {
            inner,
            exposition: Arc::clone(&self.exposition),
            path: Arc::clone(&self.path),
        }
    }
}

/// Middleware that answers `GET /metrics` and passes everything else through; made by
/// [`MetricsEndpointLayer`].
#[derive(Clone, Debug)]
pub struct MetricsEndpoint<S> {
    inner: S,
    exposition: Arc<Exposition>,
    path: Arc<str>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for MetricsEndpoint<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<EndpointBody<ResBody>>;
    type Error = S::Error;
    type Future = EndpointFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if request.method() == Method::GET && request.uri().path() == &*self.path {
            EndpointFuture {
                kind: FutureKind::Ready {
                    response: Some(self.exposition.respond(request.headers())),
                },
            }
        } else {
            EndpointFuture {
                kind: FutureKind::Inner {
                    future: self.inner.call(request),
                },
            }
        }
    }
}

pin_project! {
    /// Response future of [`MetricsEndpoint`].
    #[derive(Debug)]
    pub struct EndpointFuture<F> {
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

impl<F, B, E> Future for EndpointFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<EndpointBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            FutureKindProj::Ready { response } => Poll::Ready(Ok(response
                .take()
                .unwrap_or_else(|| plain(StatusCode::INTERNAL_SERVER_ERROR, "polled twice\n"))
                .map(EndpointBody::metrics))),
            FutureKindProj::Inner { future } => future
                .poll(cx)
                .map_ok(|response| response.map(EndpointBody::inner)),
        }
    }
}

pin_project! {
    /// Response body of [`MetricsEndpoint`]: the exposition or the wrapped service's body.
    #[derive(Debug)]
    pub struct EndpointBody<B> {
        #[pin]
        kind: BodyKind<B>,
    }
}

pin_project! {
    #[project = BodyKindProj]
    #[derive(Debug)]
    enum BodyKind<B> {
        Metrics { #[pin] body: Full<Bytes> },
        Inner { #[pin] body: B },
    }
}

impl<B> EndpointBody<B> {
    fn metrics(body: Full<Bytes>) -> Self {
        Self {
            kind: BodyKind::Metrics { body },
        }
    }

    fn inner(body: B) -> Self {
        Self {
            kind: BodyKind::Inner { body },
        }
    }
}

impl<B> Body for EndpointBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            BodyKindProj::Metrics { body } => body
                .poll_frame(cx)
                .map(|frame| frame.map(|r| r.map_err(|never: Infallible| match never {}))),
            BodyKindProj::Inner { body } => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Metrics { body } => body.is_end_stream(),
            BodyKind::Inner { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Metrics { body } => body.size_hint(),
            BodyKind::Inner { body } => body.size_hint(),
        }
    }
}

/// A service that answers with the metrics: `GET` gets the exposition, other methods
/// `405`.
///
/// [`MetricsService::new`] answers on whatever path it is given, which makes it the
/// cheapest way to serve `/metrics` from an axum router: mounted as a route, it costs
/// the other routes nothing per request.
///
/// ```
/// use std::sync::Arc;
/// use axum::{routing::get, Router};
/// use prometheus_client::registry::Registry;
/// use secureconnect_obs::{HttpMetrics, MetricsService};
///
/// let mut registry = Registry::default();
/// let metrics = HttpMetrics::builder().register(&mut registry)?;
/// let app: Router = Router::new()
///     .route("/", get(|| async { "hello" }))
///     .route_service("/metrics", MetricsService::new(Arc::new(registry)))
///     .layer(metrics.layer());
/// # Ok::<(), secureconnect_obs::Error>(())
/// ```
///
/// For a listener of its own, [`MetricsEndpointLayer::into_service`] gives a service
/// that answers only at the layer's path and `404` elsewhere.
#[derive(Clone, Debug)]
pub struct MetricsService {
    exposition: Arc<Exposition>,
    /// `None`: every path.
    path: Option<Arc<str>>,
}

impl MetricsService {
    /// Serves `registry` on any path, without a token.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self {
            exposition: Arc::new(Exposition::new(registry)),
            path: None,
        }
    }

    /// Requires `Authorization: Bearer <token>`; other requests get 401.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidToken`] if the token is empty or not visible ASCII.
    pub fn with_bearer_token(mut self, token: &str) -> Result<Self, Error> {
        self.exposition = Arc::new(self.exposition.with_token(token)?);
        Ok(self)
    }
}

impl<B> Service<Request<B>> for MetricsService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let response = if self
            .path
            .as_deref()
            .is_some_and(|path| request.uri().path() != path)
        {
            plain(StatusCode::NOT_FOUND, "not found\n")
        } else if request.method() != Method::GET {
            plain(StatusCode::METHOD_NOT_ALLOWED, "only GET is allowed\n")
                .with_header(header::ALLOW, "GET")
        } else {
            self.exposition.respond(request.headers())
        };
        std::future::ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        assert_eq!(
            negotiate(Some("application/openmetrics-text")),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate(Some("application/openmetrics-text;version=0.0.1")),
            Format::Prometheus,
            "only OpenMetrics 1.0.0 is rendered"
        );
        assert_eq!(
            negotiate(Some("text/plain;q=0.9, application/openmetrics-text;q=0.5")),
            Format::Prometheus
        );
        assert_eq!(
            negotiate(Some("application/openmetrics-text;q=0")),
            Format::Prometheus
        );
        assert_eq!(negotiate(Some("garbage;;;,,q=x")), Format::Prometheus);
    }

    #[test]
    fn gzip_and_quality() {
        assert!(accepts_gzip(Some("*")));
        assert!(accepts_gzip(Some("br;q=1.0, GZIP;q=0.5")));
        assert!(!accepts_gzip(Some("identity")));
        assert!(!accepts_gzip(Some("gzip;q=nonsense")));
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(checked_token("bad token").is_err());
        assert!(checked_token("").is_err());
        assert!(checked_path("metrics").is_err());
    }
}
