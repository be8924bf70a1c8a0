//! The official Python `prometheus_client` parsers, run in a `python3` child: an
//! implementation of the formats independent of ours and of [`crate::exposition`], to
//! check an exposition against.
//!
//! The samples come back as [`Sample`]s without timestamps.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use crate::exposition::Sample;

/// Parses a Prometheus text (0.0.4) exposition with `prometheus_client.parser`.
///
/// # Panics
///
/// If `python3` or the package is missing (the test command installs it), or the
/// parser refuses the exposition.
pub fn parse(text: &str) -> Vec<Sample> {
    samples(text, "prometheus_client.parser", "text")
}

/// Parses an OpenMetrics text exposition with `prometheus_client.openmetrics.parser`,
/// which also insists on `# EOF` and OpenMetrics' naming rules.
///
/// # Panics
///
/// If `python3` or the package is missing (the test command installs it), or the
/// parser refuses the exposition.
pub fn parse_openmetrics(text: &str) -> Vec<Sample> {
    samples(text, "prometheus_client.openmetrics.parser", "openmetrics")
}

/// An exemplar as the OpenMetrics parser read it, with its sample's name and labels.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedExemplar {
    /// The sample's name (`…_bucket`).
    pub name: String,
    /// The sample's labels (`le` included).
    pub labels: BTreeMap<String, String>,
    /// The exemplar's labels (`trace_id`).
    pub exemplar_labels: BTreeMap<String, String>,
    /// The exemplar's value.
    pub value: f64,
    /// The exemplar's timestamp, seconds since the epoch, if it has one.
    pub timestamp: Option<f64>,
}

/// The exemplars of an OpenMetrics text exposition, read by
/// `prometheus_client.openmetrics.parser`.
///
/// # Panics
///
/// As [`parse_openmetrics`].
pub fn openmetrics_exemplars(text: &str) -> Vec<ParsedExemplar> {
    let script = "import sys, json\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families as p\n\
        print(json.dumps([{'name': s.name, 'labels': s.labels, \
        'exemplar_labels': s.exemplar.labels, 'value': float(s.exemplar.value), \
        'timestamp': None if s.exemplar.timestamp is None else float(s.exemplar.timestamp)} \
        for f in p(sys.stdin.read()) for s in f.samples if s.exemplar]))";
    let json = run(script, text, "openmetrics");
    let labels = |v: &serde_json::Value| -> BTreeMap<String, String> {
        v.as_object()
            .expect("labels")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("a label value").to_owned()))
            .collect()
    };
    json.as_array()
        .expect("a JSON array of exemplars")
        .iter()
        .map(|e| ParsedExemplar {
            name: e["name"].as_str().expect("a sample name").to_owned(),
            labels: labels(&e["labels"]),
            exemplar_labels: labels(&e["exemplar_labels"]),
            value: e["value"].as_f64().expect("an exemplar value"),
            timestamp: e["timestamp"].as_f64(),
        })
        .collect()
}

fn samples(text: &str, module: &str, format: &str) -> Vec<Sample> {
    // Values as repr() strings: JSON has no NaN or infinities, Rust parses Python's
    // "nan" and "inf".
    let script = format!(
        "import sys, json\nfrom {module} import text_string_to_metric_families as p\n\
         print(json.dumps([{{'name': s.name, 'labels': s.labels, 'value': repr(float(s.value))}} \
         for f in p(sys.stdin.read()) for s in f.samples]))"
    );
    let json = run(&script, text, format);
    json.as_array()
        .expect("a JSON array of samples")
        .iter()
        .map(|s| Sample {
            name: s["name"].as_str().expect("a sample name").to_owned(),
            labels: s["labels"]
                .as_object()
                .expect("sample labels")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().expect("a label value").to_owned()))
                .collect::<BTreeMap<_, _>>(),
            value: s["value"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .expect("a sample value"),
            timestamp: None,
        })
        .collect()
}

/// Runs the Python `script` on `text` (its stdin) and reads what it prints as JSON.
fn run(script: &str, text: &str, format: &str) -> serde_json::Value {
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut stdin = child.stdin.take().expect("python3's stdin");
    let input = text.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("python3 finishes");
    writer
        .join()
        .expect("writer thread")
        .expect("write to python3");
    assert!(
        out.status.success(),
        "the Python prometheus_client {format} parser refused the exposition \
         (scripts/test installs the package):\n{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the parser's output as JSON")
}

#[cfg(test)]
mod tests {
    use crate::exposition::{self, value};

    const TEXT: &str = "\
# HELP d_seconds Duration.
# TYPE d_seconds histogram
d_seconds_bucket{route=\"/a \\\"b\\\"\",le=\"0.5\"} 1
d_seconds_bucket{route=\"/a \\\"b\\\"\",le=\"+Inf\"} 2
d_seconds_sum{route=\"/a \\\"b\\\"\"} 1.25
d_seconds_count{route=\"/a \\\"b\\\"\"} 2
# HELP g A gauge.
# TYPE g gauge
g NaN
";

    #[test]
    fn agrees_with_our_parser() {
        let ours = exposition::parse(TEXT);
        let theirs = super::parse(TEXT);
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(&theirs) {
            assert_eq!((&a.name, &a.labels), (&b.name, &b.labels));
            assert!(a.value == b.value || (a.value.is_nan() && b.value.is_nan()));
        }
        assert_eq!(
            value(
                &theirs,
                "d_seconds_bucket",
                &[("le", "+Inf"), ("route", "/a \"b\"")]
            ),
            Some(2.0)
        );
    }

    #[test]
    fn openmetrics() {
        let text = "# TYPE jobs counter\njobs_total 3\n# EOF\n";
        let s = super::parse_openmetrics(text);
        assert_eq!(value(&s, "jobs_total", &[]), Some(3.0));
    }

    #[test]
    fn openmetrics_exemplars() {
        let text =
            "# TYPE d histogram\nd_bucket{le=\"1.0\"} 1 # {trace_id=\"ab\"} 0.5 1700000000.25\n\
                    d_bucket{le=\"+Inf\"} 1\nd_count 1\nd_sum 0.5\n# EOF\n";
        let e = super::openmetrics_exemplars(text);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].exemplar_labels["trace_id"], "ab");
        assert_eq!(e[0].labels["le"], "1.0");
        assert_eq!((e[0].value, e[0].timestamp), (0.5, Some(1_700_000_000.25)));
    }

    #[test]
    #[should_panic(expected = "refused the exposition")]
    fn openmetrics_requires_eof() {
        super::parse_openmetrics("# TYPE jobs counter\njobs_total 3\n");
    }
}
