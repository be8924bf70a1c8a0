//! Storage of the request series, built for the request path.
//!
//! One map lookup per request, at its start, finds the [`Series`] of its method and
//! route (an `FxHash` of a short, bounded key under a read lock); the end of the request
//! then only touches that series: a scan of its few status codes and three atomic
//! additions. `prometheus_client`'s `Family` would hash with SipHash twice per request
//! and lock a mutex per observation.
//!
//! The families are encoded by a [`Collector`], so they take the registry's prefix and
//! constant labels like any registered metric.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeMetric, LabelSetEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use rustc_hash::FxBuildHasher;

use crate::exemplar::{self, FamilyExemplars};
use crate::histogram::AtomicHistogram;
use crate::labels::{ActiveLabels, STATUS};

/// The help text of the duration family; the exposition finds the family by it to add
/// its exemplars (see `endpoint::exemplars`).
pub(crate) const DURATION_HELP: &str =
    "Duration of HTTP server requests, until the response body ended.";

/// How many status codes of one method and route are found without taking a lock.
/// Routes rarely answer with more than a handful; the rest go to `overflow`.
const STATUS_SLOTS: usize = 8;

/// The series of one method and route: in-flight count and a histogram per status.
#[derive(Debug)]
pub(crate) struct Series {
    labels: ActiveLabels,
    bounds: Arc<[f64]>,
    exemplars: bool,
    /// The exemplar clock's start.
    epoch: quanta::Instant,
    active: AtomicI64,
    /// Filled in order, never emptied: a reader stops at the first empty slot.
    slots: [OnceLock<(u16, AtomicHistogram)>; STATUS_SLOTS],
    overflow: RwLock<Vec<(u16, AtomicHistogram)>>,
}

impl Series {
    /// Nanoseconds from the exemplar clock's start to `now`.
    pub(crate) fn since_epoch(&self, now: quanta::Instant) -> u64 {
        exemplar::since(self.epoch, now)
    }

    pub(crate) fn enter(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a finished request and leaves the in-flight count. `trace`: the trace id
    /// of a sampled request and when it ended, for its bucket's exemplar.
    pub(crate) fn exit(&self, status: u16, seconds: f64, trace: Option<(u128, u64)>) {
        self.observe(status, seconds, trace);
        self.active.fetch_sub(1, Ordering::Relaxed);
    }

    /// Observes `seconds` in the histogram of `status`, creating it on first use.
    fn observe(&self, status: u16, seconds: f64, trace: Option<(u128, u64)>) {
        let record = |histogram: &AtomicHistogram| match trace {
            Some((trace_id, at)) => histogram.observe_traced(seconds, trace_id, at),
            None => histogram.observe(seconds),
        };
        for slot in &self.slots {
            // A filled slot is read with one atomic load; an empty one is claimed.
            let (slot_status, histogram) = slot.get_or_init(|| (status, self.histogram()));
            if *slot_status == status {
                return record(histogram);
            }
        }
        {
            let overflow = self.overflow.read().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, histogram)) = overflow.iter().find(|(s, _)| *s == status) {
                return record(histogram);
            }
        }
        let mut overflow = self
            .overflow
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match overflow.iter().find(|(s, _)| *s == status) {
            Some((_, histogram)) => record(histogram),
            None => {
                let histogram = self.histogram();
                record(&histogram);
                overflow.push((status, histogram));
            }
        }
    }

    fn histogram(&self) -> AtomicHistogram {
        AtomicHistogram::new(Arc::clone(&self.bounds), self.exemplars)
    }

    /// Calls `f` with every status and its histogram.
    fn for_each_status(
        &self,
        mut f: impl FnMut(u16, &AtomicHistogram) -> fmt::Result,
    ) -> fmt::Result {
        for (status, histogram) in self.slots.iter().map_while(OnceLock::get) {
            f(*status, histogram)?;
        }
        let overflow = self.overflow.read().unwrap_or_else(PoisonError::into_inner);
        for (status, histogram) in overflow.iter() {
            f(*status, histogram)?;
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn active(&self) -> i64 {
        self.active.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(crate) fn count(&self, status: u16) -> u64 {
        let mut count = 0;
        let _ = self.for_each_status(|s, h| {
            if s == status {
                count = h.snapshot().1;
            }
            Ok(())
        });
        count
    }
}

/// Every series of one [`HttpMetricsLayer`](super::HttpMetricsLayer).
#[derive(Debug)]
pub(crate) struct SeriesMap {
    bounds: Arc<[f64]>,
    exemplars: bool,
    epoch: quanta::Instant,
    map: RwLock<HashMap<ActiveLabels, Arc<Series>, FxBuildHasher>>,
}

impl SeriesMap {
    /// The series of histograms with `bounds`, keeping exemplars when `exemplars`,
    /// timed from `epoch` (the exemplar clock's start).
    pub(crate) fn new(bounds: Arc<[f64]>, exemplars: bool, epoch: quanta::Instant) -> Self {
        Self {
            bounds,
            exemplars,
            epoch,
            map: RwLock::default(),
        }
    }

    /// The series of `labels`, created on first use.
    pub(crate) fn get(&self, labels: ActiveLabels) -> Arc<Series> {
        if let Some(series) = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&labels)
        {
            return Arc::clone(series);
        }
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        let (bounds, exemplars, epoch) = (&self.bounds, self.exemplars, self.epoch);
        Arc::clone(map.entry(labels.clone()).or_insert_with(|| {
            Arc::new(Series {
                labels,
                bounds: Arc::clone(bounds),
                exemplars,
                epoch,
                active: AtomicI64::new(0),
                slots: Default::default(),
                overflow: RwLock::default(),
            })
        }))
    }

    fn snapshot(&self) -> Vec<Arc<Series>> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}

/// Labels of one histogram series, borrowed for encoding.
struct StatusLabels<'a> {
    active: &'a ActiveLabels,
    status: u16,
}

