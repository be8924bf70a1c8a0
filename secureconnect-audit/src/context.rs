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
use opentelemetry::trace::{SpanContext, TraceId};
use uuid::Uuid;

use crate::audit::Shared;
use crate::client_ip::ClientIp;
use crate::event::{Actor, RequestDefaults};

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

/// What a request matched.
#[derive(Debug)]
enum Route {
    /// The route template (inside a router).
    Matched(Matched),
    /// The path, when no route was matched yet (outside a router).
    Path(PathAndQuery),
}

/// What is kept of a request in case an event must be recorded: reference-counted
/// clones, no text. Kept small, as it moves with the response future (and in and out
/// of the thread's slot on every poll): what most requests lack is in [`Rare`].
#[derive(Debug)]
pub(crate) struct RequestContext {
    shared: Arc<Shared>,
    route: Route,
    request_id: RequestId,
    user_agent: Option<HeaderValue>,
    /// What most requests do not have; `None` (no allocation) when a request has none
    /// of it.
    rare: Option<Box<Rare>>,
    peer: Option<IpAddr>,
    method: &'static str,
    /// Room in a fail-closed queue reserved for this request's first event; given back
    /// when the context goes without using it.
    reserved: AtomicBool,
    /// An [`Auditor`](crate::Auditor) recorded this request's denial: the layer does
    /// not record it a second time.
    denial_recorded: AtomicBool,
}

/// The parts of a request context that most requests do not have.
#[derive(Debug, Default)]
struct Rare {
    /// Every `X-Forwarded-For` line, in order.
    forwarded_for: Vec<HeaderValue>,
    traceparent: Option<HeaderValue>,
    /// The trace id of the trace context a tracing middleware in front of the layer
    /// put in the request's extensions.
    trace_id: Option<TraceId>,
    client_request_id: Option<HeaderValue>,
    actor: Option<Actor>,
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
    /// `X-Request-Id` is replaced by a minted UUID v7 (the client's kept as its own).
    /// `reserved`: room for one event was reserved for the request.
    pub(crate) fn capture<B>(
        request: &mut Request<B>,
        shared: Arc<Shared>,
        reserved: bool,
    ) -> Self {
        let mut rare: Option<Box<Rare>> = None;
        let request_id = if shared.config.owns_request_ids() {
            let id = crate::ids::uuid_v7();
            match crate::ids::header_value(id) {
                Some(value) => {
                    // One look-up: the client's value comes back from the insert.
                    if let Some(client) = request.headers_mut().insert(X_REQUEST_ID, value) {
                        rare.get_or_insert_default().client_request_id = Some(client);
                    }
                    RequestId::Minted(id)
                }
                None => {
                    if let Some(client) = request.headers_mut().remove(X_REQUEST_ID) {
                        rare.get_or_insert_default().client_request_id = Some(client);
                    }
                    RequestId::None
                }
            }
        } else {
            request
                .headers()
                .get(X_REQUEST_ID)
                .cloned()
                .map_or(RequestId::None, RequestId::Header)
        };
        // One pass over the headers (a handful, compared by name) rather than a hashed
        // look-up for each of the three.
        let mut user_agent = None;
        for (name, value) in request.headers() {
            if *name == USER_AGENT {
                user_agent.get_or_insert_with(|| value.clone());
            } else if *name == X_FORWARDED_FOR {
                // In order: `iter` yields a name's values one after the other.
                rare.get_or_insert_default()
                    .forwarded_for
                    .push(value.clone());
            } else if *name == TRACEPARENT {
                let rare = rare.get_or_insert_default();
                rare.traceparent.get_or_insert_with(|| value.clone());
            }
        }
        let extensions = request.extensions();
        if let Some(span_context) = span_context(extensions) {
            rare.get_or_insert_default().trace_id = Some(span_context.trace_id());
        }
        if let Some(actor) = extensions.get::<Actor>() {
            rare.get_or_insert_default().actor = Some(actor.clone());
        }
        Self {
            route: match matched(extensions) {
                Some(matched) => Route::Matched(matched),
                None => Route::Path(
                    request
                        .uri()
                        .path_and_query()
                        .cloned()
                        .unwrap_or_else(|| PathAndQuery::from_static("/")),
                ),
            },
            method: method_label(request.method()),
            peer: peer_ip(extensions),
            user_agent,
            request_id,
            rare,
            reserved: AtomicBool::new(reserved),
            denial_recorded: AtomicBool::new(false),
            shared,
        }
    }

