//! [`ChainWriter`]: one file's chain. A batch is rendered into one buffer and written
//! at once; the hash, line count and length move on only once the write succeeded;
//! a failed write is cut back off the file.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::FileSinkConfig;
use crate::chain::{self, Checkpoint, Linker};
use crate::error::Error;
use crate::event::AuditEvent;
use crate::sink::Format;

/// A buffer that grew past this for one large batch is given back afterwards.
const KEEP_BUFFER: usize = 1 << 20;

/// The state of one file's chain, shared by every [`FileSink`](super::FileSink) on it.
pub(super) struct ChainWriter {
    file: File,
    config: FileSinkConfig,
    linker: Option<Linker>,
    /// The file's length up to the last committed line.
    committed_len: u64,
    lines: u64,
    last_hash: [u8; 32],
    /// A failed write may have left bytes after `committed_len` that could not be cut
    /// off yet: cut them before the next write.
    dirty: bool,
    /// Written before the next batch: a recovery note that could not be written at
    /// open.
    pending: Vec<AuditEvent>,
    buf: Vec<u8>,
}

impl fmt::Debug for ChainWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainWriter")
            .field("config", &self.config)
            .field("committed_len", &self.committed_len)
            .field("lines", &self.lines)
            .finish_non_exhaustive()
    }
}

impl ChainWriter {
    /// A writer continuing a file of `len` bytes and `lines` lines whose last line has
    /// `last_hash` (by the chain's own linking; zeros, the genesis, when empty).
    pub(super) fn new(
        file: File,
        config: FileSinkConfig,
        linker: Option<Linker>,
        len: u64,
        lines: u64,
        last_hash: [u8; 32],
    ) -> Self {
        Self {
            file,
            config,
            linker,
            committed_len: len,
            lines,
            last_hash,
            dirty: false,
            pending: Vec::new(),
            buf: Vec::new(),
        }
    }

    pub(super) fn config(&self) -> &FileSinkConfig {
        &self.config
    }

    pub(super) fn checkpoint(&self) -> Checkpoint {
        Checkpoint::new(self.lines, chain::hex(&self.last_hash))
    }

    /// Writes `note` (a recovery event) now, or before the next batch if it cannot.
    pub(super) fn note(&mut self, note: AuditEvent) {
        if let Err(error) = self.write(std::slice::from_ref(&note)) {
            tracing::error!(target: "audit", error = %crate::error::Causes(&error), "cannot write the audit file's recovery note yet: it goes before the next batch");
            self.pending.push(note);
        }
    }

    /// Appends `events` as one write. On failure nothing of it stays in the file (it
    /// is cut back to the last committed length) and the chain is where it was.
    pub(super) fn write(&mut self, events: &[AuditEvent]) -> Result<(), Error> {
        if self.dirty {
            self.file.set_len(self.committed_len)?;
            self.dirty = false;
        }
        let pending = std::mem::take(&mut self.pending);
        let (last_hash, count) = self.render(pending.iter().chain(events));
        self.dirty = true;
        if let Err(error) = self.append() {
            // The disk may be full: a shorter file needs no space.
            if self.file.set_len(self.committed_len).is_ok() {
                self.dirty = false;
            }
            self.pending = pending;
            self.shrink();
            return Err(error.into());
        }
        self.dirty = false;
        self.committed_len += self.buf.len() as u64;
        self.lines += count;
        self.last_hash = last_hash;
        self.shrink();
        if let Err(error) = self.save_checkpoint() {
            // The lines are written: the batch is not lost. A stale checkpoint only
            // vouches for fewer lines; the next batch writes it again.
            tracing::error!(target: "audit", %error, "cannot write the audit checkpoint file");
        }
        Ok(())
    }

    /// Renders `events` into the buffer, linked from the last committed line; returns
    /// the hash of the last one and how many there are.
    fn render<'a>(&mut self, events: impl Iterator<Item = &'a AuditEvent>) -> ([u8; 32], u64) {
        self.buf.clear();
        let mut last_hash = self.last_hash;
        let mut count = 0;
        let format: Format = self.config.format;
        for event in events {
            let start = self.buf.len();
            format.render_into(event, &mut self.buf);
            if let Some(linker) = &self.linker {
                chain::link(&mut self.buf, start, linker.field(), &last_hash);
                last_hash = linker.hash(&self.buf[start..]);
            }
            self.buf.push(b'\n');
            count += 1;
        }
        (last_hash, count)
    }

    fn append(&mut self) -> io::Result<()> {
        self.file.write_all(&self.buf)?;
        if self.config.fsync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    fn shrink(&mut self) {
        if self.buf.capacity() > KEEP_BUFFER {
            self.buf = Vec::new();
        }
    }

    fn save_checkpoint(&self) -> io::Result<()> {
        let Some(path) = &self.config.checkpoint_file else {
            return Ok(());
        };
        write_atomically(path, format!("{}\n", self.checkpoint()).as_bytes())
    }

    /// Makes everything committed durable.
    pub(super) fn sync(&mut self) -> Result<(), Error> {
        self.file.sync_all()?;
        Ok(())
    }
}

/// Writes `path` through a temporary file and a rename.
fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string().push(".tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(tmp, path)
}
