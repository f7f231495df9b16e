//! Gemini generateContent: request reader/writer, answer reader/writer,
//! stream reader and writer.
//!
//! Gemini names differ from the other dialects in three ways that matter
//! here: the model is in the path, tool calls carry no id (a function
//! response refers to its call by name), and a stream has no end marker (the
//! chunk with a `finishReason` is the last one). Keys are read in camelCase
//! or snake_case, as Google's REST API accepts both.

use serde_json::{json, Map, Value};

use super::*;

/// Top-level keys (camelCase) dropped and counted.
const DROPPABLE: &[&str] = &["safetySettings", "labels"];
/// generationConfig keys other dialects have no field for: dropped, counted.
const DROPPABLE_CONFIG: &[&str] =
    &["topK", "seed", "presencePenalty", "frequencyPenalty", "thinkingConfig", "mediaResolution", "responseLogprobs", "logprobs", "enableEnhancedCivicAnswers"];

/// `snake_case` → `camelCase`.
fn camel(k: &str) -> String {
    let mut out = String::with_capacity(k.len());
    let mut up = false;
    for c in k.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// An object's fields under their camelCase names.
fn fields(v: &Value) -> Map<String, Value> {
    v.as_object().map(|o| o.iter().map(|(k, v)| (camel(k), v.clone())).collect()).unwrap_or_default()
}

/// A Gemini `Schema` (OpenAPI subset, `"type": "OBJECT"`) as JSON Schema:
/// type names lowercased, everything else kept.
fn json_schema(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("type", Value::String(t)) => Value::String(t.to_lowercase()),
                        ("type", Value::Array(ts)) => ts.iter().map(|t| t.as_str().map(|t| Value::String(t.to_lowercase())).unwrap_or(t.clone())).collect(),
                        _ => json_schema(v),
                    };
                    (camel_schema_key(k), v)
                })
                .collect(),
        ),
        Value::Array(a) => a.iter().map(json_schema).collect(),
        other => other.clone(),
    }
}

/// Schema keys Google spells in camelCase that JSON Schema spells otherwise.
fn camel_schema_key(k: &str) -> String {
    match k {
        "any_of" | "anyOf" => "anyOf".into(),
        "property_ordering" | "propertyOrdering" => "propertyOrdering".into(),
        "max_items" => "maxItems".into(),
        "min_items" => "minItems".into(),
        other => other.to_string(),
    }
}

pub fn read_request(v: &Value) -> Result<Chat, GatewayError> {
    if !v.is_object() {
        return Err(bad("the request body must be a JSON object"));
    }
    let top = fields(v);
    let mut c = Chat::default();
    for k in top.keys() {
        match k.as_str() {
            "contents" | "systemInstruction" | "tools" | "toolConfig" | "generationConfig" | "model" => {}
            "cachedContent" => return Err(bad("`cachedContent` refers to a cache held by Gemini; route this request to a Gemini model")),
            other => match DROPPABLE.iter().find(|d| **d == other) {
                Some(d) => c.dropped.push(d),
                None => {
                    return Err(bad(format!(
                        "`{other}` cannot be translated for a model of another dialect; remove it or route this request to a Gemini model"
                    )))
                }
            },
        }
    }
    if let Some(s) = top.get("systemInstruction") {
        let text = parts_text(&fields(s));
        if !text.is_empty() {
            c.system.push(text);
        }
    }
    let contents = top.get("contents").ok_or_else(|| bad("`contents` is required: the conversation as a list of {role, parts}"))?;
    let contents: Vec<Value> = match contents {
        Value::Array(a) => a.clone(),
        // A single Content object is accepted by the API.
        o @ Value::Object(_) => vec![o.clone()],
        _ => return Err(bad("`contents` must be a list of {role, parts}")),
    };
    c.messages = read_contents(&contents)?;
    c.tools = read_tools(top.get("tools"))?;
    if let Some(tc) = top.get("toolConfig") {
        c.tool_choice = read_tool_config(tc)?;
    }
    read_generation_config(&fields(top.get("generationConfig").unwrap_or(&Value::Null)), &mut c)?;
    c.stream_usage = true;
    Ok(c)
}

