//! Making untrusted text safe to write into an audit trail.
//!
//! Every free-text field of an event passes through [`clean`]: characters that could
//! forge a line, a terminal sequence or a misleading file name (C0 and C1 controls, DEL,
//! U+2028/U+2029, bidirectional overrides and isolates, zero-width characters) are
//! written as visible `\u{…}` escapes; the text is cut at a character boundary to a
//! maximum size; and secrets (`Bearer` tokens, the values of `token=`, `"password": "…"`,
//! `X-Amz-Signature=` and similar parameters, see [`redact`]) are replaced by
//! `[redacted]`. The event records which of these happened
//! in its `flags`.

use std::borrow::Cow;
use std::fmt::Write;

/// What cleaning did to an event's text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Flags {
    pub(crate) escaped: bool,
    pub(crate) truncated: bool,
    pub(crate) redacted: bool,
    pub(crate) client_ip_unreadable: bool,
}

const ESCAPED: Cow<'static, str> = Cow::Borrowed("escaped");
const TRUNCATED: Cow<'static, str> = Cow::Borrowed("truncated");
const REDACTED_FLAG: Cow<'static, str> = Cow::Borrowed("redacted");
const UNREADABLE: Cow<'static, str> = Cow::Borrowed("client_ip_unreadable");

/// Every set of flag names, indexed by [`Flags::index`]: an event keeps its flags in
/// four bits, not in a vector of its own.
static FLAG_SETS: [&[Cow<'static, str>]; 16] = {
    const E: Cow<'static, str> = ESCAPED;
    const T: Cow<'static, str> = TRUNCATED;
    const R: Cow<'static, str> = REDACTED_FLAG;
    const U: Cow<'static, str> = UNREADABLE;
    [
        &[],
        &[E],
        &[T],
        &[E, T],
        &[R],
        &[E, R],
        &[T, R],
        &[E, T, R],
        &[U],
        &[E, U],
        &[T, U],
        &[E, T, U],
        &[R, U],
        &[E, R, U],
        &[T, R, U],
        &[E, T, R, U],
    ]
};

impl Flags {
    fn index(self) -> usize {
        usize::from(self.escaped)
            | usize::from(self.truncated) << 1
            | usize::from(self.redacted) << 2
            | usize::from(self.client_ip_unreadable) << 3
    }

    /// The names of the flags set, in the order `escaped`, `truncated`, `redacted`,
    /// `client_ip_unreadable`.
    pub(crate) fn names(self) -> &'static [Cow<'static, str>] {
        FLAG_SETS[self.index()]
    }

    /// The flags named `names`; unknown names are ignored.
    pub(crate) fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut flags = Self::default();
        for name in names {
            match name {
                "escaped" => flags.escaped = true,
                "truncated" => flags.truncated = true,
                "redacted" => flags.redacted = true,
                "client_ip_unreadable" => flags.client_ip_unreadable = true,
                _ => {}
            }
        }
        flags
    }
}

/// Whether `c` must not appear as itself in an audit record.
pub(crate) fn is_dangerous(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}'          // line and paragraph separators
            | '\u{061C}' | '\u{200E}' | '\u{200F}' // bidi marks
            | '\u{202A}'..='\u{202E}'        // bidi embeddings and overrides
            | '\u{2066}'..='\u{2069}'        // bidi isolates
            | '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' // zero-width
            | '\u{FFFD}'                     // stands for bytes that were not UTF-8
        )
}

/// Whether `text` has a character that [`is_dangerous`]: printable ASCII (the usual
/// text) is settled byte by byte, without decoding a character.
pub(crate) fn has_dangerous(text: &str) -> bool {
    if text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return false;
    }
    text.chars().any(is_dangerous)
}

mod redact;

pub(crate) use redact::{might_hold_secret, redact, REDACTED};

