//! Explain a routing decision: `modelgate route` and `POST /admin/route`.
//!
//! Runs the same `classify` and `decide` as the gateway, with the trace on,
//! and reports every step as JSON (and as text for the terminal).

use std::fmt::Write;

use bytes::Bytes;
use http::HeaderMap;
use serde_json::{json, Value};

use super::{classify, decide, Overrides, Trace};
use crate::body::JsonBody;
use crate::config::{Complexity, Snapshot};
use crate::dialect::{classify_path, GatewayError};

fn refusal(e: &GatewayError) -> Value {
    json!({"status": e.status, "code": e.code, "message": e.message})
}

fn bumps(rules: &Complexity, s: &super::Score) -> Vec<String> {
    let mut out = Vec::new();
    for (label, measured, b) in [
        ("long conversation", s.messages, rules.long_conversation),
        ("several questions", s.question_marks, rules.many_questions),
        ("long message", s.chars, rules.long_message),
    ] {
        if measured as u64 > b.over {
            out.push(format!("+{} {label} ({measured} > {})", b.add, b.over));
        }
    }
    out
}

/// The full explanation of how `body` sent to `path` with `headers` would
/// be routed under `snap` and `overrides`.
pub fn explain(snap: &Snapshot, overrides: &Overrides, path: &str, headers: &HeaderMap, body: Bytes) -> Value {
    let Some(incoming) = classify_path(path, None) else {
        return json!({"refused": {"status": 404, "code": "unknown_endpoint", "message": format!("modelgate has no endpoint {path}; use e.g. /v1/chat/completions or /anthropic/v1/messages")}});
    };
    let json_body = if incoming.api.is_model_call() {
        match JsonBody::parse(body.clone()) {
            Ok(b) => Some(b),
            Err(e) => return json!({"refused": refusal(&e)}),
        }
    } else {
        None
    };
    let model = match json_body.as_ref().map(|b| b.model()).transpose() {
        Ok(m) => incoming.path_model.clone().or(m.flatten()),
        Err(e) => return json!({"refused": refusal(&e)}),
    };
    let facts = match classify(snap, &incoming, path, headers, json_body.as_ref(), body.len(), model.as_deref()) {
        Ok(f) => f,
        Err(e) => return json!({"refused": refusal(&e)}),
    };
    let rules = &snap.routing.complexity;
    let s = facts.complexity;
    let keyword = s.keyword.map(|(g, k)| rules.groups[g].1[k].clone());
    let tokens = facts.tokens();
    let mut trace = Trace::default();
    let decision = decide(snap, overrides, &facts, Some(&mut trace));
    let outcome = match &decision {
        Ok(d) => json!({
            "route": d.route_label(),
            "mode": d.mode.as_str(),
            "arm": d.arm,
            "shadow_model": d.shadow,
            "overridden": d.overridden,
            "plan": d.attempts.iter().map(|a| {
                let p = &snap.providers[a.provider];
                let upstream = a.model.filter(|_| !a.as_requested).map(|m| m.id.as_str()).or(model.as_deref());
                json!({"model": a.shown(model.as_deref()), "provider": p.name, "upstream_model": upstream})
            }).collect::<Vec<_>>(),
        }),
        Err(e) => json!({"refused": refusal(&e.error)}),
    };
    json!({
        "request": {"path": path, "dialect": incoming.dialect.as_str(), "api": incoming.api.as_str(), "model": model},
        "classification": {
            "app": {"value": facts.app, "source": facts.app_source.describe()},
            "task": {"value": facts.task, "source": if facts.task.is_some() { facts.task_source.describe() } else { "none".into() }},
            "complexity": {
                "value": s.value,
                "base": s.base,
                "keyword": keyword,
                "bumps": bumps(rules, &s),
                "messages": s.messages,
                "question_marks": s.question_marks,
                "chars": s.chars,
            },
            "input_tokens": {"estimate": tokens.count, "method": if tokens.exact { "model tokenizer" } else { "o200k × 1.2 approximation" }},
            "max_tokens": facts.max_tokens,
            "stream": facts.stream,
            "tools": facts.tools,
            "response_format": facts.response_format,
            "user": facts.user,
            "controls": {"model": facts.controls.model, "tier_max": facts.controls.tier_max, "mode": facts.controls.mode.map(|m| m.as_str())},
        },
        "routes": trace.routes,
        "mode": trace.mode,
        "target": trace.target,
        "candidates": trace.candidates,
        "notes": trace.notes,
        "decision": outcome,
    })
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The explanation as aligned text for a terminal.
pub fn render_text(e: &Value) -> String {
    let mut out = String::new();
    let w = &mut out;
    if let Some(r) = e.get("refused").filter(|_| e.get("decision").is_none()) {
        let _ = writeln!(w, "refused      {} {}: {}", s(&r["status"]), s(&r["code"]), s(&r["message"]));
        return out;
    }
    let req = &e["request"];
    let _ = writeln!(w, "request      {} ({} {}), model {}", s(&req["path"]), s(&req["dialect"]), s(&req["api"]), s(&req["model"]));
    let c = &e["classification"];
    let _ = writeln!(w, "app          {} (from {})", s(&c["app"]["value"]), s(&c["app"]["source"]));
    let _ = writeln!(w, "task         {} (from {})", s(&c["task"]["value"]), s(&c["task"]["source"]));
    let cx = &c["complexity"];
    let kw = match &cx["keyword"] {
        Value::String(k) => format!("keyword \"{k}\""),
        _ => "no keyword: default".into(),
    };
    let bumps: Vec<String> = cx["bumps"].as_array().map(|a| a.iter().map(s).collect()).unwrap_or_default();
    let bumps = if bumps.is_empty() { String::new() } else { format!(", {}", bumps.join(", ")) };
    let _ = writeln!(w, "complexity   {} = base {} ({kw}){bumps}", s(&cx["value"]), s(&cx["base"]));
    let _ = writeln!(w, "input tokens ~{} ({}), max_tokens {}", s(&c["input_tokens"]["estimate"]), s(&c["input_tokens"]["method"]), s(&c["max_tokens"]));
    let _ =
        writeln!(w, "request has  stream {}, tools {}, response_format {}, user {}", s(&c["stream"]), s(&c["tools"]), s(&c["response_format"]), s(&c["user"]));
    let _ = writeln!(w, "routes");
    for r in e["routes"].as_array().into_iter().flatten() {
        let mark = if r["matched"] == Value::Bool(true) { "match" } else { "skip " };
        let _ = writeln!(w, "  {mark} {}: {}", s(&r["route"]), s(&r["why"]));
    }
    if e["routes"].as_array().is_none_or(|a| a.iter().all(|r| r["matched"] != Value::Bool(true))) {
        let _ = writeln!(w, "  (no route matched)");
    }
    let _ = writeln!(w, "mode         {}", s(&e["mode"]));
    for t in e["target"].as_array().into_iter().flatten() {
        let _ = writeln!(w, "target       {}", s(t));
    }
    let cands = e["candidates"].as_array().cloned().unwrap_or_default();
    if !cands.is_empty() {
        let _ = writeln!(w, "candidates");
        for c in &cands {
            let mark = if c["kept"] == Value::Bool(true) { "keep" } else { "drop" };
            let score = match &c["score"] {
                Value::Object(p) => format!(
                    " [cost {:.2}, quality {:.2}, latency {:.2}]",
                    p["cost"].as_f64().unwrap_or(0.0),
                    p["quality"].as_f64().unwrap_or(0.0),
                    p["latency"].as_f64().unwrap_or(0.0)
                ),
                _ => String::new(),
            };
            let _ = writeln!(w, "  {mark} {} ({}): {}{score}", s(&c["model"]), s(&c["role"]), s(&c["why"]));
        }
    }
    for n in e["notes"].as_array().into_iter().flatten() {
        let _ = writeln!(w, "note         {}", s(n));
    }
    let d = &e["decision"];
    if let Some(r) = d.get("refused") {
        let _ = writeln!(w, "refused      {} {}: {}", s(&r["status"]), s(&r["code"]), s(&r["message"]));
        return out;
    }
    let _ = writeln!(w, "route        {}{}", s(&d["route"]), if d["overridden"] == Value::Bool(true) { " (target overridden by admin)" } else { "" });
    if !d["arm"].is_null() {
        let _ = writeln!(w, "split arm    {}", s(&d["arm"]));
    }
    if !d["shadow_model"].is_null() {
        let _ = writeln!(w, "shadow       would send to {}; the request is forwarded unchanged", s(&d["shadow_model"]));
    }
    let _ = writeln!(w, "plan");
    for (i, p) in d["plan"].as_array().into_iter().flatten().enumerate() {
        let _ = writeln!(w, "  {}. {} via {} (upstream model {})", i + 1, s(&p["model"]), s(&p["provider"]), s(&p["upstream_model"]));
    }
    out
}
