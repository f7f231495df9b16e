//! Admission: judge a charge's worst case against every budget that
//! counts it (local book or the shared store), then reserve it as a
//! [`Hold`], move the request to a cheaper model, or refuse it. A bound
//! that does not fit is recounted exactly here, never by the caller.
//!
//! It must not settle spend or write the ledger (`hold`), nor render
//! reports.

use std::sync::Arc;

use jiff::Timestamp;

use super::amount::{Amounts, Limit, Limits};
use super::book::{Book, Refusal};
use super::charge::{Charge, Estimate};
use super::hold::{Hold, HoldEntry};
use super::shared::Shared;
use super::{window, Budgets, Inner};
use crate::config::{Budget, Downgrade, OnExceed, OnUnavailable};
use crate::dialect::{ErrorKind, GatewayError};

/// The outcome of admission.
pub enum Verdict {
    /// Reserved; settle or drop the hold.
    Go(Hold),
    /// A budget with `on_exceed: downgrade` is used up: serve the request
    /// with its downgrade model instead.
    Downgrade {
        budget: String,
        to: Downgrade,
    },
    Refuse(GatewayError),
}

/// One admission pass: a verdict, or (for a bound that is not exact and
/// did not fit cleanly) a request to judge again on the exact count.
/// Nothing is reserved or recorded by a `Recount`.
enum Pass {
    Done(Verdict),
    Recount,
}

/// What admission concluded from the budgets' current counts.
pub(super) enum Judged {
    Go { over_warn_only: Vec<usize> },
    Downgrade(usize),
    Refuse { i: usize, what: Limit, limit: u64 },
}

/// One budget's counts as admission sees them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Seen {
    pub(super) i: usize,
    pub(super) spent: Amounts,
    pub(super) reserved: Amounts,
    pub(super) end: i64,
}

