//! Input-token estimates for routing (context guard, `match.tokens`).
//!
//! - OpenAI models (by id: gpt-4o*, gpt-4.1*, gpt-5*, o1/o3/o4*, gpt-4*,
//!   gpt-3.5*): the model's real tokenizer (o200k_base or cl100k_base),
//!   exact for text.
//! - Every other model: the o200k_base count × 1.2. Claude's and Gemini's
//!   tokenizers produce more tokens than o200k for the same text; the 20 %
//!   margin keeps the context guard on the safe side.
//!
//! A request is counted once per BPE family it needs (usually once), and
//! each candidate model's context check uses its own family and margin.
//!
//! Counted: the text of every message and system prompt, tool definitions
//! (as their JSON text), 4 tokens per message plus 3 for the reply primer,
//! and 1,000 tokens per image. Base64 image data is never tokenized.

use serde_json::Value;
use std::sync::OnceLock;
use tiktoken_rs::tokenizer::{get_tokenizer, Tokenizer};

use super::bpe::Bpe;

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

/// The BPE a count is made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    O200k = 0,
    Cl100k = 1,
}

/// The tokenizer family for a model id, and whether it is that model's own
/// tokenizer (else the count is approximated from o200k).
pub fn family(model: Option<&str>) -> (Family, bool) {
    match model.and_then(get_tokenizer) {
        Some(Tokenizer::O200kBase | Tokenizer::O200kHarmony) => (Family::O200k, true),
        Some(Tokenizer::Cl100kBase) => (Family::Cl100k, true),
        _ => (Family::O200k, false),
    }
}

fn bpe(f: Family) -> Option<&'static Bpe> {
    static LOADED: [OnceLock<Option<Bpe>>; 2] = [OnceLock::new(), OnceLock::new()];
    LOADED[f as usize]
        .get_or_init(|| {
            let bpe = match f {
                Family::O200k => Bpe::o200k(),
                Family::Cl100k => Bpe::cl100k(),
            };
            // Reading the vocabulary out of tiktoken's tables freed them;
            // return that from this thread, which may not allocate again
            // for a long time.
            crate::memory::release_freed();
            bpe.map_err(|e| tracing::error!(error = %e, "cannot load the tokenizer; token counts are estimated at 4 bytes a token")).ok()
        })
        .as_ref()
}

/// Load the vocabularies `model_ids` count with (o200k always: every
/// model without its own is approximated from it), so that no request
/// waits for a load: building a table takes about half a second, and a
/// request that needed it would hold its worker thread (and every request
/// on it) that long. Called once at start, on a thread of its own; a count
/// that comes first waits for the load in progress rather than starting
/// another.
pub fn preload<'a>(model_ids: impl IntoIterator<Item = &'a str>) {
    bpe(Family::O200k);
    if model_ids.into_iter().any(|id| family(Some(id)).0 == Family::Cl100k) {
        bpe(Family::Cl100k);
    }
}

/// Scale a raw count for the model: exact, or with the safety margin.
pub fn scaled(count: u64, exact: bool) -> Tokens {
    Tokens { count: if exact { count } else { (count as f64 * OTHER_MODEL_FACTOR).ceil() as u64 }, exact }
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
            // Gemini: {"inlineData": …} / {"fileData": …} parts.
            if o.get("type").and_then(Value::as_str).is_some_and(|t| IMAGE_TYPES.contains(&t)) || o.contains_key("inlineData") || o.contains_key("fileData") {
                return 1;
            }
            o.iter().filter(|(k, _)| !SKIP_KEYS.contains(&k.as_str())).map(|(_, x)| collect(x, out)).sum()
        }
        _ => 0,
    }
}

/// Count the input tokens of a request body with `family`'s BPE (text,
/// framing and images; no margin).
pub fn count(body: &JsonBody, api: Api, family: Family) -> u64 {
    let mut text = String::new();
    let mut images = 0;
    let mut messages = 0u64;
    let fields: &[&str] = match api {
        Api::ChatCompletions | Api::Messages => &["messages", "system"],
        Api::Responses => &["input", "instructions"],
        Api::Completions => &["prompt"],
        Api::Embeddings => &["input"],
        Api::GenerateContent => &["contents", "systemInstruction"],
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
    let framing = if matches!(api, Api::ChatCompletions | Api::Messages | Api::Responses | Api::GenerateContent) { messages * PER_MESSAGE + PRIMER } else { 0 };
    bpe(family).map_or(text.len().div_ceil(4), |b| b.count(&text)) as u64 + framing + images * PER_IMAGE
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
        let n = count(&b, Api::ChatCompletions, Family::O200k);
        assert_eq!(n, 3 + 4 + 3);
        assert_eq!(family(Some("gpt-4o")), (Family::O200k, true));
        assert_eq!(family(Some("gpt-4")), (Family::Cl100k, true));
        assert_eq!(family(Some("claude-3-5-haiku-20241022")), (Family::O200k, false));
        assert_eq!(scaled(n, false), Tokens { count: 12, exact: false });
    }

    #[test]
    fn images_count_flat_and_base64_is_not_tokenized() {
        let b = body(
            r#"{"messages":[{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}]}]}"#,
        );
        let n = count(&b, Api::ChatCompletions, Family::O200k);
        assert!(n > 1_000 && n < 1_020, "{n}");
    }
}
