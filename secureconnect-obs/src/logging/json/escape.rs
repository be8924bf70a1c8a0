//! JSON text written straight into a byte buffer: strings escaped, numbers formatted,
//! with no intermediate value and no allocation.
//!
//! Strings come in as `&str`, so the output is always valid UTF-8. Escaped are what
//! JSON requires (`"`, `\`, the control characters U+0000–U+001F) and also the C1
//! control characters U+0080–U+009F (among them NEL, U+0085), U+2028 and U+2029, which
//! JSON allows raw but some readers (JavaScript, a few log shippers) take for line
//! breaks: a line stays one line for every reader.

use std::fmt;

/// No escape needed.
const RAW: u8 = 0;
/// `\u00XX`.
const UNICODE: u8 = b'u';
/// The first byte of U+2028 and U+2029 (and of other characters): look further.
const LINE_SEPARATOR_LEAD: u8 = 1;
/// The first byte of U+0080–U+00BF, among them the C1 controls: look further.
const C1_LEAD: u8 = 2;

/// What each byte turns into: [`RAW`], [`UNICODE`], [`LINE_SEPARATOR_LEAD`], or the
/// letter after a backslash (`n` for `\n`).
static ESCAPES: [u8; 256] = escapes();

const fn escapes() -> [u8; 256] {
    let mut table = [RAW; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = UNICODE;
        byte += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table[0xe2] = LINE_SEPARATOR_LEAD;
    table[0xc2] = C1_LEAD;
    table
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether any of the 8 bytes of `word` may need escaping: below 0x20, `"`, `\\`, or
/// not ASCII.
#[inline]
fn may_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let below_space = word.wrapping_sub(ONES * 0x20);
    let quote = (word ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES);
    let backslash = (word ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES);
    // A byte's high bit set in a lane of these where the byte's own is clear marks a
    // byte below 0x20, a quote or a backslash; the word's own high bits mark non-ASCII.
    ((below_space | quote | backslash) & !word & HIGHS) | (word & HIGHS) != 0
}

/// Appends `text` escaped, without the surrounding quotes.
pub(crate) fn string_body(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    // Eight bytes at a time while nothing needs a look: most text is plain ASCII.
    let mut i = 0;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        if may_escape(u64::from_le_bytes(word)) {
            break;
        }
        i += 8;
    }
    let mut start = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        match ESCAPES[usize::from(byte)] {
            RAW => i += 1,
            LINE_SEPARATOR_LEAD => {
                // U+2028 is E2 80 A8, U+2029 is E2 80 A9.
                match (bytes.get(i + 1), bytes.get(i + 2)) {
                    (Some(&0x80), Some(&last)) if last == 0xa8 || last == 0xa9 => {
                        out.extend_from_slice(&bytes[start..i]);
                        out.extend_from_slice(if last == 0xa8 { b"\\u2028" } else { b"\\u2029" });
                        i += 3;
                        start = i;
                    }
                    _ => i += 1,
                }
            }
            C1_LEAD => {
                // U+0080–U+009F are C2 80 – C2 9F.
                match bytes.get(i + 1) {
                    Some(&second) if second <= 0x9f => {
                        out.extend_from_slice(&bytes[start..i]);
                        out.extend_from_slice(b"\\u00");
                        out.push(HEX[usize::from(second >> 4)]);
                        out.push(HEX[usize::from(second & 0xf)]);
                        i += 2;
                        start = i;
                    }
                    _ => i += 1,
                }
            }
            escape => {
                out.extend_from_slice(&bytes[start..i]);
                if escape == UNICODE {
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[usize::from(byte >> 4)]);
                    out.push(HEX[usize::from(byte & 0xf)]);
                } else {
                    out.push(b'\\');
                    out.push(escape);
                }
                i += 1;
                start = i;
            }
        }
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Appends `text` as a JSON string.
pub(crate) fn string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    string_body(out, text);
    out.push(b'"');
}

/// Appends what `value` displays (`{}` or `{:?}`) as a JSON string. A formatting
/// implementation that fails leaves what it wrote so far.
pub(crate) fn display(out: &mut Vec<u8>, value: fmt::Arguments<'_>) {
    out.push(b'"');
    if let Some(text) = value.as_str() {
        string_body(out, text);
    } else {
        let _ = fmt::write(&mut Escaped(out), value);
    }
    out.push(b'"');
}