/// Escapes dangerous characters, then cuts to `max` bytes at a character boundary.
pub(crate) fn escape_and_cut(input: &str, max: usize, flags: &mut Flags) -> String {
    if input.len() <= max && !has_dangerous(input) {
        return input.to_owned();
    }
    let mut out = String::with_capacity(input.len().min(max));
    for c in input.chars() {
        let before = out.len();
        if is_dangerous(c) {
            flags.escaped = true;
            let _ = write!(out, "\\u{{{:04x}}}", u32::from(c));
        } else {
            out.push(c);
        }
        if out.len() > max {
            out.truncate(before);
            flags.truncated = true;
            break;
        }
    }
    out
}

/// Cleans untrusted text for an audit field: secrets redacted, dangerous characters
/// escaped, at most `max` bytes.
pub(crate) fn clean(input: &str, max: usize, flags: &mut Flags) -> String {
    // Redact before cutting, so a cut can never leave half a secret visible; bound the
    // work on huge inputs first.
    let bounded = if input.len() > max * 4 + 64 {
        flags.truncated = true;
        let mut end = max * 4 + 64;
        while !input.is_char_boundary(end) {
            end -= 1;
        }
        &input[..end]
    } else {
        input
    };
    let redacted = redact(bounded, flags);
    escape_and_cut(&redacted, max, flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cleaned(s: &str, max: usize) -> (String, Flags) {
        let mut flags = Flags::default();
        (clean(s, max, &mut flags), flags)
    }

    #[test]
    fn dangerous_characters_become_visible_escapes() {
        let (out, flags) = cleaned("alice\n{\"outcome\":\"allowed\"}", 100);
        assert_eq!(out, "alice\\u{000a}{\"outcome\":\"allowed\"}");
        assert!(flags.escaped);
        for bad in [
            "\u{0}",
            "\u{7f}",
            "\u{85}",
            "\u{2028}",
            "\u{202e}",
            "\u{1b}[31m",
            "\r",
        ] {
            let (out, flags) = cleaned(bad, 100);
            assert!(out.chars().all(|c| !is_dangerous(c)), "{bad:?} -> {out:?}");
            assert!(flags.escaped);
        }
        let (out, _) = cleaned("invoice\u{202E}fdp.exe", 100);
        assert_eq!(out, "invoice\\u{202e}fdp.exe");
    }

    #[test]
    fn the_ascii_shortcut_agrees_with_the_character_test() {
        for text in [
            "",
            "plain /v1/files/{id} ~",
            "tab\there",
            "del\u{7f}",
            "nbsp\u{a0}ok",
            "bidi\u{202e}",
            "zero\u{200b}width",
            "é",
        ] {
            assert_eq!(
                has_dangerous(text),
                text.chars().any(is_dangerous),
                "{text:?}"
            );
        }
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let (out, flags) = cleaned(&"é".repeat(1000), 11);
        assert_eq!(out, "ééééé");
        assert!(flags.truncated);
        let (out, flags) = cleaned(&"x".repeat(1 << 20), 4096);
        assert_eq!(out.len(), 4096);
        assert!(flags.truncated);
    }

    #[test]
    fn secrets_are_redacted() {
        let (out, flags) = cleaned(
            "GET /f?X-Amz-Signature=abc123&X-Amz-Credential=AKIA/x&part=2 Authorization: Bearer eyJhbGci.x.y",
            500,
        );
        assert!(
            !out.contains("abc123") && !out.contains("AKIA") && !out.contains("eyJhbGci"),
            "{out}"
        );
        assert!(out.contains("part=2"));
        assert!(flags.redacted);
        let (out, _) = cleaned("token=s3cr3t", 100);
        assert_eq!(out, "token=[redacted]");
        let (out, flags) = cleaned("tokenizer=ok mytoken=ok", 100);
        assert_eq!(out, "tokenizer=ok mytoken=ok");
        assert!(!flags.redacted);
    }

    #[test]
    fn invalid_utf8_is_escaped() {
        let mut flags = Flags::default();
        let lossy = String::from_utf8_lossy(b"ok\xff");
        assert_eq!(clean(&lossy, 100, &mut flags), "ok\\u{fffd}");
        assert!(flags.escaped);
    }
}
