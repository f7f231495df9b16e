//! OpenTelemetry traces: one SERVER span per client request and one CLIENT
//! span per upstream try, exported over OTLP/HTTP (protobuf) with the
//! official `opentelemetry-otlp` exporter.
//!
//! The request path only records: [`Trace::start`] reads the client's W3C
//! `traceparent` (its trace continues through modelgate) or starts a trace
//! and samples it by `telemetry.sample_ratio`; the attempt loop notes each
//! try ([`Trace::begin_try`], which also gives the `traceparent` sent
//! upstream) and how it ended; `Ctx::account` hands the finished record to
//! [`emit`], a non-blocking `try_send` on a bounded queue (full: the spans
//! are dropped and counted in `modelgate_trace_spans_dropped_total`).
//! Building the spans from the record, batching and exporting happen in
//! the telemetry background service (`export`), never on the request path.
//! With `telemetry:` off, a request pays one branch.
//!
//! Spans carry what the access log carries (GenAI semantic-convention
//! attributes plus `modelgate.*`), never prompt or completion text.
//!
//! - `spans`: a finished request → its `SpanData` (names, attributes);
//! - `export`: the background service, batching and the OTLP exporter
//!   over Pingora's connector.

mod export;
pub mod spans;

use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use tokio::sync::mpsc;

use crate::accesslog::Record;
use crate::config::{Provider, Telemetry};
use crate::dialect::Dialect;

pub use export::{flush, Service};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// A request's trace: its ids, whether it is recorded, and its tries.
#[derive(Debug)]
pub struct Trace {
    pub trace_id: TraceId,
    /// The request's own (SERVER) span.
    pub span_id: SpanId,
    /// The client's span, from its `traceparent`.
    pub parent: Option<SpanId>,
    /// Recorded and exported (sampled); an unsampled trace still sends
    /// `traceparent` upstream, with the flag off.
    pub sampled: bool,
    /// The upstream tries (only recorded when sampled).
    pub tries: Vec<Try>,
    /// Why the plan moved on to the model tried next (set by the attempt
    /// loop; taken by the next try).
    pub moved: Option<&'static str>,
    /// The last such reason (the request span's `modelgate.fallback_reason`).
    pub fallback: Option<&'static str>,
    /// Why the served answer ended, in the provider's words
    /// (`gen_ai.response.finish_reasons`).
    pub finish_reasons: Vec<String>,
}

/// One upstream try.
#[derive(Debug)]
pub struct Try {
    pub span_id: SpanId,
    /// The model as configured (or as the client named an unknown one).
    pub model: String,
    /// The model id sent upstream.
    pub model_id: Option<String>,
    pub provider: String,
    pub kind: Dialect,
    pub host: String,
    pub port: u16,
    pub started: Instant,
    /// `None` for the try that served: it lasts until its response is
    /// relayed.
    pub ended: Option<Instant>,
    pub status: Option<u16>,
    /// Why it failed (the attempt metrics' reason label).
    pub error: Option<&'static str>,
    /// Why the plan moved to this model.
    pub fallback: Option<&'static str>,
}

/// Random ids (the SDK's generator: a thread-local fast RNG).
fn ids() -> RandomIdGenerator {
    RandomIdGenerator::default()
}

impl Trace {
    /// The trace of a request with head `headers`: the client's trace when
    /// it sent a valid `traceparent` (its sampled flag decides), else a new
    /// one sampled by `cfg.sample_ratio`.
    pub fn start(cfg: &Telemetry, headers: &HeaderMap) -> Trace {
        let (trace_id, parent, sampled) = match headers.get(TRACEPARENT).and_then(|v| parse_traceparent(v.as_bytes())) {
            Some((t, s, sampled)) => (t, Some(s), sampled),
            None => {
                let t = ids().new_trace_id();
                (t, None, ratio_sampled(t, cfg.sample_ratio))
            }
        };
        Trace { trace_id, span_id: ids().new_span_id(), parent, sampled, tries: Vec::new(), moved: None, fallback: None, finish_reasons: Vec::new() }
    }

    /// The trace id as 32 hex digits (the access log's `trace_id`, the
    /// `x-modelgate-trace-id` header).
    pub fn id_hex(&self) -> String {
        hex::encode(self.trace_id.to_bytes())
    }

    /// A try begins: record it (sampled traces) and return the
    /// `traceparent` that carries its span to the provider.
    pub fn begin_try(&mut self, model: String, model_id: Option<&str>, provider: &Provider) -> HeaderValue {
        let span_id = ids().new_span_id();
        let fallback = self.moved.take();
        if fallback.is_some() {
            self.fallback = fallback;
        }
        if self.sampled {
            self.tries.push(Try {
                span_id,
                model,
                model_id: model_id.map(str::to_string),
                provider: provider.name.clone(),
                kind: provider.kind,
                host: provider.endpoint.host.clone(),
                port: provider.endpoint.port,
                started: Instant::now(),
                ended: None,
                status: None,
                error: None,
                fallback,
            });
        }
        traceparent(self.trace_id, span_id, self.sampled)
    }

