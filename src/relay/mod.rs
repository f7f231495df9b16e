//! The relay: an accepted answer to the client, translated when the
//! provider speaks another dialect, with its spend settled
//! ([`settle`]) before the last bytes go out.
//!
//! It reads from a [`Source`]: a live upstream [`Exchange`], or anything
//! else that can replay a response (a cached answer, a canned one), which
//! then goes through the same relay, translation and accounting.

mod pump;
mod settle;
mod source;

use std::time::Instant;

use crate::upstream::Connector;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use pingora_proxy::Session;

use crate::budget::{Budgets, Hold};
use crate::cache;
use crate::config::{Breaker, Provider, Snapshot};
use crate::dialect::sse::StreamTap;
use crate::dialect::{ErrorKind, GatewayError};
use crate::drain::AbortSignal;
use crate::metrics;
use crate::policy::{Attempt, Facts};
use crate::proxy::ctx::{Ctx, Stop};
use crate::proxy::head;
use crate::translate::{self, Wire};
use crate::upstream::attempts::Served;
use crate::upstream::health::Health;
use crate::upstream::AttemptError;
use crate::usage::{RawUsage, UsageCarrier};

use pump::{stream_error_event, Pump};
pub use settle::settle;
pub use source::{Canned, Response, Source};

/// The try being answered and its reservation.
pub struct Answering<'a, 's> {
    pub attempt: Attempt<'s>,
    pub provider: &'s Provider,
    pub hold: Hold,
    pub snap: &'a Snapshot,
    /// A model call (JSON body): accounted and written to the ledger.
    pub model_call: bool,
    pub translated: Option<(Wire, translate::Chat)>,
    pub breaker: Breaker,
    /// What the response cache does with this answer.
    pub cache: cache::Note,
    /// The answer failed this check and is not delivered: the request
    /// escalated to the model named (settled as spent, counted apart).
    pub discarded: Option<(crate::config::Check, String)>,
    /// The model's rate-limit hold (limits counted per model).
    pub rate: Option<crate::ratelimit::RateHold>,
}

impl<'a, 's> Answering<'a, 's> {
    pub fn of(s: Served<'s>, snap: &'a Snapshot, model_call: bool) -> (Self, Response) {
        let a = Answering {
            attempt: s.attempt,
            provider: s.provider,
            hold: s.hold,
            snap,
            model_call,
            translated: s.translated,
            breaker: s.breaker,
            cache: s.cache,
            discarded: None,
            rate: s.rate,
        };
        (a, s.response)
    }

    fn is_hit(&self) -> bool {
        matches!(self.cache, cache::Note::Hit { .. })
    }
}

/// The services the relay uses.
pub struct Relay<'g> {
    pub connector: &'g Connector,
    pub health: &'g Health,
    pub budgets: &'g Budgets,
}