/// The conversation. Function responses name their call: each call gets an
/// id, and a response is matched to the oldest open call of its name.
fn read_contents(contents: &[Value]) -> Result<Vec<Message>, GatewayError> {
    let mut open: Vec<(String, String)> = Vec::new();
    let mut calls = 0usize;
    let mut messages = Vec::new();
    for content in contents {
        let content = fields(content);
        let role = match content.get("role").and_then(Value::as_str) {
            Some("model") => Role::Assistant,
            Some("user" | "function" | "tool") | None => Role::User,
            Some(other) => return Err(bad(format!("content role `{other}` is not user or model"))),
        };
        let mut parts = Vec::new();
        for p in content.get("parts").and_then(Value::as_array).into_iter().flatten() {
            let p = fields(p);
            if let Some(t) = p.get("text").and_then(Value::as_str) {
                if p.get("thought") != Some(&Value::Bool(true)) {
                    parts.push(Part::Text(t.to_string()));
                }
            } else if let Some(d) = p.get("inlineData").map(fields) {
                let mime = d.get("mimeType").and_then(Value::as_str).unwrap_or("image/png");
                if !mime.starts_with("image/") {
                    return Err(bad(format!("inline data of type `{mime}` cannot be translated; only images can")));
                }
                parts.push(Part::Image(format!("data:{mime};base64,{}", d.get("data").and_then(Value::as_str).unwrap_or_default())));
            } else if let Some(d) = p.get("fileData").map(fields) {
                let mime = d.get("mimeType").and_then(Value::as_str).unwrap_or("image/jpeg");
                if !mime.starts_with("image/") {
                    return Err(bad(format!("file data of type `{mime}` cannot be translated; only images can")));
                }
                parts.push(Part::Image(d.get("fileUri").and_then(Value::as_str).unwrap_or_default().to_string()));
            } else if let Some(f) = p.get("functionCall").map(fields) {
                let name = f.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                calls += 1;
                let id = f.get("id").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| format!("call_{calls}_{name}"));
                open.push((name.clone(), id.clone()));
                let args = f.get("args").cloned().unwrap_or_else(|| json!({}));
                parts.push(Part::ToolCall { id, name, arguments: args.to_string() });
            } else if let Some(f) = p.get("functionResponse").map(fields) {
                let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
                let id = match f.get("id").and_then(Value::as_str) {
                    Some(id) => {
                        open.retain(|(_, o)| o != id);
                        id.to_string()
                    }
                    None => match open.iter().position(|(n, _)| n == name) {
                        Some(i) => open.remove(i).1,
                        None => format!("call_{name}"),
                    },
                };
                parts.push(Part::ToolResult { id, content: response_text(f.get("response").unwrap_or(&Value::Null)), is_error: false });
            } else if p.contains_key("executableCode") || p.contains_key("codeExecutionResult") {
                return Err(bad("code execution parts cannot be translated; route this request to a Gemini model"));
            } else if !p.is_empty() && !p.contains_key("thoughtSignature") {
                let k = p.keys().next().cloned().unwrap_or_default();
                return Err(bad(format!("part `{k}` cannot be translated (text, inlineData and fileData images, functionCall and functionResponse can)")));
            }
        }
        messages.push(Message { role, parts });
    }
    Ok(messages)
}

/// `tools`: function declarations (Gemini's built-in tools cannot be translated).
fn read_tools(tools: Option<&Value>) -> Result<Vec<Tool>, GatewayError> {
    let mut out = Vec::new();
    for t in tools.and_then(Value::as_array).into_iter().flatten() {
        let t = fields(t);
        for k in t.keys() {
            if k != "functionDeclarations" {
                return Err(bad(format!("tool `{k}` is a Gemini built-in and cannot be translated; only functionDeclarations can")));
            }
        }
        for f in t.get("functionDeclarations").and_then(Value::as_array).into_iter().flatten() {
            let f = fields(f);
            let parameters = match (f.get("parametersJsonSchema"), f.get("parameters")) {
                (Some(s), _) if s.is_object() => s.clone(),
                (_, Some(s)) if s.is_object() => json_schema(s),
                _ => json!({"type": "object", "properties": {}}),
            };
            out.push(Tool {
                name: f.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
                description: f.get("description").and_then(Value::as_str).map(str::to_string),
                parameters,
            });
        }
    }
    Ok(out)
}

