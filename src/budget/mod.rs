//! Budgets: reserve the worst case before the upstream call, settle the
//! actual cost after (DESIGN.md decision 3), an append-only ledger that
//! survives restarts (decision 5), optional shared counters in Redis, usage
//! reports with savings, and spend-spike alerts.
//!
//! Locks: the ledger's write lock is taken before the book's, never the
//! other way round; admission takes only the book.

pub mod ledger;
pub mod lock;
mod shared;
pub mod window;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde_json::{json, Value};

use crate::config::{nanos, usd, Amounts, Budget, Limits, OnExceed, OnLedgerError, OnUnavailable, Snapshot, Spike, StoreKind, Window};
use crate::dialect::{ErrorKind, GatewayError};
pub use ledger::{Entry, Ledger, Problem};
use shared::Shared;

/// Output tokens reserved for a request that sets no max_tokens, on a model
/// without `max_output_tokens`.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 16_384;

/// The most an attempt on `m` can cost: input tokens at the dearer of its
/// input and cache-write prices,
/// plus the output the client allows (max_tokens, else the model's
/// max_output_tokens, else [`DEFAULT_MAX_OUTPUT_TOKENS`]) at the output
/// price. Input tokens are the free upper bound (a token is at least a byte
/// of the body) unless `exact`, which runs the tokenizer. A model the
/// config does not know has no price (only tokens and requests count).
pub fn worst_case(f: &crate::policy::Facts<'_>, m: Option<&crate::config::Model>, exact: bool) -> Amounts {
    let input = if exact { f.tokens_for(m.map(|m| m.id.as_str())).count } else { f.tokens_upper_bound() };
    let output = f.max_tokens.or(m.and_then(|m| m.max_output_tokens)).unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS);
    let usd = m.map_or(0.0, |m| {
        let p = &m.prices;
        (input as f64 * p.input_usd_per_mtok.max(p.cache_write_usd_per_mtok) + output as f64 * p.output_usd_per_mtok) / 1e6
    });
    Amounts { nanos: nanos(usd), tokens: input.saturating_add(output), requests: 1 }
}

/// What a request (one attempt) would charge, and to whom.
#[derive(Debug, Clone, Copy)]
pub struct Charge<'a> {
    pub provider: &'a str,
    pub model: Option<&'a str>,
    pub app: &'a str,
    pub task: Option<&'a str>,
    /// Worst case: input tokens × input price + max output × output price.
    pub worst: Amounts,
    /// `worst` counts input tokens with the tokenizer (else it is the free
    /// byte bound, good enough while it fits).
    pub exact: bool,
}

/// The outcome of admission.
pub enum Verdict {
    /// Reserved; settle or drop the hold.
    Go(Hold),
    /// A budget with `on_exceed: downgrade` is used up: serve the request
    /// with its downgrade model instead.
    Downgrade { budget: String, to: crate::config::Downgrade },
    Refuse(GatewayError),
    /// The free upper bound does not fit: count tokens (`exact`) and ask
    /// again. Nothing was reserved or recorded.
    Recount,
}

/// Budget state shared by the gateway, the admin API and the ledger syncer.
#[derive(Clone)]
pub struct Budgets {
    inner: Arc<Inner>,
}

struct Inner {
    book: Mutex<Book>,
    ledger: Ledger,
    shared: Option<Shared>,
    next_id: AtomicU64,
    /// Random per process: hold ids are unique across a fleet (pids are
    /// not: every container's may be 1).
    nonce: u64,
    /// The ledger was damaged at start and `on_ledger_error` is
    /// `fail_closed`: what is wrong (budgeted requests are refused).
    ledger_fault: std::sync::OnceLock<String>,
}

/// Live counters of one budget in its current window.
#[derive(Debug, Clone)]
struct Counter {
    /// What the counts depend on; a change means recounting.
    basis: (crate::config::Scope, Window),
    /// Changes when the window rolls or the counter is rebuilt, so a hold
    /// from before never releases into the new counts.
    gen: u64,
    start: i64,
    end: i64,
    spent: Amounts,
    reserved: Amounts,
    /// `warn_at` was crossed this window (logged once).
    warned: bool,
    /// The limits at which a request was refused or downgraded this window.
    tripped: Option<Limits>,
}

/// Cost, tokens and requests of one (provider, model, app, route) cell.
#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    requests: u64,
    input: u64,
    output: u64,
    nanos: u64,
    requested_nanos: u64,
}

/// Joins provider, model, app and route into one usage-cell key.
const KEY_SEP: &str = "\u{1f}";

#[derive(Debug, Default)]
struct UsageWindow {
    start: i64,
    end: i64,
    /// By `provider␟model␟app␟route`.
    cells: HashMap<String, Cell>,
}

