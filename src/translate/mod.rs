//! Cross-dialect translation: a request in one client wire format (OpenAI
//! Chat Completions or Responses, Anthropic Messages, Gemini
//! generateContent) served by a provider of another dialect, the answer
//! (JSON and streams, tool calls included) back in the client's format.
//!
//! Every side goes through one neutral form ([`Chat`] for requests,
//! [`Answer`] for JSON answers, [`Event`] for stream events), so each wire
//! format has one reader and one writer. Fields one side cannot carry are
//! dropped and counted (`modelgate_translation_dropped_total{field}`), or
//! refused when dropping them would change the answer (README table).

mod anthropic;
mod gemini;
mod openai;
mod responses;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::dialect::sse::Data;
use crate::dialect::{Api, Dialect, ErrorKind, GatewayError};
use crate::usage::Usage;

/// The tool that carries structured output to an Anthropic model (which has
/// no JSON mode): forced, and its input becomes the answer's text.
pub(crate) const JSON_TOOL: &str = "json_answer";

/// Anthropic's required `max_tokens` when neither the request nor the model
/// config gives one.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

pub use anthropic::AnthropicStream;
pub use gemini::GeminiStream;
pub use openai::OpenAiStream;
pub use responses::ResponsesStream;

/// A body format on one side of a translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI Chat Completions (also what OpenAI-dialect providers are sent).
    Chat,
    /// OpenAI Responses (client side only).
    Responses,
    /// Anthropic Messages.
    Messages,
    /// Gemini generateContent / streamGenerateContent.
    Gemini,
}

impl Wire {
    /// The format of a client's model call, when it can be translated.
    pub fn of_client(dialect: Dialect, api: Api) -> Option<Wire> {
        match (dialect, api) {
            (Dialect::OpenAi, Api::ChatCompletions) => Some(Wire::Chat),
            (Dialect::OpenAi, Api::Responses) => Some(Wire::Responses),
            (Dialect::Anthropic, Api::Messages) => Some(Wire::Messages),
            (Dialect::Gemini, Api::GenerateContent) => Some(Wire::Gemini),
            _ => None,
        }
    }

    /// What a provider of `kind` is sent when a request is translated.
    pub fn of_provider(kind: Dialect) -> Wire {
        match kind {
            Dialect::OpenAi => Wire::Chat,
            Dialect::Anthropic => Wire::Messages,
            Dialect::Gemini => Wire::Gemini,
        }
    }

    pub fn dialect(self) -> Dialect {
        match self {
            Wire::Chat | Wire::Responses => Dialect::OpenAi,
            Wire::Messages => Dialect::Anthropic,
            Wire::Gemini => Dialect::Gemini,
        }
    }
}

/// Whether a request to `api` (client dialect `from`) can be served by a
/// provider speaking `to`: chat, responses, messages and generateContent
/// calls translate to every provider dialect; other APIs only pass through.
pub fn can_translate(api: Api, from: Dialect, to: Dialect) -> bool {
    from == to || Wire::of_client(from, api).is_some()
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
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
    ToolResult {
        id: String,
        content: String,
        is_error: bool,
    },
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

/// Structured output the client asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonFormat {
    /// Any JSON object (OpenAI `json_object`, Gemini `application/json`).
    Object,
    /// JSON matching a schema.
    Schema { name: String, schema: Value, strict: bool },
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
    pub json: Option<JsonFormat>,
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
    Start {
        id: String,
        model: String,
    },
    Text(String),
    /// A tool call begins (`index` counts tool calls from 0).
    ToolStart {
        index: usize,
        id: String,
        name: String,
    },
    ToolArgs {
        index: usize,
        json: String,
    },
    Finish(Finish),
    Usage(Usage),
    /// The upstream stream reported an error.
    Error {
        kind: ErrorKind,
        message: String,
    },
    /// The answer is complete (`[DONE]`, `message_stop`).
    End,
}

pub(crate) fn bad(message: impl Into<String>) -> GatewayError {
    GatewayError::new(400, ErrorKind::InvalidRequest, "untranslatable_request", message)
}

