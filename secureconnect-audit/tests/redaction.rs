//! Property tests: a secret never survives into an event, whatever the spacing, the
//! quoting, the letter case or the text around it.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use secureconnect_audit::{AuditEvent, Outcome};

const NAMES: &[&str] = &[
    "access_token",
    "token",
    "password",
    "passwd",
    "secret",
    "client_secret",
    "api_key",
    "signature",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "session",
    "jwt",
];

/// The text of the event's reason after cleaning.
fn cleaned(text: &str) -> (String, bool) {
    let event = AuditEvent::builder("test", Outcome::Denied)
        .reason("code", text)
        .build();
    (
        event.reason().unwrap().text.to_string(),
        event.has_flag("redacted"),
    )
}

/// A secret: a marker no surrounding text contains, then token characters.
fn secret() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.~+/-]{1,40}".prop_map(|tail| format!("Q7Z{tail}"))
}

fn any_case(word: &'static str) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<bool>(), word.len()).prop_map(move |upper| {
        word.chars()
            .zip(upper)
            .map(|(c, up)| {
                if up {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect()
    })
}

/// Whitespace as it appears in text, literal or escaped.
fn spaces(min: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just(" "),
            Just("\t"),
            Just("\n"),
            Just("\r"),
            Just("\x0b"),
            Just("\x0c"),
            Just("\\t")
        ],
        min..4,
    )
    .prop_map(|parts| parts.concat())
}

fn quote() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just(""), Just("\""), Just("'"), Just("\\\"")]
}

/// Text before a secret: anything, then a character that cannot belong to a name.
fn before() -> impl Strategy<Value = String> {
    (
        "[a-z0-9 ,;{}?&=:]{0,20}",
        prop_oneof![
            Just(" "),
            Just("{"),
            Just(","),
            Just("&"),
            Just("?"),
            Just("(")
        ],
    )
        .prop_map(|(text, end)| text + end)
}

/// Text after a secret: a delimiter, then anything.
fn after() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just(" "), Just("&"), Just(","), Just(";"), Just("}")],
        "[a-z0-9 ,;{}=:]{0,20}",
    )
        .prop_map(|(start, text)| start.to_owned() + &text)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parameters_are_redacted_however_spaced_and_quoted(
        name in proptest::sample::select(NAMES).prop_flat_map(any_case),
        secret in secret(),
        name_quote in quote(),
        value_quote in quote(),
        separator in prop_oneof![Just("="), Just(":")],
        (space_before, space_after) in (spaces(0), spaces(0)),
        (prefix, suffix) in (before(), after()),
    ) {
        let text = format!(
            "{prefix}{name_quote}{name}{name_quote}{space_before}{separator}{space_after}{value_quote}{secret}{value_quote}{suffix}"
        );
        let (out, flagged) = cleaned(&text);
        prop_assert!(!out.contains(&secret), "{text:?} -> {out:?}");
        prop_assert!(flagged);
    }

    #[test]
    fn credentials_are_redacted_after_any_whitespace(
        scheme in prop_oneof![any_case("bearer"), any_case("basic")],
        secret in secret(),
        space in spaces(1),
        (prefix, suffix) in (before(), after()),
    ) {
        let text = format!("{prefix}{scheme}{space}{secret}{suffix}");
        let (out, flagged) = cleaned(&text);
        prop_assert!(!out.contains(&secret), "{text:?} -> {out:?}");
        prop_assert!(flagged);
    }

    #[test]
    fn any_text_is_cleaned_without_panicking(text in any::<String>()) {
        let (out, _) = cleaned(&text);
        prop_assert!(out.len() <= 4096);
    }
}
