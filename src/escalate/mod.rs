//! Answer checks that escalate (a route's `escalate_on`): the answer the
//! attempt loop accepted is judged before the client sees any of it; one
//! that fails is settled as spent (ledger, metrics) and the request is
//! re-sent to the next stronger model of the route (`escalate_to`, the
//! tiers above, or its models of higher `quality`), at most
//! `max_escalations` times. The client gets the first answer that passes,
//! or the last one marked `x-modelgate-check-failed`.
//!
//! ```text
//!  served ──▶ read (JSON whole; a stream only with check_streams: buffered)
//!     │         answer.rs: what it says, in the provider's own format
//!     ├─ judge ─ check.rs: what the request asked (JSON, schema, logprobs)
//!     │   pass ──────────────────────────────────────────────▶ relay
//!     │   fail, a stronger model fits ─▶ attempts (ladder) ─▶ served'
//!     │          the failed answer settled as discarded ◀──┘   (loop)
//!     └── fail, nowhere to go (or it failed too) ─▶ relay, marked
//! ```
//!
//! It never writes to the client; the relay does. Routes without checks
//! never reach this module (one `Option` test per request).

pub mod answer;
mod buffer;
mod check;

use bytes::{Bytes, BytesMut};

use crate::budget::Budgets;
use crate::config::{Check, Escalation};
use crate::dialect::Dialect;
use crate::drain::AbortSignal;
use crate::metrics;
use crate::proxy::ctx::Ctx;
use crate::relay::{settle, Answering, Response};
use crate::translate::Wire;
use crate::upstream::attempts::{Attempts, Outcome, Request, Served};
use crate::upstream::Connector;
use crate::usage::UsageCarrier;

pub use answer::Said;
pub use check::{judge, Expect, Failed};

/// Judge `served` by the route's checks and escalate while it fails;
/// the answer to relay.
pub async fn checked<'s>(
    at: &Attempts<'_>,
    esc: &Escalation,
    q: &Request<'_, 's>,
    mut served: Box<Served<'s>>,
    cx: &mut Ctx,
    abort: &mut AbortSignal,
) -> Box<Served<'s>> {
    // Cached answers were checked before they were kept; shadow mode
    // forwards unchanged (`routing.shadow`).
    if matches!(served.cache, crate::cache::Note::Hit { .. }) || q.decision.shadow.is_some() {
        return served;
    }
    let (Some(body), Some(client)) = (q.json, Wire::of_client(q.incoming.dialect, q.incoming.api)) else { return served };
    let expect = Expect::of(client, body, esc);
    // Escalations go to the upstream: no cache lookups on the way.
    let q2 = Request { cache: None, ..*q };
    let mut tried: Vec<&'s str> = Vec::new();
    let mut hops = 0;
    loop {
        let Some(said) = read(&mut served, client, esc, q.snap.limits.max_answer_bytes, abort).await else { return served };
        let from = served.attempt.model_label().to_string();
        let failed = match judge(esc, &expect, &said) {
            Ok(()) => {
                metrics::answer_check(&cx.route, &from, "pass");
                return served;
            }
            Err(f) => f,
        };
        metrics::answer_check(&cx.route, &from, failed.check.as_str());
        tracing::info!(route = %cx.route, model = %from, check = failed.check.as_str(), detail = %failed.detail, "answer failed its check");
        if let Some(m) = served.attempt.model {
            tried.push(m.name.as_str());
        }
        // A budget that moved the request to a cheaper model wins: no
        // re-send to a stronger one (the answer is marked).
        let plan = match (hops < esc.max && cx.trail.downgraded_by.is_none(), served.attempt.model) {
            (true, Some(m)) => crate::policy::escalation(q.snap, q.decision, q.facts, esc, m, &tried),
            _ => Vec::new(),
        };
        if plan.is_empty() {
            return mark(served, failed.check, cx);
        }
        // The failed answer stays in hand (its hold too) until another serves.
        let (model, provider, error) = (cx.trail.model.clone(), cx.trail.provider.clone(), cx.trail.error.clone());
        let next = match at.run_plan(&q2, plan, &mut cx.trail, abort).await {
            Outcome::Served(n) if n.response_ok() => n,
            other => {
                if let Outcome::Served(n) = other {
                    tracing::warn!(route = %cx.route, model = n.attempt.model_label(), status = n.status(), "the escalation's answer is an error; delivering the answer that failed its check");
                    n.abandon(at.connector).await;
                } else {
                    tracing::warn!(route = %cx.route, model = %from, "no stronger model could serve the escalation; delivering the answer that failed its check");
                }
                (cx.trail.model, cx.trail.provider, cx.trail.error) = (model, provider, error);
                return mark(served, failed.check, cx);
            }
        };
        let to = next.attempt.model_label().to_string();
        let cost = discard(at.budgets, at.connector, served, failed.check, &to, q, cx).await;
        metrics::escalation(&cx.route, &from, &to, failed.check.as_str(), cost.unwrap_or(0.0));
        let hop = format!("{from}→{to}:{}", failed.check);
        cx.rec.escalated = Some(match cx.rec.escalated.take() {
            Some(before) => format!("{before}, {hop}"),
            None => hop,
        });
        served = next;
        hops += 1;
    }
}

