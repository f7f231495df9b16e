//! Input-token estimates for routing (context guard, `match.tokens`).
//!
//! - OpenAI models (by id: gpt-4o*, gpt-4.1*, gpt-5*, o1/o3/o4*, gpt-4*,
//!   gpt-3.5*): the model's real tokenizer (o200k_base or cl100k_base),
//!   exact for text.
//! - Every other model: the o200k_base count × 1.2. Claude's and Gemini's
//!   tokenizers produce more tokens than o200k for the same text; the 20 %
//!   margin keeps the context guard on the safe side.
//!
//! Counted: the text of every message and system prompt, tool definitions
//! (as their JSON text), 4 tokens per message plus 3 for the reply primer,
//! and 1,000 tokens per image. Base64 image data is never tokenized.

use serde_json::Value;
use tiktoken_rs::tokenizer::{get_tokenizer, Tokenizer};
use tiktoken_rs::CoreBPE;

use crate::body::JsonBody;
use crate::dialect::Api;

const PER_MESSAGE: u64 = 4;
const PRIMER: u64 = 3;
const PER_IMAGE: u64 = 1_000;
const OTHER_MODEL_FACTOR: f64 = 1.2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tokens {
    pub count: u64,
    /// Counted with the model's own tokenizer (else approximated).
    pub exact: bool,
}

fn bpe(t: Tokenizer) -> Option<&'static CoreBPE> {
    match t {
        Tokenizer::Cl100kBase => Some(tiktoken_rs::cl100k_base_singleton()),
        Tokenizer::O200kBase | Tokenizer::O200kHarmony => Some(tiktoken_rs::o200k_base_singleton()),
        _ => None,
    }
}

/// Load the tokenizers now rather than on the first request that needs them.
pub fn warm_up() {
    let _ = tiktoken_rs::o200k_base_singleton();
    let _ = tiktoken_rs::cl100k_base_singleton();
}

/// Keys whose string values are ids, kinds or binary data, not prompt text.
const SKIP_KEYS: &[&str] = &["type", "role", "id", "tool_call_id", "tool_use_id", "cache_control", "signature", "detail", "media_type"];
const IMAGE_TYPES: &[&str] = &["image_url", "image", "input_image"];

/// Collect prompt text from a JSON tree; returns the number of images.
fn collect(v: &Value, out: &mut String) -> u64 {
    match v {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
            0
        }
        Value::Array(a) => a.iter().map(|x| collect(x, out)).sum(),
        Value::Object(o) => {
            if o.get("type").and_then(Value::as_str).is_some_and(|t| IMAGE_TYPES.contains(&t)) {
                return 1;
            }
            o.iter().filter(|(k, _)| !SKIP_KEYS.contains(&k.as_str())).map(|(_, x)| collect(x, out)).sum()
        }
        _ => 0,
    }
}

/// Estimate the input tokens of a request body for `model` (upstream id).
pub fn estimate(body: &JsonBody, api: Api, model: Option<&str>) -> Tokens {
    let mut text = String::new();
    let mut images = 0;
    let mut messages = 0u64;
    let fields: &[&str] = match api {
        Api::ChatCompletions | Api::Messages => &["messages", "system"],
        Api::Responses => &["input", "instructions"],
        Api::Completions => &["prompt"],
        Api::Embeddings => &["input"],
        Api::Other => &[],
    };
    for (i, f) in fields.iter().enumerate() {
        let Some(raw) = body.field(f) else { continue };
        let Ok(v) = serde_json::from_str::<Value>(raw.get()) else { continue };
        match &v {
            Value::Array(a) if i == 0 => messages = a.len() as u64,
            Value::String(_) if i == 0 => messages = 1,
            _ => {}
        }
        images += collect(&v, &mut text);
    }
    if let Some(tools) = body.field("tools") {
        text.push_str(tools.get());
    }
    let (bpe, exact) = match model.and_then(get_tokenizer).and_then(bpe) {
        Some(b) => (b, true),
        None => (tiktoken_rs::o200k_base_singleton(), false),
    };
    let counted = bpe.count_ordinary(&text) as u64;
    let text_tokens = if exact { counted } else { (counted as f64 * OTHER_MODEL_FACTOR).ceil() as u64 };
    let framing = if matches!(api, Api::ChatCompletions | Api::Messages | Api::Responses) { messages * PER_MESSAGE + PRIMER } else { 0 };
    Tokens { count: text_tokens + framing + images * PER_IMAGE, exact }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn body(s: &'static str) -> JsonBody {
        JsonBody::parse(Bytes::from_static(s.as_bytes())).unwrap()
    }

    #[test]
    fn openai_models_use_their_tokenizer_and_others_get_a_margin() {
        let b = body(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hello world"}]}"#);
        // "Hello world\n" is 3 o200k tokens; 1 message → 4 + 3 framing.
        let t = estimate(&b, Api::ChatCompletions, Some("gpt-4o"));
        assert_eq!(t, Tokens { count: 3 + 4 + 3, exact: true });
        let t = estimate(&b, Api::ChatCompletions, Some("claude-3-5-haiku-20241022"));
        assert_eq!(t, Tokens { count: 4 + 4 + 3, exact: false });
    }

    #[test]
    fn images_count_flat_and_base64_is_not_tokenized() {
        let b = body(r#"{"messages":[{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}]}]}"#);
        let t = estimate(&b, Api::ChatCompletions, Some("gpt-4o"));
        assert!(t.count > 1_000 && t.count < 1_020, "{t:?}");
    }
}
