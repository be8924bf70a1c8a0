//! [`EventBuilder`]: the caller's fields, the request's defaults, and the cleaning of
//! every text field when the event is built.
//!
//! The builder copies every text it is given into one buffer (see `text.rs`), which
//! becomes the event's: an event costs one allocation, however many fields it has.

use std::borrow::Borrow;
use std::net::IpAddr;

use time::OffsetDateTime;

use super::text::{Field, Texts};
use super::{Actor, ActorKind, AuditEvent, FileInfo, Outcome, SCHEMA_VERSION};
use crate::client_ip::ClientIp;
use crate::sanitize::Flags;

/// What the buffer of a typical event holds (an event with a long `User-Agent` grows
/// it once).
const CAPACITY: usize = 256;

/// Builds an [`AuditEvent`]; [`build`](Self::build) cleans every field.
#[derive(Clone, Debug)]
#[must_use]
pub struct EventBuilder {
    outcome: Outcome,
    actor: ActorKind,
    texts: Texts,
    /// `truncated` for raw input cut before it was kept; `client_ip_unreadable`.
    flags: Flags,
    client_ip: Option<IpAddr>,
    status: Option<u16>,
    file_size: Option<u64>,
}

/// What a request adds to an event built in its course: each is asked for only when
/// the builder does not already have it, so nothing is computed for nothing. The text
/// ones hand their text to `set`, which copies it into the event's buffer.
pub(crate) trait RequestDefaults {
    fn client_ip(&self) -> ClientIp;
    fn request_id(&self, set: impl FnOnce(&str));
    fn client_request_id(&self, set: impl FnOnce(&str));
    fn trace_id(&self, set: impl FnOnce(&str));
    fn user_agent(&self, set: impl FnOnce(&str));
    fn service(&self) -> Option<&str>;
    /// Method and route, when the builder has no HTTP request.
    fn http(&self, set: impl FnOnce(&'static str, &str));
}

impl EventBuilder {
    pub(super) fn new(action: &str, outcome: Outcome) -> Self {
        let mut builder = Self {
            outcome,
            actor: ActorKind::Anonymous,
            texts: Texts::with_capacity(CAPACITY),
            flags: Flags::default(),
            client_ip: None,
            status: None,
            file_size: None,
        };
        builder.set(Field::Action, action);
        builder
    }

    fn set(&mut self, field: Field, text: &str) {
        self.texts.set(field, text);
    }

    fn set_trace_id(&mut self, id: &str) {
        if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            self.texts.set_with(Field::TraceId, |buf| {
                buf.extend(id.chars().map(|c| c.to_ascii_lowercase()));
            });
        }
    }

    /// Fills what the builder does not already have from its request.
    pub(crate) fn with_defaults(mut self, request: &impl RequestDefaults) -> Self {
        if self.client_ip.is_none() {
            match request.client_ip() {
                ClientIp::Known(ip) => self.client_ip = Some(ip),
                ClientIp::Unreadable { .. } => self.flags.client_ip_unreadable = true,
                _ => {}
            }
        }
        if !self.texts.has(Field::RequestId) {
            request.request_id(|id| self.set(Field::RequestId, id));
        }
        if !self.texts.has(Field::ClientRequestId) {
            request.client_request_id(|id| self.set(Field::ClientRequestId, id));
        }
        if !self.texts.has(Field::TraceId) {
            request.trace_id(|id| self.set_trace_id(id));
        }
        if !self.texts.has(Field::UserAgent) {
            request.user_agent(|agent| self.set(Field::UserAgent, agent));
        }
        if !self.texts.has(Field::Service) {
            if let Some(service) = request.service() {
                self.set(Field::Service, service);
            }
        }
        if !self.texts.has(Field::Method) {
            request.http(|method, route| {
                self.set(Field::Method, method);
                self.set(Field::Route, route);
            });
        }
        self
    }

    /// Who acted (default [`Actor::Anonymous`]); an `Actor` or a reference to one.
    pub fn actor(mut self, actor: impl Borrow<Actor>) -> Self {
        match actor.borrow() {
            Actor::User { id } => {
                self.actor = ActorKind::User;
                self.set(Field::ActorId, id);
            }
            Actor::Service { name } => {
                self.actor = ActorKind::Service;
                self.set(Field::ActorId, name);
            }
            Actor::Anonymous => {
                self.actor = ActorKind::Anonymous;
                self.texts.clear(Field::ActorId);
            }
        }
        self
    }
    /// The recording service's name.
    pub fn service(mut self, service: impl AsRef<str>) -> Self {
        self.set(Field::Service, service.as_ref());
        self
    }
    /// What was acted on; a query string is dropped.
    pub fn resource(mut self, resource: impl AsRef<str>) -> Self {
        self.set(Field::Resource, resource.as_ref());
        self
    }
    /// Why, as a stable code and a text.
    pub fn reason(mut self, code: impl AsRef<str>, text: impl AsRef<str>) -> Self {
        self.set(Field::ReasonCode, code.as_ref());
        self.set(Field::ReasonText, text.as_ref());
        self
    }
    /// The client's address.
    pub fn client_ip(mut self, ip: IpAddr) -> Self {
        self.client_ip = Some(ip);
        self
    }
    /// The server's request id.
    pub fn request_id(mut self, id: impl AsRef<str>) -> Self {
        self.set(Field::RequestId, id.as_ref());
        self
    }
    /// The request id the client sent.
    pub fn client_request_id(mut self, id: impl AsRef<str>) -> Self {
        self.set(Field::ClientRequestId, id.as_ref());
        self
    }
    /// The W3C trace id (32 hex digits); anything else is ignored.
    pub fn trace_id(mut self, id: impl AsRef<str>) -> Self {
        self.set_trace_id(id.as_ref());
        self
    }
    /// The HTTP request.
    pub fn http(
        mut self,
        method: impl AsRef<str>,
        route: impl AsRef<str>,
        status: Option<u16>,
    ) -> Self {
        self.set(Field::Method, method.as_ref());
        self.set(Field::Route, route.as_ref());
        self.status = status;
        self
    }
    /// The file; a [`FileInfo`] or a reference to one.
    pub fn file(mut self, file: impl Borrow<FileInfo>) -> Self {
        let file = file.borrow();
        self.set(Field::FileId, &file.id);
        for (field, text) in [
            (Field::FileOwner, &file.owner),
            (Field::FileName, &file.name),
        ] {
            match text {
                Some(text) => self.set(field, text),
                None => self.texts.clear(field),
            }
        }
        self.file_size = file.size;
        self
    }
    /// The client's `User-Agent`.
    pub fn user_agent(mut self, agent: impl AsRef<str>) -> Self {
        self.set(Field::UserAgent, agent.as_ref());
        self
    }

    /// Cleans every field and mints the id and time. The `seq` is set when the event
    /// is queued.
    pub fn build(self) -> AuditEvent {
        let mut flags = self.flags;
        let texts = self.texts.cleaned(&mut flags);
        AuditEvent {
            schema_version: SCHEMA_VERSION,
            event_id: crate::ids::uuid_v7(),
            seq: 0,
            time: OffsetDateTime::now_utc(),
            outcome: self.outcome,
            actor: self.actor,
            client_ip: self.client_ip,
            status: self.status,
            file_size: self.file_size,
            flags,
            texts,
        }
    }
}
