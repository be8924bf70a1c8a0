//! The hash chain of a JSON-lines audit file, and its verifier.
//!
//! Line *n* is a JSON object whose last field links it to line *n − 1*:
//!
//! - unkeyed: `prev_hash`, the lowercase hex SHA-256 of line *n − 1*'s bytes (without
//!   the newline). Anyone who can write the file can also rewrite it consistently;
//!   the chain only catches clumsy edits and accidents.
//! - keyed ([`ChainKey`], the `AUDIT_KEY` of the reference services): `prev_hmac`, the
//!   lowercase hex HMAC-SHA256 of line *n − 1* under the key. Without the key no line
//!   can be changed, added, or removed before the last one unnoticed.
//!
//! The first line carries 64 zeros ([`GENESIS`]). An edited, deleted, inserted or
//! reordered line breaks the chain at the next line. A cut-off tail (the last lines,
//! or all of them) leaves a valid chain, keyed or not: only a [`Checkpoint`] (line
//! count and last hash, keyed in a keyed chain) copied somewhere the file's writer
//! cannot change shows it. A checkpoint file next to the audit file, writable by the
//! same process, does not: whoever can cut the file can write an older checkpoint
//! back. [`verify`] reports every break, not only the first.
//!
//! ```
//! use secureconnect_audit::chain::{verify, ChainKey};
//!
//! let key = ChainKey::new("a key of at least thirty-two bytes!!")?;
//! let line1 = format!("{{\"seq\":1,\"prev_hmac\":\"{}\"}}", secureconnect_audit::chain::GENESIS);
//! let line2 = format!("{{\"seq\":2,\"prev_hmac\":\"{}\"}}", key.line_mac(line1.as_bytes()));
//! let file = format!("{line1}\n{line2}\n");
//! let report = verify(file.as_bytes(), None, Some(&key))?;
//! assert!(report.is_intact(), "{:?}", report.breaks);
//! // Without the key a keyed chain cannot be checked: that is a finding too.
//! assert!(!verify(file.as_bytes(), None, None)?.is_intact());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind};

mod checkpoint;
mod verify;

pub use checkpoint::Checkpoint;
pub use verify::{verify, Break, Report, SeqGap};

/// The `prev_hash` (or `prev_hmac`) of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The field that links an unkeyed line to the previous one.
pub(crate) const PREV_HASH: &str = "prev_hash";
/// The field that links a keyed line to the previous one.
pub(crate) const PREV_HMAC: &str = "prev_hmac";

/// Lowercase hex SHA-256 of `line`.
pub fn line_hash(line: &[u8]) -> String {
    hex(&Sha256::digest(line).into())
}

/// The key of a keyed chain (HMAC-SHA256), at least [`ChainKey::MIN_LEN`] bytes.
///
/// Its `Debug` shows no key material.
///
/// ```
/// use secureconnect_audit::chain::ChainKey;
///
/// assert!(ChainKey::new("too short").unwrap_err().is_invalid());
/// let key = ChainKey::new([7u8; 32])?;
/// assert_eq!(key.line_mac(b"{}").len(), 64);
/// # Ok::<(), secureconnect_audit::Error>(())
/// ```
#[derive(Clone)]
pub struct ChainKey {
    /// The HMAC state after the key, cloned for every line (boxed: it is large).
    mac: Box<Hmac<Sha256>>,
    /// SHA-256 of the key: tells two keys apart without keeping the key twice.
    fingerprint: [u8; 32],
}

impl ChainKey {
    /// The shortest key accepted, in bytes.
    pub const MIN_LEN: usize = 32;

    /// A key from its bytes (for `AUDIT_KEY`, the variable's bytes as they are).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidConfig`] when it is shorter than [`MIN_LEN`](Self::MIN_LEN).
    pub fn new(key: impl AsRef<[u8]>) -> Result<Self, Error> {
        let key = key.as_ref();
        if key.len() < Self::MIN_LEN {
            return Err(Error::with_detail(
                ErrorKind::InvalidConfig,
                format!(
                    "the audit chain key must be at least {} bytes (got {})",
                    Self::MIN_LEN,
                    key.len()
                ),
            ));
        }
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| {
            Error::with_detail(ErrorKind::InvalidConfig, "the audit chain key is unusable")
        })?;
        Ok(Self {
            mac: Box::new(mac),
            fingerprint: Sha256::digest(key).into(),
        })
    }

    /// Lowercase hex HMAC-SHA256 of `line` under this key.
    pub fn line_mac(&self, line: &[u8]) -> String {
        hex(&self.mac_bytes(line))
    }

    fn mac_bytes(&self, line: &[u8]) -> [u8; 32] {
        let mut mac = Hmac::clone(&self.mac);
        mac.update(line);
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChainKey(..)")
    }
}

