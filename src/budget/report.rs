//! What budgets tell operators: `GET /admin/budgets` ([`BudgetsReport`]),
//! `GET /admin/usage` ([`UsageReport`]) and the budget gauges of
//! `/metrics`. The structs serialize to the JSON the admin API has always
//! answered (field order included); `modelgate cost` and tests read it.
//!
//! It reads counts only: it must not change a counter or a hold.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::amount::{usd, Amounts, Limit, Limits};
use super::book::{Cell, Refusal, KEY_SEP};
use super::{window, Budgets};
use crate::config::{Budget, Downgrade, OnExceed, Window};

/// `GET /admin/budgets`.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetsReport {
    pub budgets: Vec<BudgetRow>,
    pub store: StoreReport,
}

/// One budget in its current window.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetRow {
    pub name: String,
    pub scope: String,
    pub window: &'static str,
    pub limit_usd: Option<f64>,
    pub spent_usd: f64,
    pub reserved_usd: f64,
    pub remaining_usd: Option<f64>,
    /// `ok`, `warn`, `at_limit` or `exceeded` (README "Budget states").
    pub state: &'static str,
    /// The state in words: what was spent, and what happened at the limit.
    pub detail: String,
    pub on_exceed: &'static str,
    pub warn_at: f64,
    pub resets_at: String,
    pub spent_tokens: u64,
    pub reserved_tokens: u64,
    pub requests: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_requests: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downgrade_to: Option<String>,
}

/// Where the counts come from.
#[derive(Debug, Clone, Serialize)]
pub struct StoreReport {
    /// `file` or `redis`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
    /// The ledger is damaged and `on_ledger_error: fail_closed` refuses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger_error: Option<String>,
}

impl StoreReport {
    fn of(kind: &'static str, available: Option<bool>) -> Self {
        StoreReport { kind, available, error: None, note: None, ledger_error: None }
    }
}

/// `GET /admin/usage?window=day|week|month[&by=…]`.
#[derive(Debug, Clone, Serialize)]
pub struct UsageReport {
    pub window: &'static str,
    pub from: String,
    pub to: String,
    pub total: CellReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_provider: Option<BTreeMap<String, CellReport>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_model: Option<BTreeMap<String, CellReport>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_app: Option<BTreeMap<String, CellReport>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_route: Option<BTreeMap<String, CellReport>>,
    /// `none`: requests without a task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_task: Option<BTreeMap<String, CellReport>>,
    /// `ROUTE/ARM`: requests a split route sent to one of its arms (others
    /// are not listed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_arm: Option<BTreeMap<String, CellReport>>,
    /// By end user (`none`: requests without one), read from the ledger;
    /// only with `?by=user`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_user: Option<BTreeMap<String, CellReport>>,
    /// By virtual key name (`none`: requests without one); only with `?by=key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_key: Option<BTreeMap<String, CellReport>>,
    /// The same arms as route → arm → usage, for the dashboard (the JSON
    /// shows `by_arm`).
    #[serde(skip)]
    pub arms: BTreeMap<String, BTreeMap<String, CellReport>>,
    pub spend_spike: bool,
}

/// What a usage report breaks the spend down by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageBy {
    Provider,
    Model,
    App,
    Route,
    Task,
    Arm,
    /// From the ledger (not kept as usage cells: users are unbounded).
    User,
    /// The virtual key, from the ledger.
    Key,
}

impl UsageBy {
    /// In the order of the usage-cell key.
    pub const ALL: [UsageBy; 6] = [UsageBy::Provider, UsageBy::Model, UsageBy::App, UsageBy::Route, UsageBy::Task, UsageBy::Arm];

    pub fn as_str(self) -> &'static str {
        match self {
            UsageBy::Provider => "provider",
            UsageBy::Model => "model",
            UsageBy::App => "app",
            UsageBy::Route => "route",
            UsageBy::Task => "task",
            UsageBy::Arm => "arm",
            UsageBy::User => "user",
            UsageBy::Key => "key",
        }
    }

    pub fn parse(s: &str) -> Option<UsageBy> {
        Self::ALL.into_iter().chain([UsageBy::User, UsageBy::Key]).find(|b| b.as_str() == s)
    }
}

/// What `GET /admin/usage` was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageQuery {
    pub window: Window,
    /// One breakdown only (`None`: all of them).
    pub by: Option<UsageBy>,
}

impl From<Window> for UsageQuery {
    fn from(window: Window) -> Self {
        UsageQuery { window, by: None }
    }
}

