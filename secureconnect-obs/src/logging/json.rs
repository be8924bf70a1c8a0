//! [`JsonLayer`]: each event as one flat JSON object on one line (the format is
//! described in the [module docs](super)).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;

use serde_json::value::RawValue;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The keys every line starts with; a field of the same name is renamed.
const FIXED_KEYS: [&str; 5] = ["timestamp", "level", "message", "target", "service"];

/// The event field whose text is a JSON document by default: the field
/// secureconnect-audit's `TracingSink` puts each audit event in.
pub(crate) const DEFAULT_JSON_FIELD: &str = "audit_event";

/// A [`Layer`] that writes each event as one flat JSON line to `W`.
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let subscriber = tracing_subscriber::registry()
///     .with(secureconnect_obs::JsonLayer::new("auth", std::io::stderr));
/// tracing::subscriber::with_default(subscriber, || tracing::info!("hello"));
/// ```
#[derive(Debug)]
pub struct JsonLayer<W> {
    service: String,
    writer: W,
    json_fields: Vec<String>,
}

impl<W> JsonLayer<W>
where
    W: for<'w> MakeWriter<'w> + 'static,
{
    /// Lines of `service` written to `writer`. An event field named `audit_event`
    /// holding a JSON document is written as a nested object (see
    /// [`json_field`](Self::json_field)).
    pub fn new(service: impl Into<String>, writer: W) -> Self {
        Self {
            service: service.into(),
            writer,
            json_fields: vec![DEFAULT_JSON_FIELD.to_owned()],
        }
    }

    /// Writes the event field `name`, when its text is one JSON document on one line,
    /// as that JSON value (a nested object) instead of a string; any other text stays a
    /// string. For fields whose value a program serialized, such as an audit event.
    ///
    /// ```
    /// use tracing_subscriber::layer::SubscriberExt;
    ///
    /// let layer = secureconnect_obs::JsonLayer::new("auth", std::io::stderr).json_field("order");
    /// let subscriber = tracing_subscriber::registry().with(layer);
    /// tracing::subscriber::with_default(subscriber, || {
    ///     // {"…","order":{"id":7,"items":2}}
    ///     tracing::info!(order = r#"{"id":7,"items":2}"#, "order placed");
    /// });
    /// ```
    pub fn json_field(mut self, name: impl Into<String>) -> Self {
        self.json_fields.push(name.into());
        self
    }
}

/// A field's value as it is written.
#[derive(Debug)]
enum Written {
    Value(Value),
    /// A JSON document written as it is (a [`json_field`](JsonLayer::json_field)).
    Json(Box<RawValue>),
}

impl Written {
    fn write(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        match self {
            Self::Value(value) => serde_json::to_writer(out, value),
            Self::Json(raw) => {
                out.extend_from_slice(raw.get().as_bytes());
                Ok(())
            }
        }
    }
}

/// `text` as a JSON value to embed, if it is exactly one JSON document without a line
/// break (a raw line break can only be whitespace between its tokens, and would cut the
/// line).
fn embeddable(text: String) -> Result<Box<RawValue>, String> {
    if text.bytes().any(|b| b == b'\n' || b == b'\r') {
        return Err(text);
    }
    // `from_string` validates without building a tree; on failure the text is kept.
    match serde_json::from_str::<&RawValue>(&text) {
        Ok(_) => RawValue::from_string(text).map_err(|_| String::new()),
        Err(_) => Err(text),
    }
}

/// Fields recorded on a span, kept in its extensions.
#[derive(Debug, Default)]
struct SpanFields(Vec<(&'static str, Value)>);

impl SpanFields {
    fn set(&mut self, name: &'static str, value: Value) {
        // `otel.name`, `otel.kind`, …: instructions to the OpenTelemetry layer, not data.
        if name.starts_with("otel.") {
            return;
        }
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }
}

impl Visit for SpanFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.set(field.name(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.set(field.name(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.set(field.name(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.set(field.name(), Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field.name(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.set(field.name(), Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.set(field.name(), Value::from(format!("{value:?}")));
    }
}

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut fields = SpanFields::default();
            attrs.record(&mut fields);
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut extensions = span.extensions_mut();
            if let Some(fields) = extensions.get_mut::<SpanFields>() {
                values.record(fields);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::<&str, Written>::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(span_fields) = span.extensions().get::<SpanFields>() {
                    for (k, v) in &span_fields.0 {
                        fields.insert(k, Written::Value(v.clone()));
                    }
                }
            }
        }
        let mut own = SpanFields::default();
        event.record(&mut own);
        let mut message = Value::from("");
        for (k, v) in own.0 {
            if k == "message" {
                message = v;
                continue;
            }
            let field = match v {
                Value::String(text) if self.json_fields.iter().any(|f| f == k) => {
                    match embeddable(text) {
                        Ok(raw) => Written::Json(raw),
                        Err(text) => Written::Value(Value::String(text)),
                    }
                }
                v => Written::Value(v),
            };
            fields.insert(k, field);
        }
        let meta = event.metadata();
        BUFFER.with(|cell| {
            // A re-entrant event (logged while writing this one) gets a fresh buffer.
            let mut fallback = Vec::new();
            let mut borrowed = cell.try_borrow_mut();
            let buffer = match borrowed.as_deref_mut() {
                Ok(buffer) => buffer,
                Err(_) => &mut fallback,
            };
            buffer.clear();
            if write_line(buffer, &self.service, meta, &message, &fields).is_ok() {
                let _ = self.writer.make_writer_for(meta).write_all(buffer);
            }
            if buffer.capacity() > 64 * 1024 {
                *buffer = Vec::new();
            }
        });
    }
}

/// Writes one JSON object and a newline to `out`.
fn write_line(
    out: &mut Vec<u8>,
    service: &str,
    meta: &tracing::Metadata<'_>,
    message: &Value,
    fields: &BTreeMap<&str, Written>,
) -> serde_json::Result<()> {
    let now = OffsetDateTime::now_utc();
    let timestamp = now.format(&Rfc3339).unwrap_or_default();
    out.extend_from_slice(b"{\"timestamp\":");
    serde_json::to_writer(&mut *out, &timestamp)?;
    out.extend_from_slice(b",\"level\":\"");
    out.extend_from_slice(meta.level().as_str().as_bytes());
    out.extend_from_slice(b"\",\"message\":");
    match message {
        Value::String(s) => serde_json::to_writer(&mut *out, s)?,
        other => serde_json::to_writer(&mut *out, &other.to_string())?,
    }
    out.extend_from_slice(b",\"target\":");
    serde_json::to_writer(&mut *out, meta.target())?;
    out.extend_from_slice(b",\"service\":");
    serde_json::to_writer(&mut *out, service)?;
    for (key, value) in fields {
        out.push(b',');
        if FIXED_KEYS.contains(key) {
            serde_json::to_writer(&mut *out, &format!("fields.{key}"))?;
        } else {
            serde_json::to_writer(&mut *out, key)?;
        }
        out.push(b':');
        value.write(out)?;
    }
    out.extend_from_slice(b"}\n");
    Ok(())
}
