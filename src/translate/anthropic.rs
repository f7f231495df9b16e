//! Anthropic Messages: request reader/writer, answer reader/writer, stream
//! reader and writer.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::jsonline::{Json, List};

use super::*;

const CARRIED: &[&str] = &["model", "messages", "system", "tools", "tool_choice", "max_tokens", "temperature", "top_p", "stop_sequences", "stream", "metadata"];
/// Dropped and counted: knobs an OpenAI-dialect model has no field for.
const DROPPABLE: &[&str] = &["top_k", "service_tier", "container", "mcp_servers", "context_management"];

pub fn read_request(v: &Value) -> Result<Chat, GatewayError> {
    let obj = v.as_object().ok_or_else(|| bad("the request body must be a JSON object"))?;
    let mut c = Chat::default();
    for k in obj.keys() {
        if CARRIED.contains(&k.as_str()) {
            continue;
        }
        match DROPPABLE.iter().find(|d| **d == k) {
            Some(d) => c.dropped.push(d),
            None if k == "thinking" && v["thinking"]["type"] == "disabled" => {}
            None if k == "thinking" => {
                return Err(bad("`thinking` (extended thinking) cannot be carried to an OpenAI-dialect model; route this request to an Anthropic model"))
            }
            None => {
                return Err(bad(format!("`{k}` cannot be translated for a model of another dialect; remove it or route this request to an Anthropic model")))
            }
        }
    }
    match &v["system"] {
        Value::Null => {}
        s => c.system.push(text_of(s)),
    }
    for m in v["messages"].as_array().ok_or_else(|| bad("`messages` must be an array"))? {
        let role = match m["role"].as_str() {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            other => return Err(bad(format!("message role `{}` is not user or assistant", other.unwrap_or("?")))),
        };
        let parts = match &m["content"] {
            Value::String(s) => vec![Part::Text(s.clone())],
            Value::Array(blocks) => blocks.iter().map(block).collect::<Result<Vec<_>, _>>()?.into_iter().flatten().collect(),
            _ => Vec::new(),
        };
        c.messages.push(Message { role, parts });
    }
    for t in v["tools"].as_array().into_iter().flatten() {
        if t.get("type").is_some_and(|ty| ty != "custom") {
            return Err(bad(format!("server tool `{}` cannot be translated; only custom tools can", t["type"].as_str().unwrap_or("?"))));
        }
        c.tools.push(Tool {
            name: t["name"].as_str().unwrap_or_default().to_string(),
            description: t["description"].as_str().map(str::to_string),
            parameters: if t["input_schema"].is_object() { t["input_schema"].clone() } else { json!({"type": "object", "properties": {}}) },
        });
    }
    let tc = &v["tool_choice"];
    c.tool_choice = match tc["type"].as_str() {
        Some("auto") => Some(ToolChoice::Auto),
        Some("any") => Some(ToolChoice::Required),
        Some("none") => Some(ToolChoice::None),
        Some("tool") => tc["name"].as_str().map(|n| ToolChoice::Tool(n.to_string())),
        _ => None,
    };
    if tc["disable_parallel_tool_use"] == true {
        c.parallel_tool_calls = Some(false);
    }
    c.max_tokens = v["max_tokens"].as_u64();
    c.temperature = v["temperature"].as_f64();
    c.top_p = v["top_p"].as_f64();
    c.stop = v["stop_sequences"].as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect();
    c.stream = v["stream"] == true;
    c.stream_usage = true;
    c.user = v["metadata"]["user_id"].as_str().map(str::to_string);
    Ok(c)
}

