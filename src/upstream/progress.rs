//! What the attempt loop keeps: the [`Plan`] of models (a budget downgrade
//! replaces its rest), its running [`Progress`] (what was tried, the last
//! failure, the client's answer when nothing served) and the [`Trail`] the
//! access log and response headers read.

use std::time::{Duration, Instant};

use crate::config::Breaker;
use crate::dialect::{ErrorKind, GatewayError};
use crate::metrics;
use crate::policy::Attempt;
use crate::upstream::retry::Failure;

/// The models to try, in order.
pub struct Plan<'s> {
    attempts: Vec<Attempt<'s>>,
    next: usize,
}

impl<'s> Plan<'s> {
    pub fn new(attempts: Vec<Attempt<'s>>) -> Self {
        Plan { attempts, next: 0 }
    }

    pub(super) fn take(&mut self) -> Option<Attempt<'s>> {
        let a = self.attempts.get(self.next).copied();
        self.next += 1;
        a
    }

    /// A budget downgrade: `a` replaces the attempt in hand and all after it.
    pub(super) fn replace_rest(&mut self, a: Attempt<'s>) {
        self.attempts.truncate(self.next.saturating_sub(1));
        self.attempts.push(a);
        self.next = self.attempts.len() - 1;
    }

    /// The attempt in hand is the plan's first.
    pub(super) fn at_first(&self) -> bool {
        self.next == 1
    }
}

/// What the tries did, for the access log and the response headers.
#[derive(Debug, Default)]
pub struct Trail {
    /// The model and provider of the last attempt considered.
    pub model: Option<String>,
    pub provider: Option<String>,
    /// Upstream calls made.
    pub calls: usize,
    /// When the first upstream call started.
    pub first_call: Option<Instant>,
    /// Why the last try failed or was skipped (cleared when one is served).
    pub error: Option<String>,
    /// The budget whose `on_exceed: downgrade` moved this request.
    pub downgraded_by: Option<String>,
    /// Models skipped for their rate limits (comma-separated).
    pub rate_limited: Option<String>,
    /// What the response cache did (`hit`, `miss`, `bypass`).
    pub cache: Option<&'static str>,
    /// The request's trace (`telemetry:` on): its tries, and the
    /// `traceparent` each carries upstream.
    pub trace: Option<Box<crate::telemetry::Trace>>,
}

/// The loop's running state.
#[derive(Default)]
pub(super) struct Progress {
    pub tried: Vec<String>,
    pub last: Option<Failure>,
    /// The model the plan moved on from, and why (for the fallback metric).
    pub moved: Option<(String, &'static str)>,
    /// All skipped for open breakers: how long until the first may probe.
    pub circuit_wait: Option<Duration>,
    /// Resets that may be the request's fault: (model, provider, breaker).
    pub ambiguous: Vec<(String, String, Breaker)>,
    /// The model the client asked for (how messages name a model the
    /// config does not know).
    pub requested: Option<String>,
    /// Models were skipped for their rate limits: the 429 that comes back
    /// soonest.
    pub rate_refused: Option<GatewayError>,
}

impl Progress {
    /// How the `tried` list and messages name the attempt's model (never
    /// the metrics label `other`).
    pub fn shown(&self, a: &Attempt<'_>) -> String {
        a.shown(self.requested.as_deref())
    }

    /// A model not tried (the reason label, what the `tried` list says).
    pub fn skip(&mut self, a: &Attempt<'_>, reason: &'static str, why: String, trail: &mut Trail) {
        let label = a.model_label();
        metrics::attempt(label, reason);
        self.tried.push(format!("{}: {why}", self.shown(a)));
        trail.error = Some(reason.to_string());
        self.moved = Some((label.to_string(), reason));
    }

    /// A model skipped because it is over a rate limit (`e`: its 429).
    pub fn rate_limited(&mut self, a: &Attempt<'_>, e: GatewayError, trail: &mut Trail) {
        self.skip(a, "rate_limited", e.message.clone(), trail);
        let shown = self.shown(a);
        match &mut trail.rate_limited {
            Some(s) => {
                s.push(',');
                s.push_str(&shown);
            }
            None => trail.rate_limited = Some(shown),
        }
        // One that never fits (no Retry-After) only when none will.
        let sooner = match (&self.rate_refused, e.retry_after) {
            (None, _) => true,
            (Some(r), Some(secs)) => r.retry_after.is_none_or(|w| secs < w),
            (Some(_), None) => false,
        };
        if sooner {
            self.rate_refused = Some(e);
        }
    }

    /// The client's answer when no model served. A model held back by its
    /// rate limit will serve again: a 429 with the soonest Retry-After,
    /// whatever the others did.
    pub fn exhausted(self) -> GatewayError {
        let tried = self.tried.join("; ");
        if let Some(mut e) = self.rate_refused {
            if self.tried.len() > 1 {
                e.message = match e.retry_after {
                    Some(secs) => format!("no model could serve this request within its rate limits; retry in {secs} s (tried: {tried})"),
                    None => format!("no model could serve this request within its rate limits (tried: {tried})"),
                };
            }
            return e;
        }
        match (self.last, self.circuit_wait) {
            (Some(f), _) => f.into_error(&tried),
            (None, Some(wait)) => GatewayError::new(
                503,
                ErrorKind::Unavailable,
                "circuit_open",
                format!(
                "every model that could serve this request is failing and skipped for now (circuit breaker open; tried: {tried}); retry after the cool-down"
            ),
            )
            .retry_after(wait.as_secs().max(1)),
            (None, None) if !tried.is_empty() => {
                GatewayError::new(503, ErrorKind::Unavailable, "no_healthy_model", format!("no model that could serve this request is available: {tried}"))
            }
            (None, None) => GatewayError::new(502, ErrorKind::Upstream, "no_attempt", "no model could be tried for this request"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_over_their_rate_limits_answer_429_with_the_soonest_retry() {
        let a = |provider| Attempt { model: None, provider, as_requested: false };
        let e = |secs: Option<u64>| {
            let e = GatewayError::new(429, ErrorKind::RateLimited, "rate_limit_exceeded", "over");
            secs.map_or(e.clone(), |s| e.retry_after(s))
        };
        let (mut p, mut trail) = (Progress::default(), Trail::default());
        p.last = Some(Failure::new(crate::upstream::retry::Kind::Connect, "refused"));
        p.rate_limited(&a(0), e(Some(40)), &mut trail);
        p.rate_limited(&a(1), e(None), &mut trail);
        p.rate_limited(&a(2), e(Some(12)), &mut trail);
        assert_eq!(trail.error.as_deref(), Some("rate_limited"));
        let out = p.exhausted();
        assert_eq!((out.status, out.retry_after), (429, Some(12)), "the soonest wait, over the other failure");
        assert!(out.message.starts_with("no model could serve this request within its rate limits; retry in 12 s (tried: "), "{}", out.message);
    }

    #[test]
    fn a_downgrade_replaces_the_rest_of_the_plan() {
        let a = |provider| Attempt { model: None, provider, as_requested: false };
        let mut plan = Plan::new(vec![a(0), a(1), a(2)]);
        assert_eq!(plan.take().map(|x| x.provider), Some(0));
        assert!(plan.at_first());
        assert_eq!(plan.take().map(|x| x.provider), Some(1));
        plan.replace_rest(a(9));
        assert_eq!(plan.take().map(|x| x.provider), Some(9));
        assert!(!plan.at_first());
        assert!(plan.take().is_none());
    }
}
