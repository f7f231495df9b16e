//! Issue 17 items 5–7 through the release binary: dated model ids asked by
//! the official SDKs, messages where users go wrong (`ca show`, a base URL
//! with one /v1 too many, x-should-retry, `check` without -c, `help
//! --help`, plurals, config errors without serde internals, unconfigured
//! models never called `other`), and budget states that read right.

mod common;

use std::process::Command;

use common::{Config, Mock, Modelgate, Script};
use serde_json::{json, Value};

/// Run a Python snippet (the official SDKs) against `mg`; its last stdout
/// line is JSON.
async fn sdk(mg: &Modelgate, code: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("client.py");
    std::fs::write(&script, code).unwrap();
    let stdout = common::run_python(&script.to_string_lossy(), mg, &[]).await;
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

async fn post(mg: &Modelgate, path: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = reqwest::Client::new().post(format!("{}{path}", mg.gateway)).header("authorization", "Bearer sk-client").json(body).send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let text = r.text().await.unwrap();
    (status, headers, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn modelgate(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_modelgate")).args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn chat(model: &str) -> Value {
    json!({"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]})
}

const DATED_IDS: &str = r#"
import json, os
import anthropic, openai

gw = os.environ["MG_GATEWAY"]
o = openai.OpenAI(base_url=gw + "/v1", api_key="sk-test", max_retries=0)
a = anthropic.Anthropic(base_url=gw + "/anthropic", api_key="sk-ant-test", max_retries=0)
out = {}
for label in ["first", "fallback"]:
    r = o.chat.completions.with_raw_response.create(model="gpt-4o-2024-08-06", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    r.parse()
    out["openai_" + label] = dict(r.headers)
    r = a.messages.with_raw_response.create(model="claude-sonnet-4-5-20250929", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    r.parse()
    out["anthropic_" + label] = dict(r.headers)
print(json.dumps(out))
"#;

/// Regression (issue 17 item 5): `gpt-4o-2024-08-06` and
/// `claude-sonnet-4-5-20250929` were unconfigured models: unpriced, and a
/// failure came back instead of the configured fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdks_asking_for_dated_ids_get_the_models_price_and_fallbacks() {
    let mock = Mock::start().await;
    let conf = Config::openai_anthropic(&mock)
        .model("gpt-4o", "openai")
        .prices(2.5, 10.0)
        .cached(1.25)
        .with(r#"aliases: ["gpt-4o-20*"]"#)
        .fallbacks(["gpt-4o-mini"])
        .model("gpt-4o-mini", "openai")
        .prices(0.15, 0.6)
        .cached(0.075)
        .model("claude-sonnet-4-5", "anthropic")
        .id("claude-sonnet-4-5-20250929")
        .prices(3.0, 15.0)
        .cached(0.3)
        .with(r#"aliases: ["claude-sonnet-4-5-*"]"#)
        .fallbacks(["claude-haiku-4-5"])
        .model("claude-haiku-4-5", "anthropic")
        .id("claude-haiku-4-5-20251001")
        .prices(1.0, 5.0)
        .cached(0.1)
        .raw("retry: { max_attempts: 1 }")
        .build();
    let mg = Modelgate::start(&conf);
    // What the configured names cost (the mock reports the same usage every time).
    let (_, h, _) = post(&mg, "/v1/chat/completions", &chat("gpt-4o")).await;
    let gpt_4o_cost = h["x-modelgate-cost-usd"].to_str().unwrap().to_string();
    let (_, h, _) = post(&mg, "/anthropic/v1/messages", &chat("claude-sonnet-4-5")).await;
    let sonnet_cost = h["x-modelgate-cost-usd"].to_str().unwrap().to_string();
    let before = mock.calls();
    // The SDKs' first two calls are served; the next two fail once each.
    mock.script([Script::Ok, Script::Ok, Script::Status(500), Script::Ok, Script::Status(500), Script::Ok]);
    let out = sdk(&mg, DATED_IDS).await;

    for (key, model, cost) in [("openai_first", "gpt-4o", &gpt_4o_cost), ("anthropic_first", "claude-sonnet-4-5", &sonnet_cost)] {
        let h = &out[key];
        assert_eq!(h["x-modelgate-model"], model, "{key}: {h}");
        assert_eq!(h["x-modelgate-cost-usd"], cost.as_str(), "{key} is priced as {model}: {h}");
        assert_eq!(h["x-modelgate-attempts"], "1");
    }
    for (key, model) in [("openai_fallback", "gpt-4o-mini"), ("anthropic_fallback", "claude-haiku-4-5")] {
        let h = &out[key];
        assert_eq!(h["x-modelgate-model"], model, "{key} fell back: {h}");
        assert_eq!(h["x-modelgate-attempts"], "2");
    }
    // Upstream: the dated ids as the client wrote them, the fallbacks as their own ids.
    let sent: Vec<String> = mock.requests()[before..].iter().map(|r| r.json()["model"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(
        sent,
        ["gpt-4o-2024-08-06", "claude-sonnet-4-5-20250929", "gpt-4o-2024-08-06", "gpt-4o-mini", "claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001"]
    );
    // The access log prices them as the configured model, too.
    let log = mg.wait_access_log(6);
    let dated: Vec<&Value> = log.iter().filter(|r| r["requested_model"] == "gpt-4o-2024-08-06").collect();
    assert_eq!(dated.len(), 2, "{log:?}");
    assert_eq!(dated[0]["model"], "gpt-4o");
    assert_eq!(format!("{}", dated[0]["cost_usd"]).parse::<f64>().unwrap(), gpt_4o_cost.parse::<f64>().unwrap());
}

/// Regression (issue 17 item 6): modelgate's error after its own retries
/// carried no x-should-retry, so the openai SDK retried it twice more (6
/// upstream calls for one request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_retries_do_not_multiply_modelgates_attempts() {
    let mock = Mock::start().await;
    let conf =
        Config::openai_anthropic(&mock).model("gpt-4o", "openai").prices(2.5, 10.0).raw("retry: { max_attempts: 2, backoff_ms: 10, on_status: [500] }").build();
    let mg = Modelgate::start(&conf);
    mock.fail_randomly(1.0, 500);
    let out = sdk(
        &mg,
        r#"
import json, os, openai
o = openai.OpenAI(base_url=os.environ["MG_GATEWAY"] + "/v1", api_key="sk-test")  # the SDK's default: 2 retries
try:
    o.chat.completions.create(model="gpt-4o", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    print(json.dumps({"status": 200}))
except openai.APIStatusError as e:
    print(json.dumps({"status": e.status_code, "should_retry": e.response.headers.get("x-should-retry")}))
"#,
    )
    .await;
    assert_eq!(out["status"], 500, "{out}");
    assert_eq!(out["should_retry"], "false");
    assert_eq!(mock.calls(), 2, "modelgate's 2 attempts, and no SDK retry on top");

    // A provider that cannot be reached: modelgate's own 502 says not to retry.
    let down = Config::new()
        .provider("openai", common::Kind::OpenAi, "http://127.0.0.1:9")
        .model("gpt-4o", "openai")
        .prices(2.5, 10.0)
        .raw("retry: { max_attempts: 1 }")
        .build();
    let mg = Modelgate::start(&down);
    let (status, headers, body) = post(&mg, "/v1/chat/completions", &chat("gpt-4o")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(headers["x-should-retry"], "false");
    // A 429 that says when to come back may be retried.
    let mock = Mock::start().await;
    let mg = Modelgate::start(&Config::openai_anthropic(&mock).model("gpt-4o", "openai").prices(2.5, 10.0).raw("retry: { max_attempts: 1 }").build());
    mock.script([Script::StatusRetryAfter(429, 2)]);
    let (status, headers, _) = post(&mg, "/v1/chat/completions", &chat("gpt-4o")).await;
    assert_eq!((status, headers["x-should-retry"].to_str().unwrap()), (429, "true"));
}

/// Regression (issue 17 item 5): an unconfigured model was called `other`
/// in the client's error ("tried: other: connect").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfigured_model_is_named_in_errors() {
    let conf = Config::new().provider("openai", common::Kind::OpenAi, "http://127.0.0.1:9").model("gpt-4o", "openai").prices(2.5, 10.0).build();
    let mg = Modelgate::start(&conf);
    let (status, _, body) = post(&mg, "/v1/chat/completions", &chat("gpt-4.1-nano")).await;
    assert_eq!(status, 502);
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("unconfigured model gpt-4.1-nano: connect"), "{msg}");
    assert!(!msg.contains("other"), "{msg}");
    // The access log names it by the id asked for; metrics keep their stable label.
    let log = mg.wait_access_log(1);
    assert_eq!((log[0]["requested_model"].as_str(), log[0]["model"].as_str()), (Some("gpt-4.1-nano"), None), "{:?}", log[0]);
    assert_eq!(common::metric_sum(&mg.metrics(), "modelgate_requests_total", &[("model", "other"), ("status", "502")]), 1.0);
}

/// Regression (issue 17 item 6): `ANTHROPIC_BASE_URL=…/anthropic/v1` sent
/// requests to /anthropic/v1/v1/messages and got a 404 in OpenAI's shape
/// that did not say what to change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_url_with_one_v1_too_many_gets_a_404_naming_the_right_one() {
    let mock = Mock::start().await;
    let mg = Modelgate::start(&common::standard(&mock).build());
    let host = mg.gateway.trim_start_matches("http://").to_string();
    let (status, _, body) = post(&mg, "/anthropic/v1/v1/messages", &chat("claude-haiku")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["type"], "error", "Anthropic's error shape: {body}");
    assert_eq!(body["error"]["type"], "not_found_error");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains(&format!("http://{host}/anthropic")) && msg.contains("ANTHROPIC_BASE_URL"), "{msg}");
    // The Anthropic SDK with base URL …/v1 (no /anthropic) lands on /v1/v1/messages.
    let (status, _, body) = post(&mg, "/v1/v1/messages", &chat("claude-haiku")).await;
    assert_eq!((status, body["type"].as_str()), (404, Some("error")), "{body}");
    // OpenAI: /v1/v1/chat/completions, in OpenAI's shape.
    let (status, _, body) = post(&mg, "/v1/v1/chat/completions", &chat("gpt-4o")).await;
    assert_eq!(status, 404, "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains(&format!("http://{host}/v1")) && msg.contains("OPENAI_BASE_URL"), "{msg}");
    assert_eq!(mock.calls(), 0);
}

/// Regression (issue 17 item 6): `ca show` created a CA as a side effect
/// and did not say that transparent mode was off.
#[test]
fn ca_show_without_the_forward_proxy_says_it_is_off_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = dir.path().join("modelgate.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\nproviders:\n  openai: {{ kind: openai, base_url: \"https://api.openai.com/v1\" }}\nmodels:\n  gpt-4o: {{ provider: openai, input_usd_per_mtok: 2.5, output_usd_per_mtok: 10 }}\n",
            state.display()
        ),
    )
    .unwrap();
    let (ok, out) = modelgate(&["ca", "show", "-c", config.to_str().unwrap()]);
    assert!(!ok, "nothing to show: {out}");
    assert!(out.contains("Transparent mode is off") && out.contains("forward_proxy: 127.0.0.1:8081"), "{out}");
    assert!(out.contains("modelgate ca init"), "{out}");
    assert!(!state.join("ca").exists(), "`ca show` created a CA");
    // Once created, it is shown (with the note that the proxy is off).
    let (ok, out) = modelgate(&["ca", "init", "-c", config.to_str().unwrap()]);
    assert!(ok, "{out}");
    let (ok, out) = modelgate(&["ca", "show", "-c", config.to_str().unwrap()]);
    assert!(ok && out.contains("BEGIN CERTIFICATE") && out.contains("Transparent mode is off"), "{out}");
}

/// Regression (issue 17 item 6): `check` needed -c, `help --help` failed,
/// counts said "1 providers".
#[test]
fn check_without_config_help_help_and_plural_counts() {
    let (ok, out) = modelgate(&["check"]);
    assert!(ok, "{out}");
    assert!(out.starts_with("<built-in defaults>: ok (4 providers, 10 models, 3 routes)"), "{out}");
    let (ok, out) = modelgate(&["help", "--help"]);
    assert!(ok && out.contains("Usage: modelgate <COMMAND>"), "{out}");
    let (ok, out) = modelgate(&["help", "check", "-h"]);
    assert!(ok && out.contains("built-in defaults"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("one.yaml");
    std::fs::write(
        &config,
        "providers:\n  openai: { kind: openai, base_url: \"https://api.openai.com/v1\" }\nmodels:\n  gpt-4o: { provider: openai, input_usd_per_mtok: 2.5, output_usd_per_mtok: 10 }\nroutes:\n  - { name: all, match: { model: \"*\" }, target: gpt-4o }\n",
    )
    .unwrap();
    let (ok, out) = modelgate(&["check", "-c", config.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains(": ok (1 provider, 1 model, 1 route)"), "{out}");
}

/// Regression (issue 17 item 6): a wrong `scope:` or `complexity:` said
/// "data did not match any variant of untagged enum RawScope".
#[test]
fn config_errors_say_what_was_expected() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.yaml");
    std::fs::write(
        &config,
        "providers:\n  openai: { kind: openai, base_url: \"https://api.openai.com/v1\" }\nmodels:\n  gpt-4o: { provider: openai, input_usd_per_mtok: 2.5, output_usd_per_mtok: 10 }\nroutes:\n  - { name: r, match: { complexity: [1, 2] }, target: gpt-4o }\nbudgets:\n  - { name: b, scope: [openai], window: day, limit_usd: 1 }\n  - { name: c, scope: { provider: openai, team: x }, window: day, limit_usd: 1 }\n",
    )
    .unwrap();
    let (ok, out) = modelgate(&["check", "-c", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(!out.contains("untagged") && !out.contains("variant"), "{out}");
    assert!(out.contains("routes[0].match.complexity: invalid type: sequence, expected a number such as 5, or a range in quotes such as \"<=3\""), "{out}");
    assert!(out.contains("budgets[0].scope: invalid type: sequence, expected `global`, or a mapping of provider, model, app, task, key and/or user"), "{out}");
    assert!(out.contains("unknown field `team`, expected one of `provider`, `model`, `app`, `task`"), "{out}");

    // Aliases that would swallow other models are refused, each saying why.
    std::fs::write(
        &config,
        "providers:\n  openai: { kind: openai, base_url: \"https://api.openai.com/v1\" }\nmodels:\n  gpt-4o: { provider: openai, aliases: [\"gpt-4o*\", \"*\"], input_usd_per_mtok: 2.5, output_usd_per_mtok: 10 }\n  gpt-4o-mini: { provider: openai, input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6 }\n",
    )
    .unwrap();
    let (ok, out) = modelgate(&["check", "-c", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(out.contains("models.gpt-4o.aliases[0]: alias `gpt-4o*` matches `gpt-4o-mini`, which is a model of its own"), "{out}");
    assert!(out.contains("models.gpt-4o.aliases[1]: `*` would match every model id"), "{out}");
}

/// Regression (issue 17 item 7): a budget that refused one large request
/// said `exceeded` while its spend was far below the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reservation_reads_at_limit_in_words() {
    let mock = Mock::start().await;
    let conf = Config::openai_anthropic(&mock)
        .model("gpt-4o", "openai")
        .prices(2.5, 10.0)
        .cached(1.25)
        .raw("budgets:\n  - { name: daily, scope: global, window: day, limit_usd: 0.01, on_exceed: reject }\n")
        .build();
    let mg = Modelgate::start(&conf);
    let (status, _, _) = post(&mg, "/v1/chat/completions", &chat("gpt-4o")).await;
    assert_eq!(status, 200);
    let big = json!({"model": "gpt-4o", "max_tokens": 16000, "messages": [{"role": "user", "content": "hi"}]});
    let (status, _, body) = post(&mg, "/v1/chat/completions", &big).await;
    assert_eq!(status, 429, "{body}");
    let (_, text) = common::http_get(&format!("{}/admin/budgets", mg.admin)).unwrap();
    let report: Value = serde_json::from_str(&text).unwrap();
    let b = &report["budgets"][0];
    let spent = b["spent_usd"].as_f64().unwrap();
    assert!(spent > 0.0 && spent < 0.01, "{b}");
    assert_eq!(b["reserved_usd"].as_f64(), Some(0.0));
    assert!((b["remaining_usd"].as_f64().unwrap() - (0.01 - spent)).abs() < 1e-9, "{b}");
    assert_eq!(b["state"], "at_limit", "{b}");
    let detail = b["detail"].as_str().unwrap();
    let left = format!("${:.4}", 0.01 - spent);
    assert!(detail.starts_with("at limit: a request needing up to $0.16") && detail.contains(&format!("was refused with {left} left")), "{detail}");
    // `modelgate status` says it in words.
    let (ok, out) = modelgate(&["status", "--admin", &mg.admin]);
    assert!(ok, "{out}");
    assert!(out.contains("at limit") && !out.contains("exceeded"), "{out}");
    assert!(out.contains("daily: at limit: a request needing up to $0.16"), "{out}");
}
