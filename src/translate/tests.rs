use proptest::prelude::*;
use serde_json::json;

use super::*;

fn to_json(b: &Bytes) -> Value {
    serde_json::from_slice(b).unwrap()
}

#[test]
fn an_openai_request_becomes_the_anthropic_request_it_means() {
    let openai = json!({
        "model": "gpt-4o", "temperature": 1.5, "stop": "END", "max_completion_tokens": 200, "user": "u-7",
        "logprobs": false, "seed": 3,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "What is in this image?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{\"zoom\":2}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
            {"role": "user", "content": "and now?"}
        ],
        "tools": [{"type": "function", "function": {"name": "look", "description": "Look closer", "parameters": {"type": "object", "properties": {"zoom": {"type": "integer"}}}}}],
        "tool_choice": "required", "parallel_tool_calls": false
    });
    let (body, chat) = request(openai.to_string().as_bytes(), Dialect::OpenAi, Dialect::Anthropic, "claude-x", 4096).unwrap();
    assert_eq!(chat.dropped, vec!["logprobs", "seed"]);
    assert_eq!(
        to_json(&body),
        json!({
            "model": "claude-x", "max_tokens": 200, "system": "Be brief.",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "What is in this image?"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "look", "input": {"zoom": 2}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "a cat", "is_error": false}, {"type": "text", "text": "and now?"}]}
            ],
            "temperature": 1.0, "stop_sequences": ["END"],
            "tools": [{"name": "look", "description": "Look closer", "input_schema": {"type": "object", "properties": {"zoom": {"type": "integer"}}}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "metadata": {"user_id": "u-7"}
        })
    );
}

#[test]
fn an_anthropic_request_becomes_the_openai_request_it_means() {
    let anthropic = json!({
        "model": "claude-x", "max_tokens": 300, "stream": true, "top_k": 5,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}, {"type": "text", "text": "Describe."}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Looking."}, {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"zoom": 2}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "a cat"}]}]}
        ],
        "tools": [{"name": "look", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "look"},
        "metadata": {"user_id": "u-9"}
    });
    let (body, chat) = request(anthropic.to_string().as_bytes(), Dialect::Anthropic, Dialect::OpenAi, "gpt-4o-mini", 4096).unwrap();
    assert_eq!(chat.dropped, vec!["top_k"]);
    assert_eq!(
        to_json(&body),
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}, {"type": "text", "text": "Describe."}]},
                {"role": "assistant", "content": "Looking.", "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "look", "arguments": "{\"zoom\":2}"}}]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "a cat"}
            ],
            "max_tokens": 300,
            "tools": [{"type": "function", "function": {"name": "look", "description": null, "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "look"}},
            "user": "u-9",
            "stream": true, "stream_options": {"include_usage": true}
        })
    );
}

