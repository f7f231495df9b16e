//! The book: live counters of every budget in its current calendar window,
//! the day and month usage cells, and the spike watch; and counting them
//! from the ledger at start and after a reload.
//!
//! It keeps counts only: it must not decide admission (`admit`), render
//! reports (`report`) or write the ledger.

use std::collections::HashMap;

use jiff::tz::TimeZone;
use jiff::Timestamp;

use super::amount::{nanos, usd, Amounts, Limit, Limits};
use super::charge::{charged, Charge};
use super::ledger::{Entry, Problem};
use super::spike::SpikeWatch;
use super::{window, Budgets};
use crate::config::{Budget, Scope, Snapshot, Window};

/// Live counters of one budget in its current window.
#[derive(Debug, Clone)]
pub(super) struct Counter {
    /// What the counts depend on; a change means recounting.
    pub(super) basis: (Scope, Window),
    /// Changes when the window rolls or the counter is rebuilt, so a hold
    /// from before never releases into the new counts.
    pub(super) gen: u64,
    pub(super) start: i64,
    pub(super) end: i64,
    pub(super) spent: Amounts,
    pub(super) reserved: Amounts,
    /// `warn_at` was crossed this window (logged once).
    pub(super) warned: bool,
    /// The `budget_exceeded` alert was raised this window.
    pub(super) alerted_exceeded: bool,
    /// The limits at which a request was refused or downgraded this window.
    pub(super) tripped: Option<Limits>,
    /// The last request this window whose worst case did not fit (what the
    /// budget report says in words).
    pub(super) refused: Option<Refusal>,
}

/// A request whose worst case did not fit in what a budget had left.
#[derive(Debug, Clone, Copy)]
pub(super) struct Refusal {
    pub(super) what: Limit,
    /// What the request might have used (its worst case).
    pub(super) need: u64,
    /// What was left then: the limit minus spent and reserved.
    pub(super) left: u64,
    /// `reject`, `downgrade` or `warn` (let through).
    pub(super) action: &'static str,
    /// When (Unix seconds).
    pub(super) at: i64,
}

impl Counter {
    fn fresh(basis: (Scope, Window), gen: u64, (start, end): (i64, i64)) -> Self {
        Counter {
            basis,
            gen,
            start,
            end,
            spent: Amounts::default(),
            reserved: Amounts::default(),
            warned: false,
            alerted_exceeded: false,
            tripped: None,
            refused: None,
        }
    }
}

/// Cost, tokens and requests of one (provider, model, app, route) cell.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Cell {
    pub(super) requests: u64,
    pub(super) input: u64,
    pub(super) output: u64,
    pub(super) nanos: u64,
    pub(super) requested_nanos: u64,
    /// Requests served from the response cache, and what they saved.
    pub(super) cache_hits: u64,
    pub(super) cache_saved_nanos: u64,
}

impl std::ops::AddAssign<&Cell> for Cell {
    fn add_assign(&mut self, c: &Cell) {
        self.requests += c.requests;
        self.input += c.input;
        self.output += c.output;
        self.nanos += c.nanos;
        self.requested_nanos += c.requested_nanos;
        self.cache_hits += c.cache_hits;
        self.cache_saved_nanos += c.cache_saved_nanos;
    }
}

/// The usage of one settled entry.
pub(super) fn cell_of(e: &Entry) -> Cell {
    let mut c = Cell {
        requests: 1,
        input: e.input + e.cached + e.cache_write,
        output: e.output,
        nanos: nanos(e.cost_usd),
        requested_nanos: nanos(e.requested_cost_usd),
        ..Cell::default()
    };
    if e.cache_hit {
        c.cache_hits = 1;
        c.cache_saved_nanos = nanos(e.cache_saved_usd);
    }
    c
}

/// Joins provider, model, app, route, task and arm into one usage-cell key.
pub(super) const KEY_SEP: &str = "\u{1f}";

#[derive(Debug, Default)]
pub(super) struct UsageWindow {
    pub(super) start: i64,
    pub(super) end: i64,
    /// By `provider␟model␟app␟route␟task␟arm` (`task` `none` without one,
    /// `arm` empty outside a split).
    pub(super) cells: hashbrown::HashMap<String, Cell>,
}

/// The windows of the usage report, in [`USAGE_WINDOWS`] order.
pub(super) const USAGE_WINDOWS: [Window; 3] = [Window::Day, Window::Week, Window::Month];

