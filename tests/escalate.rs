//! Answer checks that escalate (`escalate_on`) and the client's own
//! escalation (`client_escalation`), end to end through the release binary
//! against the mock provider: a schema-failing, refused, truncated, empty
//! or unsure answer re-sent to a stronger model (tiers, `escalate_to`,
//! across dialects), both attempts in the ledger with their cost, the
//! header, access log and metrics; checks off → the answer unchanged;
//! `max_escalations` and a stronger model that fails → the last answer,
//! marked; buffered streams; the seed-003 "try with advanced AI" flow on
//! the shipped tier example; config errors; and the official SDKs
//! (tests/sdk/sdk_escalate.py).

mod common;

use common::{metric_sum, Config, Mock, Modelgate};
use serde_json::{json, Value};

const SCHEMA_FAIL: &str = r#"{"city": 5}"#;
const SCHEMA_OK: &str = r#"{"city": "Paris"}"#;

/// gpt-4o-mini (q2), claude-haiku (Anthropic, q3), gpt-4o (q4); a tiers
/// route for `gpt-4o*` (mini ≤3, haiku ≤7, gpt-4o) with `checks` added;
/// one try per model, so call counts are exact.
fn conf(mock: &Mock, checks: &str) -> Config {
    let tiers = r#"name: tiers, match: { model: "gpt-4o*" }, tiers: [ { max_complexity: 3, model: gpt-4o-mini }, { max_complexity: 7, model: claude-haiku }, { max_complexity: 10, model: gpt-4o } ]"#;
    let route = if checks.is_empty() { tiers.to_string() } else { format!("{tiers}, {checks}") };
    Config::openai_anthropic(mock)
        .model("gpt-4o-mini", "openai")
        .prices(0.15, 0.6)
        .with("quality: 2")
        .model("claude-haiku", "anthropic")
        .id("claude-haiku-4-5-20251001")
        .prices(1.0, 5.0)
        .with("quality: 3")
        .model("gpt-4o", "openai")
        .prices(2.5, 10.0)
        .with("quality: 4")
        .route(&route)
        .raw("retry: { max_attempts: 1 }")
        // The test key may go to the Anthropic provider too (a tier there).
        .raw("cross_provider_client_keys: true")
}

/// A simple request (complexity 2: the mini tier) for a JSON schema.
fn schema_request() -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "add the city of the meeting"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "city", "strict": true,
            "schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}}}})
}

fn plain(text: &str) -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]})
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> String {
        self.headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).unwrap_or_default()
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    fn content(&self) -> String {
        self.json()["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_string()
    }
}

async fn post(mg: &Modelgate, body: &Value, headers: &[(&str, &str)]) -> Answer {
    let mut req = reqwest::Client::new().post(format!("{}/v1/chat/completions", mg.gateway)).header("authorization", "Bearer sk-test").json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    Answer { status, headers, body: r.text().await.unwrap() }
}

