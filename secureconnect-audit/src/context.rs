//! The request context: what an event learns from its request (actor, client address
//! through the trusted proxies, request ids, trace id, user agent, method, route,
//! service), captured ONCE per request by the layer and shared with the request's
//! [`Auditor`](crate::Auditor)s.
//!
//! Capturing keeps reference-counted clones of the request's parts, nothing more, in
//! the layer's response future (no allocation; shared only when a handler takes an
//! `Auditor`); the text an event needs is made only when an event is recorded, and only
//! for the fields its builder leaves unset.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue, USER_AGENT};
use http::uri::PathAndQuery;
use http::{Method, Request};
use opentelemetry::trace::SpanContext;
use uuid::Uuid;

use crate::audit::Shared;
use crate::client_ip::ClientIp;
use crate::event::{Actor, RequestDefaults, Text};

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The peer address of a connection, for servers without axum's `ConnectInfo`: insert
/// it into the request extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The route a request was matched by (axum's `MatchedPath`); without the `axum`
/// feature there is none.
#[cfg(feature = "axum")]
pub(crate) type Matched = axum::extract::MatchedPath;
#[cfg(not(feature = "axum"))]
pub(crate) type Matched = std::convert::Infallible;

#[cfg(feature = "axum")]
fn matched_route(matched: &Matched) -> &str {
    matched.as_str()
}
#[cfg(not(feature = "axum"))]
fn matched_route(matched: &Matched) -> &str {
    match *matched {}
}

/// The route a request was matched by, from its extensions.
pub(crate) fn matched(extensions: &http::Extensions) -> Option<Matched> {
    extensions.get::<Matched>().cloned()
}

/// The server's request id.
#[derive(Debug)]
enum RequestId {
    /// Minted by the layer (and written into `X-Request-Id`).
    Minted(Uuid),
    /// Set in front of the layer (`request_ids(false)`).
    Header(HeaderValue),
    None,
}

/// What is kept of a request in case an event must be recorded: reference-counted
/// clones, no text.
#[derive(Debug)]
pub(crate) struct RequestContext {
    shared: Arc<Shared>,
    method: Method,
    /// The path, when no route was matched yet (else it is never needed).
    path: Option<PathAndQuery>,
    matched: Option<Matched>,
    peer: Option<IpAddr>,
    /// Every `X-Forwarded-For` line, in order: the first, and the others (rare, and no
    /// allocation when there are none).
    forwarded_for: Option<HeaderValue>,
    forwarded_for_more: Vec<HeaderValue>,
    user_agent: Option<HeaderValue>,
    traceparent: Option<HeaderValue>,
    /// The request's trace context, when a tracing middleware in front of the layer
    /// put one in its extensions.
    span_context: Option<SpanContext>,
    request_id: RequestId,
    client_request_id: Option<HeaderValue>,
    actor: Option<Actor>,
    /// Room in a fail-closed queue reserved for this request's first event; given back
    /// when the context goes without using it.
    reserved: AtomicBool,
    /// An [`Auditor`](crate::Auditor) recorded this request's denial: the layer does
    /// not record it a second time.
    denial_recorded: AtomicBool,
}

impl Drop for RequestContext {
    fn drop(&mut self) {
        if *self.reserved.get_mut() {
            self.shared.pipeline.unreserve();
        }
    }
}

impl RequestContext {
    /// Captures `request`'s context. When the layer owns request ids, the client's
    /// `X-Request-Id` is taken off the request (kept as the client's) and replaced by a
    /// minted UUID v7. `reserved`: room for one event was reserved for the request.
    pub(crate) fn capture<B>(
        request: &mut Request<B>,
        shared: Arc<Shared>,
        reserved: bool,
    ) -> Self {
        let (request_id, client_request_id) = if shared.config.owns_request_ids() {
            let client = request.headers_mut().remove(X_REQUEST_ID);
            let id = crate::ids::uuid_v7();
            let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
            let minted = match HeaderValue::from_str(id.hyphenated().encode_lower(&mut text)) {
                Ok(value) => {
                    request.headers_mut().insert(X_REQUEST_ID, value);
                    RequestId::Minted(id)
                }
                Err(_) => RequestId::None,
            };
            (minted, client)
        } else {
            let id = request.headers().get(X_REQUEST_ID).cloned();
            (id.map_or(RequestId::None, RequestId::Header), None)
        };
        let headers = request.headers();
        let mut forwarded = headers.get_all(X_FORWARDED_FOR).iter();
        let forwarded_for = forwarded.next().cloned();
        let forwarded_for_more = forwarded.cloned().collect();
        let matched = matched(request.extensions());
        Self {
            method: request.method().clone(),
            path: match matched {
                Some(_) => None,
                None => request.uri().path_and_query().cloned(),
            },
            matched,
            peer: peer_ip(request.extensions()),
            forwarded_for,
            forwarded_for_more,
            user_agent: headers.get(USER_AGENT).cloned(),
            traceparent: headers.get(TRACEPARENT).cloned(),
            span_context: span_context(request.extensions()).cloned(),
            request_id,
            client_request_id,
            actor: request.extensions().get::<Actor>().cloned(),
            reserved: AtomicBool::new(reserved),
            denial_recorded: AtomicBool::new(false),
            shared,
        }
    }

    /// Takes the room reserved for this request, if it is still there.
    pub(crate) fn take_reserved(&self) -> bool {
        self.reserved.load(Ordering::Relaxed) && self.reserved.swap(false, Ordering::AcqRel)
    }

