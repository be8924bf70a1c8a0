//! [`redact`]: secret values out of free text, whatever the spacing and quoting.
//!
//! Two shapes are recognized, in any letter case:
//!
//! - an authorization scheme and its credential: `Bearer <token>`, `Basic <token>`,
//!   separated by any run of whitespace (spaces, tabs, line breaks, or their escapes
//!   `\t`, `\n`, `\r` in text that holds JSON);
//! - a secret parameter and its value: `<name>=<value>` or `<name>:<value>` for the
//!   names in [`SECRET_PARAMS`], with optional whitespace around the separator and
//!   optional quotes (`"`, `'`, or `\"` inside JSON text) around the name and the value:
//!   `token=x`, `token = x`, `{"password":"x"}`, `'secret': 'x'`, `{\"jwt\":\"x\"}`.
//!
//! The value is replaced by `[redacted]`; a quoted value up to its closing quote
//! (escaped quotes do not close it), an unquoted one up to a delimiter.

use std::borrow::Cow;

use super::Flags;

/// Parameter names whose values are secrets wherever they appear.
const SECRET_PARAMS: &[&str] = &[
    "access_token",
    "id_token",
    "refresh_token",
    "token",
    "api_key",
    "apikey",
    "password",
    "passwd",
    "secret",
    "client_secret",
    "signature",
    "sig",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "x-goog-signature",
    "x-goog-credential",
    "session",
    "sessionid",
    "jwt",
];

/// Authorization schemes whose credential follows after whitespace.
const SCHEMES: &[&str] = &["bearer", "basic"];

/// What a secret is replaced by.
pub(crate) const REDACTED: &str = "[redacted]";

/// Whether `text` has any byte that one of the recognized shapes needs; text without
/// one is left alone without a closer look.
pub(crate) fn might_hold_secret(text: &str) -> bool {
    text.bytes()
        .any(|b| matches!(b, b'=' | b':' | b'\\') || is_space(b))
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c)
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

/// The length of the whitespace (or `\t`, `\n`, `\r` escapes) at `bytes[i..]`.
fn space_after(bytes: &[u8], i: usize) -> usize {
    let mut j = i;
    loop {
        match bytes.get(j..) {
            Some([b, ..]) if is_space(*b) => j += 1,
            Some([b'\\', b't' | b'n' | b'r', ..]) => j += 2,
            _ => return j - i,
        }
    }
}

/// Where the whitespace (or escapes) ending at `bytes[..end]` starts.
fn space_before(bytes: &[u8], end: usize) -> usize {
    let mut j = end;
    loop {
        match &bytes[..j] {
            [.., b] if is_space(*b) => j -= 1,
            [.., b'\\', b't' | b'n' | b'r'] => j -= 2,
            _ => return j,
        }
    }
}

/// A quote at `bytes[i..]`: `\"`, `"` or `'`.
fn quote_at(bytes: &[u8], i: usize) -> Option<&'static [u8]> {
    match bytes.get(i..)? {
        [b'\\', b'"', ..] => Some(b"\\\""),
        [b'"', ..] => Some(b"\""),
        [b'\'', ..] => Some(b"'"),
        _ => None,
    }
}

/// The length of a quote ending at `bytes[..end]`.
fn quote_before(bytes: &[u8], end: usize) -> usize {
    match &bytes[..end] {
        [.., b'\\', b'"'] => 2,
        [.., b'"' | b'\''] => 1,
        _ => 0,
    }
}

/// Whether an unquoted value ends at `bytes[i]`. A backslash ends it only where it
/// starts an escaped quote or whitespace, so that no part of a value stays visible.
fn ends_value(bytes: &[u8], i: usize) -> bool {
    match bytes[i..] {
        [b, ..] if is_space(b) => true,
        [b'&' | b'"' | b'\'' | b';' | b',' | b'#' | b'}' | b']' | b')' | b'<' | b'>', ..] => true,
        [b'\\', b'"' | b't' | b'n' | b'r', ..] => true,
        _ => false,
    }
}

/// The end of the value starting at `bytes[start..]`: at its closing `quote`, or at a
/// delimiter.
fn value_end(bytes: &[u8], start: usize, quote: Option<&[u8]>) -> usize {
    let mut i = start;
    match quote {
        Some(b"\"") => {
            while i < bytes.len() {
                match bytes[i] {
                    b'\\' => i += 2,
                    b'"' => return i,
                    _ => i += 1,
                }
            }
            bytes.len()
        }
        Some(quote) => {
            while i < bytes.len() {
                if bytes[i..].starts_with(quote) {
                    return i;
                }
                i += 1;
            }
            bytes.len()
        }
        None => {
            while i < bytes.len() && !ends_value(bytes, i) {
                i += 1;
            }
            i
        }
    }
    .min(bytes.len())
}

