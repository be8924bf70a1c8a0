//! [`FileSink`]: JSON lines in a file, hash-chained by default, and its
//! [`FileSinkConfig`].
//!
//! | file | holds |
//! |---|---|
//! | `file.rs` | the configuration and the sink handle |
//! | `writer.rs` | one chain's state: a batch written at once, committed only after it succeeded, cut back on failure |
//! | `recovery.rs` | reading an existing file at open: its line count and last hash, a torn last line cut off |
//! | `open_files.rs` | the process's open chains by canonical path (one chain per file), and the lock against other processes |

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::chain::{ChainKey, Checkpoint, Linker};
use crate::error::{Error, ErrorKind};
use crate::event::AuditEvent;
use crate::sink::{AuditSink, Format};

mod open_files;
mod recovery;
mod writer;

use writer::ChainWriter;

/// How a [`FileSink`] writes: see [`FileSink::open`].
///
/// Defaults: the project's own JSON ([`Format::Native`]), hash-chained with plain
/// SHA-256 (no key), no checkpoint file, flushed to the OS after every batch (no
/// `fsync`).
///
/// ```
/// use secureconnect_audit::chain::ChainKey;
/// use secureconnect_audit::FileSinkConfig;
///
/// let config = FileSinkConfig::default()
///     .chain_key(ChainKey::new("an AUDIT_KEY of at least 32 bytes!")?)
///     .checkpoint_file("/var/lib/app/audit.checkpoint")
///     .fsync(true);
/// # Ok::<(), secureconnect_audit::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSinkConfig {
    format: Format,
    hash_chain: bool,
    chain_key: Option<ChainKey>,
    checkpoint_file: Option<PathBuf>,
    fsync: bool,
}

impl Default for FileSinkConfig {
    fn default() -> Self {
        Self {
            format: Format::Native,
            hash_chain: true,
            chain_key: None,
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

    /// Whether each line carries the hash of the previous one (default `true`); the
    /// chain continues from the file's last line.
    pub fn hash_chain(mut self, enabled: bool) -> Self {
        self.hash_chain = enabled;
        self
    }

    /// Keys the chain: each line carries the HMAC-SHA256 of the previous one under
    /// `key` in `prev_hmac` (default: no key, plain SHA-256 in `prev_hash`). Without
    /// the key nobody can rewrite the file consistently; `audit-verify` needs it (in
    /// `AUDIT_KEY`). A keyed chain starts in a new file: [`FileSink::open`] refuses to
    /// continue an unkeyed one with a key, or a keyed one without it.
    pub fn chain_key(mut self, key: ChainKey) -> Self {
        self.chain_key = Some(key);
        self
    }

    /// Also writes the line count and last hash to `path` after every batch (through a
    /// temporary file and a rename). Keep it where the log's writer cannot rewrite it
    /// unnoticed: `audit-verify --checkpoint-file` then catches a cut-off tail. In a
    /// keyed chain the hash is keyed too.
    pub fn checkpoint_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.checkpoint_file = Some(path.into());
        self
    }

    /// Calls `fsync` after every batch (default `false`: only hands it to the OS).
    pub fn fsync(mut self, enabled: bool) -> Self {
        self.fsync = enabled;
        self
    }

    /// The linking of lines, checked.
    fn linker(&self) -> Result<Option<Linker>, Error> {
        match (self.hash_chain, &self.chain_key) {
            (true, key) => Ok(Some(Linker::new(key.clone()))),
            (false, None) => Ok(None),
            (false, Some(_)) => Err(Error::with_detail(
                ErrorKind::InvalidConfig,
                "a chain key needs hash_chain(true)",
            )),
        }
    }
}

/// Appends events as JSON lines to a file; hash-chained by default (see
/// [`FileSinkConfig::hash_chain`] and [`FileSinkConfig::chain_key`]), and the chain
/// goes on across restarts.
///
/// A process has one chain per file: opening a path that is already open in this
/// process (by any name: the canonical path counts) with the same configuration gives
/// a handle on the same chain, so several pipelines (the services of one process) can
/// share a file; with another configuration it is an error. Another process writing
/// the file is refused too (an advisory lock, on Unix).
///
/// Each batch is rendered into one buffer and written at once; the chain's hash and
/// line count move on only once the write succeeded. A failed write (a full disk) is
/// cut back off the file, so the chain stays intact and the batch counts as dropped.
/// At open, a torn last line (a crash in the middle of a write) is cut off, and an
/// `audit.recovered` event in the chain says how many bytes were lost.
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
#[derive(Clone, Debug)]
pub struct FileSink {
    chain: Arc<Mutex<ChainWriter>>,
}

impl FileSink {
    /// Opens (or creates) `path` for appending, or shares the chain already open on
    /// it in this process.
    ///
    /// # Errors
    ///
    /// - [`ErrorKind::Sink`], with the I/O error as its source, if the file cannot be
    ///   opened or read;
    /// - [`ErrorKind::InvalidConfig`] if the file is open in this process with
    ///   another configuration, if its chain is keyed and `config` has no key (or the
    ///   other way round), or if the key does not match the file's last lines;
    /// - [`ErrorKind::Locked`] if another process writes it.
    pub fn open(path: impl AsRef<Path>, config: FileSinkConfig) -> Result<Self, Error> {
        let linker = config.linker()?;
        let chain = open_files::open(path.as_ref(), config, linker)?;
        Ok(Self { chain })
    }

    /// Lines committed and the hash of the last one.
    pub fn checkpoint(&self) -> Checkpoint {
        self.lock().checkpoint()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ChainWriter> {
        self.chain.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl AuditSink for FileSink {
    fn write(&mut self, events: &[AuditEvent]) -> Result<(), Error> {
        self.lock().write(events)
    }

    fn flush(&mut self) -> Result<(), Error> {
        self.lock().sync()
    }
}
