//! The SHA-256 hash chain of a JSON-lines audit file, and its verifier.
//!
//! Line *n* is a JSON object whose last field `prev_hash` is the lowercase hex SHA-256
//! of line *n − 1*'s bytes (without the newline); the first line carries 64 zeros. An
//! edited, deleted, inserted or reordered line breaks the chain at the next line. A
//! cut-off tail leaves a valid chain, so a [`Checkpoint`] (line count and last hash)
//! kept elsewhere is compared too.

use std::fmt;
use std::io::{self, BufRead};
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind};

/// The `prev_hash` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Lowercase hex SHA-256 of `line`.
pub fn line_hash(line: &[u8]) -> String {
    let digest = Sha256::digest(line);
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
    }
    out
}

/// `{"a":1}` → `{"a":1,"prev_hash":"…"}`.
pub(crate) fn append_prev_hash(json_object: &str, prev: &str) -> String {
    let body = json_object.strip_suffix('}').unwrap_or(json_object);
    let sep = if body.ends_with('{') { "" } else { "," };
    format!("{body}{sep}\"prev_hash\":\"{prev}\"}}")
}

/// How many lines a file had and the hash of the last one, at some moment.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Checkpoint {
    /// Lines written.
    pub lines: u64,
    /// Hash of the last line ([`GENESIS`] when none).
    pub last_hash: String,
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.lines, self.last_hash)
    }
}

impl FromStr for Checkpoint {
    type Err = Error;

    /// `LINES:HASH`; anything else is [`ErrorKind::InvalidCheckpoint`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || Error::from_kind(ErrorKind::InvalidCheckpoint);
        let (lines, hash) = s.trim().split_once(':').ok_or_else(bad)?;
        let lines = lines.parse().map_err(|_| bad())?;
        if hash.len() != 64 || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad());
        }
        Ok(Self {
            lines,
            last_hash: hash.to_owned(),
        })
    }
}

/// The first problem found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Break {
    /// A line is not a JSON object with a string `prev_hash`.
    Malformed {
        /// 1-based line number.
        line: u64,
    },
    /// A line's `prev_hash` is not the previous line's hash: a line at or just before
    /// it was edited, deleted, inserted or moved.
    Chain {
        /// 1-based line number.
        line: u64,
    },
    /// The file has fewer lines than the checkpoint: its tail was cut off.
    Truncated {
        /// Lines in the file.
        lines: u64,
        /// Lines at the checkpoint.
        expected: u64,
    },
    /// The line at the checkpoint's position does not have the checkpoint's hash.
    CheckpointMismatch {
        /// 1-based line number.
        line: u64,
    },
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed { line } => write!(f, "line {line}: not a hash-chained JSON line"),
            Self::Chain { line } => write!(
                f,
                "line {line}: prev_hash does not match line {}: a line was edited, deleted, inserted or reordered here",
                line - 1
            ),
            Self::Truncated { lines, expected } => write!(
                f,
                "the file has {lines} lines but the checkpoint saw {expected}: its tail was cut off"
            ),
            Self::CheckpointMismatch { line } => {
                write!(f, "line {line} does not have the checkpoint's hash: it was rewritten")
            }
        }
    }
}

/// The result of [`verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Lines read.
    pub lines: u64,
    /// Hash of the last line read.
    pub last_hash: String,
    /// The first break, if any.
    pub broken: Option<Break>,
    /// `seq` values that are missing between consecutive lines (lost events), as
    /// `(after, before)` pairs; at most 100 are kept.
    pub seq_gaps: Vec<(u64, u64)>,
}

/// Reads a hash-chained file and finds the first break; compares with `checkpoint`.
///
/// # Errors
///
/// Only I/O errors.
pub fn verify(reader: impl BufRead, checkpoint: Option<&Checkpoint>) -> io::Result<Report> {
    let mut expected_prev = GENESIS.to_owned();
    let mut lines = 0u64;
    let mut broken = None;
    let mut seq_gaps = Vec::new();
    let mut last_seq: Option<u64> = None;
    let mut at_checkpoint = None;
    for line in reader.split(b'\n') {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        lines += 1;
        if broken.is_none() {
            let value: Option<serde_json::Value> = serde_json::from_slice(&line).ok();
            match value
                .as_ref()
                .and_then(|v| v.get("prev_hash"))
                .and_then(serde_json::Value::as_str)
            {
                None => broken = Some(Break::Malformed { line: lines }),
                Some(prev) if prev != expected_prev => broken = Some(Break::Chain { line: lines }),
                Some(_) => {}
            }
            let seq = value.as_ref().and_then(|v| {
                v.get("seq")
                    .or_else(|| v.get("unmapped").and_then(|u| u.get("seq")))
                    .and_then(serde_json::Value::as_u64)
            });
            if let (Some(prev), Some(seq)) = (last_seq, seq) {
                if seq > prev + 1 && seq_gaps.len() < 100 {
                    seq_gaps.push((prev, seq));
                }
            }
            if seq.is_some() {
                last_seq = seq;
            }
        }
        expected_prev = line_hash(&line);
        if checkpoint.is_some_and(|c| c.lines == lines) {
            at_checkpoint = Some(expected_prev.clone());
        }
    }
    if broken.is_none() {
        if let Some(checkpoint) = checkpoint {
            if lines < checkpoint.lines {
                broken = Some(Break::Truncated {
                    lines,
                    expected: checkpoint.lines,
                });
            } else if checkpoint.lines > 0
                && at_checkpoint.as_deref() != Some(&checkpoint.last_hash)
            {
                broken = Some(Break::CheckpointMismatch {
                    line: checkpoint.lines,
                });
            }
        }
    }
    Ok(Report {
        lines,
        last_hash: expected_prev,
        broken,
        seq_gaps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_the_field() {
        assert_eq!(
            append_prev_hash("{\"a\":1}", "x"),
            "{\"a\":1,\"prev_hash\":\"x\"}"
        );
        assert_eq!(append_prev_hash("{}", "x"), "{\"prev_hash\":\"x\"}");
    }

    #[test]
    fn checkpoints_parse() {
        let c: Checkpoint = format!("12:{}", GENESIS).parse().unwrap();
        assert_eq!(c.lines, 12);
        assert!("12:abc".parse::<Checkpoint>().is_err());
        assert_eq!(c.to_string().parse::<Checkpoint>().unwrap(), c);
    }

    #[test]
    fn known_hash() {
        // SHA-256 of the empty string.
        assert_eq!(
            line_hash(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
