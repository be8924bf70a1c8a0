//! The soak's timeline: what each second of the load looked like — requests, p50 and
//! p99 latency, 5xx — and when the faults were, drawn as an SVG.
//!
//! The picture is drawn by `plotters` with its SVG backend only (no `ttf` feature): text
//! goes into the file as `<text>` elements that the viewer lays out, so drawing reads
//! no system font and works on a machine that has none.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use secureconnect_benches::timeline::Timeline;
//!
//! let start = Instant::now();
//! let mut timeline = Timeline::new(start);
//! timeline.record(start + Duration::from_millis(300), 200, Duration::from_millis(2));
//! timeline.record(start + Duration::from_millis(1300), 503, Duration::from_millis(9));
//! timeline.fault("Redis killed", start + Duration::from_secs(1), start + Duration::from_secs(2));
//! let svg = timeline.render_svg("Soak").unwrap();
//! assert!(svg.starts_with("<svg"));
//! assert_eq!(timeline.points()[1].server_errors, 1);
//! ```

use std::time::{Duration, Instant};

mod chart;

/// The requests that completed in one second of the run.
#[derive(Clone, Debug, Default)]
struct Second {
    latencies: Vec<Duration>,
    server_errors: u64,
    no_response: u64,
}

/// A fault window, in seconds since the timeline's origin.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// What was done ("Redis killed").
    pub label: String,
    /// When it started.
    pub from: f64,
    /// When the system was back (at least one second after `from`, so that it shows).
    pub to: f64,
}

/// One second of the run, summarized.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Seconds since the origin (the second `[second, second + 1)`).
    pub second: usize,
    /// Requests that completed in it (the requests per second).
    pub requests: usize,
    /// Their median latency, in milliseconds (0 without requests).
    pub p50_ms: f64,
    /// Their 99th percentile latency, in milliseconds (0 without requests).
    pub p99_ms: f64,
    /// Responses with a 5xx status.
    pub server_errors: u64,
    /// Requests that got no response at all (connection refused, reset, timed out).
    pub no_response: u64,
}

/// Requests per second of a run, and its fault windows.
#[derive(Clone, Debug)]
pub struct Timeline {
    origin: Instant,
    seconds: Vec<Second>,
    faults: Vec<Fault>,
    /// Whole seconds of load, once it ended: the seconds after are left out.
    full_seconds: Option<usize>,
}

impl Timeline {
    /// An empty timeline whose second 0 starts at `origin`.
    pub fn new(origin: Instant) -> Self {
        Self {
            origin,
            seconds: Vec::new(),
            faults: Vec::new(),
            full_seconds: None,
        }
    }

    /// Records a request that completed at `at` after `took`, with HTTP `status` (0:
    /// no response). A request completed before the origin counts in second 0.
    pub fn record(&mut self, at: Instant, status: u16, took: Duration) {
        let index = at.saturating_duration_since(self.origin).as_secs() as usize;
        if self.seconds.len() <= index {
            self.seconds.resize_with(index + 1, Second::default);
        }
        let second = &mut self.seconds[index];
        second.latencies.push(took);
        match status {
            0 => second.no_response += 1,
            500.. => second.server_errors += 1,
            _ => {}
        }
    }

    /// Records a fault window: `label` done at `from`, the system back at `to`.
    pub fn fault(&mut self, label: impl Into<String>, from: Instant, to: Instant) {
        let from = from.saturating_duration_since(self.origin).as_secs_f64();
        let to = to.saturating_duration_since(self.origin).as_secs_f64();
        self.faults.push(Fault {
            label: label.into(),
            from,
            to: to.max(from + 1.0),
        });
    }

    /// Marks the end of the load at `at`: [`points`](Self::points) then stops at the
    /// last whole second before it, so that the requests still finishing while the
    /// clients stop (a partial second, the slowest requests) do not look like a fall.
    pub fn end(&mut self, at: Instant) {
        self.full_seconds = Some(at.saturating_duration_since(self.origin).as_secs() as usize);
    }

    /// The fault windows, in the order recorded.
    pub fn faults(&self) -> &[Fault] {
        &self.faults
    }

    /// Every second from the origin to the last request (or to the
    /// [`end`](Self::end)), summarized; a second without requests has zeros.
    pub fn points(&self) -> Vec<Point> {
        self.seconds
            .iter()
            .take(self.full_seconds.unwrap_or(usize::MAX))
            .enumerate()
            .map(|(second, s)| {
                let mut sorted = s.latencies.clone();
                sorted.sort_unstable();
                Point {
                    second,
                    requests: sorted.len(),
                    p50_ms: ms(percentile(&sorted, 50.0)),
                    p99_ms: ms(percentile(&sorted, 99.0)),
                    server_errors: s.server_errors,
                    no_response: s.no_response,
                }
            })
            .collect()
    }

