//! Cross-dialect translation: an OpenAI Chat Completions request served by
//! an Anthropic Messages model and the other way round, answers (JSON and
//! streams, tool calls included) back in the client's dialect.
//!
//! Both sides go through one neutral form ([`Chat`] for requests,
//! [`Answer`] for JSON answers, [`Event`] for stream events), so each
//! dialect has one reader and one writer. Fields one side cannot carry are
//! dropped and counted (`modelgate_translation_dropped_total{field}`), or
//! refused when dropping them would change the answer (README table).

mod anthropic;
mod openai;

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};

use crate::dialect::{Api, Dialect, ErrorKind, GatewayError};
use crate::usage::Usage;

/// Anthropic's required `max_tokens` when neither the request nor the model
/// config gives one.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

pub use anthropic::AnthropicStream;
pub use openai::OpenAiStream;

/// Whether a request to `api` (client dialect `from`) can be served by a
/// provider speaking `to`.
pub fn can_translate(api: Api, from: Dialect, to: Dialect) -> bool {
    from == to || matches!((api, from, to), (Api::ChatCompletions, Dialect::OpenAi, Dialect::Anthropic) | (Api::Messages, Dialect::Anthropic, Dialect::OpenAi))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

/// One piece of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    /// An image by URL (`http(s)://` or a `data:` URL).
    Image(String),
    ToolCall { id: String, name: String, arguments: String },
    ToolResult { id: String, content: String, is_error: bool },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    pub parameters: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Tool(String),
}

/// A chat request in neutral form.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chat {
    pub model: String,
    pub system: Vec<String>,
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Vec<String>,
    pub stream: bool,
    /// The client asked for usage in its stream (OpenAI `include_usage`).
    pub stream_usage: bool,
    pub user: Option<String>,
    /// Fields the client sent that the target cannot carry (dropped).
    pub dropped: Vec<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
    ToolCalls,
    StopSequence,
    ContentFilter,
}

/// A whole (non-streamed) answer in neutral form.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub id: String,
    pub model: String,
    pub parts: Vec<Part>,
    pub finish: Finish,
    pub usage: Usage,
}

/// One step of a streamed answer in neutral form.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Start { id: String, model: String },
    Text(String),
    /// A tool call begins (`index` counts tool calls from 0).
    ToolStart { index: usize, id: String, name: String },
    ToolArgs { index: usize, json: String },
    Finish(Finish),
    Usage(Usage),
    /// The upstream stream reported an error.
    Error { kind: ErrorKind, message: String },
    /// The answer is complete (`[DONE]`, `message_stop`).
    End,
}

pub(crate) fn bad(message: impl Into<String>) -> GatewayError {
    GatewayError::new(400, ErrorKind::InvalidRequest, "untranslatable_request", message)
}

/// Translate a client request body (`from` dialect) into the body for a
/// provider speaking `to`, for `model` (the upstream id). `default_max`
/// fills Anthropic's required `max_tokens`.
pub fn request(body: &[u8], from: Dialect, to: Dialect, model: &str, default_max: u64) -> Result<(Bytes, Chat), GatewayError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(format!("the request body is not valid JSON: {e}")))?;
    let mut chat = match from {
        Dialect::OpenAi => openai::read_request(&v)?,
        Dialect::Anthropic => anthropic::read_request(&v)?,
    };
    chat.model = model.to_string();
    let out = match to {
        Dialect::OpenAi => openai::write_request(&chat),
        Dialect::Anthropic => anthropic::write_request(&chat, default_max)?,
    };
    for f in &chat.dropped {
        crate::metrics::translation_dropped(f);
    }
    if !chat.dropped.is_empty() {
        tracing::info!(dropped = ?chat.dropped, "translation dropped fields the target cannot carry");
    }
    Ok((Bytes::from(out.to_string()), chat))
}

