use proptest::prelude::*;
use serde_json::json;

use super::*;

/// Translate complete provider events, split and parsed as the relay's
/// stream tap does.
fn feed(t: &mut Translator, events: &[u8]) -> Bytes {
    let mut tap = crate::dialect::sse::StreamTap::new(Dialect::OpenAi, false).collecting();
    tap.feed(events);
    t.feed_data(tap.take_data())
}

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
    let (body, chat) = request(openai.to_string().as_bytes(), Wire::Chat, Wire::Messages, "claude-x", false, 4096).unwrap();
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
    let (body, chat) = request(anthropic.to_string().as_bytes(), Wire::Messages, Wire::Chat, "gpt-4o-mini", false, 4096).unwrap();
    assert_eq!(chat.dropped, vec!["top_k"]);
    let want = json!({
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
    });
    // The body is written as text: serde_json's bytes, member order included.
    assert_eq!(std::str::from_utf8(&body).unwrap(), want.to_string());

    let anthropic = json!({
        "model": "claude-x", "max_tokens": 50, "temperature": 0.7, "top_p": 0.25, "stop_sequences": ["END", "\"q\""],
        "messages": [
            {"role": "user", "content": "Say \"hi\"\n\u{1}\u{e9}"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok", "is_error": false}, {"type": "text", "text": "and?"}]}
        ],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
        "tools": [{"name": "f", "description": "does f", "input_schema": {"type": "object", "properties": {}}}]
    });
    let (body, _) = request(anthropic.to_string().as_bytes(), Wire::Messages, Wire::Chat, "m", false, 4096).unwrap();
    let want = json!({
        "model": "m",
        "messages": [
            {"role": "user", "content": "Say \"hi\"\n\u{1}\u{e9}"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "ok"},
            {"role": "user", "content": "and?"}
        ],
        "max_tokens": 50, "temperature": 0.7, "top_p": 0.25, "stop": ["END", "\"q\""],
        "tools": [{"type": "function", "function": {"name": "f", "description": "does f", "parameters": {"type": "object", "properties": {}}}}],
        "tool_choice": "auto", "parallel_tool_calls": false
    });
    assert_eq!(std::str::from_utf8(&body).unwrap(), want.to_string());
}

