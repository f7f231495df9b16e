//! OpenAI Responses, client side: request reader, answer writer and stream
//! writer (a Responses client served by an Anthropic or Gemini model; an
//! OpenAI-dialect provider gets the Responses call as it is).

use serde_json::{json, Value};

use super::*;

const CARRIED: &[&str] =
    &["model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "max_output_tokens", "temperature", "top_p", "stream", "user", "text"];
/// Dropped and counted: storage, reasoning and reporting knobs.
const DROPPABLE: &[&str] = &[
    "metadata",
    "store",
    "reasoning",
    "truncation",
    "include",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
    "top_logprobs",
    "max_tool_calls",
    "stream_options",
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
            None if matches!(k.as_str(), "previous_response_id" | "conversation" | "prompt" | "background") => {
                return Err(bad(format!("`{k}` refers to state kept by OpenAI and cannot be served by a model of another dialect; send the whole conversation in `input` or route this request to an OpenAI model")))
            }
            None => return Err(bad(format!("`{k}` cannot be translated for a model of another dialect; remove it or route this request to an OpenAI model"))),
        }
    }
    if let Some(i) = v["instructions"].as_str().filter(|i| !i.is_empty()) {
        c.system.push(i.to_string());
    }
    match &v["input"] {
        Value::String(s) => c.messages.push(Message { role: Role::User, parts: vec![Part::Text(s.clone())] }),
        Value::Array(items) => {
            for item in items {
                read_item(item, &mut c)?;
            }
        }
        _ => return Err(bad("`input` must be a string or a list of input items")),
    }
    for t in v["tools"].as_array().into_iter().flatten() {
        if t["type"] != "function" {
            return Err(bad(format!(
                "tool type `{}` is an OpenAI built-in and cannot be translated; only function tools can",
                t["type"].as_str().unwrap_or("?")
            )));
        }
        c.tools.push(Tool {
            name: t["name"].as_str().unwrap_or_default().to_string(),
            description: t["description"].as_str().map(str::to_string),
            parameters: if t["parameters"].is_object() { t["parameters"].clone() } else { json!({"type": "object", "properties": {}}) },
        });
    }
    c.tool_choice = match &v["tool_choice"] {
        Value::String(s) if s == "auto" => Some(ToolChoice::Auto),
        Value::String(s) if s == "none" => Some(ToolChoice::None),
        Value::String(s) if s == "required" => Some(ToolChoice::Required),
        Value::Object(o) if o.get("type").is_some_and(|t| t == "function") => o.get("name").and_then(Value::as_str).map(|n| ToolChoice::Tool(n.to_string())),
        Value::Null => None,
        other => return Err(bad(format!("tool_choice {other} cannot be translated (auto, none, required or a function can)"))),
    };
    c.parallel_tool_calls = v["parallel_tool_calls"].as_bool();
    c.max_tokens = v["max_output_tokens"].as_u64();
    c.temperature = v["temperature"].as_f64();
    c.top_p = v["top_p"].as_f64();
    c.stream = v["stream"] == true;
    c.stream_usage = true;
    c.user = v["user"].as_str().map(str::to_string);
    if v["text"]["verbosity"].is_string() {
        c.dropped.push("text.verbosity");
    }
    let f = &v["text"]["format"];
    c.json = match f["type"].as_str() {
        None | Some("text") => None,
        Some("json_object") => Some(JsonFormat::Object),
        Some("json_schema") => {
            Some(JsonFormat::Schema { name: f["name"].as_str().unwrap_or("answer").to_string(), schema: f["schema"].clone(), strict: f["strict"] == true })
        }
        Some(other) => return Err(bad(format!("text.format type `{other}` cannot be translated (text, json_object and json_schema can)"))),
    };
    Ok(c)
}

