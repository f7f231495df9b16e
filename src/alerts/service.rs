//! The alerts background service: events from the request path and the
//! evaluator's timer become alerts — each condition once per window (the
//! quiet map), logged, counted, and handed to the sink workers. It reads
//! the current snapshot at every step, so `alerts:` follows reloads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use super::deliver::Outbox;
use super::eval::{Evaluator, Inputs};
use super::{stats, Alert, Event};
use crate::budget::Budgets;
use crate::config::Snapshot;
use crate::upstream::health::Health;

pub struct Service {
    pub state: Arc<ArcSwap<Snapshot>>,
    pub budgets: Budgets,
    pub health: Health,
    /// From [`super::channel`]; taken when the service starts.
    pub events: Mutex<Option<mpsc::Receiver<Event>>>,
}

/// Alerts recently sent: key → quiet until.
#[derive(Default)]
struct Quiet(HashMap<String, Instant>);

impl Quiet {
    /// Whether an alert under `key` may fire now (and if so, remember it).
    fn admit(&mut self, key: String, quiet_for: Duration, now: Instant) -> bool {
        self.0.retain(|_, until| *until > now);
        if self.0.contains_key(&key) {
            return false;
        }
        self.0.insert(key, now + quiet_for);
        true
    }
}

/// Turn `e` into an alert if its rule is on and it is not quiet; log,
/// count and queue it.
fn raise(e: Event, snap: &Snapshot, quiet: &mut Quiet, outbox: &Outbox) {
    let cfg = &snap.alerts;
    let Some(rule) = e.rule() else { return };
    if !cfg.rule(rule).enabled {
        return;
    }
    let now = jiff::Timestamp::now();
    if let Some((key, quiet_for)) = e.quiet(cfg, now.as_second()) {
        if !quiet.admit(key, quiet_for, Instant::now()) {
            tracing::debug!(rule = rule.as_str(), subject = %e.subject(), "alert already sent in its window");
            return;
        }
    }
    let alert = Arc::new(Alert::new(&e, cfg, now));
    crate::metrics::alert_fired(rule.as_str());
    tracing::warn!(alert = %alert.id, rule = alert.rule, severity = alert.severity, sinks = cfg.sinks.len(), "{}", alert.summary);
    outbox.send(&alert, cfg);
}

impl Service {
    /// The figures one evaluation reads; sets `modelgate_route_up` where
    /// it changed (`shown`: what the gauges say).
    fn inputs(&self, snap: &Snapshot, shown: &mut HashMap<String, bool>) -> Inputs {
        let down = self.health.unservable(snap, Instant::now());
        for r in &snap.routes {
            let up = !down.iter().any(|(d, _)| *d == r.name);
            if shown.get(&r.name) != Some(&up) {
                crate::metrics::route_up(&r.name, up);
                shown.insert(r.name.clone(), up);
            }
        }
        Inputs { models: stats::all(), last_hour_usd: self.budgets.last_hour_usd(), down_routes: down }
    }
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Service {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let Some(mut rx) = self.events.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
        let outbox = Outbox::new();
        let mut quiet = Quiet::default();
        let mut eval = Evaluator::default();
        let mut routes_shown = HashMap::new();
        let mut period = self.state.load().alerts.eval_interval;
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                e = rx.recv() => match e {
                    Some(e) => raise(e, &self.state.load(), &mut quiet, &outbox),
                    None => return,
                },
                _ = tick.tick() => {
                    let snap = self.state.load_full();
                    for e in eval.step(Instant::now(), self.inputs(&snap, &mut routes_shown), &snap.alerts) {
                        raise(e, &snap, &mut quiet, &outbox);
                    }
                    if snap.alerts.eval_interval != period {
                        period = snap.alerts.eval_interval;
                        tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quiet_map_lets_an_alert_through_once_per_window() {
        let mut q = Quiet::default();
        let t = Instant::now();
        assert!(q.admit("k".into(), Duration::from_secs(60), t));
        assert!(!q.admit("k".into(), Duration::from_secs(60), t + Duration::from_secs(59)));
        assert!(q.admit("other".into(), Duration::from_secs(60), t + Duration::from_secs(1)));
        assert!(q.admit("k".into(), Duration::from_secs(60), t + Duration::from_secs(61)));
    }
}
