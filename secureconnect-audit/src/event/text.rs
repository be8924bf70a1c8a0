//! The text of one event in one buffer: every text field is a range of it, so an event
//! is one allocation however many fields it carries, and the thread that writes it out
//! frees one block (frees across threads are slow in glibc's `malloc`).

use crate::sanitize::{clean, has_dangerous, might_hold_secret, Flags, REDACTED};

use super::{
    MAX_ACTION, MAX_ID, MAX_REASON_CODE, MAX_REASON_TEXT, MAX_REQUEST_ID, MAX_RESOURCE,
    MAX_USER_AGENT,
};

/// The text fields of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Field {
    Service,
    ActorId,
    Action,
    Resource,
    ReasonCode,
    ReasonText,
    RequestId,
    ClientRequestId,
    TraceId,
    Method,
    Route,
    FileId,
    FileOwner,
    FileName,
    UserAgent,
}

const FIELDS: usize = 15;

impl Field {
    const ALL: [Self; FIELDS] = [
        Self::Service,
        Self::ActorId,
        Self::Action,
        Self::Resource,
        Self::ReasonCode,
        Self::ReasonText,
        Self::RequestId,
        Self::ClientRequestId,
        Self::TraceId,
        Self::Method,
        Self::Route,
        Self::FileId,
        Self::FileOwner,
        Self::FileName,
        Self::UserAgent,
    ];

    /// The most bytes the field keeps after cleaning.
    fn max(self) -> usize {
        match self {
            Self::Service | Self::ActorId | Self::FileId | Self::FileOwner | Self::FileName => {
                MAX_ID
            }
            Self::Action => MAX_ACTION,
            Self::Resource | Self::Route => MAX_RESOURCE,
            Self::ReasonCode => MAX_REASON_CODE,
            Self::ReasonText => MAX_REASON_TEXT,
            Self::RequestId | Self::ClientRequestId => MAX_REQUEST_ID,
            Self::TraceId => 32,
            Self::Method => 16,
            Self::UserAgent => MAX_USER_AGENT,
        }
    }

    /// Whether the field is a path whose query string is dropped.
    fn is_path(self) -> bool {
        matches!(self, Self::Resource | Self::Route)
    }

    /// The most bytes of raw input kept until cleaning: what cleaning looks at.
    fn max_raw(self) -> usize {
        self.max() * 4 + 64
    }
}

/// Where a field is in the buffer; `start > end` when absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

const ABSENT: Span = Span {
    start: u32::MAX,
    end: 0,
};

/// Text fields in one buffer. Setting a field again appends its new value (the old one
/// stays unused in the buffer until cleaning copies the fields into a new one).
#[derive(Clone, Debug)]
pub(crate) struct Texts {
    buf: String,
    spans: [Span; FIELDS],
    /// Some bytes of the buffer belong to no field.
    stale: bool,
    /// The fields whose raw input was cut when set (one bit per field): the event is
    /// flagged `truncated` only if such a value is still there when it is cleaned.
    cut: u16,
}

impl Texts {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: String::with_capacity(capacity),
            spans: [ABSENT; FIELDS],
            stale: false,
            cut: 0,
        }
    }

    pub(crate) fn get(&self, field: Field) -> Option<&str> {
        let span = self.spans[field as usize];
        self.buf.get(span.start as usize..span.end as usize)
    }

    pub(crate) fn has(&self, field: Field) -> bool {
        let span = self.spans[field as usize];
        span.start <= span.end
    }

    pub(crate) fn clear(&mut self, field: Field) {
        self.stale |= self.has(field);
        self.spans[field as usize] = ABSENT;
        self.cut &= !(1 << field as u16);
    }

    /// Sets `field` to what `write` appends to the buffer.
    pub(crate) fn set_with(&mut self, field: Field, write: impl FnOnce(&mut String)) {
        self.clear(field);
        let start = self.buf.len();
        write(&mut self.buf);
        // Raw input is bounded (`set`), so the buffer stays far below 4 GiB.
        let (Ok(start), Ok(end)) = (u32::try_from(start), u32::try_from(self.buf.len())) else {
            self.buf.truncate(start);
            return;
        };
        self.spans[field as usize] = Span { start, end };
    }

    /// Sets `field` to `text`, of which at most what cleaning would look at is kept
    /// (more is cut off, and the event flagged `truncated` when it is cleaned, unless
    /// the field was set again or cleared meanwhile).
    pub(crate) fn set(&mut self, field: Field, text: &str) {
        let max = field.max_raw();
        let (text, cut) = if text.len() > max {
            let mut end = max;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            (&text[..end], true)
        } else {
            (text, false)
        };
        self.set_with(field, |buf| buf.push_str(text));
        if cut && self.has(field) {
            self.cut |= 1 << field as u16;
        }
    }

    /// Every field cleaned (see [`crate::sanitize`]): the same buffer when no field
    /// needs a change (the usual case), else a new one.
    pub(crate) fn cleaned(self, flags: &mut Flags) -> Self {
        if self.cut != 0 {
            flags.truncated = true;
        }
        let needs_work = Field::ALL.iter().any(|&field| {
            self.get(field)
                .is_some_and(|text| needs_cleaning(field, text))
        });
        if !needs_work && !self.stale {
            return self;
        }
        let mut out = Self::with_capacity(self.buf.len() + 16);
        out.cut = self.cut;
        for field in Field::ALL {
            if let Some(text) = self.get(field) {
                out.set_with(field, |buf| clean_into(buf, field, text, flags));
            }
        }
        out
    }
}

