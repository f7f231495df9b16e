//! A latency histogram: log-spaced buckets (four per doubling, so a
//! quantile is within ~9 % of the true value) from 10 µs to ~3 hours, kept
//! empty until the first sample.

use serde::Serialize;

/// Buckets per doubling.
const PER_OCTAVE: f64 = 4.0;
/// log2 of the smallest bucket's centre in ms (2^-7 ms ≈ 8 µs).
const LOW: f64 = -7.0;
const BUCKETS: usize = 128;

#[derive(Debug, Clone, Default)]
pub struct Hist {
    counts: Vec<u32>,
    n: u64,
}

/// The bucket of a latency in ms (worked out once per request, then added
/// to several histograms).
pub fn bucket(ms: f64) -> u8 {
    let ms = if ms.is_finite() { ms.max(1e-3) } else { 1e-3 };
    ((ms.log2() - LOW) * PER_OCTAVE).round().clamp(0.0, (BUCKETS - 1) as f64) as u8
}

fn centre(i: usize) -> f64 {
    (i as f64 / PER_OCTAVE + LOW).exp2()
}

impl Hist {
    pub fn add(&mut self, ms: f64) {
        self.add_bucket(bucket(ms));
    }

    /// Add a sample already put in its [`bucket`].
    pub fn add_bucket(&mut self, b: u8) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        if let Some(c) = self.counts.get_mut(usize::from(b)) {
            *c = c.saturating_add(1);
            self.n += 1;
        }
    }

    pub fn merge(&mut self, other: &Hist) {
        if other.counts.is_empty() {
            return;
        }
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a = a.saturating_add(*b);
        }
        self.n += other.n;
    }

    pub fn count(&self) -> u64 {
        self.n
    }

    /// The nearest-rank `q` quantile (0 < q ≤ 1) in ms, rounded to what a
    /// bucket can tell; `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                return Some(round_ms(centre(i)));
            }
        }
        None
    }

    pub fn summary(&self) -> Latency {
        Latency { p50_ms: self.quantile(0.5), p95_ms: self.quantile(0.95) }
    }
}

/// Three significant digits: a bucket is no finer than that.
fn round_ms(ms: f64) -> f64 {
    if ms <= 0.0 {
        return 0.0;
    }
    let scale = 10f64.powi(2 - ms.log10().floor() as i32);
    (ms * scale).round() / scale
}

/// p50 and p95 of a histogram, in ms (`null` without samples).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Latency {
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::Hist;

    #[test]
    fn quantiles_are_within_a_bucket_of_the_truth() {
        let mut h = Hist::default();
        assert_eq!(h.quantile(0.5), None);
        for ms in 1..=100 {
            h.add(ms as f64);
        }
        let p50 = h.quantile(0.5).unwrap();
        let p95 = h.quantile(0.95).unwrap();
        assert!((p50 - 50.0).abs() / 50.0 < 0.1, "{p50}");
        assert!((p95 - 95.0).abs() / 95.0 < 0.1, "{p95}");
        let mut other = Hist::default();
        other.add(10_000.0);
        h.merge(&other);
        assert_eq!(h.count(), 101);
        assert!(h.quantile(1.0).unwrap() > 9_000.0);
        // Out-of-range values land in the end buckets.
        h.add(f64::NAN);
        h.add(1e12);
        assert_eq!(h.count(), 103);
    }
}
