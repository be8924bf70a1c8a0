//! The `timestamp` of a line: RFC 3339 in UTC, formatted as the `time` crate formats
//! it (`2026-11-26T14:08:37.123456789Z`, trailing zeros of the fraction left out), with
//! the date and time of day formatted once per second and thread.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

/// `YYYY-MM-DDTHH:MM:SS`.
const PREFIX_LEN: usize = 19;

thread_local! {
    /// The last second formatted on this thread, and its text.
    static LAST_SECOND: Cell<(u64, [u8; PREFIX_LEN])> = const { Cell::new((u64::MAX, [0; PREFIX_LEN])) };
}

/// Appends the current time as a JSON string.
pub(crate) fn now(out: &mut Vec<u8>) {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    write(out, since_epoch.as_secs(), since_epoch.subsec_nanos());
}

/// Appends `seconds` and `nanos` since the Unix epoch as a JSON string.
pub(crate) fn write(out: &mut Vec<u8>, seconds: u64, nanos: u32) {
    let (cached, mut prefix) = LAST_SECOND.get();
    if cached != seconds {
        prefix = format_second(seconds);
        LAST_SECOND.set((seconds, prefix));
    }
    out.push(b'"');
    out.extend_from_slice(&prefix);
    if nanos != 0 {
        let mut digits = [b'0'; 9];
        let mut rest = nanos;
        for digit in digits.iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        let len = 9 - digits.iter().rev().take_while(|&&d| d == b'0').count();
        out.push(b'.');
        out.extend_from_slice(&digits[..len]);
    }
    out.extend_from_slice(b"Z\"");
}

/// `seconds` since the Unix epoch as `YYYY-MM-DDTHH:MM:SS` (UTC).
fn format_second(seconds: u64) -> [u8; PREFIX_LEN] {
    let datetime = i64::try_from(seconds)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut text = [0; PREFIX_LEN];
    let year = datetime.year().clamp(0, 9999) as u32;
    let fields = [
        (0, 4, year),
        (5, 2, u32::from(u8::from(datetime.month()))),
        (8, 2, u32::from(datetime.day())),
        (11, 2, u32::from(datetime.hour())),
        (14, 2, u32::from(datetime.minute())),
        (17, 2, u32::from(datetime.second())),
    ];
    for (at, width, mut value) in fields {
        for digit in text[at..at + width].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    for (at, separator) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')] {
        text[at] = separator;
    }
    text
}

#[cfg(test)]
mod tests {
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    use super::*;

    #[test]
    fn formats_as_the_time_crate_does() {
        let seconds = [
            0,
            1,
            59,
            951_782_400,
            1_709_164_800,
            1_795_795_717,
            4_102_444_799,
        ];
        let nanos = [0, 1, 10, 123_456_000, 123_456_789, 500_000_000, 999_999_999];
        for &s in &seconds {
            for &n in &nanos {
                let mut out = Vec::new();
                write(&mut out, s, n);
                let expected = OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(s) * 1_000_000_000 + i128::from(n),
                )
                .unwrap()
                .format(&Rfc3339)
                .unwrap();
                assert_eq!(
                    std::str::from_utf8(&out).unwrap(),
                    format!("\"{expected}\"")
                );
            }
        }
    }

    #[test]
    fn the_cached_second_follows_the_clock() {
        let mut out = Vec::new();
        write(&mut out, 86_399, 0);
        write(&mut out, 86_400, 0);
        write(&mut out, 86_400, 5);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "\"1970-01-01T23:59:59Z\"\"1970-01-02T00:00:00Z\"\"1970-01-02T00:00:00.000000005Z\""
        );
    }
}
