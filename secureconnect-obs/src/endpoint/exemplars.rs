//! Exemplars in the OpenMetrics text: `prometheus-client` 0.26 can encode exemplars but
//! offers no way to make one outside its own locked metrics, so the duration family is
//! encoded by it without them, and [`splice`] appends each bucket's exemplar to its line
//! afterwards. The family is found by its help text; its bucket lines come in the order
//! the collector encoded them, and a count that does not match leaves the text as it is.

use std::fmt::Write;
use std::time::UNIX_EPOCH;

use crate::exemplar::{Exemplar, FamilyExemplars};
use crate::request_metrics::DURATION_HELP;

/// The name of the family whose `# HELP` line `line` is, if it is a duration family's.
fn duration_family(line: &str) -> Option<&str> {
    line.strip_prefix("# HELP ")?
        .trim_end_matches('\n')
        .strip_suffix(DURATION_HELP)?
        .strip_suffix(' ')
}

/// Walks `text`'s lines, calling `visit(line, Some((k, n)))` for the n-th bucket line
/// of the k-th duration family and `visit(line, None)` for every other line.
fn walk<'t>(text: &'t str, mut visit: impl FnMut(&'t str, Option<(usize, usize)>)) {
    // (family index, its bucket-line prefix, bucket lines seen)
    let mut current: Option<(usize, String, usize)> = None;
    let mut families = 0;
    for line in text.split_inclusive('\n') {
        if let Some(name) = duration_family(line) {
            current = Some((families, format!("{name}_bucket{{"), 0));
            families += 1;
        } else if line.starts_with("# HELP ") {
            current = None;
        } else if let Some((family, prefix, seen)) = &mut current {
            if line.starts_with(prefix.as_str()) {
                visit(line, Some((*family, *seen)));
                *seen += 1;
                continue;
            }
        }
        visit(line, None);
    }
}

/// Appends the exemplars of `families` (the duration families, in encoding order) to
/// their bucket lines in `text`, an OpenMetrics exposition. Leaves `text` unchanged
/// when its duration families do not have the bucket lines `families` describe.
pub(crate) fn splice(text: &mut String, families: &[FamilyExemplars]) {
    if families.iter().all(|f| f.exemplars.is_empty()) {
        return;
    }
    let mut counts = vec![0usize; families.len()];
    let mut unknown = false;
    walk(text, |_, bucket| {
        if let Some((family, _)) = bucket {
            match counts.get_mut(family) {
                Some(count) => *count += 1,
                None => unknown = true,
            }
        }
    });
    if unknown
        || counts
            .iter()
            .zip(families)
            .any(|(n, f)| *n != f.bucket_lines)
    {
        return;
    }
    let mut out = String::with_capacity(
        text.len() + 96 * families.iter().map(|f| f.exemplars.len()).sum::<usize>(),
    );
    let mut next = vec![0usize; families.len()];
    walk(text, |line, bucket| {
        let Some((family, n)) = bucket else {
            return out.push_str(line);
        };
        let (Some(exemplars), Some(i)) = (families.get(family), next.get_mut(family)) else {
            return out.push_str(line);
        };
        match exemplars.exemplars.get(*i) {
            Some((at, exemplar)) if *at == n => {
                *i += 1;
                out.push_str(line.trim_end_matches('\n'));
                append(&mut out, exemplar);
                out.push('\n');
            }
            _ => out.push_str(line),
        }
    });
    *text = out;
}

/// ` # {trace_id="…"} <value> <timestamp>`, as OpenMetrics writes an exemplar.
fn append(out: &mut String, exemplar: &Exemplar) {
    let time = exemplar
        .time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let _ = write!(
        out,
        " # {{trace_id=\"{:032x}\"}} {} {:.3}",
        exemplar.trace_id, exemplar.value, time
    );
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn exemplar(trace_id: u128, value: f64) -> Exemplar {
        Exemplar {
            trace_id,
            value,
            time: UNIX_EPOCH + Duration::from_millis(1_700_000_000_250),
        }
    }

    const TEXT: &str = "# HELP a_http_server_request_duration_seconds Duration of HTTP server requests, until the response body ended.
# TYPE a_http_server_request_duration_seconds histogram
# UNIT a_http_server_request_duration_seconds seconds
a_http_server_request_duration_seconds_sum{r=\"1\"} 0.3
a_http_server_request_duration_seconds_count{r=\"1\"} 2
a_http_server_request_duration_seconds_bucket{le=\"0.1\",r=\"1\"} 1
a_http_server_request_duration_seconds_bucket{le=\"+Inf\",r=\"1\"} 2
# HELP other_bucket_total Something else.
# TYPE other_bucket_total counter
other_bucket_total 1
# EOF
";

    #[test]
    fn exemplars_go_at_the_end_of_their_bucket_lines_only() {
        let mut text = TEXT.to_owned();
        let families = [FamilyExemplars {
            bucket_lines: 2,
            exemplars: vec![(1, exemplar(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736, 0.25))],
        }];
        splice(&mut text, &families);
        let expected = TEXT.replace(
            "le=\"+Inf\",r=\"1\"} 2\n",
            "le=\"+Inf\",r=\"1\"} 2 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.25 1700000000.250\n",
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn a_count_that_does_not_match_leaves_the_text_alone() {
        for bucket_lines in [1, 3] {
            let mut text = TEXT.to_owned();
            let families = [FamilyExemplars {
                bucket_lines,
                exemplars: vec![(0, exemplar(1, 0.05))],
            }];
            splice(&mut text, &families);
            assert_eq!(text, TEXT);
        }
        // More families in the text than were collected.
        let mut text = TEXT.to_owned();
        splice(&mut text, &[]);
        assert_eq!(text, TEXT);
        let _ = SystemTime::now();
    }
}