impl Relay<'_> {
    /// Send the response to the client and account for it.
    #[allow(clippy::too_many_arguments)]
    pub async fn answer(
        &self,
        session: &mut Session,
        resp: Response,
        a: Answering<'_, '_>,
        facts: &Facts<'_>,
        cx: &mut Ctx,
        abort: &mut AbortSignal,
    ) -> Result<(), Stop> {
        match resp {
            Response::Whole { src, body, usage } => self.whole(session, src, body, usage, a, facts, cx).await,
            Response::Stream { src, tap, first } => self.stream(session, src, tap, first, a, facts, cx, abort).await,
        }
    }

    /// The client's response header: the provider's minus hop-by-hop ones,
    /// plus modelgate's.
    fn head(&self, src: &dyn Source, a: &Answering<'_, '_>, cx: &mut Ctx) -> Result<HeaderMap, GatewayError> {
        let header = src.header();
        let mut h = HeaderMap::with_capacity(header.headers.len() + 12);
        for (name, value) in header.headers.iter() {
            if !head::DROP_RESPONSE.contains(name) {
                h.append(name.clone(), value.clone());
            }
        }
        cx.tag(&mut h, Some((&a.attempt, a.provider)))?;
        cx.rec.status = header.status.as_u16();
        Ok(h)
    }

    /// A whole (non-streamed) response, translated when needed; its usage
    /// is settled before it is sent.
    #[allow(clippy::too_many_arguments)]
    async fn whole(
        &self,
        session: &mut Session,
        src: Box<dyn Source>,
        mut body: Bytes,
        usage: Option<RawUsage>,
        mut a: Answering<'_, '_>,
        facts: &Facts<'_>,
        cx: &mut Ctx,
    ) -> Result<(), Stop> {
        let code = src.header().status;
        let status = code.as_u16();
        let ok = (200..300).contains(&status);
        let mut h = self.head(src.as_ref(), &a, cx)?;
        cx.upstream_end = Some(Instant::now());
        let usage = match ok && !a.is_hit() {
            true => usage.or_else(|| UsageCarrier::parse(&body).and_then(|c| c.usages().last().copied())),
            false => None,
        };
        if let Some(t) = cx.trail.trace.as_mut().filter(|t| t.sampled && ok) {
            // Traced requests only: one more read of the answer.
            t.finish_reasons = UsageCarrier::parse(&body).map(|c| c.finish_reasons().map(str::to_string).collect()).unwrap_or_default();
        }
        // The provider's answer, before translation: kept (below, once it
        // translated) if it is a good one.
        let recorder = match std::mem::take(&mut a.cache) {
            cache::Note::Record(r) => Some((r, body.clone())),
            other => {
                a.cache = other;
                None
            }
        };
        // Without usage, the answer's size bounds its output.
        let text_bytes = if usage.is_none() { body.len() as u64 } else { 0 };
        if let Some(cost) = settle(self.budgets, &mut a, facts, ok, usage, text_bytes, cx).await {
            h.insert(head::COST_USD, head::text(&cost.to_string())?);
        }
        if let Some((client, chat)) = &a.translated {
            // The answer (or the provider's error) in the client's dialect.
            body = match (ok, translate::answer(&body, Wire::of_provider(a.provider.kind), *client, chat)) {
                (true, Some(b)) => b,
                (true, None) => {
                    return Err(Stop::Answer(GatewayError::new(
                        502,
                        ErrorKind::Upstream,
                        "invalid_upstream_answer",
                        format!("the {} provider's answer could not be read for translation", a.provider.kind),
                    )))
                }
                (false, _) => translate::error(&body, status, a.provider.kind, cx.dialect),
            };
            h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if let Some((r, kept)) = recorder {
            let ct = src.header().headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
            // (Boxed here and below: a request's future is not sized for the
            // cache's write unless a cache is on.)
            Box::pin(r.whole(status, ct, &kept, usage)).await;
        }
        h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        session.write_response_header(Box::new(head::response(code, h)), body.is_empty()).await.map_err(|_| Stop::ClientGone)?;
        if !body.is_empty() {
            session.write_response_body(Some(body), true).await.map_err(|_| Stop::ClientGone)?;
        }
        if !a.is_hit() {
            cx.upstream = Some(src.elapsed());
        }
        src.finish(self.connector).await;
        Ok(())
    }

    /// A stream, event by event (translated when needed). Spend is settled
    /// before the last event goes out. After the first byte there is no
    /// falling back: a stream that breaks ends with an error event the SDKs
    /// raise, never a clean end.
    #[allow(clippy::too_many_arguments)]
    async fn stream(
        &self,
        session: &mut Session,
        mut src: Box<dyn Source>,
        tap: Box<StreamTap>,
        first: Bytes,
        mut a: Answering<'_, '_>,
        facts: &Facts<'_>,
        cx: &mut Ctx,
        abort: &mut AbortSignal,
    ) -> Result<(), Stop> {
        // The first event has arrived (the retry policy read it).
        cx.ttft = Some(src.elapsed());
        let code = src.header().status;
        let ok = code.is_success();
        let mut h = self.head(src.as_ref(), &a, cx)?;
        if !session.is_http2() {
            h.insert(http::header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        }
        if session.write_response_header(Box::new(head::response(code, h)), false).await.is_err() {
            // Gone before the first byte: the provider still read the input.
            settle(self.budgets, &mut a, facts, ok, None, 0, cx).await;
            return Err(Stop::ClientGone);
        }
        let mut recorder = match std::mem::take(&mut a.cache) {
            cache::Note::Record(r) if ok => Some(r),
            other => {
                a.cache = other;
                None
            }
        };
        let (mut pump, first) = Pump::new(&a, tap, first, recorder.as_ref().map(|r| r.recording()));
        let mut next = Some(first);
        loop {
            let chunk = match next.take() {
                Some(out) => Ok(Some(out)),
                None => tokio::select! {
                    c = src.chunk() => c.map(|c| c.map(|c| pump.feed(&c))),
                    _ = abort.fired() => Err(AttemptError::Shutdown),
                    // Gone while the provider is silent (a model thinking
                    // before its next token): stop now, not at the next
                    // write, so the provider stops generating and the
                    // request is settled and its reservation given back.
                    () = client_gone(session) => {
                        metrics::stream_error("client_closed");
                        cx.trail.error = Some("client_closed".into());
                        break;
                    }
                },
            };
            let (out, last) = match chunk {
                Ok(Some(out)) => (out, pump.failed.is_some()),
                Ok(None) => (pump.end(), true),
                Err(e) => {
                    // A connection that closes mid-body is a cut stream.
                    let reason = if matches!(e, AttemptError::Io(_)) { "cut" } else { e.reason() };
                    pump.failed = Some((reason, e.to_string()));
                    (Bytes::new(), true)
                }
            };
            // The answer is complete at the client with its last event:
            // settle before that event leaves.
            if (last || pump.tap.terminal) && !pump.settled {
                pump.settled = true;
                note_finish(cx, &mut pump.tap.finish_reasons);
                settle(self.budgets, &mut a, facts, ok, pump.tap.usage(), pump.tap.text_bytes, cx).await;
                // Kept only when complete and successful: the provider's
                // last event came, with no error event, nothing malformed, no cut.
                if let (Some(r), Some(rec)) = (recorder.take(), pump.rec.take()) {
                    if pump.failed.is_none() && pump.tap.terminal && !pump.tap.error_event && !pump.tap.malformed {
                        let ct = src.header().headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
                        Box::pin(r.stream(ct, rec, pump.tap.usage())).await;
                    }
                }
            }
            // A clean end is always written (it ends the body); a cut
            // stream's tail is an incomplete event and not passed on.
            let end_clean = pump.ended && pump.failed.is_none();
            let write = end_clean || (!pump.ended && !out.is_empty());
            if write && session.write_response_body(Some(out), end_clean).await.is_err() {
                if !pump.ended {
                    metrics::stream_error("client_closed");
                }
                cx.trail.error = Some("client_closed".into());
                break;
            }
            if last {
                break;
            }
        }
        self.close(session, &mut pump, &a, cx).await;
        cx.upstream_end = Some(Instant::now());
        if !pump.settled {
            // The client went away mid-stream: count what was produced.
            note_finish(cx, &mut pump.tap.finish_reasons);
            settle(self.budgets, &mut a, facts, ok, pump.tap.usage(), pump.tap.text_bytes, cx).await;
        }
        if !a.is_hit() {
            cx.upstream = Some(src.elapsed());
        }
        src.finish(self.connector).await;
        Ok(())
    }

    /// After the stream: an upstream error event is counted; a stream that
    /// failed after it was committed ends with an error event in the
    /// client's dialect, and counts against the model's breaker.
    async fn close(&self, session: &mut Session, pump: &mut Pump, a: &Answering<'_, '_>, cx: &mut Ctx) {
        if pump.tap.error_event {
            metrics::stream_error("upstream_error_event");
            cx.trail.error = Some("upstream_error_event".into());
        }
        let Some((reason, why)) = pump.failed.take() else { return };
        metrics::stream_error(reason);
        if reason != "shutdown" {
            self.health.record(a.attempt.model_label(), &a.provider.name, &a.breaker, Err(reason), Instant::now());
        }
        tracing::warn!(model = a.attempt.model_label(), reason, error = %why, "upstream stream failed after the response started");
        cx.trail.error = Some(reason.to_string());
        let err = GatewayError::new(
            502,
            ErrorKind::Upstream,
            reason,
            format!("the answer from {} broke off: {why}", a.attempt.shown(cx.rec.requested_model.as_deref())),
        );
        let _ = session.write_response_body(Some(stream_error_event(cx.dialect, &err)), true).await;
    }
}

/// Resolves once the client has closed its connection (HTTP/1: the read
/// side ends or fails; HTTP/2: it reset the stream); pends while it is
/// there. The request body was read before, so anything read now is a
/// close (or, on a pipelining HTTP/1 connection, the next request, which
/// Pingora keeps for it and then this pends). Cancel-safe: dropping it
/// mid-read loses nothing.
async fn client_gone(session: &mut Session) {
    if session.as_downstream_mut().read_body_or_idle(true).await.is_ok() {
        std::future::pending::<()>().await;
    }
}

/// A traced stream's finish reasons, for its spans.
fn note_finish(cx: &mut Ctx, reasons: &mut Vec<String>) {
    if let Some(t) = cx.trail.trace.as_mut().filter(|t| t.sampled) {
        t.finish_reasons = std::mem::take(reasons);
    }
}
