//! The JSON form of an [`AuditEvent`]: the fields in their documented order, borrowed
//! from the event's buffer when written; read back through the same buffer.

use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use uuid::Uuid;

use super::text::{Field, Texts};
use super::{
    Actor, ActorKind, ActorRef, AuditEvent, FileInfo, FileRef, HttpInfo, Outcome, Reason, Text,
};
use crate::sanitize::Flags;

/// An event as it is written: every field borrowed.
#[derive(Debug, PartialEq, Serialize)]
pub(super) struct Wire<'a> {
    schema_version: u16,
    event_id: Uuid,
    seq: u64,
    #[serde(serialize_with = "rfc3339")]
    time: OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<&'a str>,
    actor: ActorRef<'a>,
    action: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<&'a str>,
    outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<Reason<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http: Option<HttpInfo<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<FileRef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<&'a str>,
    /// `escaped`, `truncated`, `redacted`, `client_ip_unreadable`.
    #[serde(skip_serializing_if = "<[Text]>::is_empty")]
    flags: &'static [Text],
}

impl<'a> Wire<'a> {
    pub(super) fn of(event: &'a AuditEvent) -> Self {
        Self {
            schema_version: event.schema_version,
            event_id: event.event_id,
            seq: event.seq,
            time: event.time,
            service: event.service(),
            actor: event.actor(),
            action: event.action(),
            resource: event.resource(),
            outcome: event.outcome,
            reason: event.reason(),
            client_ip: event.client_ip,
            request_id: event.request_id(),
            client_request_id: event.client_request_id(),
            trace_id: event.trace_id(),
            http: event.http(),
            file: event.file(),
            user_agent: event.user_agent(),
            flags: event.flags(),
        }
    }
}

fn rfc3339<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    let text = t
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(serde::ser::Error::custom)?;
    s.serialize_str(&text)
}

impl Serialize for AuditEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Wire::of(self).serialize(serializer)
    }
}

/// An event as it is read: owned.
#[derive(Deserialize)]
struct Owned {
    schema_version: u16,
    event_id: Uuid,
    seq: u64,
    #[serde(deserialize_with = "from_rfc3339")]
    time: OffsetDateTime,
    #[serde(default)]
    service: Option<String>,
    actor: Actor,
    action: String,
    #[serde(default)]
    resource: Option<String>,
    outcome: Outcome,
    #[serde(default)]
    reason: Option<OwnedReason>,
    #[serde(default)]
    client_ip: Option<IpAddr>,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    client_request_id: Option<String>,
    #[serde(default)]
    trace_id: Option<String>,
    #[serde(default)]
    http: Option<OwnedHttp>,
    #[serde(default)]
    file: Option<FileInfo>,
    #[serde(default)]
    user_agent: Option<String>,
    #[serde(default)]
    flags: Vec<String>,
}

#[derive(Deserialize)]
struct OwnedReason {
    code: String,
    text: String,
}

#[derive(Deserialize)]
struct OwnedHttp {
    method: String,
    route: String,
    #[serde(default)]
    status: Option<u16>,
}

fn from_rfc3339<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
    let text = String::deserialize(d)?;
    OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
        .map_err(serde::de::Error::custom)
}

