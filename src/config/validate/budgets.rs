//! Validation of `budgets:`, `budget_store:`, `timezone:` and `spend_spike:`.

use std::collections::HashSet;
use std::time::Duration;

use super::super::raw::{RawBudget, RawBudgetStore, RawScope, RawSpike};
use super::Ctx;
use crate::budget::amount::{nanos, Limits};
use crate::config::*;

/// `budgets:`, each validated on its own, keeping the names used (a key's
/// budgets are checked against them too).
pub(super) fn budgets_named(
    cx: &mut Ctx,
    raw_budgets: Vec<serde_yaml::Value>,
    providers: &[Provider],
    models: &IndexMap<String, Model>,
    budget_names: &mut HashSet<String>,
) -> Vec<Budget> {
    let mut budgets = Vec::new();
    for (i, v) in raw_budgets.into_iter().enumerate() {
        let path = format!("budgets[{i}]");
        let Some(raw) = cx.section(&path, v) else { continue };
        if let Some(b) = budget_of(cx, &path, raw, budget_names, providers, models) {
            budgets.push(b);
        }
    }
    budgets
}

pub(super) fn budget_of(
    cx: &mut Ctx,
    path: &str,
    raw: RawBudget,
    names: &mut HashSet<String>,
    providers: &[Provider],
    models: &IndexMap<String, Model>,
) -> Option<Budget> {
    let before = cx.errors.len();
    if raw.name.trim().is_empty() {
        cx.err(format!("{path}.name"), "must not be empty");
    } else if !names.insert(raw.name.clone()) {
        cx.err(format!("{path}.name"), format!("budget name `{}` is used twice; names must be unique (spend is kept per name)", raw.name));
    }
    let scope = scope_of(cx, path, raw.scope, providers, models);
    let window = Window::parse(&raw.window).unwrap_or_else(|| {
        cx.err(format!("{path}.window"), format!("unknown window `{}`; expected one of: hour, day, week, month", raw.window));
        Window::Day
    });
    let mut limits = Limits::default();
    match raw.limit_usd {
        Some(v) if !(v.is_finite() && v > 0.0) => cx.err(format!("{path}.limit_usd"), format!("must be a positive amount of USD, got {v}")),
        Some(v) => limits.nanos = Some(nanos(v)),
        None => {}
    }
    for (field, v, slot) in [("limit_tokens", raw.limit_tokens, &mut limits.tokens), ("limit_requests", raw.limit_requests, &mut limits.requests)] {
        match v {
            Some(0) => cx.err(format!("{path}.{field}"), "must be greater than 0"),
            other => *slot = other,
        }
    }
    if raw.limit_usd.is_none() && raw.limit_tokens.is_none() && raw.limit_requests.is_none() {
        cx.err(path, "a budget needs a limit: set `limit_usd` (and/or `limit_tokens`, `limit_requests`)");
    }
    let warn_at = raw.warn_at.unwrap_or(0.8);
    if !(warn_at > 0.0 && warn_at <= 1.0) {
        cx.err(format!("{path}.warn_at"), format!("must be a fraction of the limit in (0, 1], e.g. 0.8; got {warn_at}"));
    }
    let on_exceed = on_exceed_of(cx, path, raw.on_exceed.as_deref(), raw.downgrade_to, &scope, models);
    let per_user = match raw.per.as_deref() {
        None => {
            if raw.max_users.is_some() {
                cx.err(format!("{path}.max_users"), "only applies with `per: user` (one budget per distinct user)");
            }
            None
        }
        Some("user") => match raw.max_users.unwrap_or(DEFAULT_MAX_USERS) {
            0 => {
                cx.err(format!("{path}.max_users"), "must be at least 1");
                None
            }
            n => Some(n),
        },
        Some(other) => {
            cx.err(format!("{path}.per"), format!("unknown `per: {other}`; budgets can be kept per `user` (one budget per distinct user)"));
            None
        }
    };
    if per_user.is_some() && scope.user.is_some() {
        cx.err(format!("{path}.per"), "`per: user` keeps one budget per user; it cannot also name one user in `scope` (drop one of them)");
    }
    if per_user.is_some() && matches!(on_exceed, OnExceed::Downgrade(_)) {
        cx.err(format!("{path}.on_exceed"), "a per-user budget can `reject` or `warn`; `downgrade` is not supported per user");
    }
    if cx.errors.len() != before {
        return None;
    }
    Some(Budget { name: raw.name, scope, window, limits, warn_at, on_exceed, per_user })
}

