//! Rendering events as OCSF 1.3.
//!
//! - HTTP events (`http.*` actions, and any event with HTTP details but no file):
//!   **Web Resource Access Activity** (`class_uid` 6004): activity 1 Access Grant,
//!   2 Access Deny, 4 Access Error; `http_request` and `web_resources` as the class
//!   requires.
//! - File events (an event with a file): **File Hosting Activity** (6006): activity
//!   1 Upload (upload URL issued), 2 Download, 4 Delete, 99 Other; `actor`, `file` and
//!   `src_endpoint` as the class requires.
//!
//! Both carry the base event's required fields (`activity_id`, `category_uid` 6,
//! `class_uid`, `metadata`, `severity_id`, `time`, `type_uid`) and keep this crate's
//! own fields that OCSF has no place for (`seq`, `flags`, the reason code) under
//! `unmapped`.

use serde_json::{json, Map, Value};

use crate::event::{ActorRef, AuditEvent, Outcome};

/// The OCSF version rendered.
pub const OCSF_VERSION: &str = "1.3.0";

/// Renders `event` as an OCSF object.
pub fn render(event: &AuditEvent) -> Value {
    let file_event = event.file().is_some();
    let (class_uid, class_name, activity_id, activity_name) = if file_event {
        let (id, name) = match event.action() {
            "file.upload_url" | "file.upload" => (1, "Upload"),
            "file.download" => (2, "Download"),
            "file.delete" => (4, "Delete"),
            _ => (99, "Other"),
        };
        (6006, "File Hosting Activity", id, name)
    } else {
        let (id, name) = match event.outcome() {
            Outcome::Allowed => (1, "Access Grant"),
            Outcome::Denied => (2, "Access Deny"),
            Outcome::Error => (4, "Access Error"),
        };
        (6004, "Web Resource Access Activity", id, name)
    };
    let (severity_id, severity) = match event.outcome() {
        Outcome::Allowed => (1, "Informational"),
        Outcome::Error => (2, "Low"),
        Outcome::Denied => (3, "Medium"),
    };
    let (status_id, status) = match event.outcome() {
        Outcome::Allowed => (1, "Success"),
        _ => (2, "Failure"),
    };
    let mut o = Map::new();
    o.insert("activity_id".into(), json!(activity_id));
    o.insert("activity_name".into(), json!(activity_name));
    o.insert("category_uid".into(), json!(6));
    o.insert("category_name".into(), json!("Application Activity"));
    o.insert("class_uid".into(), json!(class_uid));
    o.insert("class_name".into(), json!(class_name));
    o.insert("type_uid".into(), json!(class_uid * 100 + activity_id));
    o.insert("severity_id".into(), json!(severity_id));
    o.insert("severity".into(), json!(severity));
    o.insert("status_id".into(), json!(status_id));
    o.insert("status".into(), json!(status));
    o.insert(
        "time".into(),
        json!((event.time().unix_timestamp_nanos() / 1_000_000) as i64),
    );
    o.insert("message".into(), json!(event.action()));
    let mut metadata = json!({
        "version": OCSF_VERSION,
        "uid": event.event_id().to_string(),
        "product": {
            "name": "secureconnect-audit",
            "vendor_name": "SecureConnect",
            "version": env!("CARGO_PKG_VERSION"),
        },
    });
    if let Some(request_id) = event.request_id() {
        metadata["correlation_uid"] = json!(request_id);
    }
    o.insert("metadata".into(), metadata);
    o.insert("actor".into(), actor(event.actor(), event.service()));
    let mut src = Map::new();
    if let Some(ip) = event.client_ip() {
        src.insert("ip".into(), json!(ip.to_string()));
    }
    o.insert("src_endpoint".into(), Value::Object(src));
    if let Some(reason) = event.reason() {
        o.insert("status_detail".into(), json!(reason.text));
    }
    let mut http_request = Map::new();
    if let Some(http) = event.http() {
        http_request.insert("http_method".into(), json!(http.method));
        http_request.insert("url".into(), json!({ "path": http.route }));
        if let Some(status) = http.status {
            o.insert("http_response".into(), json!({ "code": status }));
        }
    }
    if let Some(agent) = event.user_agent() {
        http_request.insert("user_agent".into(), json!(agent));
    }
    if let Some(id) = event.request_id() {
        http_request.insert("uid".into(), json!(id));
    }
    if let Some(file) = event.file() {
        let mut f = Map::new();
        f.insert("uid".into(), json!(file.id));
        f.insert("name".into(), json!(file.name.unwrap_or(file.id)));
        f.insert("type_id".into(), json!(1));
        f.insert("type".into(), json!("Regular File"));
        if let Some(size) = file.size {
            f.insert("size".into(), json!(size));
        }
        if let Some(owner) = file.owner {
            f.insert("owner".into(), json!({ "uid": owner }));
        }
        o.insert("file".into(), Value::Object(f));
        o.insert("cloud".into(), json!({ "provider": "secureconnect" }));
        if !http_request.is_empty() {
            o.insert("http_request".into(), Value::Object(http_request));
        }
    } else {
        o.insert("http_request".into(), Value::Object(http_request));
        let name = event
            .resource()
            .map(str::to_owned)
            .or_else(|| event.http().map(|h| h.route.to_owned()))
            .unwrap_or_default();
        o.insert("web_resources".into(), json!([{ "name": name }]));
    }
    let mut unmapped = json!({
        "schema_version": crate::event::SCHEMA_VERSION,
        "seq": event.seq(),
        "outcome": event.outcome().as_str(),
        "action": event.action(),
    });
    if let Some(reason) = event.reason() {
        unmapped["reason_code"] = json!(reason.code);
    }
    if let Some(id) = event.client_request_id() {
        unmapped["client_request_id"] = json!(id);
    }
    if let Some(id) = event.trace_id() {
        unmapped["trace_id"] = json!(id);
    }
    if !event.flags().is_empty() {
        unmapped["flags"] = json!(event.flags());
    }
    o.insert("unmapped".into(), unmapped);
    Value::Object(o)
}

fn actor(actor: ActorRef<'_>, service: Option<&str>) -> Value {
    let mut a = match actor {
        ActorRef::User { id } => json!({ "user": { "uid": id, "type_id": 1, "type": "User" } }),
        ActorRef::Service { name } => json!({ "app_name": name }),
        ActorRef::Anonymous => {
            json!({ "user": { "uid": "anonymous", "type_id": 0, "type": "Unknown" } })
        }
    };
    if let Some(service) = service {
        a["app_name"] = a.get("app_name").cloned().unwrap_or_else(|| json!(service));
    }
    a
}
