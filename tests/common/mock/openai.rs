//! The OpenAI dialect: Chat Completions, Responses, legacy Completions and
//! Embeddings answers, their SSE event sequences, error bodies and events,
//! and the `GET /v1/models` listing.

use serde_json::{json, Value};

use super::{data, ev, CACHED_TOKENS, COMPLETION_TOKENS, PROMPT_TOKENS};

/// The error body for a `code` answer.
pub(super) fn error_body(code: u16) -> Value {
    json!({"error": {"message": format!("mock {code}"), "type": "server_error", "param": null, "code": null}})
}

/// The error event a 200 stream opens with: Responses' `event: error`, or
/// Chat's `data: {"error": …}` for every other path.
pub(super) fn error_event(path: &str) -> String {
    match path {
        "/v1/responses" => {
            ev("error", json!({"type": "error", "code": "server_error", "message": "The server had an error", "param": null, "sequence_number": 0}))
        }
        _ => data(json!({"error": {"message": "The server had an error", "type": "server_error", "param": null, "code": null}})),
    }
}

/// The 404 for a path the mock does not serve.
pub(super) fn not_found(path: &str) -> Value {
    json!({"error": {"message": format!("mock has no {path}"), "type": "invalid_request_error", "param": null, "code": null}})
}

/// `GET /v1/models`.
pub(super) fn models(ids: &[String]) -> Value {
    let data: Vec<Value> = ids.iter().map(|id| json!({"id": id, "object": "model", "created": 1, "owned_by": "openai"})).collect();
    json!({"object": "list", "data": data})
}

fn usage() -> Value {
    json!({"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS, "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
           "prompt_tokens_details": {"cached_tokens": CACHED_TOKENS, "audio_tokens": 0},
           "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}})
}

pub(super) fn chat(model: &str) -> Value {
    json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1731000000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the mock", "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
        "usage": usage(), "system_fingerprint": "fp_mock", "service_tier": "default"
    })
}

pub(super) fn chat_stream(model: &str, include_usage: bool) -> Vec<String> {
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
            "system_fingerprint": "fp_mock", "choices": [], "usage": usage()})));
    }
    ev.push("data: [DONE]\n\n".into());
    ev
}

/// A Chat answer that calls `tool` with {"city": "Paris"}.
pub(super) fn tool_call(model: &str, tool: &str) -> Value {
    json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1731000000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "refusal": null,
            "tool_calls": [{"id": "call_mock1", "type": "function", "function": {"name": tool, "arguments": "{\"city\": \"Paris\"}"}}]},
            "logprobs": null, "finish_reason": "tool_calls"}],
        "usage": usage()
    })
}

pub(super) fn tool_stream(model: &str, tool: &str) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        data(json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1731000000, "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]}))
    };
    vec![
        chunk(
            json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_mock1", "type": "function", "function": {"name": tool, "arguments": ""}}]}),
            Value::Null,
        ),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}), Value::Null),
        chunk(json!({}), json!("tool_calls")),
        data(json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1731000000, "model": model, "choices": [], "usage": usage()})),
        "data: [DONE]\n\n".into(),
    ]
}

/// `/v1/completions` (legacy).
pub(super) fn completion(model: &str) -> Value {
    json!({
        "id": "cmpl-mock", "object": "text_completion", "created": 1, "model": model,
        "choices": [{"text": "Hello", "index": 0, "logprobs": null, "finish_reason": "stop"}],
        "usage": usage()})
}

pub(super) fn embedding(model: &str) -> Value {
    json!({
        "object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
        "model": model, "usage": {"prompt_tokens": PROMPT_TOKENS, "total_tokens": PROMPT_TOKENS}})
}

