//! Settlement of a relayed answer: usage as reported (or estimated when a
//! stream ended without it), cost, savings, metrics, and the budget
//! settlement with its ledger entry.

use crate::budget::{Budgets, Entry, Hold};
use crate::metrics;
use crate::policy::Facts;
use crate::proxy::ctx::Ctx;
use crate::usage::RawUsage;

use super::Answering;

/// Settle `a`'s reservation. A non-2xx answer without usage costs nothing
/// and only releases it. Returns the cost when the model's prices are known.
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
    let rec = &mut cx.rec;
    rec.usage_reported = reported.is_some() && !estimated;
    rec.input_tokens = u.input;
    rec.cached_input_tokens = u.cached_input;
    rec.cache_write_tokens = u.cache_write;
    rec.output_tokens = u.output;
    let cost = model.map(|m| u.cost_usd(&m.prices));
    let requested = rec.requested_model.as_deref().and_then(|n| a.snap.model_for(n)).map(|(m, _)| m);
    let requested_cost = match requested {
        Some(q) => u.cost_usd(&q.prices),
        None => cost.unwrap_or(0.0),
    };
    let label = a.attempt.model_label();
    metrics::usage(&a.provider.name, label, &u, cost.unwrap_or(0.0));
    if let (Some(q), Some(c)) = (requested, cost) {
        if q.name != label {
            metrics::savings(&q.name, label, requested_cost, c);
        }
    }
    rec.cost_usd = cost;
    let entry = Entry {
        ts: hold.admitted_at(),
        app: rec.app.clone(),
        task: rec.task.clone(),
        route: cx.route.clone(),
        provider: a.provider.name.clone(),
        model: label.to_string(),
        requested: rec.requested_model.clone().filter(|q| q != label),
        input: u.input,
        cached: u.cached_input,
        cache_write: u.cache_write,
        output: u.output,
        cost_usd: cost.unwrap_or(0.0),
        requested_cost_usd: requested_cost,
        estimated,
        downgraded_by: cx.trail.downgraded_by.clone(),
        arm: rec.arm.clone(),
        request_id: rec.arm.is_some().then_some(rec.request_id),
    };
    let actual = crate::budget::charged(&entry);
    budgets.settle(hold, actual, &entry).await;
    cost
}