/// `toolConfig.functionCallingConfig` as a tool choice.
fn read_tool_config(tc: &Value) -> Result<Option<ToolChoice>, GatewayError> {
    let fc = fields(fields(tc).get("functionCallingConfig").unwrap_or(&Value::Null));
    let names: Vec<&str> = fc.get("allowedFunctionNames").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    Ok(match fc.get("mode").and_then(Value::as_str) {
        Some("NONE") => Some(ToolChoice::None),
        Some("ANY") if names.len() == 1 => Some(ToolChoice::Tool(names[0].to_string())),
        Some("ANY") if names.len() > 1 => {
            return Err(bad("functionCallingConfig ANY with several allowedFunctionNames cannot be translated; allow one function or all"))
        }
        Some("ANY") => Some(ToolChoice::Required),
        Some("AUTO" | "VALIDATED") => Some(ToolChoice::Auto),
        _ => None,
    })
}

/// `generationConfig`: sampling, stops, structured output; what cannot be
/// carried is dropped or refused.
fn read_generation_config(g: &Map<String, Value>, c: &mut Chat) -> Result<(), GatewayError> {
    for k in g.keys() {
        match k.as_str() {
            "maxOutputTokens" | "temperature" | "topP" | "stopSequences" | "candidateCount" | "responseMimeType" | "responseSchema" | "responseJsonSchema"
            | "responseModalities" => {}
            other => match DROPPABLE_CONFIG.iter().find(|d| **d == other) {
                Some(d) => c.dropped.push(d),
                None => {
                    return Err(bad(format!(
                        "generationConfig.{other} cannot be translated for a model of another dialect; remove it or route this request to a Gemini model"
                    )))
                }
            },
        }
    }
    if g.get("candidateCount").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(bad("generationConfig.candidateCount > 1 (several candidates) cannot be served by a model of another dialect"));
    }
    if g.get("responseModalities").and_then(Value::as_array).is_some_and(|m| m.iter().any(|m| m != "TEXT")) {
        return Err(bad("only TEXT responseModalities can be translated"));
    }
    c.max_tokens = g.get("maxOutputTokens").and_then(Value::as_u64);
    c.temperature = g.get("temperature").and_then(Value::as_f64);
    c.top_p = g.get("topP").and_then(Value::as_f64);
    c.stop = g.get("stopSequences").and_then(Value::as_array).into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect();
    let schema = match (g.get("responseJsonSchema"), g.get("responseSchema")) {
        (Some(s), _) if s.is_object() => Some(s.clone()),
        (_, Some(s)) if s.is_object() => Some(json_schema(s)),
        _ => None,
    };
    c.json = match (g.get("responseMimeType").and_then(Value::as_str), schema) {
        (Some("application/json"), Some(schema)) | (None, Some(schema)) => Some(JsonFormat::Schema { name: "answer".into(), schema, strict: false }),
        (Some("application/json"), None) => Some(JsonFormat::Object),
        (None | Some("text/plain"), None) => None,
        (Some(other), _) => return Err(bad(format!("responseMimeType `{other}` cannot be translated (text/plain and application/json can)"))),
    };
    Ok(())
}

/// The text of a `{parts: [{text}]}` content (system instructions).
fn parts_text(content: &Map<String, Value>) -> String {
    let texts: Vec<&str> = content.get("parts").and_then(Value::as_array).into_iter().flatten().filter_map(|p| p["text"].as_str()).collect();
    texts.join("\n")
}

