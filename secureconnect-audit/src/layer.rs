//! The tower layer: every 401 and 403, and what the policy asks for.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::header::{HeaderName, HeaderValue, USER_AGENT};
use http::{Method, Request, Response, StatusCode, Uri};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::auditor::{ClientRequestId, RequestContext};
use crate::event::{Actor, AuditEvent, Outcome};
use crate::pipeline::{AuditError, AuditPipeline, Overflow};
use crate::TrustedProxies;

pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Which requests, besides 401 and 403 (always), are recorded.
///
/// ```
/// use secureconnect_audit::AuditPolicy;
///
/// let policy = AuditPolicy::denials_only().with_server_errors().with_writes();
/// assert!(policy.records(&http::Method::POST, 200));
/// assert!(policy.records(&http::Method::GET, 403));
/// assert!(!policy.records(&http::Method::GET, 200));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditPolicy {
    server_errors: bool,
    writes: bool,
    everything: bool,
}

impl AuditPolicy {
    /// Only 401 and 403 (the default).
    pub fn denials_only() -> Self {
        Self::default()
    }

    /// Also 5xx responses.
    pub fn with_server_errors(mut self) -> Self {
        self.server_errors = true;
        self
    }

    /// Also every `POST`, `PUT`, `PATCH` and `DELETE`.
    pub fn with_writes(mut self) -> Self {
        self.writes = true;
        self
    }

    /// Every request.
    pub fn with_everything(mut self) -> Self {
        self.everything = true;
        self
    }

    /// Whether a request with `method` answered `status` is recorded. 401 and 403
    /// always are.
    pub fn records(&self, method: &Method, status: u16) -> bool {
        status == 401
            || status == 403
            || self.everything
            || (self.server_errors && status >= 500)
            || (self.writes
                && matches!(
                    *method,
                    Method::POST | Method::PUT | Method::PATCH | Method::DELETE
                ))
    }
}

/// The peer address of a connection, for servers without axum's `ConnectInfo`: insert
/// it into the request extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) pipeline: AuditPipeline,
    pub(crate) policy: AuditPolicy,
    pub(crate) proxies: TrustedProxies,
    pub(crate) service: Option<crate::event::Text>,
    pub(crate) request_ids: bool,
}

/// The layer's handle in the request extensions, for [`Auditor`](crate::Auditor).
#[derive(Clone, Debug)]
pub(crate) struct AuditHandle(pub(crate) Arc<Shared>);

/// [`Layer`] that records every 401 and 403 (and what the [`AuditPolicy`] asks for) and
/// gives handlers an [`Auditor`](crate::Auditor).
///
/// By default it owns request ids: a client's `X-Request-Id` is taken off the request
/// (kept, cleaned, as `client_request_id`) and replaced by a server-minted UUID v7, which
/// tower-http's request-id layers and the logs then carry. Put it outside them. With
/// [`request_ids(false)`](Self::request_ids), the `X-Request-Id` it sees is trusted as
/// the server's (set by a layer in front of it).
///
/// The actor is taken from an [`Actor`] in the response's extensions (set by the
/// handler or an auth middleware inside this layer), else from the request's (set by
/// one outside), else [`Actor::Anonymous`].
///
/// ```
/// use axum::{routing::get, Router};
/// use prometheus_client::registry::Registry;
/// use secureconnect_audit::{AuditLayer, AuditPipeline, MemorySink, PipelineConfig};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let pipeline = AuditPipeline::new(MemorySink::new(), PipelineConfig::default(), &mut Registry::default());
/// let app: Router = Router::new()
///     .route("/", get(|| async { "hello" }))
///     .layer(AuditLayer::new(pipeline).service_name("gateway"));
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct AuditLayer {
    shared: Arc<Shared>,
}

impl AuditLayer {
    /// Records into `pipeline` with [`AuditPolicy::denials_only`], trusting no proxy.
    pub fn new(pipeline: AuditPipeline) -> Self {
        Self {
            shared: Arc::new(Shared {
                pipeline,
                policy: AuditPolicy::default(),
                proxies: TrustedProxies::none(),
                service: None,
                request_ids: true,
            }),
        }
    }