fn ledger(mg: &Modelgate) -> Vec<Value> {
    let Some(file) =
        std::fs::read_dir(mg.dir.path().join("state")).unwrap().filter_map(|e| e.ok()).find(|e| e.file_name().to_string_lossy().starts_with("ledger-"))
    else {
        return Vec::new();
    };
    std::fs::read_to_string(file.path()).unwrap().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn upstream_models(mock: &Mock) -> Vec<String> {
    mock.requests().iter().filter(|r| r.method == "POST").map(|r| r.json()["model"].as_str().unwrap_or("").to_string()).collect()
}

#[tokio::test]
async fn a_schema_failing_answer_escalates_and_both_attempts_are_accounted() {
    let mock = Mock::start().await;
    mock.answer("gpt-4o-mini", common::mock::Answer::Text(SCHEMA_FAIL.into()));
    mock.answer("gpt-4o", common::mock::Answer::Text(SCHEMA_OK.into()));
    let mg = Modelgate::start(&conf(&mock, "escalate_on: [invalid_json, schema_mismatch], escalate_to: [gpt-4o]").build());
    let r = post(&mg, &schema_request(), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.content(), SCHEMA_OK, "the client gets the stronger model's valid answer");
    assert_eq!(r.header("x-modelgate-escalated"), "gpt-4o-mini→gpt-4o:schema_mismatch");
    assert_eq!(r.header("x-modelgate-model"), "gpt-4o");
    assert_eq!(r.header("x-modelgate-attempts"), "2");
    assert!(r.header("x-modelgate-check-failed").is_empty());
    assert_eq!(upstream_models(&mock), ["gpt-4o-mini", "gpt-4o"]);

    // Both attempts in the ledger, with their cost, tied by the request id.
    let entries = ledger(&mg);
    assert_eq!(entries.len(), 2, "{entries:?}");
    let (first, second) = (&entries[0], &entries[1]);
    assert_eq!(
        (first["model"].as_str(), first["check_failed"].as_str(), first["escalated_to"].as_str()),
        (Some("gpt-4o-mini"), Some("schema_mismatch"), Some("gpt-4o"))
    );
    let mini_cost = (1200.0 * 0.15 + 300.0 * 0.6) / 1e6;
    let big_cost = (1200.0 * 2.5 + 300.0 * 10.0) / 1e6;
    assert!((first["cost_usd"].as_f64().unwrap() - mini_cost).abs() < 1e-9, "{first}");
    assert_eq!(first["requested_cost_usd"].as_f64(), Some(0.0), "a discarded answer saved nothing");
    assert_eq!((second["model"].as_str(), second["escalated"].as_str()), (Some("gpt-4o"), Some("gpt-4o-mini→gpt-4o:schema_mismatch")));
    assert!((second["cost_usd"].as_f64().unwrap() - big_cost).abs() < 1e-9, "{second}");
    assert_eq!(first["request_id"], second["request_id"]);
    assert_eq!(second["request_id"].as_str(), Some(r.header("x-modelgate-request-id").as_str()));

    // The access log line: the delivered answer, the escalation and its cost.
    let log = mg.wait_access_log(1);
    assert_eq!(log[0]["escalated"], "gpt-4o-mini→gpt-4o:schema_mismatch");
    assert!((log[0]["escalation_cost_usd"].as_f64().unwrap() - mini_cost).abs() < 1e-9, "{}", log[0]);
    assert!((log[0]["cost_usd"].as_f64().unwrap() - big_cost).abs() < 1e-9);
    assert_eq!(log[0]["model"], "gpt-4o");

    // Metrics.
    let m = mg.metrics();
    let esc = [("route", "tiers"), ("from", "gpt-4o-mini"), ("to", "gpt-4o"), ("reason", "schema_mismatch")];
    assert_eq!(metric_sum(&m, "modelgate_escalations_total", &esc), 1.0, "{m}");
    assert!((metric_sum(&m, "modelgate_escalation_cost_usd_total", &[("model", "gpt-4o-mini")]) - mini_cost).abs() < 1e-9);
    assert_eq!(metric_sum(&m, "modelgate_answer_checks_total", &[("model", "gpt-4o"), ("result", "pass")]), 1.0);
    assert_eq!(metric_sum(&m, "modelgate_answer_checks_total", &[("model", "gpt-4o-mini"), ("result", "schema_mismatch")]), 1.0);

    // A valid first answer is not escalated.
    mock.answer("gpt-4o-mini", common::mock::Answer::Text(SCHEMA_OK.into()));
    let r = post(&mg, &schema_request(), &[]).await;
    assert_eq!((r.header("x-modelgate-model"), r.header("x-modelgate-escalated")), ("gpt-4o-mini".into(), String::new()));
    assert_eq!(mock.model_calls(), 3);
}

#[tokio::test]
async fn checks_off_return_the_first_answer_unchanged() {
    let mock = Mock::start().await;
    mock.answer("gpt-4o-mini", common::mock::Answer::Text(SCHEMA_FAIL.into()));
    let mg = Modelgate::start(&conf(&mock, "").build());
    for body in [schema_request(), plain("add milk")] {
        let r = post(&mg, &body, &[("x-mock-answer-gpt-4o-mini", "refusal")]).await;
        assert_eq!(r.status, 200);
        assert!(r.header("x-modelgate-escalated").is_empty() && r.header("x-modelgate-check-failed").is_empty());
        assert_eq!(r.json()["choices"][0]["message"]["refusal"], common::mock::REFUSAL, "passed through as the provider said it");
    }
    let r = post(&mg, &schema_request(), &[]).await;
    assert_eq!(r.content(), SCHEMA_FAIL);
    assert_eq!(upstream_models(&mock), ["gpt-4o-mini"; 3]);
    assert!(ledger(&mg).iter().all(|e| e.get("check_failed").is_none()));
}

#[tokio::test]
async fn refusals_truncations_empties_and_unsure_answers_climb_the_tiers() {
    let mock = Mock::start().await;
    let checks = "escalate_on: [refusal, truncated, empty, low_logprob, invalid_json], min_avg_logprob: -0.357, refusal_patterns: [\"(?i)^as an ai\"]";
    let mg = Modelgate::start(&conf(&mock, checks).build());
    // Refused by the provider: the next tier (claude-haiku, translated to
    // the Anthropic API) answers, in the client's OpenAI shape.
    let r = post(&mg, &plain("add milk"), &[("x-mock-answer-gpt-4o-mini", "refusal")]).await;
    assert_eq!(r.header("x-modelgate-escalated"), "gpt-4o-mini→claude-haiku:refusal");
    assert_eq!(r.content(), "Hello from the mock");
    assert_eq!(r.json()["object"], "chat.completion");
    assert_eq!(upstream_models(&mock), ["gpt-4o-mini", "claude-haiku-4-5-20251001"]);
    // Refused in words (refusal_patterns).
    let r = post(&mg, &plain("add milk"), &[("x-mock-answer-gpt-4o-mini", "text:As an AI, I cannot do that")]).await;
    assert_eq!(r.header("x-modelgate-escalated"), "gpt-4o-mini→claude-haiku:refusal");
    // Cut at the output limit with nothing usable; a cut text answer stands.
    let r = post(&mg, &plain("add milk"), &[("x-mock-answer-gpt-4o-mini", "truncated:")]).await;
    assert_eq!(r.header("x-modelgate-escalated"), "gpt-4o-mini→claude-haiku:truncated");
    let r = post(&mg, &plain("add milk"), &[("x-mock-answer-gpt-4o-mini", "truncated:a long list that was cut")]).await;
    assert_eq!((r.header("x-modelgate-escalated"), r.content()), (String::new(), "a long list that was cut".into()));
    // JSON mode, cut mid-object: truncated (the cause), not invalid_json.
    let json_mode = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "add milk"}], "response_format": {"type": "json_object"}});
    let r = post(&mg, &json_mode, &[("x-mock-answer-gpt-4o-mini", "truncated:{\"items\": [1, 2")]).await;
    assert_eq!(r.header("x-modelgate-escalated"), "gpt-4o-mini→claude-haiku:truncated");
    // Empty.
    let r = post(&mg, &plain("add milk"), &[("x-mock-answer-gpt-4o-mini", "empty")]).await;
    assert_eq!(r.header("x-modelgate-escalated"), "gpt-4o-mini→claude-haiku:empty");
    // Unsure (average logprob -1.0 < -0.357), only when logprobs were asked.
    let mut asked = plain("add milk");
    asked["logprobs"] = json!(true);
    let r = post(&mg, &asked, &[("x-mock-answer-gpt-4o-mini", "logprobs:-1.0:maybe it is")]).await;
    assert_eq!(r.header("x-modelgate-escalated"), "gpt-4o-mini→claude-haiku:low_logprob");
    let r = post(&mg, &asked, &[("x-mock-answer-gpt-4o-mini", "logprobs:-0.1:surely it is")]).await;
    assert!(r.header("x-modelgate-escalated").is_empty());
    let r = post(&mg, &plain("add milk"), &[("x-mock-answer-gpt-4o-mini", "logprobs:-1.0:maybe it is")]).await;
    assert!(r.header("x-modelgate-escalated").is_empty(), "logprobs the request did not ask for are not judged");
    // From the middle tier, the top one.
    let r = post(&mg, &plain("show my tasks"), &[("x-mock-answer-claude-haiku-4-5-20251001", "refusal")]).await;
    assert_eq!(r.header("x-modelgate-escalated"), "claude-haiku→gpt-4o:refusal");
    assert_eq!(r.header("x-modelgate-model"), "gpt-4o");
}