fn needs_cleaning(field: Field, text: &str) -> bool {
    (field.is_path() && text.contains('?'))
        || text.len() > field.max()
        || might_hold_secret(text)
        || has_dangerous(text)
}

/// Appends `text` cleaned for `field`: a path without its query string, secrets
/// redacted, dangerous characters escaped, cut to the field's size.
fn clean_into(buf: &mut String, field: Field, text: &str, flags: &mut Flags) {
    let without_query;
    let text = match text.split_once('?') {
        Some((path, query)) if field.is_path() => {
            if query.is_empty() {
                path
            } else {
                flags.redacted = true;
                without_query = format!("{path}?{REDACTED}");
                &without_query
            }
        }
        _ => text,
    };
    let (max, secret) = (field.max(), might_hold_secret(text));
    if text.len() > max || secret || has_dangerous(text) {
        buf.push_str(&clean(text, max, flags));
    } else {
        buf.push_str(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_set_again_keep_their_last_value_and_cleaning_drops_the_rest() {
        let mut flags = Flags::default();
        let mut texts = Texts::with_capacity(8);
        texts.set(Field::Resource, "/a");
        texts.set(Field::Resource, "/b");
        texts.set(Field::Action, "x");
        assert_eq!(texts.get(Field::Resource), Some("/b"));
        let cleaned = texts.cleaned(&mut flags);
        assert_eq!(
            cleaned.buf, "x/b",
            "in field order, without the stale \"/a\""
        );
        assert_eq!(cleaned.get(Field::Resource), Some("/b"));
        assert_eq!(cleaned.get(Field::Action), Some("x"));
        assert_eq!(cleaned.get(Field::Route), None);
        assert_eq!(flags, Flags::default());
    }

    #[test]
    fn a_value_cut_then_replaced_does_not_flag_the_event_truncated() {
        let huge = "x".repeat(Field::Resource.max_raw() + 10);
        let mut flags = Flags::default();
        let mut texts = Texts::with_capacity(0);
        texts.set(Field::Resource, &huge);
        texts.set(Field::Resource, "/ok");
        texts.set(Field::ReasonText, &huge);
        texts.clear(Field::ReasonText);
        let cleaned = texts.cleaned(&mut flags);
        assert_eq!(cleaned.get(Field::Resource), Some("/ok"));
        assert!(!flags.truncated, "no value that was cut is left");

        let mut flags = Flags::default();
        let mut texts = Texts::with_capacity(0);
        texts.set(Field::Resource, &huge);
        let cleaned = texts.cleaned(&mut flags);
        assert!(flags.truncated, "the cut value is kept");
        assert!(cleaned.get(Field::Resource).unwrap().len() <= Field::Resource.max());
    }

    #[test]
    fn a_cleared_field_is_absent_and_an_empty_one_present() {
        let mut flags = Flags::default();
        let mut texts = Texts::with_capacity(0);
        texts.set(Field::Service, "");
        assert_eq!(texts.get(Field::Service), Some(""));
        texts.clear(Field::Service);
        assert!(!texts.has(Field::Service));
        assert_eq!(texts.cleaned(&mut flags).get(Field::Service), None);
    }

    #[test]
    fn huge_input_is_cut_before_it_is_kept() {
        let mut flags = Flags::default();
        let mut texts = Texts::with_capacity(0);
        texts.set(Field::ReasonText, &"é".repeat(1 << 20));
        assert!(texts.buf.len() <= Field::ReasonText.max_raw());
        let cleaned = texts.cleaned(&mut flags);
        assert!(flags.truncated);
        let text = cleaned.get(Field::ReasonText).unwrap_or_default();
        assert!(text.len() <= MAX_REASON_TEXT && text.starts_with('é'));
    }

    #[test]
    fn paths_lose_their_query_and_other_fields_keep_it() {
        let mut flags = Flags::default();
        let mut texts = Texts::with_capacity(0);
        texts.set(Field::Route, "/f?token=x");
        texts.set(Field::Resource, "/g?");
        texts.set(Field::ReasonText, "why?");
        let cleaned = texts.cleaned(&mut flags);
        assert_eq!(cleaned.get(Field::Route), Some("/f?[redacted]"));
        assert_eq!(cleaned.get(Field::Resource), Some("/g"));
        assert_eq!(cleaned.get(Field::ReasonText), Some("why?"));
        assert!(flags.redacted);
    }
}
