//! Rate limits: requests and tokens per minute, per key, app, user, model
//! or globally (`rate_limits:`, and a key's own `rate_limits:`).
//!
//! A sliding window of 60 s: each admitted request is an entry
//! `(time, id, tokens)` in every count it falls under; a request is
//! admitted only when, in each, the entries of the last minute plus this
//! one stay within `rpm` and their tokens plus this request's worst case
//! (input + allowed output, as budgets reserve) within `tpm`. Settlement
//! replaces the worst case with the tokens used; a request that ends
//! without an answer gives its tokens back (it still counts as a request).
//! A refusal is a 429 with `Retry-After` (when enough of the window has
//! slid by), which the SDKs retry on their own.
//!
//! With a Redis budget store the counts are the fleet's: one Lua script
//! (`scripts::ADMIT`) checks and adds to every count atomically on
//! Redis's clock; if Redis cannot be reached, `budget_store.on_unavailable`
//! decides (fail_open: count locally meanwhile; fail_closed: 503).
//!
//! Limits that count per model (`scope: {model}` or `per: model`) are
//! admitted apart from the others ([`Part`]): the request's own hold
//! (key, app, user, global) before the attempts, and one hold per model
//! the attempt loop tries — fallbacks and escalations included — just
//! before that model's first call (`upstream::attempts`). A model over
//! its limit is skipped to the next of the plan; each model's hold is
//! settled with its own answer's tokens.
//!
//! It never runs when no limit applies to a request (no allocation, no
//! lock): [`Limiter::admit`] returns at once.

mod local;
mod redis_store;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::{OnUnavailable, Per, RateAmounts, RateLimit, Snapshot, StoreKind, VirtualKey};
use crate::dialect::{ErrorKind, GatewayError};

/// The sliding window.
pub const WINDOW_MS: i64 = 60_000;

/// Who a request is, as rate limits see it.
pub struct Who<'a> {
    pub key: Option<&'a VirtualKey>,
    pub app: &'a str,
    pub user: Option<&'a str>,
    /// The configured model tried ([`Part::Model`]).
    pub model: Option<&'a str>,
    /// Which of the limits that apply are admitted.
    pub part: Part,
}

/// The limits one admission takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Once per request, before its attempts: a key's own limits and every
    /// limit that does not count per model.
    Request,
    /// Once per model tried: the limits scoped to a model or kept
    /// `per: model` ([`RateLimit::by_model`]).
    Model,
}

/// One count a request falls under.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    /// `NAME` or `NAME␟VALUE` (one per distinct key/app/user/model).
    pub id: String,
    /// The rate limit's name (for errors and metrics).
    pub limit: String,
    pub per: Option<(Per, String)>,
    pub amounts: RateAmounts,
    pub max_buckets: usize,
}

/// Why admission refused.
pub(crate) struct Refusal {
    pub bucket: usize,
    /// Requests (`true`) or tokens.
    pub requests: bool,
    /// When to retry (ms); `None`: never fits (tokens over the limit alone).
    pub wait_ms: Option<i64>,
    /// Too many distinct counts.
    pub full: bool,
}

#[derive(Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

struct Inner {
    local: local::Local,
    redis: Option<Arc<redis_store::RedisStore>>,
    next: AtomicU64,
    nonce: u64,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter { inner: Arc::new(Inner { local: local::Local::default(), redis: None, next: AtomicU64::new(1), nonce: 0 }) }
    }
}

impl Limiter {
    pub fn open(snap: &Snapshot) -> Result<Self, String> {
        let redis = match &snap.budget_store.kind {
            StoreKind::Redis { url, key_prefix, timeout, on_unavailable } => {
                Some(Arc::new(redis_store::RedisStore::new(url, key_prefix, *timeout, *on_unavailable)?))
            }
            StoreKind::File => None,
        };
        let mut nonce = [0u8; 8];
        let _ = getrandom::fill(&mut nonce);
        Ok(Limiter { inner: Arc::new(Inner { local: local::Local::default(), redis, next: AtomicU64::new(1), nonce: u64::from_le_bytes(nonce) }) })
    }

    /// Admit a request: `None` when no limit applies, a hold to settle
    /// when admitted, or the 429 in the client's dialect. `tokens` is asked
    /// only when a token limit applies (it may run the tokenizer).
    pub async fn admit(&self, snap: &Snapshot, who: &Who<'_>, tokens: impl FnOnce() -> u64) -> Result<Option<RateHold>, GatewayError> {
        let own = who.key.filter(|k| who.part == Part::Request && !k.limits.is_empty());
        let none = match who.part {
            Part::Request => snap.rate_limits.is_empty() && own.is_none(),
            Part::Model => !snap.model_rate_limits,
        };
        if none {
            return Ok(None);
        }
        let buckets = buckets(&snap.rate_limits, own, who);
        if buckets.is_empty() {
            return Ok(None);
        }
        let worst = if buckets.iter().any(|b| b.amounts.tpm.is_some()) { tokens() } else { 0 };
        let id = format!("{:016x}-{}", self.inner.nonce, self.inner.next.fetch_add(1, Ordering::Relaxed));
        let mut remote = false;
        let verdict = match &self.inner.redis {
            Some(r) => match Box::pin(r.admit(&buckets, &id, worst)).await {
                Ok(v) => {
                    remote = true;
                    v
                }
                Err(e) => match r.on_unavailable {
                    OnUnavailable::FailOpen => {
                        tracing::debug!(error = %e, "rate-limit store unavailable; counting locally (fail_open)");
                        self.inner.local.admit(&buckets, &id, worst)
                    }
                    OnUnavailable::FailClosed => {
                        return Err(GatewayError::new(
                            503,
                            ErrorKind::Unavailable,
                            "rate_limit_store_unavailable",
                            format!(
                            "modelgate cannot reach its shared store ({e}) to count rate limits and budget_store.on_unavailable is fail_closed; retry shortly"
                        ),
                        )
                        .retry_after(1))
                    }
                },
            },
            None => self.inner.local.admit(&buckets, &id, worst),
        };
        match verdict {
            Ok(()) => Ok(Some(RateHold { limiter: self.clone(), id, buckets, worst, remote, done: false })),
            Err(r) => {
                let b = &buckets[r.bucket];
                crate::metrics::rate_limited(&b.limit, if r.requests { "requests" } else { "tokens" });
                Err(refusal(b, &r, worst))
            }
        }
    }
}