#[tokio::test]
async fn when_nothing_passes_the_last_answer_is_delivered_marked() {
    let mock = Mock::start().await;
    // max_escalations: 1 — mini fails, haiku fails: haiku's answer, marked.
    let mg = Modelgate::start(&conf(&mock, "escalate_on: [refusal]").build());
    let both = [("x-mock-answer-gpt-4o-mini", "refusal"), ("x-mock-answer-claude-haiku-4-5-20251001", "refusal")];
    let r = post(&mg, &plain("add milk"), &both).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-modelgate-escalated"), "gpt-4o-mini→claude-haiku:refusal");
    assert_eq!(r.header("x-modelgate-check-failed"), "refusal");
    assert_eq!(r.header("x-modelgate-model"), "claude-haiku");
    assert_eq!(mock.model_calls(), 2, "max_escalations: 1");
    let entries = ledger(&mg);
    assert_eq!(entries.len(), 2);
    assert_eq!((entries[1]["check_failed"].as_str(), entries[1]["escalated_to"].as_str()), (Some("refusal"), None), "delivered, marked: {entries:?}");
    assert_eq!(mg.wait_access_log(1)[0]["check_failed"], "refusal");

    // The next rung is down (503): the one after it serves.
    let r = post(&mg, &plain("add milk"), &[("x-mock-answer-gpt-4o-mini", "refusal"), ("x-mock-script", "status:503@claude-haiku-4-5-20251001")]).await;
    assert_eq!((r.header("x-modelgate-model"), r.header("x-modelgate-escalated")), ("gpt-4o".into(), "gpt-4o-mini→gpt-4o:refusal".into()));
    drop(mg);

    // The only stronger model is down: the first answer, marked; its
    // reservation settled once.
    let mg = Modelgate::start(&conf(&mock, "escalate_on: [refusal], escalate_to: [claude-haiku]").build());
    let r = post(&mg, &plain("add milk"), &[("x-mock-answer-gpt-4o-mini", "refusal"), ("x-mock-script", "status:503@claude-haiku-4-5-20251001")]).await;
    assert_eq!(r.status, 200);
    assert_eq!((r.header("x-modelgate-model"), r.header("x-modelgate-check-failed")), ("gpt-4o-mini".into(), "refusal".into()));
    assert!(r.header("x-modelgate-escalated").is_empty());
    assert_eq!(r.json()["choices"][0]["message"]["refusal"], common::mock::REFUSAL);
    let entries = ledger(&mg);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!((entries[0]["model"].as_str(), entries[0]["check_failed"].as_str()), (Some("gpt-4o-mini"), Some("refusal")));
    drop(mg);

    // max_escalations: 2 climbs twice; max_escalations: 0 only marks.
    let mg = Modelgate::start(&conf(&mock, "escalate_on: [refusal], max_escalations: 2").build());
    let r = post(&mg, &plain("add milk"), &both).await;
    assert_eq!(r.header("x-modelgate-escalated"), "gpt-4o-mini→claude-haiku:refusal, claude-haiku→gpt-4o:refusal");
    assert!(r.header("x-modelgate-check-failed").is_empty());
    drop(mg);
    let mg = Modelgate::start(&conf(&mock, "escalate_on: [refusal], max_escalations: 0").build());
    let before = mock.model_calls();
    let r = post(&mg, &plain("add milk"), &both).await;
    assert_eq!((r.header("x-modelgate-check-failed"), r.header("x-modelgate-model")), ("refusal".into(), "gpt-4o-mini".into()));
    assert_eq!(mock.model_calls(), before + 1);
}

