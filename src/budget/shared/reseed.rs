//! Counters that lost spend: each answer's epochs are compared with what
//! this process saw, and spend a vanished or reset counter lost is added
//! back from the ledger totals the caller passes. It must not read the
//! ledger itself.

use super::super::amount::Amounts;
use super::{epoch, int, Shared, View, KEY_GRACE_SECS};

impl Shared {
    /// Note the epochs Redis answered with; `settled`: the amounts this
    /// answer's settlement added to every counter.
    pub(super) fn observe(&self, keys: &[(String, i64, i64)], epochs: &[i64], settled: Option<Amounts>) {
        let mut s = self.state();
        for ((name, start, end), &epoch) in keys.iter().zip(epochs) {
            let add = settled.unwrap_or_default();
            match s.views.get_mut(&(name.clone(), *start)) {
                Some(v) if v.epoch == epoch => v.mine = v.mine + add,
                known => {
                    // Suspect: an epoch that changed or vanished (a counter
                    // that was missing and now exists was created after we
                    // looked, holding what we settled since), and a counter
                    // missing the first time we look, when this process may
                    // have spend in its window from before it started.
                    let changed = match known {
                        Some(v) => v.epoch != 0,
                        None => epoch == 0 && *start < self.started,
                    };
                    s.views.insert((name.clone(), *start), View { epoch, mine: add });
                    if changed {
                        s.reseed.insert((name.clone(), *start, *end));
                    }
                }
            }
        }
        // Forget windows long gone (a month is the longest).
        if s.views.len() > 4096 {
            let now = self.clock.now().as_second();
            s.views.retain(|k, _| k.1 > now - 40 * 86_400);
        }
    }

    /// Counters that lost this process's spend (name, window start, end).
    pub fn take_reseed(&self) -> Vec<(String, i64, i64)> {
        self.state().reseed.drain().collect()
    }

    /// Add back what this process spent in a counter that lost it: `total`
    /// is its spend in that window from the ledger; what it already put into
    /// the counter's current epoch, and settlements still queued for Redis,
    /// are not added again. An error leaves the counter for the next try.
    pub async fn reseed(&self, name: &str, start: i64, end: i64, total: Amounts) -> Result<(), String> {
        for _ in 0..3 {
            let (view, queued) = {
                let s = self.state();
                let view = s.views.get(&(name.to_string(), start)).copied().unwrap_or_default();
                let queued = s.pending.iter().filter(|p| p.keys.iter().any(|k| k.0 == name && k.1 == start)).fold(Amounts::default(), |a, p| a + p.actual);
                (view, queued)
            };
            let add = total - view.mine - queued;
            if add == Amounts::default() {
                return Ok(());
            }
            let [c, h] = self.keys(name, start);
            let mut inv = self.seed.prepare_invoke();
            inv.key(c)
                .key(h)
                .arg(view.epoch)
                .arg(epoch())
                .arg(format!("{:016x}", self.nonce))
                .arg(int(add.nanos))
                .arg(int(add.tokens))
                .arg(int(add.requests))
                .arg(end + KEY_GRACE_SECS);
            let v = match self.run(inv).await {
                Ok(v) => v,
                Err(e) => {
                    self.state().reseed.insert((name.to_string(), start, end));
                    return Err(e.message);
                }
            };
            let (applied, now) = (v.first() == Some(&1), v.get(1).copied().unwrap_or(0));
            let mut s = self.state();
            if applied {
                s.views.insert((name.to_string(), start), View { epoch: now, mine: view.mine + add });
                tracing::warn!(budget = name, window_start = %crate::budget::window::rfc3339(start), usd = crate::budget::amount::usd(add.nanos), tokens = add.tokens, requests = add.requests, url = %self.url, "a budget counter in Redis lost this process's spend (Redis restarted without its data, or was flushed); added it back from the local ledger. Run Redis with appendonly yes so a restart keeps budgets");
                return Ok(());
            }
            // The counter changed again meanwhile: seed the new epoch.
            s.views.insert((name.to_string(), start), View { epoch: now, mine: Amounts::default() });
        }
        Ok(())
    }
}