#[derive(Default)]
struct Book {
    defs: Vec<Budget>,
    tz: Option<TimeZone>,
    spike: Spike,
    counters: HashMap<String, Counter>,
    /// Day and month of the usage report.
    usage: [UsageWindow; 2],
    /// Spend per minute (Unix minute → nano-USD), for spike detection.
    minutes: BTreeMap<i64, u64>,
    spiking: bool,
    /// The minute of the last spike check.
    spike_checked: Option<i64>,
    next_gen: u64,
    loaded: bool,
}

/// A reservation; released on drop unless settled.
pub struct Hold {
    inner: Option<Arc<Inner>>,
    /// When admission happened: the windows the spend counts in.
    at: Timestamp,
    id: String,
    amounts: Amounts,
    entries: Vec<HoldEntry>,
    /// Reserved in the shared store (else locally).
    remote: bool,
    done: bool,
}

#[derive(Debug, Clone)]
struct HoldEntry {
    name: String,
    gen: u64,
    start: i64,
    end: i64,
}

impl Hold {
    /// Nothing reserved (no budget applies).
    pub fn none() -> Self {
        Hold { inner: None, at: Timestamp::now(), id: String::new(), amounts: Amounts::default(), entries: Vec::new(), remote: false, done: true }
    }

    /// Admission time, RFC 3339 (the ledger entry's `ts`).
    pub fn admitted_at(&self) -> String {
        self.at.round(jiff::Unit::Millisecond).unwrap_or(self.at).to_string()
    }

    /// The budgets this hold reserved in.
    pub fn budgets(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name.as_str())
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        if let Some(inner) = self.inner.clone() {
            inner.release(self);
        }
    }
}

const USAGE_WINDOWS: [Window; 2] = [Window::Day, Window::Month];

fn money(n: u64) -> String {
    let v = usd(n);
    if v >= 100.0 {
        format!("${v:.2}")
    } else {
        format!("${v:.4}")
    }
}

fn amount(what: &str, n: u64) -> String {
    match what {
        "usd" => money(n),
        "tokens" => format!("{n} tokens"),
        _ => format!("{n} requests"),
    }
}

fn pick(what: &str, a: Amounts) -> u64 {
    match what {
        "usd" => a.nanos,
        "tokens" => a.tokens,
        _ => a.requests,
    }
}

impl Book {
    fn tz(&self) -> TimeZone {
        self.tz.clone().unwrap_or(TimeZone::UTC)
    }

    /// The counter of budget `i`, rolled into the window holding `now`.
    fn counter(&mut self, i: usize, now: Timestamp) -> &mut Counter {
        let tz = self.tz();
        let def = &self.defs[i];
        let basis = (def.scope.clone(), def.window);
        let secs = now.as_second();
        let next_gen = &mut self.next_gen;
        let c = self.counters.entry(def.name.clone()).or_insert_with(|| Counter {
            basis: basis.clone(),
            gen: 0,
            start: 0,
            end: 0,
            spent: Amounts::default(),
            reserved: Amounts::default(),
            warned: false,
            tripped: None,
        });
        if secs >= c.end || secs < c.start || c.basis != basis {
            let (start, end) = window::bounds(basis.1, &tz, now);
            *next_gen += 1;
            *c = Counter { basis, gen: *next_gen, start, end, spent: Amounts::default(), reserved: Amounts::default(), warned: false, tripped: None };
        }
        c
    }

    fn applicable(&self, c: &Charge<'_>) -> Vec<usize> {
        (0..self.defs.len()).filter(|&i| self.defs[i].scope.matches(c.provider, c.model, c.app, c.task)).collect()
    }

    /// Roll the usage windows and return them.
    fn usage_at(&mut self, now: Timestamp) -> &mut [UsageWindow; 2] {
        let tz = self.tz();
        for (u, w) in self.usage.iter_mut().zip(USAGE_WINDOWS) {
            let s = now.as_second();
            if s >= u.end || s < u.start {
                let (start, end) = window::bounds(w, &tz, now);
                *u = UsageWindow { start, end, cells: HashMap::new() };
            }
        }
        &mut self.usage
    }

