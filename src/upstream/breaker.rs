//! The circuit breaker of one model@provider: closed, open for a cool-down
//! after N consecutive failures or a failure rate over a window, then one
//! half-open probe that closes or re-opens it.
//!
//! Time is passed in (`now`), so the state machine is tested without
//! waiting. `upstream::health` keeps one [`Circuit`] per model@provider.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::config::Breaker;

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Closed,
    /// Skipped until then.
    Open {
        until: Instant,
    },
    /// One probe request is in flight since then.
    HalfOpen {
        since: Instant,
    },
}

impl State {
    fn gauge(self) -> f64 {
        match self {
            State::Closed => 0.0,
            State::Open { .. } => 1.0,
            State::HalfOpen { .. } => 2.0,
        }
    }
}

/// Whether an attempt at a model may go ahead.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admit {
    /// Go; `probe` when this request tests a half-open breaker.
    Go { probe: bool },
    /// The breaker is open: skip the model for this long.
    Skip { retry_in: Duration },
}

#[derive(Debug)]
pub struct Circuit {
    state: State,
    consecutive: u32,
    /// Outcomes within the breaker's window: (when, failed).
    recent: VecDeque<(Instant, bool)>,
    last_error: Option<&'static str>,
}

impl Default for Circuit {
    fn default() -> Self {
        Circuit { state: State::Closed, consecutive: 0, recent: VecDeque::new(), last_error: None }
    }
}

impl Circuit {
    /// May an attempt go ahead now? A due probe is claimed.
    pub fn admit(&mut self, cfg: &Breaker, now: Instant, model: &str, provider: &str) -> Admit {
        match self.state {
            State::Closed => Admit::Go { probe: false },
            State::Open { until } if now < until => Admit::Skip { retry_in: until - now },
            State::HalfOpen { since } if now < since + cfg.cooldown => Admit::Skip { retry_in: since + cfg.cooldown - now },
            // Cool-down over, or a probe that never reported: probe now.
            State::Open { .. } | State::HalfOpen { .. } => {
                self.set(State::HalfOpen { since: now }, model, provider);
                Admit::Go { probe: true }
            }
        }
    }

    /// The outcome of an attempt: `Err(reason)` for a failure that counts.
    pub fn record(&mut self, cfg: &Breaker, outcome: Result<(), &'static str>, now: Instant, model: &str, provider: &str) {
        while self.recent.front().is_some_and(|(t, _)| now.saturating_duration_since(*t) > cfg.window) {
            self.recent.pop_front();
        }
        self.recent.push_back((now, outcome.is_err()));
        match outcome {
            Ok(()) => {
                self.consecutive = 0;
                if self.state != State::Closed {
                    self.recent.clear();
                    self.set(State::Closed, model, provider);
                }
            }
            Err(reason) => {
                self.consecutive += 1;
                self.last_error = Some(reason);
                let failed = self.recent.iter().filter(|(_, f)| *f).count();
                let rate_trips = self.recent.len() >= cfg.min_requests.max(1) as usize && failed as f64 >= cfg.failure_rate * self.recent.len() as f64;
                let trips = matches!(self.state, State::HalfOpen { .. }) || (self.state == State::Closed && (self.consecutive >= cfg.failures || rate_trips));
                if trips {
                    tracing::warn!(
                        model,
                        provider,
                        reason,
                        consecutive = self.consecutive,
                        cooldown_ms = cfg.cooldown.as_millis() as u64,
                        "circuit breaker opened; the model is skipped until the cool-down ends"
                    );
                    // A failed half-open probe re-opens it: the same outage, no new alert.
                    if self.state == State::Closed {
                        crate::alerts::emit(crate::alerts::Event::BreakerOpen {
                            model: model.to_string(),
                            provider: provider.to_string(),
                            reason,
                            consecutive: self.consecutive,
                            cooldown: cfg.cooldown,
                        });
                    }
                    self.set(State::Open { until: now + cfg.cooldown }, model, provider);
                }
            }
        }
    }

    /// Whether the model would be skipped now (open, no probe due).
    pub fn is_open(&self, cfg: &Breaker, now: Instant) -> bool {
        match self.state {
            State::Closed => false,
            State::Open { until } => now < until,
            State::HalfOpen { since } => now < since + cfg.cooldown,
        }
    }

    /// Its entry in `GET /admin/health`.
    pub fn report(&self, model: &str, provider: &str, now: Instant) -> Value {
        let (state, retry_in) = match self.state {
            State::Closed => ("closed", None),
            State::Open { until } => ("open", Some(until.saturating_duration_since(now).as_millis() as u64)),
            State::HalfOpen { .. } => ("half_open", None),
        };
        json!({"model": model, "provider": provider, "state": state, "consecutive_failures": self.consecutive,
               "recent_attempts": self.recent.len(), "recent_failures": self.recent.iter().filter(|(_, f)| *f).count(),
               "last_error": self.last_error, "retry_in_ms": retry_in})
    }

    fn set(&mut self, state: State, model: &str, provider: &str) {
        self.state = state;
        crate::metrics::circuit_state(model, provider, state.gauge());
    }
}
