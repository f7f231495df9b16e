//! The Anthropic dialect: Messages answers, their SSE event sequences and
//! error bodies and events.

use serde_json::{json, Value};

use super::{ev, CACHED_TOKENS, COMPLETION_TOKENS, PROMPT_TOKENS};

/// The error body for a `code` answer (529: `overloaded_error`, "Overloaded").
pub(super) fn error_body(code: u16) -> Value {
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
}

/// The `event: error` a 200 stream opens with.
pub(super) fn error_event() -> String {
    ev("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
}

fn usage() -> Value {
    json!({"input_tokens": PROMPT_TOKENS - CACHED_TOKENS, "cache_creation_input_tokens": 0, "cache_read_input_tokens": CACHED_TOKENS, "output_tokens": COMPLETION_TOKENS})
}

pub(super) fn message(model: &str) -> Value {
    json!({
        "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": "Hello from the mock"}],
        "stop_reason": "end_turn", "stop_sequence": null, "usage": usage()
    })
}

/// The `message_start` event every Anthropic stream opens with.
fn start(model: &str) -> String {
    let mut usage = usage();
    usage["output_tokens"] = json!(1);
    ev(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": null, "stop_sequence": null, "usage": usage}}),
    )
}

pub(super) fn stream(model: &str) -> Vec<String> {
    vec![
        start(model),
        ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
        ev("ping", json!({"type": "ping"})),
        ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}})),
        ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " from the mock"}})),
        ev("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
        ev(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": COMPLETION_TOKENS}}),
        ),
        ev("message_stop", json!({"type": "message_stop"})),
    ]
}

/// A message that says "Let me check." and calls `tool` with {"city": "Paris"}.
pub(super) fn tool_use(model: &str, tool: &str) -> Value {
    json!({
        "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": "Let me check."}, {"type": "tool_use", "id": "toolu_mock1", "name": tool, "input": {"city": "Paris"}}],
        "stop_reason": "tool_use", "stop_sequence": null, "usage": usage()
    })
}

pub(super) fn tool_stream(model: &str, tool: &str) -> Vec<String> {
    vec![
        start(model),
        ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
        ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me check."}})),
        ev("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_mock1", "name": tool, "input": {}}}),
        ),
        ev("content_block_delta", json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": "}})),
        ev("content_block_delta", json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}})),
        ev("content_block_stop", json!({"type": "content_block_stop", "index": 1})),
        ev(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": COMPLETION_TOKENS}}),
        ),
        ev("message_stop", json!({"type": "message_stop"})),
    ]
}

// === Scripted answers (`Mock::answer`, `x-mock-answer-MODEL`) ===

use super::answer::Answer;

fn stop_reason(a: &Answer) -> &'static str {
    match a {
        Answer::Refusal => "refusal",
        Answer::Truncated(_) => "max_tokens",
        _ => "end_turn",
    }
}

pub(super) fn message_scripted(model: &str, a: &Answer) -> Value {
    let mut m = message(model);
    m["content"] = match a {
        Answer::Refusal | Answer::Empty => json!([]),
        _ => json!([{"type": "text", "text": a.text()}]),
    };
    m["stop_reason"] = json!(stop_reason(a));
    m
}

pub(super) fn stream_scripted(model: &str, a: &Answer) -> Vec<String> {
    let mut ev_list = vec![start(model)];
    if !matches!(a, Answer::Refusal) {
        ev_list.push(ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
        for t in a.tokens() {
            ev_list.push(ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}})));
        }
        ev_list.push(ev("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
    }
    ev_list.push(ev(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(a), "stop_sequence": null}, "usage": {"output_tokens": COMPLETION_TOKENS}}),
    ));
    ev_list.push(ev("message_stop", json!({"type": "message_stop"})));
    ev_list
}
