//! The relay: an accepted answer to the client, translated when the
//! provider speaks another dialect, with its spend settled
//! ([`settle`]) before the last bytes go out.
//!
//! It reads from a [`Source`]: a live upstream [`Exchange`], or anything
//! else that can replay a response (a cached answer, a canned one), which
//! then goes through the same relay, translation and accounting.

mod settle;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::connectors::http::Connector;
use pingora::http::ResponseHeader;
use pingora_proxy::Session;

use crate::budget::{Budgets, Hold};
use crate::config::{Breaker, Provider, Snapshot};
use crate::dialect::sse::StreamTap;
use crate::dialect::{Dialect, ErrorKind, GatewayError};
use crate::drain::AbortSignal;
use crate::metrics;
use crate::policy::{Attempt, Facts};
use crate::proxy::ctx::{Ctx, Stop};
use crate::translate::{self, Wire};
use crate::upstream::attempts::Served;
use crate::upstream::health::Health;
use crate::upstream::request::internal;
use crate::upstream::retry::Fetched;
use crate::upstream::{AttemptError, Exchange};
use crate::usage::UsageCarrier;

pub use settle::settle;

/// Response headers never relayed as they are.
const DROP_RESPONSE: &[&str] = &["content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"];

/// Where a relayed response's bytes come from.
#[async_trait]
pub trait Source: Send {
    fn header(&self) -> &ResponseHeader;
    /// The next piece of the body; `None` at its end.
    async fn chunk(&mut self) -> Result<Option<Bytes>, AttemptError>;
    /// How long the exchange has run.
    fn elapsed(&self) -> Duration;
    /// Done with it (a live exchange goes back to the connection pool when
    /// it was read to the end).
    async fn finish(self: Box<Self>, connector: &Connector);
}

#[async_trait]
impl Source for Exchange {
    fn header(&self) -> &ResponseHeader {
        &self.header
    }
    async fn chunk(&mut self) -> Result<Option<Bytes>, AttemptError> {
        Exchange::chunk(self).await
    }
    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
    async fn finish(self: Box<Self>, connector: &Connector) {
        Exchange::finish(*self, connector).await
    }
}

/// A response held in memory (a cached or canned answer).
pub struct Canned {
    header: ResponseHeader,
    chunks: VecDeque<Bytes>,
    started: Instant,
}

impl Canned {
    pub fn new(header: ResponseHeader, chunks: impl IntoIterator<Item = Bytes>) -> Self {
        Canned { header, chunks: chunks.into_iter().collect(), started: Instant::now() }
    }
}

#[async_trait]
impl Source for Canned {
    fn header(&self) -> &ResponseHeader {
        &self.header
    }
    async fn chunk(&mut self) -> Result<Option<Bytes>, AttemptError> {
        Ok(self.chunks.pop_front())
    }
    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
    async fn finish(self: Box<Self>, _connector: &Connector) {}
}

/// An accepted response: read whole (JSON), or a stream whose first event
/// has been read.
pub enum Response {
    Whole { src: Box<dyn Source>, body: Bytes },
    Stream { src: Box<dyn Source>, first: Bytes },
}

impl From<Fetched> for Response {
    fn from(f: Fetched) -> Self {
        match f {
            Fetched::Body { ex, body } => Response::Whole { src: Box::new(ex), body },
            Fetched::Stream { ex, first } => Response::Stream { src: Box::new(ex), first },
        }
    }
}

