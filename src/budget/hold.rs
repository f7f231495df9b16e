//! Holds: a reservation made by admission, settled with the actual spend
//! (ledger entry appended, counters and usage updated) or released when
//! dropped unsettled.
//!
//! It must not judge limits (`admit`) nor read the ledger back.

use std::sync::Arc;

use jiff::Timestamp;

use super::amount::Amounts;
use super::book::Book;
use super::ledger::Entry;
use super::{Budgets, Inner};

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

/// One budget counter a hold reserved in.
#[derive(Debug, Clone)]
pub(super) struct HoldEntry {
    pub(super) name: String,
    pub(super) gen: u64,
    pub(super) start: i64,
    pub(super) end: i64,
}

impl Hold {
    /// Nothing reserved, admitted now on the system clock: for a
    /// placeholder, or a caller without the [`Budgets`] (which has
    /// [`Budgets::no_hold`], on the budgets' clock).
    pub fn none() -> Self {
        // No budgets' clock at hand here: the one wall-clock read left.
        Hold::none_at(Timestamp::now())
    }

    pub(super) fn none_at(at: Timestamp) -> Self {
        Hold { inner: None, at, id: String::new(), amounts: Amounts::default(), entries: Vec::new(), remote: false, done: true }
    }

    pub(super) fn new(inner: Arc<Inner>, at: Timestamp, id: String, amounts: Amounts, entries: Vec<HoldEntry>, remote: bool) -> Self {
        Hold { inner: Some(inner), at, id, amounts, entries, remote, done: false }
    }

    /// Use the id the shared store reserved under.
    pub(super) fn set_id(&mut self, id: String) {
        self.id = id;
    }

    /// Admission time, RFC 3339 (the ledger entry's `ts`).
    pub fn admitted_at(&self) -> String {
        self.at.round(jiff::Unit::Millisecond).unwrap_or(self.at).to_string()
    }

    /// The budgets this hold reserved in.
    pub fn budgets(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name.as_str())
    }

    fn keys(&self) -> Vec<(String, i64, i64)> {
        self.entries.iter().map(|e| (e.name.clone(), e.start, e.end)).collect()
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

impl Inner {
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
                shared.settle_later(h.id.clone(), h.amounts, h.keys(), Amounts::default());
            }
        }
    }
}

impl Budgets {
    /// Nothing reserved (no budget applies), admitted now on the budgets'
    /// clock: its [`Hold::admitted_at`] stamps the ledger entry.
    pub fn no_hold(&self) -> Hold {
        Hold::none_at(self.inner.clock.now())
    }

    /// Replace the hold's reservation with the actual amounts and append
    /// the ledger entry. Returns when the entry is written.
    pub async fn settle(&self, mut hold: Hold, actual: Amounts, entry: &Entry) {
        hold.done = true;
        let inner = &self.inner;
        let now = inner.clock.now();
        let at = entry.at().unwrap_or(now);
        {
            let mut appends = inner.ledger.lock();
            if let Err(e) = inner.ledger.append(&mut appends, entry, now) {
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
            book.spike.check(now);
        }
        if let Some(shared) = &inner.shared {
            let keys = hold.keys();
            if keys.is_empty() {
                return;
            }
            // Boxed: the Redis future would size every request's future.
            let states = Box::pin(async {
                let states = shared.settle(hold.id.clone(), hold.remote, hold.amounts, keys.clone(), actual).await;
                self.reseed(shared).await;
                states
            })
            .await;
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