    /// The timeline as an SVG document titled `title`: requests per second; p50 and p99
    /// latency per second (log scale); 5xx (and requests without a response) per
    /// second; the fault windows shaded and named on all three.
    ///
    /// # Errors
    ///
    /// If plotters fails to draw (it does not for an SVG drawn into a string, short of
    /// a bug).
    pub fn render_svg(&self, title: &str) -> Result<String, Box<dyn std::error::Error>> {
        let points = self.points();
        let mut svg = String::new();
        chart::draw(&mut svg, title, &points, &self.faults)?;
        Ok(svg)
    }
}

/// The `p`th percentile (nearest rank) of `sorted` durations; zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn each_second_is_summarized_and_an_idle_second_is_zero() {
        let start = Instant::now();
        let mut t = Timeline::new(start);
        for i in 1..=100 {
            t.record(at(start, 9 * i), 200, Duration::from_millis(i));
        }
        t.record(at(start, 2_100), 503, Duration::from_millis(7));
        t.record(at(start, 2_900), 0, Duration::from_secs(15));
        let points = t.points();
        assert_eq!(points.len(), 3);
        assert_eq!(points[0].requests, 100);
        assert_eq!(points[0].p50_ms, 51.0);
        assert_eq!(points[0].p99_ms, 99.0);
        assert_eq!((points[0].server_errors, points[0].no_response), (0, 0));
        assert_eq!(
            points[1],
            Point {
                second: 1,
                requests: 0,
                p50_ms: 0.0,
                p99_ms: 0.0,
                server_errors: 0,
                no_response: 0
            }
        );
        assert_eq!(points[2].requests, 2);
        assert_eq!((points[2].server_errors, points[2].no_response), (1, 1));
    }

    #[test]
    fn the_seconds_after_the_end_are_left_out() {
        let start = Instant::now();
        let mut t = Timeline::new(start);
        for ms in [100, 1_100, 2_100, 2_900, 3_500] {
            t.record(at(start, ms), 200, Duration::from_millis(1));
        }
        t.end(at(start, 2_950));
        let seconds: Vec<usize> = t.points().iter().map(|p| p.second).collect();
        assert_eq!(
            seconds,
            [0, 1],
            "second 2 is partial, second 3 after the end"
        );
    }

    #[test]
    fn a_fault_shorter_than_a_second_is_widened_to_one() {
        let start = Instant::now();
        let mut t = Timeline::new(start);
        t.fault("video killed", at(start, 5_000), at(start, 5_070));
        t.fault("Redis killed", at(start, 10_000), at(start, 25_500));
        assert_eq!(t.faults()[0].from, 5.0);
        assert_eq!(t.faults()[0].to, 6.0);
        assert_eq!((t.faults()[1].from, t.faults()[1].to), (10.0, 25.5));
    }

    #[test]
    fn the_svg_shades_every_fault_on_each_panel_and_names_it_once() {
        let start = Instant::now();
        let mut t = Timeline::new(start);
        for s in 0..60u64 {
            for i in 0..200 {
                let status = if s == 40 && i < 5 { 502 } else { 200 };
                t.record(
                    at(start, s * 1000 + i),
                    status,
                    Duration::from_micros(300 + i * 50),
                );
            }
        }
        t.fault("Redis killed", at(start, 10_000), at(start, 20_000));
        t.fault("storage restarted", at(start, 40_000), at(start, 40_060));
        let svg = t.render_svg("Soak: test").unwrap();

        let shaded = svg.matches(r##"opacity="0.18" fill="#787878""##).count();
        assert_eq!(shaded, 2 * 3, "two windows on three panels:\n{svg}");
        for label in ["Redis killed", "storage restarted", "Soak: test"] {
            assert_eq!(svg.matches(&format!("\n{label}\n")).count(), 1, "{label}");
        }
        for caption in [
            "requests per second",
            "latency per second",
            "errors per second",
        ] {
            assert!(svg.contains(caption), "{caption}");
        }
        assert!(
            !svg.contains("NaN") && !svg.contains("inf"),
            "every coordinate is finite"
        );
        well_formed(&svg);
    }

    #[test]
    fn an_empty_timeline_still_draws() {
        let svg = Timeline::new(Instant::now()).render_svg("nothing").unwrap();
        well_formed(&svg);
    }

    /// Python's XML parser reads the document (an implementation that is not ours).
    fn well_formed(svg: &str) {
        let dir = std::env::temp_dir().join(format!("sc-timeline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{:x}.svg", svg.len()));
        std::fs::write(&path, svg).unwrap();
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys, xml.etree.ElementTree as E; r = E.parse(sys.argv[1]).getroot(); assert r.tag.endswith('svg'), r.tag",
            ])
            .arg(&path)
            .output()
            .expect("python3 (the test command requires it)");
        let _ = std::fs::remove_file(&path);
        assert!(
            out.status.success(),
            "not well-formed XML: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