    fn with(self, f: impl FnOnce(&mut Shared)) -> Self {
        let mut shared = Arc::try_unwrap(self.shared).unwrap_or_else(|arc| Shared {
            pipeline: arc.pipeline.clone(),
            policy: arc.policy,
            proxies: arc.proxies.clone(),
            service: arc.service.clone(),
            request_ids: arc.request_ids,
        });
        f(&mut shared);
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Which other requests to record.
    pub fn policy(self, policy: AuditPolicy) -> Self {
        self.with(|s| s.policy = policy)
    }

    /// Which peers may set the client address through `X-Forwarded-For`.
    pub fn trusted_proxies(self, proxies: TrustedProxies) -> Self {
        self.with(|s| s.proxies = proxies)
    }

    /// The service name written in every event.
    pub fn service_name(self, name: impl Into<String>) -> Self {
        let name: String = name.into();
        self.with(|s| s.service = Some(name.into()))
    }

    /// Whether this layer mints request ids (default `true`; see the type's docs).
    pub fn request_ids(self, enabled: bool) -> Self {
        self.with(|s| s.request_ids = enabled)
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = Audit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Audit {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Middleware made by [`AuditLayer`].
#[derive(Clone, Debug)]
pub struct Audit<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// What is kept of a request in case it must be recorded: reference-counted clones,
/// no allocation.
#[derive(Debug)]
pub(crate) struct Captured {
    method: Method,
    uri: Uri,
    #[cfg(feature = "axum")]
    matched: Option<axum::extract::MatchedPath>,
    peer: Option<IpAddr>,
    forwarded_for: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    traceparent: Option<HeaderValue>,
    request_id: Option<HeaderValue>,
    client_request_id: Option<HeaderValue>,
    actor: Option<Actor>,
}

pub(crate) fn peer_ip(extensions: &http::Extensions) -> Option<IpAddr> {
    if let Some(PeerAddr(addr)) = extensions.get::<PeerAddr>() {
        return Some(addr.ip());
    }
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0.ip());
    }
    None
}

/// The trace id of a W3C `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`).
pub(crate) fn trace_id(traceparent: Option<&HeaderValue>) -> Option<String> {
    let value = traceparent?.to_str().ok()?;
    let mut parts = value.split('-');
    let (_version, trace) = (parts.next()?, parts.next()?);
    (trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit()) && trace != "0".repeat(32))
        .then(|| trace.to_ascii_lowercase())
}

pub(crate) fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "_OTHER",
    }
}

impl Captured {
    fn route(&self) -> (String, bool) {
        #[cfg(feature = "axum")]
        if let Some(m) = &self.matched {
            return (m.as_str().to_owned(), true);
        }
        (self.uri.path().to_owned(), false)
    }

    pub(crate) fn context(&self, shared: &Shared) -> RequestContext {
        let (route, matched) = self.route();
        RequestContext {
            client_ip: shared.proxies.client_ip(
                self.peer,
                self.forwarded_for.as_ref().map(HeaderValue::as_bytes),
            ),
            request_id: self
                .request_id
                .as_ref()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            client_request_id: self
                .client_request_id
                .as_ref()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            trace_id: trace_id(self.traceparent.as_ref()),
            user_agent: self
                .user_agent
                .as_ref()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            method: method_label(&self.method),
            route: if matched { route } else { route.clone() },
            service: shared.service.clone(),
        }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Audit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let shared = &self.shared;
        let (request_id, client_request_id) = if shared.request_ids {
            let client = request.headers_mut().remove(X_REQUEST_ID);
            let minted = HeaderValue::try_from(uuid::Uuid::now_v7().to_string()).ok();
            if let Some(id) = &minted {
                request.headers_mut().insert(X_REQUEST_ID, id.clone());
            }
            if let Some(client) = &client {
                request
                    .extensions_mut()
                    .insert(ClientRequestId(client.clone()));
            }
            (minted, client)
        } else {
            (request.headers().get(X_REQUEST_ID).cloned(), None)
        };
        let headers = request.headers();
        let captured = Captured {
            method: request.method().clone(),
            uri: request.uri().clone(),
            #[cfg(feature = "axum")]
            matched: request
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .cloned(),
            peer: peer_ip(request.extensions()),
            forwarded_for: headers.get(X_FORWARDED_FOR).cloned(),
            user_agent: headers.get(USER_AGENT).cloned(),
            traceparent: headers.get(TRACEPARENT).cloned(),
            request_id,
            client_request_id,
            actor: request.extensions().get::<Actor>().cloned(),
        };
        request
            .extensions_mut()
            .insert(AuditHandle(Arc::clone(shared)));
        ResponseFuture {
            inner: self.inner.call(request),
            captured: Some(captured),
            shared: Arc::clone(shared),
        }
    }
}

pin_project! {
    /// Response future of [`Audit`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        captured: Option<Captured>,
        shared: Arc<Shared>,
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
        let Some(captured) = this.captured.take() else {
            return Poll::Ready(Ok(response));
        };
        if !this.shared.policy.records(&captured.method, status) {
            return Poll::Ready(Ok(response));
        }
        let actor = response
            .extensions()
            .get::<Actor>()
            .cloned()
            .or_else(|| captured.actor.clone())
            .unwrap_or(Actor::Anonymous);
        let event = http_event(&captured, this.shared, actor, status);
        match this.shared.pipeline.record(event) {
            Err(AuditError::Unavailable)
                if this.shared.pipeline.overflow() == Overflow::FailClosed =>
            {
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

fn http_event(captured: &Captured, shared: &Shared, actor: Actor, status: u16) -> AuditEvent {
    let ctx = captured.context(shared);
    let outcome = match status {
        401 | 403 => Outcome::Denied,
        500.. => Outcome::Error,
        _ => Outcome::Allowed,
    };
    let mut builder = AuditEvent::builder("http.request", outcome)
        .actor(actor)
        .resource(ctx.route.clone())
        .http(ctx.method, ctx.route.clone(), Some(status));
    builder = match status {
        401 => builder.reason(
            "unauthenticated",
            "HTTP 401: missing or invalid credentials",
        ),
        403 => builder.reason("forbidden", "HTTP 403: not allowed"),
        500.. => builder.reason("server_error", format!("HTTP {status}")),
        _ => builder,
    };
    ctx.fill(builder).build()
}
