//! Settlement of a relayed answer: usage as reported (or estimated when a
//! stream ended without it), cost, savings, metrics, and the budget
//! settlement with its ledger entry.

use crate::budget::{Budgets, Entry, Hold};
use crate::metrics;
use crate::policy::Facts;
use crate::proxy::ctx::Ctx;
use crate::usage::RawUsage;

use super::Answering;

/// Settle `a`'s reservation and its model's rate-limit hold (the request's
/// own, `cx.rate`, with the delivered answer). A non-2xx answer without
/// usage costs nothing and only releases them (its requests still count).
/// Returns the cost when the model's prices are known.
pub async fn settle(
    budgets: &Budgets,
    a: &mut Answering<'_, '_>,
    facts: &Facts<'_>,
    ok: bool,
    raw: Option<RawUsage>,
    text_bytes: u64,
    cx: &mut Ctx,
) -> Option<f64> {
    let hold = std::mem::replace(&mut a.hold, Hold::none());
    if let crate::cache::Note::Hit { usage, cache } = &a.cache {
        // (Boxed: the common path's future is not sized for it.)
        return Box::pin(settle_hit(budgets, a, *usage, cache.clone(), hold, cx)).await;
    }
    let reported = raw.map(|u| u.normalize(a.provider.kind));
    if !a.model_call || (!ok && reported.is_none()) {
        drop(hold);
        return None;
    }
    let model = a.attempt.model;
    // Without the provider's figures: input from the tokenizer, output from
    // the text seen (~4 bytes a token), also when a cut stream's reported
    // output is short.
    let est_output = text_bytes.div_ceil(4);
    let mut u = reported.unwrap_or_default();
    let mut estimated = false;
    if u.total_input() == 0 {
        u.input = facts.tokens_for(model.map(|m| m.id.as_str())).count;
        estimated = true;
    }
    if est_output > u.output && (reported.is_none() || cx.trail.error.is_some()) {
        u.output = est_output;
        estimated = true;
    }
    let cost = model.map(|m| u.cost_usd(&m.prices));
    let label = a.attempt.model_label();
    if let Some((check, to)) = a.discarded.take() {
        // An answer not delivered: its tokens were spent, but it saved
        // nothing (the delivered answer stands for the request).
        let rec = &mut cx.rec;
        metrics::usage(&a.provider.name, label, &rec.app, rec.task.as_deref(), &a.snap.metric_labels, &u, cost.unwrap_or(0.0));
        let spent = cost.unwrap_or(0.0);
        *rec.escalation_cost_usd.get_or_insert(0.0) += spent;
        let entry = Entry {
            input: u.input,
            cached: u.cached_input,
            cache_write: u.cache_write,
            output: u.output,
            cost_usd: spent,
            requested_cost_usd: 0.0,
            estimated,
            check_failed: Some(check.as_str().to_string()),
            escalated_to: Some(to),
            request_id: Some(cx.rec.request_id),
            escalated: None,
            ..entry_of(a, &hold, cx)
        };
        let actual = crate::budget::charged(&entry);
        if let Some(r) = a.rate.take() {
            r.settle(actual.tokens).await;
        }
        budgets.settle(hold, actual, &entry).await;
        return cost;
    }
    let rec = &mut cx.rec;
    rec.usage_reported = reported.is_some() && !estimated;
    rec.input_tokens = u.input;
    rec.cached_input_tokens = u.cached_input;
    rec.cache_write_tokens = u.cache_write;
    rec.output_tokens = u.output;
    let requested = rec.requested_model.as_deref().and_then(|n| a.snap.model_for(n)).map(|(m, _)| m);
    let requested_cost = match requested {
        Some(q) => u.cost_usd(&q.prices),
        None => cost.unwrap_or(0.0),
    };
    metrics::usage(&a.provider.name, label, &rec.app, rec.task.as_deref(), &a.snap.metric_labels, &u, cost.unwrap_or(0.0));
    if let (Some(q), Some(c)) = (requested, cost) {
        if q.name != label {
            metrics::savings(&q.name, label, requested_cost, c);
        }
    }
    rec.cost_usd = cost;
    let entry = Entry {
        input: u.input,
        cached: u.cached_input,
        cache_write: u.cache_write,
        output: u.output,
        cost_usd: cost.unwrap_or(0.0),
        requested_cost_usd: requested_cost,
        estimated,
        ..entry_of(a, &hold, cx)
    };
    let actual = crate::budget::charged(&entry);
    if let Some(r) = cx.rate.take() {
        r.settle(actual.tokens).await;
    }
    if let Some(r) = a.rate.take() {
        r.settle(actual.tokens).await;
    }
    budgets.settle(hold, actual, &entry).await;
    cost
}

/// Settle an answer the response cache served: no upstream call, so no
/// tokens and $0; the ledger entry and access log say it was a hit and
/// what it saved (the cached answer's usage at the model's prices); the
/// budgets count it as one request.
async fn settle_hit(budgets: &Budgets, a: &Answering<'_, '_>, usage: crate::usage::Usage, cache: crate::cache::Cache, hold: Hold, cx: &mut Ctx) -> Option<f64> {
    let model = a.attempt.model;
    let label = a.attempt.model_label();
    let saved = model.map_or(0.0, |m| usage.cost_usd(&m.prices));
    metrics::cache_savings(&a.provider.name, label, saved);
    cache.saved(saved);
    let rec = &mut cx.rec;
    rec.usage_reported = true;
    rec.cost_usd = model.map(|_| 0.0);
    rec.cache_saved_usd = Some(saved);
    let entry = Entry { cache_hit: true, cache_saved_usd: saved, ..entry_of(a, &hold, cx) };
    if let Some(r) = cx.rate.take() {
        r.settle(0).await;
    }
    let actual = crate::budget::charged(&entry);
    budgets.settle(hold, actual, &entry).await;
    model.map(|_| 0.0)
}

/// The ledger entry's who and what, shared by served answers and cache
/// hits (a hit in a split arm keeps its arm too).
fn entry_of(a: &Answering<'_, '_>, hold: &Hold, cx: &Ctx) -> Entry {
    let label = a.attempt.model_label();
    Entry {
        ts: hold.admitted_at(),
        app: cx.rec.app.clone(),
        task: cx.rec.task.clone(),
        route: cx.route.clone(),
        provider: a.provider.name.clone(),
        model: label.to_string(),
        requested: cx.rec.requested_model.clone().filter(|q| q != label),
        downgraded_by: cx.trail.downgraded_by.clone(),
        arm: cx.rec.arm.clone(),
        request_id: (cx.rec.arm.is_some() || cx.rec.escalated.is_some() || cx.rec.check_failed.is_some()).then_some(cx.rec.request_id),
        escalated: cx.rec.escalated.clone(),
        check_failed: cx.rec.check_failed.map(str::to_string),
        key: cx.rec.key.clone(),
        user: cx.rec.user.clone(),
        ..Entry::default()
    }
}