/// One content block; `None` for blocks that carry nothing to translate.
fn block(b: &Value) -> Result<Option<Part>, GatewayError> {
    Ok(match b["type"].as_str() {
        Some("text") => Some(Part::Text(b["text"].as_str().unwrap_or_default().to_string())),
        Some("image") => {
            let s = &b["source"];
            Some(Part::Image(match s["type"].as_str() {
                Some("base64") => format!("data:{};base64,{}", s["media_type"].as_str().unwrap_or("image/png"), s["data"].as_str().unwrap_or_default()),
                _ => s["url"].as_str().unwrap_or_default().to_string(),
            }))
        }
        Some("tool_use") => Some(Part::ToolCall {
            id: b["id"].as_str().unwrap_or_default().to_string(),
            name: b["name"].as_str().unwrap_or_default().to_string(),
            arguments: b["input"].to_string(),
        }),
        Some("tool_result") => Some(Part::ToolResult {
            id: b["tool_use_id"].as_str().unwrap_or_default().to_string(),
            content: text_of(&b["content"]),
            is_error: b["is_error"] == true,
        }),
        // Earlier thinking is the model's own scratch work; other dialects cannot take it back.
        Some("thinking" | "redacted_thinking") => None,
        other => return Err(bad(format!("content block `{}` cannot be translated (text, image, tool_use and tool_result can)", other.unwrap_or("?")))),
    })
}

pub fn write_request(c: &Chat, default_max: u64) -> Result<Value, GatewayError> {
    let mut out = Map::new();
    out.insert("model".into(), json!(c.model));
    out.insert("max_tokens".into(), json!(c.max_tokens.unwrap_or(default_max)));
    if !c.system.is_empty() {
        out.insert("system".into(), json!(c.system.join("\n\n")));
    }
    out.insert("messages".into(), Value::Array(write_messages(c)?));
    if let Some(t) = c.temperature {
        // OpenAI allows 0–2, Anthropic 0–1.
        out.insert("temperature".into(), json!(t.min(1.0)));
    }
    if let Some(p) = c.top_p {
        out.insert("top_p".into(), json!(p));
    }
    if !c.stop.is_empty() {
        out.insert("stop_sequences".into(), json!(c.stop));
    }
    if let Some(f) = &c.json {
        write_json_tool(c, f, &mut out)?;
    }
    if !c.tools.is_empty() {
        let tools: Vec<Value> = c
            .tools
            .iter()
            .map(|t| {
                let mut v = json!({"name": t.name, "input_schema": t.parameters});
                if let Some(d) = &t.description {
                    v["description"] = json!(d);
                }
                v
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(ch) = tool_choice(c) {
        out.insert("tool_choice".into(), ch);
    }
    if let Some(u) = &c.user {
        out.insert("metadata".into(), json!({"user_id": u}));
    }
    if c.stream {
        out.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(out))
}

/// The turns as Anthropic content blocks, consecutive turns of one role
/// merged (Anthropic wants them alternating).
fn write_messages(c: &Chat) -> Result<Vec<Value>, GatewayError> {
    let mut messages: Vec<Value> = Vec::new();
    for m in &c.messages {
        let role = match m.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        let mut blocks = Vec::new();
        for p in &m.parts {
            blocks.push(match p {
                Part::Text(t) => json!({"type": "text", "text": t}),
                Part::Image(url) => match url.strip_prefix("data:").and_then(|r| r.split_once(";base64,")) {
                    Some((media, data)) => json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}),
                    None => json!({"type": "image", "source": {"type": "url", "url": url}}),
                },
                Part::ToolCall { id, name, arguments } => json!({"type": "tool_use", "id": id, "name": name, "input": parse_args(name, arguments)?}),
                Part::ToolResult { id, content, is_error } => json!({"type": "tool_result", "tool_use_id": id, "content": content, "is_error": is_error}),
            });
        }
        if blocks.is_empty() {
            continue;
        }
        // Anthropic wants alternating roles: merge consecutive ones (tool
        // results and the next user text become one user turn).
        match messages.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(a) = last["content"].as_array_mut() {
                    a.extend(blocks);
                }
            }
            _ => messages.push(json!({"role": role, "content": blocks})),
        }
    }
    Ok(messages)
}

/// Structured output: Anthropic has no JSON mode, so the answer is the
/// input of a tool the model must call, turned back into text on the way out.
fn write_json_tool(c: &Chat, f: &JsonFormat, out: &mut Map<String, Value>) -> Result<(), GatewayError> {
    if !c.tools.is_empty() {
        return Err(bad("structured output together with tools cannot be carried to an Anthropic model (it is carried as a forced tool call); route this request to an OpenAI- or Gemini-dialect model or drop one of them"));
    }
    let schema = match f {
        JsonFormat::Object => json!({"type": "object"}),
        JsonFormat::Schema { schema, .. } => schema.clone(),
    };
    if schema["type"] != "object" {
        return Err(bad("structured output for an Anthropic model needs a JSON schema whose root is an object (`\"type\": \"object\"`)"));
    }
    out.insert(
        "tools".into(),
        json!([{"name": JSON_TOOL, "description": "Give the answer as this tool's input, which follows the JSON schema.", "input_schema": schema}]),
    );
    out.insert("tool_choice".into(), json!({"type": "tool", "name": JSON_TOOL}));
    Ok(())
}

