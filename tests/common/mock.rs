//! A scripted mock LLM provider speaking the real OpenAI, Anthropic and
//! Gemini wire formats (JSON and SSE event sequences), for tests and
//! benchmarks.
//!
//! Paths: `/v1/chat/completions`, `/v1/completions`, `/v1/responses`,
//! `/v1/embeddings`, `GET /v1/models` (OpenAI), `/v1/messages` (Anthropic),
//! and `/v1beta/models/{model}:generateContent`,
//! `/v1beta/models/{model}:streamGenerateContent?alt=sse`, `GET /v1beta/models`
//! (Gemini Developer API). It records every request, echoes the model it
//! received, reports fixed usage, and can be scripted per call (`Script`): a
//! status to answer (with that provider's error body, optionally
//! `Retry-After`), a delay before the header, a gate that holds a stream
//! after its first event until the test releases it, a stream cut (or ended
//! cleanly) after its first event, a connection reset before any response,
//! a 200 stream whose first event is the provider's error event, or a 200
//! whose body is not JSON. `fail_randomly` fails a share of the unscripted
//! calls (seeded PRNG, reproducible). Model listings (`GET /v1/models`,
//! `GET /v1beta/models`) answer `set_models` ids and never take queued or
//! random scripts, so a health checker polling them leaves a test's script
//! alone; `model_calls()` counts the other calls.
//!
//! A request header `x-mock-script: cut|truncate|reset|error_event|invalid_body|status:N`
//! scripts that one call (without taking a queued script); a suffix
//! `@MODEL` (`status:503@gpt-4o`) limits it to calls for that upstream model
//! id, so a fallback model that gets the same forwarded header is not hit.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;

/// Usage the mock reports on every model call.
pub const PROMPT_TOKENS: u64 = 1200;
pub const CACHED_TOKENS: u64 = 200;
pub const COMPLETION_TOKENS: u64 = 300;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// What the mock does for one call.
#[derive(Debug, Clone, Default)]
pub enum Script {
    /// The normal, successful answer.
    #[default]
    Ok,
    /// Answer with this status and a provider-shaped error body.
    Status(u16),
    /// Wait before sending the response header.
    Delay(Duration),
    /// Stream: send the first event, then wait for `Mock::release()`.
    Gated,
    /// Stream: send the first event, then cut the connection.
    Cut,
    /// Stream: send the first event, then end the body cleanly, without the
    /// dialect's final event (`[DONE]`, `message_stop`, …).
    Truncate,
    /// Read the request, then close the connection with a TCP reset and no
    /// response at all.
    Reset,
    /// 200 `text/event-stream` whose first and only event is the provider's
    /// error event (Anthropic `event: error` overloaded_error, OpenAI
    /// `data: {"error": …}`, Gemini `data: {"error": {"code": 503, …}}`), for
    /// streamed and non-streamed calls alike.
    ErrorEvent,
    /// 200 `application/json` with the body `<html>upstream proxy error</html>`.
    InvalidBody,
    /// Like `Status`, with a `Retry-After: SECONDS` header.
    StatusRetryAfter(u16, u64),
}

#[derive(Default)]
struct Inner {
    requests: Vec<Recorded>,
    scripts: VecDeque<Script>,
    /// `fail_randomly`: (ratio, status) and the PRNG state.
    random: Option<(f64, u16)>,
    rng: u64,
    /// Ids `GET /v1/models` lists (`None`: gpt-4o-mini).
    models: Option<Vec<String>>,
}

impl Inner {
    /// The next unscripted call's random failure, if any (splitmix64).
    fn random_failure(&mut self) -> Option<Script> {
        let (ratio, status) = self.random?;
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let x = ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64;
        (x < ratio).then_some(Script::Status(status))
    }
}

/// The mock's listener: every connection carries a flag that `Script::Reset`
/// sets, after which the connection fails its next write (the response) and
/// is closed with SO_LINGER 0, a TCP RST, before any response byte is sent.
struct ResettableListener(tokio::net::TcpListener);