    /// Records `event` for this request: into its reserved room if it has some.
    pub(crate) fn record(&self, event: crate::AuditEvent) -> Result<(), crate::Error> {
        let pipeline = &self.shared.pipeline;
        let denied = event.outcome() == crate::Outcome::Denied;
        let result = if self.take_reserved() {
            pipeline.record_reserved(event)
        } else {
            pipeline.record(event)
        };
        if denied && result.is_ok() {
            self.denial_recorded.store(true, Ordering::Release);
        }
        result
    }

    /// Whether a denial of this request was recorded through an
    /// [`Auditor`](crate::Auditor).
    pub(crate) fn denial_recorded(&self) -> bool {
        self.denial_recorded.load(Ordering::Acquire)
    }

    /// The layer's pipeline and configuration.
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    pub(crate) fn method(&self) -> &Method {
        &self.method
    }

    /// The actor an outer middleware put in the request's extensions.
    pub(crate) fn actor(&self) -> Option<&Actor> {
        self.actor.as_ref()
    }

    /// The defaults of the event the layer records for `response`.
    pub(crate) fn defaults<'a>(&'a self, response: &'a http::Extensions) -> Defaults<'a> {
        Defaults {
            ctx: self,
            matched: self.matched.as_ref(),
            late: None,
            span_context: span_context(response),
        }
    }

    /// The defaults of an event recorded by a handler that sees the request as `late`
    /// describes it (the layer may sit outside the router or outside the middleware that
    /// sets the request id or the peer address).
    pub(crate) fn defaults_in<'a>(&'a self, late: &'a Late) -> Defaults<'a> {
        Defaults {
            ctx: self,
            matched: late.matched.as_ref().or(self.matched.as_ref()),
            late: Some(late),
            span_context: late.span_context.as_ref(),
        }
    }
}

/// What a handler's request adds to the layer's context: only what the layer did not
/// see (the matched route; a request id or peer address set by a middleware inside the
/// layer). Empty, and free, in the usual case.
#[derive(Clone, Debug, Default)]
pub(crate) struct Late {
    matched: Option<Matched>,
    peer: Option<IpAddr>,
    request_id: Option<HeaderValue>,
    span_context: Option<SpanContext>,
}

impl Late {
    /// What `parts` (the handler's request) knows that `ctx` does not.
    pub(crate) fn capture(ctx: &RequestContext, parts: &http::request::Parts) -> Self {
        Self {
            matched: matched(&parts.extensions),
            peer: match ctx.peer {
                Some(_) => None,
                None => peer_ip(&parts.extensions),
            },
            request_id: match ctx.request_id {
                RequestId::None => parts.headers.get(X_REQUEST_ID).cloned(),
                _ => None,
            },
            span_context: match ctx.span_context {
                Some(_) => None,
                None => span_context(&parts.extensions).cloned(),
            },
        }
    }
}

/// A request context as seen where an event is recorded.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Defaults<'a> {
    ctx: &'a RequestContext,
    matched: Option<&'a Matched>,
    late: Option<&'a Late>,
    /// The trace context of the response (the layer's event) or of the handler's request
    /// (an `Auditor`'s), set by a tracing middleware inside the layer.
    span_context: Option<&'a SpanContext>,
}

impl Defaults<'_> {
    /// The matched route template, else the path (without its query).
    pub(crate) fn route(&self) -> String {
        match self.matched {
            Some(m) => matched_route(m).to_owned(),
            None => self
                .ctx
                .path
                .as_ref()
                .map_or_else(|| "/".to_owned(), |path| path.path().to_owned()),
        }
    }
}

fn text(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

impl RequestDefaults for Defaults<'_> {
    fn client_ip(&self) -> ClientIp {
        let ctx = self.ctx;
        ctx.shared.config.proxies().client_ip(
            ctx.peer.or_else(|| self.late.and_then(|late| late.peer)),
            ctx.forwarded_for.iter().chain(&ctx.forwarded_for_more),
        )
    }

    fn request_id(&self) -> Option<String> {
        match &self.ctx.request_id {
            RequestId::Minted(id) => Some(id.to_string()),
            RequestId::Header(value) => Some(text(value)),
            RequestId::None => self.late?.request_id.as_ref().map(text),
        }
    }

    fn client_request_id(&self) -> Option<String> {
        self.ctx.client_request_id.as_ref().map(text)
    }

    fn trace_id(&self) -> Option<String> {
        match self.span_context.or(self.ctx.span_context.as_ref()) {
            Some(span_context) => Some(span_context.trace_id().to_string()),
            None => trace_id(self.ctx.traceparent.as_ref()),
        }
    }

    fn user_agent(&self) -> Option<String> {
        self.ctx.user_agent.as_ref().map(text)
    }

    fn service(&self) -> Option<Text> {
        self.ctx.shared.config.service().cloned()
    }

    fn http(&self) -> (&'static str, String) {
        (method_label(&self.ctx.method), self.route())
    }
}

fn peer_ip(extensions: &http::Extensions) -> Option<IpAddr> {
    if let Some(PeerAddr(addr)) = extensions.get::<PeerAddr>() {
        return Some(addr.ip());
    }
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0.ip());
    }
    None
}

/// The valid trace context a tracing middleware (such as secureconnect-obs's
/// `RequestTraceLayer`) left in `extensions`.
fn span_context(extensions: &http::Extensions) -> Option<&SpanContext> {
    extensions
        .get::<SpanContext>()
        .filter(|span_context| span_context.is_valid())
}

/// The trace id of a W3C `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`).
fn trace_id(traceparent: Option<&HeaderValue>) -> Option<String> {
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