impl UsageQuery {
    /// From a query string: `window=day|week|month` (default day),
    /// `by=provider|model|app|task|route|arm` (default all).
    pub fn parse(query: &str) -> Result<UsageQuery, String> {
        let mut q = UsageQuery { window: Window::Day, by: None };
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match k {
                "window" => {
                    q.window = Window::parse(v).filter(|w| *w != Window::Hour).ok_or_else(|| format!("window `{v}`: use ?window=day, week or month"))?;
                }
                "by" => q.by = Some(UsageBy::parse(v).ok_or_else(|| format!("by `{v}`: use ?by=provider, model, app, task, route, arm, user or key"))?),
                _ => {}
            }
        }
        Ok(q)
    }
}

/// Cost, tokens and savings of a slice of usage.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CellReport {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    pub requested_cost_usd: f64,
    pub savings_usd: f64,
    pub savings_pct: f64,
    /// Requests the response cache served, and the upstream cost they
    /// saved (left out while there are none).
    #[serde(skip_serializing_if = "is_zero")]
    pub cache_hits: u64,
    #[serde(skip_serializing_if = "is_zero_usd")]
    pub cache_savings_usd: f64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_usd(v: &f64) -> bool {
    *v == 0.0
}

impl From<&Cell> for CellReport {
    fn from(c: &Cell) -> Self {
        let savings = c.requested_nanos as f64 / 1e9 - c.nanos as f64 / 1e9;
        let pct = if c.requested_nanos > 0 { savings / (c.requested_nanos as f64 / 1e9) * 100.0 } else { 0.0 };
        CellReport {
            requests: c.requests,
            input_tokens: c.input,
            output_tokens: c.output,
            cost_usd: usd(c.nanos),
            requested_cost_usd: usd(c.requested_nanos),
            savings_usd: (savings * 1e9).round() / 1e9,
            savings_pct: (pct * 10.0).round() / 10.0,
            cache_hits: c.cache_hits,
            cache_savings_usd: usd(c.cache_saved_nanos),
        }
    }
}

/// A budget's counts in its current window, as a report reads them.
struct Counts {
    end: i64,
    spent: Amounts,
    reserved: Amounts,
    tripped: Option<Limits>,
    refused: Option<Refusal>,
}

/// The state of a budget and the same in words. Settled spend decides
/// `exceeded` (it reached a limit) and `warn` (it passed warn_at); a request
/// whose worst case did not fit in what was left makes it `at_limit`
/// although spend is below the limit (reservations are worst cases).
fn state_of(d: &Budget, c: &Counts) -> (&'static str, String) {
    let spent = c.spent;
    let used = Limit::ALL
        .into_iter()
        .filter_map(|k| d.limits.get(k).map(|l| format!("{} of {} spent", k.show(k.of(spent)), k.show(l))))
        .collect::<Vec<_>>()
        .join(", ");
    if let Some((what, limit)) =
        d.limits.over(spent).or_else(|| Limit::ALL.into_iter().find_map(|k| d.limits.get(k).filter(|l| k.of(spent) >= *l).map(|l| (k, l))))
    {
        let action = match d.on_exceed {
            OnExceed::Reject => "requests it applies to are refused",
            OnExceed::Downgrade(_) => "requests it applies to go to a cheaper model",
            OnExceed::Warn => "requests still go through (on_exceed: warn)",
        };
        return ("exceeded", format!("exceeded: {} spent of {}; {action} until it resets", what.show(what.of(spent)), what.show(limit)));
    }
    // (A reload that changed the limits clears it, as it clears `tripped`.)
    let refused = c.refused.filter(|_| c.tripped == Some(d.limits));
    if let Some(r) = refused {
        let what = match r.action {
            "reject" => "was refused",
            "downgrade" => "went to a cheaper model",
            _ => "was let through (on_exceed: warn)",
        };
        let at = jiff::Timestamp::from_second(r.at).map(|t| t.strftime("%H:%M:%S UTC").to_string()).unwrap_or_default();
        return ("at_limit", format!("at limit: a request needing up to {} {what} with {} left (at {at}); {used}", r.what.show(r.need), r.what.show(r.left)));
    }
    if d.limits.fraction(spent) >= d.warn_at {
        return ("warn", format!("warn: {used} (warn_at {:.0}%)", d.warn_at * 100.0));
    }
    ("ok", format!("ok: {used}"))
}

/// A budget's figures for an alert about it.
pub(super) fn alert_figures(d: &Budget, c: &super::book::Counter, action: Option<&'static str>) -> crate::alerts::BudgetFigures {
    crate::alerts::BudgetFigures {
        budget: d.name.clone(),
        scope: d.scope.to_string(),
        window: d.window.as_str(),
        window_start: c.start,
        window_end: c.end,
        resets_at: window::rfc3339(c.end),
        spent_usd: usd(c.spent.nanos),
        reserved_usd: usd(c.reserved.nanos),
        limit_usd: d.limits.nanos.map(usd),
        spent_tokens: c.spent.tokens,
        limit_tokens: d.limits.tokens,
        requests: c.spent.requests,
        limit_requests: d.limits.requests,
        warn_at: d.warn_at,
        used: d.limits.fraction(c.spent),
        on_exceed: d.on_exceed.as_str(),
        downgrade_to: downgrade_to(d),
        action,
    }
}

