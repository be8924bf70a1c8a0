//! Where events end up.
//!
//! | sink | for |
//! |---|---|
//! | [`TracingSink`] | the service's log stream: one `tracing` event per audit event, target `audit`, with the JSON in field `audit_event` |
//! | [`FileSink`] | a JSON-lines file, optionally hash-chained (see [`chain`](crate::chain)) |
//! | [`MemorySink`] | tests |
//!
//! Each writes the project's own JSON ([`Format::Native`]) or OCSF ([`Format::Ocsf`]).
//! A sink runs on the pipeline's writer thread, never on a request path.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::chain::{self, Checkpoint, GENESIS};
use crate::error::Error;
use crate::event::AuditEvent;

/// A destination for audit events. Runs on the writer thread.
pub trait AuditSink: Send + 'static {
    /// Writes a batch, in order.
    ///
    /// # Errors
    ///
    /// Any failure ([`Error::sink`], or an [`io::Error`] through `?`); the whole batch
    /// counts as dropped.
    fn write(&mut self, events: &[AuditEvent]) -> Result<(), Error>;

    /// Makes written events durable (called at shutdown).
    ///
    /// # Errors
    ///
    /// Any failure.
    fn flush(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

/// The layout of written events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// This crate's JSON ([`AuditEvent`]'s fields).
    #[default]
    Native,
    /// OCSF 1.3: Web Resource Access Activity (6004) for HTTP events, File Hosting
    /// Activity (6006) for file events.
    Ocsf,
}

impl Format {
    /// One event as one JSON line, without the newline.
    pub fn render(self, event: &AuditEvent) -> String {
        match self {
            Self::Native => event.to_json(),
            Self::Ocsf => crate::ocsf::render(event).to_string(),
        }
    }
}

/// Emits each event as a `tracing` event with target `audit` at level `INFO`
/// (`WARN` for denials), the whole event in the field `audit_event`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TracingSink {
    format: Format,
}

impl TracingSink {
    /// A tracing sink writing `format`.
    pub fn new(format: Format) -> Self {
        Self { format }
    }
}

impl AuditSink for TracingSink {
    fn write(&mut self, events: &[AuditEvent]) -> Result<(), Error> {
        for event in events {
            let json = self.format.render(event);
            if event.outcome() == crate::Outcome::Allowed {
                tracing::info!(target: "audit", audit_event = %json, "audit");
            } else {
                tracing::warn!(target: "audit", audit_event = %json, "audit");
            }
        }
        Ok(())
    }
}

/// Keeps events in memory, for tests. Clones share the same events.
#[derive(Clone, Debug, Default)]
pub struct MemorySink {
    events: Arc<Mutex<Vec<AuditEvent>>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of every event written so far.
    pub fn events(&self) -> Vec<AuditEvent> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl AuditSink for MemorySink {
    fn write(&mut self, events: &[AuditEvent]) -> Result<(), Error> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(events);
        Ok(())
    }
}

/// How a [`FileSink`] writes: see [`FileSink::open`].
///
/// Defaults: the project's own JSON ([`Format::Native`]), hash-chained, no checkpoint
/// file, flushed to the OS after every batch (no `fsync`).
#[derive(Clone, Debug)]
pub struct FileSinkConfig {
    format: Format,
    hash_chain: bool,
    checkpoint_file: Option<PathBuf>,
    fsync: bool,
}

impl Default for FileSinkConfig {
    fn default() -> Self {
        Self {
            format: Format::Native,
            hash_chain: true,
            checkpoint_file: None,
            fsync: false,
        }
    }
}

impl FileSinkConfig {
    /// The rendering of each line (default [`Format::Native`]).
    pub fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// Whether each line carries the SHA-256 of the previous one in `prev_hash`
    /// (default `true`); the chain continues from the file's last line.
    pub fn hash_chain(mut self, enabled: bool) -> Self {
        self.hash_chain = enabled;
        self
    }

    /// Also writes the line count and last hash to `path` after every batch (through a
    /// temporary file and a rename). Keep it where the log's writer cannot rewrite it
    /// unnoticed: `audit-verify --checkpoint` then catches a cut-off tail.
    pub fn checkpoint_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.checkpoint_file = Some(path.into());
        self
    }

    /// Calls `fsync` after every batch (default `false`: only flushes to the OS).
    pub fn fsync(mut self, enabled: bool) -> Self {
        self.fsync = enabled;
        self
    }
}

/// Appends events as JSON lines to a file; hash-chained by default (see
/// [`FileSinkConfig::hash_chain`]): each line carries the SHA-256 of the previous one in
/// `prev_hash`, and the chain goes on across restarts.
///
/// ```no_run
/// use secureconnect_audit::{FileSink, FileSinkConfig};
///
/// let sink = FileSink::open(
///     "/var/log/app/audit.jsonl",
///     FileSinkConfig::default().checkpoint_file("/var/lib/app/audit.checkpoint"),
/// )?;
/// # Ok::<(), secureconnect_audit::Error>(())
/// ```
#[derive(Debug)]
pub struct FileSink {
    out: BufWriter<File>,
    format: Format,
    chained: bool,
    checkpoint: Checkpoint,
    checkpoint_file: Option<PathBuf>,
    fsync: bool,
}

impl FileSink {
    /// Opens (or creates) `path` for appending. With a hash chain, the chain continues
    /// from the file's last line.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Sink`](crate::ErrorKind::Sink), with the I/O error as its source, if
    /// the file cannot be opened or read.
    pub fn open(path: impl AsRef<Path>, config: FileSinkConfig) -> Result<Self, Error> {
        let FileSinkConfig {
            format,
            hash_chain,
            checkpoint_file,
            fsync,
        } = config;
        let path = path.as_ref();
        let mut checkpoint = Checkpoint {
            lines: 0,
            last_hash: GENESIS.to_owned(),
        };
        if path.exists() {
            let reader = BufReader::new(File::open(path)?);
            for line in reader.split(b'\n') {
                let line = line?;
                if line.is_empty() {
                    continue;
                }
                checkpoint.lines += 1;
                if hash_chain {
                    checkpoint.last_hash = chain::line_hash(&line);
                }
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            out: BufWriter::new(file),
            format,
            chained: hash_chain,
            checkpoint,
            checkpoint_file,
            fsync,
        })
    }

    /// Lines written and the hash of the last one.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    fn save_checkpoint(&self) -> io::Result<()> {
        let Some(path) = &self.checkpoint_file else {
            return Ok(());
        };
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{}\n", self.checkpoint))?;
        std::fs::rename(tmp, path)
    }
}

impl AuditSink for FileSink {
    fn write(&mut self, events: &[AuditEvent]) -> Result<(), Error> {
        for event in events {
            let mut line = self.format.render(event);
            if self.chained {
                line = chain::append_prev_hash(&line, &self.checkpoint.last_hash);
                self.checkpoint.last_hash = chain::line_hash(line.as_bytes());
            }
            self.out.write_all(line.as_bytes())?;
            self.out.write_all(b"\n")?;
            self.checkpoint.lines += 1;
        }
        self.out.flush()?;
        if self.fsync {
            self.out.get_ref().sync_data()?;
        }
        self.save_checkpoint()?;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        Ok(())
    }
}
