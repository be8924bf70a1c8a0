//! Process metrics and `build_info`, registered by one call.
//!
//! On Linux, [`register`] adds a collector that reads `/proc/self` at scrape time and
//! exports the metric names every Prometheus client library uses:
//!
//! | metric | type |
//! |---|---|
//! | `process_cpu_seconds_total` | counter |
//! | `process_resident_memory_bytes` | gauge |
//! | `process_virtual_memory_bytes` | gauge |
//! | `process_open_fds` | gauge |
//! | `process_max_fds` | gauge |
//! | `process_threads` | gauge |
//! | `process_start_time_seconds` | gauge |
//!
//! On other systems only `build_info` is registered. Nothing is read between scrapes.
//!
//! ```
//! use prometheus_client::registry::Registry;
//!
//! let mut registry = Registry::default();
//! secureconnect_obs::process::register(secureconnect_obs::build_info!(), &mut registry);
//! ```

use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// What `build_info` reports: the name and version of the running program.
///
/// Build it with [`build_info!`](crate::build_info) to take both from the calling
/// crate's `Cargo.toml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildInfo {
    name: String,
    version: String,
    revision: Option<String>,
}

impl BuildInfo {
    /// A program `name` at `version`.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            revision: None,
        }
    }

    /// Adds the source revision (for example a git commit id) as label `revision`.
    pub fn revision(mut self, revision: impl Into<String>) -> Self {
        self.revision = Some(revision.into());
        self
    }

    fn labels(self) -> Vec<(String, String)> {
        let mut labels = vec![
            ("name".to_owned(), self.name),
            ("version".to_owned(), self.version),
        ];
        if let Some(revision) = self.revision {
            labels.push(("revision".to_owned(), revision));
        }
        labels
    }
}

/// A [`BuildInfo`] with the calling crate's package name and version.
///
/// ```
/// let info = secureconnect_obs::build_info!();
/// assert_eq!(info, secureconnect_obs::process::BuildInfo::new(
///     env!("CARGO_PKG_NAME"),
///     env!("CARGO_PKG_VERSION"),
/// ));
/// ```
#[macro_export]
macro_rules! build_info {
    () => {
        $crate::process::BuildInfo::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
    };
}

/// Registers `build_info{name, version[, revision]} 1` and, on Linux, the process
/// collector in `registry`.
pub fn register(build: BuildInfo, registry: &mut Registry) {
    registry.register(
        "build",
        "Name and version of the running program",
        Info::new(build.labels()),
    );
    #[cfg(target_os = "linux")]
    registry.register_collector(Box::new(linux::ProcessCollector::new()));
}

#[cfg(target_os = "linux")]
mod linux {
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
    use prometheus_client::metrics::counter::ConstCounter;
    use prometheus_client::metrics::gauge::ConstGauge;
    use prometheus_client::metrics::MetricType;
    use prometheus_client::registry::Unit;

    /// Figures read from `/proc/self/stat`, in the units `proc(5)` gives.
    #[derive(Debug, PartialEq)]
    pub(super) struct Stat {
        pub(super) utime_ticks: u64,
        pub(super) stime_ticks: u64,
        pub(super) threads: u64,
        pub(super) start_ticks: u64,
        pub(super) vsize_bytes: u64,
        pub(super) rss_pages: u64,
    }

