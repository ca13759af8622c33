//! Turning raw samples into the figures that get reported.
//!
//! Latencies are kept in HDR histograms in microseconds: exact enough for a
//! 2 ms p99 target (3 significant digits) while recording costs no allocation
//! on the hot path. Figures across rounds are combined with the median, which
//! a single disturbed round on a shared machine cannot drag.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histograms can hold; slower samples are clamped to it.
/// Requests time out long before this anyway.
const MAX_TRACKABLE_US: u64 = 60_000_000;

/// A latency histogram in microseconds, 1 µs .. 60 s, 3 significant digits.
pub fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_TRACKABLE_US, 3)
        .map_err(|e| anyhow::anyhow!("create histogram: {e}"))
}

/// Latency percentiles of one phase, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    /// Percentiles of `hist`, or `None` when it holds no sample.
    pub fn from_histogram(hist: &Histogram<u64>) -> Option<Self> {
        if hist.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Self {
            p50_ms: ms(hist.value_at_quantile(0.50)),
            p90_ms: ms(hist.value_at_quantile(0.90)),
            p99_ms: ms(hist.value_at_quantile(0.99)),
            max_ms: ms(hist.max()),
            mean_ms: hist.mean() / 1000.0,
        })
    }

    /// Per-field median over rounds (the median p99 is not the p99 of all
    /// samples, but it is what "typical round" means and is robust to one bad round).
    pub fn median_of(rounds: &[Latency]) -> Option<Self> {
        let field = |f: fn(&Latency) -> f64| median(rounds.iter().map(f).collect());
        Some(Self {
            p50_ms: field(|l| l.p50_ms)?,
            p90_ms: field(|l| l.p90_ms)?,
            p99_ms: field(|l| l.p99_ms)?,
            max_ms: field(|l| l.max_ms)?,
            mean_ms: field(|l| l.mean_ms)?,
        })
    }
}

/// Median of `values`; the mean of the two middle ones for an even count.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![5.0]), Some(5.0));
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
        // One wild round does not move the median.
        assert_eq!(median(vec![100.0, 101.0, 1.0e9]), Some(101.0));
    }

    #[test]
    fn percentiles_from_histogram() {
        let mut h = new_histogram().expect("histogram");
        assert_eq!(Latency::from_histogram(&h), None);
        // 1..=1000 µs: p50 ≈ 0.5 ms, p99 ≈ 0.99 ms, max 1 ms.
        for us in 1..=1000 {
            h.record(us).expect("in range");
        }
        let l = Latency::from_histogram(&h).expect("samples");
        assert!((l.p50_ms - 0.5).abs() < 0.002, "{l:?}");
        assert!((l.p90_ms - 0.9).abs() < 0.002, "{l:?}");
        assert!((l.p99_ms - 0.99).abs() < 0.002, "{l:?}");
        assert!((l.max_ms - 1.0).abs() < 0.002, "{l:?}");
        assert!((l.mean_ms - 0.5005).abs() < 0.002, "{l:?}");
    }

    #[test]
    fn latency_median_is_per_field() {
        let l = |p99_ms| Latency {
            p50_ms: 1.0,
            p90_ms: 1.0,
            p99_ms,
            max_ms: 9.0,
            mean_ms: 1.0,
        };
        let m = Latency::median_of(&[l(1.0), l(3.0), l(2.0)]).expect("median");
        assert_eq!(m.p99_ms, 2.0);
        assert_eq!(Latency::median_of(&[]), None);
    }
}