/// One input item: a message (typed or not), a function call, its output.
fn read_item(item: &Value, c: &mut Chat) -> Result<(), GatewayError> {
    match item["type"].as_str() {
        None | Some("message") => {
            let role = item["role"].as_str().unwrap_or("user");
            let parts = content_parts(&item["content"])?;
            match role {
                "system" | "developer" => c.system.push(answer_text(&parts)),
                "user" => c.messages.push(Message { role: Role::User, parts }),
                "assistant" => c.messages.push(Message { role: Role::Assistant, parts }),
                other => return Err(bad(format!("input role `{other}` cannot be translated (user, assistant, system or developer can)"))),
            }
        }
        Some("function_call") => {
            let part = Part::ToolCall {
                id: item["call_id"].as_str().unwrap_or_default().to_string(),
                name: item["name"].as_str().unwrap_or_default().to_string(),
                arguments: item["arguments"].as_str().unwrap_or("{}").to_string(),
            };
            // Calls of one turn (and the text before them) share a message.
            match c.messages.last_mut() {
                Some(m) if m.role == Role::Assistant => m.parts.push(part),
                _ => c.messages.push(Message { role: Role::Assistant, parts: vec![part] }),
            }
        }
        Some("function_call_output") => {
            let part = Part::ToolResult { id: item["call_id"].as_str().unwrap_or_default().to_string(), content: text_of(&item["output"]), is_error: false };
            c.messages.push(Message { role: Role::User, parts: vec![part] });
        }
        // Earlier reasoning is the model's own scratch work.
        Some("reasoning") => {}
        Some(other) => return Err(bad(format!("input item `{other}` cannot be translated (messages, function_call and function_call_output can)"))),
    }
    Ok(())
}

fn content_parts(content: &Value) -> Result<Vec<Part>, GatewayError> {
    match content {
        Value::String(s) => Ok(vec![Part::Text(s.clone())]),
        Value::Array(a) => a
            .iter()
            .map(|p| match p["type"].as_str() {
                Some("input_text" | "output_text" | "text") => Ok(Part::Text(p["text"].as_str().unwrap_or_default().to_string())),
                Some("input_image") if p["image_url"].is_string() => Ok(Part::Image(p["image_url"].as_str().unwrap_or_default().to_string())),
                Some("input_image") => Err(bad("an input_image by file_id refers to a file kept by OpenAI; send image_url instead")),
                other => Err(bad(format!("content part `{}` cannot be translated (input_text, output_text and input_image can)", other.unwrap_or("?")))),
            })
            .collect(),
        _ => Ok(Vec::new()),
    }
}

fn usage_json(u: &Usage) -> Value {
    let input = u.total_input();
    json!({"input_tokens": input, "input_tokens_details": {"cached_tokens": u.cached_input}, "output_tokens": u.output,
           "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": input + u.output})
}

fn resp_id(id: &str) -> String {
    if id.starts_with("resp_") {
        id.to_string()
    } else {
        format!("resp_{}", id.trim_start_matches("msg_").trim_start_matches("chatcmpl-"))
    }
}

/// Who a response object is: its id, model and creation time.
struct Head<'a> {
    id: &'a str,
    model: &'a str,
    created: i64,
}

