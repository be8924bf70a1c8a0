//! Structured JSON logs that Loki collectors ingest.
//!
//! [`init`] installs, in one call, a subscriber that writes one JSON object per line to
//! stdout — and, with [`LogConfig::log_dir`], the same lines to daily rolling files
//! `<service>.<YYYY-MM-DD>.log` under that directory, keeping at most
//! [`LogConfig::max_files`] of them. Levels are filtered by `RUST_LOG` (default `info`).
//!
//! A request does not wait for stdout: its line is formatted on its own thread into a
//! reused buffer and queued for a writer thread ([`BatchWriter`]), which writes
//! whatever is queued with one `write` per batch. The queue is bounded: when stdout is
//! not read (a stalled pipe), lines that do not fit are dropped and counted
//! (`log_lines_dropped_total`, [`LogGuard::register_metrics`]) rather than blocking
//! requests. Dropping the [`LogGuard`] writes what is queued.
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
//! with the five fixed keys is written as `fields.<name>`. Values are escaped as JSON
//! requires, and U+2028, U+2029 and the C1 controls too, so a field holding newlines or
//! control characters still yields exactly one line for every reader. An event
//! field named `audit_event` (secureconnect-audit's `TracingSink`), or one named with
//! [`LogConfig::json_field`], whose text is one JSON document is written as that
//! document, a nested object, so collectors parse it once:
//!
//! ```json
//! {"timestamp":"…","level":"WARN","message":"audit","target":"audit","service":"storage",
//!  "audit_event":{"schema_version":1,"event_id":"…","outcome":"denied","trace_id":"4bf9…"}}
//! ```
//!
//! The subscriber also carries the `tracing-opentelemetry` layer that gives request
//! spans their W3C trace context ([`request_trace`](crate::request_trace)). With the
//! feature `otlp` and `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, spans are exported over OTLP/HTTP
//! (protobuf) in bounded batches from a thread of their own; unset, nothing is exported.
//!
//! Installing a global subscriber is the application's decision: this crate only does
//! it when [`init`] is called. Use [`subscriber`] or [`JsonLayer`] to compose your own
//! subscriber instead.
//!
//! ```no_run
//! use secureconnect_obs::{logging, LogConfig};
//!
//! let _guard = logging::init(LogConfig::from_env("gateway")?)?;
//! tracing::info!(user_count = 3, "started");
//! // Keep `_guard` alive until exit: dropping it flushes the log files.
//! # Ok::<(), secureconnect_obs::Error>(())
//! ```

mod batch;
mod json;
pub(crate) mod otel;

use std::path::PathBuf;

use prometheus_client::registry::Registry;
use tracing::Subscriber;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::EnvFilter;

pub use self::batch::{BatchLines, BatchWriter, BatchWriterConfig};
pub use self::json::JsonLayer;

use crate::Error;

/// Configuration of the JSON log output, installed with [`init`] or built with
/// [`subscriber`].
///
/// Setters never fail; the filter and the log directory are checked once, by [`init`]
/// or [`subscriber`].
///
/// ```
/// use secureconnect_obs::LogConfig;
///
/// let config = LogConfig::new("gateway").filter("info,tower_http=debug").max_files(3);
/// assert_eq!(config.service(), "gateway");
/// ```
#[derive(Clone, Debug)]
pub struct LogConfig {
    service: String,
    filter: String,
    stdout: bool,
    log_dir: Option<PathBuf>,
    max_files: usize,
    json_fields: Vec<String>,
    queue: BatchWriterConfig,
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
            json_fields: Vec::new(),
            queue: BatchWriterConfig::default(),
        }
    }

    /// Like [`new`](Self::new), with the filter from `RUST_LOG` and the log directory
    /// from `LOG_DIR` when they are set and not empty.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidFilter`](crate::ErrorKind::InvalidFilter) if `RUST_LOG` is set
    /// but malformed: a typo there should stop the service at start-up, not silently log
    /// nothing.
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

    /// The service name every line carries (set by [`new`](Self::new)).
    pub fn service(&self) -> &str {
        &self.service
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

    /// Also writes the event field `name` as nested JSON when its text is one JSON
    /// document ([`JsonLayer::json_field`]); `audit_event` always is.
    pub fn json_field(mut self, name: impl Into<String>) -> Self {
        self.json_fields.push(name.into());
        self
    }

    /// How the lines reach stdout: queued for a writer thread that writes them in
    /// batches ([`BatchWriter`]; default capacity 8192 lines). Lines that find the
    /// queue full are dropped and counted ([`LogGuard::register_metrics`]).
    pub fn queue(mut self, queue: BatchWriterConfig) -> Self {
        self.queue = queue;
        self
    }

    fn parse_filter(&self) -> Result<EnvFilter, Error> {
        EnvFilter::builder()
            .parse(&self.filter)
            .map_err(|source| Error::invalid_filter(&self.filter, source))
    }
}

