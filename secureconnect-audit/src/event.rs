//! The audit event: [`AuditEvent`] and the types of its fields. Building one (and
//! cleaning every field) is in [`builder`], the one buffer that holds an event's text
//! in `text.rs`, its JSON form in `wire.rs`.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::sanitize::Flags;

mod builder;
mod text;
mod wire;

use text::{Field, Texts};

pub use builder::EventBuilder;
pub(crate) use builder::RequestDefaults;

/// Text that is often a constant: no allocation for `&'static str`.
pub type Text = Cow<'static, str>;

/// The version of the JSON layout of [`AuditEvent`]; bumped on incompatible changes.
pub const SCHEMA_VERSION: u16 = 1;

const MAX_ID: usize = 256;
const MAX_ACTION: usize = 128;
const MAX_RESOURCE: usize = 1024;
const MAX_REASON_CODE: usize = 64;
const MAX_REASON_TEXT: usize = 4096;
const MAX_REQUEST_ID: usize = 128;
const MAX_USER_AGENT: usize = 512;

/// Who acted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Actor {
    /// An authenticated user.
    User {
        /// The user's id.
        id: String,
    },
    /// Another service (service-to-service calls).
    Service {
        /// The service's name.
        name: String,
    },
    /// Nobody authenticated: the default when a request carries no actor.
    Anonymous,
}

impl Actor {
    /// A user.
    pub fn user(id: impl Into<String>) -> Self {
        Self::User { id: id.into() }
    }

    /// A service.
    pub fn service(name: impl Into<String>) -> Self {
        Self::Service { name: name.into() }
    }
}

/// What came of the attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It was allowed.
    Allowed,
    /// It was refused (401, 403, a denied file access).
    Denied,
    /// It failed.
    Error,
}

impl Outcome {
    /// `allowed`, `denied` or `error`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Error => "error",
        }
    }
}

/// A borrowed view of an [`Actor`], as an [`AuditEvent`] holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ActorRef<'a> {
    /// An authenticated user.
    User {
        /// The user's id.
        id: &'a str,
    },
    /// Another service.
    Service {
        /// The service's name.
        name: &'a str,
    },
    /// Nobody authenticated.
    Anonymous,
}

impl ActorRef<'_> {
    /// The actor, owned.
    pub fn to_actor(self) -> Actor {
        match self {
            Self::User { id } => Actor::user(id),
            Self::Service { name } => Actor::service(name),
            Self::Anonymous => Actor::Anonymous,
        }
    }
}

impl<'a> From<&'a Actor> for ActorRef<'a> {
    fn from(actor: &'a Actor) -> Self {
        match actor {
            Actor::User { id } => Self::User { id },
            Actor::Service { name } => Self::Service { name },
            Actor::Anonymous => Self::Anonymous,
        }
    }
}

impl PartialEq<Actor> for ActorRef<'_> {
    fn eq(&self, other: &Actor) -> bool {
        *self == ActorRef::from(other)
    }
}

impl PartialEq<&Actor> for ActorRef<'_> {
    fn eq(&self, other: &&Actor) -> bool {
        *self == ActorRef::from(*other)
    }
}

/// Why: a stable code for machines and a text for people.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Reason<'a> {
    /// A stable code such as `not_owner`, `missing_token`, `http_403`.
    pub code: &'a str,
    /// A human explanation.
    pub text: &'a str,
}

/// The HTTP request an event belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct HttpInfo<'a> {
    /// The method (`_OTHER` for non-standard ones).
    pub method: &'a str,
    /// The matched route template, `unmatched`, or the path without its query.
    pub route: &'a str,
    /// The response status, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// A file a file event is about, as given to [`EventBuilder::file`]. Never a signed
/// URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// The file's id.
    pub id: String,
    /// The owner's user id.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub owner: Option<String>,
    /// The file's name as the user gave it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
    /// The size in bytes.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub size: Option<u64>,
}

/// The file of an [`AuditEvent`] (a borrowed [`FileInfo`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FileRef<'a> {
    /// The file's id.
    pub id: &'a str,
    /// The owner's user id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<&'a str>,
    /// The file's name as the user gave it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    /// The size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// One security-relevant event. Built with [`AuditEvent::builder`], which cleans every
/// text field (see the crate docs); `event_id`, `seq` and `time` are set by the server.
///
/// All its text is in one buffer: an event is one allocation, which the pipeline's
/// writer thread frees.
#[derive(Clone)]
pub struct AuditEvent {
    schema_version: u16,
    event_id: Uuid,
    seq: u64,
    time: OffsetDateTime,
    outcome: Outcome,
    actor: ActorKind,
    client_ip: Option<IpAddr>,
    status: Option<u16>,
    file_size: Option<u64>,
    flags: Flags,
    texts: Texts,
}