impl EncodeLabelSet for StatusLabels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> fmt::Result {
        self.active.encode(encoder)?;
        (STATUS, self.status).encode(encoder.encode_label())
    }
}

/// Encodes `http_server_request_duration_seconds` and `http_server_active_requests`.
#[derive(Debug)]
pub(crate) struct SeriesCollector(pub(crate) Arc<super::Shared>);

impl Collector for SeriesCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        // Take the list and let go of the map lock before formatting anything.
        let series = self.0.series.snapshot();
        if series.is_empty() {
            return Ok(());
        }
        {
            let mut metric = encoder.encode_descriptor(
                "http_server_request_duration",
                DURATION_HELP,
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            // Exemplars are read only for an OpenMetrics exposition that adds them.
            let mut exemplars = exemplar::collecting().then(FamilyExemplars::default);
            for s in &series {
                s.for_each_status(|status, histogram| {
                    let labels = StatusLabels {
                        active: &s.labels,
                        status,
                    };
                    histogram.encode(metric.encode_family(&labels)?)?;
                    if let Some(family) = &mut exemplars {
                        let first = family.bucket_lines;
                        family.exemplars.extend(
                            histogram
                                .exemplars(&self.0.clock)
                                .map(|(i, e)| (first + i, e)),
                        );
                        family.bucket_lines += histogram.buckets();
                    }
                    Ok(())
                })?;
            }
            if let Some(family) = exemplars {
                exemplar::collected(family);
            }
        }
        let mut metric = encoder.encode_descriptor(
            "http_server_active_requests",
            "Number of HTTP server requests in flight.",
            None,
            MetricType::Gauge,
        )?;
        for s in &series {
            metric
                .encode_family(&s.labels)?
                .encode_gauge(&s.active.load(Ordering::Relaxed))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::MethodLabel;
    use crate::RouteLabel;

    #[test]
    fn many_statuses_spill_into_overflow_and_all_are_kept() {
        let map = SeriesMap::new(Arc::from([1.0].as_slice()), false, quanta::Instant::now());
        let series = map.get(ActiveLabels {
            method: MethodLabel::Get,
            route: RouteLabel::from_static("/x"),
        });
        let statuses: Vec<u16> = (200..200 + 3 * STATUS_SLOTS as u16).collect();
        for round in 1..=2u64 {
            for &status in &statuses {
                series.enter();
                series.exit(status, 0.1, None);
                assert_eq!(series.count(status), round, "status {status}");
            }
        }
        let mut seen = Vec::new();
        series
            .for_each_status(|s, _| {
                seen.push(s);
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, statuses, "each status once, in arrival order");
        assert_eq!(series.active(), 0);
    }
}