/// Builds the subscriber of `config` without installing it.
///
/// ```
/// use secureconnect_obs::{logging, LogConfig};
///
/// let (subscriber, _guard) = logging::subscriber(LogConfig::new("auth").stdout(false))?;
/// tracing::subscriber::with_default(subscriber, || tracing::info!("hello"));
/// # Ok::<(), secureconnect_obs::Error>(())
/// ```
///
/// # Errors
///
/// [`ErrorKind::InvalidFilter`](crate::ErrorKind::InvalidFilter) for a malformed
/// filter, [`ErrorKind::LogDir`](crate::ErrorKind::LogDir) when the log directory
/// cannot be created or written,
/// [`ErrorKind::TraceExport`](crate::ErrorKind::TraceExport) when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` asks for an exporter that cannot be built (feature
/// `otlp`).
pub fn subscriber(
    config: LogConfig,
) -> Result<(Box<dyn Subscriber + Send + Sync>, LogGuard), Error> {
    let filter = config.parse_filter()?;
    let mut guard = LogGuard {
        traces: None,
        stdout: None,
        file: None,
    };
    let stdout = if config.stdout {
        let writer = BatchWriter::new(std::io::stdout(), config.queue, &mut Registry::default())?;
        let lines = writer.lines();
        guard.stdout = Some(writer);
        Some(lines)
    } else {
        None
    };
    let writer = match (&config.log_dir, stdout) {
        (None, Some(stdout)) => BoxMakeWriter::new(stdout),
        (None, None) => BoxMakeWriter::new(std::io::sink),
        (Some(dir), stdout) => {
            let appender = RollingFileAppender::builder()
                .rotation(Rotation::DAILY)
                .filename_prefix(&config.service)
                .filename_suffix("log")
                .max_log_files(config.max_files)
                .build(dir)
                .map_err(|e| Error::log_dir(dir.clone(), std::io::Error::other(e.to_string())))?;
            // Backpressure rather than loss when the disk is slower than the logs.
            let (file, worker) = NonBlockingBuilder::default().lossy(false).finish(appender);
            guard.file = Some(worker);
            if let Some(stdout) = stdout {
                BoxMakeWriter::new(stdout.and(file))
            } else {
                BoxMakeWriter::new(file)
            }
        }
    };
    let provider = otel::exporting_provider(&config.service)?;
    let traces = otel::layer(&provider);
    guard.traces = Some(provider);
    let json = config.json_fields.into_iter().fold(
        JsonLayer::new(config.service, writer),
        JsonLayer::json_field,
    );
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(json)
        .with(traces);
    Ok((Box::new(subscriber), guard))
}

/// Builds the subscriber of `config` and installs it as the global default.
///
/// # Errors
///
/// As [`subscriber`], and
/// [`ErrorKind::SubscriberAlreadySet`](crate::ErrorKind::SubscriberAlreadySet) if a
/// global subscriber exists already.
pub fn init(config: LogConfig) -> Result<LogGuard, Error> {
    let (subscriber, guard) = subscriber(config)?;
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|_| Error::subscriber_already_set())?;
    Ok(guard)
}

/// Keeps the log writers and the tracer provider alive; dropping it flushes what is
/// buffered (log lines, and spans not yet exported).
///
/// Lines to stdout go through a [`BatchWriter`]; lines dropped because its queue was
/// full are counted, in `log_lines_dropped_total` once
/// [`register_metrics`](Self::register_metrics) put it in a registry.
#[must_use = "dropping the guard stops writing log files"]
#[derive(Debug)]
pub struct LogGuard {
    // Dropped in this order: spans exported (they may log), then the lines written.
    traces: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    stdout: Option<BatchWriter<std::io::Stdout>>,
    file: Option<WorkerGuard>,
}

impl LogGuard {
    /// Registers `log_lines_dropped_total` (lines to stdout dropped because the queue
    /// to the writer thread was full) in `registry`.
    ///
    /// ```
    /// use prometheus_client::registry::Registry;
    /// use secureconnect_obs::{logging, LogConfig};
    ///
    /// let (_subscriber, guard) = logging::subscriber(LogConfig::new("auth"))?;
    /// let mut registry = Registry::default();
    /// guard.register_metrics(&mut registry);
    /// # Ok::<(), secureconnect_obs::Error>(())
    /// ```
    pub fn register_metrics(&self, registry: &mut Registry) {
        let dropped = self
            .stdout
            .as_ref()
            .map(BatchWriter::dropped_counter)
            .unwrap_or_default();
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because the queue to the log writer was full",
            dropped,
        );
    }

    /// Lines to stdout dropped so far because the queue was full.
    pub fn lines_dropped(&self) -> u64 {
        self.stdout.as_ref().map_or(0, BatchWriter::lines_dropped)
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.traces.take() {
            // Exports what the batch still holds; a collector that does not answer
            // delays the exit by 5 s at most.
            let _ = provider.shutdown_with_timeout(std::time::Duration::from_secs(5));
        }
    }
}
