//! One cached answer ([`Answer`]): the provider's answer as it came (before
//! translation to the client's format), its usage, and where it came from;
//! whether an answer may be kept at all ([`finish_is_error`]); and its
//! byte form for Redis and the state_dir file.
//!
//! Kept before translation so a hit goes through the relay's translation
//! and accounting exactly as a live answer does. A stream is kept as the
//! pieces the stream tap passed on (complete events, the usage-only chunk
//! modelgate asked for already removed), in their order.

use bytes::Bytes;
use serde::Deserialize;

use crate::dialect::sse::{data_of, event_end};
use crate::usage::Usage;

/// The body of a cached answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A whole JSON answer.
    Whole(Bytes),
    /// A stream's events, in the pieces they were relayed in.
    Stream(Vec<Bytes>),
}

/// One cached answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub body: Body,
    /// The provider's `content-type`.
    pub content_type: String,
    /// The provider's usage (normalised): what a hit saves.
    pub usage: Usage,
    /// Unix seconds: when it was stored, and when it expires.
    pub created: u64,
    pub expires: u64,
    /// The configured model that answered (`other`) and the route: for
    /// `DELETE /admin/cache?model=…&route=…`.
    pub model: String,
    pub route: String,
}

impl Answer {
    /// Bytes of the answer itself (body and strings).
    pub fn size(&self) -> usize {
        let body = match &self.body {
            Body::Whole(b) => b.len(),
            Body::Stream(p) => p.iter().map(|b| b.len() + 16).sum(),
        };
        body + self.content_type.len() + self.model.len() + self.route.len()
    }

    /// Seconds left to live at `now` (0: expired).
    pub fn ttl_left(&self, now: u64) -> u64 {
        self.expires.saturating_sub(now)
    }

    // === byte form ===

    const MAGIC: &'static [u8; 4] = b"MGC1";

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size() + 96);
        out.extend_from_slice(Self::MAGIC);
        let pieces: Vec<&Bytes> = match &self.body {
            Body::Whole(b) => {
                out.push(0);
                vec![b]
            }
            Body::Stream(p) => {
                out.push(1);
                p.iter().collect()
            }
        };
        for n in [self.usage.input, self.usage.cached_input, self.usage.cache_write, self.usage.output, self.created, self.expires] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        for s in [&self.content_type, &self.model, &self.route] {
            put(&mut out, s.as_bytes());
        }
        out.extend_from_slice(&(pieces.len() as u32).to_le_bytes());
        for p in pieces {
            put(&mut out, p);
        }
        out
    }

    /// The answer `encode` wrote, or `None` for anything else.
    pub fn decode(b: &[u8]) -> Option<Answer> {
        let mut r = Reader(b);
        if r.take(4)? != Self::MAGIC {
            return None;
        }
        let kind = r.take(1)?[0];
        let mut n = [0u64; 6];
        for v in n.iter_mut() {
            *v = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
        }
        let content_type = String::from_utf8(r.chunk()?.to_vec()).ok()?;
        let model = String::from_utf8(r.chunk()?.to_vec()).ok()?;
        let route = String::from_utf8(r.chunk()?.to_vec()).ok()?;
        let count = u32::from_le_bytes(r.take(4)?.try_into().ok()?) as usize;
        let mut pieces = Vec::with_capacity(count.min(4096));
        for _ in 0..count {
            pieces.push(Bytes::copy_from_slice(r.chunk()?));
        }
        if !r.0.is_empty() {
            return None;
        }
        let body = match (kind, pieces.len()) {
            (0, 1) => Body::Whole(pieces.pop()?),
            (1, _) => Body::Stream(pieces),
            _ => return None,
        };
        let usage = Usage { input: n[0], cached_input: n[1], cache_write: n[2], output: n[3] };
        Some(Answer { body, content_type, usage, created: n[4], expires: n[5], model, route })
    }
}

fn put(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }

    fn chunk(&mut self) -> Option<&'a [u8]> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        self.take(n)
    }
}

/// The finish reasons any dialect reports, read from a whole answer or
/// one stream event.
#[derive(Deserialize, Default)]
struct Finish {
    choices: Option<Vec<Choice>>,
    stop_reason: Option<String>,
    delta: Option<Box<Finish>>,
    candidates: Option<Vec<Candidate>>,
    status: Option<String>,
    response: Option<Box<Finish>>,
    incomplete_details: Option<Incomplete>,
}