struct Conn {
    tcp: tokio::net::TcpStream,
    kill: Arc<AtomicBool>,
}

#[derive(Clone)]
struct Kill(Arc<AtomicBool>);

impl axum::serve::Listener for ResettableListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        loop {
            if let Ok((tcp, addr)) = self.0.accept().await {
                let _ = tcp.set_nodelay(true);
                return (Conn { tcp, kill: Arc::default() }, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, ResettableListener>> for Kill {
    fn connect_info(s: axum::serve::IncomingStream<'_, ResettableListener>) -> Kill {
        Kill(s.io().kill.clone())
    }
}

impl Conn {
    fn killed(&self) -> Option<std::io::Error> {
        self.kill.load(Ordering::SeqCst).then(|| {
            let _ = self.tcp.set_zero_linger();
            std::io::ErrorKind::ConnectionReset.into()
        })
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.killed() {
            Some(e) => Poll::Ready(Err(e)),
            None => Pin::new(&mut self.tcp).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.killed() {
            Some(e) => Poll::Ready(Err(e)),
            None => Pin::new(&mut self.tcp).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.killed() {
            Some(e) => Poll::Ready(Err(e)),
            None => Pin::new(&mut self.tcp).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[derive(Clone)]
pub struct Mock {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    gate: Arc<Semaphore>,
}

impl Mock {
    pub async fn start() -> Mock {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let addr = listener.local_addr().unwrap();
        let mock = Mock { addr, inner: Arc::default(), gate: Arc::new(Semaphore::new(0)) };
        let app = axum::Router::new().fallback(handle).layer(axum::extract::DefaultBodyLimit::disable()).with_state(mock.clone());
        tokio::spawn(async move {
            axum::serve(ResettableListener(listener), app.into_make_service_with_connect_info::<Kill>()).await.ok();
        });
        mock
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queue scripts for the next calls, in order; later calls answer `Ok`.
    pub fn script(&self, s: impl IntoIterator<Item = Script>) {
        self.inner.lock().unwrap().scripts.extend(s);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }

    pub fn calls(&self) -> usize {
        self.inner.lock().unwrap().requests.len()
    }

    /// Calls other than GETs (model listings, health checks).
    pub fn model_calls(&self) -> usize {
        self.inner.lock().unwrap().requests.iter().filter(|r| r.method != "GET").count()
    }

    /// While `ratio > 0`, each call with no queued script fails with
    /// `status` with that probability; the PRNG restarts from a fixed seed.
    pub fn fail_randomly(&self, ratio: f64, status: u16) {
        let mut inner = self.inner.lock().unwrap();
        inner.random = (ratio > 0.0).then_some((ratio, status));
        inner.rng = 0x5EED;
    }

    /// The model ids `GET /v1/models` lists from now on.
    pub fn set_models(&self, ids: &[&str]) {
        self.inner.lock().unwrap().models = Some(ids.iter().map(|s| s.to_string()).collect());
    }

    pub fn last(&self) -> Recorded {
        self.requests().pop().expect("the mock received no request")
    }

    /// Let one gated stream continue.
    pub fn release(&self) {
        self.gate.add_permits(1);
    }
}

fn sse(events: Vec<String>, script: Script, gate: Arc<Semaphore>) -> Response {
    let stream = async_stream(events, script, gate);
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn async_stream(events: Vec<String>, script: Script, gate: Arc<Semaphore>) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold((0usize, events, script, gate), |(i, events, script, gate)| async move {
        if i >= events.len() {
            return None;
        }
        if i == 1 {
            match script {
                Script::Gated => {
                    gate.acquire().await.ok()?.forget();
                }
                Script::Cut => {
                    // Let the first event reach the client before the cut.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return Some((Err(std::io::Error::other("cut")), (events.len(), events, script, gate)));
                }
                Script::Truncate => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return None;
                }
                _ => {}
            }
        }
        let item = Bytes::from(events[i].clone());
        Some((Ok(item), (i + 1, events, script, gate)))
    })
}

fn json_response(status: u16, v: Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-request-id", "req_mock")
        .body(Body::from(v.to_string()))
        .unwrap()
}

/// A `x-mock-script` header value, when it applies to a call for `model`.
fn header_script(v: &str, model: &str) -> Option<Script> {
    let (s, only) = v.split_once('@').map_or((v, None), |(s, m)| (s, Some(m)));
    if only.is_some_and(|m| m != model) {
        return None;
    }
    match s {
        "cut" => Some(Script::Cut),
        "truncate" => Some(Script::Truncate),
        "reset" => Some(Script::Reset),
        "error_event" => Some(Script::ErrorEvent),
        "invalid_body" => Some(Script::InvalidBody),
        _ => s.strip_prefix("status:")?.parse().ok().map(Script::Status),
    }
}

/// The provider's error body for `code`, in the dialect of `path`.
fn error_response(code: u16, path: &str, retry_after: Option<u64>) -> Response {
    let err = if path == "/v1/messages" {
        let kind = match code {
            400 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            529 => "overloaded_error",
            _ => "api_error",
        };
        let message = if code == 529 { "Overloaded".to_string() } else { format!("mock {code}") };
        json!({"type": "error", "error": {"type": kind, "message": message}})
    } else if path.starts_with("/v1beta/") {
        json!({"error": {"code": code, "message": format!("mock {code}"), "status": gemini_status(code)}})
    } else {
        json!({"error": {"message": format!("mock {code}"), "type": "server_error", "param": null, "code": null}})
    };
    let mut r = json_response(code, err);
    if let Some(s) = retry_after {
        r.headers_mut().insert("retry-after", s.into());
    }
    r
}

/// A 200 stream whose first event is the provider's error event.
fn error_event(path: &str, gate: Arc<Semaphore>) -> Response {
    let e = match path {
        "/v1/messages" => ev("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})),
        "/v1/responses" => ev("error", json!({"type": "error", "code": "server_error", "message": "The server had an error", "param": null, "sequence_number": 0})),
        p if p.starts_with("/v1beta/") => data(json!({"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}})),
        _ => data(json!({"error": {"message": "The server had an error", "type": "server_error", "param": null, "code": null}})),
    };
    sse(vec![e], Script::Ok, gate)
}

async fn handle(State(mock): State<Mock>, ConnectInfo(kill): ConnectInfo<Kill>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    // Gemini: `/v1beta/models/{model}:{method}`, the model in the path.
    let gemini = uri.path().strip_prefix("/v1beta/models/").and_then(|r| r.split_once(':'));
    let upstream_model = req["model"].as_str().or(gemini.map(|g| g.0)).unwrap_or("");
    let listing = method == Method::GET && matches!(uri.path(), "/v1/models" | "/v1beta/models");
    let script = {
        let mut inner = mock.inner.lock().unwrap();
        inner.requests.push(Recorded { method: method.to_string(), path: uri.to_string(), headers: headers.clone(), body: body.clone() });
        // Clients that cannot reach the mock's API (the SDK tests) script a
        // call with a header, which modelgate forwards like any other.
        match headers.get("x-mock-script").and_then(|v| v.to_str().ok()).and_then(|v| header_script(v, upstream_model)) {
            Some(s) => s,
            None if listing => Script::Ok,
            None => inner.scripts.pop_front().or_else(|| inner.random_failure()).unwrap_or_default(),
        }
    };
    let gate = mock.gate.clone();
    match script {
        Script::Status(code) => return error_response(code, uri.path(), None),
        Script::StatusRetryAfter(code, secs) => return error_response(code, uri.path(), Some(secs)),
        Script::Delay(d) => tokio::time::sleep(d).await,
        Script::Reset => {
            kill.0.store(true, Ordering::SeqCst);
            return Response::new(Body::empty());
        }
        Script::ErrorEvent => return error_event(uri.path(), gate),
        Script::InvalidBody => {
            return Response::builder().header("content-type", "application/json").body(Body::from("<html>upstream proxy error</html>")).unwrap();
        }
        _ => {}
    }
    if method == Method::GET && uri.path() == "/v1/models" {
        let ids = mock.inner.lock().unwrap().models.clone().unwrap_or_else(|| vec!["gpt-4o-mini".into()]);
        let data: Vec<Value> = ids.iter().map(|id| json!({"id": id, "object": "model", "created": 1, "owned_by": "openai"})).collect();
        return json_response(200, json!({"object": "list", "data": data}));
    }
    if method == Method::GET && uri.path() == "/v1beta/models" {
        return json_response(200, json!({"models": [{"name": "models/gemini-2.5-flash", "version": "001", "displayName": "Gemini 2.5 Flash",
            "inputTokenLimit": 1048576, "outputTokenLimit": 65536, "supportedGenerationMethods": ["generateContent", "countTokens"], "thinking": true}]}));
    }
    let model = req["model"].as_str().unwrap_or("unknown").to_string();
    let stream = req["stream"] == json!(true);
    // With tools offered and no tool result yet, the answer calls the
    // first tool with {"city": "Paris"}.
    let last = req["messages"].as_array().or(req["contents"].as_array()).and_then(|m| m.last()).cloned().unwrap_or(Value::Null);
    let has_result = last["role"] == "tool"
        || last["content"].as_array().is_some_and(|c| c.iter().any(|b| b["type"] == "tool_result"))
        || last["parts"].as_array().is_some_and(|p| p.iter().any(|p| p.get("functionResponse").is_some()));
    let tool = req["tools"]
        .as_array()
        .and_then(|ts| match gemini {
            Some(_) => ts.iter().find_map(|t| t["functionDeclarations"][0]["name"].as_str()),
            None => ts.first().map(|t| t["function"]["name"].as_str().or(t["name"].as_str()).unwrap_or("tool")),
        })
        .map(String::from)
        .filter(|_| !has_result);
    if let Some((model, call)) = gemini.filter(|(_, call)| matches!(*call, "generateContent" | "streamGenerateContent")) {
        return gemini_answer(model, call == "streamGenerateContent", uri.query().unwrap_or("").split('&').any(|q| q == "alt=sse"), tool.as_deref(), script, gate);
    }
    if let Some(tool) = tool {
        return match (uri.path(), stream) {
            ("/v1/chat/completions", false) => json_response(200, openai_tool_call(&model, &tool)),
            ("/v1/chat/completions", true) => sse(openai_tool_stream(&model, &tool), script, gate),
            ("/v1/messages", false) => json_response(200, anthropic_tool_use(&model, &tool)),
            (_, _) => sse(anthropic_tool_stream(&model, &tool), script, gate),
        };
    }
    match uri.path() {
        "/v1/chat/completions" if stream => sse(openai_chat_stream(&model, req["stream_options"]["include_usage"] == json!(true)), script, gate),
        "/v1/chat/completions" => json_response(200, openai_chat(&model)),
        "/v1/completions" => json_response(200, json!({
            "id": "cmpl-mock", "object": "text_completion", "created": 1, "model": model,
            "choices": [{"text": "Hello", "index": 0, "logprobs": null, "finish_reason": "stop"}],
            "usage": openai_usage()})),
        "/v1/embeddings" => json_response(200, json!({
            "object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
            "model": model, "usage": {"prompt_tokens": PROMPT_TOKENS, "total_tokens": PROMPT_TOKENS}})),
        "/v1/responses" if stream => sse(responses_stream(&model), script, gate),
        "/v1/responses" => json_response(200, responses_json(&model)),
        "/v1/messages" if stream => sse(anthropic_stream(&model), script, gate),
        "/v1/messages" => json_response(200, anthropic_message(&model)),
        _ => json_response(404, json!({"error": {"message": format!("mock has no {}", uri.path()), "type": "invalid_request_error", "param": null, "code": null}})),
    }
}

fn openai_usage() -> Value {
    json!({"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS, "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
           "prompt_tokens_details": {"cached_tokens": CACHED_TOKENS, "audio_tokens": 0},
           "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}})
}

fn openai_chat(model: &str) -> Value {
    json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1731000000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the mock", "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
        "usage": openai_usage(), "system_fingerprint": "fp_mock", "service_tier": "default"
    })
}

fn data(v: Value) -> String {
    format!("data: {v}\n\n")
}

fn openai_chat_stream(model: &str, include_usage: bool) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1731000000, "model": model, "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if include_usage {
            c["usage"] = Value::Null;
        }
        data(c)
    };
    let mut ev = vec![
        chunk(json!({"role": "assistant", "content": "", "refusal": null}), Value::Null),
        chunk(json!({"content": "Hello"}), Value::Null),
        chunk(json!({"content": " from the mock"}), Value::Null),
        chunk(json!({}), json!("stop")),
    ];
    if include_usage {
        ev.push(data(json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1731000000, "model": model,
            "system_fingerprint": "fp_mock", "choices": [], "usage": openai_usage()})));
    }
    ev.push("data: [DONE]\n\n".into());
    ev
}

fn responses_json(model: &str) -> Value {
    json!({
        "id": "resp_mock", "object": "response", "created_at": 1731000000, "status": "completed", "model": model,
        "output": [{"type": "message", "id": "msg_mock", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": "Hello from the mock", "annotations": []}]}],
        "usage": {"input_tokens": PROMPT_TOKENS, "input_tokens_details": {"cached_tokens": CACHED_TOKENS},
                  "output_tokens": COMPLETION_TOKENS, "output_tokens_details": {"reasoning_tokens": 0},
                  "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}
    })
}

fn responses_stream(model: &str) -> Vec<String> {
    let mut created = responses_json(model);
    created["status"] = json!("in_progress");
    created["output"] = json!([]);
    created["usage"] = Value::Null;
    vec![
        ev("response.created", json!({"type": "response.created", "sequence_number": 0, "response": created})),
        ev("response.output_text.delta", json!({"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_mock", "output_index": 0, "content_index": 0, "delta": "Hello from the mock"})),
        ev("response.completed", json!({"type": "response.completed", "sequence_number": 2, "response": responses_json(model)})),
    ]
}

fn anthropic_usage() -> Value {
    json!({"input_tokens": PROMPT_TOKENS - CACHED_TOKENS, "cache_creation_input_tokens": 0, "cache_read_input_tokens": CACHED_TOKENS, "output_tokens": COMPLETION_TOKENS})
}

fn anthropic_message(model: &str) -> Value {
    json!({
        "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": "Hello from the mock"}],
        "stop_reason": "end_turn", "stop_sequence": null, "usage": anthropic_usage()
    })
}

fn ev(name: &str, v: Value) -> String {
    format!("event: {name}\ndata: {v}\n\n")
}

/// The `message_start` event every Anthropic stream opens with.
fn anthropic_start(model: &str) -> String {
    let mut usage = anthropic_usage();
    usage["output_tokens"] = json!(1);
    ev("message_start", json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": null, "stop_sequence": null, "usage": usage}}))
}

fn anthropic_stream(model: &str) -> Vec<String> {
    vec![
        anthropic_start(model),
        ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
        ev("ping", json!({"type": "ping"})),
        ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}})),
        ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " from the mock"}})),
        ev("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
        ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": COMPLETION_TOKENS}})),
        ev("message_stop", json!({"type": "message_stop"})),
    ]
}

fn openai_tool_call(model: &str, tool: &str) -> Value {
    json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1731000000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "refusal": null,
            "tool_calls": [{"id": "call_mock1", "type": "function", "function": {"name": tool, "arguments": "{\"city\": \"Paris\"}"}}]},
            "logprobs": null, "finish_reason": "tool_calls"}],
        "usage": openai_usage()
    })
}