#[test]
fn fields_that_would_change_the_answer_are_refused_with_the_reason() {
    let e = request(br#"{"model":"x","n":2,"messages":[]}"#, Wire::Chat, Wire::Messages, "m", false, 10).unwrap_err();
    assert!(e.message.contains("`n` > 1"), "{}", e.message);
    let e = request(
        br#"{"model":"x","response_format":{"type":"json_object"},"tools":[{"type":"function","function":{"name":"f"}}],"messages":[]}"#,
        Wire::Chat,
        Wire::Messages,
        "m",
        false,
        10,
    )
    .unwrap_err();
    assert!(e.message.contains("together with tools"), "{}", e.message);
    let e = request(
        br#"{"model":"x","response_format":{"type":"json_schema","json_schema":{"name":"l","schema":{"type":"array"}}},"messages":[]}"#,
        Wire::Chat,
        Wire::Messages,
        "m",
        false,
        10,
    )
    .unwrap_err();
    assert!(e.message.contains("root is an object"), "{}", e.message);
    let e = request(
        br#"{"model":"x","max_tokens":5,"thinking":{"type":"enabled","budget_tokens":1024},"messages":[]}"#,
        Wire::Messages,
        Wire::Chat,
        "m",
        false,
        10,
    )
    .unwrap_err();
    assert!(e.message.contains("thinking"));
    let e = request(
        br#"{"model":"x","messages":[{"role":"assistant","tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":"{oops"}}]}]}"#,
        Wire::Chat,
        Wire::Messages,
        "m",
        false,
        10,
    )
    .unwrap_err();
    assert!(e.message.contains("not valid JSON"));
    assert_eq!(e.status, 400);
}

#[test]
fn answers_and_errors_keep_content_finish_and_usage() {
    let anthropic = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "Hi"}, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1, 2]}}],
        "stop_reason": "tool_use", "usage": {"input_tokens": 10, "cache_read_input_tokens": 4, "cache_creation_input_tokens": 2, "output_tokens": 7}});
    let body = answer(anthropic.to_string().as_bytes(), Wire::Messages, Wire::Chat, &Chat::default()).unwrap();
    let o = to_json(&body);
    // Written as text: serde_json's bytes, member order included.
    let want = json!({"id": "msg_1", "object": "chat.completion", "created": o["created"], "model": "claude-x",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi", "refusal": null,
            "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":[1,2]}"}}]},
            "logprobs": null, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 16, "completion_tokens": 7, "total_tokens": 23, "prompt_tokens_details": {"cached_tokens": 4}}});
    assert_eq!(std::str::from_utf8(&body).unwrap(), want.to_string());
    assert_eq!(o["choices"][0]["message"]["content"], "Hi");
    assert_eq!(o["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], "{\"a\":[1,2]}");
    assert_eq!(o["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(o["usage"], json!({"prompt_tokens": 16, "completion_tokens": 7, "total_tokens": 23, "prompt_tokens_details": {"cached_tokens": 4}}));
    // And back: the same content and counts (cache writes fold into input on the OpenAI side).
    let body = answer(o.to_string().as_bytes(), Wire::Chat, Wire::Messages, &Chat::default()).unwrap();
    let want = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "Hi"}, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1, 2]}}],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 12, "output_tokens": 7, "cache_read_input_tokens": 4, "cache_creation_input_tokens": 0}});
    assert_eq!(std::str::from_utf8(&body).unwrap(), want.to_string());
    let back = to_json(&body);
    assert_eq!(back["content"][1]["input"], json!({"a": [1, 2]}));
    assert_eq!(back["stop_reason"], "tool_use");
    assert_eq!(back["usage"], json!({"input_tokens": 12, "output_tokens": 7, "cache_read_input_tokens": 4, "cache_creation_input_tokens": 0}));
    let e = to_json(&error(br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#, 529, Dialect::Anthropic, Dialect::OpenAi));
    assert!(e["error"]["message"].as_str().unwrap().starts_with("Overloaded"));
}

/// Run provider SSE bytes through a translator in pieces of `step` bytes,
/// the way the stream tap hands them over (whole events only).
fn stream(provider: Wire, client: Wire, sse: &str, step: usize) -> String {
    let chat = Chat { model: "m".into(), stream: true, stream_usage: true, ..Default::default() };
    let mut t = Translator::new(provider, client, &chat);
    let mut tap = crate::dialect::sse::StreamTap::new(Dialect::OpenAi, false);
    let mut out = Vec::new();
    for piece in sse.as_bytes().chunks(step.max(1)) {
        out.extend_from_slice(&feed(&mut t, &tap.feed(piece)));
    }
    out.extend_from_slice(&feed(&mut t, &tap.finish()));
    out.extend_from_slice(&t.finish());
    String::from_utf8(out).unwrap()
}

fn anthropic_sse(text: &[String], args: &[String]) -> String {
    let ev = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
    let mut s = ev(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude-x", "usage": {"input_tokens": 9, "output_tokens": 1}}}),
    );
    s += &ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}));
    for t in text {
        s += &ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}));
    }
    s += &ev("content_block_stop", json!({"type": "content_block_stop", "index": 0}));
    s += &ev(
        "content_block_start",
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}}),
    );
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
    let openai = stream(Wire::Messages, Wire::Chat, &anthropic_sse(&text, &args), 7);
    assert_eq!(openai_assemble(&openai), ("Hello".into(), "f".into(), "{\"a\":1}".into(), Some("tool_calls".into()), Some(5)));
    // Feed the OpenAI stream back to an Anthropic client.
    let anthropic = stream(Wire::Chat, Wire::Messages, &openai, 11);
    assert_eq!(anthropic_assemble(&anthropic), ("Hello".into(), "f".into(), "{\"a\":1}".into(), Some("tool_use".into())));
    // Output is produced as events arrive, not at the end.
    let chat = Chat { model: "m".into(), ..Default::default() };
    let mut t = Translator::new(Wire::Messages, Wire::Chat, &chat);
    let first = feed(&mut t, b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"c\",\"usage\":{\"input_tokens\":1}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n");
    assert!(String::from_utf8_lossy(&first).contains("\"content\":\"Hi\""));
}

