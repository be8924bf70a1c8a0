//! Helpers shared by the SecureConnect workspace's tests and benchmarks.
//!
//! **Internal**: this crate is not published (`publish = false`) and promises no
//! stability. Library crates take it as a path dev-dependency only; examples and
//! benches use it directly. Every helper is meant for tests: on a failure it panics
//! with a message that says what went wrong, rather than returning an error.
//!
//! - [`free_port`]: a free loopback TCP port.
//! - [`exposition`]: a Prometheus text (0.0.4) and OpenMetrics parser, with look-ups by
//!   name and labels.
//! - [`promtool_check`]: `promtool check metrics` on an exposition; [`promtool_parse`]:
//!   PromQL expressions through the real parser (`promtool check rules`).
//! - [`promql`]: the metric names a PromQL expression reads; the names a rules file
//!   records.
//! - [`grafana`]: Grafana dashboards read (every panel's queries, Grafana's variables
//!   substituted) and checked: each query parses and names only known metrics.
//! - [`python`]: the official Python `prometheus_client` parsers, an implementation
//!   independent of ours, returning the same [`exposition::Sample`]s.
//! - [`process`]: child processes killed on drop, signals (SIGSTOP that waits until the
//!   process has stopped), and waiting for a service to answer.
//! - [`postgres`]: a private PostgreSQL cluster on a free port ([`postgres::PgServer`]),
//!   stopped as `pg_ctl stop -m immediate` does and started again.
//! - [`tmpfs`]: a small tmpfs to run out of disk space for real (root; fails loudly
//!   when it cannot mount, unless `SC_SKIP_TMPFS_TESTS=1`).
//!
//! ```
//! use secureconnect_testkit::exposition::{parse, value};
//!
//! let text = "# TYPE requests_total counter\nrequests_total{route=\"/a\"} 3\n";
//! let samples = parse(text);
//! assert_eq!(value(&samples, "requests_total", &[("route", "/a")]), Some(3.0));
//! ```

pub mod exposition;
pub mod grafana;
pub mod postgres;
pub mod process;
pub mod promql;
mod promtool;
pub mod python;
pub mod tmpfs;

pub use promtool::{promtool_check, promtool_parse};

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
///
/// Another process may take it before the caller binds it; tests live with that race.
///
/// # Panics
///
/// If no loopback port can be bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("cannot bind a free port on 127.0.0.1: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn free_port_can_be_bound() {
        let port = super::free_port();
        assert_ne!(port, 0);
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    }
}