fn openai_tool_stream(model: &str, tool: &str) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| data(json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1731000000, "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]}));
    vec![
        chunk(json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_mock1", "type": "function", "function": {"name": tool, "arguments": ""}}]}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}), Value::Null),
        chunk(json!({}), json!("tool_calls")),
        data(json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1731000000, "model": model, "choices": [], "usage": openai_usage()})),
        "data: [DONE]\n\n".into(),
    ]
}

fn anthropic_tool_use(model: &str, tool: &str) -> Value {
    json!({
        "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": "Let me check."}, {"type": "tool_use", "id": "toolu_mock1", "name": tool, "input": {"city": "Paris"}}],
        "stop_reason": "tool_use", "stop_sequence": null, "usage": anthropic_usage()
    })
}

fn anthropic_tool_stream(model: &str, tool: &str) -> Vec<String> {
    vec![
        anthropic_start(model),
        ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
        ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me check."}})),
        ev("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
        ev("content_block_start", json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_mock1", "name": tool, "input": {}}})),
        ev("content_block_delta", json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": "}})),
        ev("content_block_delta", json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}})),
        ev("content_block_stop", json!({"type": "content_block_stop", "index": 1})),
        ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": COMPLETION_TOKENS}})),
        ev("message_stop", json!({"type": "message_stop"})),
    ]
}

