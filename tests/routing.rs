//! End-to-end routing: the real binary, mock providers that speak the real
//! wire format, plain HTTP clients; `modelgate route` and `/admin/route`
//! explain the same decisions.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{metric_sum, Config, Kind, Mock, Modelgate};
use futures_util::StreamExt;
use serde_json::{json, Value};

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).pool_max_idle_per_host(64).build().unwrap()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

async fn post(url: &str, headers: &[(&str, &str)], body: &Value) -> reqwest::Response {
    let mut rb = client().post(url).json(body);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb.send().await.expect("request to modelgate")
}

/// The seed's three-tier setup; "claude-3-5-haiku" is served through an
/// OpenAI-compatible endpoint (the mock), as Anthropic's compat API does.
fn tiers_config(mock: &Mock) -> Config {
    Config::new()
        .provider("openai", Kind::OpenAi, mock)
        .provider("anthropic-openai", Kind::OpenAi, mock)
        .model("gpt-4o-mini", "openai")
        .prices(0.15, 0.6)
        .with("context_tokens: 128000, quality: 2")
        .model("claude-3-5-haiku", "anthropic-openai")
        .id("claude-3-5-haiku-20241022")
        .prices(0.8, 4.0)
        .with("context_tokens: 200000, quality: 3")
        .model("gpt-4o", "openai")
        .prices(2.5, 10.0)
        .with("context_tokens: 128000, quality: 4")
        .tiers("by-complexity", "gpt-4o*", [(3, "gpt-4o-mini"), (7, "claude-3-5-haiku"), (10, "gpt-4o")])
}

fn long_conversation() -> Value {
    let mut msgs: Vec<Value> = (0..12).map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": "ok"})).collect();
    msgs.push(json!({"role": "user", "content": "show my tasks? which are late? who owns them?"}));
    json!({"model": "gpt-4o", "messages": msgs})
}

