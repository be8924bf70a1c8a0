//! `promtool check metrics`, Prometheus's own linter of an exposition.

use std::io::Write;
use std::process::{Command, Stdio};

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

#[cfg(test)]
mod tests {
    use super::promtool_check;

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
