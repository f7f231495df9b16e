//! The shipped monitoring files (`conf/monitoring/`): `promtool` accepts the
//! Prometheus alert rules and passes their unit tests, and every metric the
//! Grafana dashboard and the rules read is in a `/metrics` scrape of a
//! modelgate that served traffic touching every panel: routed and streamed
//! requests, a retry, a fallback, an open breaker, a cut stream, budgets
//! (one downgrading), alerts sent and failing, a rejected config reload.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Config, Mock, Modelgate, Script};
use serde_json::{json, Value};

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/monitoring")
}

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(monitoring())
        .output()
        .expect("promtool is not installed: run the suite with scripts/test, which installs it (Debian package `prometheus`)");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn promtool_accepts_the_shipped_rules_and_their_unit_tests() {
    let (ok, out) = promtool(&["check", "rules", "modelgate-alerts.rules.yml"]);
    assert!(ok && out.contains("SUCCESS"), "{out}");
    let (ok, out) = promtool(&["test", "rules", "modelgate-alerts.test.yml"]);
    assert!(ok && out.contains("SUCCESS"), "{out}");
}

/// Every `modelgate_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("modelgate_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        // A word that only starts with it (e.g. `xmodelgate_`) is not one.
        if i == 0 || !rest[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            out.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    out
}

/// The series names of a Prometheus text scrape (sample lines only: a
/// `# HELP` for a metric without series does not count).
fn scraped(text: &str) -> BTreeSet<String> {
    text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).filter_map(|l| l.split(['{', ' ']).next()).map(str::to_string).collect()
}

