//! Who a request charges ([`Charge`]), which budgets that reaches
//! ([`Scope::matches`]), and how much it may cost before the call
//! ([`Estimate`], [`worst_case`]) and did cost after ([`charged`]).
//!
//! It must not touch counters or the ledger: it only describes a charge.

use super::amount::{nanos, Amounts};
use super::ledger::Entry;
use crate::config::{Model, Scope};

/// Output tokens reserved for a request that sets no max_tokens, on a model
/// without `max_output_tokens`.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 16_384;

/// Who a request (one attempt, or a settled ledger entry) charges: every
/// budget scope matches on this one value.
#[derive(Debug, Clone, Copy)]
pub struct Charge<'a> {
    pub provider: &'a str,
    pub model: Option<&'a str>,
    pub app: &'a str,
    pub task: Option<&'a str>,
    /// The virtual key's name.
    pub key: Option<&'a str>,
    /// The end user.
    pub user: Option<&'a str>,
}

impl<'a> Charge<'a> {
    /// The charge of a settled ledger entry.
    pub fn of_entry(e: &'a Entry) -> Self {
        Charge { provider: &e.provider, model: Some(e.model.as_str()), app: &e.app, task: e.task.as_deref(), key: e.key.as_deref(), user: e.user.as_deref() }
    }
}

impl Scope {
    /// Whether this scope counts `c`: every field the scope names matches.
    pub fn matches(&self, c: &Charge<'_>) -> bool {
        self.provider.as_deref().is_none_or(|p| p == c.provider)
            && self.model.as_deref().is_none_or(|m| Some(m) == c.model)
            && self.app.as_deref().is_none_or(|a| a == c.app)
            && self.task.as_deref().is_none_or(|t| Some(t) == c.task)
            && self.key.as_deref().is_none_or(|k| Some(k) == c.key)
            && self.user.as_deref().is_none_or(|u| Some(u) == c.user)
    }
}

/// What an attempt may cost at most, known before the call. Admission
/// reserves [`Estimate::bound`]; only when that does not fit, and it is
/// not exact, does it ask for [`Estimate::exact`] (which may cost a
/// tokenizer run) and judge again.
pub trait Estimate: Sync {
    /// A cheap upper bound.
    fn bound(&self) -> Amounts;
    /// Whether `bound` is already exact (no recount can lower it).
    fn is_exact(&self) -> bool;
    /// The tighter upper bound; asked for only when `bound` did not fit.
    fn exact(&self) -> Amounts;
}

/// A known amount is its own exact estimate.
impl Estimate for Amounts {
    fn bound(&self) -> Amounts {
        *self
    }
    fn is_exact(&self) -> bool {
        true
    }
    fn exact(&self) -> Amounts {
        *self
    }
}

/// The worst case of a request on a model (see [`worst_case`]): the byte
/// bound on input tokens first, the tokenizer's count when that is needed.
pub struct RequestEstimate<'a> {
    pub facts: &'a crate::policy::Facts<'a>,
    pub model: Option<&'a Model>,
}

impl Estimate for RequestEstimate<'_> {
    fn bound(&self) -> Amounts {
        worst_case(self.facts, self.model, false)
    }
    fn is_exact(&self) -> bool {
        false
    }
    fn exact(&self) -> Amounts {
        worst_case(self.facts, self.model, true)
    }
}

/// The most an attempt on `m` can cost: input tokens at the dearer of its
/// input and cache-write prices,
/// plus the output the client allows (max_tokens, else the model's
/// max_output_tokens, else [`DEFAULT_MAX_OUTPUT_TOKENS`]) at the output
/// price. Input tokens are the free upper bound (a token is at least a byte
/// of the body) unless `exact`, which runs the tokenizer. A model the
/// config does not know has no price (only tokens and requests count).
pub fn worst_case(f: &crate::policy::Facts<'_>, m: Option<&Model>, exact: bool) -> Amounts {
    let input = if exact { f.tokens_for(m.map(|m| m.id.as_str())).count } else { f.tokens_upper_bound() };
    let output = f.max_tokens.or(m.and_then(|m| m.max_output_tokens)).unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS);
    let usd = m.map_or(0.0, |m| {
        let p = &m.prices;
        (input as f64 * p.input_usd_per_mtok.max(p.cache_write_usd_per_mtok) + output as f64 * p.output_usd_per_mtok) / 1e6
    });
    Amounts { nanos: nanos(usd), tokens: input.saturating_add(output), requests: 1 }
}

/// The amounts a settled entry charges to budgets.
pub fn charged(e: &Entry) -> Amounts {
    Amounts { nanos: nanos(e.cost_usd), tokens: e.input + e.cached + e.cache_write + e.output, requests: 1 }
}
