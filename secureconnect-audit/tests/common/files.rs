//! Audit files: events to write, the `audit-verify` binary, lines to edit.

use std::path::Path;
use std::process::Command;

use secureconnect_audit::{Actor, AuditEvent, Outcome};

/// `n` denials, `file:<prefix><i>`.
pub fn denials(n: usize, prefix: &str) -> Vec<AuditEvent> {
    (0..n)
        .map(|i| {
            AuditEvent::builder("file.download", Outcome::Denied)
                .actor(Actor::user(format!("u{i}")))
                .resource(format!("file:{prefix}{i}"))
                .reason("not_owner", "the file belongs to another user")
                .build()
        })
        .collect()
}

/// What `audit-verify` said: its exit code and its stdout and stderr.
pub struct Verdict {
    pub code: i32,
    pub text: String,
}

/// Runs `audit-verify path [--checkpoint-file checkpoint]` with `AUDIT_KEY=key` (unset
/// when `None`).
pub fn audit_verify(path: &Path, checkpoint: Option<&Path>, key: Option<&[u8]>) -> Verdict {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_audit-verify"));
    cmd.arg(path).env_remove("AUDIT_KEY");
    if let Some(c) = checkpoint {
        cmd.arg("--checkpoint-file").arg(c);
    }
    if let Some(key) = key {
        use std::os::unix::ffi::OsStrExt;
        cmd.env("AUDIT_KEY", std::ffi::OsStr::from_bytes(key));
    }
    let out = cmd.output().unwrap();
    Verdict {
        code: out.status.code().unwrap_or(-1),
        text: String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr),
    }
}

pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn save(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// The file's lines as JSON.
pub fn events(path: &Path) -> Vec<serde_json::Value> {
    lines(path)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