#[tokio::test]
async fn budgets_hold_every_escalation_attempt_and_release_them() {
    let mock = Mock::start().await;
    let yaml =
        conf(&mock, "escalate_on: [refusal], escalate_to: [gpt-4o]").raw("budgets:\n  - { name: day, window: day, limit_usd: 100, on_exceed: reject }").build();
    let mg = Modelgate::start(&yaml);
    for _ in 0..3 {
        let r = post(
            &mg,
            &json!({"model": "gpt-4o", "max_tokens": 300, "messages": [{"role": "user", "content": "add milk"}]}),
            &[("x-mock-answer-gpt-4o-mini", "refusal")],
        )
        .await;
        assert_eq!(r.header("x-modelgate-escalated"), "gpt-4o-mini→gpt-4o:refusal");
    }
    let (_, body) = common::http_get(&format!("{}/admin/budgets", mg.admin)).unwrap();
    let b: Value = serde_json::from_str(&body).unwrap();
    let day = &b["budgets"][0];
    let per = (1200.0 * 0.15 + 300.0 * 0.6 + 1200.0 * 2.5 + 300.0 * 10.0) / 1e6;
    assert!((day["spent_usd"].as_f64().unwrap() - 3.0 * per).abs() < 1e-9, "both attempts of each request are spent: {day}");
    assert_eq!(day["reserved_usd"].as_f64(), Some(0.0), "no reservation left behind: {day}");
}