/// `requests_only`: judge request limits alone (a cache hit spends no
/// dollars or tokens).
pub(super) fn judge(defs: &[Budget], seen: &[Seen], worst: Amounts, downgraded: bool, requests_only: bool) -> Judged {
    let mut downgrade = None;
    let mut refuse = None;
    let mut warn_only = Vec::new();
    for s in seen {
        let Some((what, limit)) = defs[s.i].limits.only(requests_only).over(s.spent + s.reserved + worst) else { continue };
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

fn refusal(def: &Budget, s: &Seen, worst: Amounts, what: Limit, limit: u64, now: Timestamp) -> GatewayError {
    let secs = (s.end - now.as_second()).max(1) as u64;
    let resets = window::rfc3339(s.end);
    let wait = humantime::format_duration(std::time::Duration::from_secs(secs));
    let need = what.of(worst);
    let field = what.field();
    let message = if need > limit {
        format!(
            "budget `{}` ({}, per {}) allows {} and this request alone may use up to {}; lower max_tokens, send a smaller request, or raise {field}",
            def.name,
            def.scope,
            def.window.as_str(),
            what.show(limit),
            what.show(need)
        )
    } else {
        format!(
            "budget `{}` ({}, per {}) is used up: {} of {} spent and {} reserved by requests in flight; this request may use up to {}. It resets at {resets} (in {wait}); raise {field} in the config to allow more now",
            def.name,
            def.scope,
            def.window.as_str(),
            what.show(what.of(s.spent)),
            what.show(limit),
            what.show(what.of(s.reserved)),
            what.show(need)
        )
    };
    GatewayError::new(429, ErrorKind::BudgetExceeded, "budget_exceeded", message).retry_after(secs)
}

/// Remember that a request's worst case did not fit in budget `i` (for
/// the report: "at limit: a request needing up to $0.16 was refused with
/// $0.0081 left").
#[allow(clippy::too_many_arguments)]
fn note_refusal(book: &mut Book, i: usize, seen: &[Seen], worst: Amounts, action: &'static str, now: Timestamp, requests_only: bool) {
    let Some(s) = seen.iter().find(|s| s.i == i) else { return };
    let limits = book.defs[i].limits.only(requests_only);
    let Some((what, limit)) = limits.over(s.spent + s.reserved + worst) else { return };
    let left = limit.saturating_sub(what.of(s.spent + s.reserved));
    let ctr = book.counter(i, now);
    ctr.refused = Some(Refusal { what, need: what.of(worst), left, action, at: now.as_second() });
}

/// The budgets a shared reservation touches: their (name, window start,
/// window end) keys and (limits, blocking) flags.
type SharedKeys = (Vec<usize>, Vec<(String, i64, i64)>, Vec<(Limits, bool)>);

impl Inner {
    /// Admission against the local book.
    fn admit_local(self: &Arc<Self>, c: &Charge<'_>, worst: Amounts, may_recount: bool, downgraded: bool, now: Timestamp, requests_only: bool) -> Pass {
        let mut book = self.book();
        let idx = book.applicable(c);
        if idx.is_empty() {
            return Pass::Done(Verdict::Go(Hold::none_at(now)));
        }
        let seen: Vec<Seen> = idx
            .iter()
            .map(|&i| {
                let ctr = book.counter(i, now);
                Seen { i, spent: ctr.spent, reserved: ctr.reserved, end: ctr.end }
            })
            .collect();
        let judged = judge(&book.defs, &seen, worst, downgraded, requests_only);
        self.conclude(&mut book, judged, &seen, worst, may_recount, now, false, requests_only)
    }

    /// Turn a judgement into a verdict; on `Go`, reserve in the local book
    /// (also the mirror of a shared reservation).
    #[allow(clippy::too_many_arguments)]
    fn conclude(
        self: &Arc<Self>,
        book: &mut Book,
        judged: Judged,
        seen: &[Seen],
        worst: Amounts,
        may_recount: bool,
        now: Timestamp,
        remote: bool,
        requests_only: bool,
    ) -> Pass {
        if may_recount && !matches!(&judged, Judged::Go { over_warn_only } if over_warn_only.is_empty()) {
            return Pass::Recount;
        }
        Pass::Done(match judged {
            Judged::Go { over_warn_only } => {
                for i in over_warn_only {
                    let def = book.defs[i].clone();
                    note_refusal(book, i, seen, worst, "warn", now, requests_only);
                    let ctr = book.counter(i, now);
                    if ctr.tripped.is_none() {
                        ctr.tripped = Some(def.limits);
                        crate::metrics::budget_warning(&def.name, "exceeded");
                        tracing::warn!(budget = %def.name, scope = %def.scope, window = def.window.as_str(), "budget exceeded; on_exceed: warn lets requests through");
                    }
                    book.exceeded_alert(i, now, Some("warn"));
                }
                let mut entries = Vec::with_capacity(seen.len());
                for s in seen {
                    let name = book.defs[s.i].name.clone();
                    let ctr = book.counter(s.i, now);
                    ctr.reserved = ctr.reserved + worst;
                    entries.push(HoldEntry { name, gen: ctr.gen, start: ctr.start, end: ctr.end });
                }
                Verdict::Go(Hold::new(self.clone(), now, self.next_id(), worst, entries, remote))
            }
            Judged::Downgrade(i) => {
                let def = book.defs[i].clone();
                note_refusal(book, i, seen, worst, "downgrade", now, requests_only);
                self.trip(book, i, now, "downgrade");
                let to = match def.on_exceed {
                    OnExceed::Downgrade(to) => to,
                    _ => Downgrade::Cheapest,
                };
                Verdict::Downgrade { budget: def.name, to }
            }
            Judged::Refuse { i, what, limit } => {
                note_refusal(book, i, seen, worst, "reject", now, requests_only);
                self.trip(book, i, now, "reject");
                let s = seen.iter().find(|s| s.i == i).copied().unwrap_or(Seen {
                    i,
                    spent: Amounts::default(),
                    reserved: Amounts::default(),
                    end: now.as_second(),
                });
                Verdict::Refuse(refusal(&book.defs[i], &s, worst, what, limit, now))
            }
        })
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
        book.exceeded_alert(i, now, Some(action));
    }

    /// The shared-store keys and flags of the budgets that count `c`.
    fn shared_keys(&self, c: &Charge<'_>, downgraded: bool, now: Timestamp, requests_only: bool) -> SharedKeys {
        let mut book = self.book();
        let idx = book.applicable(c);
        let keys = idx
            .iter()
            .map(|&i| {
                let name = book.defs[i].name.clone();
                let ctr = book.counter(i, now);
                (name, ctr.start, ctr.end)
            })
            .collect();
        let flags = idx.iter().map(|&i| (book.defs[i].limits.only(requests_only), blocking(&book.defs[i], downgraded))).collect();
        (idx, keys, flags)
    }
}

impl Budgets {
    /// Reserve the worst case of a request charging `c` in every budget
    /// that counts it. `est.bound()` is tried first; when it does not fit
    /// (and is not exact) the exact count is taken and judged instead.
    pub async fn admit(&self, c: &Charge<'_>, est: &dyn Estimate, downgraded: bool) -> Verdict {
        self.admit_as(c, est, downgraded, false).await
    }

    /// Admit an answer served from the response cache: one request, no
    /// dollars or tokens; judged on request limits alone (a budget whose
    /// dollars are used up still lets a $0 hit through).
    pub async fn admit_hit(&self, c: &Charge<'_>) -> Verdict {
        self.admit_as(c, &Amounts { nanos: 0, tokens: 0, requests: 1 }, false, true).await
    }

    async fn admit_as(&self, c: &Charge<'_>, est: &dyn Estimate, downgraded: bool, requests_only: bool) -> Verdict {
        if let Some(v) = self.ledger_fault_refusal(c) {
            return v;
        }
        if c.user.is_some() {
            let now = self.inner.clock.now();
            let full = self.inner.book().ensure_user(c, now, now).err();
            if let Some((name, max)) = full {
                crate::metrics::budget_exceeded(&name, "reject");
                return Verdict::Refuse(GatewayError::new(429, ErrorKind::BudgetExceeded, "budget_users_full", format!(
                    "budget `{name}` is kept per user and already tracks {max} users with spend this window (its max_users); this new user is refused until the window resets or the budget's max_users is raised"
                )).retry_after(60));
            }
        }
        let mut worst = est.bound();
        let mut may_recount = !est.is_exact();
        loop {
            let now = self.inner.clock.now();
            let pass = match &self.inner.shared {
                None => self.inner.admit_local(c, worst, may_recount, downgraded, now, requests_only),
                // Boxed: the Redis future is large and rare; it would size every
                // request's future.
                Some(shared) => Box::pin(self.admit_shared(shared, c, worst, may_recount, downgraded, now, requests_only)).await,
            };
            match pass {
                Pass::Done(v) => return v,
                Pass::Recount => {
                    worst = est.exact();
                    may_recount = false;
                }
            }
        }
    }

    /// `on_ledger_error: fail_closed` with a damaged ledger: the refusal of
    /// a request that a budget applies to.
    fn ledger_fault_refusal(&self, c: &Charge<'_>) -> Option<Verdict> {
        let fault = self.inner.ledger_fault.get()?;
        if self.inner.book().applicable(c).is_empty() {
            return None;
        }
        Some(Verdict::Refuse(GatewayError::new(503, ErrorKind::Unavailable, "budget_ledger_damaged", format!(
            "modelgate's spend ledger is damaged ({fault}) and budget_store.on_ledger_error is fail_closed, so requests that a budget applies to are refused until an operator repairs or moves the damaged file(s) and restarts modelgate"
        ))))
    }

    /// Admission against the shared store (Redis), mirrored in the book.
    #[allow(clippy::too_many_arguments)]
    async fn admit_shared(
        &self,
        shared: &Shared,
        c: &Charge<'_>,
        worst: Amounts,
        may_recount: bool,
        downgraded: bool,
        now: Timestamp,
        requests_only: bool,
    ) -> Pass {
        let inner = &self.inner;
        let mut reseeded_once = false;
        loop {
            let (idx, keys, flags) = inner.shared_keys(c, downgraded, now, requests_only);
            if idx.is_empty() {
                return Pass::Done(Verdict::Go(Hold::none_at(now)));
            }
            let id = inner.next_id();
            let (reserved, states) = match shared.reserve(&id, &keys, &flags, worst, now).await {
                Ok(r) => r,
                Err(e) => {
                    // Sent but unanswered: Redis may still make the reservation.
                    if e.maybe_ran {
                        shared.release_later(&id, worst, keys);
                    }
                    return match shared.on_unavailable {
                        OnUnavailable::FailOpen => {
                            tracing::debug!(error = %e, "budget store unavailable; admitting with local accounting (fail_open)");
                            inner.admit_local(c, worst, may_recount, downgraded, now, requests_only)
                        }
                        OnUnavailable::FailClosed => Pass::Done(Verdict::Refuse(GatewayError::new(503, ErrorKind::Unavailable, "budget_store_unavailable", format!(
                            "modelgate cannot reach its shared budget store ({e}) and budget_store.on_unavailable is fail_closed, so requests that a budget applies to are refused until it is back; retry shortly"
                        )).retry_after(1))),
                    };
                }
            };
            // A counter lost spend (Redis restarted empty, FLUSHALL): add
            // ours back, then judge again on the whole count.
            let fixed = self.reseed(shared).await;
            if !reseeded_once && keys.iter().any(|k| fixed.iter().any(|f| f.0 == k.0 && f.1 == k.1)) {
                reseeded_once = true;
                if reserved {
                    shared.settle_later(id, worst, keys, Amounts::default());
                }
                continue;
            }
            let mut book = inner.book();
            let seen: Vec<Seen> = idx
                .iter()
                .zip(&states)
                .map(|(&i, (spent, reserved))| Seen {
                    i,
                    spent: *spent,
                    reserved: *reserved,
                    end: keys.iter().find(|k| k.0 == book.defs[i].name).map(|k| k.2).unwrap_or(0),
                })
                .collect();
            // Mirror the shared counts locally (for fail-open and reports).
            for s in &seen {
                let ctr = book.counter(s.i, now);
                ctr.spent = s.spent;
                ctr.reserved = s.reserved;
            }
            let judged = judge(&book.defs, &seen, worst, downgraded, requests_only);
            return match inner.conclude(&mut book, judged, &seen, worst, may_recount, now, true, requests_only) {
                Pass::Done(Verdict::Go(mut h)) => {
                    h.set_id(id);
                    Pass::Done(Verdict::Go(h))
                }
                other => {
                    // Redis reserved (no blocking budget was over) but
                    // admission refuses, downgrades or recounts: give it back.
                    if reserved {
                        drop(book);
                        shared.settle_later(id, worst, keys, Amounts::default());
                    }
                    other
                }
            };
        }
    }
}