/// A function response object as tool-result text: a lone `result`,
/// `output` or `content` string as itself, anything else as JSON.
fn response_text(r: &Value) -> String {
    if let Some(o) = r.as_object() {
        if o.len() == 1 {
            if let Some(s) = ["result", "output", "content"].iter().find_map(|k| o.get(*k)).and_then(Value::as_str) {
                return s.to_string();
            }
        }
    }
    match r {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn image_part(url: &str) -> Value {
    match url.strip_prefix("data:").and_then(|r| r.split_once(";base64,")) {
        Some((mime, data)) => json!({"inlineData": {"mimeType": mime, "data": data}}),
        None => {
            let lower = url.to_ascii_lowercase();
            let mime = [(".png", "image/png"), (".webp", "image/webp"), (".gif", "image/gif"), (".heic", "image/heic")]
                .iter()
                .find(|(ext, _)| lower.split(['?', '#']).next().unwrap_or("").ends_with(ext))
                .map_or("image/jpeg", |(_, m)| m);
            json!({"fileData": {"mimeType": mime, "fileUri": url}})
        }
    }
}

pub fn write_request(c: &mut Chat) -> Result<Value, GatewayError> {
    let mut out = Map::new();
    out.insert("contents".into(), Value::Array(write_contents(c)?));
    if !c.system.is_empty() {
        out.insert("systemInstruction".into(), json!({"parts": [{"text": c.system.join("\n\n")}]}));
    }
    if !c.tools.is_empty() {
        let decls: Vec<Value> = c
            .tools
            .iter()
            .map(|t| {
                let mut d = json!({"name": t.name, "parametersJsonSchema": t.parameters});
                if let Some(desc) = &t.description {
                    d["description"] = json!(desc);
                }
                d
            })
            .collect();
        out.insert("tools".into(), json!([{"functionDeclarations": decls}]));
    }
    if let Some(tc) = &c.tool_choice {
        let fc = match tc {
            ToolChoice::Auto => json!({"mode": "AUTO"}),
            ToolChoice::None => json!({"mode": "NONE"}),
            ToolChoice::Required => json!({"mode": "ANY"}),
            ToolChoice::Tool(n) => json!({"mode": "ANY", "allowedFunctionNames": [n]}),
        };
        out.insert("toolConfig".into(), json!({"functionCallingConfig": fc}));
    }
    let g = generation_config(c);
    if !g.is_empty() {
        out.insert("generationConfig".into(), Value::Object(g));
    }
    if c.user.is_some() {
        c.dropped.push("user");
    }
    if c.parallel_tool_calls == Some(false) && !c.tools.is_empty() {
        c.dropped.push("parallel_tool_calls");
    }
    Ok(Value::Object(out))
}

/// The turns as Gemini contents (consecutive turns of one role merged);
/// function responses are matched to their call by name.
fn write_contents(c: &Chat) -> Result<Vec<Value>, GatewayError> {
    let mut names: Vec<(&str, &str)> = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    for m in &c.messages {
        let role = match m.role {
            Role::User => "user",
            Role::Assistant => "model",
        };
        let mut parts = Vec::new();
        for p in &m.parts {
            parts.push(match p {
                Part::Text(t) => json!({"text": t}),
                Part::Image(url) => image_part(url),
                Part::ToolCall { id, name, arguments } => {
                    names.push((id, name));
                    json!({"functionCall": {"name": name, "args": parse_args(name, arguments)?}})
                }
                Part::ToolResult { id, content, is_error } => {
                    let name = names.iter().find(|(i, _)| i == id).map_or(id.as_str(), |(_, n)| n);
                    let response = match serde_json::from_str::<Value>(content) {
                        Ok(o @ Value::Object(_)) if !is_error => o,
                        _ if *is_error => json!({"error": content}),
                        _ => json!({"result": content}),
                    };
                    json!({"functionResponse": {"name": name, "response": response}})
                }
            });
        }
        if parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(a) = last["parts"].as_array_mut() {
                    a.extend(parts);
                }
            }
            _ => contents.push(json!({"role": role, "parts": parts})),
        }
    }
    Ok(contents)
}

/// `generationConfig`: sampling, stops, structured output.
fn generation_config(c: &Chat) -> Map<String, Value> {
    let mut g = Map::new();
    if let Some(n) = c.max_tokens {
        g.insert("maxOutputTokens".into(), json!(n));
    }
    if let Some(t) = c.temperature {
        g.insert("temperature".into(), json!(t));
    }
    if let Some(p) = c.top_p {
        g.insert("topP".into(), json!(p));
    }
    if !c.stop.is_empty() {
        g.insert("stopSequences".into(), json!(c.stop));
    }
    match &c.json {
        Some(JsonFormat::Object) => {
            g.insert("responseMimeType".into(), json!("application/json"));
        }
        Some(JsonFormat::Schema { schema, .. }) => {
            g.insert("responseMimeType".into(), json!("application/json"));
            g.insert("responseJsonSchema".into(), schema.clone());
        }
        None => {}
    }
    g
}

