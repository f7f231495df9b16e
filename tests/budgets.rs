//! Budgets end to end against the release binary and the mock provider:
//! caps that hold under 300 concurrent requests (reject and downgrade),
//! streams cut mid-way, restarts and `kill -9`, reloads, savings in
//! `modelgate cost`.

mod common;

use common::{http_get, Config, Mock, Modelgate, Script};
use serde_json::{json, Value};

/// The mock reports 1,200 input tokens (200 of them cached) and 300 output
/// tokens. Priced at $10/Mtok everything, one call costs exactly $0.015.
const COST: f64 = 0.015;

/// `openai` and `anthropic` on `mock`, three models capped at 400 output
/// tokens, and `budgets` as the body of `budgets:`.
fn models(mock: &Mock, budgets: &str) -> String {
    Config::openai_anthropic(mock)
        .model("gpt-4o", "openai")
        .prices(10.0, 10.0)
        .with("max_output_tokens: 400")
        .model("gpt-4o-mini", "openai")
        .prices(0.15, 0.6)
        .with("max_output_tokens: 400")
        .model("claude-haiku", "anthropic")
        .prices(10.0, 10.0)
        .with("max_output_tokens: 400")
        .raw(&format!("budgets:\n{budgets}"))
        .build()
}

/// A prompt of ~1,300 tokens, so the worst-case estimate covers the
/// mock's reported 1,200 input tokens.
fn prompt() -> String {
    "count these words please ".repeat(325)
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "max_tokens": 300, "messages": [{"role": "user", "content": prompt()}]})
}

fn budgets(mg: &Modelgate) -> Vec<Value> {
    let (status, body) = http_get(&format!("{}/admin/budgets", mg.admin)).expect("admin answers");
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    v["budgets"].as_array().unwrap().clone()
}

