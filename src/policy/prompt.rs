//! What a model call's body says, read without decoding more than needed:
//! the system prompt, the last user message's text, the message count
//! (`Prompt`), Gemini's generation config, and whether structured output
//! was asked for.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::body::JsonBody;
use crate::dialect::{Api, Dialect};

pub(super) fn has_response_format(b: &JsonBody) -> bool {
    // Chat Completions `response_format`, or the Responses API's
    // `text.format`, of a type other than plain text.
    #[derive(Deserialize)]
    struct Text<'a> {
        #[serde(borrow)]
        format: Option<Format<'a>>,
    }
    #[derive(Deserialize)]
    struct Format<'a> {
        #[serde(borrow, rename = "type")]
        kind: Option<Cow<'a, str>>,
    }
    let structured = |f: Format<'_>| f.kind.as_deref().is_some_and(|k| k != "text");
    let chat = b.field("response_format").and_then(|v| serde_json::from_str::<Option<Format<'_>>>(v.get()).ok()).flatten();
    let responses = b.field("text").and_then(|t| serde_json::from_str::<Text<'_>>(t.get()).ok()).and_then(|t| t.format);
    chat.or(responses).is_some_and(structured)
}

/// Gemini's `generationConfig` (camelCase or snake_case).
#[derive(Deserialize)]
pub(super) struct GeminiConfig {
    #[serde(alias = "max_output_tokens", rename = "maxOutputTokens")]
    pub(super) max_output_tokens: Option<u64>,
    #[serde(alias = "response_mime_type", rename = "responseMimeType")]
    pub(super) response_mime_type: Option<String>,
    #[serde(alias = "response_schema", rename = "responseSchema")]
    pub(super) response_schema: Option<serde::de::IgnoredAny>,
    #[serde(alias = "response_json_schema", rename = "responseJsonSchema")]
    pub(super) response_json_schema: Option<serde::de::IgnoredAny>,
}

impl GeminiConfig {
    pub(super) fn read(b: &JsonBody) -> Option<Self> {
        let raw = b.field("generationConfig").or_else(|| b.field("generation_config"))?;
        serde_json::from_str(raw.get()).ok()
    }

    pub(super) fn structured(&self) -> bool {
        self.response_mime_type.as_deref() == Some("application/json") || self.response_schema.is_some() || self.response_json_schema.is_some()
    }
}

/// One message: its role and its content's raw JSON (Gemini: `parts`).
struct Msg<'a> {
    role: Option<Cow<'a, str>>,
    content: Option<&'a str>,
}

/// The messages of a conversation list, read from the body's already
/// validated JSON in one pass, without parsing it again
/// (`body::Cursor`). A message that is not an object has no role and no
/// content.
fn messages(list: &str) -> Vec<Msg<'_>> {
    let mut out = Vec::new();
    let mut c = crate::body::Cursor::new(list);
    if !c.enter(b'[') {
        return out;
    }
    loop {
        let mut msg = Msg { role: None, content: None };
        if c.enter(b'{') {
            while let Some((key, value)) = c.member() {
                // (A key written with escapes is decoded to compare it.)
                let key = if key.contains('\\') { text_of(key) } else { Cow::Borrowed(key.trim_matches('"')) };
                match &*key {
                    "role" => msg.role = value.starts_with('"').then(|| text_of(value)),
                    "content" | "parts" => msg.content = Some(value),
                    _ => {}
                }
            }
        } else if c.value().is_none() {
            return out;
        }
        out.push(msg);
    }
}

#[derive(Deserialize)]
pub(super) struct Part<'a> {
    #[serde(borrow, default)]
    pub(super) text: Option<Cow<'a, str>>,
}