#[tokio::test]
async fn streams_are_checked_only_when_the_route_buffers_them() {
    let mock = Mock::start().await;
    let mg = Modelgate::start(&conf(&mock, "escalate_on: [refusal, empty], escalate_to: [gpt-4o], check_streams: true").build());
    let mut body = plain("add milk");
    body["stream"] = json!(true);
    let r = post(&mg, &body, &[("x-mock-answer-gpt-4o-mini", "refusal")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-modelgate-escalated"), "gpt-4o-mini→gpt-4o:refusal");
    assert!(r.body.contains("Hello") && r.body.contains("data: [DONE]") && !r.body.contains("refusal\":\"I'm"), "{}", r.body);
    assert!(!r.body.contains("\"choices\":[]"), "the usage chunk modelgate asked for stays hidden: {}", r.body);
    // A passing stream comes through whole, byte for byte as the provider sent it.
    let r = post(&mg, &body, &[("x-mock-answer-gpt-4o-mini", "text:fine then")]).await;
    assert!(r.header("x-modelgate-escalated").is_empty());
    assert!(r.body.contains("\"content\":\"fine \"") && r.body.ends_with("data: [DONE]\n\n"), "{}", r.body);
    let entries = ledger(&mg);
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0]["check_failed"], "refusal");
    assert!(entries.iter().all(|e| e["input"].as_u64().unwrap() + e["cached"].as_u64().unwrap() == 1200), "usage read from each stream: {entries:?}");
    drop(mg);

    // Without check_streams a stream passes unchecked (first token first).
    let mg = Modelgate::start(&conf(&mock, "escalate_on: [refusal], escalate_to: [gpt-4o]").build());
    let r = post(&mg, &body, &[("x-mock-answer-gpt-4o-mini", "refusal")]).await;
    assert!(r.header("x-modelgate-escalated").is_empty());
    assert!(r.body.contains(common::mock::REFUSAL), "{}", r.body);
}

