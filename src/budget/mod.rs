//! Budgets: reserve the worst case before the upstream call, settle the
//! actual cost after (DESIGN.md decision 3), an append-only ledger that
//! survives restarts (decision 5), optional shared counters in Redis, usage
//! reports with savings, and spend-spike alerts.
//!
//! One job per file:
//! - `amount`: amounts, limits and their arithmetic (a leaf `config` uses);
//! - `charge`: who a request charges, scope matching, worst-case estimates;
//! - `book`: counters per budget and window, usage cells, ledger replay;
//! - `admit`: judging a charge and reserving it (recounts internally);
//! - `hold`: a reservation's settle and release;
//! - `report`: the admin reports and `/metrics` gauges (typed);
//! - `spike`: spend-spike detection;
//! - `ledger`, `shared`, `window`, `lock`, `clock`, `upkeep`: the on-disk
//!   ledger, the Redis store, calendar windows, the state_dir lock, the
//!   injected clock and the background service.
//!
//! This file owns the [`Budgets`] handle: opening (ledger errors per
//! `on_ledger_error`), reload and the shared-store reseed. It must not
//! judge limits or render reports itself.
//!
//! Locks: the ledger's write lock is taken before the book's, never the
//! other way round; admission takes only the book.

mod admit;
pub mod amount;
mod book;
mod charge;
pub mod clock;
mod hold;
pub mod ledger;
pub mod lock;
mod report;
mod shared;
mod spike;
mod upkeep;
pub mod window;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub use admit::Verdict;
pub use amount::{Amounts, Limit};
use book::Book;
pub use charge::{charged, worst_case, Charge, Estimate, RequestEstimate, DEFAULT_MAX_OUTPUT_TOKENS};
use clock::{Clock, SystemClock};
pub use hold::Hold;
pub use ledger::{Entry, Ledger, Problem};
pub use report::{BudgetRow, BudgetsReport, CellReport, StoreReport, UsageBy, UsageQuery, UsageReport};
pub use shared::overrides::{FleetOverrides, OverrideChannel, OverrideOp, Subscription};
use shared::Shared;
pub use upkeep::Upkeep;

use crate::config::{OnLedgerError, Snapshot, StoreKind};

/// Budget state shared by the gateway, the admin API and the ledger syncer.
#[derive(Clone)]
pub struct Budgets {
    inner: Arc<Inner>,
}

struct Inner {
    book: Mutex<Book>,
    ledger: Ledger,
    shared: Option<Shared>,
    clock: Arc<dyn Clock>,
    next_id: AtomicU64,
    /// Random per process: hold ids are unique across a fleet (pids are
    /// not: every container's may be 1).
    nonce: u64,
    /// The ledger was damaged at start and `on_ledger_error` is
    /// `fail_closed`: what is wrong (budgeted requests are refused).
    ledger_fault: std::sync::OnceLock<String>,
}

impl Inner {
    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next_id(&self) -> String {
        format!("{:016x}-{}", self.nonce, self.next_id.fetch_add(1, Ordering::Relaxed))
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
        Self::open_with_clock(snap, Arc::new(SystemClock))
    }

    /// [`Budgets::open`] on `clock`'s time (tests move a
    /// [`clock::ManualClock`] instead of sleeping).
    pub fn open_with_clock(snap: &Snapshot, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let fsync_each = snap.budget_store.fsync_interval.is_zero();
        let shared = match &snap.budget_store.kind {
            StoreKind::File => None,
            StoreKind::Redis { url, on_unavailable, timeout, key_prefix } => Some(Shared::new(url, *on_unavailable, *timeout, key_prefix, clock.clone())?),
        };
        let b = Budgets {
            inner: Arc::new(Inner {
                book: Mutex::new(Book::default()),
                ledger: Ledger::new(&snap.state_dir, fsync_each),
                shared,
                clock,
                next_id: AtomicU64::new(1),
                nonce: shared::random_u64(),
                ledger_fault: std::sync::OnceLock::new(),
            }),
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
                let done = b.inner.ledger.reset(&problems, b.inner.clock.now())?;
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

    /// Take the own budgets of the keys created at runtime (all of them,
    /// replacing the last set): new ones are counted from the ledger, as a
    /// reload counts a new budget.
    pub fn set_key_budgets(&self, defs: Vec<crate::config::Budget>, snap: &Snapshot) {
        if self.inner.book().runtime == defs {
            return;
        }
        self.inner.book().runtime = defs;
        self.sync(snap);
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
                    if at.as_second() < end && scope.matches(&Charge::of_entry(e)) {
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

    /// The shared store, for admin overrides shared by the fleet (Redis
    /// mode only): same connection and up/down state as the budgets.
    pub fn override_channel(&self) -> Option<OverrideChannel> {
        self.inner.shared.as_ref().map(OverrideChannel::new)
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
}

#[cfg(test)]
mod tests;
