//! Prometheus's own tools on our texts: `promtool check metrics` lints an exposition,
//! and `promtool check rules` parses PromQL expressions.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs `promtool check metrics` on `text`; panics if promtool is missing (the test
/// command installs Debian's `prometheus` package) or prints anything, which it does
/// for every problem, lint warnings included.
///
/// # Panics
///
/// If promtool cannot be run, exits with a failure, or complains; the message holds
/// what promtool said and the exposition.
pub fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed (scripts/test installs Debian's prometheus package)");
    let mut stdin = child.stdin.take().expect("promtool's stdin");
    let input = text.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("promtool runs");
    writer
        .join()
        .expect("writer thread")
        .expect("write to promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics complained:\n{said}\n--- exposition ---\n{text}"
    );
}

/// Parses each expression with the real PromQL parser: they are written as recording
/// rules into a temporary rules file and checked with `promtool check rules`. Returns,
/// for each expression promtool refuses, its index and what promtool said.
///
/// # Errors
///
/// The expressions promtool refuses (each checked alone once the batch failed, so the
/// index is exact).
///
/// # Panics
///
/// If promtool cannot be run or the temporary file cannot be written.
pub fn promtool_parse(exprs: &[&str]) -> Result<(), Vec<(usize, String)>> {
    if check_rules(exprs).is_ok() {
        return Ok(());
    }
    let refused: Vec<(usize, String)> = exprs
        .iter()
        .enumerate()
        .filter_map(|(i, expr)| check_rules(&[expr]).err().map(|said| (i, said)))
        .collect();
    if refused.is_empty() {
        // Each parses alone but not together: report the batch.
        Err(vec![(0, check_rules(exprs).err().unwrap_or_default())])
    } else {
        Err(refused)
    }
}

/// `promtool check rules` on a file holding `exprs` as recording rules.
fn check_rules(exprs: &[&str]) -> Result<(), String> {
    static FILES: AtomicUsize = AtomicUsize::new(0);
    let mut file = String::from("groups:\n  - name: parse\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        // A JSON string is a YAML double-quoted scalar, escapes included.
        let quoted = serde_json::to_string(expr).expect("a string serializes");
        file.push_str(&format!(
            "      - record: parsed_expression_{i}\n        expr: {quoted}\n"
        ));
    }
    let path = std::env::temp_dir().join(format!(
        "sc-promtool-{}-{}.yml",
        std::process::id(),
        FILES.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, &file).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .expect("promtool must be installed (scripts/test installs Debian's prometheus package)");
    let _ = std::fs::remove_file(&path);
    if out.status.success() {
        Ok(())
    } else {
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // `<file>: 5:15: group "parse", rule 1, "parsed_expression_0": <what>`: keep <what>.
        let what: Vec<&str> = said
            .lines()
            .filter_map(|l| {
                l.split_once("\": ")
                    .filter(|(rule, _)| rule.contains("parsed_expression_"))
            })
            .map(|(_, what)| what)
            .collect();
        Err(if what.is_empty() {
            said.trim().to_owned()
        } else {
            what.join("; ")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{promtool_check, promtool_parse};

    #[test]
    fn promql_that_parses_passes() {
        assert_eq!(
            promtool_parse(&[
                "sum by (job) (rate(a_total[5m]))",
                "histogram_quantile(0.99, sum by (le) (rate(b_bucket{x=~\"a|b\"}[1m])))",
                "label_replace(up, \"dst\", \"$1\", \"src\", \"(.*)\")",
            ]),
            Ok(())
        );
    }

    #[test]
    fn the_expressions_promtool_refuses_are_named_by_index() {
        let refused = promtool_parse(&[
            "up",
            "sum by (job) (rate(a_total[5m])",
            "up",
            "rate(a_total)",
        ])
        .unwrap_err();
        let indices: Vec<usize> = refused.iter().map(|(i, _)| *i).collect();
        assert_eq!(indices, [1, 3], "{refused:?}");
        assert!(refused[1].1.contains("range vector"), "{refused:?}");
    }

    #[test]
    fn a_clean_exposition_passes() {
        promtool_check(
            "# HELP jobs_total Jobs done.\n# TYPE jobs_total counter\njobs_total{kind=\"a\"} 1\n",
        );
    }

    #[test]
    #[should_panic(expected = "promtool check metrics complained")]
    fn a_counter_without_total_is_refused() {
        promtool_check("# HELP jobs Jobs done.\n# TYPE jobs counter\njobs 1\n");
    }
}
