//! Fields recorded once, as the JSON members they are written as (`"name":value`), in
//! one buffer per span or event: a line copies them, it does not format them again.

use std::fmt::{self, Write as _};

use serde_json::value::RawValue;
use tracing::field::{Field, Visit};

use super::escape;

/// The keys every line starts with; a field of the same name is written as
/// `fields.<name>`.
pub(super) const FIXED_KEYS: [&str; 5] = ["timestamp", "level", "message", "target", "service"];

/// One field: its name and where its member lies in [`Fields::bytes`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Entry {
    pub(super) name: &'static str,
    start: u32,
    end: u32,
}

/// The fields of a span or an event, each rendered as a JSON member, in the order
/// they were first recorded; recording a field again replaces it.
#[derive(Debug, Default)]
pub(super) struct Fields {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
}

impl Fields {
    /// Room for `count` fields of the usual size, so that recording them does not grow
    /// the buffers step by step.
    pub(super) fn with_room_for(count: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(32 * count + 64),
            entries: Vec::with_capacity(count),
        }
    }

    /// Forgets every field, keeping the memory.
    pub(super) fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
    }

    /// The fields, in recording order.
    pub(super) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The member `"name":value` of `entry`.
    pub(super) fn member(&self, entry: &Entry) -> &[u8] {
        self.bytes
            .get(entry.start as usize..entry.end as usize)
            .unwrap_or_default()
    }

    /// The bytes held, for the size check of reused buffers.
    pub(super) fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// Writes field `name`'s member with `value` (which appends the JSON value).
    ///
    /// The new member is written first and the old one removed only then: `value` runs
    /// the application's `Debug`/`Display`, and if it panics (and the span lives on) the
    /// entries still point at whole members (the half-written one at the end belongs to
    /// none).
    fn set(&mut self, name: &'static str, value: impl FnOnce(&mut Vec<u8>)) {
        let at = self.entries.iter().position(|e| e.name == name);
        let Some((start, end)) = self.append(name, value) else {
            // Too big to keep: the field keeps its earlier value, if any.
            return;
        };
        self.place(name, at, start, end);
    }

    /// Takes `other`'s members, each replacing the member of the same name.
    pub(super) fn merge(&mut self, other: &Fields) {
        for entry in &other.entries {
            let at = self.entries.iter().position(|e| e.name == entry.name);
            let start = self.bytes.len();
            self.bytes.extend_from_slice(other.member(entry));
            match (u32::try_from(start), u32::try_from(self.bytes.len())) {
                (Ok(start), Ok(end)) => self.place(entry.name, at, start, end),
                _ => self.bytes.truncate(start),
            }
        }
    }

    /// Records the member just appended at `start..end` as field `name`'s, replacing
    /// the entry `at` if the field had one.
    fn place(&mut self, name: &'static str, at: Option<usize>, start: u32, end: u32) {
        let Some(at) = at else {
            self.entries.push(Entry { name, start, end });
            return;
        };
        // Recorded again: the old member goes, the ones after it move down (the new
        // one among them).
        let old = self.entries[at];
        self.bytes.drain(old.start as usize..old.end as usize);
        let removed = old.end - old.start;
        for entry in &mut self.entries {
            if entry.start >= old.end {
                entry.start -= removed;
                entry.end -= removed;
            }
        }
        self.entries[at] = Entry {
            name,
            start: start - removed,
            end: end - removed,
        };
    }

    /// Appends the member; `None` (and nothing appended) past 4 GiB.
    fn append(&mut self, name: &str, value: impl FnOnce(&mut Vec<u8>)) -> Option<(u32, u32)> {
        let start = self.bytes.len();
        if FIXED_KEYS.contains(&name) {
            self.bytes.extend_from_slice(b"\"fields.");
            escape::string_body(&mut self.bytes, name);
            self.bytes.push(b'"');
        } else {
            escape::string(&mut self.bytes, name);
        }
        self.bytes.push(b':');
        value(&mut self.bytes);
        // A span's fields stay far below 4 GiB; past that, a field is left out.
        match (u32::try_from(start), u32::try_from(self.bytes.len())) {
            (Ok(start), Ok(end)) => Some((start, end)),
            _ => {
                self.bytes.truncate(start);
                None
            }
        }
    }
}

