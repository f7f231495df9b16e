//! Token usage as providers report it, normalised, and its cost.
//!
//! Providers count cached input differently: OpenAI's `prompt_tokens`
//! includes cached tokens, Anthropic's `input_tokens` excludes cache reads
//! and writes. [`Usage`] always holds disjoint counts so cost is a plain sum.

use serde::Deserialize;

use crate::config::Prices;
use crate::dialect::Dialect;

/// Disjoint token counts of one request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens billed at the full input price.
    pub input: u64,
    /// Input tokens read from the provider's prompt cache.
    pub cached_input: u64,
    /// Input tokens written to the prompt cache (Anthropic).
    pub cache_write: u64,
    pub output: u64,
}

impl Usage {
    /// Cost in USD at `prices` (USD per million tokens).
    pub fn cost_usd(&self, p: &Prices) -> f64 {
        (self.input as f64 * p.input_usd_per_mtok
            + self.cached_input as f64 * p.cached_input_usd_per_mtok
            + self.cache_write as f64 * p.cache_write_usd_per_mtok
            + self.output as f64 * p.output_usd_per_mtok)
            / 1_000_000.0
    }

    pub fn total_input(&self) -> u64 {
        self.input + self.cached_input + self.cache_write
    }
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub struct Details {
    pub cached_tokens: Option<u64>,
}

/// The union of the usage objects of every dialect's JSON and SSE events.
/// Fields seen later override earlier ones (Anthropic's `message_delta`
/// carries the final cumulative counts).
#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub struct RawUsage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub prompt_tokens_details: Option<Details>,
    pub input_tokens_details: Option<Details>,
    pub cache_read_input_tokens: Option<u64>,
    pub cache_creation_input_tokens: Option<u64>,
    /// Gemini `usageMetadata` (prompt includes cached tokens; thoughts are
    /// billed as output).
    #[serde(rename = "promptTokenCount")]
    pub prompt_token_count: Option<u64>,
    #[serde(rename = "candidatesTokenCount")]
    pub candidates_token_count: Option<u64>,
    #[serde(rename = "cachedContentTokenCount")]
    pub cached_content_token_count: Option<u64>,
    #[serde(rename = "thoughtsTokenCount")]
    pub thoughts_token_count: Option<u64>,
    #[serde(rename = "toolUsePromptTokenCount")]
    pub tool_use_prompt_token_count: Option<u64>,
}

impl RawUsage {
    pub fn merge(&mut self, later: &RawUsage) {
        macro_rules! take {
            ($($f:ident),*) => { $( if later.$f.is_some() { self.$f = later.$f; } )* };
        }
        take!(
            prompt_tokens,
            completion_tokens,
            input_tokens,
            output_tokens,
            prompt_tokens_details,
            input_tokens_details,
            cache_read_input_tokens,
            cache_creation_input_tokens,
            prompt_token_count,
            candidates_token_count,
            cached_content_token_count,
            thoughts_token_count,
            tool_use_prompt_token_count
        );
    }

    pub fn is_empty(&self) -> bool {
        self.prompt_tokens.is_none()
            && self.input_tokens.is_none()
            && self.output_tokens.is_none()
            && self.completion_tokens.is_none()
            && self.prompt_token_count.is_none()
            && self.candidates_token_count.is_none()
    }

    /// In disjoint counts, as `dialect` reports usage.
    pub fn normalize(&self, dialect: Dialect) -> Usage {
        dialect.spec().usage(self)
    }
}

/// Text a stream event adds to the answer (for estimating the output of a
/// stream that ends without usage).
#[derive(Debug, Default, Deserialize)]
pub struct ChoiceDelta {
    pub delta: Option<OpenAiDelta>,
    /// Why the choice ended (chunks and whole answers).
    pub finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct OpenAiDelta {
    pub content: Option<TextLen>,
    pub reasoning_content: Option<TextLen>,
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// A JSON string read only for its length (its text decoded, in bytes):
/// nothing is copied or allocated.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TextLen(pub u64);

impl<'de> Deserialize<'de> for TextLen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = TextLen;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TextLen, E> {
                Ok(TextLen(v.len() as u64))
            }
        }
        d.deserialize_str(V)
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ToolCallDelta {
    pub function: Option<FunctionDelta>,
}

#[derive(Debug, Default, Deserialize)]
pub struct FunctionDelta {
    pub arguments: Option<TextLen>,
}

/// Anthropic `content_block_delta.delta` or a Responses `*.delta` string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum EventDelta {
    Text(TextLen),
    /// `stop_reason`: Anthropic `message_delta`.
    Block {
        text: Option<TextLen>,
        partial_json: Option<TextLen>,
        thinking: Option<TextLen>,
        stop_reason: Option<String>,
    },
}