/// The value of a secret parameter whose separator (`=` or `:`) is at `sep`.
fn param_value(bytes: &[u8], sep: usize) -> Option<(usize, usize)> {
    let mut j = space_before(bytes, sep);
    j -= quote_before(bytes, j);
    let name_end = j;
    while j > 0 && is_name_byte(bytes[j - 1]) {
        j -= 1;
    }
    let name = &bytes[j..name_end];
    if name.is_empty()
        || !SECRET_PARAMS
            .iter()
            .any(|s| s.as_bytes().eq_ignore_ascii_case(name))
    {
        return None;
    }
    let mut k = sep + 1;
    k += space_after(bytes, k);
    let quote = quote_at(bytes, k);
    let start = k + quote.map_or(0, <[u8]>::len);
    let end = value_end(bytes, start, quote);
    (end > start).then_some((start, end))
}

/// The credential after an authorization scheme that starts at `at`.
fn credential(bytes: &[u8], at: usize) -> Option<(usize, usize)> {
    if at > 0 && bytes[at - 1].is_ascii_alphanumeric() {
        return None;
    }
    let scheme = SCHEMES.iter().find(|s| {
        bytes
            .get(at..at + s.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(s.as_bytes()))
    })?;
    let after = at + scheme.len();
    let space = space_after(bytes, after);
    if space == 0 {
        return None;
    }
    let start = after + space;
    let end = value_end(bytes, start, None);
    (end > start).then_some((start, end))
}

/// Replaces secret values (see the module docs) by `[redacted]`, in one pass; text
/// without any is returned as it is.
pub(crate) fn redact<'a>(input: &'a str, flags: &mut Flags) -> Cow<'a, str> {
    if !might_hold_secret(input) {
        return Cow::Borrowed(input);
    }
    let bytes = input.as_bytes();
    // (start, end) of byte ranges to replace; ASCII delimiters keep them on character
    // boundaries.
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for (i, b) in bytes.iter().enumerate() {
        let found = match b {
            b'=' | b':' => param_value(bytes, i),
            b'b' | b'B' => credential(bytes, i),
            _ => None,
        };
        ranges.extend(found);
    }
    if ranges.is_empty() {
        return Cow::Borrowed(input);
    }
    flags.redacted = true;
    ranges.sort_unstable();
    let mut out = String::with_capacity(input.len());
    let mut pos = 0;
    for (start, end) in ranges {
        if end <= pos {
            continue;
        }
        let start = start.max(pos);
        out.push_str(&input[pos..start]);
        if !out.ends_with(REDACTED) || start > pos {
            out.push_str(REDACTED);
        }
        pos = end;
    }
    out.push_str(&input[pos..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redacted(s: &str) -> String {
        let mut flags = Flags::default();
        let out = redact(s, &mut flags).into_owned();
        assert_eq!(flags.redacted, out != s, "{s:?} -> {out:?}");
        out
    }

    #[test]
    fn the_spacing_and_quoting_of_real_text() {
        for (input, expected) in [
            ("Bearer  x1", "Bearer  [redacted]"),
            ("Bearer\tx1", "Bearer\t[redacted]"),
            ("bearer \t\r\n x1,y", "bearer \t\r\n [redacted],y"),
            (
                "{\"auth\":\"Bearer\\tx1\"}",
                "{\"auth\":\"Bearer\\t[redacted]\"}",
            ),
            ("{\"password\":\"x1\"}", "{\"password\":\"[redacted]\"}"),
            (
                "{\"password\" : \"x 1\\\"2\"}",
                "{\"password\" : \"[redacted]\"}",
            ),
            ("token = x1", "token = [redacted]"),
            ("token: x1 next", "token: [redacted] next"),
            ("'secret': 'x1'", "'secret': '[redacted]'"),
            (
                "{\\\"jwt\\\":\\\"x1\\\"}",
                "{\\\"jwt\\\":\\\"[redacted]\\\"}",
            ),
            (
                "a?X-Amz-Signature=x1&part=2",
                "a?X-Amz-Signature=[redacted]&part=2",
            ),
            ("password=x1\\y2", "password=[redacted]"),
            ("{\"token\":12345}", "{\"token\":[redacted]}"),
        ] {
            assert_eq!(redacted(input), expected, "{input:?}");
        }
    }

    #[test]
    fn lookalikes_are_left_alone() {
        for text in [
            "tokenizer=ok mytoken=ok",
            "HTTP 403: not allowed",
            "at 14:58:35 token",
            "Bearerx",
            "unbasic x",
            "token=",
            "password:",
        ] {
            assert_eq!(redacted(text), text);
        }
    }
}
