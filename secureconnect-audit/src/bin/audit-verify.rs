//! Verifies a chained audit file written by `FileSink` and reports every line where the
//! chain breaks.
//!
//! ```text
//! AUDIT_KEY=… audit-verify FILE [--checkpoint LINES:HASH | --checkpoint-file PATH]
//! ```
//!
//! A keyed chain (HMAC-SHA256) is checked with the key in the environment variable
//! `AUDIT_KEY` (its bytes, at least 32); an unkeyed chain (plain SHA-256, files written
//! without a key) is checked without it. Given a key, unkeyed lines are a break: anyone
//! who can write the file could have written them.
//!
//! Exit status: 0 when the chain is intact (and matches the checkpoint), 1 when it is
//! broken anywhere, 2 on a usage or I/O error or a malformed `AUDIT_KEY`. Gaps in `seq`
//! (events lost before they were written) are reported as warnings.

use std::fs::File;
use std::io::BufReader;
use std::process::ExitCode;

use secureconnect_audit::chain::{verify, ChainKey, Checkpoint};

const USAGE: &str =
    "usage: [AUDIT_KEY=…] audit-verify FILE [--checkpoint LINES:HASH | --checkpoint-file PATH]";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(message) => {
            eprintln!("audit-verify: {message}");
            ExitCode::from(2)
        }
    }
}

/// The key in `AUDIT_KEY`, if set.
fn key_from_env() -> Result<Option<ChainKey>, String> {
    let Some(value) = std::env::var_os("AUDIT_KEY") else {
        return Ok(None);
    };
    #[cfg(unix)]
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(value.as_os_str()).to_vec();
    #[cfg(not(unix))]
    let bytes = value
        .into_string()
        .map_err(|_| "AUDIT_KEY is not valid Unicode".to_owned())?
        .into_bytes();
    ChainKey::new(bytes)
        .map(Some)
        .map_err(|e| format!("AUDIT_KEY: {e}"))
}

fn run(args: Vec<String>) -> Result<bool, String> {
    let mut file = None;
    let mut checkpoint: Option<Checkpoint> = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--checkpoint" => {
                let value = args.next().ok_or(USAGE)?;
                checkpoint = Some(value.parse().map_err(|e| format!("{e}: {value:?}"))?);
            }
            "--checkpoint-file" => {
                let path = args.next().ok_or(USAGE)?;
                let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
                checkpoint = Some(text.parse().map_err(|e| format!("{path}: {e}"))?);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(true);
            }
            _ if file.is_none() && !arg.starts_with('-') => file = Some(arg),
            _ => return Err(USAGE.to_owned()),
        }
    }
    let path = file.ok_or(USAGE)?;
    let key = key_from_env()?;
    let reader = BufReader::new(File::open(&path).map_err(|e| format!("{path}: {e}"))?);
    let report =
        verify(reader, checkpoint.as_ref(), key.as_ref()).map_err(|e| format!("{path}: {e}"))?;
    for gap in &report.seq_gaps {
        eprintln!(
            "warning: {}seq jumps from {} to {}: {} event(s) lost before writing",
            gap.service
                .as_deref()
                .map_or_else(String::new, |s| format!("{s}: ")),
            gap.after,
            gap.before,
            gap.before - gap.after - 1
        );
    }
    let keyed = if key.is_some() { "keyed " } else { "" };
    if checkpoint.is_none() {
        // Only a checkpoint kept out of reach of the file's writer shows a cut tail.
        eprintln!(
            "warning: no checkpoint given: lines cut off the end of the file (or all of them) \
             cannot be detected; compare with a checkpoint kept elsewhere"
        );
    }
    if report.is_intact() {
        println!(
            "ok: {} lines, {keyed}chain intact, checkpoint {}:{}",
            report.lines, report.lines, report.last_hash
        );
        return Ok(true);
    }
    for broken in &report.breaks {
        println!("broken: {broken}");
    }
    if report.more_breaks > 0 {
        println!("broken: … and {} more", report.more_breaks);
    }
    println!(
        "{} break(s) in {} lines",
        report.breaks.len() as u64 + report.more_breaks,
        report.lines
    );
    Ok(false)
}
