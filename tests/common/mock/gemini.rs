//! The Gemini Developer API dialect: generateContent and
//! streamGenerateContent answers (SSE and JSON array), google.rpc error
//! bodies and events, and the `GET /v1beta/models` listing.

use std::sync::Arc;

use axum::response::Response;
use serde_json::{json, Value};

use super::{data, json_response, sse, Script, CACHED_TOKENS, COMPLETION_TOKENS, PROMPT_TOKENS};

/// The error body for a `code` answer.
pub(super) fn error_body(code: u16) -> Value {
    json!({"error": {"code": code, "message": format!("mock {code}"), "status": status(code)}})
}

/// The `data: {"error": …}` a 200 stream opens with.
pub(super) fn error_event() -> String {
    data(json!({"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}))
}

/// `GET /v1beta/models`.
pub(super) fn models() -> Value {
    json!({"models": [{"name": "models/gemini-2.5-flash", "version": "001", "displayName": "Gemini 2.5 Flash",
        "inputTokenLimit": 1048576, "outputTokenLimit": 65536, "supportedGenerationMethods": ["generateContent", "countTokens"], "thinking": true}]})
}

/// The name of the first function declared in `tools`.
pub(super) fn tool_name(tools: &[Value]) -> Option<&str> {
    tools.iter().find_map(|t| t["functionDeclarations"][0]["name"].as_str())
}

/// The `status` of a Gemini (google.rpc) error for an HTTP status.
fn status(code: u16) -> &'static str {
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
fn usage() -> Value {
    json!({"promptTokenCount": PROMPT_TOKENS, "candidatesTokenCount": COMPLETION_TOKENS, "totalTokenCount": PROMPT_TOKENS + COMPLETION_TOKENS, "cachedContentTokenCount": CACHED_TOKENS})
}

/// One GenerateContentResponse (a whole answer, or one streamed chunk).
fn response(model: &str, parts: Value, finish: Option<&str>, usage: Value) -> Value {
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
pub(super) fn answer(model: &str, stream: bool, sse_alt: bool, tool: Option<&str>, script: Script, gate: Arc<super::Gate>) -> Response {
    let text = |t: &str| json!([{"text": t}]);
    let (whole, first, rest) = match tool {
        Some(t) => {
            let call = json!([{"functionCall": {"name": t, "args": {"city": "Paris"}}}]);
            (call.clone(), call, text(""))
        }
        None => (text("Hello from the mock"), text("Hello"), text(" from the mock")),
    };
    if !stream {
        return json_response(200, response(model, whole, Some("STOP"), usage()));
    }
    let partial = json!({"promptTokenCount": PROMPT_TOKENS, "totalTokenCount": PROMPT_TOKENS});
    let chunks = vec![response(model, first, None, partial), response(model, rest, Some("STOP"), usage())];
    if !sse_alt {
        return json_response(200, Value::Array(chunks));
    }
    sse(chunks.into_iter().map(data).collect(), script, gate)
}