/// The response object around `output` (also the payload of the stream's
/// created / completed events).
fn response(head: Head<'_>, chat: &Chat, status: &str, finish: Option<Finish>, output: Vec<Value>, usage: Option<&Usage>) -> Value {
    let incomplete = match finish {
        Some(Finish::Length) => json!({"reason": "max_output_tokens"}),
        Some(Finish::ContentFilter) => json!({"reason": "content_filter"}),
        _ => Value::Null,
    };
    let tools: Vec<Value> = chat
        .tools
        .iter()
        .map(|t| json!({"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters, "strict": false}))
        .collect();
    let format = match &chat.json {
        None => json!({"type": "text"}),
        Some(JsonFormat::Object) => json!({"type": "json_object"}),
        Some(JsonFormat::Schema { name, schema, strict }) => json!({"type": "json_schema", "name": name, "schema": schema, "strict": strict}),
    };
    let tool_choice = match &chat.tool_choice {
        None | Some(ToolChoice::Auto) => json!("auto"),
        Some(ToolChoice::None) => json!("none"),
        Some(ToolChoice::Required) => json!("required"),
        Some(ToolChoice::Tool(n)) => json!({"type": "function", "name": n}),
    };
    json!({
        "id": head.id, "object": "response", "created_at": head.created, "status": status, "error": null, "incomplete_details": incomplete,
        "instructions": null, "max_output_tokens": chat.max_tokens, "model": head.model, "output": output,
        "parallel_tool_calls": chat.parallel_tool_calls.unwrap_or(true), "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null}, "store": false, "temperature": chat.temperature, "text": {"format": format},
        "tool_choice": tool_choice, "tools": tools, "top_p": chat.top_p, "truncation": "disabled",
        "usage": usage.map(usage_json), "user": chat.user, "metadata": {},
    })
}

fn status_of(f: Finish) -> &'static str {
    match f {
        Finish::Length | Finish::ContentFilter => "incomplete",
        _ => "completed",
    }
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    let content: Vec<Value> = if status == "in_progress" { vec![] } else { vec![text_part(text)] };
    json!({"id": id, "type": "message", "status": status, "role": "assistant", "content": content})
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn call_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"id": id, "type": "function_call", "status": status, "call_id": call_id, "name": name, "arguments": arguments})
}

pub fn write_answer(a: &Answer, chat: &Chat) -> Value {
    let mut output = Vec::new();
    let text = answer_text(&a.parts);
    if !text.is_empty() {
        output.push(message_item(&format!("msg_{}", a.id.trim_start_matches("msg_")), &text, "completed"));
    }
    for (i, p) in a.parts.iter().enumerate() {
        if let Part::ToolCall { id, name, arguments } = p {
            output.push(call_item(&format!("fc_{i}_{}", a.id.trim_start_matches("msg_")), id, name, arguments, "completed"));
        }
    }
    let head = Head { id: &resp_id(&a.id), model: &a.model, created: now_secs() };
    response(head, chat, status_of(a.finish), Some(a.finish), output, Some(&a.usage))
}

/// An output item being streamed: text, or a function call.
enum Open {
    Text { item: String, text: String },
    Call { item: String, call_id: String, name: String, args: String },
}

/// Writes neutral events as Responses stream events (`response.created` …
/// `response.completed`), with the output items the SDK's stream helpers
/// accumulate.
pub struct ResponsesStream {
    chat: Chat,
    id: String,
    model: String,
    created: i64,
    seq: u64,
    started: bool,
    open: Option<Open>,
    /// Finished output items, for the final response object.
    done_items: Vec<Value>,
    /// Our tool index → output index.
    tool_items: Vec<usize>,
    tail: Tail,
}

impl ResponsesStream {
    pub fn new(chat: &Chat) -> Self {
        // Only the request's settings are echoed; its conversation is not needed.
        let chat = Chat { messages: Vec::new(), system: Vec::new(), ..chat.clone() };
        let model = chat.model.clone();
        ResponsesStream {
            chat,
            id: String::new(),
            model,
            created: now_secs(),
            seq: 0,
            started: false,
            open: None,
            done_items: Vec::new(),
            tool_items: Vec::new(),
            tail: Tail::default(),
        }
    }

    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, mut v: Value) {
        v["type"] = json!(kind);
        v["sequence_number"] = json!(self.seq);
        self.seq += 1;
        sse_event(out, kind, &v);
    }

    fn snapshot(&self, status: &str, usage: Option<&Usage>) -> Value {
        let head = Head { id: &self.id, model: &self.model, created: self.created };
        response(head, &self.chat, status, self.tail.finish.filter(|_| status != "in_progress"), self.done_items.clone(), usage)
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        if self.id.is_empty() {
            self.id = "resp_modelgate".into();
        }
        let r = self.snapshot("in_progress", None);
        self.emit(out, "response.created", json!({"response": r}));
        self.emit(out, "response.in_progress", json!({"response": r}));
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        let index = self.done_items.len();
        match self.open.take() {
            Some(Open::Text { item, text }) => {
                self.emit(out, "response.output_text.done", json!({"item_id": item, "output_index": index, "content_index": 0, "text": text, "logprobs": []}));
                self.emit(out, "response.content_part.done", json!({"item_id": item, "output_index": index, "content_index": 0, "part": text_part(&text)}));
                let done = message_item(&item, &text, "completed");
                self.emit(out, "response.output_item.done", json!({"output_index": index, "item": done}));
                self.done_items.push(done);
            }
            Some(Open::Call { item, call_id, name, args }) => {
                self.emit(out, "response.function_call_arguments.done", json!({"item_id": item, "output_index": index, "name": name, "arguments": args}));
                let done = call_item(&item, &call_id, &name, &args, "completed");
                self.emit(out, "response.output_item.done", json!({"output_index": index, "item": done}));
                self.done_items.push(done);
            }
            None => {}
        }
    }
}