/// `scope:` — `global`, or a mapping of provider, model, app and task.
fn scope_of(cx: &mut Ctx, path: &str, raw: Option<RawScope>, providers: &[Provider], models: &IndexMap<String, Model>) -> Scope {
    match raw {
        None => Scope::default(),
        Some(RawScope::Word(w)) if w == "global" => Scope::default(),
        Some(RawScope::Word(w)) => {
            cx.err(format!("{path}.scope"), format!("unknown scope `{w}`; write `global` or a mapping such as {{ provider: openai }}, {{ model: gpt-4o }}, {{ app: billing }}, {{ task: planning }} (keys combine)"));
            Scope::default()
        }
        Some(RawScope::Map(m)) => {
            if m.provider.is_none() && m.model.is_none() && m.app.is_none() && m.task.is_none() && m.key.is_none() && m.user.is_none() {
                cx.err(format!("{path}.scope"), "an empty scope mapping: name a provider, model, app, task, key or user, or write `scope: global`");
            }
            if let Some(p) = &m.provider {
                if !providers.iter().any(|x| &x.name == p) {
                    let known: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
                    cx.err(format!("{path}.scope.provider"), format!("unknown provider `{p}`; defined providers: {}", known.join(", ")));
                }
            }
            if let Some(model) = &m.model {
                if !models.contains_key(model) {
                    let known: Vec<&str> = models.keys().map(String::as_str).collect();
                    cx.err(format!("{path}.scope.model"), format!("unknown model `{model}`; defined models: {}", known.join(", ")));
                }
            }
            Scope { provider: m.provider, model: m.model, app: m.app, task: m.task, key: m.key, user: m.user }
        }
    }
}

/// `on_exceed:` and `downgrade_to:`.
fn on_exceed_of(cx: &mut Ctx, path: &str, on_exceed: Option<&str>, downgrade_to: Option<String>, scope: &Scope, models: &IndexMap<String, Model>) -> OnExceed {
    match (on_exceed.unwrap_or("reject"), downgrade_to) {
        ("warn", None) => OnExceed::Warn,
        ("reject", None) => OnExceed::Reject,
        ("downgrade", None) => {
            cx.err(
                format!("{path}.downgrade_to"),
                "on_exceed: downgrade needs `downgrade_to`: a model name, or `cheapest` (the cheapest model the request's route allows)",
            );
            OnExceed::Reject
        }
        ("downgrade", Some(to)) if to == "cheapest" => OnExceed::Downgrade(Downgrade::Cheapest),
        ("downgrade", Some(to)) => {
            if !models.contains_key(&to) {
                let known: Vec<&str> = models.keys().map(String::as_str).collect();
                cx.err(format!("{path}.downgrade_to"), format!("unknown model `{to}`; defined models: {} (or `cheapest`)", known.join(", ")));
            } else if scope.model.as_deref() == Some(to.as_str()) {
                cx.err(
                    format!("{path}.downgrade_to"),
                    format!(
                        "this budget counts model `{to}` only; downgrading to the same model would never move traffic — pick a cheaper model or `cheapest`"
                    ),
                );
            }
            OnExceed::Downgrade(Downgrade::Model(to))
        }
        (w @ ("warn" | "reject"), Some(_)) => {
            cx.err(format!("{path}.downgrade_to"), format!("`downgrade_to` only applies with `on_exceed: downgrade` (this budget says `{w}`)"));
            OnExceed::Reject
        }
        (other, _) => {
            cx.err(format!("{path}.on_exceed"), format!("unknown action `{other}`; expected one of: warn, downgrade, reject"));
            OnExceed::Reject
        }
    }
}