/// The typed stream readers read what they can from an event with
/// surprising values, as reading a `serde_json::Value` did.
#[test]
fn stream_readers_take_what_they_can_from_odd_events() {
    let read = |r: &mut dyn StreamReader, data: &str| r.read(data);
    let mut o = openai::Reader::default();
    // A number where the id should be, content as a list of parts, a
    // negative tool index: the text that is a string still comes through.
    let e = read(
        &mut o,
        r#"{"id":5,"model":"m\u00e9","choices":[{"delta":{"content":[{"type":"text","text":"x"}]},"finish_reason":null},{"delta":{"content":"Hi \"you\""},"finish_reason":"stop"}],"usage":7}"#,
    );
    assert_eq!(e, vec![Event::Start { id: "".into(), model: "m\u{e9}".into() }, Event::Text("Hi \"you\"".into()), Event::Finish(Finish::Stop)]);
    let e = read(
        &mut o,
        r#"{"choices":[{"delta":{"tool_calls":[{"index":-1,"id":"c","function":{"name":"f","arguments":"{}"}}]}}],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#,
    );
    assert_eq!(e[0], Event::ToolStart { index: 0, id: "c".into(), name: "f".into() });
    assert_eq!(e[1], Event::ToolArgs { index: 0, json: "{}".into() });
    assert_eq!(e[2], Event::Usage(Usage { input: 3, output: 2, ..Default::default() }));
    // An error as a string (some OpenAI-compatible servers) or an object.
    assert_eq!(read(&mut o, r#"{"error":"overloaded"}"#), vec![Event::Error { kind: ErrorKind::Upstream, message: "upstream stream error".into() }]);
    assert_eq!(read(&mut o, r#"{"error":{"message":"slow down"}}"#), vec![Event::Error { kind: ErrorKind::Upstream, message: "slow down".into() }]);

    let mut a = anthropic::Reader::default();
    let e = read(&mut a, r#"{"type":"message_start","message":{"id":"msg_1","model":["x"],"usage":{"input_tokens":9}}}"#);
    assert_eq!(e, vec![Event::Start { id: "msg_1".into(), model: "".into() }]);
    assert_eq!(read(&mut a, r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":{"a":1}}}"#), vec![Event::Text("".into())]);
    let e = read(&mut a, r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":4}}"#);
    assert_eq!(e, vec![Event::Finish(Finish::Length), Event::Usage(Usage { input: 9, output: 4, ..Default::default() })]);
    assert_eq!(read(&mut a, r#"{"type":"error","error":"gone"}"#), vec![Event::Error { kind: ErrorKind::Upstream, message: "upstream stream error".into() }]);
    assert_eq!(
        read(&mut a, r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#)[0],
        Event::Error { kind: ErrorKind::Upstream, message: "Overloaded".into() }
    );
}

/// The data lines of an SSE text.
fn data_lines(sse: &str) -> Vec<&str> {
    sse.lines().filter_map(|l| l.strip_prefix("data: ")).collect()
}

/// The OpenAI and Anthropic stream writers write their events as text; the
/// bytes are what serde_json writes for the events these clients expect,
/// member order included.
#[test]
fn stream_writers_write_serde_json_bytes_in_the_documented_shape() {
    let text = "say \"hi\"\\ \u{1}\n\u{e9}\u{4e2d}";
    let events = vec![
        Event::Start { id: "abc".into(), model: "gpt-x".into() },
        Event::Text(text.into()),
        Event::ToolStart { index: 0, id: "call_1".into(), name: "get\"w".into() },
        Event::ToolArgs { index: 0, json: "{\"a\":".into() },
        Event::Finish(Finish::ToolCalls),
        Event::Usage(Usage { input: 7, cached_input: 2, cache_write: 1, output: 5 }),
        Event::End,
    ];
    let run = |w: &mut dyn StreamWriter| {
        let mut out = Vec::new();
        for e in &events {
            w.write(e, &mut out);
        }
        String::from_utf8(out).unwrap()
    };

    let mut w = OpenAiStream::new("m", true);
    let created = w.created;
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": created, "model": "gpt-x",
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}], "usage": null})
        .to_string()
    };
    let want = vec![
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": text}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get\"w", "arguments": ""}}]}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":"}}]}), Value::Null),
        chunk(json!({}), json!("tool_calls")),
        json!({"id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": created, "model": "gpt-x", "choices": [],
               "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "prompt_tokens_details": {"cached_tokens": 2}}})
        .to_string(),
        "[DONE]".to_string(),
    ];
    assert_eq!(data_lines(&run(&mut w)), want);
    // Without include_usage: no `usage` member, no usage chunk.
    let plain = run(&mut OpenAiStream::new("m", false));
    assert!(!plain.contains("usage"), "{plain}");
    assert_eq!(data_lines(&plain).len(), 6);

    let ev = |v: Value| v.to_string();
    let usage = |i: u64, o: u64| json!({"input_tokens": i, "output_tokens": o, "cache_read_input_tokens": 2, "cache_creation_input_tokens": 1});
    let want = vec![
        ev(json!({"type": "message_start", "message": {"id": "msg_abc", "type": "message", "role": "assistant", "model": "gpt-x", "content": [],
            "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 1, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}}})),
        ev(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
        ev(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})),
        ev(json!({"type": "content_block_stop", "index": 0})),
        ev(json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "call_1", "name": "get\"w", "input": {}}})),
        ev(json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}})),
        ev(json!({"type": "content_block_stop", "index": 1})),
        ev(json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": usage(7, 5)})),
        ev(json!({"type": "message_stop"})),
    ];
    let anthropic = run(&mut AnthropicStream::new("m"));
    assert_eq!(data_lines(&anthropic), want);
    let names: Vec<&str> = anthropic.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    let types: Vec<String> = want.iter().map(|w| serde_json::from_str::<Value>(w).unwrap()["type"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, types);
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
        let openai = stream(Wire::Messages, Wire::Chat, &anthropic_sse(&text, &pieces), step);
        let (t, _, a, _, _) = openai_assemble(&openai);
        prop_assert_eq!(&t, &text.concat());
        prop_assert_eq!(serde_json::from_str::<Value>(&a).unwrap(), serde_json::to_value(&args).unwrap());
        // Through a Gemini client and on as a Gemini provider's stream.
        let (gt, _, ga, _, _) = gemini_assemble(&stream(Wire::Chat, Wire::Gemini, &openai, step));
        prop_assert_eq!(&gt, &text.concat());
        prop_assert_eq!(&ga, &serde_json::to_value(&args).unwrap());
        let via_gemini = stream(Wire::Gemini, Wire::Chat, &gemini_sse(&text, &ga), step);
        let (t3, _, a3, _, _) = openai_assemble(&via_gemini);
        prop_assert_eq!(&t3, &text.concat());
        prop_assert_eq!(serde_json::from_str::<Value>(&a3).unwrap(), serde_json::to_value(&args).unwrap());
        let back = stream(Wire::Chat, Wire::Messages, &openai, step);
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
        let o = to_json(&answer(answer_json.to_string().as_bytes(), Wire::Messages, Wire::Chat, &Chat::default()).unwrap());
        let a = to_json(&answer(o.to_string().as_bytes(), Wire::Chat, Wire::Messages, &Chat::default()).unwrap());
        prop_assert_eq!(&a["content"], &answer_json["content"]);
    }

    /// Arbitrary bytes never panic a reader.
    #[test]
    fn no_input_panics_the_translators(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let wires = [Wire::Chat, Wire::Responses, Wire::Messages, Wire::Gemini];
        for (from, to) in wires.iter().flat_map(|a| wires.iter().map(move |b| (*a, *b))) {
            let _ = request(&bytes, from, to, "m", true, 10);
            let _ = answer(&bytes, from, to, &Chat::default());
            let _ = error(&bytes, 500, from.dialect(), to.dialect());
            let mut t = Translator::new(from, to, &Chat::default());
            let _ = feed(&mut t, &bytes);
            let _ = t.finish();
        }
    }
}

