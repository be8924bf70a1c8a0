//! A parser of the Prometheus text exposition format (0.0.4) and of OpenMetrics text,
//! for tests: every sample with its name, labels, value and timestamp.
//!
//! Comments (`# HELP`, `# TYPE`, `# UNIT`, any other `#` line) and blank lines are
//! skipped; OpenMetrics' `# EOF` ends the exposition; an exemplar (`… # {…} v`) is
//! dropped. Label values are unescaped (`\\`, `\"`, `\n`). Values and timestamps accept
//! `+Inf`, `-Inf` and `NaN`. Names must be classic (`[a-zA-Z_:][a-zA-Z0-9_:]*`).

use std::collections::BTreeMap;
use std::fmt;

/// One sample of an exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The sample's name, suffix included (`…_bucket`, `…_count`, `…_total`).
    pub name: String,
    /// Its labels, values unescaped.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
    /// Its timestamp as written (milliseconds in the Prometheus text format, seconds in
    /// OpenMetrics), if any.
    pub timestamp: Option<f64>,
}

/// A line that is not a valid sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// The line itself.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {:?}", self.line, self.reason, self.text)
    }
}

impl std::error::Error for ParseError {}

/// Parses an exposition into its samples, in order.
///
/// # Panics
///
/// On a malformed sample line, naming the line and printing the exposition.
pub fn parse(text: &str) -> Vec<Sample> {
    try_parse(text).unwrap_or_else(|e| panic!("bad exposition: {e}\n--- exposition ---\n{text}"))
}

/// Parses an exposition into its samples, in order, or says which line is malformed.
///
/// # Errors
///
/// The first sample line that cannot be parsed.
pub fn try_parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut samples = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if comment.trim() == "EOF" {
                break;
            }
            continue;
        }
        let sample = sample_line(line).map_err(|reason| ParseError {
            line: index + 1,
            text: line.to_owned(),
            reason,
        })?;
        samples.push(sample);
    }
    Ok(samples)
}

/// The value of the first sample named `name` whose labels include all of `labels`
/// (other labels may be present), if any.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .filter(|s| s.name == name)
        .find(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// [`value`] on the samples of `text`, parsed.
///
/// # Panics
///
/// If `text` is not a valid exposition.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    value(&parse(text), name, labels)
}

/// How many samples named `name` (series, for one scrape) `text` holds.
///
/// # Panics
///
/// If `text` is not a valid exposition.
pub fn series_count(text: &str, name: &str) -> usize {
    parse(text).iter().filter(|s| s.name == name).count()
}

fn sample_line(line: &str) -> Result<Sample, String> {
    let end = line
        .find(['{', ' ', '\t'])
        .ok_or_else(|| "no value".to_owned())?;
    let name = &line[..end];
    if !valid_name(name) {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut rest = &line[end..];
    let mut labels = BTreeMap::new();
    if let Some(inside) = rest.strip_prefix('{') {
        rest = parse_labels(inside, &mut labels)?;
    }
    if !rest.starts_with([' ', '\t']) {
        return Err("no space before the value".to_owned());
    }
    // An OpenMetrics exemplar follows " # "; the labels, which could hold a '#', are
    // already consumed.
    let rest = rest.find(" # ").map_or(rest, |i| &rest[..i]);
    let mut fields = rest.split_whitespace();
    let value = number(fields.next().ok_or_else(|| "no value".to_owned())?)?;
    let timestamp = fields.next().map(number).transpose()?;
    if let Some(extra) = fields.next() {
        return Err(format!("unexpected {extra:?} after the timestamp"));
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
        timestamp,
    })
}

/// Parses `k="v",…}` (after the opening brace) into `labels`; returns what follows `}`.
fn parse_labels<'a>(
    mut rest: &'a str,
    labels: &mut BTreeMap<String, String>,
) -> Result<&'a str, String> {
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let eq = rest
            .find('=')
            .ok_or_else(|| "a label without '='".to_owned())?;
        let key = rest[..eq].trim();
        if !valid_name(key) || key.contains(':') {
            return Err(format!("invalid label name {key:?}"));
        }
        rest = rest[eq + 1..]
            .trim_start()
            .strip_prefix('"')
            .ok_or_else(|| format!("label {key} has no quoted value"))?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let close = loop {
            match chars.next() {
                None => return Err(format!("label {key}'s value is not closed")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => {
                        return Err(format!(
                            "label {key}: invalid escape {:?}",
                            other.map(|(_, c)| c)
                        ))
                    }
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(key.to_owned(), value).is_some() {
            return Err(format!("label {key} appears twice"));
        }
        rest = rest[close + 1..].trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err(format!("expected ',' or '}}' after label {key}"));
        }
    }
}