/// The client's tool choice (and `parallel_tool_calls: false`) as Anthropic's.
fn tool_choice(c: &Chat) -> Option<Value> {
    let mut choice = match &c.tool_choice {
        Some(ToolChoice::Auto) => Some(json!({"type": "auto"})),
        Some(ToolChoice::None) => Some(json!({"type": "none"})),
        Some(ToolChoice::Required) => Some(json!({"type": "any"})),
        Some(ToolChoice::Tool(n)) => Some(json!({"type": "tool", "name": n})),
        None => None,
    };
    if c.parallel_tool_calls == Some(false) && !c.tools.is_empty() {
        let ch = choice.get_or_insert_with(|| json!({"type": "auto"}));
        ch["disable_parallel_tool_use"] = json!(true);
    }
    choice
}

fn finish_of(s: &str) -> Finish {
    match s {
        "max_tokens" | "model_context_window_exceeded" => Finish::Length,
        "tool_use" => Finish::ToolCalls,
        "stop_sequence" => Finish::StopSequence,
        "refusal" => Finish::ContentFilter,
        _ => Finish::Stop,
    }
}

fn finish_str(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::ToolCalls => "tool_use",
        Finish::StopSequence => "stop_sequence",
        Finish::ContentFilter => "refusal",
    }
}

pub fn read_answer(v: &Value) -> Option<Answer> {
    let mut parts = Vec::new();
    for b in v["content"].as_array()? {
        match b["type"].as_str() {
            Some("text") => parts.push(Part::Text(b["text"].as_str().unwrap_or_default().to_string())),
            Some("tool_use") => parts.push(Part::ToolCall {
                id: b["id"].as_str().unwrap_or_default().to_string(),
                name: b["name"].as_str().unwrap_or_default().to_string(),
                arguments: b["input"].to_string(),
            }),
            _ => {}
        }
    }
    Some(Answer {
        id: v["id"].as_str().unwrap_or("msg_modelgate").to_string(),
        model: v["model"].as_str().unwrap_or_default().to_string(),
        parts,
        finish: finish_of(v["stop_reason"].as_str().unwrap_or("end_turn")),
        usage: usage_of(&v["usage"], Dialect::Anthropic),
    })
}

/// The Messages answer for `a`, written as JSON text (no `Value` tree).
pub fn write_answer(a: &Answer) -> Vec<u8> {
    let mut body = Vec::with_capacity(256 + a.parts.iter().map(part_len).sum::<usize>());
    let mut j = Json::new(&mut body);
    match a.id.starts_with("msg_") {
        true => j.str("id", &a.id),
        false => j.str("id", &format!("msg_{}", a.id)),
    }
    j.str("type", "message");
    j.str("role", "assistant");
    j.str("model", &a.model);
    let mut content = List::new(j.value_of("content"));
    for p in &a.parts {
        match p {
            Part::Text(t) => {
                let mut b = content.object();
                b.str("type", "text");
                b.str("text", t);
                b.end();
            }
            Part::ToolCall { id, name, arguments } => {
                let mut b = content.object();
                b.str("type", "tool_use");
                b.str("id", id);
                b.str("name", name);
                crate::jsonline::value(b.value_of("input"), &args_value(arguments));
                b.end();
            }
            _ => {}
        }
    }
    content.end();
    j.str("stop_reason", finish_str(a.finish));
    j.raw("stop_sequence", "null");
    usage_members(j.obj("usage"), &a.usage);
    j.end();
    body
}

/// Reads Anthropic stream events into neutral events.
#[derive(Default)]
pub struct Reader {
    /// Anthropic block index → our tool index (tool_use blocks only).
    tools: Vec<(u64, usize)>,
    usage: Usage,
}