/// `conf/examples/complexity-tiers.yaml` on `mock` (its providers'
/// URLs replaced, its `listen:` dropped).
fn shipped_tiers(mock: &Mock) -> String {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conf/examples/complexity-tiers.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = String::new();
    let mut in_listen = false;
    for line in text.lines() {
        if line.starts_with("listen:") {
            in_listen = true;
            continue;
        }
        if in_listen && line.starts_with("  ") {
            continue;
        }
        in_listen = false;
        if line.trim_start().starts_with("api_key_env:") {
            continue;
        }
        out.push_str(
            &line.replace("https://api.openai.com/v1", &format!("{}/v1", mock.url())).replace("https://api.anthropic.com/v1", &format!("{}/v1", mock.url())),
        );
        out.push('\n');
    }
    out
}

#[tokio::test]
async fn try_with_advanced_ai_reaches_gpt_4o_under_the_shipped_tier_example() {
    let mock = Mock::start().await;
    let mg = Modelgate::start(&shipped_tiers(&mock));
    let conversation = |model: &str| json!({"model": model, "messages": [{"role": "system", "content": "You are Pixie."}, {"role": "user", "content": "Schedule meeting with John tomorrow at 3pm"}]});
    // Seed 003's misrouted query: "Schedule meeting …" lands on the mini tier.
    let r = post(&mg, &conversation("gpt-4o"), &[]).await;
    assert_eq!(r.header("x-modelgate-model"), "gpt-4o-mini");
    let simple = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "add task to call john"}]});
    let r = post(&mg, &simple, &[]).await;
    assert_eq!(r.header("x-modelgate-model"), "gpt-4o-mini");
    // The user presses "try with advanced AI": the same conversation, model gpt-4o.
    for body in [conversation("gpt-4o"), simple.clone()] {
        let r = post(&mg, &body, &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-modelgate-model"), "gpt-4o", "{}", r.body);
        assert_eq!(mock.last_call().json()["model"], "gpt-4o");
    }
    // Again: still gpt-4o (not back down to the tier).
    assert_eq!(post(&mg, &simple, &[]).await.header("x-modelgate-model"), "gpt-4o");
    // A retry naming the tier's own model (or a weaker one) keeps the tier.
    assert_eq!(post(&mg, &conversation("gpt-4o-mini"), &[]).await.header("x-modelgate-model"), "gpt-4o-mini");
    // Another conversation, another app or another user is not a retry.
    let other = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "add task to call mary"}]});
    assert_eq!(post(&mg, &other, &[]).await.header("x-modelgate-model"), "gpt-4o-mini");
    assert_eq!(post(&mg, &simple, &[("x-modelgate-app", "other")]).await.header("x-modelgate-model"), "gpt-4o-mini");
    let mut with_user = simple.clone();
    with_user["user"] = json!("u-42");
    assert_eq!(post(&mg, &with_user, &[]).await.header("x-modelgate-model"), "gpt-4o-mini");
    // x-modelgate-tier: max on a first request.
    let fresh = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "add task to call bob"}]});
    assert_eq!(post(&mg, &fresh, &[("x-modelgate-tier", "max")]).await.header("x-modelgate-model"), "gpt-4o");
    // Explained.
    let dir = tempfile::tempdir().unwrap();
    let req = dir.path().join("body.json");
    std::fs::write(&req, simple.to_string()).unwrap();
    let out = std::process::Command::new(common::bin()).args(["route", "-c"]).arg(mg.config_path()).arg("--request").arg(&req).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("client escalation on retry"), "{text}");
}

#[tokio::test]
async fn without_the_rule_a_retry_lands_on_the_tier_and_always_honours_stronger_models() {
    let mock = Mock::start().await;
    let mg = Modelgate::start(&conf(&mock, "").build());
    let simple = plain("add task to call john");
    for _ in 0..2 {
        assert_eq!(post(&mg, &simple, &[]).await.header("x-modelgate-model"), "gpt-4o-mini");
    }
    drop(mg);
    let mg = Modelgate::start(&conf(&mock, "client_escalation: { requested_model: always }").build());
    let mut mini = simple.clone();
    mini["model"] = json!("gpt-4o-mini");
    assert_eq!(post(&mg, &mini, &[]).await.header("x-modelgate-model"), "gpt-4o-mini", "the tier's own model");
    assert_eq!(post(&mg, &simple, &[]).await.header("x-modelgate-model"), "gpt-4o", "a stronger model of the route is honoured");
}

