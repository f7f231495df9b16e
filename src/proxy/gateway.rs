//! The gateway: Pingora's `ProxyHttp`, answering every request from
//! `request_filter` (DESIGN.md decision 1). This file is the Pingora
//! callbacks and the order of the phases; each phase has its own owner.
//!
//! ```text
//!  connection ── proxy/conn.rs: a request head must arrive whole in time
//!      │
//!  request_filter
//!      ├─ 1. way in ........... proxy/intake.rs   path → dialect and API (transparent
//!      │                          mode: host → provider), proxy/guard.rs checks,
//!      │                          body read within limits, parsed
//!      ├─ 2. decide ........... policy/          classify (app, task, complexity,
//!      │                          tokens) → route → plan of models
//!      ├─ 3. attempts ......... upstream/attempts.rs   per model: key, usable now
//!      │                          (upstream/health.rs), a cached answer (cache/),
//!      │                          budget hold or downgrade (budget/), tries under
//!      │                          upstream/retry.rs, requests built by
//!      │                          upstream/request.rs
//!      ├─ 3b. checks .......... escalate/         a route's answer checks; a failing
//!      │                          answer escalates to a stronger model
//!      ├─ 4. relay ............ relay/            the response (a live exchange or
//!      │                          another relay::Source) to the client, translated
//!      │                          (translate/), spend settled (relay/settle.rs)
//!      └─ errors .............. proxy/ctx.rs      in the client's dialect
//!  logging
//!      └─ 5. account .......... proxy/ctx.rs      metrics and one access-log line
//! ```

use std::sync::Arc;
use std::time::Instant;

use crate::upstream::Connector;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};

use crate::budget::Budgets;
use crate::cache::{Cache, Plan};
use crate::config::{ClientEscalation, Snapshot};
use crate::drain::{AbortSignal, Drain};
use crate::escalate;
use crate::metrics;
use crate::policy::{self, Conversations, OverrideStore};
use crate::proxy::ctx::{Ctx, Stop};
use crate::proxy::intake;
use crate::relay::{Answering, Relay};
use crate::upstream::attempts::{self, shutting_down, Attempts, Outcome, Request};
use crate::upstream::health::Health;

pub struct Gateway {
    state: Arc<ArcSwap<Snapshot>>,
    overrides: Arc<OverrideStore>,
    budgets: Budgets,
    connector: Connector,
    health: Health,
    drain: Drain,
    cache: Cache,
    /// Conversations answered lately (`client_escalation: on_retry`).
    conversations: Conversations,
    /// Virtual keys created at runtime (config keys are in the snapshot).
    keys: crate::keys::KeyStore,
    limiter: crate::ratelimit::Limiter,
    /// Serves the forward proxy (transparent mode): the host a request was
    /// sent to picks its provider and API.
    forward: bool,
}

impl Gateway {
    pub fn new(state: Arc<ArcSwap<Snapshot>>, overrides: Arc<OverrideStore>, budgets: Budgets, health: Health, drain: Drain) -> Self {
        Self {
            state,
            overrides,
            budgets,
            connector: Connector::new(None),
            health,
            drain,
            cache: Cache::default(),
            conversations: Conversations::default(),
            keys: crate::keys::KeyStore::default(),
            limiter: crate::ratelimit::Limiter::default(),
            forward: false,
        }
    }

    /// Answer from (and keep answers in) `cache` where the config says so.
    pub fn with_cache(mut self, cache: Cache) -> Self {
        self.cache = cache;
        self
    }

    /// Authenticate with `keys` and count rate limits with `limiter`.
    pub fn with_access(mut self, keys: crate::keys::KeyStore, limiter: crate::ratelimit::Limiter) -> Self {
        self.keys = keys;
        self.limiter = limiter;
        self
    }

    /// The same pipeline behind the forward proxy.
    pub fn forward(mut self) -> Self {
        self.forward = true;
        self
    }

