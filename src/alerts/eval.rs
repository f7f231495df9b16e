//! The threshold rules, evaluated on a timer: error rate and p95 latency per
//! model over a rolling window, spend in the last hour, and routes whose
//! every model is skipped. A condition raises its event when it becomes
//! true; it is raised again only after it was false at some evaluation
//! (and then the alert's quiet window still applies).
//!
//! Time is passed in, so tests step it; inputs are plain figures.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::event::Event;
use super::stats::{quantile, Counts};
use crate::config::{Alerts, LatencyOf, RuleKind};

/// What one evaluation looks at.
#[derive(Debug, Default)]
pub struct Inputs {
    /// Cumulative counts per model label.
    pub models: Vec<(String, Counts)>,
    /// Settled spend of the last 60 minutes.
    pub last_hour_usd: f64,
    /// Routes none of whose models can serve: (route, [(model, why)]).
    pub down_routes: Vec<(String, Vec<(String, &'static str)>)>,
}

#[derive(Default)]
pub struct Evaluator {
    /// Earlier cumulative counts, oldest first.
    history: VecDeque<(Instant, HashMap<String, Counts>)>,
    /// Conditions true at the last evaluation: (rule, subject).
    active: HashSet<(RuleKind, String)>,
}

impl Evaluator {
    /// The counts `window` before `now`: the newest snapshot at least that
    /// old, else the oldest one (a window not yet full since start).
    fn base(&self, now: Instant, window: Duration) -> Option<&HashMap<String, Counts>> {
        let cutoff = now.checked_sub(window);
        let older = self.history.iter().rev().find(|(t, _)| cutoff.is_some_and(|c| *t <= c));
        older.or(self.history.front()).map(|(_, m)| m)
    }

    /// Evaluate at `now`; returns the events of conditions that became true.
    pub fn step(&mut self, now: Instant, inputs: Inputs, cfg: &Alerts) -> Vec<Event> {
        let mut holds: Vec<((RuleKind, String), Event)> = Vec::new();
        let current: HashMap<String, Counts> = inputs.models.into_iter().collect();
        let er = cfg.rule(RuleKind::ErrorRate);
        if er.enabled {
            for (model, d) in self.window_deltas(now, er.window, &current) {
                if d.requests >= er.min_requests.max(1) {
                    let rate = d.errors as f64 / d.requests as f64;
                    if rate > er.threshold {
                        let e =
                            Event::ErrorRate { model: model.clone(), rate, errors: d.errors, requests: d.requests, threshold: er.threshold, window: er.window };
                        holds.push(((RuleKind::ErrorRate, model), e));
                    }
                }
            }
        }
        let lat = cfg.rule(RuleKind::LatencyP95);
        if lat.enabled {
            for (model, d) in self.window_deltas(now, lat.window, &current) {
                let buckets = match lat.of {
                    LatencyOf::Upstream => d.upstream,
                    LatencyOf::Ttft => d.ttft,
                };
                let n: u64 = buckets.iter().sum();
                if n >= lat.min_requests.max(1) {
                    if let Some(p95) = quantile(&buckets, 0.95).filter(|p| *p > lat.threshold) {
                        let e = Event::LatencyP95 { model: model.clone(), p95_s: p95, threshold_s: lat.threshold, requests: n, window: lat.window, of: lat.of };
                        holds.push(((RuleKind::LatencyP95, model), e));
                    }
                }
            }
        }
        let cost = cfg.rule(RuleKind::CostPerHour);
        if cost.enabled && inputs.last_hour_usd > cost.threshold {
            holds.push(((RuleKind::CostPerHour, "spend".into()), Event::CostPerHour { last_hour_usd: inputs.last_hour_usd, threshold_usd: cost.threshold }));
        }
        if cfg.rule(RuleKind::RouteDown).enabled {
            for (route, models) in inputs.down_routes {
                holds.push(((RuleKind::RouteDown, route.clone()), Event::RouteDown { route, models }));
            }
        }
        // Keep what the longest window needs (and one snapshot more).
        let longest = [er, lat].iter().filter(|r| r.enabled).map(|r| r.window).max().unwrap_or_default();
        while self.history.len() > 1 && self.history.get(1).is_some_and(|(t, _)| now.checked_sub(longest).is_some_and(|c| *t <= c)) {
            self.history.pop_front();
        }
        self.history.push_back((now, current));
        let now_true: HashSet<(RuleKind, String)> = holds.iter().map(|(k, _)| k.clone()).collect();
        let fired = holds.into_iter().filter(|(k, _)| !self.active.contains(k)).map(|(_, e)| e).collect();
        self.active = now_true;
        fired
    }

    /// Each model's counts within `window` before `now`.
    fn window_deltas(&self, now: Instant, window: Duration, current: &HashMap<String, Counts>) -> Vec<(String, Counts)> {
        let base = self.base(now, window);
        current
            .iter()
            .map(|(m, c)| {
                let d = match base.and_then(|b| b.get(m)) {
                    Some(b) => c.since(b),
                    // A model first seen inside the window: all its counts.
                    None => *c,
                };
                (m.clone(), d)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::stats::BUCKETS;
    use crate::config::Rule;

    fn cfg() -> Alerts {
        let mut a = Alerts::default();
        a.rules[RuleKind::ErrorRate as usize] =
            Rule { enabled: true, threshold: 0.1, window: Duration::from_secs(60), min_requests: 10, ..Rule::default_for(RuleKind::ErrorRate) };
        a.rules[RuleKind::LatencyP95 as usize] =
            Rule { enabled: true, threshold: 1.0, window: Duration::from_secs(60), min_requests: 10, ..Rule::default_for(RuleKind::LatencyP95) };
        a.rules[RuleKind::CostPerHour as usize] = Rule { enabled: true, threshold: 50.0, ..Rule::default_for(RuleKind::CostPerHour) };
        a
    }

    fn counts(requests: u64, errors: u64, slow: u64) -> Counts {
        let mut upstream = [0; BUCKETS];
        upstream[1] = requests - slow;
        upstream[7] = slow; // 2.5–5 s
        Counts { requests, errors, upstream, ttft: [0; BUCKETS] }
    }

    fn inputs(c: Counts, usd: f64) -> Inputs {
        Inputs { models: vec![("gpt-4o".into(), c)], last_hour_usd: usd, down_routes: Vec::new() }
    }

    #[test]
    fn each_condition_fires_once_while_it_holds_and_again_after_it_cleared() {
        let cfg = cfg();
        let mut ev = Evaluator::default();
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        assert!(ev.step(s(0), inputs(counts(0, 0, 0), 0.0), &cfg).is_empty());
        // 20 requests, 5 errors (25 %), 5 slow (p95 in 2.5–5 s), $60 last hour.
        let fired = ev.step(s(10), inputs(counts(20, 5, 5), 60.0), &cfg);
        let rules: Vec<_> = fired.iter().filter_map(Event::rule).collect();
        assert_eq!(rules, [RuleKind::ErrorRate, RuleKind::LatencyP95, RuleKind::CostPerHour], "{fired:?}");
        match &fired[0] {
            Event::ErrorRate { rate, requests, .. } => assert_eq!((*rate, *requests), (0.25, 20)),
            e => panic!("{e:?}"),
        }
        // Still true: nothing new.
        assert!(ev.step(s(20), inputs(counts(40, 10, 10), 61.0), &cfg).is_empty());
        // 100 good requests later the window (60 s) holds only them: cleared.
        assert!(ev.step(s(80), inputs(counts(140, 10, 10), 10.0), &cfg).is_empty());
        assert!(ev.active.is_empty(), "{:?}", ev.active);
        // Bad again: fires again (the service's quiet window decides whether it is sent).
        let again = ev.step(s(90), inputs(counts(170, 30, 10), 10.0), &cfg);
        assert_eq!(again.iter().filter_map(Event::rule).collect::<Vec<_>>(), [RuleKind::ErrorRate]);
    }

    #[test]
    fn too_few_requests_or_disabled_rules_never_fire() {
        let mut cfg = cfg();
        let mut ev = Evaluator::default();
        let t0 = Instant::now();
        ev.step(t0, inputs(counts(0, 0, 0), 0.0), &cfg);
        assert!(ev.step(t0 + Duration::from_secs(5), inputs(counts(5, 5, 5), 0.0), &cfg).is_empty(), "5 requests < min_requests 10");
        cfg.rules[RuleKind::ErrorRate as usize].enabled = false;
        cfg.rules[RuleKind::LatencyP95 as usize].enabled = false;
        assert!(ev.step(t0 + Duration::from_secs(6), inputs(counts(50, 50, 50), 0.0), &cfg).is_empty());
        let down = Inputs { down_routes: vec![("planning".into(), vec![("gpt-4o".into(), "circuit_open")])], ..Inputs::default() };
        let fired = ev.step(t0 + Duration::from_secs(7), down, &cfg);
        assert!(matches!(&fired[..], [Event::RouteDown { route, .. }] if route == "planning"), "{fired:?}");
    }
}
