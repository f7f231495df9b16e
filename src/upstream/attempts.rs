//! The attempt loop: a plan of models in, [`Outcome::Served`] or
//! [`Outcome::Exhausted`] out.
//!
//! For each model of the plan: may its provider see the client's key
//! (`Cred`), is it usable now (health check, installed, breaker —
//! [`Health::usable`]), what does the budget say (a reservation, a
//! downgrade that replaces the rest of the plan, or a refusal), is the
//! model within its rate limits (those counted per model: over one, it is
//! skipped like an open breaker), then up to `max_attempts` tries under
//! its [`RetryPolicy`]. The first response the policy accepts is handed
//! back with its reservations; the relay writes it.
//!
//! It never writes to the client.

use std::time::{Duration, Instant};

use crate::upstream::Connector;
use bytes::Bytes;
use pingora::http::RequestHeader;

use crate::body::JsonBody;
use crate::budget::{Budgets, Charge, Hold, RequestEstimate, Verdict};
use crate::cache::{self, Lookup};
use crate::config::{Breaker, Provider, Snapshot};
use crate::dialect::wire::AUTH_HEADERS;
use crate::dialect::{ErrorKind, GatewayError, Incoming};
use crate::drain::AbortSignal;
use crate::metrics;
use crate::policy::{self, Attempt, Decision, Facts};
use crate::ratelimit::{Limiter, Part, RateHold, Who};
use crate::relay::Response;
use crate::translate::{self, Wire};
use crate::upstream::health::{Health, Unusable};
use crate::upstream::progress::Progress;
pub use crate::upstream::progress::{Plan, Trail};
pub use crate::upstream::request::key_owner;
use crate::upstream::request::{credentials, prepare, Cred, NoKey, Prepared};
use crate::upstream::retry::{status_class, Failure, Kind, RetryPolicy};

/// What the loop needs to know of the request.
#[derive(Clone, Copy)]
pub struct Request<'r, 's> {
    pub snap: &'s Snapshot,
    pub incoming: &'r Incoming,
    pub client: &'r RequestHeader,
    pub body: &'r Bytes,
    pub json: Option<&'r JsonBody>,
    pub facts: &'r Facts<'r>,
    pub decision: &'r Decision<'s>,
    /// The client asked for a stream.
    pub stream: bool,
    /// Whose key the client sent (see [`key_owner`]).
    pub key_owner: Option<usize>,
    /// The response cache applies: looked up per model before its budget
    /// hold (a hit reserves no dollars and makes no upstream call).
    pub cache: Option<&'r cache::Ask>,
}

/// The try whose response is relayed, with its reservation.
pub struct Served<'s> {
    pub attempt: Attempt<'s>,
    pub provider: &'s Provider,
    pub hold: Hold,
    /// The live exchange, or a cached answer.
    pub response: Response,
    /// The request was translated: the client's format and the request in
    /// neutral form.
    pub translated: Option<(Wire, translate::Chat)>,
    /// The model's breaker (a stream that breaks off counts against it).
    pub breaker: Breaker,
    /// Record the answer for the cache, or settle it as a hit.
    pub cache: cache::Note,
    /// The model's rate-limit hold (limits counted per model), settled
    /// with this answer's tokens.
    pub rate: Option<RateHold>,
}

impl Served<'_> {
    /// The response's status.
    pub fn status(&self) -> u16 {
        match &self.response {
            Response::Whole { src, .. } | Response::Stream { src, .. } => src.header().status.as_u16(),
        }
    }

    pub fn response_ok(&self) -> bool {
        (200..300).contains(&self.status())
    }

    /// Give up a response that is not relayed and cost nothing (an error
    /// answer): its hold released, its exchange closed.
    pub async fn abandon(self: Box<Self>, connector: &Connector) {
        let s = *self;
        drop(s.hold);
        match s.response {
            Response::Whole { src, .. } | Response::Stream { src, .. } => src.finish(connector).await,
        }
    }
}

pub enum Outcome<'s> {
    Served(Box<Served<'s>>),
    /// Nothing could be served: the client's answer.
    Exhausted(GatewayError),
}

