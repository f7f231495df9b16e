//! The per-request context (Pingora's `CTX`): what the phases learn about
//! one request, the `x-modelgate-*` headers that report it, errors written
//! in the client's dialect, and the accounting (metrics and one access-log
//! line) that Pingora's `logging()` phase runs once per request.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::{HeaderMap, HeaderValue};
use http::StatusCode;
use pingora_proxy::Session;

use crate::accesslog::{self, Record};
use crate::config::{Provider, Snapshot};
use crate::dialect::{Dialect, ErrorKind, GatewayError};
use crate::metrics;
use crate::policy::Attempt;
use crate::proxy::head;
use crate::request_id::RequestId;
use crate::telemetry::{self, Finished};
use crate::upstream::attempts::Trail;

/// Why handling stopped before a response was relayed.
pub enum Stop {
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

/// One request, from its head to its access-log line.
pub struct Ctx {
    /// The snapshot the request runs on (`None` until `request_filter`:
    /// nothing to account for).
    pub snap: Option<Arc<Snapshot>>,
    pub started: Instant,
    pub dialect: Dialect,
    /// When the whole body had arrived.
    pub body_done: Instant,
    /// The upstream exchange's duration and when its last byte came.
    pub upstream: Option<Duration>,
    pub upstream_end: Option<Instant>,
    /// A relayed stream: from its upstream call to its first event.
    pub ttft: Option<Duration>,
    pub route: String,
    pub trail: Trail,
    pub rec: Record,
    /// Counts the request as in flight until it has been accounted for.
    pub in_flight: Option<crate::drain::InFlight>,
    /// The request's rate-limit entries (settled with the tokens used;
    /// dropped unsettled, they give their tokens back).
    pub rate: Option<crate::ratelimit::RateHold>,
}

impl Ctx {
    pub fn new() -> Self {
        let now = Instant::now();
        Ctx {
            snap: None,
            started: now,
            dialect: Dialect::OpenAi,
            body_done: now,
            upstream: None,
            upstream_end: None,
            ttft: None,
            route: "none".into(),
            trail: Trail::default(),
            rec: Record { request_id: RequestId::next(), ..Record::default() },
            in_flight: None,
            rate: None,
        }
    }

