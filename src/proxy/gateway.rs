//! The base-URL gateway: Pingora's `ProxyHttp`, answering every request from
//! `request_filter` (DESIGN.md decision 1).
//!
//! Phases of one request, all in [`Gateway::handle`]:
//! 1. path → dialect and API; read the whole body (size limit)
//! 2. parse the model call, classify (app, task), plan attempts
//! 3. per attempt: rewrite `model`, call upstream; a connect failure,
//!    timeout, 429 or 5xx before anything was sent moves to the next attempt
//! 4. relay: SSE event by event (usage read on the fly), JSON whole (usage
//!    and cost known before the header goes out)
//! 5. account: metrics and one access-log line

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};

use crate::accesslog::{AccessLogger, Record};
use crate::drain::{AbortSignal, Drain};
use crate::proxy::guard;
use crate::body::JsonBody;
use crate::budget::{Budgets, Charge, Entry, Hold, RequestEstimate, Verdict};
use crate::config::{Auth, Breaker, Provider, Retry, Snapshot};
use crate::dialect::sse::StreamTap;
use crate::dialect::{classify_path, Api, Dialect, ErrorKind, GatewayError, Incoming};
use crate::metrics;
use crate::policy::{self, Attempt, Facts, OverrideStore};
use crate::upstream::health::{Admit, Health};
use crate::upstream::{self, AttemptError, Exchange};
use crate::translate::{self, Wire};
use crate::usage::{RawUsage, UsageCarrier};

/// Most of an upstream's own words a client error echoes.
const ECHO_BYTES: usize = 200;

/// Request headers never forwarded upstream (hop-by-hop, or ours to set).
const DROP_REQUEST: &[&str] =
    &["host", "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer", "upgrade", "accept-encoding"];
/// Response headers never relayed as they are.
const DROP_RESPONSE: &[&str] = &["content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"];

pub struct Gateway {
    state: Arc<ArcSwap<Snapshot>>,
    overrides: Arc<OverrideStore>,
    budgets: Budgets,
    connector: Connector,
    log: AccessLogger,
    health: Health,
    drain: Drain,
    /// Serves the forward proxy (transparent mode): the host a request was
    /// sent to picks its provider and API.
    forward: bool,
}

/// Why handling stopped early.
enum Stop {
    /// Answer the client with this error in its dialect.
    Answer(GatewayError),
    /// The client went away; nothing more to write.
    ClientGone,
    /// Answer at once, then read (and drop) a little of what the client is
    /// still sending, so it sees the answer rather than a reset.
    AnswerThenDrain(GatewayError),
}

impl From<GatewayError> for Stop {
    fn from(e: GatewayError) -> Self {
        Stop::Answer(e)
    }
}

/// The attempt whose response is being relayed, and its reservation.
struct Served<'a, 's> {
    attempt: &'a Attempt<'s>,
    provider: &'s Provider,
    facts: &'a Facts<'a>,
    hold: Hold,
    snap: &'s Snapshot,
    /// A model call (JSON body): accounted and written to the ledger.
    model_call: bool,
    /// The request was translated for a provider of another dialect: the
    /// client's format and the request in neutral form.
    translated: Option<(Wire, translate::Chat)>,
    /// The model's breaker (a stream that breaks off counts against it).
    breaker: Breaker,
}

/// The body and upstream request header for the tries of one model.
struct Prepared {
    bytes: Bytes,
    /// modelgate asked an OpenAI stream for usage: hide the usage-only chunk.
    drop_usage_only: bool,
    translated: Option<(Wire, translate::Chat)>,
    req: RequestHeader,
}

/// An upstream response that can be relayed.
enum Fetched {
    /// A whole body (JSON answers, errors passed back).
    Body { ex: Exchange, body: Bytes },
    /// A 2xx stream; `first` holds what was read up to its first event.
    Stream { ex: Exchange, first: Bytes },
}

impl Fetched {
    fn status(&self) -> u16 {
        match self {
            Fetched::Body { ex, .. } | Fetched::Stream { ex, .. } => ex.header.status.as_u16(),
        }
    }
}

/// A failed try: it counts against the model and moves the plan on.
struct Failure {
    /// The `outcome` label: a status class or the failure's reason.
    reason: &'static str,
    /// The upstream status, when it answered with one.
    status: Option<u16>,
    retry_after: Option<Duration>,
    message: String,
}

impl Failure {
    fn from_attempt(e: &AttemptError) -> Self {
        Failure { reason: e.reason(), status: None, retry_after: None, message: e.to_string() }
    }

    fn shutdown() -> Self {
        Failure { reason: "shutdown", status: None, retry_after: None, message: "modelgate is shutting down".into() }
    }

    /// A failure that may be the request's own doing rather than the
    /// provider's: the connection was reset after the request was sent
    /// (e.g. a body the provider's parser choked on). It counts against the
    /// model's breaker only once another try of the same request succeeds.
    fn ambiguous(&self) -> bool {
        self.reason == "io"
    }

    fn invalid(message: &str) -> Self {
        Failure { reason: "invalid_body", status: None, retry_after: None, message: message.to_string() }
    }

    /// The client's answer when this was the last failure of the plan: the
    /// provider's status (else 504 for timeouts, 502 otherwise) and what
    /// was tried.
    fn into_error(self, tried: &str) -> GatewayError {
        let timeout = self.reason.ends_with("timeout");
        let (status, kind) = match self.status {
            Some(s) => (s, translate::kind_of_status(s)),
            None if timeout => (504, ErrorKind::Timeout),
            None => (502, ErrorKind::Upstream),
        };
        let e = GatewayError::new(status, kind, self.reason, format!("{}; tried: {tried}", self.message));
        match self.retry_after.filter(|_| matches!(status, 429 | 503)) {
            Some(d) => e.retry_after(d.as_secs().max(1)),
            None => e,
        }
    }
}

/// Per-request bookkeeping shared by the phases.
struct Req {
    dialect: Dialect,
    body_done: Instant,
    pre_upstream: Duration,
    upstream: Option<Duration>,
    upstream_end: Option<Instant>,
    route: String,
    rec: Record,
}

impl Gateway {
    pub fn new(state: Arc<ArcSwap<Snapshot>>, overrides: Arc<OverrideStore>, budgets: Budgets, health: Health, drain: Drain) -> Self {
        Self { state, overrides, budgets, connector: Connector::new(None), log: AccessLogger::default(), health, drain, forward: false }
    }

    /// The same pipeline behind the forward proxy.
    pub fn forward(mut self) -> Self {
        self.forward = true;
        self
    }