#[test]
fn fields_that_would_change_the_answer_are_refused_with_the_reason() {
    let e = request(br#"{"model":"x","n":2,"messages":[]}"#, Dialect::OpenAi, Dialect::Anthropic, "m", 10).unwrap_err();
    assert!(e.message.contains("`n` > 1"), "{}", e.message);
    let e = request(br#"{"model":"x","response_format":{"type":"json_object"},"messages":[]}"#, Dialect::OpenAi, Dialect::Anthropic, "m", 10).unwrap_err();
    assert!(e.message.contains("response_format"));
    let e = request(br#"{"model":"x","max_tokens":5,"thinking":{"type":"enabled","budget_tokens":1024},"messages":[]}"#, Dialect::Anthropic, Dialect::OpenAi, "m", 10).unwrap_err();
    assert!(e.message.contains("thinking"));
    let e = request(br#"{"model":"x","messages":[{"role":"assistant","tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":"{oops"}}]}]}"#, Dialect::OpenAi, Dialect::Anthropic, "m", 10).unwrap_err();
    assert!(e.message.contains("not valid JSON"));
    assert_eq!(e.status, 400);
}

#[test]
fn answers_and_errors_keep_content_finish_and_usage() {
    let anthropic = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "Hi"}, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1, 2]}}],
        "stop_reason": "tool_use", "usage": {"input_tokens": 10, "cache_read_input_tokens": 4, "cache_creation_input_tokens": 2, "output_tokens": 7}});
    let o = to_json(&answer(anthropic.to_string().as_bytes(), Dialect::Anthropic, Dialect::OpenAi).unwrap());
    assert_eq!(o["choices"][0]["message"]["content"], "Hi");
    assert_eq!(o["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], "{\"a\":[1,2]}");
    assert_eq!(o["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(o["usage"], json!({"prompt_tokens": 16, "completion_tokens": 7, "total_tokens": 23, "prompt_tokens_details": {"cached_tokens": 4}}));
    // And back: the same content and counts (cache writes fold into input on the OpenAI side).
    let back = to_json(&answer(o.to_string().as_bytes(), Dialect::OpenAi, Dialect::Anthropic).unwrap());
    assert_eq!(back["content"][1]["input"], json!({"a": [1, 2]}));
    assert_eq!(back["stop_reason"], "tool_use");
    assert_eq!(back["usage"], json!({"input_tokens": 12, "output_tokens": 7, "cache_read_input_tokens": 4, "cache_creation_input_tokens": 0}));
    let e = to_json(&error(br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#, 529, Dialect::Anthropic, Dialect::OpenAi));
    assert!(e["error"]["message"].as_str().unwrap().starts_with("Overloaded"));
}

/// Run provider SSE bytes through a translator in pieces of `step` bytes,
/// the way the stream tap hands them over (whole events only).
fn stream(provider: Dialect, client: Dialect, sse: &str, step: usize) -> String {
    let chat = Chat { model: "m".into(), stream: true, stream_usage: true, ..Default::default() };
    let mut t = Translator::new(provider, client, &chat);
    let mut tap = crate::dialect::sse::StreamTap::new(false);
    let mut out = Vec::new();
    for piece in sse.as_bytes().chunks(step.max(1)) {
        out.extend_from_slice(&t.feed(&tap.feed(piece)));
    }
    out.extend_from_slice(&t.feed(&tap.finish()));
    out.extend_from_slice(&t.finish());
    String::from_utf8(out).unwrap()
}

fn anthropic_sse(text: &[String], args: &[String]) -> String {
    let ev = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
    let mut s = ev("message_start", json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude-x", "usage": {"input_tokens": 9, "output_tokens": 1}}}));
    s += &ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}));
    for t in text {
        s += &ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}));
    }
    s += &ev("content_block_stop", json!({"type": "content_block_stop", "index": 0}));
    s += &ev("content_block_start", json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}}));
    for a in args {
        s += &ev("content_block_delta", json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": a}}));
    }
    s += &ev("content_block_stop", json!({"type": "content_block_stop", "index": 1}));
    s += &ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 5}}));
    s += &ev("message_stop", json!({"type": "message_stop"}));
    s
}

/// What an OpenAI client assembles from a chunk stream.
fn openai_assemble(sse: &str) -> (String, String, String, Option<String>, Option<u64>) {
    let (mut text, mut name, mut args, mut finish, mut out_tokens) = (String::new(), String::new(), String::new(), None, None);
    assert!(sse.ends_with("data: [DONE]\n\n"), "{sse}");
    for line in sse.lines().filter_map(|l| l.strip_prefix("data: ")).filter(|d| *d != "[DONE]") {
        let v: Value = serde_json::from_str(line).unwrap();
        if let Some(c) = v["choices"].get(0) {
            text += c["delta"]["content"].as_str().unwrap_or("");
            if let Some(tc) = c["delta"]["tool_calls"].get(0) {
                name += tc["function"]["name"].as_str().unwrap_or("");
                args += tc["function"]["arguments"].as_str().unwrap_or("");
            }
            if let Some(f) = c["finish_reason"].as_str() {
                finish = Some(f.to_string());
            }
        }
        if let Some(u) = v["usage"]["completion_tokens"].as_u64() {
            out_tokens = Some(u);
        }
    }
    (text, name, args, finish, out_tokens)
}

/// What an Anthropic client assembles from an event stream.
fn anthropic_assemble(sse: &str) -> (String, String, String, Option<String>) {
    let (mut text, mut name, mut args, mut stop) = (String::new(), String::new(), String::new(), None);
    assert!(sse.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"), "{sse}");
    for line in sse.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let v: Value = serde_json::from_str(line).unwrap();
        match v["type"].as_str() {
            Some("content_block_start") if v["content_block"]["type"] == "tool_use" => name += v["content_block"]["name"].as_str().unwrap(),
            Some("content_block_delta") => {
                text += v["delta"]["text"].as_str().unwrap_or("");
                args += v["delta"]["partial_json"].as_str().unwrap_or("");
            }
            Some("message_delta") => stop = v["delta"]["stop_reason"].as_str().map(str::to_string),
            _ => {}
        }
    }
    (text, name, args, stop)
}

