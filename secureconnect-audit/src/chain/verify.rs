//! [`verify`]: reads a chained file and reports every break.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufRead};

use super::{hex, ChainKey, Checkpoint, Linker, GENESIS, PREV_HASH, PREV_HMAC};

/// At most this many breaks are listed; the rest are only counted.
const MAX_BREAKS: usize = 1000;
/// At most this many `seq` gaps are listed.
const MAX_GAPS: usize = 100;
/// At most this many services are followed for `seq` gaps.
const MAX_SERVICES: usize = 256;

/// A problem found in a chain.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Break {
    /// A line is not a JSON object with a string `prev_hash` or `prev_hmac`.
    Malformed {
        /// 1-based line number.
        line: u64,
    },
    /// A line does not carry the previous line's hash: a line at or just before it was
    /// edited, deleted, inserted or moved.
    Chain {
        /// 1-based line number.
        line: u64,
    },
    /// Lines of a keyed chain, and no key was given: they cannot be checked.
    KeyRequired {
        /// The first line of the run.
        first: u64,
        /// The last line of the run.
        last: u64,
    },
    /// Unkeyed lines where a key was given: anyone who can write the file could have
    /// written them (a keyed chain never writes them).
    Unkeyed {
        /// The first line of the run.
        first: u64,
        /// The last line of the run.
        last: u64,
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
                "line {line}: its link does not match line {}: a line was edited, deleted, inserted or reordered here",
                line.saturating_sub(1)
            ),
            Self::KeyRequired { first, last } => write!(
                f,
                "lines {first}-{last}: keyed chain (HMAC-SHA256): set AUDIT_KEY to verify them"
            ),
            Self::Unkeyed { first, last } => write!(
                f,
                "lines {first}-{last}: not keyed, although a key was given: anyone who can write the file could have written them"
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

/// Events missing between two consecutive events of one service: `seq` jumped from
/// `after` to `before`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SeqGap {
    /// The service whose events these are (`service`, or OCSF `actor.app_name`).
    pub service: Option<String>,
    /// The `seq` before the gap.
    pub after: u64,
    /// The `seq` after the gap.
    pub before: u64,
}

/// The result of [`verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Lines read.
    pub lines: u64,
    /// Hash of the last line read (its HMAC when a key was given).
    pub last_hash: String,
    /// Every break, in line order (at most 1,000; see `more_breaks`).
    pub breaks: Vec<Break>,
    /// Breaks found beyond those listed.
    pub more_breaks: u64,
    /// `seq` gaps (lost events), per service; at most 100 are kept. Each pipeline
    /// numbers its events from 1, so a restart is not a gap.
    pub seq_gaps: Vec<SeqGap>,
}