/// What the reader takes from an event (typed over the borrowed text:
/// no `Value` tree per event).
#[derive(Deserialize)]
struct StreamEvent<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Lax<'a>,
    #[serde(borrow)]
    message: Option<EventMessage<'a>>,
    #[serde(default, borrow)]
    index: Lax<'a>,
    #[serde(borrow)]
    content_block: Option<EventBlock<'a>>,
    #[serde(borrow)]
    delta: Option<EventDelta<'a>>,
    #[serde(borrow)]
    usage: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct EventMessage<'a> {
    #[serde(default, borrow)]
    id: Lax<'a>,
    #[serde(default, borrow)]
    model: Lax<'a>,
    #[serde(borrow)]
    usage: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct EventBlock<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Lax<'a>,
    #[serde(default, borrow)]
    id: Lax<'a>,
    #[serde(default, borrow)]
    name: Lax<'a>,
    #[serde(default, borrow)]
    text: Lax<'a>,
}

#[derive(Deserialize)]
struct EventDelta<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Lax<'a>,
    #[serde(default, borrow)]
    text: Lax<'a>,
    #[serde(default, borrow)]
    partial_json: Lax<'a>,
    #[serde(default, borrow)]
    stop_reason: Lax<'a>,
}

impl super::StreamReader for Reader {
    fn read(&mut self, data: &str) -> Vec<Event> {
        let mut out = Vec::new();
        let v: StreamEvent = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "an Anthropic stream event of an unexpected shape says nothing");
                return out;
            }
        };
        match v.kind.str() {
            Some("message_start") => {
                let m = v.message.as_ref();
                self.usage = usage_of_raw(m.and_then(|m| m.usage), Dialect::Anthropic).unwrap_or_default();
                out.push(Event::Start { id: m.map_or("", |m| m.id.text()).to_string(), model: m.map_or("", |m| m.model.text()).to_string() });
            }
            Some("content_block_start") => {
                let Some(b) = &v.content_block else { return out };
                if b.kind.str() == Some("tool_use") {
                    let index = self.tools.len();
                    self.tools.push((v.index.u64().unwrap_or(0), index));
                    out.push(Event::ToolStart { index, id: b.id.text().to_string(), name: b.name.text().to_string() });
                } else if let Some(t) = b.text.str().filter(|t| !t.is_empty()) {
                    out.push(Event::Text(t.to_string()));
                }
            }
            Some("content_block_delta") => {
                let Some(d) = &v.delta else { return out };
                match d.kind.str() {
                    Some("text_delta") => out.push(Event::Text(d.text.text().to_string())),
                    Some("input_json_delta") => {
                        let bi = v.index.u64().unwrap_or(0);
                        if let Some(&(_, index)) = self.tools.iter().find(|(b, _)| *b == bi) {
                            out.push(Event::ToolArgs { index, json: d.partial_json.text().to_string() });
                        }
                    }
                    _ => {}
                }
            }
            Some("message_delta") => {
                let later = usage_of_raw(v.usage, Dialect::Anthropic).unwrap_or_default();
                // message_delta carries cumulative output (and, lately, input) counts.
                self.usage.output = later.output;
                if later.total_input() > 0 {
                    self.usage = Usage { output: later.output, ..later };
                }
                if let Some(r) = v.delta.as_ref().and_then(|d| d.stop_reason.str()) {
                    out.push(Event::Finish(finish_of(r)));
                }
                out.push(Event::Usage(self.usage));
            }
            Some("message_stop") => out.push(Event::End),
            Some("error") => out.push(Event::Error { kind: ErrorKind::Upstream, message: error_message(v.error) }),
            _ => {}
        }
        out
    }
}

/// Writes neutral events as Anthropic stream events.
pub struct AnthropicStream {
    id: String,
    model: String,
    started: bool,
    /// The open content block: its index and whether it is text.
    open: Option<(usize, bool)>,
    next_block: usize,
    /// Our tool index → Anthropic block index.
    tool_blocks: Vec<usize>,
    tail: Tail,
}

