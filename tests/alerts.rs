//! Alerts end to end against the release binary: a local webhook receiver
//! gets exactly one budget-warn, one budget-exceeded, one breaker-open and
//! one spend-spike alert, in the generic JSON shape and the Slack shape; the
//! threshold rules (error rate, cost per hour, a route with no usable model)
//! fire once; a sink that does not answer slows no request (measured against
//! the same requests while it answered) and gets its alert when it comes
//! back; `modelgate alerts test` reaches every sink and names the one that
//! is down.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{metric_sum, Config, Mock, Modelgate};
use serde_json::{json, Value};

/// What a receiver got: (path, authorization header, body).
type Got = Arc<Mutex<Vec<(String, Option<String>, Value)>>>;

/// A webhook receiver on 127.0.0.1 that answers 200 and records every POST.
struct Receiver {
    addr: SocketAddr,
    got: Got,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        Self::on(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), Got::default())
    }

    fn on(listener: tokio::net::TcpListener, got: Got) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let rec = got.clone();
        let app = axum::Router::new().fallback(move |uri: http::Uri, headers: http::HeaderMap, body: bytes::Bytes| {
            let rec = rec.clone();
            async move {
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
                let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
                rec.lock().unwrap().push((uri.path().to_string(), auth, v));
                "ok"
            }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Receiver { addr, got, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn bodies(&self, path: &str) -> Vec<Value> {
        self.got.lock().unwrap().iter().filter(|(p, ..)| p == path).map(|(.., v)| v.clone()).collect()
    }

    /// Wait until `path` got at least `n` bodies (or 10 s passed).
    async fn wait_for(&self, path: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.bodies(path).len() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.bodies(path)
    }

    /// Stop answering and close the port.
    async fn stop(self) -> Got {
        self.task.abort();
        let _ = self.task.await;
        self.got
    }
}

/// The rule of a generic body, or of a Slack one (from its context line).
fn rule_of(body: &Value) -> String {
    if let Some(r) = body["rule"].as_str() {
        return r.to_string();
    }
    let context = body["blocks"].as_array().and_then(|b| b.last()).map(|c| c["elements"][0]["text"].as_str().unwrap_or("").to_string()).unwrap_or_default();
    context.split('`').nth(1).unwrap_or("").to_string()
}

fn count(bodies: &[Value], rule: &str) -> usize {
    bodies.iter().filter(|b| rule_of(b) == rule).count()
}

/// One call's prompt: ~1,300 tokens, so the worst case covers the mock's
/// reported 1,200 input tokens.
fn chat(model: &str) -> Value {
    json!({"model": model, "max_tokens": 300, "messages": [{"role": "user", "content": "count these words please ".repeat(325)}]})
}

async fn post(client: &reqwest::Client, mg: &Modelgate, model: &str, app: &str) -> u16 {
    let r = client.post(format!("{}/v1/chat/completions", mg.gateway)).header("x-modelgate-app", app).json(&chat(model)).send().await.unwrap();
    let status = r.status().as_u16();
    r.bytes().await.unwrap();
    status
}

/// A ledger line for `ts` (RFC 3339) costing `usd`, in the month file it belongs to.
fn seed_ledger(state: &std::path::Path, ts: jiff::Timestamp, usd: f64) {
    use std::io::Write;
    let month = ts.strftime("%Y-%m").to_string();
    let line = json!({"ts": ts.to_string(), "app": "seed", "route": "none", "provider": "openai", "model": "gpt-4o", "input": 10, "output": 10, "cost_usd": usd, "requested_cost_usd": usd});
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(state.join(format!("ledger-{month}.jsonl"))).unwrap();
    writeln!(f, "{line}").unwrap();
}

/// `openai` on `mock` with gpt-4o ($10/Mtok: one call costs $0.015) and
/// gpt-4o-mini; `flaky` on `down` with flaky-model (fails over to
/// gpt-4o-mini) whose breaker opens after 2 failures; then `rest`.
fn config(mock: &Mock, down: &Mock, rest: &str) -> String {
    Config::new()
        .provider("openai", common::Kind::OpenAi, mock)
        .provider("flaky", common::Kind::OpenAi, down)
        .model("gpt-4o", "openai")
        .prices(10.0, 10.0)
        .with("max_output_tokens: 400")
        .model("gpt-4o-mini", "openai")
        .prices(0.15, 0.6)
        .with("max_output_tokens: 400")
        .model("flaky-model", "flaky")
        .prices(1.0, 1.0)
        .with("max_output_tokens: 400")
        .fallbacks(["gpt-4o-mini"])
        .with("breaker: { failures: 2, cooldown_ms: 60000 }")
        .raw("retry: { max_attempts: 1, on_status: [503] }\n")
        .raw(rest)
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn budget_warn_exceeded_breaker_and_spike_each_alert_once_in_both_shapes() {
    let (mock, down) = (Mock::start().await, Mock::start().await);
    down.fail_randomly(1.0, 503);
    let rx = Receiver::start().await;
    let alerts = format!(
        r#"budgets:
  - {{ name: agent-daily, scope: {{ app: budgeted }}, window: day, limit_usd: 0.04, warn_at: 0.5, on_exceed: reject }}
alerts:
  instance: test-host
  link: "https://grafana.example/d/modelgate?alert={{id}}"
  sinks:
    - {{ name: hook, kind: webhook, url: "{}", headers: {{ Authorization: "Bearer s3cret" }} }}
    - {{ name: chat, kind: slack, url: "{}" }}
  delivery: {{ backoff_ms: 100, max_backoff_ms: 400 }}
  eval_interval_ms: 200
"#,
        rx.url("/generic"),
        rx.url("/slack")
    );
    let mut mg = Modelgate::start(&config(&mock, &down, &alerts));
    // A quiet baseline before today: $0.002 spread over the last day, so
    // the first $0.015 request is a spike (over 2× the average hour).
    let now = jiff::Timestamp::now();
    for hours_ago in [3, 7] {
        seed_ledger(&mg.dir.path().join("state"), now - jiff::SignedDuration::from_hours(hours_ago), 0.001);
    }
    mg.restart();
    let client = reqwest::Client::new();
    // $0.015 each against $0.04: the second passes warn_at (50 %), the third
    // does not fit and is refused, the fourth too (no second alert).
    let statuses = [
        post(&client, &mg, "gpt-4o", "budgeted").await,
        post(&client, &mg, "gpt-4o", "budgeted").await,
        post(&client, &mg, "gpt-4o", "budgeted").await,
        post(&client, &mg, "gpt-4o", "budgeted").await,
    ];
    assert_eq!(statuses, [200, 200, 429, 429]);
    // Two failures open flaky-model's breaker; the third request skips it.
    for _ in 0..4 {
        assert_eq!(post(&client, &mg, "flaky-model", "other").await, 200, "falls back to gpt-4o-mini");
    }
    assert_eq!(down.model_calls(), 2, "the open breaker skips flaky-model");

    let want = ["budget_warn", "budget_exceeded", "breaker_open", "spend_spike"];
    let generic = rx.wait_for("/generic", want.len()).await;
    let slack = rx.wait_for("/slack", want.len()).await;
    // More evaluations and requests must not send any alert again.
    for _ in 0..3 {
        post(&client, &mg, "gpt-4o", "budgeted").await;
        post(&client, &mg, "flaky-model", "other").await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let generic_all = rx.bodies("/generic");
    let slack_all = rx.bodies("/slack");
    for rule in want {
        assert_eq!(count(&generic_all, rule), 1, "generic {rule}: {generic:#?}\n{}", mg.stderr());
        assert_eq!(count(&slack_all, rule), 1, "slack {rule}: {slack:#?}");
    }
    assert_eq!(generic_all.len(), want.len(), "{generic_all:#?}");
    assert_eq!(slack_all.len(), want.len(), "{slack_all:#?}");

    // The generic shape: what, why, figures and an id (also in the link).
    let by = |rule: &str| generic_all.iter().find(|b| b["rule"] == rule).unwrap().clone();
    let warn = by("budget_warn");
    for k in ["id", "rule", "severity", "subject", "summary", "detail", "figures", "fired_at", "instance", "link", "test"] {
        assert!(warn.get(k).is_some(), "{k} missing: {warn}");
    }
    assert_eq!((warn["subject"].as_str(), warn["instance"].as_str(), warn["test"].as_bool()), (Some("agent-daily"), Some("test-host"), Some(false)));
    assert!((warn["figures"]["spent_usd"].as_f64().unwrap() - 0.03).abs() < 1e-9, "{warn}");
    assert_eq!(warn["figures"]["limit_usd"], 0.04);
    let id = warn["id"].as_str().unwrap();
    assert!(id.starts_with("budget_warn-"), "{id}");
    assert_eq!(warn["link"].as_str().unwrap(), format!("https://grafana.example/d/modelgate?alert={id}"));
    let exceeded = by("budget_exceeded");
    assert_eq!((exceeded["severity"].as_str(), exceeded["figures"]["action"].as_str()), (Some("critical"), Some("reject")));
    assert!(exceeded["detail"].as_str().unwrap().contains("refused"), "{exceeded}");
    let breaker = by("breaker_open");
    assert_eq!(breaker["subject"], "flaky-model@flaky");
    assert_eq!(breaker["figures"]["consecutive_failures"], 2);
    let spike = by("spend_spike");
    assert!(spike["figures"]["last_hour_usd"].as_f64().unwrap() >= 0.015, "{spike}");
    assert!(spike["figures"]["baseline_avg_usd"].as_f64().unwrap() > 0.0, "{spike}");
    assert!(rx.got.lock().unwrap().iter().filter(|(p, ..)| p == "/generic").all(|(_, auth, _)| auth.as_deref() == Some("Bearer s3cret")));

    // The Slack shape: text for the notification, blocks with the same id.
    for b in &slack_all {
        let text = b["text"].as_str().unwrap();
        assert!(text.contains("[test-host]"), "{text}");
        let blocks = b["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        let context = blocks.last().unwrap()["elements"][0]["text"].as_str().unwrap();
        assert!(context.contains("id `"), "{context}");
    }
    let slack_warn = slack_all.iter().find(|b| rule_of(b) == "budget_warn").unwrap();
    assert!(slack_warn["blocks"].to_string().contains(id), "the same alert id in both shapes: {slack_warn}");

    let m = mg.metrics();
    assert_eq!(metric_sum(&m, "modelgate_alerts_fired_total", &[]), 4.0, "{m}");
    assert_eq!(metric_sum(&m, "modelgate_alerts_sent_total", &[("sink", "hook")]), 4.0);
    assert_eq!(metric_sum(&m, "modelgate_alerts_sent_total", &[("sink", "chat"), ("rule", "spend_spike")]), 1.0);
    assert_eq!(metric_sum(&m, "modelgate_alert_delivery_failures_total", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn threshold_rules_error_rate_cost_per_hour_and_route_down_fire_once() {
    let (mock, down) = (Mock::start().await, Mock::start().await);
    down.fail_randomly(1.0, 503);
    let rx = Receiver::start().await;
    let rest = format!(
        r#"routes:
  - {{ name: only-flaky, match: {{ model: "flaky-only" }}, target: flaky-model }}
alerts:
  sinks:
    - {{ name: hook, kind: webhook, url: "{}" }}
  rules:
    error_rate: {{ threshold: 0.5, window_s: 60, min_requests: 4 }}
    cost_per_hour: {{ threshold_usd: 0.02 }}
    latency_p95: {{ threshold_ms: 60000 }}
  eval_interval_ms: 100
"#,
        rx.url("/hook")
    );
    // The route's model has no fallback of its own here: every request of
    // the route fails once its breaker is open.
    let yaml = config(&mock, &down, &rest).replace("fallbacks: [gpt-4o-mini]", "fallbacks: []");
    let mg = Modelgate::start(&yaml);
    let client = reqwest::Client::new();
    // Two $0.015 requests: over $0.02 in the last hour.
    for _ in 0..2 {
        assert_eq!(post(&client, &mg, "gpt-4o", "a").await, 200);
    }
    // flaky-only: 503, 503 (breaker opens), then 503 circuit_open: errors.
    for _ in 0..5 {
        assert_eq!(post(&client, &mg, "flaky-only", "a").await, 503);
    }
    let got = rx.wait_for("/hook", 4).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let got_all = rx.bodies("/hook");
    let rules: Vec<String> = got_all.iter().map(rule_of).collect();
    for rule in ["cost_per_hour", "error_rate", "route_down", "breaker_open"] {
        assert_eq!(count(&got_all, rule), 1, "{rule} in {rules:?}: {got:#?}");
    }
    assert_eq!(got_all.len(), 4, "no latency alert (threshold 60 s), nothing twice: {rules:?}");
    let er = got_all.iter().find(|b| b["rule"] == "error_rate").unwrap();
    assert_eq!(er["subject"], "flaky-model");
    assert!(er["figures"]["error_rate"].as_f64().unwrap() > 0.5, "{er}");
    let route = got_all.iter().find(|b| b["rule"] == "route_down").unwrap();
    assert_eq!(route["figures"]["models"][0]["reason"], "circuit_open", "{route}");
    let m = mg.metrics();
    assert_eq!(metric_sum(&m, "modelgate_route_up", &[("route", "only-flaky")]), 0.0, "{m}");
    assert!(metric_sum(&m, "modelgate_request_outcomes_total", &[("model", "flaky-model"), ("outcome", "error")]) >= 2.0, "{m}");
}

/// Median of the durations of `n` sequential requests.
async fn median_ms(client: &reqwest::Client, mg: &Modelgate, n: usize) -> f64 {
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        assert_eq!(post(client, mg, "gpt-4o", "budgeted").await, 200);
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    ms[n / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sink_that_hangs_slows_no_request_and_gets_the_alert_when_it_is_back() {
    let (mock, down) = (Mock::start().await, Mock::start().await);
    let rx = Receiver::start().await;
    let addr = rx.addr;
    // $0.015 a request against $10: warn_at is passed by request 21.
    let rest = format!(
        r#"budgets:
  - {{ name: agent-daily, scope: {{ app: budgeted }}, window: day, limit_usd: 10, warn_at: 0.0305, on_exceed: reject }}
alerts:
  sinks:
    - {{ name: hook, kind: webhook, url: "{}", timeout_ms: 1000 }}
  delivery: {{ backoff_ms: 100, max_backoff_ms: 300 }}
"#,
        rx.url("/hook")
    );
    let mg = Modelgate::start(&config(&mock, &down, &rest));
    let client = reqwest::Client::new();
    // Warm up, then 20 requests while the sink answers (no alert yet).
    median_ms(&client, &mg, 5).await;
    let up = median_ms(&client, &mg, 15).await;
    assert!(rx.bodies("/hook").is_empty());

    // The sink goes silent: it accepts connections and never answers.
    let got = rx.stop().await;
    let hole = tokio::net::TcpListener::bind(addr).await.unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    let blackhole = tokio::spawn(async move {
        while let Ok((s, _)) = hole.accept().await {
            keep.lock().unwrap().push(s);
        }
    });
    // Request 21 passes warn_at: the alert is raised and its delivery hangs.
    assert_eq!(post(&client, &mg, "gpt-4o", "budgeted").await, 200);
    let silent = median_ms(&client, &mg, 15).await;
    eprintln!("median request: {up:.2} ms while the sink answered, {silent:.2} ms while it hung");
    assert!(silent < up * 2.0 + 5.0, "a hanging sink slowed requests: {up:.2} ms → {silent:.2} ms");
    // Wait for a try to time out (1 s), so a failure is counted.
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric_sum(&mg.metrics(), "modelgate_alert_delivery_failures_total", &[("sink", "hook")]) < 1.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metric_sum(&mg.metrics(), "modelgate_alert_delivery_failures_total", &[("sink", "hook")]) >= 1.0);
    assert!(got.lock().unwrap().is_empty());

    // Back: the retried alert arrives, once.
    blackhole.abort();
    let _ = blackhole.await;
    held.lock().unwrap().clear();
    let rx = Receiver::on(tokio::net::TcpListener::bind(addr).await.unwrap(), got);
    let bodies = rx.wait_for("/hook", 1).await;
    assert_eq!(bodies.len(), 1, "{bodies:#?}\n{}", mg.stderr());
    assert_eq!(bodies[0]["rule"], "budget_warn");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.bodies("/hook").len(), 1, "delivered once");
    assert!(mg.stderr().contains("alert delivery failed; retrying"), "failures are logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alerts_test_reaches_every_sink_and_names_the_one_that_is_down() {
    let rx = Receiver::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"providers:
  openai: {{ kind: openai, base_url: "http://127.0.0.1:9/v1" }}
alerts:
  instance: ci
  sinks:
    - {{ name: hook, kind: webhook, url: "{}" }}
    - {{ name: chat, kind: slack, url: "{}" }}
    - {{ name: gone, kind: webhook, url: "http://{closed}/hook", timeout_ms: 2000 }}
"#,
        rx.url("/hook"),
        rx.url("/slack")
    );
    let cfg = common::write_config(dir.path(), "127.0.0.1:0", "127.0.0.1:0", None, &yaml);
    let out = tokio::task::spawn_blocking(move || std::process::Command::new(common::bin()).args(["alerts", "test", "-c"]).arg(&cfg).output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("hook (http://{}): sent, answered 200", rx.addr)), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("chat (") && stdout.contains("gone (") && stdout.contains("FAILED"), "{stdout}");
    let hook = rx.bodies("/hook");
    assert_eq!(hook.len(), 1);
    assert_eq!((hook[0]["rule"].as_str(), hook[0]["test"].as_bool(), hook[0]["instance"].as_str()), (Some("test"), Some(true), Some("ci")));
    let slack = rx.bodies("/slack");
    assert!(slack[0]["text"].as_str().unwrap().contains("Test alert from modelgate"), "{slack:?}");
}