/// A Gemini candidate: its text and whether it is finished.
#[derive(Debug, Default, Deserialize)]
pub struct Candidate {
    #[serde(rename = "finishReason")]
    pub finish_reason: Option<String>,
    pub content: Option<CandidateContent>,
}

#[derive(Debug, Default, Deserialize)]
pub struct CandidateContent {
    #[serde(default)]
    pub parts: Vec<CandidatePart>,
}

#[derive(Debug, Default, Deserialize)]
pub struct CandidatePart {
    pub text: Option<TextLen>,
}

/// The parts of a JSON body or SSE event that carry usage, in any dialect:
/// top-level `usage` (OpenAI chat/completions/embeddings, Anthropic
/// `message_delta` and non-streamed messages, Responses JSON), `message.usage`
/// (Anthropic `message_start`), `response.usage` (Responses stream events),
/// `usageMetadata` (Gemini).
#[derive(Debug, Default, Deserialize)]
pub struct UsageCarrier {
    // (Usage boxed: most events carry none, and four unboxed would make
    // every parsed event about a kilobyte to fill and move.)
    pub usage: Option<Box<RawUsage>>,
    #[serde(rename = "usageMetadata")]
    pub usage_metadata: Option<Box<RawUsage>>,
    /// Gemini chunks.
    pub candidates: Option<Vec<Candidate>>,
    pub message: Option<Box<Nested>>,
    pub response: Option<Box<Nested>>,
    /// Present on OpenAI chunks; empty on the usage-only final chunk.
    pub choices: Option<Vec<ChoiceDelta>>,
    /// Anthropic and Responses event type.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub delta: Option<EventDelta>,
    /// Anthropic whole answers.
    pub stop_reason: Option<String>,
    /// OpenAI and Gemini error events (`{"error": {…}}`).
    pub error: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Nested {
    pub usage: Option<Box<RawUsage>>,
}

impl UsageCarrier {
    pub fn parse(json: &[u8]) -> Option<Self> {
        // UTF-8 checked once: parsing a `&str` does not check each string.
        serde_json::from_str(std::str::from_utf8(json).ok()?).ok()
    }

    /// Bytes of answer text (content, reasoning, tool arguments) it adds.
    pub fn text_bytes(&self) -> u64 {
        let len = |s: &Option<TextLen>| s.map_or(0, |s| s.0);
        let choices: u64 = self
            .choices
            .iter()
            .flatten()
            .filter_map(|c| c.delta.as_ref())
            .map(|d| {
                len(&d.content)
                    + len(&d.reasoning_content)
                    + d.tool_calls.iter().flatten().filter_map(|t| t.function.as_ref()).map(|f| len(&f.arguments)).sum::<u64>()
            })
            .sum();
        let delta = match &self.delta {
            Some(EventDelta::Text(t)) => t.0,
            Some(EventDelta::Block { text, partial_json, thinking, .. }) => len(text) + len(partial_json) + len(thinking),
            None => 0,
        };
        let gemini: u64 = self.candidates.iter().flatten().filter_map(|c| c.content.as_ref()).flat_map(|c| &c.parts).map(|p| len(&p.text)).sum();
        choices + delta + gemini
    }

    /// Whether this event reports an error (Anthropic `type: error`,
    /// OpenAI / Gemini `{"error": …}`, Responses `error` / `response.failed`).
    pub fn is_error(&self) -> bool {
        self.error.is_some() || matches!(self.kind.as_deref(), Some("error" | "response.failed"))
    }