/// Translate a client request body (`from` format) into the body for a
/// provider reading `to`, for `model` (the upstream id). `stream` is the
/// client's wish (Gemini says it in the path, the others in the body).
/// `default_max` fills Anthropic's required `max_tokens`.
pub fn request(body: &[u8], from: Wire, to: Wire, model: &str, stream: bool, default_max: u64) -> Result<(Bytes, Chat), GatewayError> {
    // (UTF-8 checked once: parsing a `&str` does not check each string.)
    let text = std::str::from_utf8(body).map_err(|e| bad(format!("the request body is not valid UTF-8: {e}")))?;
    let v: Value = serde_json::from_str(text).map_err(|e| bad(format!("the request body is not valid JSON: {e}")))?;
    let mut chat = match from {
        Wire::Chat => openai::read_request(&v)?,
        Wire::Responses => responses::read_request(&v)?,
        Wire::Messages => anthropic::read_request(&v)?,
        Wire::Gemini => gemini::read_request(&v)?,
    };
    chat.model = model.to_string();
    chat.stream |= stream;
    let out = match to {
        Wire::Chat => Bytes::from(openai::write_request(&chat)),
        Wire::Messages => json_bytes(&anthropic::write_request(&chat, default_max)?),
        Wire::Gemini => json_bytes(&gemini::write_request(&mut chat)?),
        Wire::Responses => return Err(bad("requests are never translated into the Responses format")),
    };
    for f in &chat.dropped {
        crate::metrics::translation_dropped(f);
    }
    if !chat.dropped.is_empty() {
        tracing::info!(dropped = ?chat.dropped, "translation dropped fields the target cannot carry");
    }
    Ok((out, chat))
}

/// Translate a provider's JSON answer into the client's format.
pub fn answer(body: &[u8], provider: Wire, client: Wire, chat: &Chat) -> Option<Bytes> {
    let v: Value = serde_json::from_str(std::str::from_utf8(body).ok()?).ok()?;
    let mut a = match provider {
        Wire::Chat => openai::read_answer(&v)?,
        Wire::Messages => anthropic::read_answer(&v)?,
        Wire::Gemini => gemini::read_answer(&v)?,
        Wire::Responses => return None,
    };
    if provider == Wire::Messages && chat.json.is_some() {
        // The forced tool's input is the JSON answer.
        a.parts = a
            .parts
            .into_iter()
            .filter_map(|p| match p {
                Part::ToolCall { name, arguments, .. } if name == JSON_TOOL => Some(Part::Text(arguments)),
                Part::ToolCall { .. } | Part::Text(_) => None,
                other => Some(other),
            })
            .collect();
        if a.finish == Finish::ToolCalls {
            a.finish = Finish::Stop;
        }
    }
    Some(match client {
        Wire::Chat => Bytes::from(openai::write_answer(&a)),
        Wire::Responses => json_bytes(&responses::write_answer(&a, chat)),
        Wire::Messages => Bytes::from(anthropic::write_answer(&a)),
        Wire::Gemini => json_bytes(&gemini::write_answer(&a)),
    })
}

/// The message of a provider's error body (all three dialects put it at
/// `error.message`), else the body's start.
pub fn upstream_message(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    v["error"]["message"].as_str().map(str::to_string).unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(2000).collect())
}

/// What an upstream status means, in terms every dialect can express.
pub fn kind_of_status(status: u16) -> ErrorKind {
    match status {
        400 | 404 | 413 | 422 => ErrorKind::InvalidRequest,
        401 => ErrorKind::Authentication,
        403 => ErrorKind::PermissionDenied,
        429 => ErrorKind::RateLimited,
        408 | 504 => ErrorKind::Timeout,
        _ => ErrorKind::Upstream,
    }
}

/// A provider's error body in the client's dialect, same status.
pub fn error(body: &[u8], status: u16, provider: Dialect, client: Dialect) -> Bytes {
    let message = upstream_message(body);
    GatewayError::new(status, kind_of_status(status), "upstream_error", format!("{message} (from the {provider} provider)")).body(client)
}

/// Reads a provider's SSE events and writes the client's.
pub struct Translator {
    reader: Box<dyn StreamReader>,
    writer: Box<dyn StreamWriter>,
    /// Structured output from an Anthropic model: the forced tool's
    /// arguments are the answer's text (`Some(None)` until it starts).
    json_tool: Option<Option<usize>>,
}

/// Reads one provider dialect's stream events into neutral [`Event`]s.
pub(crate) trait StreamReader: Send {
    /// The events one provider event (its `data:`, JSON text) says.
    fn read(&mut self, data: &str) -> Vec<Event>;
    /// The events of OpenAI's `data: [DONE]`.
    fn done(&mut self) -> Vec<Event> {
        Vec::new()
    }
}

