//! The chains open in this process, by canonical path: a process has one chain per
//! file, so a second [`FileSink::open`](super::FileSink::open) of the same file shares
//! it (or fails, with another configuration). This is the crate's one piece of
//! process-wide state, and it holds only weak references: a chain closes with its last
//! sink. Other processes are kept out by an advisory lock (`flock`, on Unix).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use super::recovery::{self, Cut, Scanned};
use super::writer::ChainWriter;
use super::FileSinkConfig;
use crate::chain::{Linker, PREV_HASH, PREV_HMAC};
use crate::error::{Error, ErrorKind};
use crate::event::{Actor, AuditEvent, Outcome};

type Shared = Arc<Mutex<ChainWriter>>;

static OPEN: Mutex<Vec<(PathBuf, Weak<Mutex<ChainWriter>>)>> = Mutex::new(Vec::new());

/// The chain on `path`: the one open in this process, or a new one.
pub(super) fn open(
    path: &Path,
    config: FileSinkConfig,
    linker: Option<Linker>,
) -> Result<Shared, Error> {
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let canonical = std::fs::canonicalize(path)?;
    let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
    open.retain(|(_, chain)| chain.strong_count() > 0);
    let existing = open
        .iter()
        .find(|(p, _)| *p == canonical)
        .and_then(|(_, chain)| chain.upgrade());
    if let Some(chain) = existing {
        let same = *chain
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .config()
            == config;
        return if same {
            Ok(chain)
        } else {
            Err(Error::with_detail(
                ErrorKind::InvalidConfig,
                format!(
                    "audit file {} is already open in this process with another configuration",
                    canonical.display()
                ),
            ))
        };
    }
    lock(&file, &canonical)?;
    let scanned = recovery::scan(&mut file)?;
    check_linking(&scanned, linker.as_ref(), &canonical)?;
    let last_hash = match (&linker, &scanned.last) {
        (Some(linker), Some(last)) => linker.hash(last),
        _ => [0; 32],
    };
    let mut writer = ChainWriter::new(file, config, linker, scanned.len, scanned.lines, last_hash);
    if let Some(cut) = scanned.cut {
        tracing::warn!(target: "audit", path = %canonical.display(), bytes = cut.bytes, offset = cut.offset, "cut off the torn end of the audit file");
        writer.note(recovery_note(&canonical, cut));
    }
    let chain = Arc::new(Mutex::new(writer));
    open.push((canonical, Arc::downgrade(&chain)));
    Ok(chain)
}

/// The event that records a torn end cut off at open.
fn recovery_note(path: &Path, cut: Cut) -> AuditEvent {
    AuditEvent::builder("audit.recovered", Outcome::Error)
        .actor(Actor::service("secureconnect-audit"))
        .resource(format!("file:{}", path.display()))
        .reason(
            "torn_tail",
            format!(
                "{} bytes lost: an unfinished write at the end of the file (from byte {}) was cut off when it was reopened",
                cut.bytes, cut.offset
            ),
        )
        .build()
}

/// Refuses to continue a chain with another linking than its own: a keyed chain
/// without its key (or with another one), an unkeyed chain with a key.
fn check_linking(scanned: &Scanned, linker: Option<&Linker>, path: &Path) -> Result<(), Error> {
    let (Some(linker), Some(last)) = (linker, &scanned.last) else {
        return Ok(());
    };
    let last: serde_json::Value = serde_json::from_slice(last).unwrap_or_default();
    let invalid = |text: String| Err(Error::with_detail(ErrorKind::InvalidConfig, text));
    let keyed = last.get(PREV_HMAC).and_then(serde_json::Value::as_str);
    match linker {
        Linker::Plain if keyed.is_some() => invalid(format!(
            "audit file {} holds a keyed chain: open it with its key (AUDIT_KEY)",
            path.display()
        )),
        Linker::Keyed(_) if last.get(PREV_HASH).is_some() => invalid(format!(
            "audit file {} holds an unkeyed chain; a keyed chain starts in a new file: move it aside (it verifies without AUDIT_KEY)",
            path.display()
        )),
        Linker::Keyed(key) => match (keyed, &scanned.before_last) {
            (Some(link), Some(before)) if link != key.line_mac(before) => invalid(format!(
                "the chain key does not match the last lines of audit file {} (another key, or the file was altered: run audit-verify)",
                path.display()
            )),
            _ => Ok(()),
        },
        Linker::Plain => Ok(()),
    }
}

/// How long a lock held elsewhere is waited for. A child process spawned by this one
/// holds a copy of every descriptor between its fork and its exec, so a file this
/// process just closed can look locked for a moment.
#[cfg(unix)]
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

#[cfg(unix)]
fn lock(file: &File, path: &Path) -> Result<(), Error> {
    use rustix::fs::{flock, FlockOperation};
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    let mut result = flock(file, FlockOperation::NonBlockingLockExclusive);
    while result == Err(rustix::io::Errno::WOULDBLOCK) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
        result = flock(file, FlockOperation::NonBlockingLockExclusive);
    }
    match result {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(Error::with_detail(
            ErrorKind::Locked,
            path.display().to_string(),
        )),
        Err(error) => {
            // A file system without locks: go on, as before locks existed.
            tracing::warn!(target: "audit", path = %path.display(), %error, "cannot lock the audit file against other processes");
            Ok(())
        }
    }
}

#[cfg(not(unix))]
fn lock(_: &File, _: &Path) -> Result<(), Error> {
    Ok(())
}
