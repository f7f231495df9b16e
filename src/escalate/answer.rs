//! What a provider's answer says, read for the answer checks: its text,
//! tool calls, whether the provider flagged a refusal or stopped at the
//! output limit, and its token log-probabilities. Read from the
//! provider's own wire format (before any translation), whole or from a
//! buffered stream.

use serde_json::Value;

use crate::dialect::sse::{data_of, event_end};
use crate::translate::{Wire, JSON_TOOL};

/// What an answer says.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Said {
    pub text: String,
    /// Each tool call's arguments (JSON text).
    pub tool_calls: Vec<String>,
    /// The provider flagged a refusal (OpenAI `refusal`, a content filter,
    /// Anthropic `stop_reason: refusal`, Gemini safety stops).
    pub refusal: bool,
    /// Stopped at the output limit (`finish_reason: length`,
    /// `max_tokens`, `MAX_TOKENS`, `max_output_tokens`).
    pub length: bool,
    /// Sum and count of the chosen tokens' log-probabilities, when the
    /// answer carries them.
    pub logprob_sum: f64,
    pub logprob_count: u64,
    /// Gemini's `avgLogprobs` (when it gives no per-token figures).
    pub avg_logprob: Option<f64>,
}

impl Said {
    /// The average token log-probability, when the answer has one.
    pub fn mean_logprob(&self) -> Option<f64> {
        match self.logprob_count {
            0 => self.avg_logprob,
            n => Some(self.logprob_sum / n as f64),
        }
    }

    fn logprobs(&mut self, list: &Value) {
        for t in list.as_array().into_iter().flatten() {
            if let Some(lp) = t["logprob"].as_f64().or(t["logProbability"].as_f64()) {
                self.logprob_sum += lp;
                self.logprob_count += 1;
            }
        }
    }
}

/// Read a whole JSON answer of `wire`. `json_tool`: an Anthropic model
/// given structured output through the forced `json_answer` tool (its
/// input is the answer's text). `None` when the body is not an answer.
pub fn whole(wire: Wire, body: &[u8], json_tool: bool) -> Option<Said> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let mut s = Said::default();
    match wire {
        Wire::Chat => chat(&mut s, &v["choices"][0], "message"),
        Wire::Responses => responses(&mut s, &v),
        Wire::Messages => {
            for block in v["content"].as_array()? {
                match block["type"].as_str() {
                    Some("text") => s.text.push_str(block["text"].as_str().unwrap_or_default()),
                    Some("tool_use") if json_tool && block["name"] == JSON_TOOL => s.text.push_str(&block["input"].to_string()),
                    Some("tool_use") => s.tool_calls.push(block["input"].to_string()),
                    _ => {}
                }
            }
            anthropic_stop(&mut s, &v["stop_reason"]);
        }
        Wire::Gemini => gemini(&mut s, &v),
    }
    Some(s)
}

/// One OpenAI Chat choice (`part`: `message`, or `delta` in a stream chunk).
fn chat(s: &mut Said, choice: &Value, part: &str) {
    let m = &choice[part];
    match &m["content"] {
        Value::String(t) => s.text.push_str(t),
        // Content parts (rare in answers): their text.
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).for_each(|t| s.text.push_str(t)),
        _ => {}
    }
    if m["refusal"].as_str().is_some_and(|r| !r.is_empty()) {
        s.refusal = true;
    }
    for (i, call) in m["tool_calls"].as_array().into_iter().flatten().enumerate() {
        let args = call["function"]["arguments"].as_str().unwrap_or_default();
        // Streamed calls arrive in pieces, by index.
        let at = call["index"].as_u64().map_or(i, |n| n as usize);
        if part == "delta" {
            if s.tool_calls.len() <= at {
                s.tool_calls.resize(at + 1, String::new());
            }
            s.tool_calls[at].push_str(args);
        } else {
            s.tool_calls.push(args.to_string());
        }
    }
    match choice["finish_reason"].as_str() {
        Some("length") => s.length = true,
        Some("content_filter") => s.refusal = true,
        _ => {}
    }
    s.logprobs(&choice["logprobs"]["content"]);
    s.logprobs(&choice["logprobs"]["refusal"]);
}

