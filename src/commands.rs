//! The subcommands that read a config and print (`check`, `route`, `ca`,
//! `alerts test`).

use std::path::PathBuf;
use std::process::ExitCode;

use modelgate::config::{self, ConfigErrors};
use modelgate::policy::{explain, OverrideStore};

use crate::{print_errors, CaAction};

pub(crate) fn load(config: &Option<PathBuf>) -> Result<config::Snapshot, ConfigErrors> {
    match config {
        Some(path) => config::load_file(path),
        None => {
            config::load_str(config::EMBEDDED_DEFAULT, &|k| std::env::var(k).ok()).map_err(|errors| ConfigErrors { file: "<built-in defaults>".into(), errors })
        }
    }
}

pub(crate) fn route(config: Option<PathBuf>, request: PathBuf, path: String, headers: Vec<String>, as_json: bool) -> Result<ExitCode, String> {
    let snap = load(&config).map_err(|e| e.to_string())?;
    let body = if request.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut b).map_err(|e| format!("cannot read standard input: {e}"))?;
        b
    } else {
        std::fs::read(&request).map_err(|e| format!("cannot read {}: {e}", request.display()))?
    };
    let mut map = http::HeaderMap::new();
    for h in &headers {
        let (k, v) = h.split_once(':').ok_or_else(|| format!("--header `{h}`: write it as Name: value"))?;
        let name = http::HeaderName::from_bytes(k.trim().as_bytes()).map_err(|_| format!("--header `{h}`: `{}` is not a header name", k.trim()))?;
        let value = http::HeaderValue::from_str(v.trim()).map_err(|_| format!("--header `{h}`: invalid value"))?;
        map.append(name, value);
    }
    let overrides = OverrideStore::open(&snap.state_dir)?;
    let e = explain::explain(&snap, &overrides.load(), &path, &map, body.into());
    if as_json {
        println!("{}", serde_json::to_string_pretty(&e).unwrap_or_default());
    } else {
        print!("{}", explain::render_text(&e));
    }
    let refused = e.get("refused").is_some() || e["decision"].get("refused").is_some();
    Ok(if refused { ExitCode::from(2) } else { ExitCode::SUCCESS })
}