    /// The try in hand ended: with a response the loop accepted (`error`
    /// `None`: it is relayed, and ends with the relay) or a failure.
    pub fn end_try(&mut self, status: Option<u16>, error: Option<&'static str>) {
        if let Some(t) = self.tries.last_mut() {
            t.status = status;
            t.error = error;
            if error.is_some() {
                t.ended = Some(Instant::now());
            }
        }
    }
}

/// A W3C `traceparent` value: `00-<trace id>-<span id>-<flags>`.
pub fn traceparent(trace: TraceId, span: SpanId, sampled: bool) -> HeaderValue {
    let mut b = [0u8; 55];
    b[..3].copy_from_slice(b"00-");
    let _ = hex::encode_to_slice(trace.to_bytes(), &mut b[3..35]);
    b[35] = b'-';
    let _ = hex::encode_to_slice(span.to_bytes(), &mut b[36..52]);
    b[52..55].copy_from_slice(if sampled { b"-01" } else { b"-00" });
    HeaderValue::from_bytes(&b).unwrap_or(HeaderValue::from_static("00-00000000000000000000000000000000-0000000000000000-00"))
}

/// The trace id, parent span id and sampled flag of a `traceparent` value;
/// `None` when it is not one (W3C Trace Context: version `ff` and all-zero
/// ids are invalid; a later version may append fields after a `-`).
pub fn parse_traceparent(v: &[u8]) -> Option<(TraceId, SpanId, bool)> {
    if v.len() < 55 || (v.len() > 55 && (v[..2] == *b"00" || v[55] != b'-')) {
        return None;
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' || v[..2] == *b"ff" {
        return None;
    }
    let lower_hex = |s: &[u8]| s.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
    if !lower_hex(&v[..2]) || !lower_hex(&v[3..35]) || !lower_hex(&v[36..52]) || !lower_hex(&v[53..55]) {
        return None;
    }
    let mut t = [0u8; 16];
    let mut s = [0u8; 8];
    let mut f = [0u8; 1];
    hex::decode_to_slice(&v[3..35], &mut t).ok()?;
    hex::decode_to_slice(&v[36..52], &mut s).ok()?;
    hex::decode_to_slice(&v[53..55], &mut f).ok()?;
    let (trace, span) = (TraceId::from_bytes(t), SpanId::from_bytes(s));
    if trace == TraceId::INVALID || span == SpanId::INVALID {
        return None;
    }
    Some((trace, span, f[0] & 1 == 1))
}

/// The SDK's `TraceIdRatioBased` rule: the trace id's low 63 bits below
/// `ratio` × 2^63 (so every service with the same ratio keeps the same
/// traces).
fn ratio_sampled(t: TraceId, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
    let b = t.to_bytes();
    let low = u64::from_be_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]) >> 1;
    low < bound
}

/// A request as it was accounted for: what its spans are built from.
pub struct Finished {
    pub trace: Box<Trace>,
    pub rec: Record,
    pub started: Instant,
    /// When the served try's response was fully relayed.
    pub upstream_end: Option<Instant>,
    /// The same moment on both clocks (spans carry wall-clock times).
    pub now: Instant,
    pub now_wall: SystemTime,
}

/// Finished requests waiting for the telemetry service; a flush request.
enum Msg {
    Request(Box<Finished>),
    Flush(tokio::sync::oneshot::Sender<()>),
}

static QUEUE: OnceLock<mpsc::Sender<Msg>> = OnceLock::new();

/// Hand a finished (sampled) request to the telemetry service without
/// waiting; a full queue drops its spans and counts them.
pub fn emit(f: Finished) {
    let Some(tx) = QUEUE.get() else { return };
    let spans = 1 + f.trace.tries.len() as u64;
    if tx.try_send(Msg::Request(Box::new(f))).is_err() {
        crate::metrics::trace_spans_dropped("queue_full", spans);
    }
}

/// Open the process's span queue (once, `capacity` requests); the receiver
/// goes to the telemetry [`Service`]. `None` when it was opened before.
pub fn channel(capacity: usize) -> Option<export::Receiver> {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    QUEUE.set(tx).ok().map(|_| export::Receiver(rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_what_w3c_rejects() {
        let v = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (t, s, sampled) = parse_traceparent(v).unwrap();
        assert!(sampled);
        assert_eq!(traceparent(t, s, true).as_bytes(), v);
        assert!(!parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap().2);
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
            b"garbage",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{}", String::from_utf8_lossy(bad));
        }
        // A later version may append fields.
        assert!(parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-whatever").is_some());
    }

    #[test]
    fn ratio_sampling_keeps_about_the_ratio() {
        let kept = (0..10_000).filter(|_| ratio_sampled(ids().new_trace_id(), 0.25)).count();
        assert!((2_000..3_000).contains(&kept), "{kept}");
        assert!(ratio_sampled(ids().new_trace_id(), 1.0));
        assert!(!ratio_sampled(ids().new_trace_id(), 0.0));
    }
}