impl super::StreamWriter for ResponsesStream {
    fn write(&mut self, e: &Event, out: &mut Vec<u8>) {
        match e {
            Event::Start { id, model } => {
                self.id = resp_id(id);
                if !model.is_empty() {
                    self.model = model.clone();
                }
                self.start(out);
            }
            Event::Text(t) => {
                self.start(out);
                let index = self.done_items.len();
                if !matches!(self.open, Some(Open::Text { .. })) {
                    self.close(out);
                    let index = self.done_items.len();
                    let item = format!("msg_{}_{index}", self.id.trim_start_matches("resp_"));
                    self.emit(out, "response.output_item.added", json!({"output_index": index, "item": message_item(&item, "", "in_progress")}));
                    self.emit(out, "response.content_part.added", json!({"item_id": item, "output_index": index, "content_index": 0, "part": text_part("")}));
                    self.open = Some(Open::Text { item, text: String::new() });
                }
                if let Some(Open::Text { item, text }) = &mut self.open {
                    text.push_str(t);
                    let item = item.clone();
                    self.emit(
                        out,
                        "response.output_text.delta",
                        json!({"item_id": item, "output_index": index, "content_index": 0, "delta": t, "logprobs": []}),
                    );
                }
            }
            Event::ToolStart { id, name, .. } => {
                self.start(out);
                self.close(out);
                let index = self.done_items.len();
                let item = format!("fc_{}_{index}", self.id.trim_start_matches("resp_"));
                self.tool_items.push(index);
                self.emit(out, "response.output_item.added", json!({"output_index": index, "item": call_item(&item, id, name, "", "in_progress")}));
                self.open = Some(Open::Call { item, call_id: id.clone(), name: name.clone(), args: String::new() });
            }
            Event::ToolArgs { index, json } => {
                let output_index = self.tool_items.get(*index).copied();
                if let (Some(oi), Some(Open::Call { item, args, .. })) = (output_index, &mut self.open) {
                    if oi == self.done_items.len() {
                        args.push_str(json);
                        let item = item.clone();
                        self.emit(out, "response.function_call_arguments.delta", json!({"item_id": item, "output_index": oi, "delta": json}));
                    }
                }
            }
            Event::Finish(_) | Event::Usage(_) => self.tail.note(e),
            Event::Error { message, .. } => {
                // `error` as an object too: the openai SDK raises on it.
                let error = json!({"message": message, "type": "server_error", "code": "upstream_stream_error"});
                self.emit(out, "error", json!({"code": "upstream_stream_error", "message": message, "param": null, "error": error}));
                self.tail.done = true;
            }
            Event::End => self.end(out),
        }
    }

    /// Close the open item, then `response.completed` (or `.incomplete`).
    fn end(&mut self, out: &mut Vec<u8>) {
        if !self.tail.close() {
            return;
        }
        self.start(out);
        self.close(out);
        let status = status_of(self.tail.finish());
        let r = self.snapshot(status, Some(&self.tail.usage()));
        self.emit(out, if status == "completed" { "response.completed" } else { "response.incomplete" }, json!({"response": r}));
    }
}
