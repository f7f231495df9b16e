//! What makes a try fail and whether to try again: the retry policy
//! judges an upstream response (a status the plan retries, a 2xx JSON body
//! that is not an answer, a stream that fails before or with its first
//! event, sizes over the limits) and says how long to wait before the same
//! model is tried again (the upstream's Retry-After when short enough, else
//! exponential backoff with full jitter; the numbers are config, `retry:`).
//! A [`Failure`] keeps a typed [`Kind`].
//!
//! It never decides which model comes next (`attempts` does) and never
//! writes to the client (`relay` does).

use std::time::Duration;

use crate::upstream::Connector;
use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;

use crate::config::{Retry, SizeLimits};
use crate::dialect::sse::StreamTap;
use crate::dialect::{ErrorKind, GatewayError};
use crate::translate;
use crate::upstream::{AttemptError, Exchange};
use crate::usage::RawUsage;

/// Most of an upstream's own words a client error echoes.
const ECHO_BYTES: usize = 200;

/// Why a try failed (the `outcome` label of `modelgate_attempts_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The provider answered with a status the plan retries.
    Status(u16),
    Connect,
    ConnectTimeout,
    FirstByteTimeout,
    IdleTimeout,
    TotalTimeout,
    /// The connection failed after the request was sent (reset, closed).
    Io,
    /// A 2xx that is not an answer, or a body or event over the limits.
    InvalidBody,
    /// A stream whose first event is the provider's error event.
    StreamErrorEvent,
    /// No key may be sent to this provider.
    MissingKey,
    /// modelgate is shutting down.
    Shutdown,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Status(s) => status_class(s),
            Kind::Connect => "connect",
            Kind::ConnectTimeout => "connect_timeout",
            Kind::FirstByteTimeout => "first_byte_timeout",
            Kind::IdleTimeout => "idle_timeout",
            Kind::TotalTimeout => "total_timeout",
            Kind::Io => "io",
            Kind::InvalidBody => "invalid_body",
            Kind::StreamErrorEvent => "stream_error_event",
            Kind::MissingKey => "missing_key",
            Kind::Shutdown => "shutdown",
        }
    }

    pub fn is_timeout(self) -> bool {
        matches!(self, Kind::ConnectTimeout | Kind::FirstByteTimeout | Kind::IdleTimeout | Kind::TotalTimeout)
    }

    /// May be the request's own doing rather than the provider's: the
    /// connection was reset after the request was sent (a body the
    /// provider's parser choked on). Counts against the model's breaker only
    /// once another try of the same request succeeds.
    pub fn is_ambiguous(self) -> bool {
        self == Kind::Io
    }
}

impl From<&AttemptError> for Kind {
    fn from(e: &AttemptError) -> Kind {
        match e {
            AttemptError::Connect(_) => Kind::Connect,
            AttemptError::ConnectTimeout => Kind::ConnectTimeout,
            AttemptError::FirstByteTimeout => Kind::FirstByteTimeout,
            AttemptError::IdleTimeout => Kind::IdleTimeout,
            AttemptError::TotalTimeout => Kind::TotalTimeout,
            AttemptError::Io(_) => Kind::Io,
            AttemptError::Shutdown => Kind::Shutdown,
        }
    }
}

/// A failed try: it counts against the model and moves the plan on.
#[derive(Debug)]
pub struct Failure {
    pub kind: Kind,
    /// The status the client gets if this is the plan's last failure.
    pub status: Option<u16>,
    pub retry_after: Option<Duration>,
    pub message: String,
}

impl Failure {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        let status = match kind {
            Kind::Status(s) => Some(s),
            Kind::MissingKey => Some(401),
            _ => None,
        };
        Failure { kind, status, retry_after: None, message: message.into() }
    }

    pub fn from_attempt(e: &AttemptError) -> Self {
        Failure::new(Kind::from(e), e.to_string())
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Failure::new(Kind::InvalidBody, message)
    }

    /// What the `tried` list says of this try: the status, else the label.
    pub fn short(&self) -> String {
        self.status.filter(|_| self.kind != Kind::MissingKey).map_or_else(|| self.kind.label().to_string(), |s| s.to_string())
    }

    /// The client's answer when this was the last failure of the plan: the
    /// provider's status (else 504 for timeouts, 502 otherwise) and what
    /// was tried.
    pub fn into_error(self, tried: &str) -> GatewayError {
        let (status, kind) = match self.status {
            Some(s) => (s, translate::kind_of_status(s)),
            None if self.kind.is_timeout() => (504, ErrorKind::Timeout),
            None => (502, ErrorKind::Upstream),
        };
        let e = GatewayError::new(status, kind, self.kind.label(), format!("{}; tried: {tried}", self.message));
        match self.retry_after.filter(|_| matches!(status, 429 | 503)) {
            Some(d) => e.retry_after(d.as_secs().max(1)),
            None => e,
        }
    }
}

/// An upstream response that can be relayed.
pub enum Fetched {
    /// A whole body (JSON answers, errors passed back); `usage` as read
    /// when it was judged (a model call's 2xx answer).
    Body { ex: Exchange, body: Bytes, usage: Option<RawUsage> },
    /// A 2xx stream whose first event has been read: `tap` has split and
    /// read it, `first` is what it passed on so far.
    Stream { ex: Exchange, tap: Box<StreamTap>, first: Bytes },
}

impl Fetched {
    pub fn status(&self) -> u16 {
        match self {
            Fetched::Body { ex, .. } | Fetched::Stream { ex, .. } => ex.header().status.as_u16(),
        }
    }
}

/// The retry policy of one model on one route, with the size limits its
/// answers must keep.
pub struct RetryPolicy<'a> {
    pub retry: Retry,
    pub limits: &'a SizeLimits,
    /// A model call (its 2xx JSON must be an answer).
    pub model_call: bool,
}