#[test]
fn an_openai_request_becomes_the_gemini_request_it_means() {
    let openai = json!({
        "model": "gpt-4o", "temperature": 0.3, "top_p": 0.9, "stop": ["END"], "max_tokens": 100, "user": "u-1",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Look"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}, {"type": "image_url", "image_url": {"url": "https://example.com/a.webp?x=1"}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{\"zoom\":2}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
            {"role": "tool", "tool_call_id": "call_9", "content": "{\"n\":1}"}
        ],
        "tools": [{"type": "function", "function": {"name": "look", "description": "Look closer", "parameters": {"type": "object", "properties": {"zoom": {"type": "integer"}}}}}],
        "tool_choice": {"type": "function", "function": {"name": "look"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "cat", "schema": {"type": "object"}, "strict": true}}
    });
    let (body, chat) = request(openai.to_string().as_bytes(), Wire::Chat, Wire::Gemini, "gemini-2.5-flash", true, 4096).unwrap();
    assert_eq!(chat.dropped, vec!["user"]);
    assert!(chat.stream, "Gemini streams are asked for in the path; the flag travels in the neutral form");
    assert_eq!(
        to_json(&body),
        json!({
            "contents": [
                {"role": "user", "parts": [{"text": "Look"}, {"inlineData": {"mimeType": "image/png", "data": "iVBO"}}, {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/a.webp?x=1"}}]},
                {"role": "model", "parts": [{"functionCall": {"name": "look", "args": {"zoom": 2}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "look", "response": {"result": "a cat"}}}, {"functionResponse": {"name": "call_9", "response": {"n": 1}}}]}
            ],
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "tools": [{"functionDeclarations": [{"name": "look", "description": "Look closer", "parametersJsonSchema": {"type": "object", "properties": {"zoom": {"type": "integer"}}}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["look"]}},
            "generationConfig": {"maxOutputTokens": 100, "temperature": 0.3, "topP": 0.9, "stopSequences": ["END"], "responseMimeType": "application/json", "responseJsonSchema": {"type": "object"}}
        })
    );
}

#[test]
fn a_gemini_request_becomes_the_anthropic_request_it_means() {
    // snake_case keys are read as well as camelCase; calls without ids get
    // ids their responses are matched to by name.
    let gemini = json!({
        "system_instruction": {"parts": [{"text": "Be brief."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "weather", "args": {"city": "Paris"}}}, {"functionCall": {"name": "weather", "args": {"city": "Rome"}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "weather", "response": {"result": "sunny"}}}, {"functionResponse": {"name": "weather", "response": {"temp": 20}}}]}
        ],
        "tools": [{"functionDeclarations": [{"name": "weather", "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
        "generationConfig": {"maxOutputTokens": 64, "temperature": 0.5, "topK": 3, "stopSequences": ["x"]},
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]
    });
    let (body, chat) = request(gemini.to_string().as_bytes(), Wire::Gemini, Wire::Messages, "claude-x", false, 4096).unwrap();
    assert_eq!(chat.dropped, vec!["safetySettings", "topK"]);
    assert_eq!(
        to_json(&body),
        json!({
            "model": "claude-x", "max_tokens": 64, "system": "Be brief.",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1_weather", "name": "weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2_weather", "name": "weather", "input": {"city": "Rome"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1_weather", "content": "sunny", "is_error": false},
                    {"type": "tool_result", "tool_use_id": "call_2_weather", "content": "{\"temp\":20}", "is_error": false}]}
            ],
            "temperature": 0.5, "stop_sequences": ["x"],
            "tools": [{"name": "weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
            "tool_choice": {"type": "auto"}
        })
    );
}

#[test]
fn a_responses_request_becomes_the_anthropic_request_it_means() {
    let responses = json!({
        "model": "gpt-4o", "instructions": "Be brief.", "max_output_tokens": 50, "store": false, "stream": true,
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}, {"type": "input_image", "image_url": "https://example.com/sky.jpg"}]},
            {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Sunny."}]},
            {"role": "user", "content": "Thanks"}
        ],
        "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}, "strict": true}],
        "tool_choice": "auto"
    });
    let (body, chat) = request(responses.to_string().as_bytes(), Wire::Responses, Wire::Messages, "claude-x", false, 4096).unwrap();
    assert_eq!(chat.dropped, vec!["store"]);
    assert_eq!(
        to_json(&body),
        json!({
            "model": "claude-x", "max_tokens": 50, "system": "Be brief.",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather?"}, {"type": "image", "source": {"type": "url", "url": "https://example.com/sky.jpg"}}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "sunny", "is_error": false}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Sunny."}]},
                {"role": "user", "content": [{"type": "text", "text": "Thanks"}]}
            ],
            "tools": [{"name": "weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "auto"},
            "stream": true
        })
    );
}

#[test]
fn gemini_and_responses_fields_that_would_change_the_answer_are_refused() {
    let cases: [(&str, Wire, &str); 6] = [
        (
            r#"{"model":"m","input":"hi","text":{"format":{"type":"json_object"}},"tools":[{"type":"function","name":"f"}]}"#,
            Wire::Responses,
            "together with tools",
        ),
        (r#"{"contents":[{"parts":[{"text":"hi"}]}],"tools":[{"googleSearch":{}}]}"#, Wire::Gemini, "googleSearch"),
        (r#"{"contents":[{"parts":[{"text":"hi"}]}],"cachedContent":"cachedContents/1"}"#, Wire::Gemini, "cachedContent"),
        (r#"{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"candidateCount":2}}"#, Wire::Gemini, "candidateCount"),
        (r#"{"model":"m","input":"hi","previous_response_id":"resp_1"}"#, Wire::Responses, "previous_response_id"),
        (r#"{"model":"m","input":"hi","tools":[{"type":"web_search"}]}"#, Wire::Responses, "web_search"),
    ];
    for (body, from, needle) in cases {
        let e = request(body.as_bytes(), from, Wire::Messages, "claude-x", false, 10).unwrap_err();
        assert!(e.message.contains(needle), "{needle}: {}", e.message);
        assert_eq!(e.status, 400);
    }
    // Structured output reaches the models that have it.
    let (b, _) = request(
        br#"{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"responseMimeType":"application/json"}}"#,
        Wire::Gemini,
        Wire::Chat,
        "gpt-4o",
        false,
        10,
    )
    .unwrap();
    assert_eq!(to_json(&b)["response_format"], json!({"type": "json_object"}));
}

#[test]
fn gemini_answers_translate_with_usage_both_ways() {
    let gemini = json!({
        "candidates": [{"content": {"role": "model", "parts": [{"text": "thinking", "thought": true}, {"text": "Let me check."}, {"functionCall": {"name": "weather", "args": {"city": "Paris"}}}]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 1200, "candidatesTokenCount": 300, "cachedContentTokenCount": 200, "thoughtsTokenCount": 20, "totalTokenCount": 1520},
        "modelVersion": "gemini-2.5-flash", "responseId": "abc"
    });
    let o = to_json(&answer(gemini.to_string().as_bytes(), Wire::Gemini, Wire::Chat, &Chat::default()).unwrap());
    assert_eq!(o["choices"][0]["message"]["content"], "Let me check.");
    assert_eq!(o["choices"][0]["message"]["tool_calls"][0]["function"], json!({"name": "weather", "arguments": "{\"city\":\"Paris\"}"}));
    assert_eq!(o["choices"][0]["finish_reason"], "tool_calls");
    // Thoughts are billed as output.
    assert_eq!(o["usage"], json!({"prompt_tokens": 1200, "completion_tokens": 320, "total_tokens": 1520, "prompt_tokens_details": {"cached_tokens": 200}}));
    let back = to_json(&answer(o.to_string().as_bytes(), Wire::Chat, Wire::Gemini, &Chat::default()).unwrap());
    assert_eq!(back["candidates"][0]["content"]["parts"][1]["functionCall"]["args"], json!({"city": "Paris"}));
    assert_eq!(back["candidates"][0]["finishReason"], "STOP");
    assert_eq!(back["usageMetadata"], json!({"promptTokenCount": 1200, "candidatesTokenCount": 320, "totalTokenCount": 1520, "cachedContentTokenCount": 200}));
    let length = json!({"candidates": [{"content": {"parts": [{"text": "cut"}]}, "finishReason": "MAX_TOKENS"}], "usageMetadata": {"promptTokenCount": 1}});
    let a = to_json(&answer(length.to_string().as_bytes(), Wire::Gemini, Wire::Messages, &Chat::default()).unwrap());
    assert_eq!(a["stop_reason"], "max_tokens");
    let e =
        to_json(&error(br#"{"error":{"code":429,"message":"Resource exhausted","status":"RESOURCE_EXHAUSTED"}}"#, 429, Dialect::Gemini, Dialect::Anthropic));
    assert_eq!(e["error"]["type"], "rate_limit_error");
    let e = to_json(&error(br#"{"error":{"message":"bad"}}"#, 400, Dialect::OpenAi, Dialect::Gemini));
    assert_eq!(e["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(e["error"]["code"], 400);
}

#[test]
fn a_responses_client_gets_a_responses_answer() {
    let anthropic = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "Hi"}, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}],
        "stop_reason": "tool_use", "usage": {"input_tokens": 10, "cache_read_input_tokens": 4, "output_tokens": 7}});
    let chat = Chat { model: "claude-x".into(), max_tokens: Some(99), ..Default::default() };
    let r = to_json(&answer(anthropic.to_string().as_bytes(), Wire::Messages, Wire::Responses, &chat).unwrap());
    assert_eq!(r["object"], "response");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["output"][0]["content"][0], json!({"type": "output_text", "text": "Hi", "annotations": [], "logprobs": []}));
    assert_eq!(r["output"][1]["type"], "function_call");
    assert_eq!((r["output"][1]["call_id"].as_str(), r["output"][1]["arguments"].as_str()), (Some("toolu_1"), Some("{\"a\":1}")));
    assert_eq!(r["usage"]["input_tokens"], 14);
    assert_eq!(r["usage"]["input_tokens_details"]["cached_tokens"], 4);
    assert_eq!(r["max_output_tokens"], 99);
}

fn gemini_sse(text: &[String], args: &Value) -> String {
    let mut s = String::new();
    for t in text {
        s += &format!(
            "data: {}\r\n\r\n",
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": t}]}, "index": 0}], "usageMetadata": {"promptTokenCount": 9}, "modelVersion": "gemini-x", "responseId": "r1"})
        );
    }
    s += &format!(
        "data: {}\r\n\r\n",
        json!({"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "f", "args": args}}]}, "index": 0}], "modelVersion": "gemini-x"})
    );
    s += &format!(
        "data: {}\r\n\r\n",
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP", "index": 0}], "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 5, "totalTokenCount": 14}, "modelVersion": "gemini-x"})
    );
    s
}

/// What a Gemini client assembles from a chunk stream.
fn gemini_assemble(sse: &str) -> (String, String, Value, Option<String>, Option<u64>) {
    let (mut text, mut name, mut args, mut finish, mut out_tokens) = (String::new(), String::new(), Value::Null, None, None);
    for line in sse.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let v: Value = serde_json::from_str(line).unwrap();
        for p in v["candidates"][0]["content"]["parts"].as_array().into_iter().flatten() {
            text += p["text"].as_str().unwrap_or("");
            if p["functionCall"].is_object() {
                name += p["functionCall"]["name"].as_str().unwrap();
                args = p["functionCall"]["args"].clone();
            }
        }
        if let Some(f) = v["candidates"][0]["finishReason"].as_str() {
            finish = Some(f.to_string());
            out_tokens = v["usageMetadata"]["candidatesTokenCount"].as_u64();
        }
    }
    (text, name, args, finish, out_tokens)
}

#[test]
fn gemini_streams_translate_both_ways() {
    let text: Vec<String> = vec!["Hel".into(), "lo".into()];
    let openai = stream(Wire::Gemini, Wire::Chat, &gemini_sse(&text, &json!({"a": 1})), 13);
    assert_eq!(openai_assemble(&openai), ("Hello".into(), "f".into(), "{\"a\":1}".into(), Some("tool_calls".into()), Some(5)));
    // An Anthropic stream (argument fragments) to a Gemini client: the call
    // arrives whole, then the finishing chunk with usage.
    let args: Vec<String> = vec!["{\"a\":".into(), "1}".into()];
    let g = stream(Wire::Messages, Wire::Gemini, &anthropic_sse(&text, &args), 5);
    assert_eq!(gemini_assemble(&g), ("Hello".into(), "f".into(), json!({"a": 1}), Some("STOP".into()), Some(5)));
}

/// What the openai SDK's Responses stream helper accumulates: output items
/// by index, text deltas and argument deltas into them; the final response.
fn responses_assemble(sse: &str) -> (String, String, Option<String>, Value) {
    let (mut text, mut args, mut status, mut last) = (String::new(), String::new(), None, Value::Null);
    let mut items: Vec<String> = Vec::new();
    for (seq, line) in sse.lines().filter_map(|l| l.strip_prefix("data: ")).enumerate() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["sequence_number"], seq, "{line}");
        match v["type"].as_str().unwrap() {
            "response.output_item.added" => {
                assert_eq!(v["output_index"], items.len(), "{line}");
                items.push(v["item"]["id"].as_str().unwrap().to_string());
            }
            "response.output_text.delta" => {
                assert_eq!(items[v["output_index"].as_u64().unwrap() as usize], v["item_id"].as_str().unwrap());
                text += v["delta"].as_str().unwrap();
            }
            "response.function_call_arguments.delta" => args += v["delta"].as_str().unwrap(),
            "response.completed" | "response.incomplete" => {
                status = v["response"]["status"].as_str().map(str::to_string);
                last = v["response"].clone();
            }
            _ => {}
        }
    }
    (text, args, status, last)
}

#[test]
fn a_responses_client_gets_responses_stream_events() {
    let text: Vec<String> = vec!["Hel".into(), "lo".into()];
    let args: Vec<String> = vec!["{\"a\":".into(), "1}".into()];
    let chat = Chat { model: "m".into(), stream: true, ..Default::default() };
    let mut t = Translator::new(Wire::Messages, Wire::Responses, &chat);
    let mut tap = crate::dialect::sse::StreamTap::new(Dialect::OpenAi, false);
    let mut out = feed(&mut t, &tap.feed(anthropic_sse(&text, &args).as_bytes())).to_vec();
    out.extend_from_slice(&t.finish());
    let sse = String::from_utf8(out).unwrap();
    let (text, args, status, last) = responses_assemble(&sse);
    assert_eq!((text.as_str(), args.as_str(), status.as_deref()), ("Hello", "{\"a\":1}", Some("completed")));
    assert_eq!(last["output"][0]["content"][0]["text"], "Hello");
    assert_eq!(last["output"][1]["arguments"], "{\"a\":1}");
    assert_eq!(last["usage"]["output_tokens"], 5);
    assert!(sse.starts_with("event: response.created\n"), "{sse}");
}

#[test]
fn structured_output_reaches_anthropic_as_a_forced_tool_and_comes_back_as_text() {
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
    let req = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Where?"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": true}}});
    let (body, chat) = request(req.to_string().as_bytes(), Wire::Chat, Wire::Messages, "claude-x", false, 100).unwrap();
    let b = to_json(&body);
    assert_eq!(
        b["tools"],
        json!([{"name": JSON_TOOL, "description": "Give the answer as this tool's input, which follows the JSON schema.", "input_schema": schema}])
    );
    assert_eq!(b["tool_choice"], json!({"type": "tool", "name": JSON_TOOL}));
    // The answer: the tool's input as the message text, finish `stop`.
    let claude = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "stop_reason": "tool_use",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": JSON_TOOL, "input": {"city": "Paris"}}], "usage": {"input_tokens": 5, "output_tokens": 7}});
    let o = to_json(&answer(claude.to_string().as_bytes(), Wire::Messages, Wire::Chat, &chat).unwrap());
    assert_eq!(serde_json::from_str::<Value>(o["choices"][0]["message"]["content"].as_str().unwrap()).unwrap(), json!({"city": "Paris"}));
    assert!(o["choices"][0]["message"].get("tool_calls").is_none());
    assert_eq!(o["choices"][0]["finish_reason"], "stop");
    // Streamed: argument fragments become content deltas.
    let mut t = Translator::new(Wire::Messages, Wire::Chat, &Chat { stream: true, ..chat.clone() });
    let mut tap = crate::dialect::sse::StreamTap::new(Dialect::OpenAi, false);
    let sse = anthropic_sse(&[], &["{\"city\":".into(), "\"Paris\"}".into()]).replace("\"name\":\"f\"", &format!("\"name\":\"{JSON_TOOL}\""));
    let mut out = feed(&mut t, &tap.feed(sse.as_bytes())).to_vec();
    out.extend_from_slice(&t.finish());
    let (text, name, args, finish, _) = openai_assemble(&String::from_utf8(out).unwrap());
    assert_eq!((text.as_str(), name.as_str(), args.as_str(), finish.as_deref()), ("{\"city\":\"Paris\"}", "", "", Some("stop")));
}

#[test]
fn a_provider_stream_error_reaches_every_client_in_a_shape_its_sdk_raises() {
    let err = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"c\",\"usage\":{\"input_tokens\":1}}}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    for client in [Wire::Chat, Wire::Responses, Wire::Gemini] {
        let out = stream(Wire::Messages, client, err, 9);
        let last: Value = serde_json::from_str(out.lines().rev().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
        // The openai SDK raises on an `error` object; so does google-genai.
        assert_eq!(last["error"]["message"], "Overloaded", "{client:?}: {out}");
        assert!(
            !out.contains("[DONE]") && !out.contains("response.completed") && !out.contains("finishReason"),
            "{client:?}: no clean end after an error: {out}"
        );
    }
}