/// The try being answered and its reservation.
pub struct Answering<'a, 's> {
    pub attempt: Attempt<'s>,
    pub provider: &'s Provider,
    pub hold: Hold,
    pub snap: &'a Snapshot,
    /// A model call (JSON body): accounted and written to the ledger.
    pub model_call: bool,
    pub translated: Option<(Wire, translate::Chat)>,
    pub drop_usage_only: bool,
    pub breaker: Breaker,
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
            drop_usage_only: s.drop_usage_only,
            breaker: s.breaker,
        };
        (a, s.fetched.into())
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
            Response::Whole { src, body } => self.whole(session, src, body, a, facts, cx).await,
            Response::Stream { src, first } => self.stream(session, src, first, a, facts, cx, abort).await,
        }
    }

    /// The client's response header: the provider's minus hop-by-hop ones,
    /// plus modelgate's.
    fn head(&self, src: &dyn Source, a: &Answering<'_, '_>, cx: &mut Ctx) -> Result<ResponseHeader, GatewayError> {
        let header = src.header();
        let status = header.status.as_u16();
        let mut resp = ResponseHeader::build(status, None).map_err(internal)?;
        for (name, value) in header.headers.iter() {
            if !DROP_RESPONSE.contains(&name.as_str()) {
                resp.append_header(name.clone(), value.clone()).map_err(internal)?;
            }
        }
        cx.tag(&mut resp, Some((&a.attempt, a.provider)))?;
        cx.rec.status = status;
        Ok(resp)
    }

    /// A whole (non-streamed) response, translated when needed; its usage
    /// is settled before it is sent.
    async fn whole(
        &self,
        session: &mut Session,
        src: Box<dyn Source>,
        mut body: Bytes,
        mut a: Answering<'_, '_>,
        facts: &Facts<'_>,
        cx: &mut Ctx,
    ) -> Result<(), Stop> {
        let status = src.header().status.as_u16();
        let ok = (200..300).contains(&status);
        let mut resp = self.head(src.as_ref(), &a, cx)?;
        cx.upstream_end = Some(Instant::now());
        let usage = if ok { UsageCarrier::parse(&body).and_then(|c| c.usages().last().copied()) } else { None };
        // Without usage, the answer's size bounds its output.
        let text_bytes = if usage.is_none() { body.len() as u64 } else { 0 };
        if let Some(cost) = settle(self.budgets, &mut a, facts, ok, usage, text_bytes, cx).await {
            resp.insert_header("x-modelgate-cost-usd", cost.to_string()).map_err(internal)?;
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
            resp.insert_header("content-type", "application/json").map_err(internal)?;
        }
        resp.insert_header("content-length", body.len().to_string()).map_err(internal)?;
        session.write_response_header(Box::new(resp), body.is_empty()).await.map_err(|_| Stop::ClientGone)?;
        if !body.is_empty() {
            session.write_response_body(Some(body), true).await.map_err(|_| Stop::ClientGone)?;
        }
        cx.upstream = Some(src.elapsed());
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
        first: Bytes,
        mut a: Answering<'_, '_>,
        facts: &Facts<'_>,
        cx: &mut Ctx,
        abort: &mut AbortSignal,
    ) -> Result<(), Stop> {
        let ok = (200..300).contains(&src.header().status.as_u16());
        let mut resp = self.head(src.as_ref(), &a, cx)?;
        if !session.is_http2() {
            resp.insert_header("transfer-encoding", "chunked").map_err(internal)?;
        }
        if session.write_response_header(Box::new(resp), false).await.is_err() {
            // Gone before the first byte: the provider still read the input.
            settle(self.budgets, &mut a, facts, ok, None, 0, cx).await;
            return Err(Stop::ClientGone);
        }
        let mut pump = Pump::new(&a);
        let mut next = Some(Ok(Some(first)));
        loop {
            let chunk = match next.take() {
                Some(c) => c,
                None => tokio::select! {
                    c = src.chunk() => c,
                    _ = abort.fired() => Err(AttemptError::Shutdown),
                },
            };
            let (out, last) = match chunk {
                Ok(Some(c)) => {
                    let out = pump.feed(&c);
                    (out, pump.failed.is_some())
                }
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
                settle(self.budgets, &mut a, facts, ok, pump.tap.usage(), pump.tap.text_bytes, cx).await;
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
            settle(self.budgets, &mut a, facts, ok, pump.tap.usage(), pump.tap.text_bytes, cx).await;
        }
        cx.upstream = Some(src.elapsed());
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
        let err = GatewayError::new(502, ErrorKind::Upstream, reason, format!("the answer from {} broke off: {why}", a.attempt.model_label()));
        let _ = session.write_response_body(Some(stream_error_event(cx.dialect, &err)), true).await;
    }
}

/// A stream on its way through: split and observed (usage, end, errors),
/// translated when the client speaks another format.
struct Pump {
    tap: StreamTap,
    tr: Option<translate::Translator>,
    max_event: usize,
    settled: bool,
    /// The upstream ended (cleanly or not).
    ended: bool,
    /// Why the stream failed after it was committed, if it did.
    failed: Option<(&'static str, String)>,
}

impl Pump {
    fn new(a: &Answering<'_, '_>) -> Self {
        let tr = a.translated.as_ref().map(|(client, chat)| translate::Translator::new(Wire::of_provider(a.provider.kind), *client, chat));
        let tap = match tr {
            Some(_) => StreamTap::new(a.drop_usage_only).collecting(),
            None => StreamTap::new(a.drop_usage_only),
        };
        Pump { tap, tr, max_event: a.snap.limits.max_event_bytes, settled: false, ended: false, failed: None }
    }

    /// What to send the client for a piece of the upstream stream.
    fn feed(&mut self, chunk: &[u8]) -> Bytes {
        let mut out = self.tap.feed(chunk);
        if let Some(t) = self.tr.as_mut() {
            out = t.feed_data(self.tap.take_data());
        }
        if self.tap.malformed {
            self.failed = Some(("malformed", "the provider sent an event that is not valid JSON".into()));
        } else if self.tap.pending() > self.max_event {
            self.failed = Some(("event_too_large", format!("the provider sent an event larger than {} bytes (limits.max_event_bytes)", self.max_event)));
        }
        out
    }

    /// The upstream stream ended: its tail (and the client format's
    /// closing events when it ended properly), or a cut.
    fn end(&mut self) -> Bytes {
        self.ended = true;
        let mut tail = self.tap.finish();
        if let Some(t) = self.tr.as_mut() {
            // An unterminated last event is not translated (it may be cut).
            self.tap.take_data();
            let mut b = BytesMut::new();
            // Close the client's stream only when the provider's ended properly.
            if self.tap.terminal {
                b.extend_from_slice(&t.finish());
            }
            tail = b.freeze();
        }
        if !self.tap.terminal && !self.tap.error_event {
            self.failed = Some(("cut", "the provider's stream ended before the answer was complete".into()));
        }
        tail
    }
}

/// An error event that ends a stream, in the client's dialect.
fn stream_error_event(dialect: Dialect, e: &GatewayError) -> Bytes {
    Bytes::from(dialect.spec().error_event(&String::from_utf8_lossy(&e.body(dialect))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_canned_source_replays_its_header_and_chunks_in_order() {
        let header = ResponseHeader::build(200, None).unwrap();
        let mut src: Box<dyn Source> = Box::new(Canned::new(header, [Bytes::from_static(b"data: a\n\n"), Bytes::from_static(b"data: b\n\n")]));
        assert_eq!(src.header().status.as_u16(), 200);
        assert_eq!(src.chunk().await.unwrap().as_deref(), Some(&b"data: a\n\n"[..]));
        assert_eq!(src.chunk().await.unwrap().as_deref(), Some(&b"data: b\n\n"[..]));
        assert!(src.chunk().await.unwrap().is_none());
        src.finish(&Connector::new(None)).await;
    }
}