/// The text of a message content: a string, the `text` of its parts, or of
/// the `parts` of a Gemini content object.
/// Borrowed from the body when the text has no escapes.
pub(super) fn text_of(raw: &str) -> Cow<'_, str> {
    let s = raw.trim_start();
    if s.starts_with('{') {
        #[derive(Deserialize)]
        struct Content<'a> {
            #[serde(borrow)]
            parts: Option<&'a RawValue>,
        }
        let parts = serde_json::from_str::<Content<'_>>(s).ok().and_then(|c| c.parts);
        Cow::Owned(parts.map(|p| text_of(p.get()).into_owned()).unwrap_or_default())
    } else if s.starts_with('"') {
        // A raw JSON string without a backslash is its own text between
        // the quotes (the body parser already rejected control
        // characters): a SIMD search instead of parsing it once more.
        match s.trim_end().strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
            Some(inner) if memchr::memchr(b'\\', inner.as_bytes()).is_none() => Cow::Borrowed(inner),
            _ => serde_json::from_str::<Cow<'_, str>>(s).unwrap_or_default(),
        }
    } else if s.starts_with('[') {
        let parts: Vec<Part<'_>> = serde_json::from_str(s).unwrap_or_default();
        let texts: Vec<&str> = parts.iter().filter_map(|p| p.text.as_deref()).collect();
        Cow::Owned(texts.join("\n"))
    } else {
        Cow::Borrowed("")
    }
}

pub(super) fn is_system(role: Option<&str>) -> bool {
    matches!(role, Some("system" | "developer"))
}

/// What the scorer and task rules read from the prompt.
#[derive(Default)]
pub(super) struct Prompt<'a> {
    pub(super) last_user: Cow<'a, str>,
    /// Conversation messages, system prompts not counted.
    pub(super) messages: usize,
    pub(super) system: String,
}

impl<'a> Prompt<'a> {
    pub(super) fn read(b: &'a JsonBody, api: Api, dialect: Dialect, want_system: bool) -> Prompt<'a> {
        let mut p = Prompt::default();
        let list_field = match api {
            Api::ChatCompletions | Api::Messages => "messages",
            Api::Responses => "input",
            Api::Completions => "prompt",
            Api::Embeddings => "input",
            Api::GenerateContent => "contents",
            Api::Other => return p,
        };
        let Some(raw) = b.field(list_field) else { return p };
        if raw.get().trim_start().starts_with('"') {
            p.last_user = text_of(raw.get());
            p.messages = 1;
        } else if matches!(api, Api::ChatCompletions | Api::Messages | Api::Responses | Api::GenerateContent) {
            let msgs = messages(raw.get());
            p.messages = msgs.iter().filter(|m| !is_system(m.role.as_deref())).count();
            // The last user message with text (tool results carry none).
            p.last_user = msgs
                .iter()
                .rev()
                .filter(|m| m.role.as_deref() == Some("user"))
                .filter_map(|m| m.content.map(text_of))
                .find(|t| !t.is_empty())
                .unwrap_or_default();
            if want_system {
                let texts: Vec<Cow<'_, str>> = msgs.iter().filter(|m| is_system(m.role.as_deref())).filter_map(|m| m.content.map(text_of)).collect();
                p.system = texts.join("\n");
            }
        }
        if want_system {
            let extra = match (dialect, api) {
                (Dialect::Anthropic, _) => b.field("system"),
                (_, Api::Responses) => b.field("instructions"),
                (_, Api::GenerateContent) => b.field("systemInstruction").or_else(|| b.field("system_instruction")),
                _ => None,
            };
            if let Some(s) = extra {
                let t = text_of(s.get());
                if !t.is_empty() {
                    p.system = if p.system.is_empty() { t.into_owned() } else { format!("{t}\n{}", p.system) };
                }
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_contents_text_is_what_serde_reads_borrowed_when_it_has_no_escapes() {
        for text in ["", "plain words", "quote \" and backslash \\ inside", "tab\tnewline\n", "ünïcödé ✓ 😀", "\u{1}"] {
            let raw = serde_json::to_string(text).unwrap();
            let got = text_of(&raw);
            assert_eq!(got, text, "{raw}");
            assert_eq!(matches!(got, Cow::Borrowed(_)), !raw.contains('\\'), "{raw}");
        }
        assert_eq!(text_of(" \"padded\" "), "padded");
        assert_eq!(text_of(r#"[{"type":"text","text":"a"},{"type":"image_url"},{"type":"text","text":"b\"c"}]"#), "a\nb\"c");
        assert_eq!(text_of(r#"{"parts":[{"text":"gemini"}]}"#), "gemini");
    }
}