    /// The phases of one request, up to the response.
    async fn handle(&self, session: &mut Session, snap: &Snapshot, cx: &mut Ctx, abort: &mut AbortSignal) -> Result<(), Stop> {
        // 1. The way in.
        let (path, incoming) = intake::route_path(snap, session, self.forward)?;
        cx.dialect = incoming.dialect;
        cx.rec.dialect = incoming.dialect.as_str();
        cx.rec.api = incoming.api.as_str();
        cx.rec.path = path.clone();
        // Who is calling: before the body is read and any upstream call.
        let key = {
            let head = session.req_header();
            crate::keys::authenticate(snap, &self.keys, &head.headers, head.uri.query()).map_err(Stop::AnswerThenDrain)?
        };
        if let Some(k) = &key {
            cx.rec.key = Some(k.name.clone());
            cx.rec.key_hash = Some(k.hash_prefix().to_string());
        }
        let mut input = intake::read(snap, session, path, incoming).await?;
        if key.as_ref().is_some_and(|k| k.source != crate::config::KeySource::AppKeys) {
            // Nor in Gemini's `?key=`.
            if let Some(p) = crate::keys::without_query_key(&input.incoming.upstream_path) {
                input.incoming.upstream_path = p;
            }
        }
        cx.body_done = Instant::now();
        cx.rec.requested_model = input.requested.clone();
        cx.rec.stream = input.incoming.path_stream || input.json.as_ref().is_some_and(|j| j.stream());

        // 2. Decide.
        let overrides = self.overrides.load();
        // An owned copy, so the classification can live across the writes.
        let mut client = crate::proxy::head::owned_request(session.req_header());
        if key.as_ref().is_some_and(|k| k.source != crate::config::KeySource::AppKeys) {
            // A virtual key is modelgate's, never a provider's: not sent on.
            for h in crate::dialect::wire::AUTH_HEADERS {
                client.remove_header(h);
            }
        }
        let mut facts =
            policy::classify(snap, &input.incoming, &input.path, &client.headers, input.json.as_ref(), input.body.len(), input.requested.as_deref())?;
        if let Some(k) = &key {
            crate::keys::check_model(k, input.requested.as_deref())?;
        }
        facts.identify(key, snap.auth == crate::config::AuthMode::KnownKeys, snap.per_user);
        // (An allocation only when the request names a user.)
        cx.rec.user = facts.user.clone();
        facts.conversations = Some(&self.conversations);
        cx.rec.app = facts.app.clone();
        cx.rec.task = facts.task.clone();
        cx.rec.complexity = input.json.as_ref().map(|_| facts.complexity.value);
        let decision = policy::decide(snap, &overrides, &facts, None);
        cx.rec.est_input_tokens = facts.tokens_if_counted().map(|t| t.count);
        let decision = decision.map_err(|refused| {
            cx.route = refused.route.map_or("none", |r| r.name.as_str()).to_string();
            cx.rec.mode = refused.mode.as_str();
            refused.error
        })?;
        cx.route = decision.route_label().to_string();
        if let Some(k) = &facts.key {
            crate::keys::check_route(k, &cx.route)?;
        }
        cx.rec.mode = decision.mode.as_str();
        cx.rec.arm = decision.arm.map(str::to_string);
        cx.rec.shadow_model = decision.shadow.clone();
        if let Some(arm) = decision.arm {
            metrics::split_arm(&cx.route, arm);
        }
        if let Some(would) = &decision.shadow {
            metrics::shadow_decision(&cx.route, would);
        }

        // The response cache, where configured (one branch when it is not).
        let ask = match snap.cache.is_some() {
            false => None,
            true => match self.cache.plan(snap, &decision, &input.incoming, &client.headers, input.json.as_ref(), &input.body, &facts.app) {
                Plan::Off => None,
                Plan::Bypass(_) => {
                    cx.trail.cache = Some("bypass");
                    None
                }
                Plan::Ask(a) => Some(a),
            },
        };

        // Rate limits (model calls only), before any upstream call; those
        // counted per model are admitted per attempt.
        if input.json.is_some() {
            let first = decision.attempts.first().and_then(|a| a.model);
            let who = crate::ratelimit::Who {
                key: facts.key.as_deref(),
                app: &facts.app,
                user: facts.user.as_deref(),
                model: None,
                part: crate::ratelimit::Part::Request,
            };
            cx.rate = self.limiter.admit(snap, &who, || crate::budget::worst_case(&facts, first, true).tokens).await?;
        }

        // 3. Attempts.
        let q = Request {
            snap,
            incoming: &input.incoming,
            client: &client,
            body: &input.body,
            json: input.json.as_ref(),
            facts: &facts,
            decision: &decision,
            stream: cx.rec.stream,
            key_owner: attempts::key_owner(snap, &input.incoming, input.requested.as_deref()),
            cache: ask.as_deref(),
        };
        let at = Attempts { connector: &self.connector, health: &self.health, budgets: &self.budgets, limiter: &self.limiter };
        // In a box of its own: the attempts' state (connecting, sending,
        // reading the first answer) is the largest part of a request's
        // future and is over when the answer is relayed; boxed, a stream
        // being relayed does not keep room for it.
        let mut served = match built_in_box(at.run(&q, &mut cx.trail, abort)).await {
            Outcome::Served(s) => s,
            Outcome::Exhausted(e) => return Err(e.into()),
        };
        // The route's answer checks (escalate/), where it has them.
        if let Some(esc) = decision.route.and_then(|r| r.escalate.as_deref()) {
            // Boxed: only routes with `escalate:` run it, and it is as large
            // as the attempts (every request's future would be that much
            // bigger: memory per in-flight request).
            served = Box::pin(escalate::checked(&at, esc, &q, served, cx, abort)).await;
        }

        // `client_escalation: on_retry` remembers what its route answered,
        // before the answer goes out: a client that retries the moment it
        // has read the answer must find it remembered.
        if let Some(r) = decision.route.filter(|r| matches!(r.client_escalation, Some(ClientEscalation::OnRetry { .. }))) {
            if (200..300).contains(&served.status()) {
                self.conversations.answered(&r.name, &facts);
            }
        }

        // 4. Relay.
        let (answering, response) = Answering::of(*served, snap, input.json.is_some());
        Relay { connector: &self.connector, health: &self.health, budgets: &self.budgets }.answer(session, response, answering, &facts, cx, abort).await
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    /// Boxed: Pingora moves its per-request futures, which hold the
    /// context, several times per request.
    type CTX = Box<Ctx>;

    fn new_ctx(&self) -> Box<Ctx> {
        Box::new(Ctx::new())
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Box<Ctx>, error: &pingora::Error) -> bool {
        // A client that stalls its request header is closed by the guard
        // (proxy::conn) and logged there.
        error.to_string().contains("request header timeout")
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Box<Ctx>) -> pingora::Result<Box<HttpPeer>> {
        // Never reached: request_filter answers every request.
        Err(pingora::Error::explain(pingora::ErrorType::InternalError, "modelgate answers from request_filter"))
    }

    /// Written out rather than through `async_trait`, which builds the
    /// (large: it holds the whole request's state machine) future on the
    /// stack and then copies it into its box (see [`built_in_box`]).
    fn request_filter<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        session: &'life1 mut Session,
        cx: &'life2 mut Box<Ctx>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = pingora::Result<bool>> + Send + 'async_trait>>
    where
        Box<Ctx>: Send + Sync,
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        built_in_box(self.filter(session, cx))
    }