pub(super) fn responses_json(model: &str) -> Value {
    json!({
        "id": "resp_mock", "object": "response", "created_at": 1731000000, "status": "completed", "model": model,
        "output": [{"type": "message", "id": "msg_mock", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": "Hello from the mock", "annotations": []}]}],
        "usage": {"input_tokens": PROMPT_TOKENS, "input_tokens_details": {"cached_tokens": CACHED_TOKENS},
                  "output_tokens": COMPLETION_TOKENS, "output_tokens_details": {"reasoning_tokens": 0},
                  "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}
    })
}

pub(super) fn responses_stream(model: &str) -> Vec<String> {
    let mut created = responses_json(model);
    created["status"] = json!("in_progress");
    created["output"] = json!([]);
    created["usage"] = Value::Null;
    vec![
        ev("response.created", json!({"type": "response.created", "sequence_number": 0, "response": created})),
        ev(
            "response.output_text.delta",
            json!({"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_mock", "output_index": 0, "content_index": 0, "delta": "Hello from the mock"}),
        ),
        ev("response.completed", json!({"type": "response.completed", "sequence_number": 2, "response": responses_json(model)})),
    ]
}

// === Scripted answers (`Mock::answer`, `x-mock-answer-MODEL`) ===

use super::answer::{Answer, REFUSAL};

/// Chat `logprobs` for `tokens` (each with `lp`).
fn chat_logprobs(tokens: &[String], lp: f64) -> Value {
    let content: Vec<Value> = tokens.iter().map(|t| json!({"token": t, "logprob": lp, "bytes": t.as_bytes(), "top_logprobs": []})).collect();
    json!({"content": content, "refusal": null})
}

pub(super) fn chat_scripted(model: &str, a: &Answer) -> Value {
    let mut c = chat(model);
    let choice = &mut c["choices"][0];
    match a {
        Answer::Refusal => {
            choice["message"]["content"] = Value::Null;
            choice["message"]["refusal"] = json!(REFUSAL);
        }
        _ => choice["message"]["content"] = json!(a.text()),
    }
    choice["finish_reason"] = json!(a.finish());
    if let Answer::Logprobs { logprob, .. } = a {
        choice["logprobs"] = chat_logprobs(&a.tokens(), *logprob);
    }
    c
}

pub(super) fn chat_stream_scripted(model: &str, a: &Answer, include_usage: bool) -> Vec<String> {
    let chunk = |delta: Value, finish: Value, logprobs: Value| {
        let mut c = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1731000000, "model": model, "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]});
        if include_usage {
            c["usage"] = Value::Null;
        }
        data(c)
    };
    let mut ev = vec![chunk(json!({"role": "assistant", "content": "", "refusal": null}), Value::Null, Value::Null)];
    match a {
        Answer::Refusal => ev.push(chunk(json!({"refusal": REFUSAL}), Value::Null, Value::Null)),
        _ => {
            for t in a.tokens() {
                let lp = match a {
                    Answer::Logprobs { logprob, .. } => chat_logprobs(std::slice::from_ref(&t), *logprob),
                    _ => Value::Null,
                };
                ev.push(chunk(json!({"content": t}), Value::Null, lp));
            }
        }
    }
    ev.push(chunk(json!({}), json!(a.finish()), Value::Null));
    if include_usage {
        ev.push(data(json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1731000000, "model": model,
            "system_fingerprint": "fp_mock", "choices": [], "usage": usage()})));
    }
    ev.push("data: [DONE]\n\n".into());
    ev
}

pub(super) fn responses_scripted(model: &str, a: &Answer) -> Value {
    let mut r = responses_json(model);
    let content = match a {
        Answer::Refusal => json!([{"type": "refusal", "refusal": REFUSAL}]),
        Answer::Logprobs { logprob, .. } => {
            let lps: Vec<Value> = a.tokens().iter().map(|t| json!({"token": t, "logprob": logprob, "bytes": t.as_bytes(), "top_logprobs": []})).collect();
            json!([{"type": "output_text", "text": a.text(), "annotations": [], "logprobs": lps}])
        }
        _ => json!([{"type": "output_text", "text": a.text(), "annotations": []}]),
    };
    r["output"][0]["content"] = content;
    if let Answer::Truncated(_) = a {
        r["status"] = json!("incomplete");
        r["incomplete_details"] = json!({"reason": "max_output_tokens"});
        r["output"][0]["status"] = json!("incomplete");
    }
    r
}

pub(super) fn responses_stream_scripted(model: &str, a: &Answer) -> Vec<String> {
    let whole = responses_scripted(model, a);
    let mut created = whole.clone();
    created["status"] = json!("in_progress");
    created["output"] = json!([]);
    created["usage"] = Value::Null;
    let done = if whole["status"] == "incomplete" { "response.incomplete" } else { "response.completed" };
    let mut out = vec![ev("response.created", json!({"type": "response.created", "sequence_number": 0, "response": created}))];
    if !a.text().is_empty() {
        out.push(ev_delta(a.text()));
    }
    out.push(ev(done, json!({"type": done, "sequence_number": 2, "response": whole})));
    out
}

fn ev_delta(text: &str) -> String {
    ev(
        "response.output_text.delta",
        json!({"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_mock", "output_index": 0, "content_index": 0, "delta": text}),
    )
}
