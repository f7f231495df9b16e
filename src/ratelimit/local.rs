//! The counts of one process: a sliding-window log per count, under one
//! lock (admission checks and adds to every count a request falls under
//! at once, so concurrent requests never overrun a limit).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use super::{Bucket, Refusal, WINDOW_MS};

#[derive(Default)]
struct Log {
    /// (admitted at ms, id, tokens), oldest first.
    entries: VecDeque<(i64, String, u64)>,
    tokens: u64,
}

impl Log {
    fn prune(&mut self, now: i64) {
        while let Some((t, _, n)) = self.entries.front() {
            if *t > now - WINDOW_MS {
                break;
            }
            self.tokens -= *n;
            self.entries.pop_front();
        }
    }
}

#[derive(Default)]
struct Counts {
    /// By bucket id.
    logs: HashMap<String, Log>,
    /// Distinct buckets per limit name (for `max_buckets`).
    per_limit: HashMap<String, usize>,
}

pub(super) struct Local {
    counts: Mutex<Counts>,
    epoch: Instant,
}

impl Default for Local {
    fn default() -> Self {
        Local { counts: Mutex::new(Counts::default()), epoch: Instant::now() }
    }
}

impl Local {
    fn now(&self) -> i64 {
        self.epoch.elapsed().as_millis() as i64
    }

    pub(super) fn admit(&self, buckets: &[Bucket], id: &str, worst: u64) -> Result<(), Refusal> {
        let now = self.now();
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        for (i, b) in buckets.iter().enumerate() {
            if let Some(log) = c.logs.get_mut(&b.id) {
                log.prune(now);
                if let Some(r) = judge(i, b, log, worst, now) {
                    return Err(r);
                }
            } else if b.per.is_some() && c.per_limit.get(&b.limit).copied().unwrap_or(0) >= b.max_buckets {
                // Forget counts whose window has passed, then look again.
                let limit = b.limit.clone();
                let prefix = format!("{limit}\u{1f}");
                let before = c.logs.len();
                c.logs.retain(|k, log| {
                    log.prune(now);
                    !(k.starts_with(&prefix) && log.entries.is_empty())
                });
                let removed = before - c.logs.len();
                if let Some(n) = c.per_limit.get_mut(&limit) {
                    *n = n.saturating_sub(removed);
                }
                if c.per_limit.get(&limit).copied().unwrap_or(0) >= b.max_buckets {
                    return Err(Refusal { bucket: i, requests: true, wait_ms: Some(WINDOW_MS), full: true });
                }
            }
            if worst > 0 && b.amounts.tpm.is_some_and(|t| worst > t) {
                return Err(Refusal { bucket: i, requests: false, wait_ms: None, full: false });
            }
            if b.amounts.rpm == Some(0) {
                return Err(Refusal { bucket: i, requests: true, wait_ms: Some(WINDOW_MS), full: false });
            }
        }
        for b in buckets {
            if !c.logs.contains_key(&b.id) {
                *c.per_limit.entry(b.limit.clone()).or_default() += 1;
            }
            let log = c.logs.entry(b.id.clone()).or_default();
            log.entries.push_back((now, id.to_string(), worst));
            log.tokens += worst;
        }
        Ok(())
    }

    /// Set the tokens of entry `id` (settlement, or 0 to give them back).
    pub(super) fn adjust(&self, buckets: &[Bucket], id: &str, tokens: u64) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        for b in buckets {
            let Some(log) = c.logs.get_mut(&b.id) else { continue };
            if let Some(e) = log.entries.iter_mut().rev().find(|e| e.1 == id) {
                log.tokens = log.tokens - e.2 + tokens;
                e.2 = tokens;
            }
        }
    }
}

/// Whether one more request of `worst` tokens fits in `log`; if not, when
/// it will.
fn judge(i: usize, b: &Bucket, log: &Log, worst: u64, now: i64) -> Option<Refusal> {
    let at = |k: usize| log.entries.get(k).map_or(now, |e| e.0) + WINDOW_MS - now;
    if let Some(rpm) = b.amounts.rpm {
        let n = log.entries.len() as u64;
        if n + 1 > rpm {
            // The entry whose leaving makes room.
            return Some(Refusal { bucket: i, requests: true, wait_ms: Some(at((n - rpm) as usize)), full: false });
        }
    }
    if let Some(tpm) = b.amounts.tpm {
        if worst > tpm {
            return Some(Refusal { bucket: i, requests: false, wait_ms: None, full: false });
        }
        if log.tokens + worst > tpm {
            let need = log.tokens + worst - tpm;
            let mut freed = 0;
            let mut k = 0;
            for (j, e) in log.entries.iter().enumerate() {
                freed += e.2;
                k = j;
                if freed >= need {
                    break;
                }
            }
            return Some(Refusal { bucket: i, requests: false, wait_ms: Some(at(k)), full: false });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateAmounts;

    fn bucket(rpm: Option<u64>, tpm: Option<u64>) -> Bucket {
        Bucket { id: "b".into(), limit: "b".into(), per: None, amounts: RateAmounts { rpm, tpm }, max_buckets: 1 }
    }

    #[test]
    fn requests_and_tokens_are_capped_and_settled() {
        let l = Local::default();
        let b = [bucket(Some(3), Some(1000))];
        for i in 0..3 {
            assert!(l.admit(&b, &i.to_string(), 300).is_ok());
        }
        let r = l.admit(&b, "x", 1).unwrap_err();
        assert!(r.requests && r.wait_ms.is_some_and(|w| w > 0 && w <= WINDOW_MS));
        let l = Local::default();
        assert!(l.admit(&b, "a", 600).is_ok());
        let r = l.admit(&b, "b", 600).unwrap_err();
        assert!(!r.requests);
        // Settled at 100 tokens: room again.
        l.adjust(&b, "a", 100);
        assert!(l.admit(&b, "b", 600).is_ok());
        assert!(l.admit(&b, "c", 2000).unwrap_err().wait_ms.is_none(), "over the limit alone never fits");
    }
}