fn finish_of(s: &str, tools: bool) -> Finish {
    match s {
        "MAX_TOKENS" => Finish::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => Finish::ContentFilter,
        _ if tools => Finish::ToolCalls,
        _ => Finish::Stop,
    }
}

fn finish_str(f: Finish) -> &'static str {
    match f {
        Finish::Stop | Finish::StopSequence | Finish::ToolCalls => "STOP",
        Finish::Length => "MAX_TOKENS",
        Finish::ContentFilter => "SAFETY",
    }
}

fn usage_json(u: &Usage) -> Value {
    let prompt = u.total_input();
    let mut v = json!({"promptTokenCount": prompt, "candidatesTokenCount": u.output, "totalTokenCount": prompt + u.output});
    if u.cached_input > 0 {
        v["cachedContentTokenCount"] = json!(u.cached_input);
    }
    v
}

/// Text and function calls of the first candidate; thoughts skipped.
/// `calls` numbers the function calls of the answer (for their ids).
fn candidate_parts(v: &Value, calls: &mut usize) -> Vec<Part> {
    let mut parts = Vec::new();
    for p in v["candidates"][0]["content"]["parts"].as_array().into_iter().flatten() {
        if let Some(t) = p["text"].as_str() {
            if p["thought"] != true && !t.is_empty() {
                parts.push(Part::Text(t.to_string()));
            }
        } else if p["functionCall"].is_object() {
            let f = &p["functionCall"];
            *calls += 1;
            let id = f["id"].as_str().map(str::to_string).unwrap_or_else(|| format!("call_gemini_{calls}"));
            let args = if f["args"].is_object() { f["args"].to_string() } else { "{}".into() };
            parts.push(Part::ToolCall { id, name: f["name"].as_str().unwrap_or_default().to_string(), arguments: args });
        }
    }
    parts
}

pub fn read_answer(v: &Value) -> Option<Answer> {
    if !v["candidates"].is_array() && !v["usageMetadata"].is_object() && !v["promptFeedback"].is_object() {
        return None;
    }
    let parts = candidate_parts(v, &mut 0);
    let tools = parts.iter().any(|p| matches!(p, Part::ToolCall { .. }));
    // A prompt blocked by safety filters has no candidates.
    let finish = match v["candidates"][0]["finishReason"].as_str() {
        Some(r) => finish_of(r, tools),
        None if v["promptFeedback"]["blockReason"].is_string() => Finish::ContentFilter,
        None => finish_of("STOP", tools),
    };
    Some(Answer {
        id: v["responseId"].as_str().unwrap_or("gemini").to_string(),
        model: v["modelVersion"].as_str().unwrap_or_default().to_string(),
        parts,
        finish,
        usage: usage_of(&v["usageMetadata"], Dialect::Gemini),
    })
}

fn answer_parts(parts: &[Part]) -> Vec<Value> {
    parts
        .iter()
        .filter_map(|p| match p {
            Part::Text(t) => Some(json!({"text": t})),
            Part::ToolCall { id, name, arguments } => Some(json!({"functionCall": {"id": id, "name": name, "args": args_value(arguments)}})),
            _ => None,
        })
        .collect()
}

pub fn write_answer(a: &Answer) -> Value {
    json!({
        "candidates": [{"content": {"role": "model", "parts": answer_parts(&a.parts)}, "finishReason": finish_str(a.finish), "index": 0}],
        "usageMetadata": usage_json(&a.usage),
        "modelVersion": a.model,
        "responseId": a.id,
    })
}

/// Reads Gemini stream chunks into neutral events.
#[derive(Default)]
pub struct Reader {
    started: bool,
    calls: usize,
}

impl super::StreamReader for Reader {
    fn read(&mut self, data: &str) -> Vec<Event> {
        serde_json::from_str(data).map(|v| self.read_value(&v)).unwrap_or_default()
    }
}

