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

/// A histogram with fixed, finite, strictly increasing upper bounds.
#[derive(Debug)]
pub(crate) struct AtomicHistogram {
    bounds: Arc<[f64]>,
    /// One count per bound, plus the `+Inf` bucket at the end.
    counts: Box<[AtomicU64]>,
    /// `f64` bits of the sum of all observations.
    sum: AtomicU64,
}

impl AtomicHistogram {
    pub(crate) fn new(bounds: Arc<[f64]>) -> Self {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self {
            bounds,
            counts,
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Records one observation.
    pub(crate) fn observe(&self, value: f64) {
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
        let h = AtomicHistogram::new(Arc::from([0.1, 0.5, 1.0].as_slice()));
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
    fn concurrent_observations_are_all_counted() {
        let h = Arc::new(AtomicHistogram::new(Arc::from([1.0].as_slice())));
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