/// The services the loop uses.
pub struct Attempts<'g> {
    pub connector: &'g Connector,
    pub health: &'g Health,
    pub budgets: &'g Budgets,
    pub limiter: &'g Limiter,
}

/// How one model's tries ended.
enum ModelEnd<'s> {
    Served(Box<Served<'s>>),
    /// Move on to the next model of the plan.
    Next,
    /// Stop: answer the client now (refusal, shutdown, bad request).
    Stop(GatewayError),
}

impl<'g> Attempts<'g> {
    /// Try the plan's models in order until one serves.
    pub async fn run<'s>(&self, q: &Request<'_, 's>, trail: &mut Trail, abort: &mut AbortSignal) -> Outcome<'s> {
        self.run_plan(q, q.decision.attempts.clone(), trail, abort).await
    }

    /// Try `attempts` in order until one serves (an escalation's plan).
    pub async fn run_plan<'s>(&self, q: &Request<'_, 's>, attempts: Vec<Attempt<'s>>, trail: &mut Trail, abort: &mut AbortSignal) -> Outcome<'s> {
        let mut plan = Plan::new(attempts);
        let mut p = Progress { requested: q.facts.model.map(str::to_string), ..Progress::default() };
        let client_sent_key = AUTH_HEADERS.iter().any(|h| q.client.headers.contains_key(*h));
        while let Some(attempt) = plan.take() {
            let provider = &q.snap.providers[attempt.provider];
            let label = attempt.model_label();
            // (None for a model the config does not know: the access log
            // names it by `requested_model`, never by the metrics label.)
            trail.model = attempt.model.map(|m| m.name.clone());
            trail.provider = Some(provider.name.clone());
            if let Some((from, reason)) = p.moved.take() {
                metrics::fallback(&from, label, reason);
                if let Some(t) = trail.trace.as_deref_mut() {
                    t.moved = Some(reason);
                }
            }
            let Some(key) = self.credentials(q, &attempt, client_sent_key, &mut p, trail) else { continue };
            let breaker = attempt.model.map_or(Breaker { failures: 0, ..Breaker::default() }, |m| m.breaker);
            let probe = match self.health.usable(provider, attempt.model.map(|m| m.id.as_str()), label, &breaker, Instant::now(), true) {
                Ok(probe) => probe,
                Err(u) => {
                    let why = match u {
                        Unusable::Unhealthy => format!("provider {} fails its health check", provider.name),
                        Unusable::NotInstalled => format!("not installed on {}", provider.name),
                        Unusable::CircuitOpen { retry_in } => {
                            p.circuit_wait = Some(p.circuit_wait.map_or(retry_in, |w| w.min(retry_in)));
                            format!("circuit open for {} ms", retry_in.as_millis())
                        }
                    };
                    p.skip(&attempt, u.label(), why, trail);
                    continue;
                }
            };
            if probe {
                tracing::info!(model = label, provider = %provider.name, "circuit half-open: this request probes the model");
            }
            match self.model(q, &mut plan, attempt, key, breaker, probe, &mut p, trail, abort).await {
                ModelEnd::Served(s) => return Outcome::Served(s),
                ModelEnd::Next => {}
                ModelEnd::Stop(e) => return Outcome::Exhausted(e),
            }
        }
        Outcome::Exhausted(p.exhausted())
    }

    /// The credentials of a try at `attempt`, or `None` (skipped, with the
    /// reason recorded) when the provider has none for it.
    fn credentials<'s>(&self, q: &Request<'_, 's>, attempt: &Attempt<'s>, client_sent_key: bool, p: &mut Progress, trail: &mut Trail) -> Option<Cred<'s>> {
        match credentials(q.snap, attempt.provider, q.key_owner, client_sent_key) {
            Ok(c) => Some(c),
            Err(NoKey::Foreign { why, message }) => {
                p.skip(attempt, "missing_key", why, trail);
                // A provider's own failure says more than this skip.
                let shown = p.shown(attempt);
                p.last.get_or_insert(Failure::new(Kind::MissingKey, format!("`{shown}` {message}")));
                None
            }
            Err(NoKey::Unset { message }) => {
                p.skip(attempt, "missing_key", "no API key".into(), trail);
                p.last = Some(Failure::new(Kind::MissingKey, message));
                None
            }
        }
    }

    /// Up to `max_attempts` tries of one model.
    #[allow(clippy::too_many_arguments)]
    async fn model<'s>(
        &self,
        q: &Request<'_, 's>,
        plan: &mut Plan<'s>,
        attempt: Attempt<'s>,
        key: Cred<'_>,
        breaker: Breaker,
        probe: bool,
        p: &mut Progress,
        trail: &mut Trail,
        abort: &mut AbortSignal,
    ) -> ModelEnd<'s> {
        let snap = q.snap;
        let provider = &snap.providers[attempt.provider];
        let label = attempt.model_label();
        let policy = RetryPolicy { retry: snap.retry_for(q.decision.route, attempt.model), limits: &snap.limits, model_call: q.json.is_some() };
        let timeouts = attempt.model.map_or(&provider.timeouts, |m| &m.timeouts);
        // Shadow mode forwards the body byte for byte (its first attempt).
        let pristine = q.decision.shadow.is_some() && plan.at_first() && trail.downgraded_by.is_none();
        let mut record = cache::Note::None;
        if let Some(ask) = q.cache {
            // Boxed: rare next to the request's own future.
            let lookup = Box::pin(ask.lookup(&attempt, provider, timeouts.total));
            let found = tokio::select! {
                l = lookup => l,
                _ = abort.fired() => return ModelEnd::Stop(shutting_down()),
            };
            match found {
                Lookup::Hit(answer) => match Box::pin(self.hit(q, &attempt, provider, key, &answer)).await {
                    Ok(Some((hold, translated, response))) => {
                        ask.served(true);
                        trail.cache = Some("hit");
                        trail.error = None;
                        let cache = cache::Note::Hit { usage: answer.usage, cache: ask.cache() };
                        return ModelEnd::Served(Box::new(Served { attempt, provider, hold, response, translated, breaker, cache, rate: None }));
                    }
                    // A budget moves the request to another model: not this answer.
                    Ok(None) => {
                        ask.served(false);
                        trail.cache = Some("miss");
                    }
                    Err(e) => return ModelEnd::Stop(e),
                },
                Lookup::Miss(r) => {
                    trail.cache = Some(ask.miss_label());
                    record = cache::Note::Record(r);
                }
            }
        }
        let mut prepared: Option<Prepared> = None;
        // The model's rate limits: one request for all its tries.
        let mut rate = None;
        let mut n = 0;
        loop {
            n += 1;
            // Budgets: reserve this try's worst case before calling.
            let hold = match self.reserve(q, plan, &attempt, provider, trail).await {
                Ok(h) => h,
                Err(end) => return end,
            };
            if n == 1 && snap.model_rate_limits && q.json.is_some() {
                match self.rate(q, &attempt).await {
                    Ok(h) => rate = h,
                    Err(e) if e.kind == ErrorKind::RateLimited => {
                        p.rate_limited(&attempt, e, trail);
                        return ModelEnd::Next;
                    }
                    // The shared store is down and fail_closed.
                    Err(e) => return ModelEnd::Stop(e),
                }
            }
            let pr = match &mut prepared {
                Some(pr) => pr,
                slot @ None => match prepare(q.incoming, q.client, q.body, q.json, q.stream, &attempt, provider, key, pristine) {
                    Ok(pr) => slot.insert(pr),
                    Err(e) => return ModelEnd::Stop(e),
                },
            };
            trail.first_call.get_or_insert_with(Instant::now);
            trail.calls += 1;
            if let Some(t) = trail.trace.as_deref_mut() {
                let tp = t.begin_try(p.shown(&attempt), attempt.model.map(|m| m.id.as_str()), provider);
                let _ = pr.req.insert_header(crate::telemetry::TRACEPARENT, tp);
            }
            let call = async {
                match crate::upstream::send(self.connector, &provider.endpoint, timeouts, &pr.req, &pr.bytes).await {
                    Err(e) => Err(Failure::from_attempt(&e)),
                    Ok(ex) => policy.judge(ex, pr.tap(provider.kind), self.connector).await,
                }
            };
            // Pinned where it is: the call's future is large, and select!
            // would move it.
            let outcome = {
                let call = std::pin::pin!(call);
                tokio::select! {
                    o = call => o,
                    _ = abort.fired() => Err(Failure::new(Kind::Shutdown, "modelgate is shutting down")),
                }
            };
            let f = match outcome {
                Ok(fetched) => {
                    if let Some(t) = trail.trace.as_deref_mut() {
                        t.end_try(Some(fetched.status()), None);
                    }
                    self.succeeded(label, &provider.name, &breaker, fetched.status(), p, trail);
                    let translated = prepared.take().and_then(|pr| pr.translated);
                    let response = fetched.into();
                    return ModelEnd::Served(Box::new(Served { attempt, provider, hold, response, translated, breaker, cache: record, rate }));
                }
                Err(f) => f,
            };
            drop(hold);
            if let Some(t) = trail.trace.as_deref_mut() {
                t.end_try(f.status, Some(f.kind.label()));
            }
            if f.kind == Kind::Shutdown {
                trail.error = Some("shutdown".into());
                return ModelEnd::Stop(shutting_down());
            }
            let reason = f.kind.label();
            let wait = self.failed(&attempt, provider, &breaker, f, n, &policy, p, trail);
            match wait {
                Some(d) if n < policy.max_attempts() && !probe => {
                    metrics::retry(label, reason);
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = abort.fired() => return ModelEnd::Stop(shutting_down()),
                    }
                }
                _ => {
                    p.moved = Some((label.to_string(), reason));
                    return ModelEnd::Next;
                }
            }
        }
    }

    /// A budget hold for the try, or how the model's tries end (a downgrade
    /// replaces the rest of the plan; a refusal stops).
    async fn reserve<'s>(
        &self,
        q: &Request<'_, 's>,
        plan: &mut Plan<'s>,
        attempt: &Attempt<'s>,
        provider: &Provider,
        trail: &mut Trail,
    ) -> Result<Hold, ModelEnd<'s>> {
        if q.json.is_none() {
            return Ok(self.budgets.no_hold());
        }
        match self.admit(q, attempt, provider, trail.downgraded_by.is_some()).await {
            Verdict::Go(h) => Ok(h),
            Verdict::Downgrade { budget, to } => {
                let a = policy::downgrade(q.snap, q.decision, q.facts, &to).map_err(|e| {
                    ModelEnd::Stop(GatewayError::new(
                        e.status,
                        e.kind,
                        e.code,
                        format!("budget `{budget}` is used up and moves requests to a cheaper model, but none can serve this one: {}", e.message),
                    ))
                })?;
                tracing::debug!(budget, from = attempt.model_label(), to = a.model_label(), "budget downgrade");
                trail.downgraded_by = Some(budget);
                plan.replace_rest(a);
                Err(ModelEnd::Next)
            }
            Verdict::Refuse(e) => Err(ModelEnd::Stop(e)),
        }
    }

    /// Admit `a`'s model on the rate limits counted per model: its hold
    /// (`None`: no such limit applies), or the 429 that skips it.
    async fn rate(&self, q: &Request<'_, '_>, a: &Attempt<'_>) -> Result<Option<RateHold>, GatewayError> {
        let f = q.facts;
        let model = a.model.map(|m| m.name.as_str());
        let who = Who { key: f.key.as_deref(), app: &f.app, user: f.user.as_deref(), model, part: Part::Model };
        self.limiter.admit(q.snap, &who, || crate::budget::worst_case(f, a.model, true).tokens).await
    }

    /// Serve a cached answer at `attempt`: admitted as one request on the
    /// budgets (no dollars), the request translated only to know the
    /// answer's way back. `None` when a budget moves the request elsewhere.
    #[allow(clippy::type_complexity)]
    async fn hit<'s>(
        &self,
        q: &Request<'_, 's>,
        attempt: &Attempt<'s>,
        provider: &Provider,
        key: Cred<'_>,
        answer: &cache::entry::Answer,
    ) -> Result<Option<(Hold, Option<(Wire, translate::Chat)>, Response)>, GatewayError> {
        let c = charge(q, attempt, provider);
        let hold = match budgeted(q, &c) {
            false => self.budgets.no_hold(),
            true => match self.budgets.admit_hit(&c).await {
                Verdict::Go(h) => h,
                Verdict::Downgrade { .. } => return Ok(None),
                Verdict::Refuse(e) => return Err(e),
            },
        };
        let translated = match provider.kind != q.incoming.dialect {
            true => prepare(q.incoming, q.client, q.body, q.json, q.stream, attempt, provider, key, false)?.translated,
            false => None,
        };
        let response = cache::replay(answer, provider.kind, translated.is_some())?;
        Ok(Some((hold, translated, response)))
    }

    /// Record a try whose response is accepted: the model is healthy, and
    /// resets earlier in this request were not the request's fault.
    fn succeeded(&self, label: &str, provider: &str, breaker: &Breaker, status: u16, p: &mut Progress, trail: &mut Trail) {
        let now = Instant::now();
        for (m, pv, b) in p.ambiguous.drain(..) {
            self.health.record(&m, &pv, &b, Err("io"), now);
        }
        self.health.record(label, provider, breaker, Ok(()), now);
        metrics::attempt(label, status_class(status));
        trail.error = None;
    }

    /// Record a failed try (breaker, metrics, the `tried` list); how long to
    /// wait before the same model is tried again (`None`: move on).
    #[allow(clippy::too_many_arguments)]
    fn failed(
        &self,
        attempt: &Attempt<'_>,
        provider: &Provider,
        breaker: &Breaker,
        f: Failure,
        n: u32,
        policy: &RetryPolicy<'_>,
        p: &mut Progress,
        trail: &mut Trail,
    ) -> Option<Duration> {
        let label = attempt.model_label();
        let reason = f.kind.label();
        if f.kind.is_ambiguous() {
            p.ambiguous.push((label.to_string(), provider.name.clone(), *breaker));
        } else {
            self.health.record(label, &provider.name, breaker, Err(reason), Instant::now());
        }
        metrics::attempt(label, reason);
        p.tried.push(format!("{}: {}", p.shown(attempt), f.short()));
        trail.error = Some(reason.to_string());
        tracing::warn!(model = label, provider = %provider.name, reason, error = %f.message, "upstream attempt failed");
        let wait = policy.wait(n, &f);
        p.last = Some(f);
        wait
    }

    /// Reserve what the attempt may charge to the budgets that apply to it
    /// (see `budget::worst_case`; admission counts tokens itself when the
    /// free byte bound does not fit); nothing at all when no budget applies.
    async fn admit(&self, q: &Request<'_, '_>, a: &Attempt<'_>, p: &Provider, downgraded: bool) -> Verdict {
        let c = charge(q, a, p);
        if !budgeted(q, &c) {
            return Verdict::Go(self.budgets.no_hold());
        }
        self.budgets.admit(&c, &RequestEstimate { facts: q.facts, model: a.model }, downgraded).await
    }
}

/// Whether some budget counts `c`: the config's, or the runtime key's own.
fn budgeted(q: &Request<'_, '_>, c: &Charge<'_>) -> bool {
    q.snap.budgets.iter().any(|b| b.scope.matches(c)) || q.facts.key.as_ref().is_some_and(|k| !k.budgets.is_empty())
}

/// Who pays for `a` served by `p`.
fn charge<'a>(q: &'a Request<'_, '_>, a: &Attempt<'a>, p: &'a Provider) -> Charge<'a> {
    let f = q.facts;
    Charge { provider: &p.name, model: a.model.map(|m| m.name.as_str()), app: &f.app, task: f.task.as_deref(), key: f.key_name(), user: f.user.as_deref() }
}

/// 503 while modelgate shuts down.
pub fn shutting_down() -> GatewayError {
    GatewayError::new(
        503,
        ErrorKind::Unavailable,
        "shutting_down",
        "modelgate is shutting down; retry the request (another instance, or this one after its restart, will serve it)",
    )
    .retry_after(1)
}