/// Writes neutral [`Event`]s as one client format's stream.
pub(crate) trait StreamWriter: Send {
    fn write(&mut self, e: &Event, out: &mut Vec<u8>);
    /// The stream ended: close what the client expects closed.
    fn end(&mut self, out: &mut Vec<u8>);
}

impl Translator {
    pub fn new(provider: Wire, client: Wire, chat: &Chat) -> Self {
        let reader: Box<dyn StreamReader> = match provider {
            Wire::Messages => Box::<anthropic::Reader>::default(),
            Wire::Gemini => Box::<gemini::Reader>::default(),
            Wire::Chat | Wire::Responses => Box::<openai::Reader>::default(),
        };
        let writer: Box<dyn StreamWriter> = match client {
            Wire::Chat => Box::new(OpenAiStream::new(&chat.model, chat.stream_usage)),
            Wire::Responses => Box::new(ResponsesStream::new(chat)),
            Wire::Messages => Box::new(AnthropicStream::new(&chat.model)),
            Wire::Gemini => Box::new(GeminiStream::new(&chat.model)),
        };
        let json_tool = (provider == Wire::Messages && chat.json.is_some()).then_some(None);
        Translator { reader, writer, json_tool }
    }

    /// Structured output from an Anthropic model: its forced tool call
    /// becomes text, anything else it says is left out.
    fn unwrap_json(&mut self, e: Event) -> Option<Event> {
        let Some(tool) = self.json_tool.as_mut() else { return Some(e) };
        match e {
            Event::ToolStart { index, name, .. } if name == JSON_TOOL => {
                *tool = Some(index);
                None
            }
            Event::ToolArgs { index, json } if *tool == Some(index) => Some(Event::Text(json)),
            Event::ToolStart { .. } | Event::ToolArgs { .. } | Event::Text(_) => None,
            Event::Finish(Finish::ToolCalls) => Some(Event::Finish(Finish::Stop)),
            other => Some(other),
        }
    }

    /// Translate provider events given by their parsed `data:` (as the
    /// stream tap collected them: no second split or parse).
    pub fn feed_data(&mut self, events: Vec<Data>) -> Bytes {
        let mut out = Vec::new();
        for data in events {
            let said = match &data {
                Data::Done => self.reader.done(),
                // (The tap checked that it is UTF-8 JSON.)
                Data::Json(text) => std::str::from_utf8(text).map(|t| self.reader.read(t)).unwrap_or_default(),
            };
            for e in said {
                if let Some(e) = self.unwrap_json(e) {
                    self.writer.write(&e, &mut out);
                }
            }
        }
        Bytes::from(out)
    }

    /// The stream ended: close what the client expects closed.
    pub fn finish(&mut self) -> Bytes {
        let mut out = Vec::new();
        self.writer.end(&mut out);
        Bytes::from(out)
    }
}

/// What every stream writer keeps for its closing events: the finish
/// reason and usage reported so far, and whether the stream is closed.
#[derive(Default)]
pub(crate) struct Tail {
    pub finish: Option<Finish>,
    pub usage: Option<Usage>,
    pub done: bool,
}

impl Tail {
    /// Record a `Finish` or `Usage` event.
    pub fn note(&mut self, e: &Event) {
        match e {
            Event::Finish(f) => self.finish = Some(*f),
            Event::Usage(u) => self.usage = Some(*u),
            _ => {}
        }
    }

    /// Close the stream once: false when it already was.
    pub fn close(&mut self) -> bool {
        !std::mem::replace(&mut self.done, true)
    }

    pub fn finish(&self) -> Finish {
        self.finish.unwrap_or(Finish::Stop)
    }

    pub fn usage(&self) -> Usage {
        self.usage.unwrap_or_default()
    }
}

pub(crate) fn sse_data(out: &mut Vec<u8>, v: &Value) {
    out.extend_from_slice(b"data: ");
    crate::jsonline::value(out, v);
    out.extend_from_slice(b"\n\n");
}

/// `v` as JSON text (`jsonline::value`: serde_json's bytes, written
/// without its serializer's per-token and per-byte work).
fn json_bytes(v: &Value) -> Bytes {
    let mut text = Vec::with_capacity(1024);
    crate::jsonline::value(&mut text, v);
    Bytes::from(text)
}

/// An `event: name` whose data is the object `members` writes (as text,
/// no `Value` built: the hot stream events).
pub(crate) fn sse_object(out: &mut Vec<u8>, name: &str, members: impl FnOnce(&mut crate::jsonline::Json)) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    let mut j = crate::jsonline::Json::new(out);
    j.str("type", name);
    members(&mut j);
    j.end();
    out.extend_from_slice(b"\n\n");
}