    async fn logging(&self, _session: &mut Session, _e: Option<&pingora::Error>, cx: &mut Box<Ctx>) {
        cx.account();
        cx.in_flight = None;
    }
}

impl Gateway {
    /// `request_filter`: every request is answered here.
    async fn filter(&self, session: &mut Session, cx: &mut Box<Ctx>) -> pingora::Result<bool> {
        // Held until the request is accounted for (a drain waits for it).
        cx.in_flight = Some(self.drain.enter());
        let mut abort = self.drain.signal();
        // One snapshot for the whole request, even if a reload happens meanwhile.
        let snap = self.state.load_full();
        session.set_read_timeout(Some(snap.client_timeouts.body_idle));
        if self.drain.closing() {
            // Shutting down or handing over: the client's next request goes
            // on a new connection (to the new process after a hand-over).
            session.set_keepalive(None);
        } else if session.get_keepalive().is_some() {
            // (None means Pingora is shutting down: leave it closed.)
            session.set_keepalive(Some(snap.client_timeouts.keepalive.as_secs().max(1)));
        }
        let head = session.req_header();
        cx.rec.method = head.method.as_str().to_string();
        cx.rec.path = head.uri.path().to_string();
        if let Some(t) = &snap.telemetry {
            let trace = crate::telemetry::Trace::start(t, &head.headers);
            cx.rec.trace_id = Some(trace.id_hex());
            cx.trail.trace = Some(Box::new(trace));
        }
        cx.snap = Some(snap.clone());
        let handled = match abort.is_fired() {
            true => Err(shutting_down().into()),
            false => self.handle(session, &snap, cx, &mut abort).await,
        };
        match handled {
            Ok(()) => {}
            Err(Stop::Answer(e)) => cx.answer_error(session, &e).await,
            Err(Stop::AnswerThenDrain(e)) => {
                cx.answer_error(session, &e).await;
                intake::drain_or_close(session, snap.max_body_bytes).await;
            }
            Err(Stop::ClientGone) => {
                cx.rec.status = 499;
                cx.trail.error = Some("client_closed".into());
            }
        }
        Ok(true)
    }
}

/// A large future pinned in a box it is built in: `Box::pin(f)` builds it
/// on the stack and copies it (the whole state machine's size) into the
/// box; writing it into an uninitialised box lets the compiler build it
/// there (request_filter's future: −11.9k instructions per request).
#[inline(always)]
fn built_in_box<F: std::future::Future>(f: F) -> std::pin::Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), f))
}