/// The counts a request (or one model it tries) falls under: the key's
/// own limits, then every `rate_limits:` entry of `who.part` whose scope
/// matches (and, with `per:`, whose value the request has).
fn buckets(limits: &[RateLimit], own: Option<&VirtualKey>, who: &Who<'_>) -> Vec<Bucket> {
    let mut out = Vec::new();
    if let Some(k) = own {
        out.push(Bucket { id: format!("key:{}", k.name), limit: format!("key:{}", k.name), per: None, amounts: k.limits, max_buckets: 1 });
    }
    let key = who.key.map(|k| k.name.as_str());
    let by_model = who.part == Part::Model;
    for l in limits {
        if l.by_model() != by_model {
            continue;
        }
        let s = &l.scope;
        let ok = s.key.as_deref().is_none_or(|k| Some(k) == key)
            && s.app.as_deref().is_none_or(|a| a == who.app)
            && s.user.as_deref().is_none_or(|u| Some(u) == who.user)
            && s.model.as_deref().is_none_or(|m| Some(m) == who.model);
        if !ok {
            continue;
        }
        let per = match l.per {
            None => None,
            Some(p) => {
                let v = match p {
                    Per::Key => key,
                    Per::App => Some(who.app),
                    Per::User => who.user,
                    Per::Model => who.model,
                };
                match v {
                    Some(v) => Some((p, v.to_string())),
                    // Nothing to count per (no user, no key): not counted.
                    None => continue,
                }
            }
        };
        let id = match &per {
            Some((_, v)) => format!("{}\u{1f}{v}", l.name),
            None => l.name.clone(),
        };
        out.push(Bucket { id, limit: l.name.clone(), per, amounts: l.limits, max_buckets: l.max_buckets });
    }
    out
}

fn refusal(b: &Bucket, r: &Refusal, worst: u64) -> GatewayError {
    let whose = match &b.per {
        Some((p, v)) => format!("rate limit `{}` (per {} `{v}`)", b.limit, p.as_str()),
        None => format!("rate limit `{}`", b.limit),
    };
    if r.full {
        return GatewayError::new(
            429,
            ErrorKind::RateLimited,
            "rate_limit_full",
            format!(
                "{whose} already counts {} distinct {}s in the last minute (its max_buckets); retry in a minute, or raise max_buckets",
                b.max_buckets,
                b.per.as_ref().map_or("value", |(p, _)| p.as_str())
            ),
        )
        .retry_after(60);
    }
    let Some(wait) = r.wait_ms else {
        return GatewayError::new(
            429,
            ErrorKind::RateLimited,
            "rate_limit_exceeded",
            format!(
            "{whose} allows {} tokens per minute and this request alone may use up to {worst} (input + max_tokens); lower max_tokens or send a smaller request",
            b.amounts.tpm.unwrap_or(0)
        ),
        );
    };
    let secs = ((wait.max(1) + 999) / 1000) as u64;
    let what = match r.requests {
        true => format!("{} requests per minute", b.amounts.rpm.unwrap_or(0)),
        false => format!("{} tokens per minute (this request may use up to {worst})", b.amounts.tpm.unwrap_or(0)),
    };
    GatewayError::new(429, ErrorKind::RateLimited, "rate_limit_exceeded", format!("{whose} allows {what}; retry in {secs} s")).retry_after(secs)
}

/// An admitted request's entries; settle with the tokens used, or drop to
/// give the tokens back.
pub struct RateHold {
    limiter: Limiter,
    id: String,
    buckets: Vec<Bucket>,
    worst: u64,
    remote: bool,
    done: bool,
}

impl RateHold {
    /// Replace the worst case with `tokens` used.
    pub async fn settle(mut self, tokens: u64) {
        self.done = true;
        let tokens = tokens.min(self.worst);
        if tokens == self.worst || !self.buckets.iter().any(|b| b.amounts.tpm.is_some()) {
            return;
        }
        self.adjust(tokens).await;
    }

    async fn adjust(&self, tokens: u64) {
        let inner = &self.limiter.inner;
        match (&inner.redis, self.remote) {
            // Boxed: only shared limits wait on Redis, and the request's
            // future need not be sized for it.
            (Some(r), true) => Box::pin(r.adjust(&self.buckets, &self.id, self.worst, tokens)).await,
            _ => inner.local.adjust(&self.buckets, &self.id, tokens),
        }
    }
}

impl Drop for RateHold {
    fn drop(&mut self) {
        if self.done || self.worst == 0 {
            return;
        }
        self.done = true;
        let inner = &self.limiter.inner;
        match (&inner.redis, self.remote) {
            (Some(r), true) => r.adjust_later(self.buckets.clone(), self.id.clone(), self.worst, 0),
            _ => inner.local.adjust(&self.buckets, &self.id, 0),
        }
    }
}