    /// Count a settled entry into the usage windows and the spike minutes.
    fn record(&mut self, e: &Entry, at: Timestamp, now: Timestamp) {
        let cost = nanos(e.cost_usd);
        let secs = at.as_second();
        let key = [e.provider.as_str(), e.model.as_str(), e.app.as_str(), e.route.as_str()].join(KEY_SEP);
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
        }
        *self.minutes.entry(secs.div_euclid(60)).or_default() += cost;
    }

    /// Spend in the last hour vs the average hour of the baseline before it
    /// (checked at most once a minute).
    fn spike_check(&mut self, now: Timestamp) {
        let minute = now.as_second().div_euclid(60);
        if self.spike_checked == Some(minute) {
            return;
        }
        self.spike_checked = Some(minute);
        let base = i64::from(self.spike.baseline_hours) * 60;
        while self.minutes.first_key_value().is_some_and(|(m, _)| *m < minute - 59 - base) {
            self.minutes.pop_first();
        }
        let last_hour: u64 = self.minutes.range(minute - 59..).map(|(_, v)| v).sum();
        let before: u64 = self.minutes.range(minute - 59 - base..minute - 59).map(|(_, v)| v).sum();
        let avg = before as f64 / f64::from(self.spike.baseline_hours);
        let spiking = avg > 0.0 && last_hour as f64 > self.spike.factor * avg && usd(last_hour) >= self.spike.min_usd;
        if spiking && !self.spiking {
            crate::metrics::spend_spike();
            tracing::warn!(
                last_hour_usd = usd(last_hour),
                baseline_avg_usd = usd(avg as u64),
                factor = self.spike.factor,
                "spend spike: the last hour's spend is over {}× the average hour of the {} hours before",
                self.spike.factor,
                self.spike.baseline_hours
            );
        }
        self.spiking = spiking;
    }

    /// Log (once per window) and count a budget crossing `warn_at`.
    fn warn_check(&mut self, i: usize, now: Timestamp) {
        let (limits, warn_at) = (self.defs[i].limits, self.defs[i].warn_at);
        let c = self.counter(i, now);
        if c.warned || limits.fraction(c.spent) < warn_at {
            return;
        }
        c.warned = true;
        let spent = c.spent;
        let def = &self.defs[i];
        crate::metrics::budget_warning(&def.name, "warn");
        tracing::warn!(budget = %def.name, scope = %def.scope, window = def.window.as_str(), spent_usd = usd(spent.nanos), limit_usd = def.limits.nanos.map(usd), warn_at, "budget passed its warning level");
    }
}

