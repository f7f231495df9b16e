//! Spend-spike detection: spend per minute, and an alert when the last
//! hour's spend is over `factor` × the average hour of the baseline before
//! it (`spend_spike:`).
//!
//! It only watches spend; it must not refuse or reroute anything.

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::amount::usd;
use crate::config::Spike;

/// Spend per minute and whether the last check saw a spike.
#[derive(Debug, Default)]
pub(super) struct SpikeWatch {
    pub(super) config: Spike,
    /// Spend per minute (Unix minute → nano-USD).
    pub(super) minutes: BTreeMap<i64, u64>,
    pub(super) spiking: bool,
    /// The minute of the last check.
    pub(super) checked: Option<i64>,
}

impl SpikeWatch {
    /// Count `cost` nano-USD spent at Unix second `secs`.
    pub(super) fn add(&mut self, secs: i64, cost: u64) {
        *self.minutes.entry(secs.div_euclid(60)).or_default() += cost;
    }

    /// Forget all spend (the history is being recounted).
    pub(super) fn clear(&mut self) {
        self.minutes.clear();
    }

    /// Spend (nano-USD) in the 60 minutes up to `now`.
    pub(super) fn last_hour(&self, now: Timestamp) -> u64 {
        let minute = now.as_second().div_euclid(60);
        self.minutes.range(minute - 59..=minute).map(|(_, v)| v).sum()
    }

    /// Spend in the last hour vs the average hour of the baseline before it
    /// (checked at most once a minute).
    pub(super) fn check(&mut self, now: Timestamp) {
        let minute = now.as_second().div_euclid(60);
        if self.checked == Some(minute) {
            return;
        }
        self.checked = Some(minute);
        let base = i64::from(self.config.baseline_hours) * 60;
        while self.minutes.first_key_value().is_some_and(|(m, _)| *m < minute - 59 - base) {
            self.minutes.pop_first();
        }
        let last_hour: u64 = self.minutes.range(minute - 59..).map(|(_, v)| v).sum();
        let before: u64 = self.minutes.range(minute - 59 - base..minute - 59).map(|(_, v)| v).sum();
        let avg = before as f64 / f64::from(self.config.baseline_hours);
        let spiking = avg > 0.0 && last_hour as f64 > self.config.factor * avg && usd(last_hour) >= self.config.min_usd;
        if spiking && !self.spiking {
            crate::metrics::spend_spike();
            crate::alerts::emit(crate::alerts::Event::SpendSpike(crate::alerts::SpikeFigures {
                last_hour_usd: usd(last_hour),
                baseline_avg_usd: avg / 1e9,
                factor: self.config.factor,
                baseline_hours: self.config.baseline_hours,
                min_usd: self.config.min_usd,
            }));
            tracing::warn!(
                last_hour_usd = usd(last_hour),
                baseline_avg_usd = usd(avg as u64),
                factor = self.config.factor,
                "spend spike: the last hour's spend is over {}× the average hour of the {} hours before",
                self.config.factor,
                self.config.baseline_hours
            );
        }
        self.spiking = spiking;
    }
}
