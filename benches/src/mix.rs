//! The soak's request classes and what they cost: latencies, counts and errors per
//! class ([`Mix`]), and the with/without-layers comparison over alternating windows of
//! the same mix ([`Comparison`]), each rendered as a Markdown table.
//!
//! ```
//! use std::time::Duration;
//! use secureconnect_benches::mix::{Class, Mix};
//!
//! let mut mix = Mix::default();
//! mix.record(Class::Login, 200, Duration::from_millis(90));
//! mix.record(Class::ConversationRead, 200, Duration::from_millis(2));
//! mix.record(Class::ConversationRead, 503, Duration::from_millis(3));
//! assert_eq!(mix.overall().requests(), 3);
//! assert_eq!(mix.non_login().errors, 1);
//! assert!(mix.table().contains("| conversation read | 2 |"));
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::timeline::percentile;

/// What a request of the soak does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// `POST /v1/auth/login` (argon2).
    Login,
    /// `GET /v1/conversations/{id}`.
    ConversationRead,
    /// `POST /v1/conversations`.
    ConversationWrite,
    /// `POST /v1/storage/upload-url`, then the `PUT` of 4 KiB to the signed URL (two
    /// requests).
    Upload,
    /// `GET /v1/storage/download-url/{id}`, then the `GET` of the signed URL (two
    /// requests).
    Download,
    /// `DELETE /v1/storage/files/{id}`.
    FileDelete,
    /// An ICE message over WebSocket, from its sender's `send` to its peer's receipt
    /// (relayed by the gateway and the video service): one-way latency, not an HTTP
    /// request, sent at a fixed rate, so left out of the overall figures.
    Signaling,
}

impl Class {
    /// Every class, in table order.
    pub const ALL: [Class; 7] = [
        Class::Login,
        Class::ConversationRead,
        Class::ConversationWrite,
        Class::Upload,
        Class::Download,
        Class::FileDelete,
        Class::Signaling,
    ];

    /// Its name in the tables.
    pub fn label(self) -> &'static str {
        match self {
            Class::Login => "login",
            Class::ConversationRead => "conversation read",
            Class::ConversationWrite => "conversation create",
            Class::Upload => "upload (URL + PUT)",
            Class::Download => "download (URL + GET)",
            Class::FileDelete => "file delete",
            Class::Signaling => "signaling (ICE relay, one way)",
        }
    }

    /// An HTTP request (counted in the overall figures), not a WebSocket message.
    pub fn is_http(self) -> bool {
        self != Class::Signaling
    }
}

/// The requests of one class (or several, merged).
#[derive(Clone, Debug, Default)]
pub struct Requests {
    latencies: Vec<Duration>,
    sorted: bool,
    /// Answered 4xx.
    pub client_errors: u64,
    /// Answered 5xx, or not answered at all (refused, reset, timed out).
    pub errors: u64,
}

impl Requests {
    /// How many.
    pub fn requests(&self) -> usize {
        self.latencies.len()
    }

    /// The `p`th percentile of their latencies (nearest rank); zero without any.
    pub fn percentile(&mut self, p: f64) -> Duration {
        if !self.sorted {
            self.latencies.sort_unstable();
            self.sorted = true;
        }
        percentile(&self.latencies, p)
    }

    fn merge(&mut self, other: &Requests) {
        self.latencies.extend_from_slice(&other.latencies);
        self.sorted = false;
        self.client_errors += other.client_errors;
        self.errors += other.errors;
    }
}

/// Requests per [`Class`].
#[derive(Clone, Debug, Default)]
pub struct Mix {
    classes: BTreeMap<Class, Requests>,
}

impl Mix {
    /// Records one request of `class` that took `took` and got `status` (0: no
    /// response).
    pub fn record(&mut self, class: Class, status: u16, took: Duration) {
        let r = self.classes.entry(class).or_default();
        r.latencies.push(took);
        r.sorted = false;
        match status {
            0 | 500.. => r.errors += 1,
            400..=499 => r.client_errors += 1,
            _ => {}
        }
    }

