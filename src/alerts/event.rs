//! What happened, with the figures an alert reports: sent by budgets, the
//! spike watch and the breakers ([`super::emit`]), or made by the
//! evaluator. Which rule it belongs to, what it is about (its subject),
//! and how long the same alert stays quiet after it fired.

use std::time::Duration;

use crate::config::{Alerts, LatencyOf, RuleKind};

/// A budget's figures when an alert about it fires.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetFigures {
    pub budget: String,
    /// As `GET /admin/budgets` writes it (`global`, `provider=openai`).
    pub scope: String,
    pub window: &'static str,
    /// The window's bounds (Unix seconds) and its end in RFC 3339.
    pub window_start: i64,
    pub window_end: i64,
    pub resets_at: String,
    pub spent_usd: f64,
    pub reserved_usd: f64,
    pub limit_usd: Option<f64>,
    pub spent_tokens: u64,
    pub limit_tokens: Option<u64>,
    pub requests: u64,
    pub limit_requests: Option<u64>,
    pub warn_at: f64,
    /// The highest used share of any limit (0.82 = 82 %).
    pub used: f64,
    /// `reject`, `downgrade` or `warn`.
    pub on_exceed: &'static str,
    pub downgrade_to: Option<String>,
    /// What happened to the request that found it used up (`reject`,
    /// `downgrade`, `warn`); `None` when settled spend reached the limit.
    pub action: Option<&'static str>,
}

/// The spend spike watch's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpikeFigures {
    pub last_hour_usd: f64,
    pub baseline_avg_usd: f64,
    pub factor: f64,
    pub baseline_hours: u32,
    pub min_usd: f64,
}

/// Something an alert rule fires on.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Settled spend passed `warn_at` × a limit (once per budget window).
    BudgetWarn(BudgetFigures),
    /// A limit was reached, or a request did not fit in what was left.
    BudgetExceeded(BudgetFigures),
    SpendSpike(SpikeFigures),
    /// A closed breaker opened (a failed half-open probe does not count).
    BreakerOpen {
        model: String,
        provider: String,
        reason: &'static str,
        consecutive: u32,
        cooldown: Duration,
    },
    /// Every model of a route is skipped: (model, why) for each.
    RouteDown {
        route: String,
        models: Vec<(String, &'static str)>,
    },
    ErrorRate {
        model: String,
        rate: f64,
        errors: u64,
        requests: u64,
        threshold: f64,
        window: Duration,
    },
    LatencyP95 {
        model: String,
        p95_s: f64,
        threshold_s: f64,
        requests: u64,
        window: Duration,
        of: LatencyOf,
    },
    CostPerHour {
        last_hour_usd: f64,
        threshold_usd: f64,
    },
    /// `modelgate alerts test`.
    Test,
}

impl Event {
    /// The rule it belongs to (`None`: a test alert, never suppressed).
    pub fn rule(&self) -> Option<RuleKind> {
        Some(match self {
            Event::BudgetWarn(_) => RuleKind::BudgetWarn,
            Event::BudgetExceeded(_) => RuleKind::BudgetExceeded,
            Event::SpendSpike(_) => RuleKind::SpendSpike,
            Event::BreakerOpen { .. } => RuleKind::BreakerOpen,
            Event::RouteDown { .. } => RuleKind::RouteDown,
            Event::ErrorRate { .. } => RuleKind::ErrorRate,
            Event::LatencyP95 { .. } => RuleKind::LatencyP95,
            Event::CostPerHour { .. } => RuleKind::CostPerHour,
            Event::Test => return None,
        })
    }

    /// What the alert is about: a budget, `model@provider`, a route, a
    /// model, or `spend`.
    pub fn subject(&self) -> String {
        match self {
            Event::BudgetWarn(b) | Event::BudgetExceeded(b) => b.budget.clone(),
            Event::BreakerOpen { model, provider, .. } => format!("{model}@{provider}"),
            Event::RouteDown { route, .. } => route.clone(),
            Event::ErrorRate { model, .. } | Event::LatencyP95 { model, .. } => model.clone(),
            Event::SpendSpike(_) | Event::CostPerHour { .. } => "spend".into(),
            Event::Test => "test".into(),
        }
    }

    /// The same alert is sent once per condition per window: the key an
    /// alert is remembered by, and how long it stays quiet (`now`: Unix
    /// seconds). A budget alert is about one budget window, so it stays
    /// quiet until that window ends; the others for their rule's
    /// `window_s`.
    pub fn quiet(&self, cfg: &Alerts, now: i64) -> Option<(String, Duration)> {
        let rule = self.rule()?;
        let subject = self.subject();
        Some(match self {
            Event::BudgetWarn(b) | Event::BudgetExceeded(b) => {
                (format!("{}\u{1f}{subject}\u{1f}{}", rule.as_str(), b.window_start), Duration::from_secs((b.window_end - now).max(60) as u64))
            }
            _ => (format!("{}\u{1f}{subject}", rule.as_str()), cfg.rule(rule).window),
        })
    }
}