impl PartialEq for ChainKey {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for ChainKey {}

/// How the lines of one chain are linked: plain SHA-256 or HMAC-SHA256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Linker {
    Plain,
    Keyed(ChainKey),
}

impl Linker {
    pub(crate) fn new(key: Option<ChainKey>) -> Self {
        key.map_or(Self::Plain, Self::Keyed)
    }

    /// The hash of `line` that the next line carries.
    pub(crate) fn hash(&self, line: &[u8]) -> [u8; 32] {
        match self {
            Self::Plain => Sha256::digest(line).into(),
            Self::Keyed(key) => key.mac_bytes(line),
        }
    }

    /// The name of the field that carries it.
    pub(crate) fn field(&self) -> &'static str {
        match self {
            Self::Plain => PREV_HASH,
            Self::Keyed(_) => PREV_HMAC,
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of a hash.
pub(crate) fn hex(hash: &[u8; 32]) -> String {
    let mut out = String::with_capacity(64);
    for byte in hash {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 15)]));
    }
    out
}

/// Appends the lowercase hex of `hash` to `out`.
pub(crate) fn push_hex(out: &mut Vec<u8>, hash: &[u8; 32]) {
    for byte in hash {
        out.push(HEX[usize::from(byte >> 4)]);
        out.push(HEX[usize::from(byte & 15)]);
    }
}

/// Parses 64 lowercase hex digits.
pub(crate) fn parse_hex(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// Turns `{"a":1}` into `{"a":1,"<field>":"<hex of prev>"}` at the end of `out`, where
/// `out[start..]` holds the JSON object.
pub(crate) fn link(out: &mut Vec<u8>, start: usize, field: &str, prev: &[u8; 32]) {
    if out.len() > start && out.last() == Some(&b'}') {
        out.pop();
    }
    if out.len() > start + 1 || (out.len() == start + 1 && out[start] != b'{') {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(field.as_bytes());
    out.extend_from_slice(b"\":\"");
    push_hex(out, prev);
    out.extend_from_slice(b"\"}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_at_the_end_of_the_object() {
        let prev = [0xab; 32];
        let mut out = b"xx{\"a\":1}".to_vec();
        link(&mut out, 2, PREV_HASH, &prev);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("xx{{\"a\":1,\"prev_hash\":\"{}\"}}", "ab".repeat(32))
        );
        let mut out = b"{}".to_vec();
        link(&mut out, 0, PREV_HMAC, &prev);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{{\"prev_hmac\":\"{}\"}}", "ab".repeat(32))
        );
    }

    #[test]
    fn known_hashes() {
        // SHA-256 of the empty string.
        assert_eq!(
            line_hash(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // RFC 4231 test case 2 has a short key; ours must be 32 bytes, so check the
        // HMAC against an independent computation instead: key of 32 0x0b bytes.
        let key = ChainKey::new([0x0b; 32]).unwrap();
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&[0x0b; 32]).unwrap();
        mac.update(b"Hi There");
        assert_eq!(
            key.line_mac(b"Hi There"),
            hex(&mac.finalize().into_bytes().into())
        );
        assert_ne!(key.line_mac(b"Hi There"), line_hash(b"Hi There"));
        assert_eq!(
            parse_hex(&line_hash(b"x")),
            Some(Sha256::digest(b"x").into())
        );
        assert_eq!(parse_hex("zz"), None);
    }

    #[test]
    fn short_keys_are_a_config_error_and_keys_never_print() {
        let error = ChainKey::new([1u8; 31]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidConfig);
        assert!(error.to_string().contains("at least 32 bytes"), "{error}");
        let key = ChainKey::new("k".repeat(40)).unwrap();
        assert_eq!(format!("{key:?}"), "ChainKey(..)");
        assert_eq!(key, ChainKey::new("k".repeat(40)).unwrap());
        assert_ne!(key, ChainKey::new("j".repeat(40)).unwrap());
    }
}