fn downgrade_to(d: &Budget) -> Option<String> {
    match &d.on_exceed {
        OnExceed::Downgrade(Downgrade::Model(m)) => Some(m.clone()),
        OnExceed::Downgrade(Downgrade::Cheapest) => Some("cheapest".to_string()),
        _ => None,
    }
}

fn row(d: &Budget, c: &Counts) -> BudgetRow {
    let (spent, reserved) = (c.spent, c.reserved);
    let (state, detail) = state_of(d, c);
    BudgetRow {
        name: d.name.clone(),
        scope: d.scope.to_string(),
        window: d.window.as_str(),
        limit_usd: d.limits.nanos.map(usd),
        spent_usd: usd(spent.nanos),
        reserved_usd: usd(reserved.nanos),
        remaining_usd: d.limits.nanos.map(|l| usd(l.saturating_sub(spent.nanos + reserved.nanos))),
        state,
        detail,
        on_exceed: d.on_exceed.as_str(),
        warn_at: d.warn_at,
        resets_at: window::rfc3339(c.end),
        spent_tokens: spent.tokens,
        reserved_tokens: reserved.tokens,
        requests: spent.requests,
        limit_tokens: d.limits.tokens,
        limit_requests: d.limits.requests,
        downgrade_to: downgrade_to(d),
    }
}

impl Budgets {
    /// `GET /admin/budgets`.
    pub async fn report(&self) -> BudgetsReport {
        let now = self.inner.clock.now();
        let (defs, keys, mut counts) = {
            let mut book = self.inner.book();
            let n = book.defs.len();
            let mut keys = Vec::with_capacity(n);
            let mut counts = Vec::with_capacity(n);
            for i in 0..n {
                let name = book.defs[i].name.clone();
                let c = book.counter(i, now);
                keys.push((name, c.start, c.end));
                counts.push(Counts { end: c.end, spent: c.spent, reserved: c.reserved, tripped: c.tripped, refused: c.refused });
            }
            (book.defs.clone(), keys, counts)
        };
        let mut store = StoreReport::of("file", None);
        if let Some(shared) = &self.inner.shared {
            let mut read = shared.read(&keys, now).await;
            if read.is_ok() && !self.reseed(shared).await.is_empty() {
                read = shared.read(&keys, now).await;
            }
            store = match read {
                Ok(states) => {
                    for (c, (spent, reserved)) in counts.iter_mut().zip(states) {
                        c.spent = spent;
                        c.reserved = reserved;
                    }
                    StoreReport::of("redis", Some(true))
                }
                Err(e) => StoreReport { error: Some(e), note: Some("figures are this process's local view"), ..StoreReport::of("redis", Some(false)) },
            };
        }
        store.ledger_error = self.inner.ledger_fault.get().cloned();
        BudgetsReport { budgets: defs.iter().zip(&counts).map(|(d, c)| row(d, c)).collect(), store }
    }

    /// `GET /admin/usage`.
    pub fn usage(&self, q: impl Into<UsageQuery>) -> UsageReport {
        let q = q.into();
        if matches!(q.by, Some(UsageBy::User | UsageBy::Key)) {
            return self.usage_by_who(q);
        }
        let now = self.inner.clock.now();
        let mut book = self.inner.book();
        let spiking = book.spike.spiking;
        let slot = super::book::USAGE_WINDOWS.iter().position(|w| *w == q.window).unwrap_or(0);
        let u = &book.usage_at(now)[slot];
        let mut total = Cell::default();
        let mut by: [BTreeMap<String, Cell>; 6] = Default::default();
        let mut arms: BTreeMap<String, BTreeMap<String, Cell>> = BTreeMap::new();
        for (key, c) in &u.cells {
            let mut parts = key.split(KEY_SEP);
            let [provider, model, app, route, task, arm] = std::array::from_fn(|_| parts.next().unwrap_or(""));
            for (i, part) in [provider, model, app, route, task].into_iter().enumerate() {
                *by[i].entry(part.to_string()).or_default() += c;
            }
            if !arm.is_empty() {
                *by[5].entry(format!("{route}/{arm}")).or_default() += c;
                *arms.entry(route.to_string()).or_default().entry(arm.to_string()).or_default() += c;
            }
            total += c;
        }
        let [by_provider, by_model, by_app, by_route, by_task, by_arm] = std::array::from_fn(|i| {
            let wanted = q.by.is_none_or(|b| b == UsageBy::ALL[i]);
            wanted.then(|| by[i].iter().map(|(k, c)| (k.clone(), CellReport::from(c))).collect())
        });
        UsageReport {
            window: q.window.as_str(),
            from: window::rfc3339(u.start),
            to: window::rfc3339(u.end),
            total: CellReport::from(&total),
            by_provider,
            by_model,
            by_app,
            by_route,
            by_task,
            by_arm,
            by_user: None,
            by_key: None,
            arms: arms.into_iter().map(|(route, m)| (route, m.iter().map(|(k, c)| (k.clone(), CellReport::from(c))).collect())).collect(),
            spend_spike: spiking,
        }
    }