/// Records fields into [`Fields`]: a span's, or an event's with its message apart and
/// its JSON fields nested.
pub(super) struct Recorder<'a> {
    fields: &'a mut Fields,
    /// Where an event's `message` goes, as a JSON string; `None` for a span, whose
    /// `message` field is a field like the others.
    message: Option<&'a mut Vec<u8>>,
    /// Names of the event fields written as nested JSON, and the text of such a field
    /// while it is checked.
    json_fields: &'a [String],
    text: Option<&'a mut String>,
}

impl<'a> Recorder<'a> {
    /// Records a span's fields.
    pub(super) fn span(fields: &'a mut Fields) -> Self {
        Self {
            fields,
            message: None,
            json_fields: &[],
            text: None,
        }
    }

    /// Records an event's fields, its message into `message` and the fields named in
    /// `json_fields` as nested JSON when they hold a JSON document (checked in `text`).
    pub(super) fn event(
        fields: &'a mut Fields,
        message: &'a mut Vec<u8>,
        json_fields: &'a [String],
        text: &'a mut String,
    ) -> Self {
        Self {
            fields,
            message: Some(message),
            json_fields,
            text: Some(text),
        }
    }

    /// The message's buffer if `field` is the event's message.
    /// Recorded again, the message replaces the earlier one.
    fn message(&mut self, field: &Field) -> Option<&mut Vec<u8>> {
        if field.name() != "message" {
            return None;
        }
        let message = self.message.as_deref_mut()?;
        message.clear();
        Some(message)
    }

    fn is_json_field(&self, name: &str) -> bool {
        self.json_fields.iter().any(|f| f == name)
    }

    /// Records a text field: nested when it is a JSON field holding a JSON document.
    fn record_text(&mut self, name: &'static str, text: &str) {
        if self.is_json_field(name) {
            if let Some(json) = embeddable(text) {
                self.fields
                    .set(name, |out| out.extend_from_slice(json.as_bytes()));
                return;
            }
        }
        self.fields.set(name, |out| escape::string(out, text));
    }

    /// Records a formatted field (`{}` or `{:?}`).
    fn formatted(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        let name = field.name();
        if let Some(message) = self.message(field) {
            escape::display(message, value);
        } else if self.is_json_field(name) {
            if let Some(text) = self.text.take() {
                text.clear();
                let _ = text.write_fmt(value);
                self.record_text(name, text);
                self.text = Some(text);
            }
        } else {
            self.fields.set(name, |out| escape::display(out, value));
        }
    }

    /// Records a number or a boolean: `json` is its JSON text; an event's message is
    /// that text as a string.
    fn scalar(&mut self, field: &Field, json: impl Fn(&mut Vec<u8>)) {
        if let Some(message) = self.message(field) {
            message.push(b'"');
            json(message);
            message.push(b'"');
        } else {
            self.fields.set(field.name(), json);
        }
    }
}

/// `text` as JSON to embed, if it is exactly one JSON document without a line break
/// (a raw line break can only be whitespace between its tokens, and would cut the
/// line); surrounding whitespace left out.
///
/// Nor with U+2028, U+2029 or a C1 control (NEL among them), which JSON allows raw in a
/// string but some readers take for a line break: such a text is written as an escaped
/// string instead.
fn embeddable(text: &str) -> Option<&str> {
    let breaks = |c: char| {
        matches!(
            c,
            '\n' | '\r' | '\u{2028}' | '\u{2029}' | '\u{80}'..='\u{9f}'
        )
    };
    if text.bytes().any(|b| b == b'\n' || b == b'\r' || b >= 0x80) && text.chars().any(breaks) {
        return None;
    }
    serde_json::from_str::<&RawValue>(text)
        .ok()
        .map(RawValue::get)
}

