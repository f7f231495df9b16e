//! OpenAI Chat Completions: request reader/writer, answer reader/writer,
//! stream reader and writer.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::jsonline::{Json, List};

use super::*;

/// Fields read into the neutral form, or known to be safe to leave out.
const CARRIED: &[&str] = &[
    "model",
    "messages",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "stream",
    "stream_options",
    "user",
    "n",
    "response_format",
];
/// Sampling and reporting knobs other dialects lack: dropped and counted.
const DROPPABLE: &[&str] = &[
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "seed",
    "service_tier",
    "store",
    "metadata",
    "prediction",
    "reasoning_effort",
    "modalities",
    "audio",
    "safety_identifier",
    "prompt_cache_key",
    "verbosity",
    "web_search_options",
];

pub fn read_request(v: &Value) -> Result<Chat, GatewayError> {
    let obj = v.as_object().ok_or_else(|| bad("the request body must be a JSON object"))?;
    let mut c = Chat::default();
    for k in obj.keys() {
        if CARRIED.contains(&k.as_str()) {
            continue;
        }
        match DROPPABLE.iter().find(|d| **d == k) {
            Some(d) => c.dropped.push(d),
            None => {
                return Err(bad(format!(
                    "`{k}` cannot be translated for a model of another dialect; remove it or route this request to an OpenAI-dialect model"
                )))
            }
        }
    }
    if v["n"].as_u64().is_some_and(|n| n > 1) {
        return Err(bad("`n` > 1 (several choices) cannot be served by an Anthropic model"));
    }
    for m in v["messages"].as_array().ok_or_else(|| bad("`messages` must be an array"))? {
        read_message(m, &mut c)?;
    }
    c.tools = read_tools(v)?;
    c.tool_choice = match &v["tool_choice"] {
        Value::String(s) if s == "auto" => Some(ToolChoice::Auto),
        Value::String(s) if s == "none" => Some(ToolChoice::None),
        Value::String(s) if s == "required" => Some(ToolChoice::Required),
        Value::Object(o) => o.get("function").and_then(|f| f["name"].as_str()).map(|n| ToolChoice::Tool(n.to_string())),
        _ => None,
    };
    c.parallel_tool_calls = v["parallel_tool_calls"].as_bool();
    c.max_tokens = v["max_completion_tokens"].as_u64().or(v["max_tokens"].as_u64());
    c.temperature = v["temperature"].as_f64();
    c.top_p = v["top_p"].as_f64();
    c.stop = match &v["stop"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    };
    c.stream = v["stream"] == true;
    c.stream_usage = v["stream_options"]["include_usage"] == true;
    c.user = v["user"].as_str().map(str::to_string);
    let rf = &v["response_format"];
    c.json = match rf["type"].as_str() {
        None | Some("text") => None,
        Some("json_object") => Some(JsonFormat::Object),
        Some("json_schema") => {
            let s = &rf["json_schema"];
            Some(JsonFormat::Schema { name: s["name"].as_str().unwrap_or("answer").to_string(), schema: s["schema"].clone(), strict: s["strict"] == true })
        }
        Some(other) => return Err(bad(format!("response_format type `{other}` cannot be translated (text, json_object and json_schema can)"))),
    };
    Ok(c)
}

/// One message: system prompts, user and assistant turns, tool results.
fn read_message(m: &Value, c: &mut Chat) -> Result<(), GatewayError> {
    let role = m["role"].as_str().unwrap_or("");
    match role {
        "system" | "developer" => c.system.push(text_of(&m["content"])),
        "user" => c.messages.push(Message { role: Role::User, parts: user_parts(&m["content"])? }),
        "assistant" => {
            let mut parts = Vec::new();
            let text = text_of(&m["content"]);
            if !text.is_empty() {
                parts.push(Part::Text(text));
            }
            for t in m["tool_calls"].as_array().into_iter().flatten() {
                parts.push(Part::ToolCall {
                    id: t["id"].as_str().unwrap_or_default().to_string(),
                    name: t["function"]["name"].as_str().unwrap_or_default().to_string(),
                    arguments: t["function"]["arguments"].as_str().unwrap_or("{}").to_string(),
                });
            }
            c.messages.push(Message { role: Role::Assistant, parts });
        }
        "tool" => c.messages.push(Message {
            role: Role::User,
            parts: vec![Part::ToolResult { id: m["tool_call_id"].as_str().unwrap_or_default().to_string(), content: text_of(&m["content"]), is_error: false }],
        }),
        other => return Err(bad(format!("message role `{other}` cannot be translated (expected system, developer, user, assistant or tool)"))),
    }
    Ok(())
}