    /// `?by=user` or `?by=key`: the window's ledger entries by user or by
    /// key (read from the ledger, outside the book's lock).
    fn usage_by_who(&self, q: UsageQuery) -> UsageReport {
        let now = self.inner.clock.now();
        let (start, end, spiking) = {
            let mut book = self.inner.book();
            let slot = super::book::USAGE_WINDOWS.iter().position(|w| *w == q.window).unwrap_or(0);
            let u = &book.usage_at(now)[slot];
            let (s, e) = (u.start, u.end);
            (s, e, book.spike.spiking)
        };
        let mut by: BTreeMap<String, Cell> = BTreeMap::new();
        let mut total = Cell::default();
        self.inner.ledger.read_since(start, |e, at| {
            if at.as_second() >= end {
                return;
            }
            let who = match q.by {
                Some(UsageBy::Key) => e.key.as_deref(),
                _ => e.user.as_deref(),
            };
            let c = super::book::cell_of(e);
            *by.entry(who.unwrap_or("none").to_string()).or_default() += &c;
            total += &c;
        });
        let cells = Some(by.iter().map(|(k, c)| (k.clone(), CellReport::from(c))).collect());
        let (by_user, by_key) = match q.by {
            Some(UsageBy::Key) => (None, cells),
            _ => (cells, None),
        };
        UsageReport {
            window: q.window.as_str(),
            from: window::rfc3339(start),
            to: window::rfc3339(end),
            total: CellReport::from(&total),
            by_provider: None,
            by_model: None,
            by_app: None,
            by_route: None,
            by_task: None,
            by_arm: None,
            by_user,
            by_key,
            arms: BTreeMap::new(),
            spend_spike: spiking,
        }
    }

    /// Settled spend of the last 60 minutes (this process's ledger view),
    /// for the `cost_per_hour` alert.
    pub fn last_hour_usd(&self) -> f64 {
        let now = self.inner.clock.now();
        usd(self.inner.book().spike.last_hour(now))
    }

    /// Budget gauges in Prometheus text, appended to `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        let now = self.inner.clock.now();
        let mut book = self.inner.book();
        let n = book.defs.len();
        if n == 0 {
            return;
        }
        let rows: Vec<(String, Option<u64>, Amounts, Amounts)> = (0..n)
            .map(|i| {
                let (name, limit) = (book.defs[i].name.clone(), book.defs[i].limits.nanos);
                let c = book.counter(i, now);
                (name, limit, c.spent, c.reserved)
            })
            .collect();
        // The state as a number, for alert rules and dashboards.
        let states: Vec<u8> = (0..n)
            .map(|i| {
                let c = book.counter(i, now);
                let counts = Counts { end: c.end, spent: c.spent, reserved: c.reserved, tripped: c.tripped, refused: c.refused };
                match state_of(&book.defs[i], &counts).0 {
                    "exceeded" => 3,
                    "at_limit" => 2,
                    "warn" => 1,
                    _ => 0,
                }
            })
            .collect();
        let metric = crate::metrics::BUDGET_STATE;
        let _ = writeln!(out, "# HELP {metric} The budget's state in its current window: 0 ok, 1 warn (passed warn_at), 2 at_limit (a request did not fit), 3 exceeded.\n# TYPE {metric} gauge");
        for ((name, ..), state) in rows.iter().zip(&states) {
            let _ = writeln!(out, "{metric}{{budget=\"{}\"}} {state}", crate::metrics::escape(name));
        }
        for (metric, help) in [
            (crate::metrics::BUDGET_SPENT, "Spend in USD settled in the budget's current window."),
            (crate::metrics::BUDGET_LIMIT, "The budget's limit_usd."),
            (crate::metrics::BUDGET_RESERVED, "USD reserved by requests in flight (worst case) in the budget's current window."),
        ] {
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
            for (name, limit, spent, reserved) in &rows {
                let v = match metric {
                    crate::metrics::BUDGET_SPENT => Some(spent.nanos),
                    crate::metrics::BUDGET_RESERVED => Some(reserved.nanos),
                    _ => *limit,
                };
                if let Some(v) = v {
                    let _ = writeln!(out, "{metric}{{budget=\"{}\"}} {}", crate::metrics::escape(name), usd(v));
                }
            }
        }
    }
}