#[derive(Default)]
pub(super) struct Book {
    pub(super) defs: Vec<Budget>,
    tz: Option<TimeZone>,
    /// (hashbrown's: looked up by `&str` with the key cloned only when a
    /// budget's first counter is made.)
    pub(super) counters: hashbrown::HashMap<String, Counter>,
    /// Day, week and month of the usage report.
    usage: [UsageWindow; 3],
    pub(super) spike: SpikeWatch,
    next_gen: u64,
    loaded: bool,
    /// `per: user` budgets: the users each template (by name) has a
    /// budget for, and when each was last used (Unix seconds). Their
    /// defs (`TEMPLATE[user]`) follow the config's in `defs`.
    users: HashMap<String, HashMap<String, i64>>,
    /// The own budgets of keys created at runtime (`POST /admin/keys`),
    /// kept after the config's in `defs` (a config budget of the same name
    /// wins).
    pub(super) runtime: Vec<Budget>,
}

/// The name of user `u`'s budget of per-user budget `template`.
pub(super) fn user_budget_name(template: &str, u: &str) -> String {
    format!("{template}[{u}]")
}

impl Book {
    fn tz(&self) -> TimeZone {
        self.tz.clone().unwrap_or(TimeZone::UTC)
    }

    /// The counter of budget `i`, rolled into the window holding `now`.
    pub(super) fn counter(&mut self, i: usize, now: Timestamp) -> &mut Counter {
        let tz = self.tz.as_ref();
        let def = &self.defs[i];
        let secs = now.as_second();
        let next_gen = &mut self.next_gen;
        // The scope is cloned only when a counter starts or its window rolls.
        let c = self.counters.entry_ref(def.name.as_str()).or_insert_with(|| Counter::fresh((def.scope.clone(), def.window), 0, (0, 0)));
        if secs >= c.end || secs < c.start || c.basis.0 != def.scope || c.basis.1 != def.window {
            let bounds = window::bounds(def.window, tz.unwrap_or(&TimeZone::UTC), now);
            *next_gen += 1;
            *c = Counter::fresh((def.scope.clone(), def.window), *next_gen, bounds);
        }
        c
    }

    /// The budgets (indexes into `defs`) that count `c` (a `per: user`
    /// budget counts through its users' budgets, see [`Book::ensure_user`]).
    pub(super) fn applicable(&self, c: &Charge<'_>) -> Vec<usize> {
        (0..self.defs.len()).filter(|&i| self.defs[i].per_user.is_none() && self.defs[i].scope.matches(c)).collect()
    }

    /// Make sure `c`'s user has a budget of every `per: user` budget that
    /// counts it; returns the indexes of budgets made now, or the name of a
    /// per-user budget that keeps `max_users` users already (none of them
    /// idle for a minute with nothing reserved, or in a past window).
    pub(super) fn ensure_user(&mut self, c: &Charge<'_>, now: Timestamp, at: Timestamp) -> Result<Vec<usize>, (String, usize)> {
        let Some(user) = c.user else { return Ok(Vec::new()) };
        let mut made = Vec::new();
        let secs = now.as_second();
        for t in 0..self.defs.len() {
            let Some(max) = self.defs[t].per_user else { continue };
            if !self.defs[t].scope.matches(c) {
                continue;
            }
            // (Replaying the ledger: only spend in the current window.)
            let (start, end) = {
                let w = self.counter(t, now);
                (w.start, w.end)
            };
            if !(start..end).contains(&at.as_second()) {
                continue;
            }
            let template = self.defs[t].name.clone();
            let users = self.users.entry(template.clone()).or_default();
            if let Some(last) = users.get_mut(user) {
                *last = secs;
                continue;
            }
            if users.len() >= max {
                self.evict_idle(&template, secs);
                if self.users.get(&template).map_or(0, |u| u.len()) >= max {
                    return Err((template, max));
                }
            }
            let mut def = self.defs[t].clone();
            def.name = user_budget_name(&template, user);
            def.scope.user = Some(user.to_string());
            def.per_user = None;
            self.defs.push(def);
            self.users.entry(template).or_default().insert(user.to_string(), secs);
            let i = self.defs.len() - 1;
            self.counter(i, now);
            made.push(i);
        }
        Ok(made)
    }