impl Visit for Recorder<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if !skipped(field) {
            self.scalar(field, |out| escape::float(out, value));
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        if !skipped(field) {
            self.scalar(field, |out| escape::integer(out, value));
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if !skipped(field) {
            self.scalar(field, |out| escape::integer(out, value));
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        if !skipped(field) {
            let text: &[u8] = if value { b"true" } else { b"false" };
            self.scalar(field, |out| out.extend_from_slice(text));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if skipped(field) {
            return;
        }
        if let Some(message) = self.message(field) {
            escape::string(message, value);
        } else {
            self.record_text(field.name(), value);
        }
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if !skipped(field) {
            self.formatted(field, format_args!("{value}"));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !skipped(field) {
            self.formatted(field, format_args!("{value:?}"));
        }
    }
}

/// `otel.name`, `otel.kind`, …: instructions to the OpenTelemetry layer, not data.
fn skipped(field: &Field) -> bool {
    field.name().starts_with("otel.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(fields: &Fields) -> String {
        let parts: Vec<String> = fields
            .entries()
            .iter()
            .map(|e| String::from_utf8(fields.member(e).to_vec()).unwrap())
            .collect();
        format!("{{{}}}", parts.join(","))
    }

    #[test]
    fn a_field_recorded_again_replaces_its_member_in_place() {
        let mut fields = Fields::default();
        fields.set("a", |out| out.extend_from_slice(b"1"));
        fields.set("b", |out| out.extend_from_slice(b"\"first\""));
        fields.set("c", |out| out.extend_from_slice(b"3"));
        fields.set("b", |out| out.extend_from_slice(b"\"second, longer\""));
        fields.set("a", |out| out.extend_from_slice(b"10"));
        assert_eq!(members(&fields), r#"{"a":10,"b":"second, longer","c":3}"#);
    }

    #[test]
    fn a_value_that_panics_while_recorded_again_leaves_every_member_whole() {
        let mut fields = Fields::default();
        fields.set("a", |out| out.extend_from_slice(b"1"));
        fields.set("b", |out| out.extend_from_slice(b"\"first\""));
        fields.set("c", |out| out.extend_from_slice(b"3"));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            fields.set("b", |out| {
                out.extend_from_slice(b"\"half");
                panic!("a Debug impl panics");
            });
        }));
        assert!(panicked.is_err());
        let line = members(&fields);
        assert_eq!(line, r#"{"a":1,"b":"first","c":3}"#, "the old value stays");
        fields.set("b", |out| out.extend_from_slice(b"\"again\""));
        fields.set("c", |out| out.extend_from_slice(b"4"));
        let line = members(&fields);
        assert_eq!(line, r#"{"a":1,"b":"again","c":4}"#);
        serde_json::from_str::<serde_json::Value>(&line).unwrap();
    }

    #[test]
    fn merged_fields_replace_those_of_the_same_name_and_add_the_others() {
        let mut span = Fields::default();
        span.set("a", |out| out.extend_from_slice(b"1"));
        span.set("b", |out| out.extend_from_slice(b"2"));
        let mut recorded = Fields::default();
        recorded.set("b", |out| out.extend_from_slice(b"\"two\""));
        recorded.set("c", |out| out.extend_from_slice(b"3"));
        span.merge(&recorded);
        assert_eq!(members(&span), r#"{"a":1,"b":"two","c":3}"#);
    }

    #[test]
    fn json_with_a_line_separator_inside_is_not_embedded() {
        assert_eq!(embeddable(r#" {"a":"x"} "#), Some(r#"{"a":"x"}"#));
        assert_eq!(embeddable(r#"{"a":"é🦀"}"#), Some(r#"{"a":"é🦀"}"#));
        for separator in ['\n', '\r', '\u{2028}', '\u{2029}', '\u{85}', '\u{9f}'] {
            let text = format!("{{\"a\":\"x{separator}y\"}}");
            assert_eq!(embeddable(&text), None, "{separator:?}");
        }
    }
}