fn modelgate_route(config: &std::path::Path, body: &Value, extra: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let req = dir.path().join("body.json");
    std::fs::write(&req, body.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_modelgate")).args(["route", "-c"]).arg(config).arg("--request").arg(&req).args(extra).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[tokio::test]
async fn seed_examples_route_to_their_tiers_and_explain_says_why() {
    let mock = Mock::start().await;
    let mg = Modelgate::start(&tiers_config(&mock).build());
    let url = format!("{}/v1/chat/completions", mg.gateway);
    let cases = [
        (chat("gpt-4o", "add task to call john"), "gpt-4o-mini", "gpt-4o-mini", "2", "complexity 2 → tier max_complexity 3 (gpt-4o-mini)"),
        (
            chat("gpt-4o", "show urgent Avenue tasks due this week"),
            "claude-3-5-haiku",
            "claude-3-5-haiku-20241022",
            "4",
            "complexity 4 → tier max_complexity 7 (claude-3-5-haiku)",
        ),
        (chat("gpt-4o", "analyze my productivity patterns"), "gpt-4o", "gpt-4o", "9", "complexity 9 → tier max_complexity 10 (gpt-4o)"),
        // 4 (show) + 2 (13 messages > 10) + 2 (three questions) = 8.
        (long_conversation(), "gpt-4o", "gpt-4o", "8", "complexity 8 → tier max_complexity 10 (gpt-4o)"),
    ];
    for (body, model, upstream_id, score, why) in cases {
        let r = post(&url, &[], &body).await;
        assert_eq!(r.status(), 200);
        assert_eq!((header(&r, "x-modelgate-model"), header(&r, "x-modelgate-complexity"), header(&r, "x-modelgate-route")), (model, score, "by-complexity"));
        assert_eq!(mock.last().json()["model"], upstream_id, "the provider was asked for the tier's model");
        let (code, text) = modelgate_route(mg.config_path(), &body, &[]);
        assert_eq!(code, 0, "{text}");
        assert!(text.contains(why), "explain should say `{why}`:\n{text}");
        assert!(text.contains(&format!("1. {model} via")), "plan in the explanation:\n{text}");
    }
    let (_, text) = modelgate_route(mg.config_path(), &long_conversation(), &[]);
    assert!(text.contains("+2 long conversation (13 > 10)") && text.contains("+2 several questions (3 > 1)"), "{text}");
    let log = mg.wait_access_log(4);
    let scores: Vec<u64> = log.iter().filter_map(|r| r["complexity"].as_u64()).collect();
    assert_eq!(scores, [2, 4, 9, 8]);
}

#[tokio::test]
async fn local_only_never_sends_a_byte_to_the_cloud_and_says_why() {
    let cloud = Mock::start().await;
    let local = Mock::start().await;
    let conf = Config::openai_anthropic(&cloud)
        .provider("ollama", Kind::OpenAi, &local)
        .with("local: true")
        .model("gpt-4o", "openai")
        .prices(2.5, 10.0)
        .fallbacks(["llama"])
        .model("claude-haiku", "anthropic")
        .prices(1.0, 5.0)
        .model("llama", "ollama")
        .id("llama3.1:8b")
        .prices(0.0, 0.0)
        .with("context_tokens: 8192, quality: 1")
        .route("name: extraction, match: { task: extraction }, select: { candidates: [gpt-4o, llama] }")
        .raw("routing:\n  mode: local-only")
        .build();
    let mg = Modelgate::start(&conf);
    let url = format!("{}/v1/chat/completions", mg.gateway);

    // A cloud model: its local fallback serves it.
    let r = post(&url, &[], &chat("gpt-4o", "hi")).await;
    assert_eq!((r.status().as_u16(), header(&r, "x-modelgate-model")), (200, "llama"));
    assert_eq!(local.last().json()["model"], "llama3.1:8b");
    // select keeps only the local candidate.
    let r = post(&url, &[("x-modelgate-task", "extraction")], &chat("gpt-4o", "hi")).await;
    assert_eq!(header(&r, "x-modelgate-model"), "llama");
    // A header asking for performance cannot lift local-only.
    let r = post(&url, &[("x-modelgate-mode", "performance")], &chat("gpt-4o", "hi")).await;
    assert_eq!(header(&r, "x-modelgate-model"), "llama");
    // Too long for the local model: refused, not sent to the cloud.
    let mut big = chat("gpt-4o", &"lorem ipsum ".repeat(2000));
    big["max_tokens"] = json!(6000);
    let r = post(&url, &[], &big).await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "context_length_exceeded");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(msg.contains("llama") && msg.contains("context window is 8192") && msg.contains("gpt-4o: provider `openai` is not local"), "{msg}");
    // An unknown model would go to the cloud default provider: refused (OpenAI shape).
    let r = post(&url, &[], &chat("o3-pro", "hi")).await;
    assert_eq!(r.status(), 403);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "permission_error");
    assert!(e["error"]["message"].as_str().unwrap().contains("local-only"));
    // An Anthropic client: no local model speaks its dialect (Anthropic shape).
    let r = post(
        &format!("{}/anthropic/v1/messages", mg.gateway),
        &[],
        &json!({"model": "claude-haiku", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status(), 403);
    let e: Value = r.json().await.unwrap();
    assert_eq!((e["type"].as_str(), e["error"]["type"].as_str()), (Some("error"), Some("permission_error")));
    assert!(e["error"]["message"].as_str().unwrap().contains("no local model can serve"), "{e}");
    // Other paths (model lists) would go to the cloud too: refused.
    let r = client().get(format!("{}/v1/models", mg.gateway)).send().await.unwrap();
    assert_eq!(r.status(), 403);

    assert_eq!(cloud.calls(), 0, "local-only sent a request to a cloud provider");
    assert_eq!(local.calls(), 3);
    // Refusals are logged with the mode that refused them.
    let log = mg.wait_access_log(7);
    let refused: Vec<&Value> = log.iter().filter(|l| l["status"].as_u64().is_some_and(|s| s >= 400)).collect();
    assert_eq!(refused.len(), 4);
    assert!(refused.iter().all(|l| l["mode"] == "local-only" && l["route"] == "none"), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_percent_split_is_proportional_sticky_and_visible() {
    let mock = Mock::start().await;
    let conf = Config::new()
        .provider("openai", Kind::OpenAi, &mock)
        .model("gpt-4o-mini", "openai").prices(0.15, 0.6)
        .model("gpt-5-mini", "openai").prices(0.25, 2.0)
        .route("name: rollout, match: { app: billing-bot }, split: [{ model: gpt-5-mini, weight: 10, name: candidate }, { model: gpt-4o-mini, weight: 90, name: control }]")
        .build();
    let mg = Modelgate::start(&conf);
    let url = format!("{}/v1/chat/completions", mg.gateway);
    let n = 10_000usize;
    let arms: Vec<(usize, String, String)> = futures_util::stream::iter(0..n)
        .map(|i| {
            let url = url.clone();
            async move {
                let body = json!({"model": "gpt-4o-mini", "user": format!("user-{i}"), "messages": [{"role": "user", "content": "hi"}]});
                let r = post(&url, &[("x-modelgate-app", "billing-bot")], &body).await;
                assert_eq!(r.status(), 200);
                (i, header(&r, "x-modelgate-arm").to_string(), header(&r, "x-modelgate-model").to_string())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let candidate = arms.iter().filter(|(_, arm, _)| arm == "candidate").count();
    let share = candidate as f64 / n as f64;
    assert!((share - 0.10).abs() <= 0.015, "candidate arm got {share:.4} of {n} requests");
    assert!(arms.iter().all(|(_, arm, model)| (arm == "candidate") == (model == "gpt-5-mini")), "the arm decides the model");
    // The same user always lands in the same arm.
    for (i, arm, _) in arms.iter().take(200) {
        let body = json!({"model": "gpt-4o-mini", "user": format!("user-{i}"), "messages": [{"role": "user", "content": "again"}]});
        let r = post(&url, &[("x-modelgate-app", "billing-bot")], &body).await;
        assert_eq!(header(&r, "x-modelgate-arm"), arm, "user-{i} changed arm");
    }
    let m = mg.metrics();
    assert_eq!(
        metric_sum(&m, "modelgate_split_assignments_total", &[("route", "rollout"), ("arm", "candidate")]) as usize,
        candidate + arms.iter().take(200).filter(|a| a.1 == "candidate").count()
    );
    let log = mg.wait_access_log(n + 200);
    assert!(log.iter().all(|r| r["arm"] == "candidate" || r["arm"] == "control"), "every access-log line names its arm");
}

#[tokio::test]
async fn shadow_mode_forwards_bytes_unchanged_and_reports_the_would_be_model() {
    let mock = Mock::start().await;
    let conf = Config::new()
        .provider("openai", Kind::OpenAi, &mock)
        .model("gpt-4o", "openai")
        .prices(2.5, 10.0)
        .with("quality: 4")
        .model("gpt-4o-mini", "openai")
        .prices(0.15, 0.6)
        .with("quality: 2")
        .tiers("observe", "gpt-4o*", [(3, "gpt-4o-mini"), (10, "gpt-4o")])
        .with("shadow: true")
        .build();
    let mg = Modelgate::start(&conf);
    let url = format!("{}/v1/chat/completions", mg.gateway);
    // Odd spacing, escapes and field order must all survive.
    let raw = "{ \"messages\": [ {\"role\":\"user\", \"content\":\"add a task \\u00e9\"} ],\n  \"model\" : \"gpt-4o\", \"temperature\": 1.50 }";
    let r = client().post(&url).header("content-type", "application/json").body(raw).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        (header(&r, "x-modelgate-shadow-model"), header(&r, "x-modelgate-model"), header(&r, "x-modelgate-route")),
        ("gpt-4o-mini", "gpt-4o", "observe")
    );
    assert_eq!(mock.last_call().body, raw.as_bytes(), "shadow mode changed the request body");
    // A stream too: no stream_options added.
    let raw = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"analyze why"}]}"#;
    let r = client().post(&url).header("content-type", "application/json").body(raw).send().await.unwrap();
    assert_eq!(header(&r, "x-modelgate-shadow-model"), "gpt-4o");
    let _ = r.bytes().await.unwrap();
    assert_eq!(mock.last_call().body, raw.as_bytes());
    let m = mg.metrics();
    assert_eq!(metric_sum(&m, "modelgate_shadow_decisions_total", &[("route", "observe"), ("model", "gpt-4o-mini")]), 1.0);
    assert_eq!(metric_sum(&m, "modelgate_shadow_decisions_total", &[("route", "observe"), ("model", "gpt-4o")]), 1.0);
    let log = mg.wait_access_log(2);
    assert_eq!(log[0]["shadow_model"], "gpt-4o-mini");
    assert_eq!(log[0]["model"], "gpt-4o");
}

#[tokio::test]
async fn client_controls_escalate_and_are_refused_in_the_clients_dialect() {
    let mock = Mock::start().await;
    let conf = tiers_config(&mock).raw("routing:\n  client_models: [\"gpt-4o\"]").build();
    let mg = Modelgate::start(&conf);
    let url = format!("{}/v1/chat/completions", mg.gateway);
    let simple = chat("gpt-4o", "add task to call john");
    let r = post(&url, &[("x-modelgate-tier", "max")], &simple).await;
    assert_eq!(header(&r, "x-modelgate-model"), "gpt-4o", "tier: max escalates to the strongest tier");
    let r = post(&url, &[("x-modelgate-model", "gpt-4o")], &simple).await;
    assert_eq!(header(&r, "x-modelgate-model"), "gpt-4o");
    assert!(mock.last().headers.keys().all(|k| !k.as_str().starts_with("x-modelgate-")), "x-modelgate-* headers are not forwarded");
    let r = post(&url, &[("x-modelgate-model", "claude-3-5-haiku")], &simple).await;
    assert_eq!(r.status(), 403);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "model_not_allowed");
    assert!(e["error"]["message"].as_str().unwrap().contains("routing.client_models"));
    let r = post(&url, &[("x-modelgate-tier", "better")], &simple).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("send `max`"));
}

#[tokio::test]
async fn admin_overrides_need_the_token_and_survive_reload_and_restart() {
    let mock = Mock::start().await;
    let conf = tiers_config(&mock).raw("admin_token_env: MG_TEST_ADMIN_TOKEN").build();
    let mut mg = Modelgate::start_with_env(&conf, &[("MG_TEST_ADMIN_TOKEN", "s3cret")]);
    let url = format!("{}/v1/chat/completions", mg.gateway);
    let ov = format!("{}/admin/overrides/by-complexity", mg.admin);
    let simple = chat("gpt-4o", "add task to call john");

    let r = client().put(&ov).json(&json!({"target": "gpt-4o"})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client().put(&ov).bearer_auth("wrong").json(&json!({"target": "gpt-4o"})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client().put(&ov).bearer_auth("s3cret").json(&json!({"target": "nope"})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("unknown model `nope`"));
    let r = client().put(format!("{}/admin/overrides/missing", mg.admin)).bearer_auth("s3cret").json(&json!({"target": "gpt-4o"})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = client().put(&ov).bearer_auth("s3cret").json(&json!({"target": "gpt-4o", "note": "mini regressed"})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&post(&url, &[], &simple).await, "x-modelgate-model"), "gpt-4o");

    // Reload (a changed file): the override stays.
    let text = std::fs::read_to_string(mg.config_path()).unwrap() + "\n# edited\n";
    std::fs::write(mg.config_path(), text).unwrap();
    mg.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(header(&post(&url, &[], &simple).await, "x-modelgate-model"), "gpt-4o");
    // Restart: it was saved in state_dir.
    mg.restart();
    assert_eq!(header(&post(&url, &[], &simple).await, "x-modelgate-model"), "gpt-4o");
    let list: Value = client().get(format!("{}/admin/overrides", mg.admin)).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["overrides"][0]["route"], "by-complexity");
    assert_eq!(list["overrides"][0]["target"], "gpt-4o");
    assert_eq!(list["overrides"][0]["note"], "mini regressed");
    assert_eq!(list["overrides"][0]["active"], true);
    // The CLI explains with the saved override too.
    let (_, text) = modelgate_route(mg.config_path(), &simple, &[]);
    assert!(text.contains("admin override") && text.contains("1. gpt-4o via"), "{text}");

    let r = client().delete(&ov).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client().delete(&ov).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(header(&post(&url, &[], &simple).await, "x-modelgate-model"), "gpt-4o-mini");
}

#[tokio::test]
async fn mutating_admin_endpoints_are_off_without_a_token() {
    let mock = Mock::start().await;
    let mg = Modelgate::start(&tiers_config(&mock).build());
    let r = client().put(format!("{}/admin/overrides/by-complexity", mg.admin)).bearer_auth("x").json(&json!({"target": "gpt-4o"})).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("admin_token_env"));
}

#[tokio::test]
async fn admin_route_explains_like_the_cli() {
    let mock = Mock::start().await;
    let mg = Modelgate::start(&tiers_config(&mock).build());
    let body = chat("gpt-4o", "show urgent Avenue tasks due this week");
    let r = client()
        .post(format!("{}/admin/route", mg.admin))
        .json(&json!({"path": "/v1/chat/completions", "headers": {"x-modelgate-app": "planner"}, "body": body}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["classification"]["app"]["value"], "planner");
    assert_eq!(e["classification"]["complexity"]["value"], 4);
    assert_eq!(e["classification"]["complexity"]["keyword"], "show");
    assert_eq!(e["routes"][0]["matched"], true);
    assert_eq!(e["decision"]["plan"][0]["model"], "claude-3-5-haiku");
    assert_eq!(e["decision"]["plan"][0]["upstream_model"], "claude-3-5-haiku-20241022");
    let (code, cli) = modelgate_route(mg.config_path(), &body, &["--json", "-H", "x-modelgate-app: planner"]);
    assert_eq!(code, 0);
    let cli: Value = serde_json::from_str(&cli).unwrap();
    assert_eq!(cli, e, "CLI and admin API explain the same decision");
    assert_eq!(mock.calls(), 0, "explaining sends nothing upstream");

    // A refusal explains itself and exits 2.
    let mut big = chat("gpt-4o", &"lorem ipsum ".repeat(100_000));
    big["max_tokens"] = json!(100);
    let (code, text) = modelgate_route(mg.config_path(), &big, &[]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("refused      400 context_length_exceeded"), "{text}");
}
