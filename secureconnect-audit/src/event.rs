//! The audit event: [`AuditEvent`] and the types of its fields. Building one (and
//! cleaning every field) is in [`builder`].

use std::borrow::Cow;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::sanitize::{clean_owned, Flags};

mod builder;

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

    fn cleaned(self, flags: &mut Flags) -> Self {
        match self {
            Self::User { id } => Self::User {
                id: clean_owned(id, MAX_ID, flags),
            },
            Self::Service { name } => Self::Service {
                name: clean_owned(name, MAX_ID, flags),
            },
            Self::Anonymous => Self::Anonymous,
        }
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

/// Why: a stable code for machines and a text for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Reason {
    /// A stable code such as `not_owner`, `missing_token`, `http_403`.
    pub code: Text,
    /// A human explanation.
    pub text: Text,
}

/// The HTTP request an event belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HttpInfo {
    /// The method (`_OTHER` for non-standard ones).
    pub method: Text,
    /// The matched route template, `unmatched`, or the path without its query.
    pub route: String,
    /// The response status, when known.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<u16>,
}

/// A file a file event is about. Never a signed URL.
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

/// One security-relevant event. Built with [`AuditEvent::builder`], which cleans every
/// text field (see the crate docs); `event_id`, `seq` and `time` are set by the server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    schema_version: u16,
    event_id: Uuid,
    seq: u64,
    #[serde(with = "rfc3339")]
    time: OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    service: Option<Text>,
    actor: Actor,
    action: Text,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    resource: Option<String>,
    outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    reason: Option<Reason>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    client_ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    client_request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    trace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    http: Option<HttpInfo>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    file: Option<FileInfo>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    user_agent: Option<String>,
    /// `escaped`, `truncated`, `redacted`: what cleaning did to this event;
    /// `client_ip_unreadable`: the client address a trusted proxy forwarded could not
    /// be read.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    flags: Vec<Text>,
}

mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    pub(super) fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        let text = t.format(&Rfc3339).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(d)?;
        OffsetDateTime::parse(&text, &Rfc3339).map_err(serde::de::Error::custom)
    }
}

impl AuditEvent {
    /// Starts an event: `action` (such as `http.request`, `file.download`) with its
    /// `outcome`.
    pub fn builder(action: impl Into<Text>, outcome: Outcome) -> EventBuilder {
        EventBuilder::new(action.into(), outcome)
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
        self.service.as_deref()
    }
    /// Who acted.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }
    /// What was attempted.
    pub fn action(&self) -> &str {
        &self.action
    }
    /// What it was attempted on.
    pub fn resource(&self) -> Option<&str> {
        self.resource.as_deref()
    }
    /// What came of it.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }
    /// Why.
    pub fn reason(&self) -> Option<&Reason> {
        self.reason.as_ref()
    }
    /// The client's address, as the trusted-proxy policy established it.
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }
    /// The server's request id.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }
    /// The request id the client sent, cleaned; never trusted as the server's.
    pub fn client_request_id(&self) -> Option<&str> {
        self.client_request_id.as_deref()
    }
    /// The W3C trace id of the request.
    pub fn trace_id(&self) -> Option<&str> {
        self.trace_id.as_deref()
    }
    /// The HTTP request.
    pub fn http(&self) -> Option<&HttpInfo> {
        self.http.as_ref()
    }
    /// The file.
    pub fn file(&self) -> Option<&FileInfo> {
        self.file.as_ref()
    }
    /// The client's `User-Agent`, cleaned.
    pub fn user_agent(&self) -> Option<&str> {
        self.user_agent.as_deref()
    }
    /// What cleaning did (`escaped`, `truncated`, `redacted`), and
    /// `client_ip_unreadable` when the forwarded client address could not be read.
    pub fn flags(&self) -> &[Text] {
        &self.flags
    }

    /// Whether the event has `flag` (see [`flags`](Self::flags)).
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
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