impl AnthropicStream {
    pub fn new(model: &str) -> Self {
        AnthropicStream {
            id: String::new(),
            model: model.to_string(),
            started: false,
            open: None,
            next_block: 0,
            tool_blocks: Vec::new(),
            tail: Tail::default(),
        }
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        if self.id.is_empty() {
            self.id = "msg_modelgate".into();
        }
        let u = self.tail.usage();
        sse_object(out, "message_start", |j| {
            let mut m = j.obj("message");
            m.str("id", &self.id);
            m.str("type", "message");
            m.str("role", "assistant");
            m.str("model", &self.model);
            m.raw("content", "[]");
            m.raw("stop_reason", "null");
            m.raw("stop_sequence", "null");
            usage_members(m.obj("usage"), &Usage { output: 1, ..u });
            m.end();
        });
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some((i, _)) = self.open.take() {
            sse_object(out, "content_block_stop", |j| j.num("index", i as u64));
        }
    }

    /// `content_block_start` of block `i`, its `content_block` written by `block`.
    fn block_start(out: &mut Vec<u8>, i: usize, block: impl FnOnce(&mut Json)) {
        sse_object(out, "content_block_start", |j| {
            j.num("index", i as u64);
            let mut b = j.obj("content_block");
            block(&mut b);
            b.end();
        });
    }

    /// `content_block_delta` of block `i`: a `kind` delta whose `field` is `text`.
    fn block_delta(out: &mut Vec<u8>, i: usize, kind: &str, field: &str, text: &str) {
        sse_object(out, "content_block_delta", |j| {
            j.num("index", i as u64);
            let mut d = j.obj("delta");
            d.str("type", kind);
            d.str(field, text);
            d.end();
        });
    }
}

/// Anthropic's usage members, in its order.
fn usage_members(mut j: Json, u: &Usage) {
    j.num("input_tokens", u.input);
    j.num("output_tokens", u.output);
    j.num("cache_read_input_tokens", u.cached_input);
    j.num("cache_creation_input_tokens", u.cache_write);
    j.end();
}

impl super::StreamWriter for AnthropicStream {
    fn write(&mut self, e: &Event, out: &mut Vec<u8>) {
        match e {
            Event::Start { id, model } => {
                self.id = if id.starts_with("msg_") { id.clone() } else { format!("msg_{id}") };
                if !model.is_empty() {
                    self.model = model.clone();
                }
                self.start(out);
            }
            Event::Text(t) => {
                self.start(out);
                if !matches!(self.open, Some((_, true))) {
                    self.close(out);
                    let i = self.next_block;
                    self.next_block += 1;
                    self.open = Some((i, true));
                    Self::block_start(out, i, |b| {
                        b.str("type", "text");
                        b.str("text", "");
                    });
                }
                let i = self.open.map(|o| o.0).unwrap_or(0);
                Self::block_delta(out, i, "text_delta", "text", t);
            }
            Event::ToolStart { id, name, .. } => {
                self.start(out);
                self.close(out);
                let i = self.next_block;
                self.next_block += 1;
                self.open = Some((i, false));
                self.tool_blocks.push(i);
                let id = if id.is_empty() { format!("toolu_modelgate_{i}") } else { id.clone() };
                Self::block_start(out, i, |b| {
                    b.str("type", "tool_use");
                    b.str("id", &id);
                    b.str("name", name);
                    b.raw("input", "{}");
                });
            }
            Event::ToolArgs { index, json } => {
                let Some(&i) = self.tool_blocks.get(*index) else { return };
                Self::block_delta(out, i, "input_json_delta", "partial_json", json);
            }
            Event::Finish(_) | Event::Usage(_) => self.tail.note(e),
            Event::Error { message, .. } => {
                sse_event(out, "error", &json!({"type": "error", "error": {"type": "api_error", "message": message}}));
                self.tail.done = true;
            }
            Event::End => self.end(out),
        }
    }

    /// Close the open block, then message_delta (stop reason, usage) and
    /// message_stop.
    fn end(&mut self, out: &mut Vec<u8>) {
        if !self.tail.close() {
            return;
        }
        self.start(out);
        self.close(out);
        let (finish, u) = (self.tail.finish(), self.tail.usage());
        sse_object(out, "message_delta", |j| {
            let mut d = j.obj("delta");
            d.str("stop_reason", finish_str(finish));
            d.raw("stop_sequence", "null");
            d.end();
            usage_members(j.obj("usage"), &u);
        });
        sse_object(out, "message_stop", |_| {});
    }
}
