//! `modelgate check`: every shipped config is valid, and a broken one gets
//! every error at once with its YAML path and line (golden output).

use std::process::Command;

fn check(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_modelgate")).args(["check", "-c"]).arg(path).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn every_shipped_config_is_valid() {
    let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let mut n = 0;
    let files = std::fs::read_dir(&conf).unwrap().chain(std::fs::read_dir(conf.join("examples")).unwrap());
    for entry in files {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let (ok, out) = check(&path);
            assert!(ok, "{out}");
            n += 1;
        }
    }
    assert!(n >= 6, "the default config and the examples");
    // The built-in defaults are the shipped file.
    assert!(modelgate::config::load_str(modelgate::config::EMBEDDED_DEFAULT, &|_| None).is_ok());
}

const BROKEN: &str = "\
providers:
  openai: { kind: openai, base_url: \"https://api.openai.com/v1\" }
  local: { kind: ollama, base_url: \"http://127.0.0.1:11434/v1\" }
models:
  gpt-4o-mini:
    provider: openai
    input_usd_per_mtok: 0.15
    output_usd_per_mtok: 0.6
routes:
  - name: cheap
    match: { model: \"gpt-4o*\" }
    target: gpt-4o-mini
    budgt_usd: 3
  - name: planning
    target: gpt-5
";

#[test]
fn three_mistakes_are_all_reported_with_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.yaml");
    std::fs::write(&path, BROKEN).unwrap();
    let (ok, out) = check(&path);
    assert!(!ok);
    let want = format!(
        "{}: 3 errors
  - providers.local.kind: unknown provider kind `ollama`; expected one of: openai, anthropic, gemini (OpenRouter and Ollama are openai) (line 3, column 12)
  - routes[0].budgt_usd: unknown field `budgt_usd`, expected one of `name`, `match`, `target`, `tiers`, `select`, `split`, `fallbacks`, `shadow`, `mode`, `client_models`, `retry`, `cache`, `escalate_on`, `escalate_to`, `max_escalations`, `min_avg_logprob`, `refusal_patterns`, `check_streams`, `client_escalation` (line 13, column 5)
  - routes[1].target: unknown model `gpt-5`; defined models: gpt-4o-mini (line 15, column 5)
",
        path.display()
    );
    assert_eq!(out, want);
}

#[test]
fn env_vars_are_substituted_and_unset_ones_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("env.yaml");
    std::fs::write(
        &path,
        "providers:\n  openai: { kind: openai, base_url: \"${MG_TEST_BASE:-https://api.openai.com/v1}\" }\nstate_dir: ${MG_TEST_UNSET_DIR}\n",
    )
    .unwrap();
    let (ok, out) = check(&path);
    assert!(!ok);
    assert!(out.contains("environment variable `MG_TEST_UNSET_DIR` is not set") && out.contains("(line 3)"), "{out}");
}

#[test]
fn threads_must_be_a_sensible_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("threads.yaml");
    let conf = |n: &str| format!("threads: {n}\nproviders:\n  openai: {{ kind: openai, base_url: \"http://127.0.0.1:9/v1\" }}\n");
    std::fs::write(&path, conf("0")).unwrap();
    let (ok, out) = check(&path);
    assert!(!ok && out.contains("threads: use at least 1 worker thread"), "{out}");
    std::fs::write(&path, conf("many")).unwrap();
    let (ok, out) = check(&path);
    assert!(!ok && out.contains("threads"), "{out}");
    std::fs::write(&path, conf("1")).unwrap();
    let (ok, out) = check(&path);
    assert!(ok, "{out}");
}

const BROKEN_ALERTS: &str = "\
providers:
  openai: { kind: openai, base_url: \"https://api.openai.com/v1\" }
metrics:
  auto_label: 5
alerts:
  sinks:
    - { name: ops, kind: pagerduty, url: \"ftp://x\" }
    - { name: ops, kind: slack, url: \"https://hooks.slack.com/services/a\", rules: [budget_warm] }
  rules:
    error_rate: { window_s: 60 }
    budget_warn: { window_s: 60 }
    latency: {}
    cost_per_hour: { threshold_usd: -1 }
  delivery: { backoff_ms: 5000, max_backoff_ms: 1000 }
";

#[test]
fn alert_and_metrics_mistakes_are_all_reported_with_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.yaml");
    std::fs::write(&path, BROKEN_ALERTS).unwrap();
    let (ok, out) = check(&path);
    assert!(!ok);
    let rules = "budget_warn, budget_exceeded, spend_spike, breaker_open, route_down, error_rate, latency_p95, cost_per_hour";
    let want = format!(
        "{}: 10 errors
  - metrics.auto_label: unknown field `auto_label`, expected one of `app_labels`, `task_labels`, `auto_labels` (line 4, column 3)
  - alerts.sinks[0].kind: unknown sink kind `pagerduty`; expected webhook (generic JSON) or slack (Slack incoming webhook) (line 7, column 20)
  - alerts.sinks[0].url: `ftp://x` must start with https:// (or http://) (line 7, column 37)
  - alerts.sinks[1].name: sink name `ops` is used twice; names must be unique (line 8, column 9)
  - alerts.sinks[1].rules[0]: unknown rule `budget_warm`; expected one of: {rules} (line 8, column 84)
  - alerts.rules.error_rate: error_rate needs a threshold, e.g. `threshold: 0.05` (line 10, column 19)
  - alerts.rules.budget_warn.window_s: does not apply to budget_warn: a budget alert fires once per budget window; its thresholds are the budget's warn_at and limits (line 11, column 20)
  - alerts.rules.latency: unknown rule `latency`; expected one of: {rules} (line 12, column 5)
  - alerts.rules.cost_per_hour.threshold_usd: must be a positive amount of USD, got -1 (line 13, column 22)
  - alerts.delivery.max_backoff_ms: must be at least backoff_ms (line 14, column 33)
",
        path.display()
    );
    assert_eq!(out, want);
}