    /// Adds the requests of `other`.
    pub fn merge(&mut self, other: &Mix) {
        for (class, r) in &other.classes {
            self.classes.entry(*class).or_default().merge(r);
        }
    }

    /// The requests of `class` (empty if none).
    pub fn class(&self, class: Class) -> Requests {
        self.classes.get(&class).cloned().unwrap_or_default()
    }

    fn merged(&self, keep: impl Fn(Class) -> bool) -> Requests {
        let mut all = Requests::default();
        for (_, r) in self.classes.iter().filter(|(c, _)| keep(**c)) {
            all.merge(r);
        }
        all
    }

    /// Every HTTP request, merged.
    pub fn overall(&self) -> Requests {
        self.merged(Class::is_http)
    }

    /// Every HTTP request but the logins (argon2), merged.
    pub fn non_login(&self) -> Requests {
        self.merged(|c| c.is_http() && c != Class::Login)
    }

    /// A Markdown table: one row per class that has requests, then "all but login"
    /// and "all HTTP".
    pub fn table(&self) -> String {
        let mut md = String::from(
            "| class | requests | 4xx | 5xx or no answer | p50 ms | p99 ms | p99.9 ms |\n|---|---|---|---|---|---|---|\n",
        );
        let rows = Class::ALL
            .iter()
            .filter(|c| self.classes.contains_key(c))
            .map(|c| (c.label().to_owned(), self.class(*c)))
            .chain([
                ("**all but login**".to_owned(), self.non_login()),
                ("**all HTTP**".to_owned(), self.overall()),
            ]);
        for (label, mut r) in rows {
            let (p50, p99, p999) = (r.percentile(50.0), r.percentile(99.0), r.percentile(99.9));
            let _ = writeln!(
                md,
                "| {label} | {} | {} | {} | {} | {} | {} |",
                r.requests(),
                r.client_errors,
                r.errors,
                ms(p50),
                ms(p99),
                ms(p999)
            );
        }
        md
    }
}

/// The order of `n` comparison windows, `true` for the gateway with layers: ABBA
/// blocks (with, without, without, with, …), so that a drift of the machine during the
/// run (a warming cache, a growing database) weighs on both sides alike.
pub fn alternating(n: usize) -> Vec<bool> {
    (0..n).map(|i| matches!(i % 4, 0 | 3)).collect()
}

/// One measured window of the comparison.
#[derive(Clone, Debug)]
pub struct Window {
    /// Through the gateway with its layers (`false`: `SC_LAYERS=off`).
    pub layers: bool,
    /// How long the requests were recorded (warm-up excluded).
    pub measured: Duration,
    /// What completed meanwhile.
    pub mix: Mix,
}

/// The with/without-layers comparison: alternating windows of the same mix.
#[derive(Clone, Debug, Default)]
pub struct Comparison {
    /// The windows, in the order run.
    pub windows: Vec<Window>,
}

/// Both sides of one figure of the comparison.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ratios {
    /// Requests per second with the layers ÷ without.
    pub throughput: f64,
    /// p99 with the layers ÷ without.
    pub p99: f64,
}

impl Comparison {
    fn side(&self, layers: bool) -> (Mix, f64) {
        let mut mix = Mix::default();
        let mut secs = 0.0;
        for w in self.windows.iter().filter(|w| w.layers == layers) {
            mix.merge(&w.mix);
            secs += w.measured.as_secs_f64();
        }
        (mix, secs)
    }

    /// Every request of the windows with the layers (`true`) or without, merged.
    pub fn mix(&self, layers: bool) -> Mix {
        self.side(layers).0
    }

