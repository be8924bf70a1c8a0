//! [`EventBuilder`]: the caller's fields, the request's defaults, and the cleaning of
//! every text field when the event is built.

use std::borrow::Cow;
use std::net::IpAddr;

use time::OffsetDateTime;

use super::{
    Actor, AuditEvent, FileInfo, HttpInfo, Outcome, Reason, Text, MAX_ACTION, MAX_ID,
    MAX_REASON_CODE, MAX_REASON_TEXT, MAX_REQUEST_ID, MAX_RESOURCE, MAX_USER_AGENT, SCHEMA_VERSION,
};
use crate::client_ip::ClientIp;
use crate::sanitize::{clean_cow, clean_owned, without_query, Flags};

/// Builds an [`AuditEvent`]; [`build`](Self::build) cleans every field.
#[derive(Clone, Debug)]
#[must_use]
pub struct EventBuilder {
    action: Text,
    outcome: Outcome,
    actor: Actor,
    service: Option<Text>,
    resource: Option<String>,
    reason: Option<(Text, Text)>,
    client_ip: Option<IpAddr>,
    /// The request's client address could not be read (flag `client_ip_unreadable`).
    client_ip_unreadable: bool,
    request_id: Option<String>,
    client_request_id: Option<String>,
    trace_id: Option<String>,
    http: Option<HttpInfo>,
    file: Option<FileInfo>,
    user_agent: Option<String>,
}

/// What a request adds to an event built in its course: each is asked for only when
/// the builder does not already have it, so nothing is computed for nothing.
pub(crate) trait RequestDefaults {
    fn client_ip(&self) -> ClientIp;
    fn request_id(&self) -> Option<String>;
    fn client_request_id(&self) -> Option<String>;
    fn trace_id(&self) -> Option<String>;
    fn user_agent(&self) -> Option<String>;
    fn service(&self) -> Option<Text>;
    /// Method and route, when the builder has no [`HttpInfo`].
    fn http(&self) -> (&'static str, String);
}

impl EventBuilder {
    pub(super) fn new(action: Text, outcome: Outcome) -> Self {
        Self {
            action,
            outcome,
            actor: Actor::Anonymous,
            service: None,
            resource: None,
            reason: None,
            client_ip: None,
            client_ip_unreadable: false,
            request_id: None,
            client_request_id: None,
            trace_id: None,
            http: None,
            file: None,
            user_agent: None,
        }
    }

    /// Fills what the builder does not already have from its request.
    pub(crate) fn with_defaults(mut self, request: &impl RequestDefaults) -> Self {
        if self.client_ip.is_none() {
            match request.client_ip() {
                ClientIp::Known(ip) => self.client_ip = Some(ip),
                ClientIp::Unreadable { .. } => self.client_ip_unreadable = true,
                _ => {}
            }
        }
        if self.request_id.is_none() {
            self.request_id = request.request_id();
        }
        if self.client_request_id.is_none() {
            self.client_request_id = request.client_request_id();
        }
        if self.trace_id.is_none() {
            self.trace_id = request.trace_id();
        }
        if self.user_agent.is_none() {
            self.user_agent = request.user_agent();
        }
        if self.service.is_none() {
            self.service = request.service();
        }
        if self.http.is_none() {
            let (method, route) = request.http();
            self = self.http(method, route, None);
        }
        self
    }

    /// Who acted (default [`Actor::Anonymous`]).
    pub fn actor(mut self, actor: Actor) -> Self {
        self.actor = actor;
        self
    }
    /// The recording service's name.
    pub fn service(mut self, service: impl Into<Text>) -> Self {
        self.service = Some(service.into());
        self
    }
    /// What was acted on; a query string is dropped.
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }
    /// Why, as a stable code and a text.
    pub fn reason(mut self, code: impl Into<Text>, text: impl Into<Text>) -> Self {
        self.reason = Some((code.into(), text.into()));
        self
    }
    /// The client's address.
    pub fn client_ip(mut self, ip: IpAddr) -> Self {
        self.client_ip = Some(ip);
        self
    }
    /// The server's request id.
    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }
    /// The request id the client sent.
    pub fn client_request_id(mut self, id: impl Into<String>) -> Self {
        self.client_request_id = Some(id.into());
        self
    }
    /// The W3C trace id (32 hex digits); anything else is ignored.
    pub fn trace_id(mut self, id: impl Into<String>) -> Self {
        let id = id.into();
        if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            self.trace_id = Some(id.to_ascii_lowercase());
        }
        self
    }
    /// The HTTP request.
    pub fn http(
        mut self,
        method: impl Into<Text>,
        route: impl Into<String>,
        status: Option<u16>,
    ) -> Self {
        self.http = Some(HttpInfo {
            method: method.into(),
            route: route.into(),
            status,
        });
        self
    }
    /// The file.
    pub fn file(mut self, file: FileInfo) -> Self {
        self.file = Some(file);
        self
    }
    /// The client's `User-Agent`.
    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = Some(agent.into());
        self
    }

    /// Cleans every field and mints the id and time. The `seq` is set when the event
    /// is queued.
    pub fn build(self) -> AuditEvent {
        let mut flags = Flags {
            client_ip_unreadable: self.client_ip_unreadable,
            ..Flags::default()
        };
        let f = &mut flags;
        let opt = |v: Option<String>, max: usize, f: &mut Flags| v.map(|v| clean_owned(v, max, f));
        let service = self.service.map(|v| clean_cow(v, MAX_ID, f));
        let resource = self
            .resource
            .map(|r| clean_owned(without_query(r, f), MAX_RESOURCE, f));
        let http = self.http.map(|h| HttpInfo {
            method: clean_cow(h.method, 16, f),
            route: clean_owned(without_query(h.route, f), MAX_RESOURCE, f),
            status: h.status,
        });
        let file = self.file.map(|file| FileInfo {
            id: clean_owned(file.id, MAX_ID, f),
            owner: file.owner.map(|o| clean_owned(o, MAX_ID, f)),
            name: file.name.map(|n| clean_owned(n, MAX_ID, f)),
            size: file.size,
        });
        let reason = self.reason.map(|(code, text)| Reason {
            code: clean_cow(code, MAX_REASON_CODE, f),
            text: clean_cow(text, MAX_REASON_TEXT, f),
        });
        let event = AuditEvent {
            schema_version: SCHEMA_VERSION,
            event_id: crate::ids::uuid_v7(),
            seq: 0,
            time: OffsetDateTime::now_utc(),
            service,
            actor: self.actor.cleaned(f),
            action: clean_cow(self.action, MAX_ACTION, f),
            resource,
            outcome: self.outcome,
            reason,
            client_ip: self.client_ip,
            request_id: opt(self.request_id, MAX_REQUEST_ID, f),
            client_request_id: opt(self.client_request_id, MAX_REQUEST_ID, f),
            trace_id: self.trace_id,
            http,
            file,
            user_agent: opt(self.user_agent, MAX_USER_AGENT, f),
            flags: Vec::new(),
        };
        AuditEvent {
            flags: flags.names().into_iter().map(Cow::Borrowed).collect(),
            ..event
        }
    }
}
