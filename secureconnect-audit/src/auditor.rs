//! Domain events from handlers: file uploads, downloads and deletions, allowed or
//! denied.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{HeaderValue, USER_AGENT};

use crate::event::{Actor, AuditEvent, EventBuilder, FileInfo, Outcome};
use crate::layer::{
    method_label, peer_ip, trace_id, AuditHandle, Shared, TRACEPARENT, X_FORWARDED_FOR,
    X_REQUEST_ID,
};
use crate::pipeline::AuditError;

/// The client's own `X-Request-Id`, kept apart from the server's.
#[derive(Clone, Debug)]
pub(crate) struct ClientRequestId(pub(crate) HeaderValue);

/// What an event learns from its request.
#[derive(Clone, Debug)]
pub(crate) struct RequestContext {
    pub(crate) client_ip: Option<IpAddr>,
    pub(crate) request_id: Option<String>,
    pub(crate) client_request_id: Option<String>,
    pub(crate) trace_id: Option<String>,
    pub(crate) user_agent: Option<String>,
    pub(crate) method: &'static str,
    pub(crate) route: String,
    pub(crate) service: Option<crate::event::Text>,
}

impl RequestContext {
    /// Fills what the builder does not already have.
    pub(crate) fn fill(&self, mut b: EventBuilder) -> EventBuilder {
        if b.client_ip.is_none() {
            b.client_ip = self.client_ip;
        }
        if b.request_id.is_none() {
            b.request_id.clone_from(&self.request_id);
        }
        if b.client_request_id.is_none() {
            b.client_request_id.clone_from(&self.client_request_id);
        }
        if b.trace_id.is_none() {
            b.trace_id.clone_from(&self.trace_id);
        }
        if b.user_agent.is_none() {
            b.user_agent.clone_from(&self.user_agent);
        }
        if b.service.is_none() {
            b.service.clone_from(&self.service);
        }
        if b.http.is_none() {
            b = b.http(self.method, self.route.clone(), None);
        }
        b
    }
}

/// What was done to a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileAction {
    /// A signed upload URL was issued (`file.upload_url`).
    UploadUrlIssued,
    /// A download was asked for (`file.download`).
    Download,
    /// A deletion was asked for (`file.delete`).
    Delete,
}

impl FileAction {
    /// The event's `action`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UploadUrlIssued => "file.upload_url",
            Self::Download => "file.download",
            Self::Delete => "file.delete",
        }
    }
}

/// Records domain events with the request's context (client address, request ids,
/// trace id, route) filled in. Extract it in an axum handler behind an
/// [`AuditLayer`](crate::AuditLayer), or build it with [`Auditor::from_parts`].
///
/// ```no_run
/// use axum::extract::Path;
/// use axum::http::StatusCode;
/// use secureconnect_audit::{Actor, Auditor, FileAction, FileInfo, Outcome};
///
/// async fn delete_file(auditor: Auditor, Path(id): Path<String>) -> StatusCode {
///     let (user, owner) = ("u1", "u2"); // from your auth and storage
///     let file = FileInfo { id, owner: Some(owner.into()), name: None, size: None };
///     let allowed = user == owner;
///     let outcome = if allowed { Outcome::Allowed } else { Outcome::Denied };
///     let reason = (!allowed).then_some(("not_owner", "the file belongs to another user"));
///     if auditor.file(Actor::user(user), FileAction::Delete, file, outcome, reason).is_err() {
///         return StatusCode::SERVICE_UNAVAILABLE; // fail-closed and the trail is down
///     }
///     if allowed { StatusCode::NO_CONTENT } else { StatusCode::FORBIDDEN }
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Auditor {
    shared: Arc<Shared>,
    ctx: Arc<RequestContext>,
}

impl Auditor {
    /// The auditor of a request that went through an [`AuditLayer`](crate::AuditLayer);
    /// `None` without one.
    pub fn from_parts(parts: &http::request::Parts) -> Option<Self> {
        let AuditHandle(shared) = parts.extensions.get::<AuditHandle>()?;
        let headers = &parts.headers;
        let text = |v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
        #[cfg(feature = "axum")]
        let route = parts
            .extensions
            .get::<axum::extract::MatchedPath>()
            .map_or_else(|| parts.uri.path().to_owned(), |m| m.as_str().to_owned());
        #[cfg(not(feature = "axum"))]
        let route = parts.uri.path().to_owned();
        let ctx = RequestContext {
            client_ip: shared.proxies.client_ip(
                peer_ip(&parts.extensions),
                headers.get(X_FORWARDED_FOR).map(HeaderValue::as_bytes),
            ),
            request_id: headers.get(X_REQUEST_ID).map(text),
            client_request_id: parts
                .extensions
                .get::<ClientRequestId>()
                .map(|c| text(&c.0)),
            trace_id: trace_id(headers.get(TRACEPARENT)),
            user_agent: headers.get(USER_AGENT).map(text),
            method: method_label(&parts.method),
            route,
            service: shared.service.clone(),
        };
        Some(Self {
            shared: Arc::clone(shared),
            ctx: Arc::new(ctx),
        })
    }

    /// Records an event built by the caller; the request's context fills what it
    /// leaves unset.
    ///
    /// # Errors
    ///
    /// [`AuditError::Unavailable`] in fail-closed mode when the trail cannot take it:
    /// refuse the operation. [`AuditError::Dropped`] (counted) otherwise.
    pub fn record(&self, event: EventBuilder) -> Result<(), AuditError> {
        self.shared.pipeline.record(self.ctx.fill(event).build())
    }

    /// Records a file access: who, what, which file (never a signed URL), allowed or
    /// denied, and why.
    ///
    /// # Errors
    ///
    /// As [`record`](Self::record).
    pub fn file(
        &self,
        actor: Actor,
        action: FileAction,
        file: FileInfo,
        outcome: Outcome,
        reason: Option<(&str, &str)>,
    ) -> Result<(), AuditError> {
        let resource = format!("file:{}", file.id);
        let mut event = AuditEvent::builder(action.as_str(), outcome)
            .actor(actor)
            .resource(resource)
            .file(file);
        if let Some((code, text)) = reason {
            event = event.reason(code.to_owned(), text.to_owned());
        }
        self.record(event)
    }
}

#[cfg(feature = "axum")]
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Auditor {
    type Rejection = (http::StatusCode, &'static str);

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Self::from_parts(parts).ok_or((
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "the audit layer is missing in front of this handler",
        ))
    }
}
