//! An event in words: what happened (summary), why and what it means
//! (detail), the current figures, and an id that names this alert in the
//! log, in every sink and in the optional `link`.
//!
//! It only describes; it must not decide whether an alert fires.

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::event::{BudgetFigures, Event};
use crate::config::{Alerts, LatencyOf, Severity};

/// One alert, as every sink receives it (the generic JSON body is this
/// struct; the Slack body is made from it).
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// `RULE-YYYYMMDDTHHMMSSZ-XXXXXX`: unique per alert, the same in every
    /// sink, every retry and the log line.
    pub id: String,
    pub rule: &'static str,
    pub severity: &'static str,
    /// What it is about: a budget, `model@provider`, a route, a model, `spend`.
    pub subject: String,
    pub summary: String,
    pub detail: String,
    pub figures: Map<String, Value>,
    /// RFC 3339, UTC.
    pub fired_at: String,
    /// `alerts.instance` (default: the host name).
    pub instance: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Sent by `modelgate alerts test`.
    pub test: bool,
}

fn usd(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("${v:.2}")
    } else {
        format!("${v:.4}")
    }
}

fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

fn secs(d: std::time::Duration) -> String {
    humantime::format_duration(std::time::Duration::from_secs(d.as_secs().max(1))).to_string()
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The used share in percent, one decimal (as `figures.used_pct`).
fn used_pct(b: &BudgetFigures) -> f64 {
    (b.used * 1000.0).round() / 10.0
}

/// Budget figures without the fields a budget does not set.
fn budget_figures(b: &BudgetFigures) -> Map<String, Value> {
    let mut m = obj(json!({
        "budget": b.budget, "scope": b.scope, "window": b.window,
        "spent_usd": b.spent_usd, "reserved_usd": b.reserved_usd, "limit_usd": b.limit_usd,
        "spent_tokens": b.spent_tokens, "limit_tokens": b.limit_tokens,
        "requests": b.requests, "limit_requests": b.limit_requests,
        "used_pct": used_pct(b), "warn_at": b.warn_at,
        "on_exceed": b.on_exceed, "downgrade_to": b.downgrade_to, "action": b.action,
        "resets_at": b.resets_at,
    }));
    m.retain(|_, v| !v.is_null());
    m
}

/// What the budget's limits and spend are, in words.
fn budget_spent(b: &BudgetFigures) -> String {
    let mut parts = Vec::new();
    if let Some(l) = b.limit_usd {
        parts.push(format!("{} of {} spent", usd(b.spent_usd), usd(l)));
    }
    if let Some(l) = b.limit_tokens {
        parts.push(format!("{} of {l} tokens", b.spent_tokens));
    }
    if let Some(l) = b.limit_requests {
        parts.push(format!("{} of {l} requests", b.requests));
    }
    parts.join(", ")
}

fn at_limit(b: &BudgetFigures) -> String {
    match b.on_exceed {
        "reject" => "requests it applies to are refused (429) until it resets".into(),
        "downgrade" => format!("requests it applies to go to {} until it resets", b.downgrade_to.as_deref().unwrap_or("a cheaper model")),
        _ => "requests still go through (on_exceed: warn)".into(),
    }
}

/// Summary, detail and figures of an event.
fn describe(e: &Event) -> (String, String, Map<String, Value>) {
    match e {
        Event::BudgetWarn(b) => (
            format!("Budget `{}` passed {:.0}% of its limit: {}", b.budget, b.warn_at * 100.0, budget_spent(b)),
            format!(
                "{}% of the budget is used ({} scope, per {}; warn_at {:.0}%). When it is used up, {}. It resets at {}.",
                used_pct(b),
                b.scope,
                b.window,
                b.warn_at * 100.0,
                at_limit(b),
                b.resets_at
            ),
            budget_figures(b),
        ),
        Event::BudgetExceeded(b) => {
            let what = match b.action {
                Some("reject") => "a request was refused because its worst case did not fit in what was left",
                Some("downgrade") => "a request was sent to the downgrade model because its worst case did not fit in what was left",
                Some(_) => "a request went over it and was let through (on_exceed: warn)",
                None => "settled spend reached the limit",
            };
            let state = match b.action {
                Some("reject") => "is refusing requests".to_string(),
                Some("downgrade") => format!("is downgrading requests to {}", b.downgrade_to.as_deref().unwrap_or("a cheaper model")),
                Some(_) => "is over its limit".to_string(),
                None => "reached its limit".to_string(),
            };
            (
                format!("Budget `{}` {state}: {}", b.budget, budget_spent(b)),
                format!(
                    "{} ({} scope, per {}; {} reserved by requests in flight). From now on {}. It resets at {}; raise the limit in the config to allow more now.",
                    capitalize(what),
                    b.scope,
                    b.window,
                    usd(b.reserved_usd),
                    at_limit(b),
                    b.resets_at
                ),
                budget_figures(b),
            )
        }
        Event::SpendSpike(s) => (
            format!(
                "Spend spike: {} in the last hour, {:.1}× the average hour ({})",
                usd(s.last_hour_usd),
                if s.baseline_avg_usd > 0.0 { s.last_hour_usd / s.baseline_avg_usd } else { f64::INFINITY },
                usd(s.baseline_avg_usd)
            ),
            format!(
                "The last 60 minutes cost more than spend_spike.factor ({}) × the average hour of the {} hours before them (and at least spend_spike.min_usd, {}). See `modelgate cost` for which model, app or task spends.",
                s.factor,
                s.baseline_hours,
                usd(s.min_usd)
            ),
            obj(json!({"last_hour_usd": s.last_hour_usd, "baseline_avg_usd": s.baseline_avg_usd, "factor": s.factor, "baseline_hours": s.baseline_hours, "min_usd": s.min_usd})),
        ),
        Event::BreakerOpen { model, provider, reason, consecutive, cooldown } => (
            format!("Circuit breaker opened for {model}@{provider}"),
            format!(
                "{model} on {provider} failed ({consecutive} consecutive failures, last: {reason}); it is skipped for {} and requests go to the next model of their plan, then one request probes it.",
                secs(*cooldown)
            ),
            obj(json!({"model": model, "provider": provider, "last_error": reason, "consecutive_failures": consecutive, "cooldown_ms": cooldown.as_millis() as u64})),
        ),
        Event::RouteDown { route, models } => {
            let list: Vec<String> = models.iter().map(|(m, why)| format!("{m} ({why})")).collect();
            (
                format!("Route `{route}` cannot be served: every model of it is skipped"),
                format!("Skipped: {}. Requests on this route fail (503) until a breaker closes or a provider passes its health check again.", list.join(", ")),
                obj(json!({"route": route, "models": models.iter().map(|(m, why)| json!({"model": m, "reason": why})).collect::<Vec<_>>()})),
            )
        }
        Event::ErrorRate { model, rate, errors, requests, threshold, window } => (
            format!("Error rate of {model} is {} over the last {} (threshold {})", pct(*rate), secs(*window), pct(*threshold)),
            format!(
                "{errors} of {requests} requests served by {model} failed (5xx, a provider's 429, timeouts, open breakers, broken streams; client errors and budget refusals do not count)."
            ),
            obj(json!({"model": model, "error_rate": rate, "errors": errors, "requests": requests, "threshold": threshold, "window_s": window.as_secs()})),
        ),
        Event::LatencyP95 { model, p95_s, threshold_s, requests, window, of } => {
            let what = match of {
                LatencyOf::Upstream => "upstream latency",
                LatencyOf::Ttft => "time to first token",
            };
            (
                format!("p95 {what} of {model} is {p95_s:.2} s over the last {} (threshold {threshold_s:.2} s)", secs(*window)),
                format!("95% of the {requests} requests served by {model} in the window took up to {p95_s:.2} s (estimated from the histogram buckets, as Prometheus' histogram_quantile does)."),
                obj(json!({"model": model, "p95_seconds": p95_s, "threshold_seconds": threshold_s, "requests": requests, "window_s": window.as_secs(), "of": match of { LatencyOf::Upstream => "upstream", LatencyOf::Ttft => "ttft" }})),
            )
        }
        Event::CostPerHour { last_hour_usd, threshold_usd } => (
            format!("Spend in the last hour is {} (threshold {})", usd(*last_hour_usd), usd(*threshold_usd)),
            "The settled cost of the requests of the last 60 minutes went over alerts.rules.cost_per_hour.threshold_usd. See `modelgate cost --by model` (or app, task) for who spends.".to_string(),
            obj(json!({"last_hour_usd": last_hour_usd, "threshold_usd": threshold_usd})),
        ),
        Event::Test => (
            "Test alert from modelgate".to_string(),
            "Sent by `modelgate alerts test` to check that this sink receives modelgate's alerts. Nothing is wrong.".to_string(),
            Map::new(),
        ),
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// What a value in a `link` template keeps as it is: RFC 3986 unreserved.
const URL_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// A short stable hash (FNV-1a) for ids.
fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for p in parts {
        for b in p.bytes().chain([0x1f]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}

impl Alert {
    /// The alert for `e`, fired at `now`.
    pub fn new(e: &Event, cfg: &Alerts, now: jiff::Timestamp) -> Alert {
        let (summary, detail, figures) = describe(e);
        let rule = e.rule().map_or("test", |r| r.as_str());
        let severity = match e.rule() {
            Some(r) => cfg.rule(r).severity,
            None => Severity::Info,
        };
        let subject = e.subject();
        let stamp = now.strftime("%Y%m%dT%H%M%SZ").to_string();
        let nanos = now.as_nanosecond().to_string();
        let id = format!("{rule}-{stamp}-{:06x}", fnv(&[&cfg.instance, rule, &subject, &nanos]) & 0xff_ffff);
        let link = cfg.link.as_ref().map(|t| {
            let enc = |s: &str| percent_encoding::utf8_percent_encode(s, URL_VALUE).to_string();
            t.replace("{id}", &enc(&id)).replace("{rule}", rule).replace("{subject}", &enc(&subject))
        });
        Alert {
            id,
            rule,
            severity: severity.as_str(),
            subject,
            summary,
            detail,
            figures,
            fired_at: jiff::Timestamp::from_second(now.as_second()).unwrap_or(now).to_string(),
            instance: cfg.instance.clone(),
            link,
            test: e.rule().is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> BudgetFigures {
        BudgetFigures {
            budget: "daily".into(),
            scope: "global".into(),
            window: "day",
            window_start: 0,
            window_end: 86_400,
            resets_at: "1970-01-02T00:00:00Z".into(),
            spent_usd: 8.2,
            reserved_usd: 0.1,
            limit_usd: Some(10.0),
            spent_tokens: 1000,
            limit_tokens: None,
            requests: 12,
            limit_requests: None,
            warn_at: 0.8,
            used: 0.82,
            on_exceed: "downgrade",
            downgrade_to: Some("gpt-4o-mini".into()),
            action: None,
        }
    }

    #[test]
    fn an_alert_says_what_why_and_the_figures_with_a_stable_id_shape() {
        let cfg = Alerts { instance: "web-1".into(), link: Some("https://grafana.example/d/mg?alert={id}&s={subject}".into()), ..Alerts::default() };
        let now: jiff::Timestamp = "2026-12-01T14:02:11.5Z".parse().unwrap();
        let a = Alert::new(&Event::BudgetWarn(budget()), &cfg, now);
        assert_eq!((a.rule, a.severity, a.subject.as_str(), a.instance.as_str()), ("budget_warn", "warning", "daily", "web-1"));
        assert!(a.id.starts_with("budget_warn-20261201T140211Z-") && a.id.len() == "budget_warn-20261201T140211Z-".len() + 6, "{}", a.id);
        assert_eq!(a.summary, "Budget `daily` passed 80% of its limit: $8.2000 of $10.0000 spent");
        assert!(a.detail.contains("go to gpt-4o-mini"), "{}", a.detail);
        assert_eq!(a.figures["spent_usd"], 8.2);
        assert!(a.figures.get("limit_tokens").is_none(), "unset limits are left out");
        assert_eq!(a.fired_at, "2026-12-01T14:02:11Z");
        assert_eq!(a.link.as_deref(), Some(format!("https://grafana.example/d/mg?alert={}&s=daily", a.id).as_str()));
        let t = Alert::new(&Event::Test, &cfg, now);
        assert!(t.test && t.id.starts_with("test-") && t.severity == "info");
    }
}
