//! Structured JSON logs that Loki collectors ingest.
//!
//! [`LogConfig::init`] installs, in one call, a subscriber that writes one JSON object
//! per line to stdout — and, with [`LogConfig::log_dir`], the same lines to daily
//! rolling files `<service>.<YYYY-MM-DD>.log` under that directory, keeping at most
//! [`LogConfig::max_files`] of them. Levels are filtered by `RUST_LOG` (default `info`).
//!
//! Every line is a flat object:
//!
//! ```json
//! {"timestamp":"2026-11-26T14:08:37.123456Z","level":"INFO","message":"request finished",
//!  "target":"tower_http::trace","service":"gateway","request_id":"4f0c…","status":200}
//! ```
//!
//! `timestamp` (RFC 3339, UTC), `level`, `message`, `target` and `service` come first;
//! then the fields of the spans the event is in (outermost first, so `request_id` set
//! on a request span appears on every line of that request), then the event's own
//! fields, later ones replacing earlier ones of the same name. A field that would clash
//! with the five fixed keys is written as `fields.<name>`. Values are escaped by
//! `serde_json`, so a field holding newlines still yields exactly one line.
//!
//! Installing a global subscriber is the application's decision: this crate only does
//! it when [`LogConfig::init`] is called. Use [`LogConfig::build`] or [`JsonLayer`] to
//! compose your own subscriber instead.
//!
//! ```no_run
//! let _guard = secureconnect_obs::LogConfig::from_env("gateway")?.init()?;
//! tracing::info!(user_count = 3, "started");
//! // Keep `_guard` alive until exit: dropping it flushes the log files.
//! # Ok::<(), secureconnect_obs::Error>(())
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer};

use crate::Error;

/// The keys every line starts with; a field of the same name is renamed.
const FIXED_KEYS: [&str; 5] = ["timestamp", "level", "message", "target", "service"];

/// Configuration of the JSON log output.
#[derive(Clone, Debug)]
pub struct LogConfig {
    service: String,
    filter: String,
    stdout: bool,
    log_dir: Option<PathBuf>,
    max_files: usize,
}

impl LogConfig {
    /// Logs of `service` to stdout, at level `info` and above.
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            filter: "info".to_owned(),
            stdout: true,
            log_dir: None,
            max_files: 7,
        }
    }

    /// Like [`new`](Self::new), with the filter from `RUST_LOG` and the log directory
    /// from `LOG_DIR` when they are set and not empty.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidFilter`] if `RUST_LOG` is set but malformed: a typo there should
    /// stop the service at start-up, not silently log nothing.
    pub fn from_env(service: impl Into<String>) -> Result<Self, Error> {
        let mut config = Self::new(service);
        if let Some(filter) = std::env::var("RUST_LOG")
            .ok()
            .filter(|v| !v.trim().is_empty())
        {
            config = config.filter(filter);
            config.parse_filter()?;
        }
        if let Some(dir) = std::env::var_os("LOG_DIR").filter(|v| !v.is_empty()) {
            config = config.log_dir(dir);
        }
        Ok(config)
    }

    /// Sets the filter directives, in `RUST_LOG` syntax (`info,tower_http=debug`).
    pub fn filter(mut self, directives: impl Into<String>) -> Self {
        self.filter = directives.into();
        self
    }

    /// Whether lines go to stdout (default `true`).
    pub fn stdout(mut self, enabled: bool) -> Self {
        self.stdout = enabled;
        self
    }

    /// Also writes the lines to daily rolling files under `dir`.
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.log_dir = Some(dir.into());
        self
    }

    /// How many daily files to keep under the log directory (default 7, at least 1).
    pub fn max_files(mut self, count: usize) -> Self {
        self.max_files = count.max(1);
        self
    }

    fn parse_filter(&self) -> Result<EnvFilter, Error> {
        EnvFilter::builder()
            .parse(&self.filter)
            .map_err(|source| Error::InvalidFilter {
                directive: self.filter.clone(),
                source,
            })
    }

    /// Builds the subscriber without installing it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidFilter`] for a malformed filter, [`Error::LogDir`] when the log
    /// directory cannot be created or written.
    pub fn build(self) -> Result<(Box<dyn Subscriber + Send + Sync>, LogGuard), Error> {
        let filter = self.parse_filter()?;
        let mut guard = LogGuard { file: None };
        let writer = match (&self.log_dir, self.stdout) {
            (None, true) => BoxMakeWriter::new(std::io::stdout),
            (None, false) => BoxMakeWriter::new(std::io::sink),
            (Some(dir), stdout) => {
                let appender = RollingFileAppender::builder()
                    .rotation(Rotation::DAILY)
                    .filename_prefix(&self.service)
                    .filename_suffix("log")
                    .max_log_files(self.max_files)
                    .build(dir)
                    .map_err(|e| Error::LogDir {
                        dir: dir.clone(),
                        source: std::io::Error::other(e.to_string()),
                    })?;
                // Backpressure rather than loss when the disk is slower than the logs.
                let (file, worker) = NonBlockingBuilder::default().lossy(false).finish(appender);
                guard.file = Some(worker);
                if stdout {
                    BoxMakeWriter::new(std::io::stdout.and(file))
                } else {
                    BoxMakeWriter::new(file)
                }
            }
        };
        let subscriber = tracing_subscriber::registry()
            .with(filter)
            .with(JsonLayer::new(self.service, writer));
        Ok((Box::new(subscriber), guard))
    }

    /// Builds the subscriber and installs it as the global default.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build), and [`Error::SubscriberAlreadySet`] if a global
    /// subscriber exists already.
    pub fn init(self) -> Result<LogGuard, Error> {
        let (subscriber, guard) = self.build()?;
        tracing::subscriber::set_global_default(subscriber)
            .map_err(|_| Error::SubscriberAlreadySet)?;
        Ok(guard)
    }
}

/// Keeps the log-file writer alive; dropping it flushes what is buffered.
#[must_use = "dropping the guard stops writing log files"]
#[derive(Debug)]
pub struct LogGuard {
    file: Option<WorkerGuard>,
}

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
}

impl<W> JsonLayer<W>
where
    W: for<'w> MakeWriter<'w> + 'static,
{
    /// Lines of `service` written to `writer`.
    pub fn new(service: impl Into<String>, writer: W) -> Self {
        Self {
            service: service.into(),
            writer,
        }
    }
}

/// Fields recorded on a span, kept in its extensions.
#[derive(Debug, Default)]
struct SpanFields(Vec<(&'static str, Value)>);

impl SpanFields {
    fn set(&mut self, name: &'static str, value: Value) {
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
        let mut fields = BTreeMap::<&str, Value>::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(span_fields) = span.extensions().get::<SpanFields>() {
                    for (k, v) in &span_fields.0 {
                        fields.insert(k, v.clone());
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
            } else {
                fields.insert(k, v);
            }
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
    fields: &BTreeMap<&str, Value>,
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
        serde_json::to_writer(&mut *out, value)?;
    }
    out.extend_from_slice(b"}\n");
    Ok(())
}
