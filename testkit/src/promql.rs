//! Which metrics a PromQL expression reads, and which a rules file records: for
//! checking queries (dashboards, rules) against what the services export.
//!
//! [`metric_names`] is a lexer, not a parser: it finds the vector selectors' names and
//! leaves the grammar to `promtool` (see [`promtool_parse`](crate::promtool_parse)).
//! It knows PromQL's keywords, aggregation operators and functions (any identifier
//! followed by `(`), skips string literals, label matchers, label lists (`by (…)`,
//! `on (…)`, …), durations, numbers and comments, and reads `{__name__="…"}`.
//!
//! ```
//! use secureconnect_testkit::promql::metric_names;
//!
//! let names = metric_names(
//!     r#"sum by (job) (rate(http_requests_total{code=~"5.."}[5m]))
//!        / on (job) group_left sum by (job) (rate(http_requests_total[5m]))"#,
//! )
//! .unwrap();
//! assert_eq!(names.into_iter().collect::<Vec<_>>(), ["http_requests_total"]);
//! ```

use std::collections::BTreeSet;

/// Aggregation operators: `sum by (job) (…)` puts something other than `(` after them.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Keywords (compared in lower case) that are never metric names.
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "offset", "bool", "atan2", "inf", "nan",
];

/// Keywords followed by a parenthesized list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names `expr` selects, sorted.
///
/// # Errors
///
/// On an unterminated string, brace, bracket or parenthesis, or a `$` (a template
/// variable nobody substituted), saying where.
pub fn metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
    let b = expr.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' | b'\'' | b'`' => i = skip_string(b, i)?,
            b'$' => return Err(format!("an unsubstituted variable at byte {i}: {expr}")),
            _ => i += 1,
        }
    }
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' | b'\'' | b'`' => i = skip_string(b, i)?,
            b'#' => {
                i = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |n| i + n)
            }
            b'{' => i = matchers(expr, i, &mut names)?,
            b'[' => i = closing(b, i, b'[', b']')?,
            c if c.is_ascii_digit()
                || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) =>
            {
                // 0.5, 1e3, 0x1f, 5m, 1h30m: one token.
                i += 1;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
            }
            c if is_name_start(c) => {
                let start = i;
                while i < b.len() && is_name_char(b[i]) {
                    i += 1;
                }
                let word = &expr[start..i];
                let lower = word.to_ascii_lowercase();
                let next = next_non_space(b, i);
                if LABEL_LISTS.contains(&lower.as_str()) {
                    if next.is_some_and(|n| b[n] == b'(') {
                        i = closing(b, next.unwrap_or(i), b'(', b')')?;
                    }
                } else if AGGREGATIONS.contains(&word)
                    || KEYWORDS.contains(&lower.as_str())
                    || next.is_some_and(|n| b[n] == b'(')
                {
                    // An operator, a keyword or a function call.
                } else {
                    names.insert(word.to_owned());
                }
            }
            _ => i += 1,
        }
    }
    Ok(names)
}

/// The names recorded by the recording rules of a Prometheus rules file (its
/// `record:` fields), in order.
pub fn recorded_metrics(rules_file: &str) -> Vec<String> {
    rules_file
        .lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let line = line.strip_prefix("- ").unwrap_or(line).trim_start();
            let name = line.strip_prefix("record:")?.trim();
            Some(name.trim_matches(|c| c == '"' || c == '\'').to_owned())
        })
        .filter(|name| !name.is_empty())
        .collect()
}

fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

fn next_non_space(b: &[u8], mut i: usize) -> Option<usize> {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    (i < b.len()).then_some(i)
}

/// The index after the string literal starting at `start` (its quote).
fn skip_string(b: &[u8], start: usize) -> Result<usize, String> {
    let quote = b[start];
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' if quote != b'`' => i += 2,
            c if c == quote => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err(format!("a string opened at byte {start} is not closed"))
}

/// The index after the bracket that closes the one at `start`, skipping strings.
fn closing(b: &[u8], start: usize, open: u8, close: u8) -> Result<usize, String> {
    let mut depth = 0usize;
    let mut i = start;
    while i < b.len() {
        match b[i] {
            b'"' | b'\'' | b'`' => {
                i = skip_string(b, i)?;
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    Err(format!(
        "'{}' at byte {start} is not closed",
        char::from(open)
    ))
}