pub(crate) fn sse_event(out: &mut Vec<u8>, name: &str, v: &Value) {
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

/// A JSON value read the way `Value::as_str` and `Value::as_u64` read
/// one: a string (borrowed when it has no escapes), a non-negative
/// integer, or anything else (skipped, never an error). The typed stream
/// readers use it for every leaf, so an event with a surprising value
/// somewhere still says what it can.
#[derive(Debug, Default)]
pub(crate) enum Lax<'a> {
    Str(std::borrow::Cow<'a, str>),
    U64(u64),
    #[default]
    Other,
}

impl<'a> Lax<'a> {
    pub fn str(&self) -> Option<&str> {
        match self {
            Lax::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The string, or "" (`as_str().unwrap_or_default()`).
    pub fn text(&self) -> &str {
        self.str().unwrap_or_default()
    }

    pub fn u64(&self) -> Option<u64> {
        match self {
            Lax::U64(n) => Some(*n),
            _ => None,
        }
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Lax<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Lax<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Lax<'a>, E> {
                Ok(Lax::Str(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Lax<'a>, E> {
                Ok(Lax::Str(std::borrow::Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Lax<'a>, E> {
                Ok(Lax::Str(std::borrow::Cow::Owned(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Lax<'a>, E> {
                Ok(Lax::U64(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Lax<'a>, E> {
                Ok(u64::try_from(v).map_or(Lax::Other, Lax::U64))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Lax<'a>, E> {
                Ok(Lax::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Lax<'a>, E> {
                Ok(Lax::Other)
            }
            fn visit_unit<E>(self) -> Result<Lax<'a>, E> {
                Ok(Lax::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Lax<'a>, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Lax::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Lax<'a>, A::Error> {
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(Lax::Other)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A stream event's usage object (`usage_of` of it when it is an object,
/// as the `Value` readers did; none when absent).
pub(crate) fn usage_of_raw(u: Option<&serde_json::value::RawValue>, dialect: Dialect) -> Option<Usage> {
    let text = u?.get();
    text.starts_with('{').then(|| serde_json::from_str::<crate::usage::RawUsage>(text).unwrap_or_default().normalize(dialect))
}

/// The message of a stream's error object, else `upstream stream error`.
pub(crate) fn error_message(error: Option<&serde_json::value::RawValue>) -> String {
    #[derive(serde::Deserialize)]
    struct E<'a> {
        #[serde(default, borrow)]
        message: Lax<'a>,
    }
    let e = error.and_then(|e| serde_json::from_str::<E>(e.get()).ok());
    e.as_ref().and_then(|e| e.message.str()).unwrap_or("upstream stream error").to_string()
}

/// A usage object of `dialect` in neutral counts.
pub(crate) fn usage_of(u: &Value, dialect: Dialect) -> Usage {
    let raw: crate::usage::RawUsage = serde_json::from_value(u.clone()).unwrap_or_default();
    raw.normalize(dialect)
}

pub(crate) fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// JSON for a tool call's arguments (a string in OpenAI, an object in
/// Anthropic and Gemini); invalid JSON is refused rather than guessed.
pub(crate) fn parse_args(name: &str, args: &str) -> Result<Value, GatewayError> {
    if args.trim().is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_str(args)
        .map_err(|e| bad(format!("the arguments of tool call `{name}` are not valid JSON ({e}); Anthropic and Gemini models need a JSON object")))
}

/// Tool-call arguments for an answer: the object, or `{}` when a model
/// streamed something that is not JSON.
pub(crate) fn args_value(args: &str) -> Value {
    serde_json::from_str::<Value>(args).ok().filter(Value::is_object).unwrap_or_else(|| json!({}))
}

/// Bytes of text a part carries (for the body's capacity).
pub(crate) fn part_len(p: &Part) -> usize {
    match p {
        Part::Text(t) | Part::Image(t) => t.len(),
        Part::ToolCall { arguments, .. } => arguments.len(),
        Part::ToolResult { content, .. } => content.len(),
    }
}

/// The text of a turn's parts, joined.
pub(crate) fn answer_text(parts: &[Part]) -> String {
    parts.iter().filter_map(|p| if let Part::Text(t) = p { Some(t.as_str()) } else { None }).collect()
}

#[cfg(test)]
mod tests;
