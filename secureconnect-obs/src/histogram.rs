//! A lock-free histogram for the request-duration family.
//!
//! `prometheus_client`'s `Histogram` takes a mutex on every observation; the request
//! path here only does two relaxed atomic additions and one compare-and-swap loop on
//! the sum. Counts are kept per bucket (not cumulative) and summed at scrape time, so
//! the `+Inf` bucket always equals `_count` even while requests are being recorded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

use crate::exemplar::{Clock, Exemplar, ExemplarSlot};

/// A histogram with fixed, finite, strictly increasing upper bounds.
#[derive(Debug)]
pub(crate) struct AtomicHistogram {
    bounds: Arc<[f64]>,
    /// One count per bound, plus the `+Inf` bucket at the end.
    counts: Box<[AtomicU64]>,
    /// `f64` bits of the sum of all observations.
    sum: AtomicU64,
    /// One exemplar per bucket, when exemplars are on.
    exemplars: Option<Box<[ExemplarSlot]>>,
}

impl AtomicHistogram {
    /// A histogram with `bounds`, keeping an exemplar per bucket when `exemplars`.
    pub(crate) fn new(bounds: Arc<[f64]>, exemplars: bool) -> Self {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        let exemplars = exemplars.then(|| {
            (0..=bounds.len())
                .map(|_| ExemplarSlot::default())
                .collect()
        });
        Self {
            bounds,
            counts,
            sum: AtomicU64::new(0f64.to_bits()),
            exemplars,
        }
    }

    /// Records one observation.
    pub(crate) fn observe(&self, value: f64) {
        self.observe_at(value);
    }

    /// Records one observation of a sampled request: `trace_id` (non-zero) becomes its
    /// bucket's exemplar, ended `at` nanoseconds after the [`Clock`]'s start.
    pub(crate) fn observe_traced(&self, value: f64, trace_id: u128, at: u64) {
        let index = self.observe_at(value);
        if let Some(slot) = self.exemplars.as_deref().and_then(|e| e.get(index)) {
            slot.store(trace_id, value, at);
        }
    }

    /// The exemplar of each bucket that has one: `(bucket index, exemplar)`.
    pub(crate) fn exemplars<'a>(
        &'a self,
        clock: &'a Clock,
    ) -> impl Iterator<Item = (usize, Exemplar)> + 'a {
        self.exemplars
            .iter()
            .flat_map(|slots| slots.iter().enumerate())
            .filter_map(|(i, slot)| Some((i, slot.load(clock)?)))
    }

    /// The number of buckets, `+Inf` included.
    pub(crate) fn buckets(&self) -> usize {
        self.counts.len()
    }

    /// Counts `value` and adds it to the sum; returns its bucket's index.
    fn observe_at(&self, value: f64) -> usize {
        // `le` semantics: the first bucket whose upper bound is >= value.
        let index = self.bounds.partition_point(|bound| *bound < value);
        if let Some(count) = self.counts.get(index) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        let mut current = self.sum.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(current) + value).to_bits();
            match self.sum.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        index
    }

    /// `(sum, count, per-bucket counts)`; the last bucket is `+Inf`.
    pub(crate) fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut count = 0u64;
        let buckets = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter())
            .map(|(bound, c)| {
                let c = c.load(Ordering::Relaxed);
                count += c;
                (bound, c)
            })
            .collect();
        (
            f64::from_bits(self.sum.load(Ordering::Relaxed)),
            count,
            buckets,
        )
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_le_buckets() {
        let h = AtomicHistogram::new(Arc::from([0.1, 0.5, 1.0].as_slice()), false);
        for v in [0.05, 0.1, 0.2, 1.0, 3.0] {
            h.observe(v);
        }
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 5);
        assert!((sum - 4.35).abs() < 1e-9, "sum was {sum}");
        let counts: Vec<u64> = buckets.iter().map(|(_, c)| *c).collect();
        // 0.05 and 0.1 are <= 0.1; 0.2 <= 0.5; 1.0 <= 1.0; 3.0 only in +Inf.
        assert_eq!(counts, vec![2, 1, 1, 1]);
        assert_eq!(buckets[3].0, f64::INFINITY);
    }

    #[test]
    fn a_traced_observation_is_its_buckets_exemplar_and_counts_as_any() {
        let clock = Clock::new();
        let h = AtomicHistogram::new(Arc::from([0.1, 0.5].as_slice()), true);
        h.observe(0.05);
        h.observe_traced(0.3, 42, 1_000);
        h.observe_traced(9.0, 43, 2_000);
        let exemplars: Vec<(usize, u128, f64)> = h
            .exemplars(&clock)
            .map(|(i, e)| (i, e.trace_id, e.value))
            .collect();
        assert_eq!(exemplars, vec![(1, 42, 0.3), (2, 43, 9.0)]);
        assert_eq!(h.snapshot().1, 3);
        // Off: counted, no exemplar kept.
        let off = AtomicHistogram::new(Arc::from([0.1].as_slice()), false);
        off.observe_traced(0.05, 42, 0);
        assert_eq!(off.exemplars(&clock).count(), 0);
        assert_eq!(off.snapshot().1, 1);
    }

    #[test]
    fn concurrent_observations_are_all_counted() {
        let h = Arc::new(AtomicHistogram::new(Arc::from([1.0].as_slice()), false));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let h = Arc::clone(&h);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        h.observe(0.5);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("observer thread");
        }
        let (sum, count, _) = h.snapshot();
        assert_eq!(count, 40_000);
        assert!((sum - 20_000.0).abs() < 1e-6);
    }
}
