//! Domain events from handlers: file uploads, downloads and deletions, allowed or
//! denied. The [`Auditor`] fills them from the request context the layer captured.

use std::sync::Arc;

use crate::audit::scope;
use crate::context::{Late, RequestContext};
use crate::error::Error;
use crate::event::{Actor, AuditEvent, EventBuilder, FileInfo, Outcome};

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
///     if let Err(error) = auditor.file(Actor::user(user), FileAction::Delete, file, outcome, reason) {
///         if error.is_refused() {
///             return StatusCode::SERVICE_UNAVAILABLE; // fail-closed and the trail is down
///         }
///     }
///     if allowed { StatusCode::NO_CONTENT } else { StatusCode::FORBIDDEN }
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Auditor {
    ctx: Arc<RequestContext>,
    /// What the handler's request knows that the layer did not see: the route it was
    /// routed by (when the layer sits outside the router), a request id or peer address
    /// set by a middleware inside the layer.
    late: Late,
}

impl Auditor {
    /// The auditor of the request `parts` belongs to, taken while an
    /// [`AuditLayer`](crate::AuditLayer) polls the response future of the service it
    /// wraps: in an axum extractor, a handler, a middleware's future inside the layer.
    /// `None` elsewhere, such as in a task the handler spawned (take the `Auditor` before
    /// and move it there: it is `Send` and `Clone`) or in a tower service's `call`.
    ///
    /// The layer keeps the request's context in its response future and lends it to the
    /// thread while it polls the service inside (as a tracing span is entered); taking
    /// an `Auditor` shares it, so requests that record nothing allocate nothing for it.
    pub fn from_parts(parts: &http::request::Parts) -> Option<Self> {
        let ctx = scope::share()?;
        Some(Self {
            late: Late::capture(&ctx, parts),
            ctx,
        })
    }

    /// Records an event built by the caller; the request's context fills what it
    /// leaves unset.
    ///
    /// A recorded denial ([`Outcome::Denied`]) is the request's one denial event: the
    /// layer then does not record the request's `401`/`403` a second time.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Refused`](crate::ErrorKind::Refused) in fail-closed mode when
    /// the trail cannot take it: refuse the operation.
    /// [`ErrorKind::Dropped`](crate::ErrorKind::Dropped) (counted) otherwise.
    pub fn record(&self, event: EventBuilder) -> Result<(), Error> {
        let defaults = self.ctx.defaults_in(&self.late);
        self.ctx.record(event.with_defaults(&defaults).build())
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
    ) -> Result<(), Error> {
        let resource = format!("file:{}", file.id);
        let mut event = AuditEvent::builder(action.as_str(), outcome)
            .actor(actor)
            .resource(resource)
            .file(file);
        if let Some((code, text)) = reason {
            event = event.reason(code, text);
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