    /// With ÷ without, over every HTTP request, or over `class` only.
    pub fn ratios(&self, class: Option<Class>) -> Ratios {
        let pick = |m: &Mix| class.map_or_else(|| m.overall(), |c| m.class(c));
        let (with, with_secs) = self.side(true);
        let (without, without_secs) = self.side(false);
        let (mut a, mut b) = (pick(&with), pick(&without));
        ratios(
            rate(a.requests(), with_secs),
            rate(b.requests(), without_secs),
            a.percentile(99.0),
            b.percentile(99.0),
        )
    }

    /// With ÷ without, over every HTTP request but the logins.
    pub fn non_login_ratios(&self) -> Ratios {
        let (with, with_secs) = self.side(true);
        let (without, without_secs) = self.side(false);
        let (mut a, mut b) = (with.non_login(), without.non_login());
        ratios(
            rate(a.requests(), with_secs),
            rate(b.requests(), without_secs),
            a.percentile(99.0),
            b.percentile(99.0),
        )
    }

    /// The overall throughput ratio of each (with, without) pair of windows in run
    /// order: how much the ratio scatters between neighbouring windows.
    pub fn pair_throughput_ratios(&self) -> Vec<f64> {
        let with: Vec<&Window> = self.windows.iter().filter(|w| w.layers).collect();
        let without: Vec<&Window> = self.windows.iter().filter(|w| !w.layers).collect();
        with.iter()
            .zip(&without)
            .map(|(a, b)| {
                rate(a.mix.overall().requests(), a.measured.as_secs_f64())
                    / rate(b.mix.overall().requests(), b.measured.as_secs_f64()).max(1e-9)
            })
            .collect()
    }

    /// A Markdown table: per class and overall, requests per second and p99 on both
    /// sides and their ratios.
    pub fn table(&self) -> String {
        let (with, with_secs) = self.side(true);
        let (without, without_secs) = self.side(false);
        let mut md = String::from(
            "| class | with: req/s | without: req/s | throughput with/without | with: p50 / p99 ms | without: p50 / p99 ms | p99 with/without |\n|---|---|---|---|---|---|---|\n",
        );
        let rows = Class::ALL
            .iter()
            .filter(|c| with.classes.contains_key(c) || without.classes.contains_key(c))
            .map(|c| (c.label().to_owned(), with.class(*c), without.class(*c)))
            .chain([
                (
                    "**all but login**".to_owned(),
                    with.non_login(),
                    without.non_login(),
                ),
                ("**all HTTP**".to_owned(), with.overall(), without.overall()),
            ]);
        for (label, mut a, mut b) in rows {
            let (ra, rb) = (
                rate(a.requests(), with_secs),
                rate(b.requests(), without_secs),
            );
            let r = ratios(ra, rb, a.percentile(99.0), b.percentile(99.0));
            let _ = writeln!(
                md,
                "| {label} | {ra:.0} | {rb:.0} | {:.3} | {} / {} | {} / {} | {:.2} |",
                r.throughput,
                ms(a.percentile(50.0)),
                ms(a.percentile(99.0)),
                ms(b.percentile(50.0)),
                ms(b.percentile(99.0)),
                r.p99
            );
        }
        md
    }
}

fn rate(requests: usize, secs: f64) -> f64 {
    requests as f64 / secs.max(1e-9)
}

fn ratios(rate_with: f64, rate_without: f64, p99_with: Duration, p99_without: Duration) -> Ratios {
    Ratios {
        throughput: rate_with / rate_without.max(1e-9),
        p99: p99_with.as_secs_f64() / p99_without.as_secs_f64().max(1e-9),
    }
}