impl RetryPolicy<'_> {
    pub fn max_attempts(&self) -> u32 {
        self.retry.max_attempts
    }

    /// How long to wait before try `n + 1` of the same model after this
    /// failure; `None`: move on to the next model.
    pub fn wait(&self, n: u32, f: &Failure) -> Option<Duration> {
        self.retry.wait(n, f.retry_after)
    }

    /// Read enough of an upstream response to know whether it can be
    /// relayed. A stream is committed to the client only after its first
    /// event.
    /// A stream is read through `tap` (the relay goes on with it).
    pub async fn judge(&self, mut ex: Exchange, tap: StreamTap, connector: &Connector) -> Result<Fetched, Failure> {
        let status = ex.header().status.as_u16();
        let ok = (200..300).contains(&status);
        if self.retry.on_status.contains(&status) {
            let retry_after = retry_after(ex.header());
            let body = read_body_of(&mut ex, 64 * 1024).await.unwrap_or_default();
            ex.finish(connector).await;
            let mut f = Failure::new(Kind::Status(status), excerpt(&translate::upstream_message(&body)));
            f.retry_after = retry_after;
            return Err(f);
        }
        if ok && is_sse(ex.header()) {
            return self.first_event(ex, tap, connector).await;
        }
        let max = self.limits.max_answer_bytes;
        let declared = ex.header().headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(Failure::invalid(format!("the response is larger than {max} bytes (limits.max_answer_bytes)")));
        }
        let body = read_body_of(&mut ex, max).await?;
        let mut usage = None;
        if ok && self.model_call && !is_answer(&body, &mut usage) {
            ex.finish(connector).await;
            return Err(Failure::invalid(format!(
                "the provider answered {status} with a body that is not a JSON answer: {}",
                excerpt(&String::from_utf8_lossy(&body))
            )));
        }
        Ok(Fetched::Body { ex, body, usage })
    }

    /// Read a 2xx stream up to its first event; its error event fails the try.
    async fn first_event(&self, mut ex: Exchange, mut tap: StreamTap, connector: &Connector) -> Result<Fetched, Failure> {
        let mut first = BytesMut::new();
        while tap.data_events == 0 {
            let chunk = match ex.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => return Err(Failure::invalid("the stream ended before its first event")),
                Err(e) => return Err(Failure::from_attempt(&e)),
            };
            first.extend_from_slice(&tap.feed(&chunk));
            if tap.data_events == 0 && tap.pending() > self.limits.max_event_bytes {
                return Err(Failure::invalid(format!(
                    "the stream's first event is larger than {} bytes (limits.max_event_bytes)",
                    self.limits.max_event_bytes
                )));
            }
        }
        if let Some(data) = &tap.first_error {
            ex.finish(connector).await;
            return Err(Failure::new(Kind::StreamErrorEvent, excerpt(&translate::upstream_message(data))));
        }
        Ok(Fetched::Stream { ex, tap: Box::new(tap), first: first.freeze() })
    }
}

impl Retry {
    /// How long to wait before try `n + 1` of the same model after try `n`
    /// failed: the upstream's Retry-After when given (`None` when it is over
    /// `max_retry_after`: move on instead), else exponential backoff with
    /// full jitter.
    pub fn wait(&self, n: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if let Some(ra) = retry_after {
            return (ra <= self.max_retry_after).then_some(ra);
        }
        let cap = self.backoff.saturating_mul(1 << n.saturating_sub(1).min(16)).min(self.max_backoff);
        let jitter = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), std::time::Instant::now()) as f64 / u64::MAX as f64;
        Some(cap.mul_f64(jitter))
    }
}

/// The `outcome` label of a status.
pub fn status_class(status: u16) -> &'static str {
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
            return Err(Failure::invalid(format!("the response is larger than {limit} bytes (limits.max_answer_bytes)")));
        }
        buf.extend_from_slice(&c);
    }
    Ok(buf.freeze())
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

/// A model call's 2xx body is an answer: a JSON object without `error`.
/// Its usage is read in the same parse (top-level `usage`, or Gemini's
/// `usageMetadata`: where every dialect's whole answer carries it; the
/// rest of the answer is skipped, not decoded).
fn is_answer(body: &[u8], usage: &mut Option<RawUsage>) -> bool {
    #[derive(serde::Deserialize)]
    struct Top {
        error: Option<serde::de::IgnoredAny>,
        usage: Option<RawUsage>,
        #[serde(rename = "usageMetadata")]
        usage_metadata: Option<RawUsage>,
    }
    #[derive(serde::Deserialize)]
    struct Bare {
        error: Option<serde::de::IgnoredAny>,
    }
    if let Ok(t) = serde_json::from_slice::<Top>(body) {
        *usage = t.usage_metadata.or(t.usage);
        return t.error.is_none();
    }
    // An object whose usage has an unexpected shape is still an answer.
    serde_json::from_slice::<Bare>(body).is_ok_and(|t| t.error.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_say_what_the_client_gets() {
        let e = Failure::new(Kind::FirstByteTimeout, "slow").into_error("gpt-4o: first_byte_timeout");
        assert_eq!((e.status, e.code), (504, "first_byte_timeout"));
        let mut f = Failure::new(Kind::Status(429), "busy");
        f.retry_after = Some(Duration::from_secs(3));
        let e = f.into_error("x");
        assert_eq!((e.status, e.retry_after), (429, Some(3)));
        assert_eq!(Failure::new(Kind::MissingKey, "m").short(), "missing_key");
        assert_eq!(excerpt(&"é".repeat(300)).len(), 200 + "…".len());
    }
}