    /// Forget users of `template` whose budget has nothing reserved and
    /// either nothing spent for a minute or a window that has passed.
    fn evict_idle(&mut self, template: &str, secs: i64) {
        let Some(users) = self.users.get(template) else { return };
        let idle: Vec<String> = users
            .iter()
            .filter(|(u, last)| {
                let name = user_budget_name(template, u);
                self.counters
                    .get(&name)
                    .is_none_or(|c| c.reserved == Amounts::default() && (secs >= c.end || (c.spent == Amounts::default() && secs - **last >= 60)))
            })
            .map(|(u, _)| u.clone())
            .collect();
        if idle.is_empty() {
            return;
        }
        let names: std::collections::HashSet<String> = idle.iter().map(|u| user_budget_name(template, u)).collect();
        self.defs.retain(|d| !names.contains(&d.name));
        for n in &names {
            self.counters.remove(n.as_str());
        }
        if let Some(users) = self.users.get_mut(template) {
            for u in &idle {
                users.remove(u);
            }
        }
    }

    /// Roll the usage windows and return them.
    pub(super) fn usage_at(&mut self, now: Timestamp) -> &mut [UsageWindow; 3] {
        let tz = self.tz();
        for (u, w) in self.usage.iter_mut().zip(USAGE_WINDOWS) {
            let s = now.as_second();
            if s >= u.end || s < u.start {
                let (start, end) = window::bounds(w, &tz, now);
                *u = UsageWindow { start, end, cells: hashbrown::HashMap::new() };
            }
        }
        &mut self.usage
    }

    /// Count a settled entry into the usage windows and the spike minutes.
    pub(super) fn record(&mut self, e: &Entry, at: Timestamp, now: Timestamp) {
        let cost = nanos(e.cost_usd);
        let secs = at.as_second();
        let key =
            [e.provider.as_str(), e.model.as_str(), e.app.as_str(), e.route.as_str(), e.task.as_deref().unwrap_or("none"), e.arm.as_deref().unwrap_or("")]
                .join(KEY_SEP);
        for u in self.usage_at(now).iter_mut() {
            if !(u.start..u.end).contains(&secs) {
                continue;
            }
            let cell = match u.cells.get_mut(key.as_str()) {
                Some(c) => c,
                None => u.cells.entry(key.clone()).or_default(),
            };
            cell.requests += 1;
            cell.input += e.input + e.cached + e.cache_write;
            cell.output += e.output;
            cell.nanos += cost;
            cell.requested_nanos += nanos(e.requested_cost_usd);
            if e.cache_hit {
                cell.cache_hits += 1;
                cell.cache_saved_nanos += nanos(e.cache_saved_usd);
            }
        }
        self.spike.add(secs, cost);
    }

    /// Log (once per window), count and alert a budget crossing `warn_at`;
    /// alert a budget whose settled spend reached a limit.
    pub(super) fn warn_check(&mut self, i: usize, now: Timestamp) {
        let (limits, warn_at) = (self.defs[i].limits, self.defs[i].warn_at);
        let c = self.counter(i, now);
        let used = limits.fraction(c.spent);
        let (warn, exceeded) = (!c.warned && used >= warn_at, used >= 1.0 && !c.alerted_exceeded);
        if warn {
            c.warned = true;
            let c = c.clone();
            let def = &self.defs[i];
            crate::metrics::budget_warning(&def.name, "warn");
            tracing::warn!(budget = %def.name, scope = %def.scope, window = def.window.as_str(), spent_usd = usd(c.spent.nanos), limit_usd = def.limits.nanos.map(usd), warn_at, "budget passed its warning level");
            crate::alerts::emit(crate::alerts::Event::BudgetWarn(super::report::alert_figures(def, &c, None)));
        }
        if exceeded {
            self.exceeded_alert(i, now, None);
        }
    }

    /// Alert, once per window, that budget `i` is used up: settled spend
    /// reached a limit (`action` `None`), or a request did not fit in what
    /// was left and was refused, downgraded or let through (`action`).
    pub(super) fn exceeded_alert(&mut self, i: usize, now: Timestamp, action: Option<&'static str>) {
        let c = self.counter(i, now);
        if c.alerted_exceeded {
            return;
        }
        c.alerted_exceeded = true;
        let c = c.clone();
        crate::alerts::emit(crate::alerts::Event::BudgetExceeded(super::report::alert_figures(&self.defs[i], &c, action)));
    }