pub(crate) fn ca(action: CaAction, config: Option<PathBuf>) -> Result<ExitCode, String> {
    let snap = load(&config).map_err(|e| e.to_string())?;
    let dir = &snap.state_dir;
    match action {
        CaAction::Init { force } => {
            let (cert, created) = modelgate::ca::init(dir, force)?;
            let what = if created { "created" } else { "already there (use --force to replace it)" };
            println!("{} — {what}", cert.display());
        }
        CaAction::Show => {
            let Some(cert) = modelgate::ca::existing(dir) else {
                println!("{}", modelgate::ca::missing_note(&config_name(&config), dir, snap.listen.forward_proxy));
                return Ok(ExitCode::FAILURE);
            };
            let pem = std::fs::read_to_string(&cert).map_err(|e| format!("cannot read {}: {e}", cert.display()))?;
            print!("{pem}");
            println!("{}", modelgate::ca::trust_instructions(&cert, &dir.join("ca").join("bundle.pem"), snap.listen.forward_proxy));
            if snap.listen.forward_proxy.is_none() {
                println!("{}", modelgate::ca::proxy_off_note(&config_name(&config)));
            }
        }
        CaAction::Bundle { out } => {
            let (cert, _) = modelgate::ca::init(dir, false)?;
            let out = out.unwrap_or_else(|| dir.join("ca").join("bundle.pem"));
            let n = modelgate::ca::write_bundle(&cert, &out)?;
            println!("{} — {n} system roots + the modelgate CA", out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `modelgate alerts test`: a test alert to every sink, one try each.
pub(crate) fn alerts_test(config: &Option<PathBuf>) -> ExitCode {
    let snap = match load(config) {
        Ok(s) => s,
        Err(e) => {
            print_errors(&e);
            return ExitCode::FAILURE;
        }
    };
    if snap.alerts.sinks.is_empty() {
        eprintln!(
            "modelgate: {} has no alert sinks; add `alerts: {{ sinks: [{{ name: ops, kind: webhook, url: https://… }}] }}` (see README, Alerts)",
            config_name(config)
        );
        return ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("modelgate: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let results = rt.block_on(modelgate::alerts::send_test(&snap.alerts));
    let mut failed = 0;
    for (sink, url, r) in &results {
        match r {
            Ok(status) => println!("{sink} ({url}): sent, answered {status}"),
            Err(e) => {
                failed += 1;
                println!("{sink} ({url}): FAILED: {e}");
            }
        }
    }
    if failed > 0 {
        eprintln!("modelgate: {failed} of {} sinks did not take the test alert", results.len());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// How a command names its config: the file, or the built-in defaults.
fn config_name(config: &Option<PathBuf>) -> String {
    config.as_ref().map_or_else(|| "the built-in defaults".to_string(), |p| p.display().to_string())
}

/// `n thing` or `n things`.
fn count(n: usize, thing: &str) -> String {
    format!("{n} {thing}{}", if n == 1 { "" } else { "s" })
}

/// `modelgate check`: every error with its YAML path, or what may need a look.
pub(crate) fn check(config: &Option<PathBuf>) -> ExitCode {
    match load(config) {
        Ok(s) => {
            let name = config.as_ref().map_or_else(|| "<built-in defaults>".to_string(), |p| p.display().to_string());
            println!("{name}: ok ({}, {}, {})", count(s.providers.len(), "provider"), count(s.models.len(), "model"), count(s.routes.len(), "route"));
            for (provider, env) in s.missing_keys() {
                println!("  note: provider `{provider}` reads its key from {env}, which is not set here");
            }
            for (model, fallback, provider) in s.cross_provider_fallbacks() {
                println!(
                    "  warning: `{model}` falls back to `{fallback}` on provider `{provider}`, which has no api_key_env: modelgate will not send a client's key for another provider there, so that fallback is skipped. Set api_key_env on `{provider}` (or cross_provider_client_keys: true if the same key is valid there)"
                );
            }
            for w in s.exposure_warnings() {
                println!("  warning: {w}");
            }
            let silent: Vec<&str> =
                s.models.values().filter(|m| !m.fallbacks.is_empty() && s.retry_for(None, Some(m)).on_status.is_empty()).map(|m| m.name.as_str()).collect();
            if !silent.is_empty() {
                println!(
                    "  note: retry.on_status is empty, so these models fall back only when their provider cannot be reached or times out, never on a 429 or 5xx: {} (list the statuses in retry.on_status, e.g. [429, 500, 502, 503, 504, 529])",
                    silent.join(", ")
                );
            }
            if !s.alerts.sinks.is_empty() {
                let sinks: Vec<String> = s.alerts.sinks.iter().map(|k| format!("{} ({} {})", k.name, k.kind.as_str(), k.shown())).collect();
                let on: Vec<&str> = modelgate::config::RuleKind::ALL.into_iter().filter(|r| s.alerts.rule(*r).enabled).map(|r| r.as_str()).collect();
                println!("  alerts: {} to {}; rules on: {}", count(sinks.len(), "sink"), sinks.join(", "), on.join(", "));
            }
            if let Some(t) = &s.telemetry {
                println!(
                    "  telemetry: traces over OTLP/HTTP to {}{} as service {}, sample_ratio {}{}",
                    t.shown(),
                    t.path,
                    t.service_name,
                    t.sample_ratio,
                    if t.headers.is_empty() {
                        String::new()
                    } else {
                        format!(", headers: {}", t.headers.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", "))
                    }
                );
            }
            if s.alerts.sinks.is_empty() && s.alerts.rules.iter().any(|r| r.enabled && r.threshold > 0.0) {
                println!("  note: alerts.rules are set but alerts.sinks is empty: alerts are only written to the log (add a webhook or slack sink)");
            }
            if s.budgets.iter().any(|b| b.limits.nanos.is_some() || b.limits.tokens.is_some()) {
                let open: Vec<&str> = s.models.values().filter(|m| m.max_output_tokens.is_none()).map(|m| m.name.as_str()).collect();
                if !open.is_empty() {
                    println!(
                        "  note: budgets reserve a request's worst case; without max_tokens in the request these models reserve {} output tokens (set max_output_tokens to their real maximum): {}",
                        modelgate::budget::DEFAULT_MAX_OUTPUT_TOKENS,
                        open.join(", ")
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_errors(&e);
            ExitCode::FAILURE
        }
    }
}