    /// Add the `x-modelgate-*` response headers.
    pub fn tag(&self, h: &mut HeaderMap, served: Option<(&Attempt<'_>, &Provider)>) -> Result<(), GatewayError> {
        if let Some((a, p)) = served {
            h.insert(head::MODEL, head::text(a.model.map(|m| m.name.as_str()).or(self.rec.requested_model.as_deref()).unwrap_or(""))?);
            h.insert(head::PROVIDER, head::text(&p.name)?);
        }
        h.insert(head::ROUTE, head::text(&self.route)?);
        let id = self.rec.request_id.hex();
        h.insert(head::REQUEST_ID, head::text(std::str::from_utf8(&id).unwrap_or_default())?);
        if let Some(arm) = &self.rec.arm {
            h.insert(head::ARM, head::text(arm)?);
        }
        if let Some(would) = &self.rec.shadow_model {
            h.insert(head::SHADOW_MODEL, head::text(would)?);
        }
        if let Some(budget) = &self.trail.downgraded_by {
            h.insert(head::DOWNGRADED_BY, head::text(budget)?);
        }
        if let Some(c) = self.rec.complexity {
            h.insert(head::COMPLEXITY, head::text(&c.to_string())?);
        }
        h.insert(head::ATTEMPTS, HeaderValue::from(self.trail.calls));
        if let Some(c) = self.trail.cache {
            h.insert(head::CACHE, HeaderValue::from_static(c));
        }
        if let Some(id) = &self.rec.trace_id {
            h.insert(head::TRACE_ID, head::text(id)?);
        }
        if let Some(hops) = &self.rec.escalated {
            // UTF-8 (the arrow), which `HeaderValue::from_str` refuses.
            h.insert(
                head::ESCALATED,
                HeaderValue::from_bytes(hops.as_bytes())
                    .map_err(|_| crate::upstream::request::internal(format!("{hops:?} cannot be sent as a header value")))?,
            );
        }
        if let Some(c) = self.rec.check_failed {
            h.insert(head::CHECK_FAILED, HeaderValue::from_static(c));
        }
        Ok(())
    }

    /// Answer with `e` in the client's dialect.
    pub async fn answer_error(&mut self, session: &mut Session, e: &GatewayError) {
        self.rec.status = e.status;
        self.trail.error.get_or_insert_with(|| e.code.to_string());
        let body = e.body(self.dialect);
        let Ok(status) = StatusCode::from_u16(e.status) else { return };
        let mut h = HeaderMap::with_capacity(12);
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        if let Some(secs) = e.retry_after {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if e.status == 407 {
            h.insert(http::header::PROXY_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"modelgate\""));
        }
        if let Some(retry) = should_retry(e) {
            h.insert(head::SHOULD_RETRY, HeaderValue::from_static(if retry { "true" } else { "false" }));
        }
        let _ = self.tag(&mut h, None);
        let resp = head::response(status, h);
        if session.write_response_header(Box::new(resp), false).await.is_ok() {
            let _ = session.write_response_body(Some(body), true).await;
        }
    }

    /// Metrics and the access-log line (once, from `logging()`).
    pub fn account(&mut self) {
        let Some(snap) = self.snap.take() else { return };
        let now = Instant::now();
        let pre_upstream = self.trail.first_call.map(|t| t.saturating_duration_since(self.body_done)).unwrap_or_default();
        let overhead = match self.upstream_end {
            Some(end) => pre_upstream + now.saturating_duration_since(end),
            None => self.body_done.elapsed(),
        };
        let rec = &mut self.rec;
        rec.model = self.trail.model.take();
        rec.provider = self.trail.provider.take();
        rec.attempts = self.trail.calls;
        rec.downgraded_by = self.trail.downgraded_by.take();
        rec.rate_limited = self.trail.rate_limited.take();
        rec.error = self.trail.error.take();
        rec.cache = self.trail.cache;
        rec.route = self.route.clone();
        rec.ts = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        rec.duration_ms = ms(self.started.elapsed());
        rec.upstream_ms = self.upstream.map(ms);
        rec.overhead_ms = ms(overhead);
        let labels = metrics::RequestLabels {
            dialect: self.dialect.as_str(),
            provider: rec.provider.as_deref().unwrap_or("none"),
            // `other`: forwarded to a provider as an unconfigured model.
            model: rec.model.as_deref().unwrap_or(if rec.provider.is_some() { "other" } else { "none" }),
            route: &self.route,
            status: rec.status,
        };
        metrics::request(&labels);
        metrics::answered(&labels, rec.error.as_deref(), self.upstream, self.ttft, overhead);
        accesslog::logger().write(&snap.access_log, rec);
        let rec = std::mem::take(&mut self.rec);
        if let Some(trace) = self.trail.trace.take().filter(|t| t.sampled) {
            let upstream_end = self.upstream_end;
            telemetry::emit(Finished { trace, rec: rec.clone(), started: self.started, upstream_end, now, now_wall: SystemTime::now() });
        }
        // Hand the record to the dashboard: a move, it is not used again.
        crate::stats::observe(rec);
    }
}

/// `x-should-retry` on an error modelgate answers, for the statuses the
/// official SDKs retry on their own (408, 409, 429, 5xx). modelgate has
/// already tried as its `retry:` policy and the plan's fallbacks allow, so
/// an SDK retry would only multiply its attempts: `false`, except a 429 or
/// 503 that says when to come back (`Retry-After`: rate limited, circuit
/// open, shutting down). A budget refusal lasts until the window resets:
/// `false` although it carries Retry-After.
fn should_retry(e: &GatewayError) -> Option<bool> {
    if e.kind == ErrorKind::BudgetExceeded {
        return Some(false);
    }
    let sdk_retries = matches!(e.status, 408 | 409 | 429) || e.status >= 500;
    sdk_retries.then(|| matches!(e.status, 429 | 503) && e.retry_after.is_some())
}

impl Default for Ctx {
    fn default() -> Self {
        Ctx::new()
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