    /// Take `snap`'s budgets; returns the budgets whose counts must be
    /// rebuilt from the ledger and whether everything must (first load or
    /// a new time zone).
    fn apply(&mut self, snap: &Snapshot, all: bool) -> (Vec<usize>, bool) {
        let tz_changed = self.tz.as_ref().map(|t| t.iana_name()) != Some(snap.timezone.iana_name());
        let first = all || !self.loaded || tz_changed;
        self.defs = snap.budgets.clone();
        let runtime = self.runtime.iter().filter(|r| !snap.budgets.iter().any(|b| b.name == r.name));
        self.defs.extend(runtime.cloned());
        // Users' budgets of per-user budgets that are still per user.
        self.users.retain(|t, _| snap.budgets.iter().any(|b| &b.name == t && b.per_user.is_some()));
        for b in &snap.budgets {
            let Some(users) = self.users.get(&b.name) else { continue };
            for u in users.keys() {
                let mut def = b.clone();
                def.name = user_budget_name(&b.name, u);
                def.scope.user = Some(u.clone());
                def.per_user = None;
                self.defs.push(def);
            }
        }
        self.tz = Some(snap.timezone.clone());
        self.spike.config = snap.spike;
        let names: Vec<String> = self.defs.iter().map(|b| b.name.clone()).collect();
        self.counters.retain(|n, _| names.contains(n));
        let stale = (0..self.defs.len())
            .filter(|&i| {
                let d = &self.defs[i];
                first || self.counters.get(&d.name).is_none_or(|c| c.basis != (d.scope.clone(), d.window))
            })
            .collect();
        (stale, first)
    }

    /// Zero what is recounted; returns the earliest second the ledger must
    /// be read from (`i64::MAX`: nothing to read).
    fn reset_for_recount(&mut self, stale: &[usize], first: bool, keep_reserved: bool, now: Timestamp) -> i64 {
        let mut since = i64::MAX;
        for &i in stale {
            let c = self.counter(i, now);
            since = since.min(c.start);
            c.spent = Amounts::default();
            if !keep_reserved {
                c.reserved = Amounts::default();
            }
        }
        if first {
            self.usage = Default::default();
            self.spike.clear();
            self.usage_at(now);
            since = since.min(self.usage.iter().map(|u| u.start).min().unwrap_or(i64::MAX));
            since = since.min(now.as_second() - 3600 * (i64::from(self.spike.config.baseline_hours) + 1));
        }
        since
    }

    /// Count a ledger entry into the stale budgets' counters (a user first
    /// seen gets its per-user budgets, counted from here on).
    fn count_entry(&mut self, stale: &mut Vec<usize>, e: &Entry, at: Timestamp, now: Timestamp) {
        let c = Charge::of_entry(e);
        if c.user.is_some() {
            if let Ok(made) = self.ensure_user(&c, now, at) {
                stale.extend(made);
            }
        }
        for &i in stale.iter() {
            let d = &self.defs[i];
            let hit = d.scope.matches(&c);
            let name = d.name.clone();
            if let Some(ctr) = self.counters.get_mut(&name).filter(|ctr| hit && (ctr.start..ctr.end).contains(&at.as_second())) {
                ctr.spent = ctr.spent + charged(e);
            }
        }
    }
}

impl Budgets {
    /// [`Budgets::sync`], returning what is wrong with the ledger.
    pub(super) fn count(&self, snap: &Snapshot) -> Vec<Problem> {
        self.count_with(snap, false)
    }

    /// Count every budget's spend and the usage windows again from the
    /// ledger, keeping what this process has reserved: after another
    /// process appended to the ledger (the old process of a binary
    /// upgrade, which settled its last requests while this one served).
    /// Under the ledger's append lock, so no settlement is counted twice.
    pub fn recount(&self, snap: &Snapshot) -> Vec<Problem> {
        self.count_with(snap, true)
    }

    fn count_with(&self, snap: &Snapshot, all: bool) -> Vec<Problem> {
        let inner = &self.inner;
        let now = inner.clock.now();
        let _appends = inner.ledger.lock();
        let mut book = inner.book();
        // Budgets to count from the ledger (all of them in file mode at
        // start; in Redis mode the shared counts are authoritative).
        let (mut stale, first) = book.apply(snap, all);
        if inner.shared.is_some() && !first {
            return Vec::new();
        }
        let since = book.reset_for_recount(&stale, first, all, now);
        if since == i64::MAX {
            return Vec::new();
        }
        let count_budgets = inner.shared.is_none();
        let scan = inner.ledger.scan_since(since, |e, at| {
            if count_budgets {
                book.count_entry(&mut stale, e, at, now);
            }
            if first {
                book.record(e, at, now);
            }
        });
        for &i in &stale {
            let def = book.defs[i].clone();
            let c = book.counter(i, now);
            c.warned = def.limits.fraction(c.spent) >= def.warn_at;
            c.alerted_exceeded = def.limits.fraction(c.spent) >= 1.0;
        }
        book.loaded = true;
        scan.problems
    }
}