#[derive(Deserialize)]
struct Choice {
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Candidate {
    #[serde(rename = "finishReason")]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Incomplete {
    reason: Option<String>,
}

impl Finish {
    /// A finish that says the answer is not a good one to repeat: a
    /// content filter or safety stop (which providers apply anew), a
    /// refusal, a malformed call, a failed response.
    fn is_error(&self) -> bool {
        let openai =
            self.choices.iter().flatten().filter_map(|c| c.finish_reason.as_deref()).any(|r| !matches!(r, "stop" | "length" | "tool_calls" | "function_call"));
        let anthropic = self.stop_reason.as_deref().is_some_and(|r| !matches!(r, "end_turn" | "max_tokens" | "stop_sequence" | "tool_use" | "pause_turn"));
        let gemini = self.candidates.iter().flatten().filter_map(|c| c.finish_reason.as_deref()).any(|r| !matches!(r, "STOP" | "MAX_TOKENS"));
        let responses = self.status.as_deref().is_some_and(|s| matches!(s, "failed" | "cancelled"))
            || self.incomplete_details.as_ref().and_then(|i| i.reason.as_deref()).is_some_and(|r| r != "max_output_tokens");
        openai || anthropic || gemini || responses || self.delta.as_ref().is_some_and(|d| d.is_error()) || self.response.as_ref().is_some_and(|r| r.is_error())
    }
}

/// Whether an answer (a whole JSON body, or a stream's events) finished
/// with a reason that must not be repeated from the cache.
pub fn finish_is_error(body: &Body) -> bool {
    let judge = |data: &[u8]| serde_json::from_slice::<Finish>(data).is_ok_and(|f| f.is_error());
    match body {
        Body::Whole(b) => judge(b),
        Body::Stream(pieces) => pieces.iter().any(|p| {
            let mut at = 0;
            while let Some(len) = event_end(&p[at..], 0) {
                let data = data_of(&p[at..at + len]);
                if data.first() == Some(&b'{') && judge(&data) {
                    return true;
                }
                at += len;
            }
            false
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_survives_its_byte_form() {
        let a = Answer {
            body: Body::Stream(vec![Bytes::from_static(b"data: {\"a\":1}\n\n"), Bytes::from_static(b"data: [DONE]\n\n")]),
            content_type: "text/event-stream".into(),
            usage: Usage { input: 1, cached_input: 2, cache_write: 3, output: 4 },
            created: 10,
            expires: 20,
            model: "gpt-4o-mini".into(),
            route: "none".into(),
        };
        assert_eq!(Answer::decode(&a.encode()), Some(a.clone()));
        let w = Answer { body: Body::Whole(Bytes::from_static(b"{}")), ..a };
        let bytes = w.encode();
        assert_eq!(Answer::decode(&bytes), Some(w));
        assert_eq!(Answer::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(Answer::decode(b"junk"), None);
    }

    #[test]
    fn filtered_refused_and_failed_answers_are_not_kept() {
        let whole = |s: &'static str| finish_is_error(&Body::Whole(Bytes::from_static(s.as_bytes())));
        assert!(!whole(r#"{"choices":[{"finish_reason":"stop"}]}"#));
        assert!(!whole(r#"{"choices":[{"finish_reason":"tool_calls"}]}"#));
        assert!(whole(r#"{"choices":[{"finish_reason":"content_filter"}]}"#));
        assert!(!whole(r#"{"stop_reason":"end_turn"}"#));
        assert!(whole(r#"{"stop_reason":"refusal"}"#));
        assert!(whole(r#"{"candidates":[{"finishReason":"SAFETY"}]}"#));
        assert!(!whole(r#"{"candidates":[{"finishReason":"STOP"}]}"#));
        assert!(whole(r#"{"status":"failed"}"#));
        let stream = |s: &'static str| finish_is_error(&Body::Stream(vec![Bytes::from_static(s.as_bytes())]));
        assert!(!stream("data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n"));
        assert!(stream("data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"content_filter\"}]}\n\ndata: [DONE]\n\n"));
        assert!(stream("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"refusal\"}}\n\n"));
        assert!(stream(
            "data: {\"type\":\"response.incomplete\",\"response\":{\"status\":\"incomplete\",\"incomplete_details\":{\"reason\":\"content_filter\"}}}\n\n"
        ));
    }
}