/// What admission concluded from the budgets' current counts.
enum Judged {
    Go { over_warn_only: Vec<usize> },
    Downgrade(usize),
    Refuse { i: usize, what: &'static str, limit: u64 },
}

/// One budget's counts as admission sees them.
#[derive(Debug, Clone, Copy)]
struct Seen {
    i: usize,
    spent: Amounts,
    reserved: Amounts,
    end: i64,
}

fn judge(defs: &[Budget], seen: &[Seen], worst: Amounts, downgraded: bool) -> Judged {
    let mut downgrade = None;
    let mut refuse = None;
    let mut warn_only = Vec::new();
    for s in seen {
        let Some((what, limit)) = defs[s.i].limits.over(s.spent + s.reserved + worst) else { continue };
        match &defs[s.i].on_exceed {
            OnExceed::Reject => {
                refuse.get_or_insert((s.i, what, limit));
            }
            OnExceed::Downgrade(_) if !downgraded => {
                downgrade.get_or_insert(s.i);
            }
            _ => warn_only.push(s.i),
        }
    }
    // Downgrade first: the cheaper model is admitted again (reject budgets
    // still apply to it).
    if let Some(i) = downgrade {
        return Judged::Downgrade(i);
    }
    if let Some((i, what, limit)) = refuse {
        return Judged::Refuse { i, what, limit };
    }
    Judged::Go { over_warn_only: warn_only }
}

/// Whether budget `b` blocks admission when over (for the shared store).
fn blocking(b: &Budget, downgraded: bool) -> bool {
    match b.on_exceed {
        OnExceed::Reject => true,
        OnExceed::Downgrade(_) => !downgraded,
        OnExceed::Warn => false,
    }
}

fn refusal(def: &Budget, s: &Seen, worst: Amounts, what: &'static str, limit: u64, now: Timestamp) -> GatewayError {
    let secs = (s.end - now.as_second()).max(1) as u64;
    let resets = window::rfc3339(s.end);
    let wait = humantime::format_duration(std::time::Duration::from_secs(secs));
    let need = pick(what, worst);
    let field = match what {
        "usd" => "limit_usd",
        "tokens" => "limit_tokens",
        _ => "limit_requests",
    };
    let message = if need > limit {
        format!(
            "budget `{}` ({}, per {}) allows {} and this request alone may use up to {}; lower max_tokens, send a smaller request, or raise {field}",
            def.name,
            def.scope,
            def.window.as_str(),
            amount(what, limit),
            amount(what, need)
        )
    } else {
        format!(
            "budget `{}` ({}, per {}) is used up: {} of {} spent and {} reserved by requests in flight; this request may use up to {}. It resets at {resets} (in {wait}); raise {field} in the config to allow more now",
            def.name,
            def.scope,
            def.window.as_str(),
            amount(what, pick(what, s.spent)),
            amount(what, limit),
            amount(what, pick(what, s.reserved)),
            amount(what, need)
        )
    };
    GatewayError::new(429, ErrorKind::BudgetExceeded, "budget_exceeded", message).retry_after(secs)
}

impl Inner {
    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next_id(&self) -> String {
        format!("{:016x}-{}", self.nonce, self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Admission against the local book.
    fn admit_local(self: &Arc<Self>, c: &Charge<'_>, downgraded: bool, now: Timestamp) -> Verdict {
        let mut book = self.book();
        let idx = book.applicable(c);
        if idx.is_empty() {
            return Verdict::Go(Hold::none());
        }
        let seen: Vec<Seen> = idx
            .iter()
            .map(|&i| {
                let ctr = book.counter(i, now);
                Seen { i, spent: ctr.spent, reserved: ctr.reserved, end: ctr.end }
            })
            .collect();
        let judged = judge(&book.defs, &seen, c.worst, downgraded);
        self.conclude(&mut book, judged, &seen, c, now, false)
    }

    /// Turn a judgement into a verdict; on `Go`, reserve in the local book
    /// (also the mirror of a shared reservation).
    fn conclude(self: &Arc<Self>, book: &mut Book, judged: Judged, seen: &[Seen], c: &Charge<'_>, now: Timestamp, remote: bool) -> Verdict {
        if !c.exact && !matches!(&judged, Judged::Go { over_warn_only } if over_warn_only.is_empty()) {
            return Verdict::Recount;
        }
        match judged {
            Judged::Go { over_warn_only } => {
                for i in over_warn_only {
                    let def = book.defs[i].clone();
                    let ctr = book.counter(i, now);
                    if ctr.tripped.is_none() {
                        ctr.tripped = Some(def.limits);
                        crate::metrics::budget_warning(&def.name, "exceeded");
                        tracing::warn!(budget = %def.name, scope = %def.scope, window = def.window.as_str(), "budget exceeded; on_exceed: warn lets requests through");
                    }
                }
                let mut entries = Vec::with_capacity(seen.len());
                for s in seen {
                    let name = book.defs[s.i].name.clone();
                    let ctr = book.counter(s.i, now);
                    ctr.reserved = ctr.reserved + c.worst;
                    entries.push(HoldEntry { name, gen: ctr.gen, start: ctr.start, end: ctr.end });
                }
                Verdict::Go(Hold { inner: Some(self.clone()), at: now, id: self.next_id(), amounts: c.worst, entries, remote, done: false })
            }
            Judged::Downgrade(i) => {
                let def = book.defs[i].clone();
                self.trip(book, i, now, "downgrade");
                let to = match def.on_exceed {
                    OnExceed::Downgrade(to) => to,
                    _ => crate::config::Downgrade::Cheapest,
                };
                Verdict::Downgrade { budget: def.name, to }
            }
            Judged::Refuse { i, what, limit } => {
                self.trip(book, i, now, "reject");
                let s = seen.iter().find(|s| s.i == i).copied().unwrap_or(Seen { i, spent: Amounts::default(), reserved: Amounts::default(), end: now.as_second() });
                Verdict::Refuse(refusal(&book.defs[i], &s, c.worst, what, limit, now))
            }
        }
    }

    fn trip(&self, book: &mut Book, i: usize, now: Timestamp, action: &'static str) {
        let def = book.defs[i].clone();
        crate::metrics::budget_exceeded(&def.name, action);
        let ctr = book.counter(i, now);
        if ctr.tripped != Some(def.limits) {
            ctr.tripped = Some(def.limits);
            crate::metrics::budget_warning(&def.name, "exceeded");
            tracing::warn!(budget = %def.name, scope = %def.scope, window = def.window.as_str(), action, resets_at = %window::rfc3339(ctr.end), "budget exceeded");
        }
    }

    /// Undo a hold's reservation in the local book.
    fn unreserve(&self, book: &mut Book, h: &Hold) {
        for e in &h.entries {
            if let Some(c) = book.counters.get_mut(&e.name).filter(|c| c.gen == e.gen) {
                c.reserved = c.reserved - h.amounts;
            }
        }
    }

    fn release(self: &Arc<Self>, h: &Hold) {
        self.unreserve(&mut self.book(), h);
        if h.remote {
            if let Some(shared) = &self.shared {
                shared.settle_later(h.id.clone(), h.amounts, h.entries.iter().map(|e| (e.name.clone(), e.start, e.end)).collect(), Amounts::default());
            }
        }
    }
}

/// The error of `on_ledger_error: refuse`: what is wrong, where, and how
/// to get going again.
fn ledger_refusal(dir: &std::path::Path, problems: &[Problem]) -> String {
    let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
    format!(
        "the spend ledger in {} cannot be read completely, so budgets would start from less than was really spent:\n{}\nmodelgate does not start on it (budget_store.on_ledger_error: refuse). To fix: repair the file(s) or move them out of {} (keep a copy), or set budget_store.on_ledger_error to `reset` (start from the readable entries; damaged files are moved aside as NAME.damaged-TIME) or `fail_closed` (start, but refuse requests that a budget applies to until the ledger is repaired and modelgate restarted)",
        dir.display(),
        list.join("\n"),
        dir.display()
    )
}

impl Budgets {
    /// Open the ledger in `snap.state_dir` and count the current windows.
    /// A ledger that cannot be read completely is handled as
    /// `budget_store.on_ledger_error` says; it never silently resets spend.
    pub fn open(snap: &Snapshot) -> Result<Self, String> {
        let fsync_each = snap.budget_store.fsync_interval.is_zero();
        let shared = match &snap.budget_store.kind {
            StoreKind::File => None,
            StoreKind::Redis { url, on_unavailable, timeout, key_prefix } => Some(Shared::new(url, *on_unavailable, *timeout, key_prefix)?),
        };
        let b = Budgets {
            inner: Arc::new(Inner { book: Mutex::new(Book::default()), ledger: Ledger::new(&snap.state_dir, fsync_each), shared, next_id: AtomicU64::new(1), nonce: shared::random_u64(), ledger_fault: std::sync::OnceLock::new() }),
        };
        if let Some(e) = b.inner.ledger.meta_error() {
            tracing::warn!(file = %snap.state_dir.join(ledger::META_FILE).display(), error = %e, "cannot read the ledger's fsync record; a ledger file shortened since cannot be detected this time (the record is rewritten at the next fsync)");
        }
        let problems = b.count(snap);
        if problems.is_empty() {
            return Ok(b);
        }
        let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        match snap.budget_store.on_ledger_error {
            OnLedgerError::Refuse => return Err(ledger_refusal(&snap.state_dir, &problems)),
            OnLedgerError::FailClosed => {
                b.inner.ledger.freeze(&problems);
                tracing::error!(problems = ?list, "the spend ledger cannot be read completely; on_ledger_error: fail_closed refuses requests that a budget applies to until it is repaired (repair or move the file(s), then restart modelgate)");
                let _ = b.inner.ledger_fault.set(list.join("; "));
            }
            OnLedgerError::Reset => {
                let done = b.inner.ledger.reset(&problems)?;
                tracing::warn!(problems = ?list, actions = ?done, "the spend ledger could not be read completely; on_ledger_error: reset starts from the readable entries only, so spend in the skipped parts is not counted");
            }
        }
        Ok(b)
    }

    /// Apply a (re)loaded config: new limits take effect at once; a budget
    /// whose scope or window changed (or is new) is recounted from the
    /// ledger, so a reload never resets spend.
    pub fn sync(&self, snap: &Snapshot) {
        for p in self.count(snap) {
            tracing::error!(problem = %p, "the spend ledger is damaged; the entries it holds are not counted");
        }
    }

    /// [`Budgets::sync`], returning what is wrong with the ledger.
    fn count(&self, snap: &Snapshot) -> Vec<Problem> {
        let inner = &self.inner;
        let now = Timestamp::now();
        let _appends = inner.ledger.lock();
        let mut book = inner.book();
        let tz_changed = book.tz.as_ref().map(|t| t.iana_name()) != Some(snap.timezone.iana_name());
        let first = !book.loaded || tz_changed;
        book.defs = snap.budgets.clone();
        book.tz = Some(snap.timezone.clone());
        book.spike = snap.spike;
        let names: Vec<String> = book.defs.iter().map(|b| b.name.clone()).collect();
        book.counters.retain(|n, _| names.contains(n));
        // Budgets to count from the ledger (all of them in file mode at
        // start; in Redis mode the shared counts are authoritative).
        let stale: Vec<usize> = (0..book.defs.len())
            .filter(|&i| {
                let d = &book.defs[i];
                first || book.counters.get(&d.name).is_none_or(|c| c.basis != (d.scope.clone(), d.window))
            })
            .collect();
        if inner.shared.is_some() && !first {
            return Vec::new();
        }
        let mut since = i64::MAX;
        for &i in &stale {
            let c = book.counter(i, now);
            since = since.min(c.start);
            c.spent = Amounts::default();
            c.reserved = Amounts::default();
        }
        if first {
            book.usage = Default::default();
            book.minutes.clear();
            book.usage_at(now);
            since = since.min(book.usage.iter().map(|u| u.start).min().unwrap_or(i64::MAX));
            since = since.min(now.as_second() - 3600 * (i64::from(book.spike.baseline_hours) + 1));
        }
        if since == i64::MAX {
            return Vec::new();
        }
        let count_budgets = inner.shared.is_none();
        let scan = inner.ledger.scan_since(since, |e, at| {
            if count_budgets {
                for &i in &stale {
                    let d = &book.defs[i];
                    let hit = d.scope.matches(&e.provider, Some(e.model.as_str()), &e.app, e.task.as_deref());
                    let name = d.name.clone();
                    if let Some(c) = book.counters.get_mut(&name).filter(|c| hit && (c.start..c.end).contains(&at.as_second())) {
                        c.spent = c.spent + charged(e);
                    }
                }
            }
            if first {
                book.record(e, at, now);
            }
        });
        for &i in &stale {
            let def = book.defs[i].clone();
            let c = book.counter(i, now);
            c.warned = def.limits.fraction(c.spent) >= def.warn_at;
        }
        book.loaded = true;
        scan.problems
    }

    /// Reserve `c.worst` in every budget that applies.
    pub async fn admit(&self, c: &Charge<'_>, downgraded: bool) -> Verdict {
        let now = Timestamp::now();
        let inner = &self.inner;
        if let Some(fault) = inner.ledger_fault.get() {
            if !inner.book().applicable(c).is_empty() {
                return Verdict::Refuse(GatewayError::new(503, ErrorKind::Unavailable, "budget_ledger_damaged", format!(
                    "modelgate's spend ledger is damaged ({fault}) and budget_store.on_ledger_error is fail_closed, so requests that a budget applies to are refused until an operator repairs or moves the damaged file(s) and restarts modelgate"
                )));
            }
        }
        let Some(shared) = &inner.shared else { return inner.admit_local(c, downgraded, now) };
        let mut reseeded_once = false;
        loop {
            let (idx, keys, flags) = {
                let mut book = inner.book();
                let idx = book.applicable(c);
                if idx.is_empty() {
                    return Verdict::Go(Hold::none());
                }
                let keys: Vec<(String, i64, i64)> = idx
                    .iter()
                    .map(|&i| {
                        let name = book.defs[i].name.clone();
                        let ctr = book.counter(i, now);
                        (name, ctr.start, ctr.end)
                    })
                    .collect();
                let flags: Vec<(Limits, bool)> = idx.iter().map(|&i| (book.defs[i].limits, blocking(&book.defs[i], downgraded))).collect();
                (idx, keys, flags)
            };
            let id = inner.next_id();
            return match shared.reserve(&id, &keys, &flags, c.worst, now).await {
                Ok((reserved, states)) => {
                    // A counter lost spend (Redis restarted empty, FLUSHALL):
                    // add ours back, then judge again on the whole count.
                    let fixed = self.reseed(shared).await;
                    if !reseeded_once && keys.iter().any(|k| fixed.iter().any(|f| f.0 == k.0 && f.1 == k.1)) {
                        reseeded_once = true;
                        if reserved {
                            shared.settle_later(id, c.worst, keys, Amounts::default());
                        }
                        continue;
                    }
                    let mut book = inner.book();
                    let seen: Vec<Seen> = idx.iter().zip(&states).map(|(&i, (spent, reserved))| Seen { i, spent: *spent, reserved: *reserved, end: keys.iter().find(|k| k.0 == book.defs[i].name).map(|k| k.2).unwrap_or(0) }).collect();
                    // Mirror the shared counts locally (for fail-open and reports).
                    for s in &seen {
                        let ctr = book.counter(s.i, now);
                        ctr.spent = s.spent;
                        ctr.reserved = s.reserved;
                    }
                    let judged = judge(&book.defs, &seen, c.worst, downgraded);
                    match inner.conclude(&mut book, judged, &seen, c, now, true) {
                        Verdict::Go(mut h) => {
                            h.id = id;
                            Verdict::Go(h)
                        }
                        other => {
                            // Redis reserved (no blocking budget was over) but
                            // admission asks for a recount: give it back.
                            if reserved {
                                drop(book);
                                shared.settle_later(id, c.worst, keys, Amounts::default());
                            }
                            other
                        }
                    }
                }
                Err(e) => {
                    // Sent but unanswered: Redis may still make the reservation.
                    if e.maybe_ran {
                        shared.release_later(&id, c.worst, keys);
                    }
                    match shared.on_unavailable {
                        OnUnavailable::FailOpen => {
                            tracing::debug!(error = %e, "budget store unavailable; admitting with local accounting (fail_open)");
                            inner.admit_local(c, downgraded, now)
                        }
                        OnUnavailable::FailClosed => Verdict::Refuse(GatewayError::new(503, ErrorKind::Unavailable, "budget_store_unavailable", format!(
                            "modelgate cannot reach its shared budget store ({e}) and budget_store.on_unavailable is fail_closed, so requests that a budget applies to are refused until it is back; retry shortly"
                        )).retry_after(1)),
                    }
                }
            };
        }
    }

    /// Add this process's ledger spend back into Redis counters that lost
    /// it; returns the counters (name, window start) handled.
    async fn reseed(&self, shared: &Shared) -> Vec<(String, i64)> {
        let todo = shared.take_reseed();
        let mut done = Vec::with_capacity(todo.len());
        for (name, start, end) in todo {
            let scope = self.inner.book().defs.iter().find(|d| d.name == name).map(|d| d.scope.clone());
            let Some(scope) = scope else { continue };
            // Under the append lock: the ledger and the queued settlements
            // agree on what is written.
            let total = {
                let _appends = self.inner.ledger.lock();
                let mut total = Amounts::default();
                self.inner.ledger.read_since(start, |e, at| {
                    if at.as_second() < end && scope.matches(&e.provider, Some(e.model.as_str()), &e.app, e.task.as_deref()) {
                        total = total + charged(e);
                    }
                });
                total
            };
            if let Err(e) = shared.reseed(&name, start, end, total).await {
                tracing::warn!(budget = %name, error = %e, "cannot add this process's spend back into Redis yet; retrying");
            }
            done.push((name, start));
        }
        done
    }

    /// Replace the hold's reservation with the actual amounts and append
    /// the ledger entry. Returns when the entry is written.
    pub async fn settle(&self, mut hold: Hold, actual: Amounts, entry: &Entry) {
        hold.done = true;
        let inner = &self.inner;
        let now = Timestamp::now();
        let at = entry.at().unwrap_or(now);
        {
            let mut appends = inner.ledger.lock();
            if let Err(e) = inner.ledger.append(&mut appends, entry) {
                crate::metrics::ledger_error();
                tracing::error!(error = %e, "cannot append to the spend ledger; this request's spend is counted in memory only");
            }
            let mut book = inner.book();
            inner.unreserve(&mut book, &hold);
            let local_counts = !hold.remote;
            for e in &hold.entries {
                if let Some(i) = book.defs.iter().position(|d| d.name == e.name) {
                    let c = book.counter(i, now);
                    if local_counts && c.start == e.start {
                        c.spent = c.spent + actual;
                    }
                    book.warn_check(i, now);
                }
            }
            book.record(entry, at, now);
            book.spike_check(now);
        }
        if let Some(shared) = &inner.shared {
            let keys: Vec<(String, i64, i64)> = hold.entries.iter().map(|e| (e.name.clone(), e.start, e.end)).collect();
            if !keys.is_empty() {
                let states = shared.settle(hold.id.clone(), hold.remote, hold.amounts, keys.clone(), actual).await;
                self.reseed(shared).await;
                let mut book = inner.book();
                for (k, (name, start, _)) in keys.iter().enumerate() {
                    let Some(i) = book.defs.iter().position(|d| &d.name == name) else { continue };
                    let c = book.counter(i, now);
                    if c.start != *start {
                        continue;
                    }
                    match &states {
                        // Mirror the shared counts.
                        Some(states) => (c.spent, c.reserved) = states[k],
                        // Queued for Redis: count it locally meanwhile.
                        None if hold.remote => c.spent = c.spent + actual,
                        None => {}
                    }
                }
            }
        }
    }

    /// fsync the ledger if it has unsynced entries.
    pub fn sync_ledger(&self) {
        self.inner.ledger.sync();
    }

    /// Reconnect to the shared store and push what was settled while it
    /// was away; called periodically.
    pub async fn reconcile(&self) {
        if let Some(s) = &self.inner.shared {
            s.reconcile().await;
            self.reseed(s).await;
        }
    }

    pub fn is_shared(&self) -> bool {
        self.inner.shared.is_some()
    }

    /// `GET /admin/budgets`.
    pub async fn report(&self) -> Value {
        let now = Timestamp::now();
        let (defs, mut rows) = {
            let mut book = self.inner.book();
            let n = book.defs.len();
            let rows: Vec<(String, i64, i64, Amounts, Amounts, Option<Limits>)> = (0..n)
                .map(|i| {
                    let name = book.defs[i].name.clone();
                    let c = book.counter(i, now);
                    (name, c.start, c.end, c.spent, c.reserved, c.tripped)
                })
                .collect();
            (book.defs.clone(), rows)
        };
        let mut store = json!({"kind": "file"});
        let fault = self.inner.ledger_fault.get().cloned();
        if let Some(shared) = &self.inner.shared {
            let keys: Vec<(String, i64, i64)> = rows.iter().map(|r| (r.0.clone(), r.1, r.2)).collect();
            let mut read = shared.read(&keys, now).await;
            if read.is_ok() && !self.reseed(shared).await.is_empty() {
                read = shared.read(&keys, now).await;
            }
            match read {
                Ok(states) => {
                    for (r, (spent, reserved)) in rows.iter_mut().zip(states) {
                        r.3 = spent;
                        r.4 = reserved;
                    }
                    store = json!({"kind": "redis", "available": true});
                }
                Err(e) => store = json!({"kind": "redis", "available": false, "error": e, "note": "figures are this process's local view"}),
            }
        }
        let list: Vec<Value> = defs
            .iter()
            .zip(&rows)
            .map(|(d, (_, _, end, spent, reserved, tripped))| {
                let state = if d.limits.over(*spent).is_some() || d.limits.fraction(*spent) >= 1.0 || *tripped == Some(d.limits) {
                    "exceeded"
                } else if d.limits.fraction(*spent) >= d.warn_at {
                    "warn"
                } else {
                    "ok"
                };
                let mut v = json!({
                    "name": d.name,
                    "scope": d.scope.to_string(),
                    "window": d.window.as_str(),
                    "limit_usd": d.limits.nanos.map(usd),
                    "spent_usd": usd(spent.nanos),
                    "reserved_usd": usd(reserved.nanos),
                    "remaining_usd": d.limits.nanos.map(|l| usd(l.saturating_sub(spent.nanos + reserved.nanos))),
                    "state": state,
                    "on_exceed": d.on_exceed.as_str(),
                    "warn_at": d.warn_at,
                    "resets_at": window::rfc3339(*end),
                    "spent_tokens": spent.tokens,
                    "reserved_tokens": reserved.tokens,
                    "requests": spent.requests,
                });
                if let Some(l) = d.limits.tokens {
                    v["limit_tokens"] = json!(l);
                }
                if let Some(l) = d.limits.requests {
                    v["limit_requests"] = json!(l);
                }
                if let OnExceed::Downgrade(to) = &d.on_exceed {
                    v["downgrade_to"] = json!(match to {
                        crate::config::Downgrade::Model(m) => m.as_str(),
                        crate::config::Downgrade::Cheapest => "cheapest",
                    });
                }
                v
            })
            .collect();
        if let Some(f) = fault {
            store["ledger_error"] = json!(f);
        }
        json!({"budgets": list, "store": store})
    }

    /// `GET /admin/usage?window=day|month`.
    pub fn usage(&self, window: Window) -> Value {
        let now = Timestamp::now();
        let mut book = self.inner.book();
        let spiking = book.spiking;
        let slot = if window == Window::Month { 1 } else { 0 };
        let u = &book.usage_at(now)[slot];
        let mut total = Cell::default();
        let mut by: [BTreeMap<String, Cell>; 4] = Default::default();
        for (key, c) in &u.cells {
            for (map, part) in by.iter_mut().zip(key.split(KEY_SEP)) {
                add_cell(map.entry(part.to_string()).or_default(), c);
            }
            add_cell(&mut total, c);
        }
        let render = |m: &BTreeMap<String, Cell>| -> Value { m.iter().map(|(k, c)| (k.clone(), cell_json(c))).collect::<serde_json::Map<String, Value>>().into() };
        json!({
            "window": window.as_str(),
            "from": window::rfc3339(u.start),
            "to": window::rfc3339(u.end),
            "total": cell_json(&total),
            "by_provider": render(&by[0]),
            "by_model": render(&by[1]),
            "by_app": render(&by[2]),
            "by_route": render(&by[3]),
            "spend_spike": spiking,
        })
    }

    /// Budget gauges in Prometheus text, appended to `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        let now = Timestamp::now();
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

/// The amounts a settled entry charges to budgets.
pub fn charged(e: &Entry) -> Amounts {
    Amounts { nanos: nanos(e.cost_usd), tokens: e.input + e.cached + e.cache_write + e.output, requests: 1 }
}

/// Background work: fsync the ledger every `fsync` (and once more at
/// shutdown), and reconnect to / reconcile with the shared store.
pub struct Upkeep {
    pub budgets: Budgets,
    pub fsync: std::time::Duration,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Upkeep {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let period = if self.fsync.is_zero() { std::time::Duration::from_secs(1) } else { self.fsync.min(std::time::Duration::from_secs(1)) };
        let mut tick = tokio::time::interval(period);
        let mut since_sync = std::time::Duration::ZERO;
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    self.budgets.sync_ledger();
                    return;
                }
                _ = tick.tick() => {
                    since_sync += period;
                    if since_sync >= self.fsync {
                        since_sync = std::time::Duration::ZERO;
                        let b = self.budgets.clone();
                        let _ = tokio::task::spawn_blocking(move || b.sync_ledger()).await;
                    }
                    self.budgets.reconcile().await;
                }
            }
        }
    }
}

fn add_cell(into: &mut Cell, c: &Cell) {
    into.requests += c.requests;
    into.input += c.input;
    into.output += c.output;
    into.nanos += c.nanos;
    into.requested_nanos += c.requested_nanos;
}

fn cell_json(c: &Cell) -> Value {
    let savings = c.requested_nanos as f64 / 1e9 - c.nanos as f64 / 1e9;
    let pct = if c.requested_nanos > 0 { savings / (c.requested_nanos as f64 / 1e9) * 100.0 } else { 0.0 };
    json!({
        "requests": c.requests,
        "input_tokens": c.input,
        "output_tokens": c.output,
        "cost_usd": usd(c.nanos),
        "requested_cost_usd": usd(c.requested_nanos),
        "savings_usd": (savings * 1e9).round() / 1e9,
        "savings_pct": (pct * 10.0).round() / 10.0,
    })
}

#[cfg(test)]
mod tests;