fn budget(mg: &Modelgate, name: &str) -> Value {
    budgets(mg).into_iter().find(|b| b["name"] == name).unwrap_or_else(|| panic!("no budget {name}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = client.post(url).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    (status, headers, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_concurrent_requests_never_overrun_a_reject_cap() {
    let mock = Mock::start().await;
    let mg = Modelgate::start(&models(&mock, "  - { name: daily-cap, scope: global, window: day, limit_usd: 0.5, on_exceed: reject }\n"));
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for _ in 0..300 {
        let (c, url) = (client.clone(), format!("{}/v1/chat/completions", mg.gateway));
        tasks.push(tokio::spawn(async move { post(&c, url, chat("gpt-4o", false)).await }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        let (status, headers, body) = t.await.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                refused += 1;
                let err = &body["error"];
                assert_eq!(err["type"], "insufficient_quota", "{body}");
                assert_eq!(err["code"], "budget_exceeded");
                let msg = err["message"].as_str().unwrap();
                assert!(msg.contains("budget `daily-cap`") && msg.contains("$0.5000") && msg.contains("resets at"), "{msg}");
                let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!(retry > 0 && retry <= 86_400);
                assert_eq!(headers["x-should-retry"], "false");
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert_eq!(ok + refused, 300);
    assert!(ok > 0 && refused > 0, "ok {ok}, refused {refused}");
    // Only admitted requests reached the provider; the rest never left.
    assert_eq!(mock.calls(), ok);
    let b = budget(&mg, "daily-cap");
    let spent = f(&b["spent_usd"]);
    assert!(spent <= 0.5, "settled spend {spent} is over the limit");
    assert!((spent - ok as f64 * COST).abs() < 1e-9, "spent {spent} for {ok} requests");
    assert_eq!(f(&b["reserved_usd"]), 0.0, "no reservation is left behind");
    // Spend stays under the cap: the budget is `at_limit` (a request did not fit), `exceeded` only when it reached it exactly.
    assert!(b["state"] == "at_limit" || (b["state"] == "exceeded" && spent >= 0.5), "{b}");
    let m = mg.metrics();
    assert_eq!(common::metric_sum(&m, "modelgate_budget_exceeded_total", &[("budget", "daily-cap"), ("action", "reject")]), refused as f64);
    assert!((common::metric_sum(&m, "modelgate_budget_spent_usd", &[("budget", "daily-cap")]) - spent).abs() < 1e-9);
    assert_eq!(common::metric_sum(&m, "modelgate_budget_limit_usd", &[("budget", "daily-cap")]), 0.5);
    assert_eq!(common::metric_sum(&m, "modelgate_budget_reserved_usd", &[("budget", "daily-cap")]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn downgrade_mode_serves_every_excess_request_with_the_cheap_model() {
    let mock = Mock::start().await;
    let mg = Modelgate::start(&models(
        &mock,
        "  - { name: gpt-4o-day, scope: { model: gpt-4o }, window: day, limit_usd: 0.3, warn_at: 0.5, on_exceed: downgrade, downgrade_to: gpt-4o-mini }\n",
    ));
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..300 {
        let (c, url) = (client.clone(), format!("{}/v1/chat/completions", mg.gateway));
        tasks.push(tokio::spawn(async move { post(&c, url, chat("gpt-4o", i % 2 == 0)).await }));
    }
    let (mut full, mut cheap) = (0, 0);
    for t in tasks {
        let (status, headers, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        match headers["x-modelgate-model"].to_str().unwrap() {
            "gpt-4o" => {
                full += 1;
                assert!(headers.get("x-modelgate-downgraded-by").is_none());
            }
            "gpt-4o-mini" => {
                cheap += 1;
                assert_eq!(headers["x-modelgate-downgraded-by"], "gpt-4o-day");
            }
            other => panic!("served by {other}"),
        }
    }
    assert!(full > 0 && cheap > 0, "full {full}, cheap {cheap}");
    let upstream: Vec<String> = mock.requests().iter().map(|r| r.json()["model"].as_str().unwrap().to_string()).collect();
    assert_eq!(upstream.iter().filter(|m| *m == "gpt-4o").count(), full);
    assert_eq!(upstream.iter().filter(|m| *m == "gpt-4o-mini").count(), cheap);
    let b = budget(&mg, "gpt-4o-day");
    assert!(f(&b["spent_usd"]) <= 0.3);
    assert!((f(&b["spent_usd"]) - full as f64 * COST).abs() < 1e-9);
    assert_eq!(f(&b["reserved_usd"]), 0.0);
    let log = mg.wait_access_log(300);
    assert_eq!(log.iter().filter(|r| r["downgraded_by"] == "gpt-4o-day").count(), cheap);
    let m = mg.metrics();
    // The warning fires once, when the spend crossed warn_at (50 % of $0.30).
    // Under heavy load worst-case reservations can move requests to the
    // cheap model before the spend gets there; then it must not fire.
    let warned = if f(&b["spent_usd"]) >= 0.15 { 1.0 } else { 0.0 };
    assert_eq!(common::metric_sum(&m, "modelgate_budget_warnings_total", &[("budget", "gpt-4o-day"), ("level", "warn")]), warned, "spent {}", b["spent_usd"]);
    assert_eq!(common::metric_sum(&m, "modelgate_budget_exceeded_total", &[("budget", "gpt-4o-day"), ("action", "downgrade")]), cheap as f64);
}

/// Read an SSE response until `pred` holds for the text so far.
async fn read_until(resp: &mut reqwest::Response, pred: impl Fn(&str) -> bool) -> String {
    let mut text = String::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
        if pred(&text) {
            break;
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_streams_are_settled_for_what_was_produced() {
    let mock = Mock::start().await;
    let mg = Modelgate::start(&models(&mock, "  - { name: all, window: day, limit_usd: 100 }\n"));
    let client = reqwest::Client::new();

    // The provider cuts the stream after its first event: the client gets an
    // error event, the spend is the estimate of what was produced.
    mock.script([Script::Cut]);
    let mut resp = client.post(format!("{}/v1/chat/completions", mg.gateway)).json(&chat("gpt-4o", true)).send().await.unwrap();
    let text = read_until(&mut resp, |_| false).await;
    assert!(text.contains("\"error\""), "{text}");
    let after_cut = f(&budget(&mg, "all")["spent_usd"]);
    // ~1,300 estimated input tokens, no output: well under a full answer.
    assert!(after_cut > 0.010 && after_cut < COST, "spent {after_cut}");
    assert_eq!(f(&budget(&mg, "all")["reserved_usd"]), 0.0);

    // The client goes away mid-stream (Anthropic dialect this time).
    mock.script([Script::Gated]);
    let body = json!({"model": "claude-haiku", "stream": true, "max_tokens": 300, "messages": [{"role": "user", "content": prompt()}]});
    let mut resp = client.post(format!("{}/anthropic/v1/messages", mg.gateway)).json(&body).send().await.unwrap();
    let first = read_until(&mut resp, |t| t.contains("message_start")).await;
    assert!(first.contains("message_start"));
    drop(resp);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    mock.release();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let b = loop {
        let b = budget(&mg, "all");
        if f(&b["spent_usd"]) > after_cut || std::time::Instant::now() > deadline {
            break b;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(f(&b["spent_usd"]) > after_cut, "the cut stream was settled");
    assert_eq!(f(&b["reserved_usd"]), 0.0, "no reservation left behind");
    let ledger = std::fs::read_dir(mg.dir.path().join("state"))
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("ledger-"))
        .unwrap();
    let lines = std::fs::read_to_string(ledger.path()).unwrap();
    let entries: Vec<Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["estimated"], true, "the provider's cut stream carried no usage");
}

/// A client that goes away while the provider is silent (a model thinking
/// before its next token) is noticed at once, not at the provider's next
/// event: modelgate closes the provider's connection (so it stops
/// generating), settles what was produced and gives the reservation back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_while_the_provider_is_silent_is_settled_at_once() {
    let mock = Mock::start().await;
    let mg = Modelgate::start(&models(&mock, "  - { name: all, window: day, limit_usd: 100 }\n"));
    let client = reqwest::Client::new();
    let messages = json!({"model": "claude-haiku", "stream": true, "max_tokens": 300, "messages": [{"role": "user", "content": prompt()}]});
    for (path, body, first_event) in
        [("/v1/chat/completions", chat("gpt-4o", true), "chat.completion.chunk"), ("/anthropic/v1/messages", messages, "message_start")]
    {
        mock.script([Script::Gated]);
        let before = f(&budget(&mg, "all")["spent_usd"]);
        let mut resp = client.post(format!("{}{path}", mg.gateway)).json(&body).send().await.unwrap();
        let first = read_until(&mut resp, |t| t.contains(first_event)).await;
        assert!(first.contains(first_event), "{first}");
        assert!(f(&budget(&mg, "all")["reserved_usd"]) > 0.0, "{path}: the stream holds a reservation");
        assert_eq!(mock.gated_open(), 1);
        drop(resp);
        // The provider is never released: it stays silent.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let b = budget(&mg, "all");
            if f(&b["spent_usd"]) > before && f(&b["reserved_usd"]) == 0.0 && mock.gated_open() == 0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{path}: 5 s after the client left: {b}, provider streams still open: {}", mock.gated_open());
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let (_, metrics) = http_get(&format!("{}/metrics", mg.admin)).unwrap();
    assert!(metrics.contains("modelgate_stream_errors_total{reason=\"client_closed\"} 2"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_kill_9_and_reloads_keep_the_days_spend() {
    let mock = Mock::start().await;
    let conf =
        |limit: &str| models(&mock, &format!("  - {{ name: day, window: day, limit_usd: {limit} }}\n  - {{ name: month, window: month, limit_usd: 100 }}\n"));
    let mut mg = Modelgate::start(&conf("10"));
    let client = reqwest::Client::new();
    for i in 0..6 {
        let (status, _, body) = post(&client, format!("{}/v1/chat/completions", mg.gateway), chat("gpt-4o", i % 2 == 1)).await;
        assert_eq!(status, 200, "{body}");
    }
    let spent = f(&budget(&mg, "day")["spent_usd"]);
    assert!((spent - 6.0 * COST).abs() < 1e-9, "{spent}");

    // SIGKILL right after the responses: every completed one is on disk.
    mg.restart();
    assert_eq!(f(&budget(&mg, "day")["spent_usd"]), spent);
    assert_eq!(f(&budget(&mg, "month")["spent_usd"]), spent);

    // A graceful stop, then start.
    mg.signal("TERM");
    std::thread::sleep(std::time::Duration::from_millis(300));
    mg.restart();
    assert_eq!(f(&budget(&mg, "day")["spent_usd"]), spent);

    // A reload with a lower limit applies at once and keeps the spend.
    let text = std::fs::read_to_string(mg.config_path()).unwrap().replace("limit_usd: 10 ", "limit_usd: 0.05 ");
    std::fs::write(mg.config_path(), text).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while f(&budget(&mg, "day")["limit_usd"]) != 0.05 {
        assert!(std::time::Instant::now() < deadline, "reload not applied");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let b = budget(&mg, "day");
    assert_eq!(f(&b["spent_usd"]), spent);
    assert_eq!(b["state"], "exceeded");
    let (status, _, body) = post(&client, format!("{}/v1/chat/completions", mg.gateway), chat("gpt-4o", false)).await;
    assert_eq!(status, 429, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modelgate_cost_shows_savings_against_the_requested_models() {
    let mock = Mock::start().await;
    let conf =
        models(&mock, "  - { name: all, window: month, limit_usd: 100 }\nroutes:\n  - { name: to-mini, match: { model: gpt-4o }, target: gpt-4o-mini }\n");
    let mg = Modelgate::start(&conf);
    let client = reqwest::Client::new();
    for _ in 0..4 {
        let (status, headers, _) = post(&client, format!("{}/v1/chat/completions", mg.gateway), chat("gpt-4o", false)).await;
        assert_eq!((status, headers["x-modelgate-model"].to_str().unwrap()), (200, "gpt-4o-mini"));
    }
    // Served by gpt-4o-mini: 1,000 × 0.15 + 200 × 0.15 + 300 × 0.6 per Mtok.
    let actual = 4.0 * (1200.0 * 0.15 + 300.0 * 0.6) / 1e6;
    let requested = 4.0 * COST;
    let (_, body) = http_get(&format!("{}/admin/usage?window=month", mg.admin)).unwrap();
    let u: Value = serde_json::from_str(&body).unwrap();
    assert!((f(&u["total"]["cost_usd"]) - actual).abs() < 1e-9, "{u}");
    assert!((f(&u["total"]["savings_usd"]) - (requested - actual)).abs() < 1e-9, "{u}");
    assert_eq!(u["by_route"]["to-mini"]["requests"], 4);
    assert!(
        (common::metric_sum(&mg.metrics(), "modelgate_savings_usd_total", &[("requested", "gpt-4o"), ("model", "gpt-4o-mini")]) - (requested - actual)).abs()
            < 1e-9
    );

    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_modelgate")).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let text = run(&["cost", "--window", "month", "-c", mg.config_path().to_str().unwrap()]);
    assert!(text.contains("savings $0.0586 (97.6%)"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("gpt-4o-mini") && l.contains("$0.0586")), "{text}");
    let json: Value = serde_json::from_str(&run(&["cost", "--json", "--admin", &mg.admin])).unwrap();
    assert_eq!(json["window"], "day");
    let status = run(&["status", "--admin", &mg.admin]);
    assert!(status.contains("BUDGET") && status.lines().any(|l| l.starts_with("all") && l.contains("$100.00") && l.contains("ok")), "{status}");

    // Unreachable admin: a clear error, exit 1.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_modelgate")).args(["status", "--admin", "http://127.0.0.1:9"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach modelgate's admin API"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modelgate_cost_breaks_spend_down_by_app_task_route_and_arm_as_table_json_and_csv() {
    let mock = Mock::start().await;
    let conf = models(
        &mock,
        "  - { name: all, window: month, limit_usd: 100 }\nroutes:\n  - { name: rollout, match: { app: agent-b }, split: [{ model: gpt-4o, weight: 50, name: big }, { model: claude-haiku, weight: 50, name: small }] }\n",
    );
    let mg = Modelgate::start(&conf);
    let client = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", mg.gateway);
    // agent-a: two planning calls and one without a task; agent-b: two
    // users, each sticky to an arm of the split.
    for (app, task, user) in [
        ("agent-a", Some("planning"), "u"),
        ("agent-a", Some("planning"), "u"),
        ("agent-a", None, "u"),
        ("agent-b", None, "user-1"),
        ("agent-b", None, "user-2"),
    ] {
        let mut body = chat("gpt-4o", false);
        body["user"] = json!(user);
        let mut req = client.post(&url).header("x-modelgate-app", app).json(&body);
        if let Some(t) = task {
            req = req.header("x-modelgate-task", t);
        }
        assert_eq!(req.send().await.unwrap().status(), 200);
    }
    let (status, body) = http_get(&format!("{}/admin/usage?window=week&by=task", mg.admin)).unwrap();
    assert_eq!(status, 200, "{body}");
    let u: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(u["window"], "week");
    assert_eq!((u["by_task"]["planning"]["requests"].as_u64(), u["by_task"]["none"]["requests"].as_u64()), (Some(2), Some(3)), "{u}");
    assert!(u.get("by_model").is_none() && u.get("by_app").is_none(), "only the breakdown asked for: {u}");
    assert!((f(&u["by_task"]["planning"]["cost_usd"]) - 2.0 * COST).abs() < 1e-9, "{u}");
    let (status, body) = http_get(&format!("{}/admin/usage?by=team", mg.admin)).unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("use ?by=provider, model, app, task, route, arm, user or key"), "{body}");
    // Every breakdown without `by`; arms named ROUTE/ARM.
    let (_, body) = http_get(&format!("{}/admin/usage?window=month", mg.admin)).unwrap();
    let all: Value = serde_json::from_str(&body).unwrap();
    let arms = all["by_arm"].as_object().unwrap();
    assert_eq!(arms.values().map(|c| c["requests"].as_u64().unwrap()).sum::<u64>(), 2, "{all}");
    assert!(arms.keys().all(|k| k == "rollout/big" || k == "rollout/small"), "{all}");
    assert_eq!(all["by_app"]["agent-a"]["requests"], 3);

    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_modelgate")).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let table = run(&["cost", "--window", "week", "--by", "app", "--admin", &mg.admin]);
    assert!(table.contains("APP") && table.lines().any(|l| l.starts_with("agent-a") && l.contains(" 3 ")), "{table}");
    assert!(!table.contains("MODEL"), "one breakdown: {table}");
    let csv = run(&["cost", "--window", "month", "--by", "task", "--csv", "--admin", &mg.admin]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "task,requests,input_tokens,output_tokens,cost_usd,requested_cost_usd,savings_usd,savings_pct");
    assert!(lines.iter().any(|l| l.starts_with("planning,2,2400,600,0.03,")), "{csv}");
    let every = run(&["cost", "--csv", "--admin", &mg.admin]);
    assert!(every.starts_with("by,name,requests,"), "{every}");
    for by in ["provider", "model", "app", "task", "route", "arm"] {
        assert!(every.lines().any(|l| l.starts_with(&format!("{by},"))), "{by}: {every}");
    }
    let json: Value = serde_json::from_str(&run(&["cost", "--by", "arm", "--json", "--admin", &mg.admin])).unwrap();
    assert!(json["by_arm"].is_object() && json.get("by_route").is_none(), "{json}");
    // Per-agent cost also in the metrics, by app and task.
    let m = mg.metrics();
    assert!((common::metric_sum(&m, "modelgate_cost_usd_total", &[("app", "agent-a"), ("task", "planning")]) - 2.0 * COST).abs() < 1e-9, "{m}");
}