/// Milliseconds, two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn classes_count_apart_and_login_stays_out_of_non_login() {
        let mut mix = Mix::default();
        for i in 1..=100 {
            mix.record(Class::ConversationRead, 200, millis(i));
        }
        mix.record(Class::Login, 200, millis(900));
        mix.record(Class::Upload, 404, millis(1));
        mix.record(Class::Upload, 0, millis(15_000));
        mix.record(Class::Signaling, 200, millis(1));

        assert_eq!(mix.class(Class::ConversationRead).requests(), 100);
        assert_eq!(
            mix.class(Class::ConversationRead).percentile(99.0),
            millis(99)
        );
        let upload = mix.class(Class::Upload);
        assert_eq!((upload.client_errors, upload.errors), (1, 1));
        let mut non_login = mix.non_login();
        assert_eq!(non_login.requests(), 102, "no login, no signaling");
        assert!(non_login.percentile(100.0) == millis(15_000));
        assert_eq!(mix.overall().requests(), 103, "signaling is not HTTP");
        assert_eq!(mix.overall().percentile(100.0), millis(15_000));
    }

    #[test]
    fn the_table_names_only_the_classes_seen_and_both_totals() {
        let mut mix = Mix::default();
        mix.record(Class::Login, 200, millis(80));
        mix.record(Class::Download, 502, millis(3));
        let md = mix.table();
        assert!(md.contains("| login | 1 | 0 | 0 | 80.00 |"), "{md}");
        assert!(
            md.contains("| download (URL + GET) | 1 | 0 | 1 | 3.00 |"),
            "{md}"
        );
        assert!(!md.contains("conversation read"), "{md}");
        assert!(md.contains("| **all but login** | 1 | 0 | 1 |"), "{md}");
        assert!(md.contains("| **all HTTP** | 2 | 0 | 1 |"), "{md}");
    }

    #[test]
    fn windows_alternate_in_abba_blocks_with_as_many_on_each_side() {
        assert_eq!(
            alternating(8),
            [true, false, false, true, true, false, false, true]
        );
        for n in [2, 4, 6, 8, 12] {
            let with = alternating(n).iter().filter(|l| **l).count();
            assert_eq!(with * 2, n, "{n} windows");
        }
    }

    fn window(layers: bool, secs: u64, reads: u64, read_ms: u64) -> Window {
        let mut mix = Mix::default();
        for _ in 0..reads {
            mix.record(Class::ConversationRead, 200, millis(read_ms));
        }
        mix.record(Class::Login, 200, millis(100));
        Window {
            layers,
            measured: Duration::from_secs(secs),
            mix,
        }
    }

    #[test]
    fn ratios_are_rates_not_counts_and_p99_over_each_side() {
        // With layers: 2 windows of 5 s with 99 reads + 1 login = 200 in 10 s.
        // Without: 1 window of 4 s with 199 reads + 1 login = 200 in 4 s.
        let c = Comparison {
            windows: vec![
                window(true, 5, 99, 4),
                window(false, 4, 199, 2),
                window(true, 5, 99, 4),
            ],
        };
        let all = c.ratios(None);
        assert!((all.throughput - (20.0 / 50.0)).abs() < 1e-9, "{all:?}");
        let non_login = c.non_login_ratios();
        assert!((non_login.p99 - 2.0).abs() < 1e-9, "{non_login:?}");
        let reads = c.ratios(Some(Class::ConversationRead));
        assert!(
            (reads.throughput - (19.8 / 49.75)).abs() < 1e-9,
            "{reads:?}"
        );
        assert!(
            (reads.p99 - 2.0).abs() < 1e-9,
            "4 ms against 2 ms: {reads:?}"
        );
        assert_eq!(c.pair_throughput_ratios().len(), 1, "one full pair");
        let md = c.table();
        assert!(
            md.contains(
                "| conversation read | 20 | 50 | 0.398 | 4.00 / 4.00 | 2.00 / 2.00 | 2.00 |"
            ),
            "{md}"
        );
        assert!(md.contains("| **all HTTP** | 20 | 50 | 0.400 |"), "{md}");
    }

    #[test]
    fn an_empty_side_gives_finite_ratios() {
        let c = Comparison {
            windows: vec![window(true, 5, 10, 1)],
        };
        let r = c.ratios(None);
        assert!(r.throughput.is_finite() && r.p99.is_finite(), "{r:?}");
        assert!(c.pair_throughput_ratios().is_empty());
    }
}