/// Function tools (others cannot be translated).
fn read_tools(v: &Value) -> Result<Vec<Tool>, GatewayError> {
    let mut tools = Vec::new();
    for t in v["tools"].as_array().into_iter().flatten() {
        if t["type"] != "function" {
            return Err(bad(format!("tool type `{}` cannot be translated; only function tools can", t["type"].as_str().unwrap_or("?"))));
        }
        let f = &t["function"];
        tools.push(Tool {
            name: f["name"].as_str().unwrap_or_default().to_string(),
            description: f["description"].as_str().map(str::to_string),
            parameters: if f["parameters"].is_object() { f["parameters"].clone() } else { json!({"type": "object", "properties": {}}) },
        });
    }
    Ok(tools)
}

/// Chat Completions' `response_format` for a structured-output request.
pub(crate) fn response_format(f: &JsonFormat) -> Value {
    match f {
        JsonFormat::Object => json!({"type": "json_object"}),
        JsonFormat::Schema { name, schema, strict } => json!({"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": strict}}),
    }
}

fn user_parts(content: &Value) -> Result<Vec<Part>, GatewayError> {
    match content {
        Value::String(s) => Ok(vec![Part::Text(s.clone())]),
        Value::Array(a) => a
            .iter()
            .map(|p| match p["type"].as_str() {
                Some("text") => Ok(Part::Text(p["text"].as_str().unwrap_or_default().to_string())),
                Some("image_url") => Ok(Part::Image(p["image_url"]["url"].as_str().unwrap_or_default().to_string())),
                other => Err(bad(format!("content part `{}` cannot be translated (text and image_url can)", other.unwrap_or("?")))),
            })
            .collect(),
        _ => Ok(Vec::new()),
    }
}

/// The Chat Completions request for `c`, written as JSON text (no `Value`
/// tree: the messages' text is copied once, into the body).
pub fn write_request(c: &Chat) -> Vec<u8> {
    let text: usize = c.messages.iter().flat_map(|m| &m.parts).map(part_len).sum();
    let mut body = Vec::with_capacity(512 + text + c.system.iter().map(String::len).sum::<usize>());
    let mut j = Json::new(&mut body);
    j.str("model", &c.model);
    let mut messages = List::new(j.value_of("messages"));
    if !c.system.is_empty() {
        let mut m = messages.object();
        m.str("role", "system");
        m.str("content", &c.system.join("\n\n"));
        m.end();
    }
    for msg in &c.messages {
        match msg.role {
            Role::Assistant => {
                let text = answer_text(&msg.parts);
                let mut m = messages.object();
                m.str("role", "assistant");
                m.opt_str("content", (!text.is_empty()).then_some(text.as_str()));
                let mut calls = msg.parts.iter().filter_map(|p| match p {
                    Part::ToolCall { id, name, arguments } => Some((id, name, arguments)),
                    _ => None,
                });
                if let Some(first) = calls.next() {
                    let mut list = List::new(m.value_of("tool_calls"));
                    for (id, name, arguments) in std::iter::once(first).chain(calls) {
                        let mut call = list.object();
                        call.str("id", id);
                        call.str("type", "function");
                        let mut f = call.obj("function");
                        f.str("name", name);
                        f.str("arguments", arguments);
                        f.end();
                        call.end();
                    }
                    list.end();
                }
                m.end();
            }
            Role::User => {
                // Tool results become `tool` messages; the rest one user message.
                for p in &msg.parts {
                    if let Part::ToolResult { id, content, .. } = p {
                        let mut m = messages.object();
                        m.str("role", "tool");
                        m.str("tool_call_id", id);
                        m.str("content", content);
                        m.end();
                    }
                }
                let content: Vec<&Part> = msg.parts.iter().filter(|p| matches!(p, Part::Text(_) | Part::Image(_))).collect();
                let mut m = match content.as_slice() {
                    [] => continue,
                    _ => messages.object(),
                };
                m.str("role", "user");
                match content.as_slice() {
                    [Part::Text(t)] => m.str("content", t),
                    parts => {
                        let mut list = List::new(m.value_of("content"));
                        for p in parts {
                            let mut part = list.object();
                            match p {
                                Part::Text(t) => {
                                    part.str("type", "text");
                                    part.str("text", t);
                                }
                                Part::Image(url) => {
                                    part.str("type", "image_url");
                                    let mut i = part.obj("image_url");
                                    i.str("url", url);
                                    i.end();
                                }
                                _ => {}
                            }
                            part.end();
                        }
                        list.end();
                    }
                }
                m.end();
            }
        }
    }
    messages.end();
    if let Some(n) = c.max_tokens {
        j.num("max_tokens", n);
    }
    if let Some(t) = c.temperature {
        j.float("temperature", t);
    }
    if let Some(p) = c.top_p {
        j.float("top_p", p);
    }
    if !c.stop.is_empty() {
        crate::jsonline::value(j.value_of("stop"), &json!(c.stop));
    }
    if !c.tools.is_empty() {
        let tools: Vec<Value> = c
            .tools
            .iter()
            .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}))
            .collect();
        crate::jsonline::value(j.value_of("tools"), &Value::Array(tools));
    }
    if let Some(tc) = &c.tool_choice {
        let choice = match tc {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Tool(n) => json!({"type": "function", "function": {"name": n}}),
        };
        crate::jsonline::value(j.value_of("tool_choice"), &choice);
    }
    if let Some(p) = c.parallel_tool_calls {
        j.raw("parallel_tool_calls", if p { "true" } else { "false" });
    }
    if let Some(u) = &c.user {
        j.str("user", u);
    }
    if let Some(f) = &c.json {
        crate::jsonline::value(j.value_of("response_format"), &response_format(f));
    }
    if c.stream {
        j.raw("stream", "true");
        j.raw("stream_options", r#"{"include_usage":true}"#);
    }
    j.end();
    body
}