/// An OpenAI Responses object (a whole answer, or the `response` of a
/// stream's closing event).
fn responses(s: &mut Said, v: &Value) {
    for item in v["output"].as_array().into_iter().flatten() {
        match item["type"].as_str() {
            Some("message") => {
                for c in item["content"].as_array().into_iter().flatten() {
                    match c["type"].as_str() {
                        Some("output_text") => {
                            s.text.push_str(c["text"].as_str().unwrap_or_default());
                            s.logprobs(&c["logprobs"]);
                        }
                        Some("refusal") => s.refusal = true,
                        _ => {}
                    }
                }
            }
            Some("function_call") => s.tool_calls.push(item["arguments"].as_str().unwrap_or_default().to_string()),
            _ => {}
        }
    }
    if v["status"] == "incomplete" {
        match v["incomplete_details"]["reason"].as_str() {
            Some("content_filter") => s.refusal = true,
            _ => s.length = true,
        }
    }
}

fn anthropic_stop(s: &mut Said, stop: &Value) {
    match stop.as_str() {
        Some("max_tokens") => s.length = true,
        Some("refusal") => s.refusal = true,
        _ => {}
    }
}

/// A Gemini GenerateContentResponse (whole, or one streamed chunk).
fn gemini(s: &mut Said, v: &Value) {
    if v["promptFeedback"]["blockReason"].is_string() {
        s.refusal = true;
    }
    let c = &v["candidates"][0];
    for p in c["content"]["parts"].as_array().into_iter().flatten() {
        if p["thought"] == true {
            continue;
        }
        if let Some(t) = p["text"].as_str() {
            s.text.push_str(t);
        } else if p.get("functionCall").is_some() {
            s.tool_calls.push(p["functionCall"]["args"].to_string());
        }
    }
    match c["finishReason"].as_str() {
        Some("MAX_TOKENS") => s.length = true,
        Some("SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY") => s.refusal = true,
        _ => {}
    }
    s.logprobs(&c["logprobsResult"]["chosenCandidates"]);
    if let Some(avg) = c["avgLogprobs"].as_f64() {
        s.avg_logprob = Some(avg);
    }
}

/// Reads a buffered stream's events, in order.
#[derive(Default)]
struct StreamReader {
    said: Said,
    /// Anthropic content blocks: index → (is the structured-output tool,
    /// is a tool call).
    blocks: Vec<(usize, bool, bool)>,
}

impl StreamReader {
    fn event(&mut self, wire: Wire, v: &Value, json_tool: bool) {
        let s = &mut self.said;
        match wire {
            Wire::Chat => {
                for choice in v["choices"].as_array().into_iter().flatten().filter(|c| c["index"].as_u64().unwrap_or(0) == 0) {
                    chat(s, choice, "delta");
                }
            }
            Wire::Responses => {
                if matches!(v["type"].as_str(), Some("response.completed" | "response.incomplete" | "response.failed")) {
                    let mut whole = Said::default();
                    responses(&mut whole, &v["response"]);
                    *s = whole;
                }
            }
            Wire::Messages => match v["type"].as_str() {
                Some("content_block_start") => {
                    let i = v["index"].as_u64().unwrap_or(0) as usize;
                    let b = &v["content_block"];
                    let tool = b["type"] == "tool_use";
                    let answer_tool = tool && json_tool && b["name"] == JSON_TOOL;
                    if tool && !answer_tool {
                        s.tool_calls.push(String::new());
                    }
                    self.blocks.push((i, answer_tool, tool && !answer_tool));
                    if let Some(t) = b["text"].as_str() {
                        s.text.push_str(t);
                    }
                }
                Some("content_block_delta") => {
                    let i = v["index"].as_u64().unwrap_or(0) as usize;
                    let d = &v["delta"];
                    let block = self.blocks.iter().rev().find(|b| b.0 == i).copied();
                    match (d["type"].as_str(), block) {
                        (Some("text_delta"), _) => s.text.push_str(d["text"].as_str().unwrap_or_default()),
                        (Some("input_json_delta"), Some((_, true, _))) => s.text.push_str(d["partial_json"].as_str().unwrap_or_default()),
                        (Some("input_json_delta"), Some((_, false, true))) => {
                            if let Some(last) = s.tool_calls.last_mut() {
                                last.push_str(d["partial_json"].as_str().unwrap_or_default());
                            }
                        }
                        _ => {}
                    }
                }
                Some("message_delta") => anthropic_stop(s, &v["delta"]["stop_reason"]),
                _ => {}
            },
            Wire::Gemini => gemini(s, v),
        }
    }
}