/// The `status` of a Gemini (google.rpc) error for an HTTP status.
fn gemini_status(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// Gemini's usage: `promptTokenCount` includes the cached tokens.
fn gemini_usage() -> Value {
    json!({"promptTokenCount": PROMPT_TOKENS, "candidatesTokenCount": COMPLETION_TOKENS, "totalTokenCount": PROMPT_TOKENS + COMPLETION_TOKENS, "cachedContentTokenCount": CACHED_TOKENS})
}

/// One GenerateContentResponse (a whole answer, or one streamed chunk).
fn gemini_response(model: &str, parts: Value, finish: Option<&str>, usage: Value) -> Value {
    let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
    if let Some(f) = finish {
        candidate["finishReason"] = json!(f);
    }
    json!({"candidates": [candidate], "usageMetadata": usage, "modelVersion": model, "responseId": "mock-gemini-1"})
}

/// Text, or a call of `tool` with {"city": "Paris"} (finishReason STOP, as
/// Gemini reports function calls). Streamed: the text in two chunks, or the
/// whole call in one chunk then a closing one; only the last chunk has the
/// finishReason and the full usage. Without `alt=sse` the stream is a JSON
/// array of the chunks, as the real API sends it.
fn gemini_answer(model: &str, stream: bool, sse_alt: bool, tool: Option<&str>, script: Script, gate: Arc<Semaphore>) -> Response {
    let text = |t: &str| json!([{"text": t}]);
    let (whole, first, rest) = match tool {
        Some(t) => {
            let call = json!([{"functionCall": {"name": t, "args": {"city": "Paris"}}}]);
            (call.clone(), call, text(""))
        }
        None => (text("Hello from the mock"), text("Hello"), text(" from the mock")),
    };
    if !stream {
        return json_response(200, gemini_response(model, whole, Some("STOP"), gemini_usage()));
    }
    let partial = json!({"promptTokenCount": PROMPT_TOKENS, "totalTokenCount": PROMPT_TOKENS});
    let chunks = vec![gemini_response(model, first, None, partial), gemini_response(model, rest, Some("STOP"), gemini_usage())];
    if !sse_alt {
        return json_response(200, Value::Array(chunks));
    }
    sse(chunks.into_iter().map(data).collect(), script, gate)
}