fn finish_of(s: &str) -> Finish {
    match s {
        "length" => Finish::Length,
        "tool_calls" | "function_call" => Finish::ToolCalls,
        "content_filter" => Finish::ContentFilter,
        _ => Finish::Stop,
    }
}

fn finish_str(f: Finish) -> &'static str {
    match f {
        Finish::Stop | Finish::StopSequence => "stop",
        Finish::Length => "length",
        Finish::ToolCalls => "tool_calls",
        Finish::ContentFilter => "content_filter",
    }
}

pub fn read_answer(v: &Value) -> Option<Answer> {
    let choice = v["choices"].get(0)?;
    let msg = &choice["message"];
    let mut parts = Vec::new();
    if let Some(t) = msg["content"].as_str().filter(|t| !t.is_empty()) {
        parts.push(Part::Text(t.to_string()));
    }
    for t in msg["tool_calls"].as_array().into_iter().flatten() {
        parts.push(Part::ToolCall {
            id: t["id"].as_str().unwrap_or_default().to_string(),
            name: t["function"]["name"].as_str().unwrap_or_default().to_string(),
            arguments: t["function"]["arguments"].as_str().unwrap_or("{}").to_string(),
        });
    }
    Some(Answer {
        id: v["id"].as_str().unwrap_or("chatcmpl-modelgate").to_string(),
        model: v["model"].as_str().unwrap_or_default().to_string(),
        parts,
        finish: finish_of(choice["finish_reason"].as_str().unwrap_or("stop")),
        usage: usage_of(&v["usage"], Dialect::OpenAi),
    })
}

/// An assistant turn's text (joined) and its tool calls in OpenAI's shape.
fn text_and_calls(parts: &[Part]) -> (String, Vec<Value>) {
    let text = answer_text(parts);
    let calls = parts
        .iter()
        .filter_map(|p| match p {
            Part::ToolCall { id, name, arguments } => Some(json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})),
            _ => None,
        })
        .collect();
    (text, calls)
}

/// The Chat Completions answer for `a`, written as JSON text (no `Value`
/// tree).
pub fn write_answer(a: &Answer) -> Vec<u8> {
    let (text, calls) = text_and_calls(&a.parts);
    let mut body = Vec::with_capacity(320 + a.parts.iter().map(part_len).sum::<usize>());
    let mut j = Json::new(&mut body);
    j.str("id", &a.id);
    j.str("object", "chat.completion");
    j.value_of("created").extend_from_slice(itoa::Buffer::new().format(now_secs()).as_bytes());
    j.str("model", &a.model);
    let mut choices = List::new(j.value_of("choices"));
    let mut choice = choices.object();
    choice.num("index", 0);
    let mut m = choice.obj("message");
    m.str("role", "assistant");
    m.opt_str("content", (!text.is_empty() || calls.is_empty()).then_some(text.as_str()));
    m.raw("refusal", "null");
    if !calls.is_empty() {
        crate::jsonline::value(m.value_of("tool_calls"), &Value::Array(calls));
    }
    m.end();
    choice.raw("logprobs", "null");
    choice.str("finish_reason", finish_str(a.finish));
    choice.end();
    choices.end();
    usage_members(j.obj("usage"), &a.usage);
    j.end();
    body
}

