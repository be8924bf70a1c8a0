//! A small `tmpfs`, to run out of disk space for real: [`Tmpfs::mount`].
//!
//! Mounting needs root (the test machines and CI run as root). A test that needs a full
//! disk fails loudly when it cannot mount one, unless `SC_SKIP_TMPFS_TESTS=1` says to
//! skip such tests on this machine; then [`Tmpfs::mount`] returns `None` and says so on
//! stderr. It never passes silently.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The environment variable that lets tests needing a tmpfs skip (`1`) where mounting
/// is not permitted.
pub const SKIP_VAR: &str = "SC_SKIP_TMPFS_TESTS";

/// A tmpfs mounted on a fresh directory, unmounted (and the directory removed) on
/// drop.
#[derive(Debug)]
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_bytes` on a new directory under the temporary
    /// directory.
    ///
    /// # Panics
    ///
    /// If it cannot be mounted and `SC_SKIP_TMPFS_TESTS` is not `1`; with it, returns
    /// `None` after saying on stderr that the test is skipped.
    pub fn mount(size_bytes: u64) -> Option<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "sc-tmpfs-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size_bytes}"))
            .arg("tmpfs")
            .arg(&path)
            .output();
        let failure = match output {
            Ok(out) if out.status.success() => return Some(Self { path }),
            Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            Err(e) => format!("cannot run mount: {e}"),
        };
        let _ = std::fs::remove_dir(&path);
        if std::env::var(SKIP_VAR).as_deref() == Ok("1") {
            eprintln!("SKIPPED: this test needs a tmpfs ({failure}); {SKIP_VAR}=1 skips it");
            return None;
        }
        panic!(
            "this test needs a small tmpfs to fill up and cannot mount one ({failure}); run it as root, or set {SKIP_VAR}=1 to skip it on this machine"
        );
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fills it with a file `name` until no byte more fits; returns the file's path
    /// (remove it to give the space back).
    ///
    /// # Panics
    ///
    /// If writing fails for another reason than a full disk.
    pub fn fill(&self, name: &str) -> PathBuf {
        let path = self.path.join(name);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        let block = vec![b'x'; 4096];
        for chunk in [4096, 1] {
            loop {
                match file.write(&block[..chunk]) {
                    Ok(n) if n > 0 => continue,
                    Ok(_) => break,
                    Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                    Err(e) => panic!("filling {}: {e}", path.display()),
                }
            }
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a process of the test may still hold a file open in it.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_tmpfs_refuses_writes_until_space_returns() {
        let Some(fs) = Tmpfs::mount(64 * 1024) else {
            return;
        };
        let filler = fs.fill("filler");
        let error = std::fs::write(fs.path().join("more"), b"x").unwrap_err();
        assert_eq!(error.raw_os_error(), Some(28), "{error}");
        std::fs::remove_file(filler).unwrap();
        std::fs::write(fs.path().join("more"), b"x").unwrap();
    }
}