/// Read back as written: the text is not cleaned again; flags this version does not
/// know are left out.
impl<'de> Deserialize<'de> for AuditEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let o = Owned::deserialize(deserializer)?;
        let mut texts = Texts::with_capacity(256);
        let mut put = |field: Field, text: Option<&str>| {
            if let Some(text) = text {
                texts.set_with(field, |buf| buf.push_str(text));
            }
        };
        let (actor, actor_id) = match &o.actor {
            Actor::User { id } => (ActorKind::User, Some(id.as_str())),
            Actor::Service { name } => (ActorKind::Service, Some(name.as_str())),
            Actor::Anonymous => (ActorKind::Anonymous, None),
        };
        put(Field::Service, o.service.as_deref());
        put(Field::ActorId, actor_id);
        put(Field::Action, Some(&o.action));
        put(Field::Resource, o.resource.as_deref());
        put(
            Field::ReasonCode,
            o.reason.as_ref().map(|r| r.code.as_str()),
        );
        put(
            Field::ReasonText,
            o.reason.as_ref().map(|r| r.text.as_str()),
        );
        put(Field::RequestId, o.request_id.as_deref());
        put(Field::ClientRequestId, o.client_request_id.as_deref());
        put(Field::TraceId, o.trace_id.as_deref());
        put(Field::Method, o.http.as_ref().map(|h| h.method.as_str()));
        put(Field::Route, o.http.as_ref().map(|h| h.route.as_str()));
        put(Field::FileId, o.file.as_ref().map(|f| f.id.as_str()));
        put(
            Field::FileOwner,
            o.file.as_ref().and_then(|f| f.owner.as_deref()),
        );
        put(
            Field::FileName,
            o.file.as_ref().and_then(|f| f.name.as_deref()),
        );
        put(Field::UserAgent, o.user_agent.as_deref());
        Ok(AuditEvent {
            schema_version: o.schema_version,
            event_id: o.event_id,
            seq: o.seq,
            time: o.time,
            outcome: o.outcome,
            actor,
            client_ip: o.client_ip,
            status: o.http.and_then(|h| h.status),
            file_size: o.file.and_then(|f| f.size),
            flags: Flags::from_names(o.flags.iter().map(String::as_str)),
            texts,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::{Actor, AuditEvent, FileInfo, Outcome};

    fn every_field() -> AuditEvent {
        AuditEvent::builder("file.download", Outcome::Denied)
            .actor(Actor::service("billing"))
            .service("storage")
            .resource("file:42?sig=x")
            .reason("not_owner", "line\nbreak")
            .client_ip(
                "203.0.113.9"
                    .parse()
                    .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
            )
            .request_id("r-1")
            .client_request_id("c-1")
            .trace_id("4BF92F3577B34DA6A3CE929D0E0E4736")
            .http("GET", "/files/{id}", Some(403))
            .file(FileInfo {
                id: "42".into(),
                owner: Some("alice".into()),
                name: None,
                size: Some(7),
            })
            .user_agent("curl/8")
            .build()
    }

    #[test]
    fn the_json_layout_keeps_its_field_order_and_names() {
        let event = every_field();
        let json = event.to_json();
        let tail = json
            .split_once(r#""service""#)
            .map(|(_, t)| t)
            .unwrap_or_default();
        assert_eq!(
            tail,
            r#":"storage","actor":{"type":"service","name":"billing"},"action":"file.download","resource":"file:42?[redacted]","outcome":"denied","reason":{"code":"not_owner","text":"line\\u{000a}break"},"client_ip":"203.0.113.9","request_id":"r-1","client_request_id":"c-1","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","http":{"method":"GET","route":"/files/{id}","status":403},"file":{"id":"42","owner":"alice","size":7},"user_agent":"curl/8","flags":["escaped","redacted"]}"#
        );
        assert!(json.starts_with(r#"{"schema_version":1,"event_id":""#));
    }

    #[test]
    fn an_event_reads_back_as_it_was_written() {
        let event = every_field();
        let read: AuditEvent = serde_json::from_str(&event.to_json()).unwrap_or_else(|e| {
            panic!("{e}");
        });
        assert_eq!(read, event);
        assert_eq!(read.to_json(), event.to_json());
        let anonymous = AuditEvent::builder("x", Outcome::Allowed).build();
        let read: AuditEvent =
            serde_json::from_str(&anonymous.to_json()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read, anonymous);
        assert!(read.http().is_none() && read.file().is_none() && read.reason().is_none());
    }

    #[test]
    fn an_event_sets_its_actor_from_the_last_call() {
        let user = Actor::user("u");
        let event = AuditEvent::builder("x", Outcome::Allowed)
            .actor(&user)
            .actor(Actor::Anonymous)
            .build();
        assert_eq!(event.actor(), Actor::Anonymous);
        assert_eq!(event.to_json().matches("\"u\"").count(), 0);
    }
}