impl Report {
    /// Whether no break was found.
    pub fn is_intact(&self) -> bool {
        self.breaks.is_empty()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Run {
    KeyRequired,
    Unkeyed,
}

/// The breaks found so far; runs of lines with the same key problem are one break.
#[derive(Default)]
struct Breaks {
    list: Vec<Break>,
    more: u64,
    /// The open run and its index in `list`.
    run: Option<(Run, usize)>,
}

impl Breaks {
    fn push(&mut self, found: Break) {
        if self.list.len() < MAX_BREAKS {
            self.list.push(found);
        } else {
            self.more += 1;
        }
    }

    /// Line `line` has key problem `run` (or none).
    fn run(&mut self, run: Option<Run>, line: u64) {
        match (run, self.run) {
            (Some(now), Some((open, i))) if now == open => {
                if let Some(Break::KeyRequired { last, .. } | Break::Unkeyed { last, .. }) =
                    self.list.get_mut(i)
                {
                    *last = line;
                }
            }
            (Some(now), _) => {
                let index = self.list.len();
                self.push(match now {
                    Run::KeyRequired => Break::KeyRequired {
                        first: line,
                        last: line,
                    },
                    Run::Unkeyed => Break::Unkeyed {
                        first: line,
                        last: line,
                    },
                });
                // Past the cap, the run still merges (into nothing listed).
                let index = if self.list.len() > index {
                    index
                } else {
                    usize::MAX
                };
                self.run = Some((now, index));
            }
            (None, _) => self.run = None,
        }
    }
}

/// Reads a chained file, checks every line's link (with `key` for a keyed chain), and
/// compares with `checkpoint`. After a break it goes on from the line it stopped at, so
/// every edited region is reported, not only the first.
///
/// Unkeyed files written before keyed chains existed verify as before (without a key).
///
/// # Errors
///
/// Only I/O errors.
pub fn verify(
    reader: impl BufRead,
    checkpoint: Option<&Checkpoint>,
    key: Option<&ChainKey>,
) -> io::Result<Report> {
    let plain = Linker::Plain;
    let keyed = key.cloned().map(Linker::Keyed);
    // The file's own linking, for the checkpoint and the last hash.
    let own = keyed.as_ref().unwrap_or(&plain);
    let mut lines = 0u64;
    let mut breaks = Breaks::default();
    let mut seqs = Seqs::default();
    let mut previous: Option<Vec<u8>> = None;
    let mut at_checkpoint = None;
    for line in reader.split(b'\n') {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        lines += 1;
        let value: Option<serde_json::Value> = serde_json::from_slice(&line).ok();
        let field = |name| {
            value
                .as_ref()
                .and_then(|v| v.get(name))
                .and_then(serde_json::Value::as_str)
        };
        let expected = |linker: &Linker| {
            previous
                .as_deref()
                .map_or_else(|| GENESIS.to_owned(), |p| hex(&linker.hash(p)))
        };
        let mut run = None;
        if let Some(link) = field(PREV_HMAC) {
            match &keyed {
                Some(linker) if link != expected(linker) => {
                    breaks.push(Break::Chain { line: lines });
                }
                Some(_) => {}
                None => run = Some(Run::KeyRequired),
            }
        } else if let Some(link) = field(PREV_HASH) {
            if keyed.is_some() {
                run = Some(Run::Unkeyed);
            }
            if link != expected(&plain) {
                breaks.push(Break::Chain { line: lines });
            }
        } else {
            breaks.push(Break::Malformed { line: lines });
        }
        breaks.run(run, lines);
        if let Some(value) = &value {
            seqs.see(value);
        }
        if checkpoint.is_some_and(|c| c.lines == lines) {
            at_checkpoint = Some(hex(&own.hash(&line)));
        }
        previous = Some(line);
    }
    if let Some(checkpoint) = checkpoint {
        if lines < checkpoint.lines {
            breaks.push(Break::Truncated {
                lines,
                expected: checkpoint.lines,
            });
        } else if checkpoint.lines > 0 && at_checkpoint.as_deref() != Some(&checkpoint.last_hash) {
            breaks.push(Break::CheckpointMismatch {
                line: checkpoint.lines,
            });
        }
    }
    Ok(Report {
        lines,
        last_hash: previous
            .as_deref()
            .map_or_else(|| GENESIS.to_owned(), |p| hex(&own.hash(p))),
        breaks: breaks.list,
        more_breaks: breaks.more,
        seq_gaps: seqs.gaps,
    })
}

/// The last `seq` of each service, and the gaps seen.
#[derive(Default)]
struct Seqs {
    last: HashMap<Option<String>, u64>,
    gaps: Vec<SeqGap>,
}

impl Seqs {
    fn see(&mut self, event: &serde_json::Value) {
        let seq = event
            .get("seq")
            .or_else(|| event.get("unmapped").and_then(|u| u.get("seq")))
            .and_then(serde_json::Value::as_u64);
        // 0: written by the sink itself (a recovery note), not by a pipeline.
        let Some(seq) = seq.filter(|s| *s > 0) else {
            return;
        };
        let service = event
            .get("service")
            .or_else(|| event.get("actor").and_then(|a| a.get("app_name")))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        if let Some(last) = self.last.get_mut(&service) {
            if seq > *last + 1 && self.gaps.len() < MAX_GAPS {
                self.gaps.push(SeqGap {
                    service,
                    after: *last,
                    before: seq,
                });
            }
            *last = seq;
        } else if self.last.len() < MAX_SERVICES {
            self.last.insert(service, seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::link;
    use super::*;

    fn chain(linker: &Linker, bodies: &[&str]) -> Vec<String> {
        let mut prev = None::<Vec<u8>>;
        let mut out = Vec::new();
        for body in bodies {
            let hash = prev.as_deref().map_or([0; 32], |p: &[u8]| linker.hash(p));
            let mut line = body.as_bytes().to_vec();
            link(&mut line, 0, linker.field(), &hash);
            out.push(String::from_utf8(line.clone()).unwrap());
            prev = Some(line);
        }
        out
    }

    fn run(lines: &[String], key: Option<&ChainKey>) -> Report {
        verify((lines.join("\n") + "\n").as_bytes(), None, key).unwrap()
    }

    #[test]
    fn every_break_is_reported_not_only_the_first() {
        let bodies: Vec<String> = (1..=10).map(|i| format!("{{\"seq\":{i}}}")).collect();
        let bodies: Vec<&str> = bodies.iter().map(String::as_str).collect();
        let mut lines = chain(&Linker::Plain, &bodies);
        lines[2] = lines[2].replace("\"seq\":3", "\"seq\":33");
        lines[7] = lines[7].replace("\"seq\":8", "\"seq\":88");
        let report = run(&lines, None);
        assert_eq!(
            report.breaks,
            vec![Break::Chain { line: 4 }, Break::Chain { line: 9 }]
        );
    }

    #[test]
    fn keyed_and_unkeyed_lines_need_the_right_key() {
        let key = ChainKey::new([9u8; 32]).unwrap();
        let keyed = chain(
            &Linker::Keyed(key.clone()),
            &["{\"a\":1}", "{\"a\":2}", "{}"],
        );
        assert!(run(&keyed, Some(&key)).is_intact());
        assert_eq!(
            run(&keyed, None).breaks,
            vec![Break::KeyRequired { first: 1, last: 3 }]
        );
        let other = ChainKey::new([8u8; 32]).unwrap();
        assert_eq!(
            run(&keyed, Some(&other)).breaks,
            vec![Break::Chain { line: 2 }, Break::Chain { line: 3 }]
        );
        // A downgrade: the file rewritten as a plain chain, which needs no key.
        let plain = chain(&Linker::Plain, &["{\"a\":1}", "{\"a\":2}", "{}"]);
        assert!(run(&plain, None).is_intact());
        assert_eq!(
            run(&plain, Some(&key)).breaks,
            vec![Break::Unkeyed { first: 1, last: 3 }]
        );
    }

    #[test]
    fn seq_gaps_are_per_service() {
        let lines = chain(
            &Linker::Plain,
            &[
                "{\"service\":\"a\",\"seq\":1}",
                "{\"service\":\"b\",\"seq\":1}",
                "{\"service\":\"a\",\"seq\":2}",
                "{\"seq\":0}",
                "{\"service\":\"b\",\"seq\":4}",
            ],
        );
        let report = run(&lines, None);
        assert!(report.is_intact());
        assert_eq!(
            report.seq_gaps,
            vec![SeqGap {
                service: Some("b".into()),
                after: 1,
                before: 4
            }]
        );
    }
}
