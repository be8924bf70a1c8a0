//! [`JsonLayer`]: each event as one flat JSON object on one line (the format is
//! described in the [module docs](super)).

//!
//! The line is written straight into a buffer that each thread reuses: span fields are
//! rendered as JSON members once, when they are recorded ([`fields`]), and copied into
//! every line of the span; strings are escaped in place ([`escape`]); the date and time
//! of day are formatted once per second ([`timestamp`]). Nothing is allocated per line.

mod escape;
mod fields;
mod timestamp;

use std::cell::RefCell;
use std::io::Write;

use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use self::fields::{Fields, Recorder};

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
    /// `,"service":"<name>"`, escaped once.
    service_member: Vec<u8>,
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
        let mut service_member = b",\"service\":".to_vec();
        escape::string(&mut service_member, &service.into());
        Self {
            service_member,
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

/// What a thread reuses from line to line.
#[derive(Default)]
struct Scratch {
    /// The line being written.
    line: Vec<u8>,
    /// The event's fields, and its message as a JSON string.
    event: Fields,
    message: Vec<u8>,
    /// The text of a JSON field while it is checked.
    text: String,
    /// The members that make it onto the line, innermost source first, and where each
    /// lies in `members`.
    members: Vec<u8>,
    picked: Vec<(&'static str, u32, u32)>,
}

impl Scratch {
    /// Adds the members of `fields` that no later source (an inner span, the event)
    /// replaced; `fields` come innermost first, so what is picked already wins.
    fn pick(&mut self, fields: &Fields) {
        for entry in fields.entries().iter().rev() {
            if self.picked.iter().any(|(name, ..)| *name == entry.name) {
                continue;
            }
            let start = self.members.len();
            self.members.extend_from_slice(fields.member(entry));
            if let (Ok(start), Ok(end)) = (u32::try_from(start), u32::try_from(self.members.len()))
            {
                self.picked.push((entry.name, start, end));
            }
        }
    }

    /// Frees what an unusually long line left behind.
    fn trim(&mut self) {
        const KEEP: usize = 64 * 1024;
        if self.line.capacity() > KEEP
            || self.members.capacity() > KEEP
            || self.message.capacity() > KEEP
            || self.text.capacity() > KEEP
            || self.event.capacity() > KEEP
        {
            *self = Self::default();
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    /// The fields of one `record` call, before they join their span's.
    static RECORDED: RefCell<Fields> = RefCell::new(Fields::default());
}

/// Runs `f` with this thread's reused [`Fields`] for a `record` call, emptied; with a
/// fresh one when it is in use (a `record` from inside a `Debug` being recorded) or
/// gone (the thread is ending).
fn with_recorded(f: impl FnOnce(&mut Fields)) {
    let mut f = Some(f);
    let mut run = |fields: &mut Fields| {
        if let Some(f) = f.take() {
            fields.clear();
            f(fields);
        }
    };
    let reused = RECORDED.try_with(|cell| match cell.try_borrow_mut() {
        Ok(mut fields) => {
            run(&mut fields);
            if fields.capacity() > 64 * 1024 {
                *fields = Fields::default();
            }
        }
        Err(_) => run(&mut Fields::default()),
    });
    if reused.is_err() {
        run(&mut Fields::default());
    }
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut fields = Fields::with_room_for(attrs.fields().len());
            attrs.record(&mut Recorder::span(&mut fields));
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        with_recorded(|recorded| {
            // The application's `Debug`/`Display` runs here, with the span's lock not
            // held: if it panics, the lock is not poisoned (every later line of the
            // span would panic), and an event it logs finds the span's fields.
            values.record(&mut Recorder::span(recorded));
            if let Some(fields) = span.extensions_mut().get_mut::<Fields>() {
                fields.merge(recorded);
            }
        });
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        SCRATCH.with(|cell| {
            // A re-entrant event (logged while writing this one) gets a fresh scratch.
            let mut fallback = None;
            let mut borrowed = cell.try_borrow_mut();
            let scratch = match borrowed.as_deref_mut() {
                Ok(scratch) => scratch,
                Err(_) => fallback.get_or_insert_with(Scratch::default),
            };
            self.write_line(scratch, event, &ctx);
            let _ = self
                .writer
                .make_writer_for(event.metadata())
                .write_all(&scratch.line);
            scratch.trim();
        });
    }
}

impl<W> JsonLayer<W> {
    /// Writes `event`'s line into `scratch.line`: the fixed keys, then the fields of
    /// the spans (outermost first) and of the event, a later one replacing an earlier
    /// one of the same name.
    fn write_line<S>(&self, scratch: &mut Scratch, event: &Event<'_>, ctx: &Context<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        scratch.event.clear();
        scratch.message.clear();
        event.record(&mut Recorder::event(
            &mut scratch.event,
            &mut scratch.message,
            &self.json_fields,
            &mut scratch.text,
        ));
        scratch.members.clear();
        scratch.picked.clear();
        let event_fields = std::mem::take(&mut scratch.event);
        scratch.pick(&event_fields);
        scratch.event = event_fields;
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                if let Some(fields) = span.extensions().get::<Fields>() {
                    scratch.pick(fields);
                }
            }
        }

        let meta = event.metadata();
        let line = &mut scratch.line;
        line.clear();
        line.extend_from_slice(b"{\"timestamp\":");
        timestamp::now(line);
        line.extend_from_slice(b",\"level\":\"");
        line.extend_from_slice(meta.level().as_str().as_bytes());
        line.extend_from_slice(b"\",\"message\":");
        if scratch.message.is_empty() {
            line.extend_from_slice(b"\"\"");
        } else {
            line.extend_from_slice(&scratch.message);
        }
        line.extend_from_slice(b",\"target\":");
        escape::string(line, meta.target());
        line.extend_from_slice(&self.service_member);
        for &(_, start, end) in scratch.picked.iter().rev() {
            line.push(b',');
            line.extend_from_slice(
                scratch
                    .members
                    .get(start as usize..end as usize)
                    .unwrap_or_default(),
            );
        }
        line.extend_from_slice(b"}\n");
    }
}