pub(super) fn store_of(cx: &mut Ctx, raw: Option<RawBudgetStore>) -> BudgetStore {
    let Some(raw) = raw else { return BudgetStore::default() };
    let fsync_interval = Duration::from_millis(raw.fsync_interval_ms.unwrap_or(1000));
    let on_ledger_error = match raw.on_ledger_error.as_deref().unwrap_or("refuse") {
        "refuse" => OnLedgerError::Refuse,
        "fail_closed" => OnLedgerError::FailClosed,
        "reset" => OnLedgerError::Reset,
        other => {
            cx.err("budget_store.on_ledger_error", format!("unknown choice `{other}`; expected refuse (do not start on a damaged ledger), fail_closed (start, refuse budgeted requests until it is repaired) or reset (start from the readable entries)"));
            OnLedgerError::Refuse
        }
    };
    let kind = match raw.kind.as_deref().unwrap_or("file") {
        "file" => {
            for (field, set) in [
                ("url", raw.url.is_some()),
                ("on_unavailable", raw.on_unavailable.is_some()),
                ("timeout_ms", raw.timeout_ms.is_some()),
                ("key_prefix", raw.key_prefix.is_some()),
            ] {
                if set {
                    cx.err(format!("budget_store.{field}"), "only applies to `kind: redis`");
                }
            }
            StoreKind::File
        }
        "redis" => {
            let url = raw.url.unwrap_or_default();
            if !["redis://", "rediss://", "redis+unix://", "unix://"].iter().any(|p| url.starts_with(p)) {
                cx.err("budget_store.url", format!("`{url}` is not a Redis URL; write redis://HOST:PORT[/DB] (or rediss://, or redis+unix:///path/to/socket)"));
            }
            let on_unavailable = match raw.on_unavailable.as_deref().unwrap_or("fail_open") {
                "fail_open" => OnUnavailable::FailOpen,
                "fail_closed" => OnUnavailable::FailClosed,
                other => {
                    cx.err(
                        "budget_store.on_unavailable",
                        format!("unknown choice `{other}`; expected fail_open (serve with local accounting) or fail_closed (refuse budgeted requests)"),
                    );
                    OnUnavailable::FailOpen
                }
            };
            let timeout = raw.timeout_ms.unwrap_or(250);
            if timeout == 0 {
                cx.err("budget_store.timeout_ms", "must be greater than 0 milliseconds");
            }
            let key_prefix = raw.key_prefix.unwrap_or_else(|| "modelgate".into());
            StoreKind::Redis { url, on_unavailable, timeout: Duration::from_millis(timeout), key_prefix }
        }
        other => {
            cx.err("budget_store.kind", format!("unknown store `{other}`; expected file (ledger in state_dir) or redis"));
            StoreKind::File
        }
    };
    BudgetStore { kind, fsync_interval, on_ledger_error }
}

pub(super) fn timezone_of(cx: &mut Ctx, raw: Option<String>) -> jiff::tz::TimeZone {
    let name = raw.unwrap_or_else(|| "UTC".into());
    jiff::tz::TimeZone::get(&name).unwrap_or_else(|_| {
        cx.err("timezone", format!("unknown time zone `{name}`; write an IANA name such as UTC, Europe/Berlin or America/New_York"));
        jiff::tz::TimeZone::UTC
    })
}

pub(super) fn spike_of(cx: &mut Ctx, raw: Option<RawSpike>) -> Spike {
    let d = Spike::default();
    let Some(raw) = raw else { return d };
    let s = Spike {
        factor: raw.factor.unwrap_or(d.factor),
        baseline_hours: raw.baseline_hours.unwrap_or(d.baseline_hours),
        min_usd: raw.min_usd.unwrap_or(d.min_usd),
    };
    if !(s.factor.is_finite() && s.factor > 1.0) {
        cx.err("spend_spike.factor", format!("must be a multiple above 1, e.g. 2; got {}", s.factor));
    }
    if !(1..=24 * 31).contains(&s.baseline_hours) {
        cx.err("spend_spike.baseline_hours", "must be between 1 and 744 hours");
    }
    if !(s.min_usd.is_finite() && s.min_usd >= 0.0) {
        cx.err("spend_spike.min_usd", "must be an amount of USD ≥ 0");
    }
    s
}
