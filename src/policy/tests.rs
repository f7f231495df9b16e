use bytes::Bytes;
use http::HeaderMap;

use super::*;
use crate::body::JsonBody;
use crate::dialect::classify_path;
use crate::test_config::{Config, Kind};

/// Providers (ollama is local), models with qualities, capabilities and
/// context sizes, a route of every kind, and routing rules.
fn conf() -> String {
    Config::new()
        .provider("openai", Kind::OpenAi, "http://127.0.0.1:1")
        .provider("anthropic", Kind::Anthropic, "http://127.0.0.1:2")
        .provider("ollama", Kind::OpenAi, "http://127.0.0.1:3")
        .with("local: true")
        .model("gpt-4o", "openai")
        .prices(2.5, 10.0)
        .with("context_tokens: 128000, quality: 4, capabilities: [tools, json, streaming]")
        .fallbacks(["haiku", "gpt-4o-mini"])
        .model("gpt-4o-mini", "openai")
        .prices(0.15, 0.6)
        .with("context_tokens: 128000, quality: 2, capabilities: [tools, json, streaming]")
        .model("mid", "openai")
        .prices(0.8, 4.0)
        .with("context_tokens: 200000, quality: 3, capabilities: [json, streaming]")
        .model("haiku", "anthropic")
        .id("claude-3-5-haiku-20241022")
        .prices(0.8, 4.0)
        .with("quality: 3")
        .model("llama", "ollama")
        .id("llama3.1:8b")
        .prices(0.0, 0.0)
        .with("context_tokens: 40, quality: 1, capabilities: [json, streaming]")
        .model("tiny", "openai")
        .prices(0.1, 0.1)
        .with("context_tokens: 30, quality: 1")
        .route("name: planning, match: { task: planning }, target: gpt-4o")
        .route(r#"name: billing, match: { app: "billing-*", model: "gpt-4o*" }, target: gpt-4o-mini, fallbacks: [gpt-4o]"#)
        .route("name: rollout, match: { app: rollout }")
        .with("split: [ { model: mid, weight: 10, name: candidate }, { model: gpt-4o-mini, weight: 90, name: control } ]")
        .route("name: extraction, match: { task: extraction }, select: { candidates: [gpt-4o, gpt-4o-mini, mid, llama], require: [json] }")
        .route("name: private, match: { app: hr }, target: gpt-4o-mini, mode: local-only, fallbacks: [llama]")
        .route("name: watch, match: { app: watched }, target: gpt-4o-mini, shadow: true")
        .route("name: small-first, match: { app: squeeze }, tiers: [ { max_complexity: 5, model: tiny }, { max_complexity: 10, model: gpt-4o } ]")
        .route(r#"name: big, match: { tokens: ">=1000", header: { x-team: search } }, target: mid"#)
        .route(r#"name: streams, match: { stream: true, tools: false, complexity: "<=3" }, target: gpt-4o-mini"#)
        .tiers("by-complexity", "gpt-4o*", [(3, "gpt-4o-mini"), (7, "mid"), (10, "gpt-4o")])
        .raw(concat!(
            "routing:\n",
            "  app_keys: { \"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\": keyed-app }\n",
            "  tasks:\n",
            "    - { task: extraction, response_format: true }\n",
            "    - { task: planning, system_contains: \"you are the planner\" }\n",
            "  client_models: [\"gpt-4o*\"]\n",
        ))
        .build()
}

fn snap() -> Snapshot {
    crate::config::load_str(&conf(), &|_| None).unwrap()
}

/// What a test checks of one decision.
#[derive(Debug)]
struct Out {
    route: String,
    plan: Vec<String>,
    arm: Option<String>,
    shadow: Option<String>,
    complexity: u8,
}

fn decide_with(s: &Snapshot, ov: &Overrides, path: &str, headers: &[(&str, &str)], body: &str) -> Result<Out, GatewayError> {
    let inc = classify_path(path, None).unwrap();
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    let b = JsonBody::parse(Bytes::from(body.to_string())).unwrap();
    let model = b.model().unwrap();
    let f = classify(s, &inc, path, &h, Some(&b), body.len(), model.as_deref())?;
    let d = decide(s, ov, &f, None)?;
    Ok(Out {
        route: d.route_label().to_string(),
        plan: d.attempts.iter().map(|a| a.model_label().to_string()).collect(),
        arm: d.arm.map(str::to_string),
        shadow: d.shadow.clone(),
        complexity: f.complexity.value,
    })
}

fn chat(model: &str, text: &str) -> String {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": text}]}).to_string()
}

fn run(headers: &[(&str, &str)], body: &str) -> Result<Out, GatewayError> {
    decide_with(&snap(), &Overrides::new(), "/v1/chat/completions", headers, body)
}

#[test]
fn the_seeds_examples_land_in_their_tiers() {
    let o = run(&[], &chat("gpt-4o", "add task to call john")).unwrap();
    assert_eq!((o.route.as_str(), o.plan[0].as_str(), o.complexity), ("by-complexity", "gpt-4o-mini", 2));
    let o = run(&[], &chat("gpt-4o", "show urgent Avenue tasks due this week")).unwrap();
    assert_eq!((o.plan[0].as_str(), o.complexity), ("mid", 4));
    let o = run(&[], &chat("gpt-4o", "analyze my productivity patterns")).unwrap();
    assert_eq!((o.plan[0].as_str(), o.complexity), ("gpt-4o", 9));
    // gpt-4o's own fallbacks follow; haiku (Anthropic) by translation.
    assert_eq!(o.plan, ["gpt-4o", "haiku", "gpt-4o-mini"]);
    // A long multi-question conversation is bumped up a tier: 4 + 2 + 2.
    let mut msgs: Vec<serde_json::Value> = (0..11).map(|i| serde_json::json!({"role": if i % 2 == 0 {"user"} else {"assistant"}, "content": "ok"})).collect();
    msgs.push(serde_json::json!({"role": "user", "content": "which tasks are late? and who owns them?"}));
    let body = serde_json::json!({"model": "gpt-4o", "messages": msgs}).to_string();
    let o = run(&[], &body).unwrap();
    assert_eq!((o.plan[0].as_str(), o.complexity), ("gpt-4o", 8));
}

#[test]
fn app_and_task_come_from_headers_keys_and_rules() {
    let o = run(&[("x-modelgate-app", "billing-bot")], &chat("gpt-4o", "hi")).unwrap();
    assert_eq!((o.route.as_str(), o.plan.clone()), ("billing", vec!["gpt-4o-mini".to_string(), "gpt-4o".to_string()]));
    // sha256("test") maps to keyed-app, which no route names: falls to tiers.
    let s = snap();
    let inc = classify_path("/v1/chat/completions", None).unwrap();
    let mut h = HeaderMap::new();
    h.insert("authorization", "Bearer test".parse().unwrap());
    let b = JsonBody::parse(Bytes::from(chat("gpt-4o", "hi"))).unwrap();
    let f = classify(&s, &inc, "/v1/chat/completions", &h, Some(&b), 10, Some("gpt-4o")).unwrap();
    assert_eq!((f.app.as_str(), f.app_source), ("keyed-app", Source::ApiKey));
    // Task rules: response_format → extraction; system prompt → planning.
    let body = serde_json::json!({"model": "x", "response_format": {"type": "json_object"}, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    assert_eq!(run(&[], &body).unwrap().route, "extraction");
    let body =
        serde_json::json!({"model": "x", "messages": [{"role": "system", "content": "You are the PLANNER."}, {"role": "user", "content": "hi"}]}).to_string();
    assert_eq!(run(&[], &body).unwrap().plan, ["gpt-4o", "haiku", "gpt-4o-mini"]);
    // The header wins over rules.
    assert_eq!(run(&[("x-modelgate-task", "other")], &body).unwrap().route, "none");
}

#[test]
fn select_scores_by_mode_and_filters_by_capability_and_context() {
    let body = |mode: Option<&str>| {
        let b = serde_json::json!({"model": "x", "response_format": {"type": "json_object"}, "messages": [{"role": "user", "content": "hi"}]}).to_string();
        let hs: Vec<(&str, &str)> = mode.map(|m| vec![("x-modelgate-mode", m)]).unwrap_or_default();
        run(&hs, &b).unwrap().plan
    };
    // performance: quality first.
    assert_eq!(body(Some("performance"))[0], "gpt-4o");
    // local-preferred: the local model first, cloud after it by score.
    let p = body(Some("local-preferred"));
    assert_eq!(p[0], "llama");
    assert!(p.len() >= 3);
    // balanced: cheap mini beats pricey gpt-4o.
    let p = body(None);
    assert_ne!(p[0], "gpt-4o");
    // local-only: only the local model.
    assert_eq!(body(Some("local-only")), ["llama"]);
    // Tools needed: mid and llama lack them.
    let b = serde_json::json!({"model": "x", "response_format": {"type": "json_object"}, "tools": [{"type": "function", "function": {"name": "f"}}], "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let p = run(&[], &b).unwrap().plan;
    assert!(p.iter().all(|m| m == "gpt-4o" || m == "gpt-4o-mini" || m == "haiku"), "{p:?}");
    assert!(p.iter().take(2).all(|m| m == "gpt-4o" || m == "gpt-4o-mini"), "the candidates first, then gpt-4o's fallbacks: {p:?}");
    // Context guard: llama holds 40 tokens; 100 max_tokens do not fit.
    let b = serde_json::json!({"model": "x", "max_tokens": 100, "response_format": {"type": "json_object"}, "messages": [{"role": "user", "content": "hi"}]})
        .to_string();
    let p = decide_with(&snap(), &Overrides::new(), "/v1/chat/completions", &[("x-modelgate-mode", "local-preferred")], &b).unwrap().plan;
    assert!(!p.contains(&"llama".to_string()), "{p:?}");
}

#[test]
fn local_only_never_plans_a_cloud_model_and_says_why() {
    // Route `private` is local-only: gpt-4o-mini is skipped, llama serves.
    let o = run(&[("x-modelgate-app", "hr")], &chat("gpt-4o", "hi")).unwrap();
    assert_eq!(o.plan, ["llama"]);
    // A header cannot lift it.
    let o = run(&[("x-modelgate-app", "hr"), ("x-modelgate-mode", "performance")], &chat("gpt-4o", "hi")).unwrap();
    assert_eq!(o.plan, ["llama"]);
    // Too long for the local model: refused, never sent to the cloud.
    let long = "word ".repeat(100);
    let e = run(&[("x-modelgate-app", "hr")], &chat("gpt-4o", &long)).unwrap_err();
    assert_eq!((e.status, e.code), (400, "context_length_exceeded"));
    assert!(e.message.contains("llama") && e.message.contains("not local"), "{}", e.message);
    // Global local-only via header on an unrouted unknown model: the default
    // openai provider is cloud → refused.
    let e = run(&[("x-modelgate-mode", "local-only")], &chat("o3-pro", "hi")).unwrap_err();
    assert_eq!((e.status, e.code), (403, "local_only"));
    assert!(e.message.contains("not local"));
}

#[test]
fn context_guard_moves_a_tier_up() {
    let o = run(&[("x-modelgate-app", "squeeze")], &chat("gpt-4o", "hi")).unwrap();
    assert_eq!(o.plan[0], "tiny");
    let o = run(&[("x-modelgate-app", "squeeze")], &chat("gpt-4o", &"hello ".repeat(40))).unwrap();
    assert_eq!(o.plan[0], "gpt-4o");
}

#[test]
fn splits_are_sticky_and_proportional() {
    let s = snap();
    let ov = Overrides::new();
    let mut candidate = 0;
    let n = 10_000;
    for i in 0..n {
        let body = serde_json::json!({"model": "gpt-4o", "user": format!("user-{i}"), "messages": [{"role": "user", "content": "hi"}]}).to_string();
        let o = decide_with(&s, &ov, "/v1/chat/completions", &[("x-modelgate-app", "rollout")], &body).unwrap();
        if o.arm.as_deref() == Some("candidate") {
            assert_eq!(o.plan[0], "mid");
            candidate += 1;
        }
    }
    let share = f64::from(candidate) / f64::from(n);
    assert!((share - 0.10).abs() <= 0.015, "candidate share {share}");
    for i in 0..50 {
        let body = serde_json::json!({"model": "gpt-4o", "user": format!("u{i}"), "messages": [{"role": "user", "content": "hi"}]}).to_string();
        let first = decide_with(&s, &ov, "/v1/chat/completions", &[("x-modelgate-app", "rollout")], &body).unwrap().arm;
        for _ in 0..5 {
            assert_eq!(decide_with(&s, &ov, "/v1/chat/completions", &[("x-modelgate-app", "rollout")], &body).unwrap().arm, first);
        }
    }
    // Anthropic's metadata.user_id counts as the user too.
    let a = split_point("r", "app", Some("x"));
    assert_eq!(a, split_point("r", "app", Some("x")));
    assert_ne!(a, split_point("r", "other-app", Some("x")));
}

#[test]
fn client_controls_are_checked_against_config() {
    let o = run(&[("x-modelgate-model", "gpt-4o")], &chat("gpt-4o", "add a task")).unwrap();
    assert_eq!(o.plan[0], "gpt-4o");
    let e = run(&[("x-modelgate-model", "mid")], &chat("gpt-4o", "add a task")).unwrap_err();
    assert_eq!((e.status, e.code), (403, "model_not_allowed"));
    assert!(e.message.contains("routing.client_models"));
    let e = run(&[("x-modelgate-model", "gpt-4o-nano")], &chat("gpt-4o", "hi")).unwrap_err();
    assert_eq!(e.code, "unknown_model");
    // tier: max escalates a simple request to the top tier.
    let o = run(&[("x-modelgate-tier", "max")], &chat("gpt-4o", "add task to call john")).unwrap();
    assert_eq!(o.plan[0], "gpt-4o");
    let o = run(&[("x-modelgate-app", "rollout"), ("x-modelgate-tier", "max")], &chat("gpt-4o", "hi")).unwrap();
    assert_eq!(o.arm.as_deref(), Some("candidate"), "the stronger arm");
    let e = run(&[("x-modelgate-tier", "better")], &chat("gpt-4o", "hi")).unwrap_err();
    assert_eq!((e.status, e.code), (400, "invalid_modelgate_header"));
    let e = run(&[("x-modelgate-mode", "fast")], &chat("gpt-4o", "hi")).unwrap_err();
    assert!(e.message.contains("local-only, local-preferred, balanced, performance"));
}

#[test]
fn shadow_reports_but_plans_the_unchanged_request() {
    let o = run(&[("x-modelgate-app", "watched")], &chat("gpt-4o", "analyze this")).unwrap();
    assert_eq!(o.route, "watch");
    assert_eq!(o.shadow.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(o.plan, ["gpt-4o", "haiku", "gpt-4o-mini"], "the requested model and its own fallbacks");
}

#[test]
fn match_conditions_on_tokens_headers_and_stream() {
    let long = "lorem ipsum dolor sit amet ".repeat(300);
    let o = run(&[("x-team", "search")], &chat("unknown-model", &long)).unwrap();
    assert_eq!(o.route, "big");
    assert_eq!(run(&[("x-team", "other")], &chat("unknown-model", &long)).unwrap().route, "none");
    assert_eq!(run(&[("x-team", "search")], &chat("unknown-model", "short")).unwrap().route, "none");
    let stream = serde_json::json!({"model": "unknown-model", "stream": true, "messages": [{"role": "user", "content": "add milk"}]}).to_string();
    assert_eq!(run(&[], &stream).unwrap().route, "streams");
}

#[test]
fn overrides_replace_a_routes_target() {
    let s = snap();
    let mut ov = Overrides::new();
    ov.insert("by-complexity".into(), overrides::Override { target: "gpt-4o".into(), set_at: "now".into(), note: None });
    let o = decide_with(&s, &ov, "/v1/chat/completions", &[], &chat("gpt-4o", "add task")).unwrap();
    assert_eq!(o.plan[0], "gpt-4o");
    // An override that no longer applies (unknown model) is ignored.
    ov.insert("by-complexity".into(), overrides::Override { target: "gone".into(), set_at: "now".into(), note: None });
    let o = decide_with(&s, &ov, "/v1/chat/completions", &[], &chat("gpt-4o", "add task")).unwrap();
    assert_eq!(o.plan[0], "gpt-4o-mini");
}

#[test]
fn routes_serve_other_dialects_where_translation_allows() {
    let s = snap();
    // An Anthropic Messages request is translated for the route's OpenAI model.
    let body = r#"{"model":"claude-x","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
    let o = decide_with(&s, &Overrides::new(), "/v1/messages", &[("x-modelgate-task", "planning")], body).unwrap();
    assert_eq!((o.route.as_str(), o.plan[0].as_str()), ("planning", "gpt-4o"));
    // Embeddings are not translated: an OpenAI-only route does not serve them
    // for another dialect, and an Anthropic model is never planned for them.
    let body = r#"{"model":"haiku","input":"hi"}"#;
    let o = decide_with(&s, &Overrides::new(), "/v1/embeddings", &[], body).unwrap();
    assert_eq!((o.route.as_str(), o.plan.clone()), ("none", vec!["other".to_string()]));
}

/// A local select with a cloud fallback, a select no model passes, tiers
/// with a fallback, and a local-only shadow route.
fn conf2() -> String {
    Config::new()
        .provider("openai", Kind::OpenAi, "http://127.0.0.1:1")
        .provider("ollama", Kind::OpenAi, "http://127.0.0.1:3")
        .with("local: true")
        .model("gpt-4o-mini", "openai")
        .prices(0.15, 0.6)
        .with("context_tokens: 128000")
        .model("small", "openai")
        .prices(0.1, 0.1)
        .with("context_tokens: 400")
        .model("llama", "ollama")
        .prices(0.0, 0.0)
        .with("context_tokens: 40, capabilities: [streaming]")
        .route("name: local-select, match: { app: a }, select: { candidates: [llama], local_only: true }, fallbacks: [gpt-4o-mini]")
        .route("name: json-select, match: { app: b }, select: { candidates: [llama], require: [json] }")
        .route("name: small-first, match: { app: c }, tiers: [ { max_complexity: 10, model: small } ], fallbacks: [gpt-4o-mini]")
        .route("name: shadowed, match: { app: s }, target: llama, mode: local-only, shadow: true")
        .build()
}

fn run2(app: &str, body: &str) -> Result<Out, GatewayError> {
    let s = crate::config::load_str(&conf2(), &|_| None).unwrap();
    decide_with(&s, &Overrides::new(), "/v1/chat/completions", &[("x-modelgate-app", app)], body)
}

#[test]
fn a_selects_filters_hold_for_its_fallbacks_and_rejections_are_named() {
    // local_only keeps the cloud fallback out of the plan.
    assert_eq!(run2("a", &chat("gpt-4o-mini", "hi")).unwrap().plan, ["llama"]);
    // Too big for llama: the refusal names both models and why.
    let e = run2("a", &chat("gpt-4o-mini", &"word ".repeat(100))).unwrap_err();
    assert_eq!(e.code, "context_length_exceeded");
    assert!(e.message.contains("llama: needs ~"), "{}", e.message);
    assert!(e.message.contains("gpt-4o-mini: provider `openai` is not local (select.local_only)"), "{}", e.message);
    // A candidate dropped by `require` is in the error, not an empty list.
    let e = run2("b", &chat("gpt-4o-mini", "hi")).unwrap_err();
    assert_eq!(e.code, "no_model");
    assert!(e.message.contains("llama: lacks the `json` capability"), "{}", e.message);
}

#[test]
fn images_count_against_the_context_window() {
    let text = serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "describe"}]}).to_string();
    assert_eq!(run2("c", &text).unwrap().plan[0], "small");
    // A 1,000-token image in a ~150-byte body does not fit 400 tokens.
    let image = serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "describe"}, {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    ]}]})
    .to_string();
    assert_eq!(run2("c", &image).unwrap().plan, ["gpt-4o-mini"]);
}

#[test]
fn plain_text_response_format_is_not_structured_output() {
    let s = snap();
    let task = |rf: serde_json::Value| {
        let body = serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "add it"}], "response_format": rf}).to_string();
        decide_with(&s, &Overrides::new(), "/v1/chat/completions", &[], &body).unwrap().route
    };
    assert_eq!(task(serde_json::json!({"type": "json_object"})), "extraction");
    assert_eq!(task(serde_json::json!({"type": "text"})), "by-complexity");
    assert_eq!(task(serde_json::Value::Null), "by-complexity");
}

#[test]
fn shadow_forwards_under_the_global_mode_not_the_routes() {
    // The route is local-only; the unchanged request still goes to the
    // cloud model it names, as it would with routing off.
    let o = run2("s", &chat("gpt-4o-mini", "hi")).unwrap();
    assert_eq!((o.plan[0].as_str(), o.shadow.as_deref()), ("gpt-4o-mini", Some("llama")));
}