    /// Why the answer (or its choices) ended, in the provider's words:
    /// OpenAI `finish_reason`, Anthropic `stop_reason`, Gemini
    /// `finishReason`.
    pub fn finish_reasons(&self) -> impl Iterator<Item = &str> {
        let block = match &self.delta {
            Some(EventDelta::Block { stop_reason, .. }) => stop_reason.as_deref(),
            _ => None,
        };
        let choices = self.choices.iter().flatten().filter_map(|c| c.finish_reason.as_deref());
        let gemini = self.candidates.iter().flatten().filter_map(|c| c.finish_reason.as_deref());
        choices.chain(gemini).chain(self.stop_reason.as_deref()).chain(block)
    }

    /// All usage objects it carries, outermost last.
    pub fn usages(&self) -> impl Iterator<Item = &RawUsage> {
        [
            self.message.as_ref().and_then(|m| m.usage.as_deref()),
            self.response.as_ref().and_then(|r| r.usage.as_deref()),
            self.usage.as_deref(),
            self.usage_metadata.as_deref(),
        ]
        .into_iter()
        .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRICES: Prices = Prices { input_usd_per_mtok: 2.5, output_usd_per_mtok: 10.0, cached_input_usd_per_mtok: 1.25, cache_write_usd_per_mtok: 3.125 };

    #[test]
    fn openai_cached_tokens_are_part_of_prompt_tokens() {
        let c = UsageCarrier::parse(br#"{"usage":{"prompt_tokens":1000,"completion_tokens":200,"prompt_tokens_details":{"cached_tokens":400}}}"#).unwrap();
        let u = c.usage.unwrap().normalize(Dialect::OpenAi);
        assert_eq!(u, Usage { input: 600, cached_input: 400, cache_write: 0, output: 200 });
        // 600×2.5 + 400×1.25 + 200×10 = 1500 + 500 + 2000 = 4000 per Mtok
        assert!((u.cost_usd(&PRICES) - 0.004).abs() < 1e-12);
    }

    #[test]
    fn anthropic_stream_usage_merges_start_and_delta() {
        let start = UsageCarrier::parse(br#"{"type":"message_start","message":{"usage":{"input_tokens":50,"cache_read_input_tokens":10,"cache_creation_input_tokens":5,"output_tokens":1}}}"#).unwrap();
        let delta = UsageCarrier::parse(br#"{"type":"message_delta","usage":{"output_tokens":42}}"#).unwrap();
        let mut raw = RawUsage::default();
        for u in start.usages().chain(delta.usages()) {
            raw.merge(u);
        }
        assert_eq!(raw.normalize(Dialect::Anthropic), Usage { input: 50, cached_input: 10, cache_write: 5, output: 42 });
    }

    #[test]
    fn gemini_usage_metadata_counts_cached_inside_prompt_and_thoughts_as_output() {
        let c = UsageCarrier::parse(br#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hi"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":1200,"candidatesTokenCount":300,"cachedContentTokenCount":200,"thoughtsTokenCount":50,"totalTokenCount":1550}}"#).unwrap();
        assert!(Dialect::Gemini.spec().is_terminal(&c));
        assert_eq!(c.text_bytes(), 2);
        let u = c.usages().last().unwrap().normalize(Dialect::Gemini);
        assert_eq!(u, Usage { input: 1000, cached_input: 200, cache_write: 0, output: 350 });
        let first = UsageCarrier::parse(br#"{"candidates":[{"content":{"parts":[{"text":"Hi"}]}}],"usageMetadata":{"promptTokenCount":9}}"#).unwrap();
        assert!(!Dialect::Gemini.spec().is_terminal(&first));
    }

    #[test]
    fn responses_api_usage_is_nested_in_response() {
        let c = UsageCarrier::parse(
            br#"{"type":"response.completed","response":{"usage":{"input_tokens":7,"output_tokens":3,"input_tokens_details":{"cached_tokens":2}}}}"#,
        )
        .unwrap();
        let u = c.usages().next().unwrap().normalize(Dialect::OpenAi);
        assert_eq!(u, Usage { input: 5, cached_input: 2, cache_write: 0, output: 3 });
    }
}