#[test]
fn streams_translate_event_by_event_both_ways() {
    let text: Vec<String> = vec!["Hel".into(), "lo".into()];
    let args: Vec<String> = vec!["{\"a\":".into(), "1}".into()];
    let openai = stream(Dialect::Anthropic, Dialect::OpenAi, &anthropic_sse(&text, &args), 7);
    assert_eq!(openai_assemble(&openai), ("Hello".into(), "f".into(), "{\"a\":1}".into(), Some("tool_calls".into()), Some(5)));
    // Feed the OpenAI stream back to an Anthropic client.
    let anthropic = stream(Dialect::OpenAi, Dialect::Anthropic, &openai, 11);
    assert_eq!(anthropic_assemble(&anthropic), ("Hello".into(), "f".into(), "{\"a\":1}".into(), Some("tool_use".into())));
    // Output is produced as events arrive, not at the end.
    let chat = Chat { model: "m".into(), ..Default::default() };
    let mut t = Translator::new(Dialect::Anthropic, Dialect::OpenAi, &chat);
    let first = t.feed(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"c\",\"usage\":{\"input_tokens\":1}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n");
    assert!(String::from_utf8_lossy(&first).contains("\"content\":\"Hi\""));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Text and tool-call arguments survive Anthropic → OpenAI → Anthropic,
    /// however the stream is split.
    #[test]
    fn text_and_tool_arguments_survive_a_round_trip(
        text in proptest::collection::vec("[a-zA-Z0-9 .,!?é\u{4e2d}\"\\\\\n]{0,12}", 1..6),
        args in proptest::collection::btree_map("[a-z]{1,6}", "[a-zA-Z0-9 \"\\\\\u{e9}]{0,10}", 0..4),
        step in 1usize..64,
    ) {
        let json_args = serde_json::to_string(&args).unwrap();
        let mid = json_args.len() / 2;
        let cut = (0..=mid).rev().find(|i| json_args.is_char_boundary(*i)).unwrap_or(0);
        let pieces = vec![json_args[..cut].to_string(), json_args[cut..].to_string()];
        let openai = stream(Dialect::Anthropic, Dialect::OpenAi, &anthropic_sse(&text, &pieces), step);
        let (t, _, a, _, _) = openai_assemble(&openai);
        prop_assert_eq!(&t, &text.concat());
        prop_assert_eq!(serde_json::from_str::<Value>(&a).unwrap(), serde_json::to_value(&args).unwrap());
        let back = stream(Dialect::OpenAi, Dialect::Anthropic, &openai, step);
        let (t2, _, a2, _) = anthropic_assemble(&back);
        prop_assert_eq!(t2, text.concat());
        prop_assert_eq!(serde_json::from_str::<Value>(&a2).unwrap(), serde_json::to_value(&args).unwrap());

        // The JSON answer path, both ways.
        // (An empty text block carries nothing and is not kept.)
        let mut content = vec![json!({"type": "tool_use", "id": "t", "name": "f", "input": args})];
        if !text.concat().is_empty() {
            content.insert(0, json!({"type": "text", "text": text.concat()}));
        }
        let answer_json = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "c", "stop_reason": "tool_use",
            "content": content, "usage": {"input_tokens": 1, "output_tokens": 1}});
        let o = to_json(&answer(answer_json.to_string().as_bytes(), Dialect::Anthropic, Dialect::OpenAi).unwrap());
        let a = to_json(&answer(o.to_string().as_bytes(), Dialect::OpenAi, Dialect::Anthropic).unwrap());
        prop_assert_eq!(&a["content"], &answer_json["content"]);
    }

    /// Arbitrary bytes never panic a reader.
    #[test]
    fn no_input_panics_the_translators(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        for (from, to) in [(Dialect::OpenAi, Dialect::Anthropic), (Dialect::Anthropic, Dialect::OpenAi)] {
            let _ = request(&bytes, from, to, "m", 10);
            let _ = answer(&bytes, from, to);
            let _ = error(&bytes, 500, from, to);
            let mut t = Translator::new(from, to, &Chat::default());
            let _ = t.feed(&bytes);
            let _ = t.finish();
        }
    }
}