/// Translate a provider's JSON answer into the client's dialect.
pub fn answer(body: &[u8], provider: Dialect, client: Dialect) -> Option<Bytes> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let a = match provider {
        Dialect::OpenAi => openai::read_answer(&v)?,
        Dialect::Anthropic => anthropic::read_answer(&v)?,
    };
    let out = match client {
        Dialect::OpenAi => openai::write_answer(&a),
        Dialect::Anthropic => anthropic::write_answer(&a),
    };
    Some(Bytes::from(out.to_string()))
}

/// A provider's error body in the client's dialect, same status.
pub fn error(body: &[u8], status: u16, provider: Dialect, client: Dialect) -> Bytes {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = match provider {
        Dialect::OpenAi => v["error"]["message"].as_str(),
        Dialect::Anthropic => v["error"]["message"].as_str(),
    }
    .map(str::to_string)
    .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(2000).collect());
    let kind = match status {
        400 | 404 | 413 | 422 => ErrorKind::InvalidRequest,
        401 => ErrorKind::Authentication,
        403 => ErrorKind::PermissionDenied,
        429 => ErrorKind::RateLimited,
        504 => ErrorKind::Timeout,
        _ => ErrorKind::Upstream,
    };
    GatewayError::new(status, kind, "upstream_error", format!("{} (from the {provider} provider)", message)).body(client)
}

/// Reads a provider's SSE events and writes the client's.
pub struct Translator {
    reader: Reader,
    writer: Writer,
}

enum Reader {
    OpenAi(openai::Reader),
    Anthropic(anthropic::Reader),
}

enum Writer {
    OpenAi(OpenAiStream),
    Anthropic(AnthropicStream),
}

impl Translator {
    pub fn new(provider: Dialect, client: Dialect, chat: &Chat) -> Self {
        let reader = match provider {
            Dialect::OpenAi => Reader::OpenAi(openai::Reader::default()),
            Dialect::Anthropic => Reader::Anthropic(anthropic::Reader::default()),
        };
        let writer = match client {
            Dialect::OpenAi => Writer::OpenAi(OpenAiStream::new(&chat.model, chat.stream_usage)),
            Dialect::Anthropic => Writer::Anthropic(AnthropicStream::new(&chat.model)),
        };
        Translator { reader, writer }
    }

    /// Translate complete provider events (as split by the stream tap).
    pub fn feed(&mut self, events: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        let mut pos = 0;
        while let Some(end) = crate::dialect::sse::event_end(events, pos) {
            let data = crate::dialect::sse::data_of(&events[pos..end]);
            pos = end;
            let evs = match &mut self.reader {
                Reader::OpenAi(r) => r.read(&data),
                Reader::Anthropic(r) => r.read(&data),
            };
            for e in evs {
                self.write(&e, &mut out);
            }
        }
        out.freeze()
    }

    fn write(&mut self, e: &Event, out: &mut BytesMut) {
        match &mut self.writer {
            Writer::OpenAi(w) => w.write(e, out),
            Writer::Anthropic(w) => w.write(e, out),
        }
    }

    /// The stream ended: close what the client expects closed.
    pub fn finish(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        match &mut self.writer {
            Writer::OpenAi(w) => w.end(&mut out),
            Writer::Anthropic(w) => w.end(&mut out),
        }
        out.freeze()
    }
}

pub(crate) fn sse_data(out: &mut BytesMut, v: &Value) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(v.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

pub(crate) fn sse_event(out: &mut BytesMut, name: &str, v: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\n");
    sse_data(out, v);
}

/// Text of a string or an array of text parts (tool results, system).
pub(crate) fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("\n"),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub(crate) fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// JSON for a tool call's arguments (a string in OpenAI, an object in
/// Anthropic); invalid JSON is refused rather than guessed.
pub(crate) fn parse_args(name: &str, args: &str) -> Result<Value, GatewayError> {
    if args.trim().is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_str(args).map_err(|e| bad(format!("the arguments of tool call `{name}` are not valid JSON ({e}); Anthropic models need a JSON object")))
}

#[cfg(test)]
mod tests;