/// A [`fmt::Write`] that escapes what it is given into a JSON string body.
pub(crate) struct Escaped<'a>(pub(crate) &'a mut Vec<u8>);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        string_body(self.0, text);
        Ok(())
    }
}

/// Appends an integer.
pub(crate) fn integer(out: &mut Vec<u8>, value: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Appends a float as `serde_json` writes it: the shortest text that reads back the
/// same, and `null` for NaN and the infinities (JSON has no such numbers).
pub(crate) fn float(out: &mut Vec<u8>, value: f64) {
    if value.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format_finite(value).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(text: &str) -> String {
        let mut out = Vec::new();
        string(&mut out, text);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_string_reads_back_the_same() {
        let hostile = [
            "",
            "plain",
            "quote \" backslash \\ slash /",
            "line\nbreak\r\n\ttab \u{8}\u{c}",
            "\u{0}\u{1}\u{1f}\u{7f}",
            "line separator \u{2028} paragraph \u{2029} end",
            "C1 \u{80} next line \u{85} \u{9f} not C1 \u{a0}\u{bf}",
            "lookalikes \u{2027}\u{202a}\u{20ac} é ü 漢字 🦀",
            "\u{e2}\u{80}",
            "{\"level\":\"ERROR\"}\n{\"x\":1}",
        ];
        for text in hostile {
            let json = escaped(text);
            assert!(!json.contains('\n') && !json.contains('\r'), "{json}");
            for separator in ['\u{2028}', '\u{2029}', '\u{85}'] {
                assert!(!json.contains(separator), "{json}");
            }
            let back: String = serde_json::from_str(&json)
                .unwrap_or_else(|e| panic!("not a JSON string ({e}): {json}"));
            assert_eq!(back, text);
        }
    }

    #[test]
    fn escapes_as_serde_json_does_except_the_line_separators() {
        for text in ["a\"b\\c\n\u{1}\u{1f}", "\u{7f}é\u{a0}", "x\u{2028}y\u{85}"] {
            let ours = escaped(text);
            let theirs = serde_json::to_string(text)
                .unwrap()
                .replace('\u{2028}', "\\u2028")
                .replace('\u{85}', "\\u0085");
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn every_byte_position_of_every_special_byte_is_seen() {
        // The fast path reads 8 bytes at once: a special byte in any lane must stop it.
        for special in [
            "\"", "\\", "\n", "\u{0}", "\u{1f}", "\u{2028}", "\u{85}", "é",
        ] {
            for at in 0..20 {
                let text = format!("{}{special}{}", "a".repeat(at), "b".repeat(20 - at));
                let back: String = serde_json::from_str(&escaped(&text)).unwrap();
                assert_eq!(back, text);
                let plain = !matches!(special, "é");
                assert_eq!(escaped(&text).len() > text.len() + 2, plain, "{text:?}");
            }
        }
        for byte in 0x20u8..0x7f {
            let text = format!("abcdefgh{}ijklmnop", char::from(byte));
            let expected = serde_json::to_string(&text).unwrap();
            assert_eq!(escaped(&text), expected);
        }
    }

    #[test]
    fn formatted_values_are_escaped_too() {
        let mut out = Vec::new();
        display(&mut out, format_args!("{:?}", "a\nb"));
        assert_eq!(std::str::from_utf8(&out).unwrap(), r#""\"a\\nb\"""#);
    }

    #[test]
    fn numbers_as_serde_json_writes_them() {
        for value in [0.0, 0.5, 39.25, 0.001, 1e21, -3.5e-7, f64::MAX, 1e-300] {
            let mut out = Vec::new();
            float(&mut out, value);
            assert_eq!(out, serde_json::to_vec(&value).unwrap());
        }
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut out = Vec::new();
            float(&mut out, value);
            assert_eq!(out, b"null");
        }
        let mut out = Vec::new();
        integer(&mut out, i64::MIN);
        out.push(b' ');
        integer(&mut out, u64::MAX);
        assert_eq!(out, b"-9223372036854775808 18446744073709551615");
    }
}
