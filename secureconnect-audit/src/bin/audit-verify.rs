//! Verifies a hash-chained audit file written by `FileSink` and says which line first
//! breaks the chain.
//!
//! ```text
//! audit-verify FILE [--checkpoint LINES:HASH | --checkpoint-file PATH]
//! ```
//!
//! Exit status: 0 when the chain is intact (and matches the checkpoint), 1 when it is
//! broken, 2 on a usage or I/O error. Gaps in `seq` (events lost before they were
//! written) are reported as warnings.

use std::fs::File;
use std::io::BufReader;
use std::process::ExitCode;

use secureconnect_audit::chain::{verify, Checkpoint};

const USAGE: &str = "usage: audit-verify FILE [--checkpoint LINES:HASH | --checkpoint-file PATH]";

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
    let reader = BufReader::new(File::open(&path).map_err(|e| format!("{path}: {e}"))?);
    let report = verify(reader, checkpoint.as_ref()).map_err(|e| format!("{path}: {e}"))?;
    for (after, before) in &report.seq_gaps {
        eprintln!(
            "warning: seq jumps from {after} to {before}: {} event(s) lost before writing",
            before - after - 1
        );
    }
    match report.broken {
        None => {
            println!(
                "ok: {} lines, chain intact, checkpoint {}:{}",
                report.lines, report.lines, report.last_hash
            );
            Ok(true)
        }
        Some(broken) => {
            println!("broken: {broken}");
            Ok(false)
        }
    }
}
