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
//!
//! This file owns the server, the scripts, the recording and the routing by
//! path; each dialect's bodies and event sequences live in its own module.
#![allow(dead_code)]

mod answer;
mod anthropic;
mod gemini;
mod openai;

#[allow(unused_imports)]
pub use answer::{Answer, REFUSAL};

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
    /// Scripted answer contents by upstream model id.
    answers: std::collections::HashMap<String, Answer>,
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
    gate: Arc<Gate>,
}

impl Mock {
    pub async fn start() -> Mock {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let addr = listener.local_addr().unwrap();
        let mock = Mock { addr, inner: Arc::default(), gate: Arc::default() };
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

    /// What `model` (an upstream model id) answers from now on (until
    /// `clear_answers`), for every call a script does not fail.
    pub fn answer(&self, model: &str, a: Answer) {
        self.inner.lock().unwrap().answers.insert(model.to_string(), a);
    }

    pub fn clear_answers(&self) {
        self.inner.lock().unwrap().answers.clear();
    }

    /// The model ids `GET /v1/models` lists from now on.
    pub fn set_models(&self, ids: &[&str]) {
        self.inner.lock().unwrap().models = Some(ids.iter().map(|s| s.to_string()).collect());
    }

    pub fn last(&self) -> Recorded {
        self.requests().pop().expect("the mock received no request")
    }

    /// The last model call (health checks and model listings skipped:
    /// they may arrive at any time).
    pub fn last_call(&self) -> Recorded {
        self.requests().into_iter().rev().find(|r| r.method != "GET").expect("the mock received no model call")
    }

    /// Let one gated stream continue.
    pub fn release(&self) {
        self.gate.permits.add_permits(1);
    }

    /// Gated streams waiting for `release()` whose connection is still
    /// open (one whose caller closed the connection is dropped).
    pub fn gated_open(&self) -> usize {
        self.gate.waiting.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Holds gated streams (`Script::Gated`) until `Mock::release()`.
pub struct Gate {
    permits: Semaphore,
    waiting: std::sync::atomic::AtomicUsize,
}

impl Default for Gate {
    fn default() -> Self {
        Gate { permits: Semaphore::new(0), waiting: Default::default() }
    }
}

impl Gate {
    /// Wait for a permit; counted as waiting until it comes or the stream
    /// is dropped.
    async fn pass(&self) -> bool {
        struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        self.waiting.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _w = Waiting(&self.waiting);
        self.permits.acquire().await.map(|p| p.forget()).is_ok()
    }
}

fn sse(events: Vec<String>, script: Script, gate: Arc<Gate>) -> Response {
    let stream = async_stream(events, script, gate);
    Response::builder().header("content-type", "text/event-stream").header("cache-control", "no-cache").body(Body::from_stream(stream)).unwrap()
}

fn async_stream(events: Vec<String>, script: Script, gate: Arc<Gate>) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold((0usize, events, script, gate), |(i, events, script, gate)| async move {
        if i >= events.len() {
            return None;
        }
        if i == 1 {
            match script {
                Script::Gated if !gate.pass().await => return None,
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
    Response::builder().status(status).header("content-type", "application/json").header("x-request-id", "req_mock").body(Body::from(v.to_string())).unwrap()
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
/// The wire dialect a path speaks: it picks the error body and event, and
/// the module that writes the answer.
#[derive(Clone, Copy, PartialEq)]
enum Dialect {
    OpenAi,
    Anthropic,
    Gemini,
}

impl Dialect {
    fn of(path: &str) -> Dialect {
        if path == "/v1/messages" {
            Dialect::Anthropic
        } else if path.starts_with("/v1beta/") {
            Dialect::Gemini
        } else {
            Dialect::OpenAi
        }
    }
}

/// The provider's error body for `code`, in the dialect of `path`.
fn error_response(code: u16, path: &str, retry_after: Option<u64>) -> Response {
    let err = match Dialect::of(path) {
        Dialect::Anthropic => anthropic::error_body(code),
        Dialect::Gemini => gemini::error_body(code),
        Dialect::OpenAi => openai::error_body(code),
    };
    let mut r = json_response(code, err);
    if let Some(s) = retry_after {
        r.headers_mut().insert("retry-after", s.into());
    }
    r
}

/// A 200 stream whose first event is the provider's error event.
fn error_event(path: &str, gate: Arc<Gate>) -> Response {
    let e = match Dialect::of(path) {
        Dialect::Anthropic => anthropic::error_event(),
        Dialect::Gemini => gemini::error_event(),
        Dialect::OpenAi => openai::error_event(path),
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
        return json_response(200, openai::models(&ids));
    }
    if method == Method::GET && uri.path() == "/v1beta/models" {
        return json_response(200, gemini::models());
    }
    let model = req["model"].as_str().unwrap_or("unknown").to_string();
    let stream = req["stream"] == json!(true);
    let scripted = answer::from_headers(&headers, &model).or_else(|| mock.inner.lock().unwrap().answers.get(&model).cloned());
    if let Some(a) = scripted {
        let include_usage = req["stream_options"]["include_usage"] == json!(true);
        match (uri.path(), stream) {
            ("/v1/chat/completions", false) => return json_response(200, openai::chat_scripted(&model, &a)),
            ("/v1/chat/completions", true) => return sse(openai::chat_stream_scripted(&model, &a, include_usage), script, gate),
            ("/v1/responses", false) => return json_response(200, openai::responses_scripted(&model, &a)),
            ("/v1/responses", true) => return sse(openai::responses_stream_scripted(&model, &a), script, gate),
            ("/v1/messages", false) => return json_response(200, anthropic::message_scripted(&model, &a)),
            ("/v1/messages", true) => return sse(anthropic::stream_scripted(&model, &a), script, gate),
            _ => {}
        }
    }
    // With tools offered and no tool result yet, the answer calls the
    // first tool with {"city": "Paris"}.
    let last = req["messages"].as_array().or(req["contents"].as_array()).and_then(|m| m.last()).cloned().unwrap_or(Value::Null);
    let has_result = last["role"] == "tool"
        || last["content"].as_array().is_some_and(|c| c.iter().any(|b| b["type"] == "tool_result"))
        || last["parts"].as_array().is_some_and(|p| p.iter().any(|p| p.get("functionResponse").is_some()));
    let tool = req["tools"]
        .as_array()
        .and_then(|ts| match gemini {
            Some(_) => gemini::tool_name(ts),
            // OpenAI's `{"function": {"name"}}` or Anthropic's `{"name"}`.
            None => ts.first().map(|t| t["function"]["name"].as_str().or(t["name"].as_str()).unwrap_or("tool")),
        })
        .map(String::from)
        .filter(|_| !has_result);
    if let Some((model, call)) = gemini.filter(|(_, call)| matches!(*call, "generateContent" | "streamGenerateContent")) {
        return gemini::answer(
            model,
            call == "streamGenerateContent",
            uri.query().unwrap_or("").split('&').any(|q| q == "alt=sse"),
            tool.as_deref(),
            script,
            gate,
        );
    }
    if let Some(tool) = tool {
        return match (uri.path(), stream) {
            ("/v1/chat/completions", false) => json_response(200, openai::tool_call(&model, &tool)),
            ("/v1/chat/completions", true) => sse(openai::tool_stream(&model, &tool), script, gate),
            ("/v1/messages", false) => json_response(200, anthropic::tool_use(&model, &tool)),
            (_, _) => sse(anthropic::tool_stream(&model, &tool), script, gate),
        };
    }
    match uri.path() {
        "/v1/chat/completions" if stream => sse(openai::chat_stream(&model, req["stream_options"]["include_usage"] == json!(true)), script, gate),
        "/v1/chat/completions" => json_response(200, openai::chat(&model)),
        "/v1/completions" => json_response(200, openai::completion(&model)),
        "/v1/embeddings" => json_response(200, openai::embedding(&model)),
        "/v1/responses" if stream => sse(openai::responses_stream(&model), script, gate),
        "/v1/responses" => json_response(200, openai::responses_json(&model)),
        "/v1/messages" if stream => sse(anthropic::stream(&model), script, gate),
        "/v1/messages" => json_response(200, anthropic::message(&model)),
        path => json_response(404, openai::not_found(path)),
    }
}

/// One SSE `data:` event.
fn data(v: Value) -> String {
    format!("data: {v}\n\n")
}

/// One SSE event with an `event:` name.
fn ev(name: &str, v: Value) -> String {
    format!("event: {name}\ndata: {v}\n\n")
}