/// What the answer says; `None` when it is not checked (an error status,
/// a stream on a route that does not buffer streams, a stream too large
/// to hold or broken before its end, a body that is not an answer).
async fn read(served: &mut Served<'_>, client: Wire, esc: &Escalation, max: usize, abort: &mut AbortSignal) -> Option<Said> {
    if !served.response_ok() {
        return None;
    }
    // The provider's own format (a translated request's provider speaks
    // its dialect's; an untranslated one answers in the client's).
    let (wire, json_tool) = match &served.translated {
        Some((_, chat)) => (Wire::of_provider(served.provider.kind), served.provider.kind == Dialect::Anthropic && chat.json.is_some()),
        None => (client, false),
    };
    match &mut served.response {
        Response::Whole { body, .. } => answer::whole(wire, body, json_tool),
        Response::Stream { .. } if !esc.streams => None,
        Response::Stream { src, first, .. } => {
            let (held, bytes) = buffer::hold(std::mem::replace(src, buffer::placeholder()), first, max, abort).await;
            *src = held;
            bytes.map(|b| answer::stream(wire, &b, json_tool))
        }
    }
}

/// Deliver `served` although it failed `check`: marked, and never kept by
/// the response cache.
fn mark<'s>(mut served: Box<Served<'s>>, check: Check, cx: &mut Ctx) -> Box<Served<'s>> {
    cx.rec.check_failed = Some(check.as_str());
    served.cache = crate::cache::Note::None;
    served
}

/// Settle an answer that is not delivered (its tokens were spent) and
/// close its exchange; its cost.
async fn discard(budgets: &Budgets, connector: &Connector, served: Box<Served<'_>>, check: Check, to: &str, q: &Request<'_, '_>, cx: &mut Ctx) -> Option<f64> {
    let (mut a, response) = Answering::of(*served, q.snap, true);
    a.discarded = Some((check, to.to_string()));
    a.cache = crate::cache::Note::None;
    match response {
        Response::Whole { src, body, usage } => {
            let usage = usage.or_else(|| UsageCarrier::parse(&body).and_then(|c| c.usages().last().copied()));
            let text_bytes = if usage.is_none() { body.len() as u64 } else { 0 };
            let cost = settle(budgets, &mut a, q.facts, true, usage, text_bytes, cx).await;
            src.finish(connector).await;
            cost
        }
        Response::Stream { mut src, mut tap, .. } => {
            // Read what the tap has not seen yet (buffered: from memory).
            while let Ok(Some(c)) = src.chunk().await {
                tap.feed(&c);
            }
            tap.finish();
            let cost = settle(budgets, &mut a, q.facts, true, tap.usage(), tap.text_bytes, cx).await;
            src.finish(connector).await;
            cost
        }
    }
}

/// The bytes of `first` and `chunks`, in order.
fn joined(first: &Bytes, chunks: &[Bytes]) -> Bytes {
    let mut b = BytesMut::with_capacity(first.len() + chunks.iter().map(Bytes::len).sum::<usize>());
    b.extend_from_slice(first);
    chunks.iter().for_each(|c| b.extend_from_slice(c));
    b.freeze()
}