fn check(yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = std::process::Command::new(common::bin()).args(["check", "-c"]).arg(&path).output().unwrap();
    assert!(!out.status.success(), "check should fail for:\n{yaml}");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[tokio::test]
async fn config_errors_name_the_yaml_path() {
    let mock = Mock::start().await;
    let cases = [
        (
            "escalate_on: [invalid_json, bogus]",
            "routes[0].escalate_on[1]: unknown check `bogus`; expected one of: invalid_json, schema_mismatch, refusal, truncated, empty, low_logprob",
        ),
        ("escalate_to: [gpt-4o]", "routes[0].escalate_to: `escalate_to` has no effect without `escalate_on`"),
        ("escalate_on: [refusal], escalate_to: [gpt-5]", "routes[0].escalate_to[0]: unknown model `gpt-5`"),
        ("escalate_on: [refusal], max_escalations: 9", "routes[0].max_escalations: 9 re-sends per request is more than 5"),
        ("escalate_on: [low_logprob]", "routes[0].escalate_on: `low_logprob` needs `min_avg_logprob`"),
        ("escalate_on: [low_logprob], min_avg_logprob: 0.7", "routes[0].min_avg_logprob: a log-probability is ≤ 0, got 0.7"),
        ("escalate_on: [empty], refusal_patterns: [\"x\"]", "routes[0].refusal_patterns: add `refusal` to `escalate_on`"),
        ("escalate_on: [refusal], refusal_patterns: [\"(unclosed\"]", "routes[0].refusal_patterns[0]: not a valid regular expression"),
        (
            "client_escalation: { requested_model: sometimes }",
            "routes[0].client_escalation.requested_model: unknown value `sometimes`; expected on_retry or always",
        ),
        ("client_escalation: { requested_model: on_retry, window_s: 0 }", "routes[0].client_escalation.window_s: a retry window of 0 s is outside 1–86400"),
        ("escalate_on: [refusal], escalate_streams: true", "unknown field `escalate_streams`"),
    ];
    for (fields, want) in cases {
        let text = check(&conf(&mock, fields).build());
        assert!(text.contains(want), "for `{fields}` expected `{want}` in:\n{text}");
    }
    let fixed = Config::openai_anthropic(&mock)
        .model("gpt-4o-mini", "openai")
        .route("name: fixed, match: { model: \"*\" }, target: gpt-4o-mini, escalate_on: [refusal]")
        .build();
    assert!(check(&fixed).contains("routes[0].escalate_on: this route names no model stronger"), "{}", check(&fixed));
    let shadow = conf(&mock, "escalate_on: [refusal], shadow: true").build();
    assert!(check(&shadow).contains("a shadow route forwards requests unchanged"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_get_the_escalated_answer() {
    let mock = Mock::start().await;
    let yaml = conf(&mock, "escalate_on: [invalid_json, schema_mismatch, refusal, truncated], escalate_to: [gpt-4o], check_streams: true, client_escalation: { requested_model: on_retry }")
        .model("claude-sonnet", "anthropic")
        .id("claude-sonnet-4-5")
        .prices(3.0, 15.0)
        .with("quality: 5")
        .route(r#"name: claude, match: { model: "claude*" }, target: claude-haiku, escalate_on: [refusal, truncated], escalate_to: [claude-sonnet]"#)
        .build();
    let mg = Modelgate::start(&yaml);
    let stdout = common::run_python("sdk_escalate.py", &mg, &[]).await;
    assert!(stdout.contains("all escalation checks passed"));
    // The SDKs' own requests reached the stronger models after the weak ones.
    let models = upstream_models(&mock);
    assert!(models.windows(2).any(|w| w == ["gpt-4o-mini", "gpt-4o"]), "{models:?}");
    assert!(models.windows(2).any(|w| w == ["claude-haiku-4-5-20251001", "claude-sonnet-4-5"]), "{models:?}");
}
