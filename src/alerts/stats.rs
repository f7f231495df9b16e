//! Per-model counts for the threshold rules: requests, errors, and
//! upstream and time-to-first-token buckets, as cumulative atomics. The
//! request path adds to them (through the metrics handle cache, one
//! [`ModelStats`] per model label); the evaluator reads them on its timer
//! and keeps the history its windows need.
//!
//! Counting only: it must not decide anything.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use crate::metrics::UPSTREAM_BUCKETS;

/// Bucket count: the finite buckets plus one for slower requests.
pub const BUCKETS: usize = UPSTREAM_BUCKETS.len() + 1;

/// One model's cumulative counts.
#[derive(Debug, Default)]
pub struct ModelStats {
    requests: AtomicU64,
    errors: AtomicU64,
    upstream: [AtomicU64; BUCKETS],
    ttft: [AtomicU64; BUCKETS],
}

/// A copy of [`ModelStats`] at one moment (or the difference of two).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub errors: u64,
    /// Requests per upstream-duration bucket (non-cumulative).
    pub upstream: [u64; BUCKETS],
    pub ttft: [u64; BUCKETS],
}

fn bucket(d: Duration) -> usize {
    let s = d.as_secs_f64();
    UPSTREAM_BUCKETS.iter().position(|b| s <= *b).unwrap_or(BUCKETS - 1)
}

impl ModelStats {
    /// One answered request.
    pub fn observe(&self, error: bool, upstream: Option<Duration>, ttft: Option<Duration>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(u) = upstream {
            self.upstream[bucket(u)].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(t) = ttft {
            self.ttft[bucket(t)].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn counts(&self) -> Counts {
        let load = |a: &[AtomicU64; BUCKETS]| std::array::from_fn(|i| a[i].load(Ordering::Relaxed));
        Counts {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            upstream: load(&self.upstream),
            ttft: load(&self.ttft),
        }
    }
}

impl Counts {
    /// What was added since `earlier`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            upstream: std::array::from_fn(|i| self.upstream[i].saturating_sub(earlier.upstream[i])),
            ttft: std::array::from_fn(|i| self.ttft[i].saturating_sub(earlier.ttft[i])),
        }
    }
}

/// The `q` quantile (0–1) of bucket counts, interpolated linearly inside
/// its bucket as Prometheus' `histogram_quantile` does (the slowest bucket
/// answers its lower bound). `None` without samples.
pub fn quantile(buckets: &[u64; BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut seen = 0u64;
    for (i, n) in buckets.iter().enumerate() {
        if *n > 0 && (seen + n) as f64 >= rank {
            let lower = if i == 0 { 0.0 } else { UPSTREAM_BUCKETS[i - 1] };
            let Some(upper) = UPSTREAM_BUCKETS.get(i) else { return Some(lower) };
            return Some(lower + (upper - lower) * ((rank - seen as f64) / *n as f64));
        }
        seen += n;
    }
    UPSTREAM_BUCKETS.last().copied()
}

/// Every model label's stats, in the order first seen.
type Registry = Mutex<Vec<(String, Arc<ModelStats>)>>;

static MODELS: LazyLock<Registry> = LazyLock::new(|| Mutex::new(Vec::new()));

/// The stats of `model` (a metrics label: a configured name, `other` or
/// `none`), made on first use.
pub fn for_model(model: &str) -> Arc<ModelStats> {
    let mut all = MODELS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, s)) = all.iter().find(|(m, _)| m == model) {
        return s.clone();
    }
    let s = Arc::new(ModelStats::default());
    all.push((model.to_string(), s.clone()));
    s
}

/// Every model's counts now.
pub fn all() -> Vec<(String, Counts)> {
    MODELS.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(m, s)| (m.clone(), s.counts())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_p95_is_interpolated_inside_its_bucket() {
        let mut b = [0u64; BUCKETS];
        // 100 requests: 90 under 0.1 s, 10 between 0.5 and 1 s.
        b[2] = 90;
        b[5] = 10;
        let p95 = quantile(&b, 0.95).unwrap();
        assert!((p95 - 0.75).abs() < 1e-9, "{p95}");
        assert!((quantile(&b, 0.5).unwrap() - (0.05 + 0.05 * 50.0 / 90.0)).abs() < 1e-9);
        assert_eq!(quantile(&[0; BUCKETS], 0.95), None);
        let mut slow = [0u64; BUCKETS];
        slow[BUCKETS - 1] = 3;
        assert_eq!(quantile(&slow, 0.95), Some(300.0));
    }

    #[test]
    fn counts_are_cumulative_and_diffed() {
        let s = ModelStats::default();
        s.observe(false, Some(Duration::from_millis(40)), None);
        let a = s.counts();
        s.observe(true, Some(Duration::from_secs(3)), Some(Duration::from_millis(200)));
        let d = s.counts().since(&a);
        assert_eq!((d.requests, d.errors), (1, 1));
        assert_eq!(d.upstream[bucket(Duration::from_secs(3))], 1);
        assert_eq!(d.ttft.iter().sum::<u64>(), 1);
    }
}
