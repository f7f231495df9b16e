//! Scripted answer contents per model, for the answer checks: the text a
//! model gives, a refusal, an answer cut at the output limit, an empty
//! one, or text with token log-probabilities. Set with
//! `Mock::answer(model, Answer::…)`, or per call with a request header
//! `x-mock-answer-MODEL: KIND` (MODEL: the upstream model id), which
//! clients that cannot reach the mock's API (the SDK tests) send:
//!
//! | KIND | answer |
//! | --- | --- |
//! | `text:TEXT` | TEXT, finish reason stop |
//! | `refusal` | the provider's refusal (OpenAI `refusal`, Anthropic `stop_reason: refusal`) |
//! | `truncated:TEXT` | TEXT (may be empty), stopped at the output limit |
//! | `empty` | no text |
//! | `logprobs:LP:TEXT` | TEXT, every token with log-probability LP |
//!
//! OpenAI Chat (JSON and streams), Responses (JSON and streams) and
//! Anthropic Messages (JSON and streams) answer them.

use axum::http::HeaderMap;

/// The refusal text the mock's models give.
pub const REFUSAL: &str = "I'm sorry, but I can't help with that.";

#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Text(String),
    Refusal,
    Truncated(String),
    Empty,
    Logprobs { text: String, logprob: f64 },
}

impl Answer {
    /// The answer's text (empty for a refusal).
    pub fn text(&self) -> &str {
        match self {
            Answer::Text(t) | Answer::Truncated(t) | Answer::Logprobs { text: t, .. } => t,
            Answer::Refusal | Answer::Empty => "",
        }
    }

    pub fn parse(v: &str) -> Option<Answer> {
        let (kind, rest) = v.split_once(':').map_or((v, None), |(k, r)| (k, Some(r)));
        Some(match kind {
            "text" => Answer::Text(rest?.to_string()),
            "refusal" => Answer::Refusal,
            "truncated" => Answer::Truncated(rest.unwrap_or("").to_string()),
            "empty" => Answer::Empty,
            "logprobs" => {
                let (lp, text) = rest?.split_once(':')?;
                Answer::Logprobs { text: text.to_string(), logprob: lp.parse().ok()? }
            }
            _ => return None,
        })
    }

    /// The OpenAI/Chat finish reason.
    pub fn finish(&self) -> &'static str {
        match self {
            Answer::Truncated(_) => "length",
            _ => "stop",
        }
    }

    /// Tokens for logprobs: the text split after each space.
    pub fn tokens(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = String::new();
        for c in self.text().chars() {
            cur.push(c);
            if c == ' ' {
                out.push(std::mem::take(&mut cur));
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }
}

/// The answer a request header scripts for `model`.
pub fn from_headers(headers: &HeaderMap, model: &str) -> Option<Answer> {
    headers.get(format!("x-mock-answer-{}", model.to_ascii_lowercase())).and_then(|v| v.to_str().ok()).and_then(Answer::parse)
}