/// OpenAI's usage members (`prompt_tokens` counts cached input too).
fn usage_members(mut j: Json, u: &Usage) {
    let prompt = u.total_input();
    j.num("prompt_tokens", prompt);
    j.num("completion_tokens", u.output);
    j.num("total_tokens", prompt + u.output);
    let mut details = j.obj("prompt_tokens_details");
    details.num("cached_tokens", u.cached_input);
    details.end();
    j.end();
}

/// Reads OpenAI chunks into neutral events.
#[derive(Default)]
pub struct Reader {
    started: bool,
    /// OpenAI tool-call index → ours (in order of appearance).
    tools: Vec<u64>,
}

/// What the reader takes from a chunk (typed over the borrowed text: no
/// `Value` tree per event).
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    id: Lax<'a>,
    #[serde(default, borrow)]
    model: Lax<'a>,
    #[serde(default, borrow)]
    choices: Option<Vec<ChunkChoice<'a>>>,
    #[serde(borrow)]
    usage: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChunkChoice<'a> {
    #[serde(borrow)]
    delta: Option<ChunkDelta<'a>>,
    #[serde(default, borrow)]
    finish_reason: Lax<'a>,
}

#[derive(Deserialize)]
struct ChunkDelta<'a> {
    #[serde(default, borrow)]
    content: Lax<'a>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

#[derive(Deserialize)]
struct ToolCallDelta<'a> {
    #[serde(default, borrow)]
    index: Lax<'a>,
    #[serde(default, borrow)]
    id: Lax<'a>,
    #[serde(default, borrow)]
    function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize, Default)]
struct FunctionDelta<'a> {
    #[serde(default, borrow)]
    name: Lax<'a>,
    #[serde(default, borrow)]
    arguments: Lax<'a>,
}

impl super::StreamReader for Reader {
    fn done(&mut self) -> Vec<Event> {
        vec![Event::End]
    }

    fn read(&mut self, data: &str) -> Vec<Event> {
        let mut out = Vec::new();
        let c: Chunk = match serde_json::from_str(data) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "an OpenAI stream chunk of an unexpected shape says nothing");
                return out;
            }
        };
        if c.error.is_some() {
            out.push(Event::Error { kind: ErrorKind::Upstream, message: error_message(c.error) });
            return out;
        }
        if !self.started {
            self.started = true;
            out.push(Event::Start { id: c.id.text().to_string(), model: c.model.text().to_string() });
        }
        for ch in c.choices.iter().flatten() {
            if let Some(d) = &ch.delta {
                if let Some(t) = d.content.str().filter(|t| !t.is_empty()) {
                    out.push(Event::Text(t.to_string()));
                }
                for tc in d.tool_calls.iter().flatten() {
                    let oi = tc.index.u64().unwrap_or(0);
                    let f = tc.function.as_ref();
                    let index = match self.tools.iter().position(|i| *i == oi) {
                        Some(i) => i,
                        None => {
                            self.tools.push(oi);
                            let index = self.tools.len() - 1;
                            let name = f.map_or("", |f| f.name.text());
                            out.push(Event::ToolStart { index, id: tc.id.text().to_string(), name: name.to_string() });
                            index
                        }
                    };
                    if let Some(a) = f.and_then(|f| f.arguments.str()).filter(|a| !a.is_empty()) {
                        out.push(Event::ToolArgs { index, json: a.to_string() });
                    }
                }
            }
            if let Some(f) = ch.finish_reason.str() {
                out.push(Event::Finish(finish_of(f)));
            }
        }
        if let Some(u) = usage_of_raw(c.usage, Dialect::OpenAi) {
            out.push(Event::Usage(u));
        }
        out
    }
}