/// Read a buffered SSE answer of `wire` (its bytes as the provider sent
/// them, events whole or split anywhere).
pub fn stream(wire: Wire, bytes: &[u8], json_tool: bool) -> Said {
    let mut r = StreamReader::default();
    let mut at = 0;
    while let Some(len) = event_end(&bytes[at..], 0) {
        let data = data_of(&bytes[at..at + len]);
        at += len;
        if let Ok(v) = serde_json::from_slice::<Value>(&data) {
            r.event(wire, &v, json_tool);
        }
    }
    // An unterminated last event.
    if at < bytes.len() {
        if let Ok(v) = serde_json::from_slice::<Value>(&data_of(&bytes[at..])) {
            r.event(wire, &v, json_tool);
        }
    }
    r.said
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    #[test]
    fn openai_chat_answers_say_text_refusal_length_and_logprobs() {
        let a = json!({"choices": [{"message": {"content": "{\"a\":1}", "refusal": null}, "finish_reason": "stop",
            "logprobs": {"content": [{"token": "{", "logprob": -0.5}, {"token": "}", "logprob": -1.5}]}}]});
        let s = whole(Wire::Chat, &body(a), false).unwrap();
        assert_eq!(s.text, "{\"a\":1}");
        assert!(!s.refusal && !s.length);
        assert_eq!(s.mean_logprob(), Some(-1.0));
        let r = json!({"choices": [{"message": {"content": null, "refusal": "I can't help with that."}, "finish_reason": "stop"}]});
        assert!(whole(Wire::Chat, &body(r), false).unwrap().refusal);
        let l = json!({"choices": [{"message": {"content": ""}, "finish_reason": "length"}]});
        assert!(whole(Wire::Chat, &body(l), false).unwrap().length);
        assert!(whole(Wire::Chat, b"not json", false).is_none());
    }

    #[test]
    fn anthropic_answers_unwrap_the_structured_output_tool() {
        let a = json!({"content": [{"type": "tool_use", "name": "json_answer", "input": {"city": "Paris"}}], "stop_reason": "tool_use"});
        let s = whole(Wire::Messages, &body(a.clone()), true).unwrap();
        assert_eq!(s.text, "{\"city\":\"Paris\"}");
        assert!(s.tool_calls.is_empty());
        assert_eq!(whole(Wire::Messages, &body(a), false).unwrap().tool_calls.len(), 1);
        let r = json!({"content": [], "stop_reason": "refusal"});
        assert!(whole(Wire::Messages, &body(r), false).unwrap().refusal);
    }

    #[test]
    fn streams_are_read_across_split_events() {
        let events = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"{\\\"a\\\"\"},\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\":1}\"},\"finish_reason\":\"length\"}]}\n\n",
            "data: [DONE]\n\n"
        );
        let s = stream(Wire::Chat, events.as_bytes(), false);
        assert_eq!(s.text, "{\"a\":1}");
        assert!(s.length);
        let anthropic = concat!(
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"refusal\"}}\n\n",
        );
        let s = stream(Wire::Messages, anthropic.as_bytes(), false);
        assert_eq!(s.text, "Hi");
        assert!(s.refusal);
    }
}