    /// Parses `/proc/[pid]/stat`. The command name (field 2) may contain spaces and
    /// parentheses, so fields are counted from the last `)`.
    pub(super) fn parse_stat(text: &str) -> Option<Stat> {
        let rest = &text[text.rfind(')')? + 1..];
        // `fields[0]` is field 3 (state) of proc(5).
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Stat {
            utime_ticks: field(14)?,
            stime_ticks: field(15)?,
            threads: field(20)?,
            start_ticks: field(22)?,
            vsize_bytes: field(23)?,
            rss_pages: field(24)?,
        })
    }

    /// The `btime` line of `/proc/stat`: boot time in seconds since the epoch.
    pub(super) fn parse_boot_time(text: &str) -> Option<u64> {
        text.lines()
            .find_map(|line| line.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// The soft limit of `Max open files` in `/proc/[pid]/limits`.
    pub(super) fn parse_max_fds(text: &str) -> Option<u64> {
        text.lines()
            .find_map(|line| line.strip_prefix("Max open files"))
            .and_then(|rest| rest.split_ascii_whitespace().next())
            .and_then(|soft| soft.parse().ok())
    }

    #[derive(Debug)]
    pub(super) struct ProcessCollector {
        ticks_per_second: f64,
        page_size: f64,
        boot_time: Option<u64>,
    }

    impl ProcessCollector {
        pub(super) fn new() -> Self {
            Self {
                ticks_per_second: rustix::param::clock_ticks_per_second() as f64,
                page_size: rustix::param::page_size() as f64,
                boot_time: std::fs::read_to_string("/proc/stat")
                    .ok()
                    .as_deref()
                    .and_then(parse_boot_time),
            }
        }
    }

    fn gauge(
        encoder: &mut DescriptorEncoder<'_>,
        name: &str,
        help: &str,
        unit: Option<&Unit>,
        value: f64,
    ) -> std::fmt::Result {
        let metric = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
        ConstGauge::new(value).encode(metric)
    }

    impl Collector for ProcessCollector {
        fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
            // A /proc read that fails (it should not) leaves its metrics out of this
            // scrape rather than failing the whole exposition.
            if let Some(stat) = std::fs::read_to_string("/proc/self/stat")
                .ok()
                .as_deref()
                .and_then(parse_stat)
            {
                let cpu = (stat.utime_ticks + stat.stime_ticks) as f64 / self.ticks_per_second;
                let metric = encoder.encode_descriptor(
                    "process_cpu",
                    "Total user and system CPU time spent in seconds",
                    Some(&Unit::Seconds),
                    MetricType::Counter,
                )?;
                ConstCounter::new(cpu).encode(metric)?;
                gauge(
                    &mut encoder,
                    "process_resident_memory",
                    "Resident memory size in bytes",
                    Some(&Unit::Bytes),
                    stat.rss_pages as f64 * self.page_size,
                )?;
                gauge(
                    &mut encoder,
                    "process_virtual_memory",
                    "Virtual memory size in bytes",
                    Some(&Unit::Bytes),
                    stat.vsize_bytes as f64,
                )?;
                gauge(
                    &mut encoder,
                    "process_threads",
                    "Number of OS threads in the process",
                    None,
                    stat.threads as f64,
                )?;
                if let Some(boot) = self.boot_time {
                    gauge(
                        &mut encoder,
                        "process_start_time",
                        "Start time of the process since unix epoch in seconds",
                        Some(&Unit::Seconds),
                        boot as f64 + stat.start_ticks as f64 / self.ticks_per_second,
                    )?;
                }
            }
            if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
                gauge(
                    &mut encoder,
                    "process_open_fds",
                    "Number of open file descriptors",
                    None,
                    dir.count() as f64,
                )?;
            }
            if let Some(max) = std::fs::read_to_string("/proc/self/limits")
                .ok()
                .as_deref()
                .and_then(parse_max_fds)
            {
                gauge(
                    &mut encoder,
                    "process_max_fds",
                    "Maximum number of open file descriptors",
                    None,
                    max as f64,
                )?;
            }
            Ok(())
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::linux::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let text = "1234 (my (odd) prog) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
                    250 50 0 0 20 0 7 0 5000 104857600 2560 18446744073709551615 \
                    1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        let stat = parse_stat(text).expect("parses");
        assert_eq!(stat.utime_ticks, 250);
        assert_eq!(stat.stime_ticks, 50);
        assert_eq!(stat.threads, 7);
        assert_eq!(stat.start_ticks, 5000);
        assert_eq!(stat.vsize_bytes, 104_857_600);
        assert_eq!(stat.rss_pages, 2560);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn parses_limits_and_boot_time() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        assert_eq!(
            parse_boot_time("cpu 1 2 3\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_boot_time("cpu 1"), None);
    }

    #[test]
    fn reads_this_process() {
        let text = std::fs::read_to_string("/proc/self/stat").expect("procfs");
        let stat = parse_stat(&text).expect("parses the real file");
        assert!(stat.threads >= 1);
        assert!(stat.rss_pages > 0);
    }
}