/// Which [`Actor`] an event has; the id or name is its `ActorId` text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ActorKind {
    User,
    Service,
    Anonymous,
}

impl AuditEvent {
    /// Starts an event: `action` (such as `http.request`, `file.download`) with its
    /// `outcome`.
    pub fn builder(action: impl AsRef<str>, outcome: Outcome) -> EventBuilder {
        EventBuilder::new(action.as_ref(), outcome)
    }

    /// The version of the JSON layout the event was written in ([`SCHEMA_VERSION`]
    /// for events built here).
    pub fn schema_version(&self) -> u16 {
        self.schema_version
    }
    /// The server-minted id (UUID v7).
    pub fn event_id(&self) -> Uuid {
        self.event_id
    }
    /// The position in this pipeline's sequence; a gap means events were lost.
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// When it happened (UTC).
    pub fn time(&self) -> OffsetDateTime {
        self.time
    }
    /// The service that recorded it.
    pub fn service(&self) -> Option<&str> {
        self.texts.get(Field::Service)
    }
    /// Who acted.
    pub fn actor(&self) -> ActorRef<'_> {
        let id = self.texts.get(Field::ActorId).unwrap_or_default();
        match self.actor {
            ActorKind::User => ActorRef::User { id },
            ActorKind::Service => ActorRef::Service { name: id },
            ActorKind::Anonymous => ActorRef::Anonymous,
        }
    }
    /// What was attempted.
    pub fn action(&self) -> &str {
        self.texts.get(Field::Action).unwrap_or_default()
    }
    /// What it was attempted on.
    pub fn resource(&self) -> Option<&str> {
        self.texts.get(Field::Resource)
    }
    /// What came of it.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }
    /// Why.
    pub fn reason(&self) -> Option<Reason<'_>> {
        Some(Reason {
            code: self.texts.get(Field::ReasonCode)?,
            text: self.texts.get(Field::ReasonText).unwrap_or_default(),
        })
    }
    /// The client's address, as the trusted-proxy policy established it.
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }
    /// The server's request id.
    pub fn request_id(&self) -> Option<&str> {
        self.texts.get(Field::RequestId)
    }
    /// The request id the client sent, cleaned; never trusted as the server's.
    pub fn client_request_id(&self) -> Option<&str> {
        self.texts.get(Field::ClientRequestId)
    }
    /// The W3C trace id of the request.
    pub fn trace_id(&self) -> Option<&str> {
        self.texts.get(Field::TraceId)
    }
    /// The HTTP request.
    pub fn http(&self) -> Option<HttpInfo<'_>> {
        Some(HttpInfo {
            method: self.texts.get(Field::Method)?,
            route: self.texts.get(Field::Route).unwrap_or_default(),
            status: self.status,
        })
    }
    /// The file.
    pub fn file(&self) -> Option<FileRef<'_>> {
        Some(FileRef {
            id: self.texts.get(Field::FileId)?,
            owner: self.texts.get(Field::FileOwner),
            name: self.texts.get(Field::FileName),
            size: self.file_size,
        })
    }
    /// The client's `User-Agent`, cleaned.
    pub fn user_agent(&self) -> Option<&str> {
        self.texts.get(Field::UserAgent)
    }
    /// What cleaning did (`escaped`, `truncated`, `redacted`), and
    /// `client_ip_unreadable` when the forwarded client address could not be read.
    pub fn flags(&self) -> &'static [Text] {
        self.flags.names()
    }

    /// Whether the event has `flag` (see [`flags`](Self::flags)).
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags().iter().any(|f| f == flag)
    }

    pub(crate) fn set_seq(&mut self, seq: u64) {
        self.seq = seq;
    }

    /// The event as one line of JSON, without the newline.
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: no maps with non-string keys, no
        // non-finite floats.
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!("{{\"schema_version\":{SCHEMA_VERSION},\"serialization_error\":\"{e}\"}}")
        })
    }

    /// The time as RFC 3339.
    pub fn time_rfc3339(&self) -> String {
        self.time.format(&Rfc3339).unwrap_or_default()
    }
}

impl fmt::Debug for AuditEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&wire::Wire::of(self), f)
    }
}

impl PartialEq for AuditEvent {
    fn eq(&self, other: &Self) -> bool {
        wire::Wire::of(self) == wire::Wire::of(other)
    }
}
