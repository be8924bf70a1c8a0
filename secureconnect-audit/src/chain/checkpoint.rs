//! [`Checkpoint`]: how many lines a chain had and the hash of the last one.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, ErrorKind};

/// How many lines a file had and the hash of the last one, at some moment. In a keyed
/// chain the hash is the line's HMAC, so a checkpoint cannot be forged for a
/// rewritten file without the key. It shows a cut-off tail only when kept where the
/// file's writer cannot reach it (shipped off the host): an older checkpoint of the
/// same file is as valid as the latest one.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Checkpoint {
    /// Lines written.
    pub lines: u64,
    /// Hash (or HMAC) of the last line ([`GENESIS`](super::GENESIS) when none).
    pub last_hash: String,
}

impl Checkpoint {
    pub(crate) fn new(lines: u64, last_hash: String) -> Self {
        Self { lines, last_hash }
    }
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
        super::parse_hex(hash).ok_or_else(bad)?;
        Ok(Self {
            lines,
            last_hash: hash.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::GENESIS;
    use super::*;

    #[test]
    fn checkpoints_parse() {
        let c: Checkpoint = format!("12:{GENESIS}").parse().unwrap();
        assert_eq!(c.lines, 12);
        assert!("12:abc".parse::<Checkpoint>().is_err());
        assert!(format!("x:{GENESIS}").parse::<Checkpoint>().is_err());
        assert_eq!(c.to_string().parse::<Checkpoint>().unwrap(), c);
    }
}