    /// Gives the client the request id the layer minted: into the response's
    /// `X-Request-Id`, unless the service inside set one.
    pub(crate) fn echo_request_id(&self, headers: &mut http::HeaderMap) {
        if let RequestId::Minted(id) = &self.request_id {
            if let http::header::Entry::Vacant(entry) = headers.entry(X_REQUEST_ID) {
                if let Some(value) = crate::ids::header_value(*id) {
                    entry.insert(value);
                }
            }
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

    /// The method, as an event writes it.
    pub(crate) fn method(&self) -> &'static str {
        self.method
    }

    /// The actor an outer middleware put in the request's extensions.
    pub(crate) fn actor(&self) -> Option<&Actor> {
        self.rare.as_ref()?.actor.as_ref()
    }

    fn matched(&self) -> Option<&Matched> {
        match &self.route {
            Route::Matched(matched) => Some(matched),
            Route::Path(_) => None,
        }
    }

    /// The defaults of the event the layer records for `response`.
    pub(crate) fn defaults<'a>(&'a self, response: &'a http::Extensions) -> Defaults<'a> {
        Defaults {
            ctx: self,
            matched: self.matched(),
            late: None,
            trace_id: span_context(response).map(SpanContext::trace_id),
        }
    }

    /// The defaults of an event recorded by a handler that sees the request as `late`
    /// describes it (the layer may sit outside the router or outside the middleware that
    /// sets the request id or the peer address).
    pub(crate) fn defaults_in<'a>(&'a self, late: &'a Late) -> Defaults<'a> {
        Defaults {
            ctx: self,
            matched: late.matched.as_ref().or(self.matched()),
            late: Some(late),
            trace_id: late.trace_id,
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
    trace_id: Option<TraceId>,
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
            trace_id: match ctx.rare.as_ref().and_then(|rare| rare.trace_id) {
                Some(_) => None,
                None => span_context(&parts.extensions).map(SpanContext::trace_id),
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
    /// The trace id of the response (the layer's event) or of the handler's request
    /// (an `Auditor`'s), set by a tracing middleware inside the layer.
    trace_id: Option<TraceId>,
}

impl<'a> Defaults<'a> {
    /// The matched route template, else the path (without its query).
    pub(crate) fn route(&self) -> &'a str {
        match self.matched {
            Some(m) => matched_route(m),
            None => match &self.ctx.route {
                Route::Path(path) => path.path(),
                Route::Matched(matched) => matched_route(matched),
            },
        }
    }
}

/// A header's text, invalid UTF-8 replaced (and then escaped when the event is built).
fn text(value: &HeaderValue, set: impl FnOnce(&str)) {
    set(&String::from_utf8_lossy(value.as_bytes()));
}

impl RequestDefaults for Defaults<'_> {
    fn client_ip(&self) -> ClientIp {
        let ctx = self.ctx;
        ctx.shared.config.proxies().client_ip(
            ctx.peer.or_else(|| self.late.and_then(|late| late.peer)),
            ctx.rare
                .as_deref()
                .map_or(&[][..], |rare| &rare.forwarded_for),
        )
    }

    fn request_id(&self, set: impl FnOnce(&str)) {
        match &self.ctx.request_id {
            RequestId::Minted(id) => {
                let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
                set(id.hyphenated().encode_lower(&mut buf));
            }
            RequestId::Header(value) => text(value, set),
            RequestId::None => {
                if let Some(value) = self.late.and_then(|late| late.request_id.as_ref()) {
                    text(value, set);
                }
            }
        }
    }

    fn client_request_id(&self, set: impl FnOnce(&str)) {
        if let Some(value) = self
            .ctx
            .rare
            .as_ref()
            .and_then(|rare| rare.client_request_id.as_ref())
        {
            text(value, set);
        }
    }

    fn trace_id(&self, set: impl FnOnce(&str)) {
        let rare = self.ctx.rare.as_deref();
        match self.trace_id.or(rare.and_then(|rare| rare.trace_id)) {
            Some(trace_id) => {
                let mut buf = [0u8; 32];
                set(hex32(trace_id.to_bytes(), &mut buf));
            }
            None => {
                if let Some(id) = trace_id(rare.and_then(|rare| rare.traceparent.as_ref())) {
                    set(id);
                }
            }
        }
    }

    fn user_agent(&self, set: impl FnOnce(&str)) {
        if let Some(value) = &self.ctx.user_agent {
            text(value, set);
        }
    }

    fn service(&self) -> Option<&str> {
        self.ctx.shared.config.service().map(|name| &**name)
    }

    fn http(&self, set: impl FnOnce(&'static str, &str)) {
        set(self.ctx.method, self.route());
    }
}

/// 16 bytes as 32 lowercase hex digits.
fn hex32(bytes: [u8; 16], buf: &mut [u8; 32]) -> &str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in bytes.iter().enumerate() {
        buf[2 * i] = HEX[usize::from(byte >> 4)];
        buf[2 * i + 1] = HEX[usize::from(byte & 0xf)];
    }
    std::str::from_utf8(buf).unwrap_or_default()
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

/// The trace id of a W3C `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`); the
/// builder writes it in lowercase.
fn trace_id(traceparent: Option<&HeaderValue>) -> Option<&str> {
    let value = traceparent?.to_str().ok()?;
    let mut parts = value.split('-');
    let (_version, trace) = (parts.next()?, parts.next()?);
    (trace.len() == 32
        && trace.bytes().all(|b| b.is_ascii_hexdigit())
        && trace.bytes().any(|b| b != b'0'))
    .then_some(trace)
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