/// Every PromQL expression of the dashboard (and its variable queries).
fn dashboard_exprs(d: &Value, out: &mut Vec<String>) {
    match d {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    ("query", Value::String(s)) if s.contains("modelgate_") => out.push(s.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

async fn post(client: &reqwest::Client, mg: &Modelgate, body: Value, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = client.post(format!("{}/v1/chat/completions", mg.gateway)).json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "max_tokens": 100, "messages": [{"role": "user", "content": "hello there"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_metric_of_the_dashboard_and_the_rules_is_in_a_scrape_after_traffic() {
    let (mock, down) = (Mock::start().await, Mock::start().await);
    down.fail_randomly(1.0, 503);
    // An alert sink that answers and one that is down.
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_url = format!("http://{}/alert", sink.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(sink, axum::Router::new().fallback(|| async { "ok" })).await.ok() });
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let yaml = Config::new()
        .provider("openai", common::Kind::OpenAi, &mock)
        .with("health_check: { path: /v1/models, interval_ms: 500 }")
        .provider("flaky", common::Kind::OpenAi, &down)
        .model("gpt-4o", "openai")
        .prices(2.5, 10.0)
        .model("gpt-4o-mini", "openai")
        .prices(0.15, 0.6)
        .model("gpt-3.5-turbo", "openai")
        .prices(0.05, 0.1)
        .model("flaky-model", "flaky")
        .prices(1.0, 1.0)
        .fallbacks(["gpt-4o-mini"])
        .with("breaker: { failures: 2, cooldown_ms: 60000 }")
        .route(r#"name: mini, match: { model: "gpt-4o" }, target: gpt-4o-mini"#)
        .route(r#"name: upsell, match: { model: "gpt-3.5*" }, target: gpt-4o"#)
        .raw("retry: { max_attempts: 2, backoff_ms: 1, on_status: [503] }\n")
        .raw("budgets:\n  - { name: daily, window: day, limit_usd: 100 }\n  - { name: capped, scope: { app: capped }, window: day, limit_usd: 0.000001, on_exceed: downgrade, downgrade_to: gpt-4o-mini }\n")
        .raw(&format!(
            "alerts:\n  sinks:\n    - {{ name: up, kind: webhook, url: \"{sink_url}\" }}\n    - {{ name: gone, kind: slack, url: \"http://{closed}/x\", timeout_ms: 500 }}\n  delivery: {{ backoff_ms: 50, max_backoff_ms: 100 }}\n  eval_interval_ms: 100\n"
        ))
        .build();
    let mg = Modelgate::start(&yaml);
    let client = reqwest::Client::new();
    let app = [("x-modelgate-app", "billing"), ("x-modelgate-task", "summarize")];
    // Routed to a cheaper model (savings), and to a pricier one (upgrade).
    assert_eq!(post(&client, &mg, chat("gpt-4o", false), &app).await.0, 200);
    assert_eq!(post(&client, &mg, chat("gpt-3.5-turbo", false), &app).await.0, 200);
    // A budget too small for any request: downgraded.
    let (status, _) = post(&client, &mg, chat("gpt-3.5-turbo", false), &[("x-modelgate-app", "capped")]).await;
    assert_eq!(status, 200);
    // Streams: time to first token; one cut after its first event.
    let (status, body) = post(&client, &mg, chat("gpt-4o-mini", true), &[]).await;
    assert!(status == 200 && body.contains("[DONE]"), "{body}");
    mock.script([Script::Cut]);
    assert_eq!(post(&client, &mg, chat("gpt-4o-mini", true), &[]).await.0, 200);
    // flaky-model: 503, retried, 503 again (the breaker opens: an alert),
    // then the fallback serves.
    assert_eq!(post(&client, &mg, chat("flaky-model", false), &[]).await.0, 200);
    // A client error (unknown endpoint).
    let r = client.post(format!("{}/v1/nothing-here", mg.gateway)).body("{}").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    // A config change that is rejected.
    std::fs::write(mg.config_path(), std::fs::read_to_string(mg.config_path()).unwrap() + "\nnot_a_key: 1\n").unwrap();

    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(monitoring().join("modelgate-dashboard.json")).unwrap()).unwrap();
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() > 20, "{exprs:?}");
    let in_dashboard: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    let in_rules = metric_names(&std::fs::read_to_string(monitoring().join("modelgate-alerts.rules.yml")).unwrap());
    // Series that exist only once something goes wrong that this test does
    // not do: a ledger write error, a Redis budget store.
    let situational = ["modelgate_ledger_errors_total", "modelgate_budget_store_up"];

    // Alerts are delivered and retried in the background, the provider is
    // health-checked and the config reload is noticed after a moment.
    let deadline = Instant::now() + Duration::from_secs(15);
    let missing = loop {
        let have = scraped(&mg.metrics());
        let missing: Vec<&String> =
            in_dashboard.iter().chain(in_rules.iter().filter(|m| !situational.contains(&m.as_str()))).filter(|m| !have.contains(*m)).collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing.into_iter().cloned().collect::<BTreeSet<_>>();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(missing.is_empty(), "read by the dashboard or the rules but not in the scrape: {missing:?}\n{}", mg.metrics());
    // The names this test extracted are the real ones (not an empty set
    // passing trivially), and the situational ones are modelgate's.
    for m in
        ["modelgate_cost_usd_total", "modelgate_upstream_duration_seconds_bucket", "modelgate_time_to_first_token_seconds_bucket", "modelgate_circuit_state"]
    {
        assert!(in_dashboard.contains(m), "{m}: {in_dashboard:?}");
    }
    let source = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metrics.rs")).unwrap();
    for m in situational {
        assert!(source.contains(&format!("\"{m}\"")), "{m} is not declared in src/metrics.rs");
    }
    let text = mg.metrics();
    assert!(text.contains(r#"app="billing""#) && text.contains(r#"task="summarize""#), "cost and tokens by app and task");
}

#[test]
fn the_metric_name_scanner_finds_names_in_promql() {
    let names =
        metric_names(r#"histogram_quantile(0.95, sum by (model, le) (rate(modelgate_upstream_duration_seconds_bucket{instance=~"$i"}[5m]))) / modelgate_x"#);
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["modelgate_upstream_duration_seconds_bucket", "modelgate_x"]);
    assert_eq!(scraped("# HELP modelgate_a x\nmodelgate_b{l=\"1\"} 2\nmodelgate_c 3\n").into_iter().collect::<Vec<_>>(), ["modelgate_b", "modelgate_c"]);
}