/// A Go-style float: decimal, exponent, `+Inf`/`-Inf`/`NaN` (any case).
fn number(text: &str) -> Result<f64, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a number"))
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn names_labels_values_and_comments() {
        let text = "\
# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{method=\"GET\",route=\"/a\"} 3
http_requests_total{method=\"POST\",route=\"/a\",} 1.5e3

# a free comment
up 1
";
        let samples = parse(text);
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].name, "http_requests_total");
        assert_eq!(
            samples[0].labels,
            labels(&[("method", "GET"), ("route", "/a")])
        );
        assert_eq!(samples[0].value, 3.0);
        assert_eq!(samples[0].timestamp, None);
        assert_eq!(samples[1].value, 1500.0);
        assert_eq!(samples[2].name, "up");
        assert!(samples[2].labels.is_empty());
        assert_eq!(value(&samples, "http_requests_total", &[]), Some(3.0));
        assert_eq!(
            value(&samples, "http_requests_total", &[("method", "POST")]),
            Some(1500.0)
        );
        assert_eq!(
            value(&samples, "http_requests_total", &[("method", "PUT")]),
            None
        );
        assert_eq!(value(&samples, "http_requests", &[]), None, "exact names");
        assert_eq!(series_count(text, "http_requests_total"), 2);
        assert_eq!(series_count(text, "up"), 1);
        assert_eq!(series_count(text, "down"), 0);
        assert_eq!(sample(text, "up", &[]), Some(1.0));
    }

    #[test]
    fn escaped_label_values_are_unescaped() {
        let text = r#"m{path="C:\\dir",quote="say \"hi\"",nl="a\nb",brace="}{#,= "} 1"#;
        let s = &parse(text)[0];
        assert_eq!(s.labels["path"], r"C:\dir");
        assert_eq!(s.labels["quote"], r#"say "hi""#);
        assert_eq!(s.labels["nl"], "a\nb");
        assert_eq!(s.labels["brace"], "}{#,= ");
        assert_eq!(s.value, 1.0);
    }

    #[test]
    fn infinities_and_nan() {
        let text = "\
h_bucket{le=\"0.5\"} 2
h_bucket{le=\"+Inf\"} 4
g 0
g{x=\"1\"} -Inf
g{x=\"2\"} +Inf
g{x=\"3\"} NaN
";
        let s = parse(text);
        assert_eq!(value(&s, "h_bucket", &[("le", "+Inf")]), Some(4.0));
        assert_eq!(value(&s, "g", &[("x", "1")]), Some(f64::NEG_INFINITY));
        assert_eq!(value(&s, "g", &[("x", "2")]), Some(f64::INFINITY));
        assert!(value(&s, "g", &[("x", "3")]).is_some_and(f64::is_nan));
    }

    #[test]
    fn timestamps() {
        let s = parse("a 1 1700000000000\nb{x=\"y\"}\t2\t1700000000.5\nc 3\n");
        assert_eq!(s[0].timestamp, Some(1_700_000_000_000.0));
        assert_eq!(s[1].value, 2.0);
        assert_eq!(s[1].timestamp, Some(1_700_000_000.5));
        assert_eq!(s[2].timestamp, None);
    }

    #[test]
    fn openmetrics_with_exemplars_and_eof() {
        let text = "\
# TYPE d_seconds histogram
# UNIT d_seconds seconds
d_seconds_bucket{le=\"0.1\"} 3 # {trace_id=\"4bf92f35\"} 0.05 1700000000.1
d_seconds_bucket{le=\"+Inf\"} 5
d_seconds_count 5
d_seconds_sum 0.75
# EOF
after_eof 1
";
        let s = parse(text);
        assert_eq!(s.len(), 4, "nothing after # EOF: {s:?}");
        assert_eq!(s[0].value, 3.0);
        assert_eq!(
            s[0].timestamp, None,
            "the exemplar's timestamp is not the sample's"
        );
        assert_eq!(value(&s, "d_seconds_count", &[]), Some(5.0));
        assert_eq!(series_count(text, "after_eof"), 0);
    }

    #[test]
    fn crlf_line_ends() {
        assert_eq!(parse("# TYPE a gauge\r\na 1\r\n")[0].value, 1.0);
    }

    #[test]
    fn malformed_lines_are_errors_with_their_number() {
        for (text, reason) in [
            ("ok 1\nbad", "no value"),
            ("ok 1\n9lives 1", "invalid metric name"),
            ("ok 1\nm{a=\"1\" 2", "expected ','"),
            ("ok 1\nm{a=\"1} 2", "not closed"),
            ("ok 1\nm{a=1} 2", "no quoted value"),
            ("ok 1\nm{a=\"\\t\"} 2", "invalid escape"),
            ("ok 1\nm{a=\"1\",a=\"2\"} 2", "twice"),
            ("ok 1\nm one", "not a number"),
            ("ok 1\nm 1 2 3", "after the timestamp"),
            ("ok 1\nm{a=\"1\"}2", "no space"),
        ] {
            let e = try_parse(text).unwrap_err();
            assert_eq!(e.line, 2, "{text}");
            assert!(e.reason.contains(reason), "{text}: {e}");
        }
    }

    #[test]
    #[should_panic(expected = "bad exposition: line 1")]
    fn parse_panics_on_a_malformed_line() {
        parse("m{");
    }
}