/// Writes neutral events as OpenAI chunks. Each chunk is written as text
/// (no `Value` built per event): the part before its delta is the same for
/// the whole stream and is kept.
pub struct OpenAiStream {
    id: String,
    model: String,
    pub(super) created: i64,
    include_usage: bool,
    started: bool,
    /// `data: {"id":…,"object":"chat.completion.chunk",…,"choices":[{"index":0,"delta":`
    head: Vec<u8>,
    tail: Tail,
}

impl OpenAiStream {
    pub fn new(model: &str, include_usage: bool) -> Self {
        OpenAiStream {
            id: String::new(),
            model: model.to_string(),
            created: now_secs(),
            include_usage,
            started: false,
            head: Vec::new(),
            tail: Tail::default(),
        }
    }

    /// The members every chunk starts with.
    fn meta(&self, j: &mut Json) {
        j.str("id", &self.id);
        j.str("object", "chat.completion.chunk");
        j.value_of("created").extend_from_slice(itoa::Buffer::new().format(self.created).as_bytes());
        j.str("model", &self.model);
    }

    fn set_head(&mut self) {
        let mut head = b"data: ".to_vec();
        let mut j = Json::new(&mut head);
        self.meta(&mut j);
        j.value_of("choices").extend_from_slice(b"[{\"index\":0,\"delta\":");
        self.head = head;
    }

    /// One chunk: the head, the delta `delta` writes, the rest.
    fn chunk(&self, out: &mut Vec<u8>, delta: impl FnOnce(&mut Json), finish: Option<Finish>) {
        out.extend_from_slice(&self.head);
        let mut d = Json::new(out);
        delta(&mut d);
        d.end();
        out.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":");
        match finish {
            Some(f) => crate::jsonline::string(out, finish_str(f)),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(if self.include_usage { b"}],\"usage\":null}\n\n" } else { b"}]}\n\n" });
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            if self.id.is_empty() {
                self.id = "chatcmpl-modelgate".into();
            }
            self.set_head();
            self.chunk(
                out,
                |d| {
                    d.str("role", "assistant");
                    d.str("content", "");
                },
                None,
            );
        }
    }
}

impl super::StreamWriter for OpenAiStream {
    fn write(&mut self, e: &Event, out: &mut Vec<u8>) {
        match e {
            Event::Start { id, model } => {
                self.id = if id.starts_with("chatcmpl") { id.clone() } else { format!("chatcmpl-{id}") };
                if !model.is_empty() {
                    self.model = model.clone();
                }
                if self.started {
                    self.set_head();
                }
                self.start(out);
            }
            Event::Text(t) => {
                self.start(out);
                self.chunk(out, |d| d.str("content", t), None);
            }
            Event::ToolStart { index, id, name } => {
                self.start(out);
                self.chunk(out, |d| tool_call(d, *index, Some((id, name)), ""), None);
            }
            Event::ToolArgs { index, json } => {
                self.start(out);
                self.chunk(out, |d| tool_call(d, *index, None, json), None);
            }
            Event::Finish(_) | Event::Usage(_) => self.tail.note(e),
            Event::Error { message, .. } => {
                sse_data(out, &json!({"error": {"message": message, "type": "server_error", "param": null, "code": "upstream_stream_error"}}));
                self.tail.done = true;
            }
            Event::End => self.end(out),
        }
    }

    /// Finish chunk, usage chunk (when asked for), `[DONE]`.
    fn end(&mut self, out: &mut Vec<u8>) {
        if !self.tail.close() {
            return;
        }
        self.start(out);
        self.chunk(out, |_| {}, Some(self.tail.finish()));
        if self.include_usage {
            out.extend_from_slice(b"data: ");
            let mut j = Json::new(out);
            self.meta(&mut j);
            j.raw("choices", "[]");
            usage_members(j.obj("usage"), &self.tail.usage());
            j.end();
            out.extend_from_slice(b"\n\n");
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
}

/// A chunk delta's `tool_calls` with one call: its start (`id`, `name`,
/// empty arguments) or a piece of its arguments.
fn tool_call(d: &mut Json, index: usize, start: Option<(&String, &String)>, arguments: &str) {
    let calls = d.value_of("tool_calls");
    calls.push(b'[');
    let mut c = Json::new(calls);
    c.num("index", index as u64);
    if let Some((id, _)) = start {
        c.str("id", id);
        c.str("type", "function");
    }
    let mut f = c.obj("function");
    if let Some((_, name)) = start {
        f.str("name", name);
    }
    f.str("arguments", arguments);
    f.end();
    c.end();
    calls.push(b']');
}