impl Reader {
    fn read_value(&mut self, v: &Value) -> Vec<Event> {
        let mut out = Vec::new();
        if let Some(e) = v.get("error") {
            out.push(Event::Error { kind: ErrorKind::Upstream, message: e["message"].as_str().unwrap_or("upstream stream error").to_string() });
            return out;
        }
        if !self.started {
            self.started = true;
            out.push(Event::Start {
                id: v["responseId"].as_str().unwrap_or_default().to_string(),
                model: v["modelVersion"].as_str().unwrap_or_default().to_string(),
            });
        }
        // Gemini sends each call whole: its start and all its arguments.
        let mut index = self.calls;
        for p in candidate_parts(v, &mut self.calls) {
            match p {
                Part::Text(t) => out.push(Event::Text(t)),
                Part::ToolCall { id, name, arguments } => {
                    out.push(Event::ToolStart { index, id, name });
                    out.push(Event::ToolArgs { index, json: arguments });
                    index += 1;
                }
                _ => {}
            }
        }
        if v["usageMetadata"].is_object() {
            out.push(Event::Usage(usage_of(&v["usageMetadata"], Dialect::Gemini)));
        }
        if let Some(r) = v["candidates"][0]["finishReason"].as_str() {
            out.push(Event::Finish(finish_of(r, self.calls > 0)));
            // No end marker follows: this chunk is the last.
            out.push(Event::End);
        }
        out
    }
}

/// Writes neutral events as Gemini stream chunks. A tool call's argument
/// fragments are gathered until the call is complete (Gemini sends each
/// call as one object); text goes out as it comes.
pub struct GeminiStream {
    id: String,
    model: String,
    /// The tool call being gathered: name, id, argument text.
    call: Option<(String, String, String)>,
    tail: Tail,
}

impl GeminiStream {
    pub fn new(model: &str) -> Self {
        GeminiStream { id: String::new(), model: model.to_string(), call: None, tail: Tail::default() }
    }

    fn chunk(&self, parts: Vec<Value>, finish: Option<Finish>) -> Value {
        let mut cand = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        let mut c = json!({"modelVersion": self.model, "responseId": self.id});
        if let Some(f) = finish {
            cand["finishReason"] = json!(finish_str(f));
            c["usageMetadata"] = usage_json(&self.tail.usage());
        }
        c["candidates"] = json!([cand]);
        c
    }

    fn flush_call(&mut self, out: &mut Vec<u8>) {
        if let Some((name, id, args)) = self.call.take() {
            let c = self.chunk(vec![json!({"functionCall": {"id": id, "name": name, "args": args_value(&args)}})], None);
            sse_data(out, &c);
        }
    }
}

impl super::StreamWriter for GeminiStream {
    fn write(&mut self, e: &Event, out: &mut Vec<u8>) {
        if !matches!(e, Event::ToolArgs { .. } | Event::Usage(_) | Event::Finish(_)) {
            self.flush_call(out);
        }
        match e {
            Event::Start { id, model } => {
                self.id = id.clone();
                if !model.is_empty() {
                    self.model = model.clone();
                }
            }
            Event::Text(t) => {
                let c = self.chunk(vec![json!({"text": t})], None);
                sse_data(out, &c);
            }
            Event::ToolStart { id, name, .. } => self.call = Some((name.clone(), id.clone(), String::new())),
            Event::ToolArgs { json, .. } => {
                if let Some((_, _, args)) = &mut self.call {
                    args.push_str(json);
                }
            }
            Event::Finish(_) | Event::Usage(_) => self.tail.note(e),
            Event::Error { kind, message } => {
                sse_data(out, &json!({"error": {"code": 500, "message": message, "status": kind.grpc_status()}}));
                self.tail.done = true;
            }
            Event::End => self.end(out),
        }
    }

    /// The last chunk: finish reason and usage.
    fn end(&mut self, out: &mut Vec<u8>) {
        if self.tail.done {
            return;
        }
        self.flush_call(out);
        self.tail.done = true;
        let c = self.chunk(vec![json!({"text": ""})], Some(self.tail.finish()));
        sse_data(out, &c);
    }
}