/// Reads the label matchers `{…}` at `start`; a name given as `__name__="x"` (or, as
/// Prometheus 3 allows, as a bare string) goes to `names`. Returns the index after `}`.
fn matchers(expr: &str, start: usize, names: &mut BTreeSet<String>) -> Result<usize, String> {
    let b = expr.as_bytes();
    let mut i = start + 1;
    loop {
        i = next_non_space(b, i).ok_or_else(|| format!("'{{' at byte {start} is not closed"))?;
        match b[i] {
            b'}' => return Ok(i + 1),
            b',' => i += 1,
            b'"' | b'\'' | b'`' => {
                // A string before any operator is a metric name ({"name"}) or a quoted
                // label name ({"label"="v"}).
                let end = skip_string(b, i)?;
                let after = next_non_space(b, end).map(|n| b[n]);
                if matches!(after, Some(b',' | b'}')) {
                    names.insert(unquote(&expr[i..end]));
                }
                i = end;
            }
            c if is_name_start(c) => {
                let label_start = i;
                while i < b.len() && is_name_char(b[i]) {
                    i += 1;
                }
                let label = &expr[label_start..i];
                let op =
                    next_non_space(b, i).ok_or_else(|| format!("matcher {label} has no value"))?;
                let mut j = op;
                while j < b.len() && matches!(b[j], b'=' | b'!' | b'~') {
                    j += 1;
                }
                let operator = &expr[op..j];
                let value =
                    next_non_space(b, j).ok_or_else(|| format!("matcher {label} has no value"))?;
                if !matches!(b[value], b'"' | b'\'' | b'`') {
                    return Err(format!("matcher {label}{operator} has no quoted value"));
                }
                let end = skip_string(b, value)?;
                if label == "__name__" && operator == "=" {
                    names.insert(unquote(&expr[value..end]));
                }
                i = end;
            }
            other => {
                return Err(format!(
                    "unexpected '{}' in the label matchers at byte {i}",
                    char::from(other)
                ))
            }
        }
    }
}

/// The text of a string literal, quotes removed (PromQL names need no unescaping).
fn unquote(literal: &str) -> String {
    literal[1..literal.len() - 1].to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn names(expr: &str) -> Vec<String> {
        metric_names(expr).unwrap().into_iter().collect()
    }

    #[test]
    fn selectors_functions_and_aggregations() {
        assert_eq!(names("up"), ["up"]);
        assert_eq!(names("up{job=\"a\"} == 0"), ["up"]);
        assert_eq!(
            names("histogram_quantile(0.99, sum by (job, le) (rate(d_seconds_bucket{job=~\"$\"}[5m])))".replace('$', "x").as_str()),
            ["d_seconds_bucket"]
        );
        assert_eq!(
            names("sum(rate(a_total[1m])) without (instance) / count(b) by (job)"),
            ["a_total", "b"]
        );
        assert_eq!(names("topk(5, c) or vector(0)"), ["c"]);
        assert_eq!(
            names("count_values(\"version\", build_info)"),
            ["build_info"]
        );
    }

    #[test]
    fn label_lists_and_matching_are_not_metrics() {
        assert_eq!(
            names("a * on (job, instance) group_left (version) b unless ignoring (le) c"),
            ["a", "b", "c"]
        );
        assert_eq!(names("sum by (job) (x) > bool 3"), ["x"]);
        assert_eq!(names("sum BY (job) (x)"), ["x"], "keywords in any case");
    }

    #[test]
    fn strings_labels_durations_numbers_and_comments_are_skipped() {
        assert_eq!(
            names(r#"label_replace(up, "dst", "$1", "src", "(not_a_metric)")"#),
            ["up"]
        );
        assert_eq!(
            names(r#"m{path="{x}", other!~'y,z', q=`a"b`}"#),
            ["m"],
            "braces and quotes inside label values"
        );
        assert_eq!(
            names("rate(m[5m:30s] offset 1h30m) * 1e3 + 0x1F - .5 + Inf + NaN"),
            ["m"]
        );
        assert_eq!(names("# a comment naming nothing\nm @ start()"), ["m"]);
        assert_eq!(
            names("job:slo_errors:ratio_rate5m > (14.4 * 0.001)"),
            ["job:slo_errors:ratio_rate5m"]
        );
    }

    #[test]
    fn names_given_as_matchers() {
        assert_eq!(
            names(r#"{__name__="hidden_total", job="a"}"#),
            ["hidden_total"]
        );
        assert_eq!(
            names(r#"{__name__=~"any.*"}"#),
            Vec::<String>::new(),
            "a regex names nothing"
        );
        assert_eq!(names(r#"{"quoted.name", job="a"}"#), ["quoted.name"]);
    }

    #[test]
    fn broken_input_is_an_error_saying_where() {
        for (expr, says) in [
            ("m{job=\"a}", "not closed"),
            ("rate(m[5m)", "not closed"),
            ("m{job=a}", "no quoted value"),
            ("rate(m[$__rate_interval])", "unsubstituted variable"),
        ] {
            let e = metric_names(expr).unwrap_err();
            assert!(e.contains(says), "{expr}: {e}");
        }
    }

    #[test]
    fn recorded_metrics_of_a_rules_file() {
        let file = "groups:\n  - name: g\n    rules:\n      - record: job:a:rate5m\n        expr: sum(a)\n      - alert: A\n        expr: b\n      - expr: c\n        record: 'job:c:sum'\n";
        assert_eq!(recorded_metrics(file), ["job:a:rate5m", "job:c:sum"]);
    }
}