    /// Transparent mode: the provider that answers for the host the client
    /// called, and the request's path as the base-URL gateway names it
    /// (`/v1/…`, `/anthropic/v1/…`, `/gemini/v1beta/…`). `tls`: the request
    /// came inside an intercepted TLS connection (authorized at CONNECT);
    /// any other request on the proxy listener is plain HTTP proxying and
    /// must carry the proxy credentials itself.
    fn forward_target(&self, snap: &Snapshot, head: &RequestHeader, tls: bool) -> Result<(String, usize), GatewayError> {
        let plain = !tls;
        let authority = if plain {
            // Checked before anything else, so an unauthenticated client
            // learns nothing about hosts or paths.
            let given = head.headers.get("proxy-authorization").map(|v| v.as_bytes());
            snap.forward_proxy.authorize(given).map_err(|why| GatewayError::new(407, ErrorKind::Authentication, "proxy_auth", why))?;
            // Pingora keeps an absolute-form target verbatim in raw_path
            // (the Uri holds only its path) and has checked that Host
            // matches its authority.
            let target = String::from_utf8_lossy(head.raw_path()).into_owned();
            let after = |prefix: &str| target.get(..prefix.len()).filter(|p| p.eq_ignore_ascii_case(prefix)).map(|_| &target[prefix.len()..]);
            if let Some(rest) = after("http://") {
                rest.split(['/', '?', '#']).next().unwrap_or("").to_string()
            } else if after("https://").is_some() {
                return Err(GatewayError::new(400, ErrorKind::InvalidRequest, "proxy_scheme", "the forward proxy takes plain requests only for http:// URLs; an HTTPS client sends CONNECT (set HTTPS_PROXY)"));
            } else {
                return Err(GatewayError::new(400, ErrorKind::InvalidRequest, "origin_form", format!(
                    "`{target}` was sent to modelgate's forward-proxy port as a plain request; this port is a proxy: set HTTPS_PROXY/HTTP_PROXY to it (requests then carry an absolute URL or use CONNECT), or point the SDK's base URL at modelgate's gateway port instead"
                )));
            }
        } else {
            // Inside an intercepted connection the Host header or h2's
            // authority names the host.
            head.uri.authority().map(|a| a.as_str()).or_else(|| head.headers.get("host").and_then(|h| h.to_str().ok())).unwrap_or("").to_string()
        };
        let authority = authority.as_str();
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => (h, p.parse::<u16>().ok()),
            _ => (authority, None),
        };
        let host = crate::proxy::target::normalize_host(host.trim_start_matches('[').trim_end_matches(']'));
        let idx = snap
            .providers
            .iter()
            .position(|p| p.hosts.contains(&host) && port.is_none_or(|port| !plain || port == p.endpoint.port))
            .ok_or_else(|| match plain {
                // Never fetched: plain proxying reaches provider hosts only.
                true => GatewayError::new(403, ErrorKind::PermissionDenied, "unknown_host", format!(
                    "modelgate forwards plain http:// requests only to provider hosts; `{authority}` is none (add the host to a provider's `hosts` in the config)"
                )),
                false => GatewayError::new(421, ErrorKind::NotFound, "unknown_host", format!(
                    "modelgate has no provider for host `{host}`; add it to a provider's `hosts` in the config (or remove it from forward_proxy.intercept)"
                )),
            })?;
        let p = &snap.providers[idx];
        let path = head.uri.path();
        let rest = path.strip_prefix(p.endpoint.base_path.as_str()).filter(|r| r.is_empty() || r.starts_with('/')).unwrap_or(path);
        let gateway_path = match p.kind {
            Dialect::OpenAi => format!("/v1{rest}"),
            Dialect::Anthropic => format!("/anthropic{rest}"),
            Dialect::Gemini => format!("/gemini/v1beta{rest}"),
        };
        Ok((gateway_path, idx))
    }

    async fn handle(&self, session: &mut Session, snap: &Snapshot, r: &mut Req, abort: &mut AbortSignal) -> Result<(), Stop> {
        let head = session.req_header();
        guard::check_path(head.uri.path())?;
        let (path, hint) = match self.forward {
            true => {
                let (p, i) = self.forward_target(snap, head, session.digest().is_some_and(|d| d.ssl_digest.is_some()))?;
                (p, Some(i))
            }
            false => (head.uri.path().to_string(), None),
        };
        let mut incoming = classify_path(&path, head.uri.query()).ok_or_else(|| {
            GatewayError::new(404, ErrorKind::NotFound, "unknown_endpoint", format!(
                "modelgate has no endpoint {}: point an OpenAI client at http://<modelgate>/v1 and an Anthropic client at http://<modelgate>/anthropic",
                head.uri.path()
            ))
        })?;
        incoming.provider = hint;
        r.dialect = incoming.dialect;
        r.rec.dialect = incoming.dialect.as_str();
        r.rec.api = incoming.api.as_str();
        let is_post = head.method == http::Method::POST;
        r.rec.path = path.clone();
        if let Some(m) = &incoming.path_model {
            guard::check_path_model(m)?;
        }
        if !(incoming.api.is_model_call() && is_post) {
            guard::check_passthrough(snap, head.method.as_str(), &path)?;
        }

        let body = read_body(session, snap.max_body_bytes, snap.client_timeouts.body_total).await?;
        r.body_done = Instant::now();
        if crate::body::too_deep(&body, snap.limits.max_json_depth) {
            return Err(crate::body::too_deep_error(snap.limits.max_json_depth).into());
        }

        let json = if incoming.api.is_model_call() && is_post { Some(JsonBody::parse(body.clone())?) } else { None };
        // Gemini names the model (and streaming) in the path.
        let requested = match &incoming.path_model {
            Some(m) => Some(m.clone()),
            None => json.as_ref().map(|j| j.model()).transpose()?.flatten(),
        };
        r.rec.requested_model = requested.clone();
        r.rec.stream = incoming.path_stream || json.as_ref().is_some_and(|j| j.stream());
        let overrides = self.overrides.load();
        // Owned copies, so the classification can live across the writes.
        let headers = session.req_header().headers.clone();
        let facts = policy::classify(snap, &incoming, &path, &headers, json.as_ref(), body.len(), requested.as_deref())?;
        r.rec.app = facts.app.clone();
        r.rec.task = facts.task.clone();
        if json.is_some() {
            r.rec.complexity = Some(facts.complexity.value);
        }
        let decision = policy::decide(snap, &overrides, &facts, None);
        r.rec.est_input_tokens = facts.tokens_if_counted().map(|t| t.count);
        let decision = decision.map_err(|refused| {
            r.route = refused.route.map(|r| r.name.as_str()).unwrap_or("none").to_string();
            r.rec.route = r.route.clone();
            r.rec.mode = refused.mode.as_str();
            refused.error
        })?;
        r.route = decision.route_label().to_string();
        r.rec.route = r.route.clone();
        r.rec.mode = decision.mode.as_str();
        r.rec.arm = decision.arm.map(str::to_string);
        r.rec.shadow_model = decision.shadow.clone();
        if let Some(arm) = decision.arm {
            metrics::split_arm(&r.route, arm);
        }
        if let Some(would) = &decision.shadow {
            metrics::shadow_decision(&r.route, would);
        }
        // Shadow mode forwards the body byte for byte.
        let pristine = decision.shadow.is_some();

        // Whose key the client sent: the provider it called (transparent
        // mode), else that of the model it asked for, else its dialect's
        // default. Without api_key_env, no other provider may see it.
        let key_owner = hint.or_else(|| requested.as_deref().and_then(|m| snap.models.get(m)).map(|m| m.provider)).or(snap.default_provider[incoming.dialect as usize]);
        let client_sent_key = AUTH_HEADERS.iter().any(|h| headers.contains_key(*h));
        // Resets that may be the request's fault: (model, provider, breaker).
        let mut ambiguous: Vec<(String, String, Breaker)> = Vec::new();
        let mut attempts = decision.attempts.clone();
        let mut downgraded_by: Option<String> = None;
        let mut tried: Vec<String> = Vec::new();
        let mut last: Option<Failure> = None;
        // The model the plan moved on from, and why (for the fallback metric).
        let mut moved: Option<(String, &'static str)> = None;
        // All skipped for open breakers: how long until the first may probe.
        let mut circuit_wait: Option<Duration> = None;
        let mut i = 0;
        'models: while i < attempts.len() {
            let attempt = attempts[i];
            let provider = &snap.providers[attempt.provider];
            let label = attempt.model_label();
            r.rec.model = Some(label.to_string());
            r.rec.provider = Some(provider.name.clone());
            i += 1;
            if let Some((from, reason)) = moved.take() {
                metrics::fallback(&from, label, reason);
            }
            let mut skip = |reason: &'static str, why: String, r: &mut Req| {
                metrics::attempt(label, reason);
                tried.push(format!("{label}: {why}"));
                r.rec.error = Some(reason.to_string());
                (label.to_string(), reason)
            };

            let foreign_key = client_sent_key && !snap.cross_provider_client_keys && key_owner != Some(attempt.provider);
            let key = match &provider.auth {
                // A local server needs no key: it gets none rather than another provider's.
                Auth::Passthrough if foreign_key && provider.local => Cred::Stripped,
                Auth::Passthrough if foreign_key => {
                    let owner = key_owner.map_or("another provider", |i| snap.providers[i].name.as_str());
                    moved = Some(skip("missing_key", format!("the client's key is for {owner}"), r));
                    // A provider's own failure says more than this skip.
                    last = last.or(Some(Failure {
                        reason: "missing_key",
                        status: Some(401),
                        retry_after: None,
                        message: format!(
                            "`{label}` is served by provider `{}`, which has no api_key_env, and the key this request carries is for `{owner}`: modelgate does not send a client's key to another provider. Set api_key_env on `{}` (or, if the key is valid there, cross_provider_client_keys: true)",
                            provider.name, provider.name
                        ),
                    }));
                    continue;
                }
                Auth::Passthrough => Cred::Client,
                Auth::Inject { key: Some(k), .. } => Cred::Inject(k.expose()),
                Auth::Inject { env, key: None } => {
                    moved = Some(skip("missing_key", "no API key".into(), r));
                    last = Some(Failure {
                        reason: "missing_key",
                        status: Some(401),
                        retry_after: None,
                        message: format!(
                            "modelgate has no API key for provider `{}`: the environment variable {env} named by its api_key_env is not set in modelgate's environment. Set it and restart modelgate, or remove api_key_env to forward the client's own key.",
                            provider.name
                        ),
                    });
                    continue;
                }
            };

            // Models known to be failing are skipped, not tried.
            let breaker = attempt.model.map_or(Breaker { failures: 0, ..Breaker::default() }, |m| m.breaker);
            let local_missing = provider.local && attempt.model.is_some_and(|m| self.health.installed(&provider.name, &m.id) == Some(false));
            if self.health.provider_healthy(&provider.name) == Some(false) {
                moved = Some(skip("unhealthy", format!("provider {} fails its health check", provider.name), r));
                continue;
            }
            if local_missing {
                moved = Some(skip("not_installed", format!("not installed on {}", provider.name), r));
                continue;
            }
            let probe = match self.health.admit(label, &provider.name, &breaker, Instant::now()) {
                Admit::Go { probe } => probe,
                Admit::Skip { retry_in } => {
                    moved = Some(skip("circuit_open", format!("circuit open for {} ms", retry_in.as_millis()), r));
                    circuit_wait = Some(circuit_wait.map_or(retry_in, |w| w.min(retry_in)));
                    continue;
                }
            };
            if probe {
                tracing::info!(model = label, provider = %provider.name, "circuit half-open: this request probes the model");
            }

            let retry = snap.retry_for(decision.route, attempt.model);
            let timeouts = attempt.model.map_or(&provider.timeouts, |m| &m.timeouts);
            let mut prepared: Option<Prepared> = None;
            let mut n = 0;
            loop {
                n += 1;
                // Budgets: reserve this try's worst case before calling.
                let hold = match json.as_ref() {
                    Some(_) => match self.admit(snap, &facts, &attempt, provider, downgraded_by.is_some()).await {
                        Verdict::Go(h) => h,
                        Verdict::Downgrade { budget, to } => {
                            let a = policy::downgrade(snap, &decision, &facts, &to).map_err(|e| {
                                GatewayError::new(e.status, e.kind, e.code, format!("budget `{budget}` is used up and moves requests to a cheaper model, but none can serve this one: {}", e.message))
                            })?;
                            tracing::debug!(budget, from = label, to = a.model_label(), "budget downgrade");
                            r.rec.downgraded_by = Some(budget.clone());
                            downgraded_by = Some(budget);
                            // The downgrade model replaces the rest of the plan.
                            attempts.truncate(i - 1);
                            attempts.push(a);
                            i -= 1;
                            continue 'models;
                        }
                        Verdict::Refuse(e) => return Err(e.into()),
                    },
                    None => Hold::none(),
                };
                let p: &Prepared = match &mut prepared {
                    Some(p) => p,
                    slot @ None => slot.insert(self.prepare(session, &incoming, &body, json.as_ref(), &attempt, provider, key, pristine && i == 1 && downgraded_by.is_none(), r.rec.stream)?),
                };
                if r.rec.attempts == 0 {
                    r.pre_upstream = r.body_done.elapsed();
                }
                r.rec.attempts += 1;
                let call = async {
                    match upstream::send(&self.connector, &provider.endpoint, timeouts, &p.req, &p.bytes).await {
                        Err(e) => Err(Failure::from_attempt(&e)),
                        Ok(ex) => self.fetch(ex, &retry, json.is_some(), &snap.limits).await,
                    }
                };
                let outcome = tokio::select! {
                    o = call => o,
                    _ = abort.fired() => Err(Failure::shutdown()),
                };
                match outcome {
                    Ok(fetched) => {
                        let now = Instant::now();
                        for (m, p, b) in ambiguous.drain(..) {
                            self.health.record(&m, &p, &b, Err("io"), now);
                        }
                        self.health.record(label, &provider.name, &breaker, Ok(()), now);
                        metrics::attempt(label, status_class(fetched.status()));
                        r.rec.error = None;
                        let (translated, drop_usage_only) = prepared.take().map_or((None, false), |p| (p.translated, p.drop_usage_only));
                        let served = Served { attempt: &attempt, provider, facts: &facts, hold, snap, model_call: json.is_some(), translated, breaker };
                        return self.relay(session, fetched, served, drop_usage_only, r, abort, snap.limits.max_event_bytes).await;
                    }
                    Err(f) if f.reason == "shutdown" => {
                        drop(hold);
                        r.rec.error = Some("shutdown".into());
                        return Err(shutting_down().into());
                    }
                    Err(f) => {
                        drop(hold);
                        if f.ambiguous() {
                            ambiguous.push((label.to_string(), provider.name.clone(), breaker));
                        } else {
                            self.health.record(label, &provider.name, &breaker, Err(f.reason), Instant::now());
                        }
                        metrics::attempt(label, f.reason);
                        tried.push(format!("{label}: {}", f.status.map_or(f.reason.to_string(), |s| s.to_string())));
                        r.rec.error = Some(f.reason.to_string());
                        tracing::warn!(model = label, provider = %provider.name, reason = f.reason, error = %f.message, "upstream attempt failed");
                        let wait = retry.wait(n, f.retry_after);
                        let reason = f.reason;
                        last = Some(f);
                        match wait {
                            Some(d) if n < retry.max_attempts && !probe => {
                                metrics::retry(label, reason);
                                tokio::select! {
                                    _ = tokio::time::sleep(d) => {}
                                    _ = abort.fired() => return Err(shutting_down().into()),
                                }
                            }
                            _ => {
                                moved = Some((label.to_string(), reason));
                                continue 'models;
                            }
                        }
                    }
                }
            }
        }
        let tried = tried.join("; ");
        Err(Stop::Answer(match (last, circuit_wait) {
            (Some(f), _) => f.into_error(&tried),
            (None, Some(wait)) => GatewayError::new(503, ErrorKind::Unavailable, "circuit_open", format!(
                "every model that could serve this request is failing and skipped for now (circuit breaker open; tried: {tried}); retry after the cool-down"
            ))
            .retry_after(wait.as_secs().max(1)),
            (None, None) if !tried.is_empty() => GatewayError::new(503, ErrorKind::Unavailable, "no_healthy_model", format!("no model that could serve this request is available: {tried}")),
            (None, None) => GatewayError::new(502, ErrorKind::Upstream, "no_attempt", "no model could be tried for this request"),
        }))
    }

    /// The body and request header for attempts at one model: `model`
    /// rewritten (or, for Gemini, named in the path), or the request
    /// translated for a provider of another dialect. `pristine` forwards
    /// the body byte for byte (shadow mode's first attempt).
    #[allow(clippy::too_many_arguments)]
    fn prepare(
        &self,
        session: &Session,
        incoming: &Incoming,
        body: &Bytes,
        json: Option<&JsonBody>,
        attempt: &Attempt<'_>,
        provider: &Provider,
        key: Cred<'_>,
        pristine: bool,
        stream: bool,
    ) -> Result<Prepared, Stop> {
        let (bytes, drop_usage_only, translated, path_model) = match (json, attempt.model) {
            (Some(_), Some(m)) if provider.kind != incoming.dialect => {
                let from = Wire::of_client(incoming.dialect, incoming.api).ok_or_else(|| {
                    translate::bad(format!("{} {} calls cannot be translated for a {} model", incoming.dialect, incoming.api.as_str(), provider.kind))
                })?;
                if incoming.gemini_array_stream() {
                    return Err(translate::bad("a streamGenerateContent call served by a model of another dialect needs `?alt=sse` (server-sent events), as Google's SDKs send").into());
                }
                let max = m.max_output_tokens.unwrap_or(translate::DEFAULT_MAX_TOKENS);
                let (bytes, chat) = translate::request(body, from, Wire::of_provider(provider.kind), &m.id, stream, max)?;
                (bytes, false, Some((from, chat)), None)
            }
            (Some(j), _) => {
                let model = attempt.model.filter(|_| !pristine).map(|m| m.id.as_str());
                if incoming.dialect == Dialect::Gemini {
                    (body.clone(), false, None, model)
                } else {
                    let usage = !pristine && stream && provider.kind == Dialect::OpenAi && matches!(incoming.api, Api::ChatCompletions | Api::Completions);
                    let (b, d) = j.render(model, usage);
                    (b, d, None, None)
                }
            }
            (None, _) => (body.clone(), false, None, None),
        };
        let client = session.req_header();
        let req = match &translated {
            Some((_, chat)) => translated_request(client, provider, key, chat, bytes.len())?,
            None => upstream_request(client, provider, &incoming.upstream_path_for(path_model), key, bytes.len(), client.method == http::Method::POST)?,
        };
        Ok(Prepared { bytes, drop_usage_only, translated, req })
    }

    /// Read enough of an upstream response to know whether it can be
    /// relayed: a status the plan retries, a 2xx JSON body that is not a
    /// valid answer, or a 2xx stream that fails before (or with) its first
    /// event is a [`Failure`]. A stream is committed to the client only
    /// after its first event.
    async fn fetch(&self, mut ex: Exchange, retry: &Retry, model_call: bool, limits: &crate::config::SizeLimits) -> Result<Fetched, Failure> {
        let status = ex.header.status.as_u16();
        let ok = (200..300).contains(&status);
        if retry.on_status.contains(&status) {
            let retry_after = retry_after(&ex.header);
            let body = read_body_of(&mut ex, 64 * 1024).await.unwrap_or_default();
            ex.finish(&self.connector).await;
            return Err(Failure { reason: status_class(status), status: Some(status), retry_after, message: excerpt(&translate::upstream_message(&body)) });
        }
        if ok && is_sse(&ex.header) {
            let mut first = FirstEvent::default();
            loop {
                match ex.chunk().await {
                    Ok(Some(c)) => {
                        let Some(data) = first.feed(&c) else {
                            if first.pending() > limits.max_event_bytes {
                                return Err(Failure::invalid(&format!(
                                    "the stream's first event is larger than {} bytes (limits.max_event_bytes)",
                                    limits.max_event_bytes
                                )));
                            }
                            continue;
                        };
                        if UsageCarrier::parse(&data).is_some_and(|c| c.is_error()) {
                            ex.finish(&self.connector).await;
                            return Err(Failure { reason: "stream_error_event", status: None, retry_after: None, message: excerpt(&translate::upstream_message(&data)) });
                        }
                        return Ok(Fetched::Stream { ex, first: first.buf.freeze() });
                    }
                    Ok(None) => return Err(Failure::invalid("the stream ended before its first event")),
                    Err(e) => return Err(Failure::from_attempt(&e)),
                }
            }
        }
        let declared = ex.header.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limits.max_answer_bytes) {
            return Err(Failure::invalid(&format!("the response is larger than {} bytes (limits.max_answer_bytes)", limits.max_answer_bytes)));
        }
        let body = read_body_of(&mut ex, limits.max_answer_bytes).await?;
        if ok && model_call && !is_answer(&body) {
            ex.finish(&self.connector).await;
            return Err(Failure::invalid(&format!("the provider answered {status} with a body that is not a JSON answer: {}", excerpt(&String::from_utf8_lossy(&body)))));
        }
        Ok(Fetched::Body { ex, body })
    }

    /// Reserve what the attempt may charge to the budgets that apply to it
    /// (see `budget::worst_case`; admission counts tokens itself when the
    /// free byte bound does not fit); nothing at all when no budget applies.
    async fn admit(&self, snap: &Snapshot, f: &Facts<'_>, a: &Attempt<'_>, p: &Provider, downgraded: bool) -> Verdict {
        let c = Charge { provider: &p.name, model: a.model.map(|m| m.name.as_str()), app: &f.app, task: f.task.as_deref() };
        if !snap.budgets.iter().any(|b| b.scope.matches(&c)) {
            return Verdict::Go(Hold::none());
        }
        self.budgets.admit(&c, &RequestEstimate { facts: f, model: a.model }, downgraded).await
    }

    /// Send the upstream response to the client and account for it. Spend
    /// is settled (ledger written) before the response's last bytes go out.
    #[allow(clippy::too_many_arguments)]
    async fn relay(&self, session: &mut Session, fetched: Fetched, mut s: Served<'_, '_>, drop_usage_only: bool, r: &mut Req, abort: &mut AbortSignal, max_event: usize) -> Result<(), Stop> {
        let (mut ex, first) = match fetched {
            Fetched::Stream { ex, first } => (ex, Some(first)),
            Fetched::Body { ex, body } => return self.relay_body(session, ex, body, s, r).await,
        };
        let status = ex.header.status.as_u16();
        let mut resp = self.response_header(&ex, &s, r)?;
        let ok = (200..300).contains(&status);
        if !session.is_http2() {
            resp.insert_header("transfer-encoding", "chunked").map_err(internal)?;
        }
        if session.write_response_header(Box::new(resp), false).await.is_err() {
            // Gone before the first byte: the provider still read the input.
            self.settle(&mut s, ok, None, 0, r).await;
            return Err(Stop::ClientGone);
        }
        let mut tap = StreamTap::new(drop_usage_only);
        let mut tr = s.translated.as_ref().map(|(client, chat)| translate::Translator::new(Wire::of_provider(s.provider.kind), *client, chat));
        let mut settled = false;
        let mut next = first.map(|b| Ok(Some(b)));
        // Why the stream failed after it was committed, if it did.
        let mut failed: Option<(&'static str, String)> = None;
        loop {
            let chunk = match next.take() {
                Some(c) => c,
                None => tokio::select! {
                    c = ex.chunk() => c,
                    _ = abort.fired() => Err(AttemptError::Shutdown),
                },
            };
            match chunk {
                Ok(Some(c)) => {
                    let mut out = tap.feed(&c);
                    if let Some(t) = tr.as_mut() {
                        out = t.feed(&out);
                    }
                    if tap.malformed {
                        failed = Some(("malformed", "the provider sent an event that is not valid JSON".into()));
                    } else if tap.pending() > max_event {
                        failed = Some(("event_too_large", format!("the provider sent an event larger than {max_event} bytes (limits.max_event_bytes)")));
                    }
                    // The answer is complete at the client with its last
                    // event: settle before that event leaves.
                    if (tap.terminal || failed.is_some()) && !settled {
                        settled = true;
                        self.settle(&mut s, ok, tap.usage(), tap.text_bytes, r).await;
                    }
                    if !out.is_empty() && session.write_response_body(Some(out), false).await.is_err() {
                        metrics::stream_error("client_closed");
                        r.rec.error = Some("client_closed".into());
                        break;
                    }
                    if failed.is_some() {
                        break;
                    }
                }
                Ok(None) => {
                    let mut tail = tap.finish();
                    if let Some(t) = tr.as_mut() {
                        let mut b = BytesMut::from(&t.feed(&tail)[..]);
                        // Close the client's stream only when the provider's ended properly.
                        if tap.terminal {
                            b.extend_from_slice(&t.finish());
                        }
                        tail = b.freeze();
                    }
                    if !tap.terminal && !tap.error_event {
                        failed = Some(("cut", "the provider's stream ended before the answer was complete".into()));
                    }
                    if !settled {
                        settled = true;
                        self.settle(&mut s, ok, tap.usage(), tap.text_bytes, r).await;
                    }
                    // A cut stream's tail is an incomplete event: not passed on.
                    if failed.is_none() && session.write_response_body(Some(tail), true).await.is_err() {
                        r.rec.error = Some("client_closed".into());
                    }
                    break;
                }
                Err(e) => {
                    // A connection that closes mid-body is a cut stream.
                    let reason = if matches!(e, AttemptError::Io(_)) { "cut" } else { e.reason() };
                    failed = Some((reason, e.to_string()));
                    if !settled {
                        settled = true;
                        self.settle(&mut s, ok, tap.usage(), tap.text_bytes, r).await;
                    }
                    break;
                }
            }
        }
        if tap.error_event {
            metrics::stream_error("upstream_error_event");
            r.rec.error = Some("upstream_error_event".into());
        }
        if let Some((reason, why)) = failed {
            // After the first byte there is no falling back: end the stream
            // with an explicit error the SDKs raise, never a clean end.
            metrics::stream_error(reason);
            if reason != "shutdown" {
                self.health.record(s.attempt.model_label(), &s.provider.name, &s.breaker, Err(reason), Instant::now());
            }
            tracing::warn!(model = s.attempt.model_label(), reason, error = %why, "upstream stream failed after the response started");
            r.rec.error = Some(reason.to_string());
            let err = GatewayError::new(502, ErrorKind::Upstream, reason, format!("the answer from {} broke off: {why}", s.attempt.model_label()));
            let _ = session.write_response_body(Some(stream_error_event(r.dialect, &err)), true).await;
        }
        r.upstream_end = Some(Instant::now());
        if !settled {
            // The client went away mid-stream: count what was produced.
            self.settle(&mut s, ok, tap.usage(), tap.text_bytes, r).await;
        }
        r.upstream = Some(ex.started.elapsed());
        ex.finish(&self.connector).await;
        Ok(())
    }

    /// The client's response header: the provider's minus hop-by-hop ones,
    /// plus modelgate's.
    fn response_header(&self, ex: &Exchange, s: &Served<'_, '_>, r: &mut Req) -> Result<ResponseHeader, Stop> {
        let status = ex.header.status.as_u16();
        let mut resp = ResponseHeader::build(status, None).map_err(internal)?;
        for (name, value) in ex.header.headers.iter() {
            if !DROP_RESPONSE.contains(&name.as_str()) {
                resp.append_header(name.clone(), value.clone()).map_err(internal)?;
            }
        }
        self.tag(&mut resp, Some((s.attempt, s.provider)), r)?;
        r.rec.status = status;
        Ok(resp)
    }

    /// Relay a whole (non-streamed) response, translated when needed; its
    /// usage is settled before it is sent.
    async fn relay_body(&self, session: &mut Session, ex: Exchange, mut body: Bytes, mut s: Served<'_, '_>, r: &mut Req) -> Result<(), Stop> {
        let status = ex.header.status.as_u16();
        let ok = (200..300).contains(&status);
        let mut resp = self.response_header(&ex, &s, r)?;
        r.upstream_end = Some(Instant::now());
        let usage = if ok { UsageCarrier::parse(&body).and_then(|c| c.usages().last().copied()) } else { None };
        // Without usage, the answer's size bounds its output.
        let text_bytes = if usage.is_none() { body.len() as u64 } else { 0 };
        if let Some(cost) = self.settle(&mut s, ok, usage, text_bytes, r).await {
            resp.insert_header("x-modelgate-cost-usd", cost.to_string()).map_err(internal)?;
        }
        if let Some((client, chat)) = &s.translated {
            // The answer (or the provider's error) in the client's dialect.
            body = match (ok, translate::answer(&body, Wire::of_provider(s.provider.kind), *client, chat)) {
                (true, Some(b)) => b,
                (true, None) => {
                    return Err(Stop::Answer(GatewayError::new(502, ErrorKind::Upstream, "invalid_upstream_answer", format!("the {} provider's answer could not be read for translation", s.provider.kind))))
                }
                (false, _) => translate::error(&body, status, s.provider.kind, r.dialect),
            };
            resp.insert_header("content-type", "application/json").map_err(internal)?;
        }
        resp.insert_header("content-length", body.len().to_string()).map_err(internal)?;
        session.write_response_header(Box::new(resp), body.is_empty()).await.map_err(|_| Stop::ClientGone)?;
        if !body.is_empty() {
            session.write_response_body(Some(body), true).await.map_err(|_| Stop::ClientGone)?;
        }
        r.upstream = Some(ex.started.elapsed());
        ex.finish(&self.connector).await;
        Ok(())
    }

    /// Account for a relayed response: usage as reported (or estimated when
    /// a stream ended without it), cost, savings, metrics, and the budget
    /// settlement with its ledger entry. A non-2xx answer without usage
    /// costs nothing and only releases the reservation. Returns the cost
    /// when the model's prices are known.
    async fn settle(&self, s: &mut Served<'_, '_>, ok: bool, raw: Option<RawUsage>, text_bytes: u64, r: &mut Req) -> Option<f64> {
        let hold = std::mem::replace(&mut s.hold, Hold::none());
        let reported = raw.map(|u| u.normalize(s.provider.kind));
        if !s.model_call || (!ok && reported.is_none()) {
            drop(hold);
            return None;
        }
        let model = s.attempt.model;
        // Without the provider's figures: input from the tokenizer, output
        // from the text seen (~4 bytes a token), also when a cut stream's
        // reported output is short.
        let est_output = text_bytes.div_ceil(4);
        let mut u = reported.unwrap_or_default();
        let mut estimated = false;
        if u.total_input() == 0 {
            u.input = s.facts.tokens_for(model.map(|m| m.id.as_str())).count;
            estimated = true;
        }
        if est_output > u.output && (reported.is_none() || r.rec.error.is_some()) {
            u.output = est_output;
            estimated = true;
        }
        r.rec.usage_reported = reported.is_some() && !estimated;
        r.rec.input_tokens = u.input;
        r.rec.cached_input_tokens = u.cached_input;
        r.rec.cache_write_tokens = u.cache_write;
        r.rec.output_tokens = u.output;
        let cost = model.map(|m| u.cost_usd(&m.prices));
        let requested = r.rec.requested_model.as_deref().and_then(|n| s.snap.models.get(n));
        let requested_cost = match requested {
            Some(q) => u.cost_usd(&q.prices),
            None => cost.unwrap_or(0.0),
        };
        let label = s.attempt.model_label();
        metrics::usage(&s.provider.name, label, &u, cost.unwrap_or(0.0));
        if let (Some(q), Some(c)) = (requested, cost) {
            if q.name != label {
                metrics::savings(&q.name, label, requested_cost, c);
            }
        }
        r.rec.cost_usd = cost;
        let entry = Entry {
            ts: hold.admitted_at(),
            app: r.rec.app.clone(),
            task: r.rec.task.clone(),
            route: r.route.clone(),
            provider: s.provider.name.clone(),
            model: label.to_string(),
            requested: r.rec.requested_model.clone().filter(|q| q != label),
            input: u.input,
            cached: u.cached_input,
            cache_write: u.cache_write,
            output: u.output,
            cost_usd: cost.unwrap_or(0.0),
            requested_cost_usd: requested_cost,
            estimated,
            downgraded_by: r.rec.downgraded_by.clone(),
        };
        let actual = crate::budget::charged(&entry);
        self.budgets.settle(hold, actual, &entry).await;
        cost
    }

    /// Add the `x-modelgate-*` response headers.
    fn tag(&self, resp: &mut ResponseHeader, served: Option<(&Attempt<'_>, &Provider)>, r: &Req) -> Result<(), Stop> {
        if let Some((a, p)) = served {
            resp.insert_header("x-modelgate-model", a.model.map(|m| m.name.as_str()).or(r.rec.requested_model.as_deref()).unwrap_or("")).map_err(internal)?;
            resp.insert_header("x-modelgate-provider", p.name.as_str()).map_err(internal)?;
        }
        resp.insert_header("x-modelgate-route", r.route.as_str()).map_err(internal)?;
        if let Some(arm) = &r.rec.arm {
            resp.insert_header("x-modelgate-arm", arm.as_str()).map_err(internal)?;
        }
        if let Some(would) = &r.rec.shadow_model {
            resp.insert_header("x-modelgate-shadow-model", would.as_str()).map_err(internal)?;
        }
        if let Some(budget) = &r.rec.downgraded_by {
            resp.insert_header("x-modelgate-downgraded-by", budget.as_str()).map_err(internal)?;
        }
        if let Some(c) = r.rec.complexity {
            resp.insert_header("x-modelgate-complexity", c.to_string()).map_err(internal)?;
        }
        resp.insert_header("x-modelgate-attempts", r.rec.attempts.to_string()).map_err(internal)?;
        Ok(())
    }

    async fn answer_error(&self, session: &mut Session, e: &GatewayError, r: &mut Req) {
        r.rec.status = e.status;
        r.rec.error.get_or_insert_with(|| e.code.to_string());
        let body = e.body(r.dialect);
        let Ok(mut resp) = ResponseHeader::build(e.status, Some(6)) else { return };
        let _ = resp.insert_header("content-type", "application/json");
        let _ = resp.insert_header("content-length", body.len().to_string());
        if let Some(secs) = e.retry_after {
            let _ = resp.insert_header("retry-after", secs.to_string());
        }
        if e.status == 407 {
            let _ = resp.insert_header("proxy-authenticate", "Basic realm=\"modelgate\"");
        }
        if e.kind == ErrorKind::BudgetExceeded {
            // The official SDKs would retry a 429; this one lasts until the
            // window resets.
            let _ = resp.insert_header("x-should-retry", "false");
        }
        let _ = self.tag(&mut resp, None, r);
        if session.write_response_header(Box::new(resp), false).await.is_ok() {
            let _ = session.write_response_body(Some(body), true).await;
        }
    }

    fn account(&self, snap: &Snapshot, r: &mut Req, started: Instant) {
        let now = Instant::now();
        let post = r.upstream_end.map(|e| now.saturating_duration_since(e)).unwrap_or_default();
        let overhead = if r.upstream_end.is_some() { r.pre_upstream + post } else { r.body_done.elapsed() };
        r.rec.ts = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        r.rec.duration_ms = ms(started.elapsed());
        r.rec.upstream_ms = r.upstream.map(ms);
        r.rec.overhead_ms = ms(overhead);
        metrics::request(&metrics::RequestLabels {
            dialect: r.dialect.as_str(),
            provider: r.rec.provider.as_deref().unwrap_or("none"),
            model: r.rec.model.as_deref().unwrap_or("none"),
            route: &r.route,
            status: r.rec.status,
        });
        metrics::durations(r.upstream, overhead);
        self.log.write(&snap.access_log, &r.rec);
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    fn suppress_error_log(&self, _session: &Session, _ctx: &Self::CTX, error: &pingora::Error) -> bool {
        // A client that stalls its request header is closed by the guard
        // (proxy::conn) and logged there.
        error.to_string().contains("request header timeout")
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> pingora::Result<Box<HttpPeer>> {
        // Never reached: request_filter answers every request.
        Err(pingora::Error::explain(pingora::ErrorType::InternalError, "modelgate answers from request_filter"))
    }

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> pingora::Result<bool> {
        let started = Instant::now();
        let _in_flight = self.drain.enter();
        let mut abort = self.drain.signal();
        // One snapshot for the whole request, even if a reload happens meanwhile.
        let snap = self.state.load_full();
        session.set_read_timeout(Some(snap.client_timeouts.body_idle));
        if session.get_keepalive().is_some() {
            // (None means Pingora is shutting down: leave it closed.)
            session.set_keepalive(Some(snap.client_timeouts.keepalive.as_secs().max(1)));
        }
        let head = session.req_header();
        let mut r = Req {
            dialect: Dialect::OpenAi,
            body_done: started,
            pre_upstream: Duration::ZERO,
            upstream: None,
            upstream_end: None,
            route: "none".into(),
            rec: Record { method: head.method.to_string(), path: head.uri.path().to_string(), route: "none".into(), ..Default::default() },
        };
        let handled = match abort.is_fired() {
            true => Err(shutting_down().into()),
            false => self.handle(session, &snap, &mut r, &mut abort).await,
        };
        match handled {
            Ok(()) => {}
            Err(Stop::Answer(e)) => self.answer_error(session, &e, &mut r).await,
            Err(Stop::AnswerThenDrain(e)) => {
                self.answer_error(session, &e, &mut r).await;
                drain_or_close(session, snap.max_body_bytes).await;
            }
            Err(Stop::ClientGone) => {
                r.rec.status = 499;
                r.rec.error = Some("client_closed".into());
            }
        }
        self.account(&snap, &mut r, started);
        Ok(true)
    }
}

fn internal(e: Box<pingora::Error>) -> Stop {
    Stop::Answer(GatewayError::new(500, ErrorKind::Internal, "internal", format!("modelgate could not build the response: {e}")))
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "ok",
        429 => "429",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// `Retry-After` (seconds) or OpenAI's `retry-after-ms`.
fn retry_after(h: &ResponseHeader) -> Option<Duration> {
    let get = |n: &str| h.headers.get(n).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<f64>().ok()).filter(|v| v.is_finite() && *v >= 0.0);
    get("retry-after-ms").map(|ms| Duration::from_secs_f64(ms / 1000.0)).or_else(|| get("retry-after").map(Duration::from_secs_f64))
}

fn is_sse(h: &ResponseHeader) -> bool {
    h.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| ct.starts_with("text/event-stream"))
}

/// Read a whole response body, up to `limit` bytes.
async fn read_body_of(ex: &mut Exchange, limit: usize) -> Result<Bytes, Failure> {
    let mut buf = BytesMut::new();
    while let Some(c) = ex.chunk().await.map_err(|e| Failure::from_attempt(&e))? {
        if buf.len() + c.len() > limit {
            return Err(Failure::invalid(&format!("the response is larger than {limit} bytes")));
        }
        buf.extend_from_slice(&c);
    }
    Ok(buf.freeze())
}

/// Collects a stream's bytes up to its first event with data (comments and
/// keep-alives skipped), scanning each byte once however the stream is cut.
#[derive(Default)]
struct FirstEvent {
    buf: BytesMut,
    /// Start of the event being read.
    start: usize,
    /// Where to resume looking for its end.
    scanned: usize,
}

impl FirstEvent {
    /// Add a chunk; the first event's data once it is complete.
    fn feed(&mut self, chunk: &[u8]) -> Option<Vec<u8>> {
        self.buf.extend_from_slice(chunk);
        while let Some(end) = crate::dialect::sse::event_end(&self.buf, self.scanned.max(self.start)) {
            let data = crate::dialect::sse::data_of(&self.buf[self.start..end]);
            self.start = end;
            self.scanned = end;
            if !data.iter().all(u8::is_ascii_whitespace) {
                return Some(data);
            }
        }
        // A delimiter is at most 4 bytes: look again at the last 3.
        self.scanned = self.buf.len().saturating_sub(3).max(self.start);
        None
    }

    /// Bytes of the event still being read.
    fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// At most [`ECHO_BYTES`] of what an upstream said (on a char boundary).
fn excerpt(text: &str) -> String {
    if text.len() <= ECHO_BYTES {
        return text.to_string();
    }
    let mut end = ECHO_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// 503 while modelgate shuts down.
fn shutting_down() -> GatewayError {
    GatewayError::new(503, ErrorKind::Unavailable, "shutting_down", "modelgate is shutting down; retry the request (another instance, or this one after its restart, will serve it)").retry_after(1)
}

/// A model call's 2xx body is an answer: a JSON object without `error`.
fn is_answer(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Top {
        error: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Top>(body).is_ok_and(|t| t.error.is_none())
}

/// An error event that ends a stream, in the client's dialect.
fn stream_error_event(dialect: Dialect, e: &GatewayError) -> Bytes {
    let body = String::from_utf8_lossy(&e.body(dialect)).into_owned();
    Bytes::from(match dialect {
        Dialect::OpenAi | Dialect::Gemini => format!("data: {body}\n\n"),
        Dialect::Anthropic => format!("event: error\ndata: {body}\n\n"),
    })
}

/// Read the whole request body within `total`, refusing more than `limit`
/// bytes; a declared length over the limit is refused before reading.
async fn read_body(session: &mut Session, limit: usize, total: Duration) -> Result<Bytes, Stop> {
    match tokio::time::timeout(total, read_body_within(session, limit)).await {
        Ok(r) => r,
        Err(_) => {
            session.set_keepalive(None);
            Err(Stop::Answer(GatewayError::new(408, ErrorKind::Timeout, "body_timeout", format!(
                "the request body did not arrive within {} s (client_timeouts.body_total_ms)",
                total.as_secs_f64()
            ))))
        }
    }
}

async fn read_body_within(session: &mut Session, limit: usize) -> Result<Bytes, Stop> {
    let too_large = |n: String| {
        GatewayError::new(413, ErrorKind::TooLarge, "body_too_large", format!(
            "the request body is {n} bytes, over modelgate's limit of {limit} bytes; send a smaller request or raise max_body_bytes in the config"
        ))
    };
    let declared = session.req_header().headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if let Some(n) = declared {
        if n > limit {
            return Err(Stop::AnswerThenDrain(too_large(n.to_string())));
        }
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0));
    loop {
        let chunk = match session.read_request_body().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) if e.etype() == &pingora::ErrorType::ReadTimedout => {
                session.set_keepalive(None);
                return Err(Stop::Answer(GatewayError::new(408, ErrorKind::Timeout, "body_timeout", "the request body stalled longer than client_timeouts.body_idle_ms")));
            }
            Err(_) => return Err(Stop::ClientGone),
        };
        if buf.len() + chunk.len() > limit {
            return Err(Stop::AnswerThenDrain(too_large(format!("more than {limit}"))));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// After answering 413: read and discard what the client is still sending,
/// for a moment and up to a bound, so it sees the answer instead of a
/// reset; then close the connection.
async fn drain_or_close(session: &mut Session, limit: usize) {
    let mut left = limit.saturating_mul(4).min(512 * 1024 * 1024);
    let discard = async {
        loop {
            match session.read_request_body().await {
                Ok(Some(c)) if c.len() <= left => left -= c.len(),
                _ => return,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), discard).await;
    session.set_keepalive(None);
}

/// The upstream request header of a translated call: POST to the provider's
/// chat endpoint, the client's own headers minus auth and the other
/// dialect's, the client's key moved to this dialect's auth header unless
/// modelgate injects one.
fn translated_request(client: &RequestHeader, provider: &Provider, key: Cred<'_>, chat: &translate::Chat, body_len: usize) -> Result<RequestHeader, Stop> {
    let endpoint = match provider.kind {
        Dialect::OpenAi => "/chat/completions".to_string(),
        Dialect::Anthropic => "/v1/messages".to_string(),
        Dialect::Gemini if chat.stream => format!("/models/{}:streamGenerateContent?alt=sse", chat.model),
        Dialect::Gemini => format!("/models/{}:generateContent", chat.model),
    };
    let path = format!("{}{endpoint}", provider.endpoint.base_path);
    let mut req = RequestHeader::build(http::Method::POST, path.as_bytes(), Some(client.headers.len() + 4)).map_err(internal)?;
    let client_key = client
        .headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| client.headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()))
        .or_else(|| client.headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")))
        .map(str::trim);
    for (name, value) in client.headers.iter() {
        let n = name.as_str();
        let foreign = n.starts_with("anthropic-") || n.starts_with("openai-") || n.starts_with("x-goog-") || AUTH_HEADERS.contains(&n) || n == "content-type";
        if DROP_REQUEST.contains(&n) || n.starts_with("x-modelgate-") || foreign {
            continue;
        }
        req.append_header(name.clone(), value.clone()).map_err(internal)?;
    }
    req.insert_header("host", provider.endpoint.authority.as_str()).map_err(internal)?;
    req.insert_header("accept-encoding", "identity").map_err(internal)?;
    req.insert_header("content-type", "application/json").map_err(internal)?;
    req.insert_header("content-length", body_len.to_string()).map_err(internal)?;
    let k = match key {
        Cred::Inject(k) => Some(k),
        Cred::Client => client_key,
        Cred::Stripped => None,
    };
    if let Some(k) = k {
        set_auth(&mut req, provider.kind, k)?;
    }
    if provider.kind == Dialect::Anthropic {
        req.insert_header("anthropic-version", "2023-06-01").map_err(internal)?;
    }
    Ok(req)
}

/// The upstream request header: the client's method, path under the
/// provider's base path, and headers minus hop-by-hop and `x-modelgate-*`;
/// auth replaced when modelgate injects the provider key.
fn upstream_request(client: &RequestHeader, provider: &Provider, upstream_path: &str, key: Cred<'_>, body_len: usize, has_body: bool) -> Result<RequestHeader, Stop> {
    let path = format!("{}{upstream_path}", provider.endpoint.base_path);
    let mut req = RequestHeader::build(client.method.clone(), path.as_bytes(), Some(client.headers.len() + 4)).map_err(internal)?;
    for (name, value) in client.headers.iter() {
        let n = name.as_str();
        if DROP_REQUEST.contains(&n) || n.starts_with("x-modelgate-") || (!matches!(key, Cred::Client) && AUTH_HEADERS.contains(&n)) {
            continue;
        }
        req.append_header(name.clone(), value.clone()).map_err(internal)?;
    }
    req.insert_header("host", provider.endpoint.authority.as_str()).map_err(internal)?;
    req.insert_header("accept-encoding", "identity").map_err(internal)?;
    if has_body || body_len > 0 {
        req.insert_header("content-length", body_len.to_string()).map_err(internal)?;
    }
    if let Cred::Inject(k) = key {
        set_auth(&mut req, provider.kind, k)?;
    }
    Ok(req)
}

/// What authenticates an attempt upstream.
#[derive(Clone, Copy)]
enum Cred<'a> {
    /// modelgate's own key for the provider (`api_key_env`).
    Inject(&'a str),
    /// The client's own auth headers (the key was meant for this provider).
    Client,
    /// None: a local provider that the client's key was not meant for.
    Stripped,
}

/// Headers that carry a client's API key, in any dialect.
const AUTH_HEADERS: &[&str] = &["authorization", "x-api-key", "x-goog-api-key"];

/// Put `key` in the auth header of a provider of `kind`.
fn set_auth(req: &mut RequestHeader, kind: Dialect, key: &str) -> Result<(), Stop> {
    match kind {
        Dialect::OpenAi => req.insert_header("authorization", format!("Bearer {key}")),
        Dialect::Anthropic => req.insert_header("x-api-key", key),
        Dialect::Gemini => req.insert_header("x-goog-api-key", key),
    }
    .map_err(internal)
}
