//! Waits between tries of one model: the upstream's Retry-After when it
//! is short enough, else exponential backoff with full jitter. The policy
//! numbers are config (`retry:`, [`Retry`]); this owns what they mean.
//! It must not choose the next model (the gateway's attempt loop does).

use std::hash::BuildHasher;
use std::time::Duration;

use crate::config::Retry;

impl Retry {
    /// How long to wait before try `n + 1` of the same model after try `n`
    /// failed: the upstream's Retry-After when given (`None` when it is over
    /// `max_retry_after`: move on instead), else exponential backoff with
    /// full jitter.
    pub fn wait(&self, n: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if let Some(ra) = retry_after {
            return (ra <= self.max_retry_after).then_some(ra);
        }
        let cap = self.backoff.saturating_mul(1 << n.saturating_sub(1).min(16)).min(self.max_backoff);
        let jitter = std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now()) as f64 / u64::MAX as f64;
        Some(cap.mul_f64(jitter))
    }
}
