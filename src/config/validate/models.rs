//! Validation of `providers:` and `models:`, and the model-name checks
//! routes and budgets use.

use std::sync::Arc;

use indexmap::IndexMap;
use serde_yaml::Value;
use wildmatch::WildMatch;

use super::super::raw::{RawModel, RawProvider};
use super::listen::normalize_host;
use super::Ctx;
use crate::config::*;
use crate::dialect::Dialect;
use crate::upstream::endpoint::Endpoint;

/// The providers (in file order), their names (also of those with
/// errors), and the default provider of each dialect.
pub(super) fn providers_of(
    cx: &mut Ctx,
    raw_providers: IndexMap<String, Value>,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Vec<Provider>, Vec<String>, [Option<usize>; Dialect::COUNT]) {
    let mut providers = Vec::new();
    let mut provider_defaults: Vec<bool> = Vec::new();
    let mut provider_names: Vec<String> = Vec::new();
    for (name, v) in raw_providers {
        let path = format!("providers.{name}");
        provider_names.push(name.clone());
        let Some(raw) = cx.section::<RawProvider>(&path, v) else { continue };
        if let Some(p) = provider_of(cx, &path, name, raw.default, raw, env) {
            provider_defaults.push(p.1);
            providers.push(p.0);
        }
    }
    if provider_names.is_empty() {
        cx.err("providers", "no providers configured; add at least one (see conf/modelgate.yaml)");
    }
    let mut default_provider = [None; Dialect::COUNT];
    for d in Dialect::ALL {
        let of_kind: Vec<usize> = (0..providers.len()).filter(|&i| providers[i].kind == d).collect();
        let flagged: Vec<usize> = of_kind.iter().copied().filter(|&i| provider_defaults[i]).collect();
        if flagged.len() > 1 {
            let names: Vec<&str> = flagged.iter().map(|&i| providers[i].name.as_str()).collect();
            cx.err(format!("providers.{}.default", names[1]), format!("only one {d} provider may be `default: true` (found: {})", names.join(", ")));
        }
        default_provider[d as usize] =
            flagged.first().copied().or_else(|| of_kind.iter().copied().find(|&i| providers[i].name == d.as_str())).or_else(|| of_kind.first().copied());
    }
    (providers, provider_names, default_provider)
}

/// The models that validate, and the names of all (for references).
pub(super) fn models_of(
    cx: &mut Ctx,
    raw_models: IndexMap<String, Value>,
    providers: &[Provider],
    provider_names: &[String],
    breaker: Breaker,
) -> (IndexMap<String, Model>, Vec<String>) {
    let mut models = IndexMap::new();
    let model_names: Vec<String> = raw_models.keys().cloned().collect();
    for (name, v) in raw_models {
        let path = format!("models.{name}");
        let Some(raw) = cx.section::<RawModel>(&path, v) else { continue };
        if let Some(m) = model_of(cx, &path, &name, raw, providers, provider_names, &model_names, breaker) {
            models.insert(name, m);
        }
    }
    (models, model_names)
}

fn provider_of(cx: &mut Ctx, path: &str, name: String, default: bool, raw: RawProvider, env: &dyn Fn(&str) -> Option<String>) -> Option<(Provider, bool)> {
    let before = cx.errors.len();
    let kind = Dialect::parse(&raw.kind).unwrap_or_else(|| {
        cx.err(
            format!("{path}.kind"),
            format!("unknown provider kind `{}`; expected one of: openai, anthropic, gemini (OpenRouter and Ollama are openai)", raw.kind),
        );
        Dialect::OpenAi
    });
    let ca = match &raw.ca_file {
        None => None,
        Some(f) => match crate::upstream::tls::load_ca_bundle(f) {
            Ok(ca) => Some(ca),
            Err(e) => {
                cx.err(format!("{path}.ca_file"), e);
                None
            }
        },
    };
    let endpoint = match Endpoint::parse(&raw.base_url, ca) {
        Ok(e) => Some(e),
        Err(e) => {
            cx.err(format!("{path}.base_url"), e);
            None
        }
    };
    let auth = match raw.api_key_env {
        None => Auth::Passthrough,
        Some(var) if var.is_empty() => {
            cx.err(format!("{path}.api_key_env"), "must name an environment variable (or be removed to forward the client's key)");
            Auth::Passthrough
        }
        Some(var) => Auth::Inject { key: env(&var).filter(|k| !k.is_empty()).map(Secret), env: var },
    };
    let fields = [raw.connect_timeout_ms, raw.first_byte_timeout_ms, raw.idle_timeout_ms, raw.total_timeout_ms];
    let timeouts = super::resilience::timeouts_of(cx, path, fields, super::resilience::DEFAULT_TIMEOUTS);
    let health_check = super::resilience::health_check_of(cx, path, raw.health_check, kind, endpoint.as_ref().map(|e| e.base_path.as_str()).unwrap_or(""));
    if cx.errors.len() != before {
        return None;
    }
    let endpoint = Arc::new(endpoint?);
    let hosts = match raw.hosts {
        Some(h) => h.iter().map(|h| normalize_host(h)).collect(),
        None => vec![normalize_host(&endpoint.host)],
    };
    Some((Provider { name, kind, endpoint, auth, timeouts, local: raw.local, health_check, hosts }, default))
}

fn price(cx: &mut Ctx, path: &str, field: &str, v: Option<f64>) -> Option<f64> {
    match v {
        Some(p) if !(p.is_finite() && p >= 0.0) => {
            cx.err(format!("{path}.{field}"), format!("must be a price ≥ 0 in USD per million tokens, got {p}"));
            None
        }
        other => other,
    }
}

#[allow(clippy::too_many_arguments)]
fn model_of(
    cx: &mut Ctx,
    path: &str,
    name: &str,
    raw: RawModel,
    providers: &[Provider],
    provider_names: &[String],
    model_names: &[String],
    breaker: Breaker,
) -> Option<Model> {
    let before = cx.errors.len();
    let provider = providers.iter().position(|p| p.name == raw.provider);
    if provider.is_none() && !provider_names.contains(&raw.provider) {
        cx.err(format!("{path}.provider"), format!("unknown provider `{}`; defined providers: {}", raw.provider, provider_names.join(", ")));
    }
    let mut required = |field: &str, v: Option<f64>| {
        if v.is_none() {
            cx.err(path, format!("missing `{field}`: set the list price in USD per million tokens (0 for a local model)"));
        }
        price(cx, path, field, v).unwrap_or(0.0)
    };
    let input = required("input_usd_per_mtok", raw.input_usd_per_mtok);
    let output = required("output_usd_per_mtok", raw.output_usd_per_mtok);
    let cached = price(cx, path, "cached_input_usd_per_mtok", raw.cached_input_usd_per_mtok).unwrap_or(input);
    let is_anthropic = provider.map(|i| providers[i].kind == Dialect::Anthropic).unwrap_or(false);
    // Anthropic bills 5-minute cache writes at 1.25× the input price.
    let write_default = if is_anthropic { input * 1.25 } else { input };
    let cache_write = price(cx, path, "cache_write_usd_per_mtok", raw.cache_write_usd_per_mtok).unwrap_or(write_default);
    let capabilities = capabilities_of(cx, &format!("{path}.capabilities"), &raw.capabilities);
    let quality = raw.quality.unwrap_or(1);
    if quality > 10 {
        cx.err(format!("{path}.quality"), "must be between 0 and 10");
    }
    if raw.context_tokens == Some(0) {
        cx.err(format!("{path}.context_tokens"), "must be greater than 0");
    }
    check_model_list(cx, &format!("{path}.fallbacks"), &raw.fallbacks, model_names, Some(name));
    if let Some(r) = &raw.retry {
        super::resilience::retry_patch(cx, &format!("{path}.retry"), r);
    }
    let breaker = super::resilience::breaker_of(cx, &format!("{path}.breaker"), raw.breaker.as_ref(), breaker);
    let fields = [raw.connect_timeout_ms, raw.first_byte_timeout_ms, raw.idle_timeout_ms, raw.total_timeout_ms];
    let base = provider.map(|i| providers[i].timeouts).unwrap_or(super::resilience::DEFAULT_TIMEOUTS);
    let timeouts = super::resilience::timeouts_of(cx, path, fields, base);
    let aliases = aliases_of(cx, &format!("{path}.aliases"), &raw.aliases, name, model_names);
    if cx.errors.len() != before {
        return None;
    }
    Some(Model {
        name: name.to_string(),
        provider: provider?,
        id: raw.id.unwrap_or_else(|| name.to_string()),
        aliases,
        prices: Prices { input_usd_per_mtok: input, output_usd_per_mtok: output, cached_input_usd_per_mtok: cached, cache_write_usd_per_mtok: cache_write },
        context_tokens: raw.context_tokens,
        max_output_tokens: raw.max_output_tokens,
        capabilities,
        quality,
        latency_ms: raw.latency_ms,
        fallbacks: raw.fallbacks,
        retry: raw.retry,
        breaker,
        timeouts,
    })
}

/// `aliases:`: model ids or globs (`*`, `?`); never another model's name
/// (a configured name always means that model).
fn aliases_of(cx: &mut Ctx, path: &str, list: &[String], this: &str, model_names: &[String]) -> Vec<WildMatch> {
    let mut out = Vec::new();
    for (i, a) in list.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if a.trim().is_empty() || a.chars().all(|c| c == '*' || c == '?') {
            cx.err(at, format!("`{a}` would match every model id; write the ids this model answers for, such as `{this}-2025*`"));
            continue;
        }
        let glob = WildMatch::new(a);
        if let Some(other) = model_names.iter().find(|n| n.as_str() != this && glob.matches(n)) {
            cx.err(at, format!("alias `{a}` matches `{other}`, which is a model of its own; narrow the pattern (e.g. `{this}-20*` for dated versions)"));
            continue;
        }
        out.push(glob);
    }
    out
}

pub(super) fn check_model_list(cx: &mut Ctx, path: &str, list: &[String], model_names: &[String], this: Option<&str>) {
    for (i, m) in list.iter().enumerate() {
        if check_model(cx, &format!("{path}[{i}]"), m, model_names) && Some(m.as_str()) == this {
            cx.err(format!("{path}[{i}]"), format!("model `{m}` cannot fall back to itself"));
        }
        if list[..i].contains(m) {
            cx.err(format!("{path}[{i}]"), format!("model `{m}` is listed twice"));
        }
    }
}

/// Whether `m` names a defined model (an error at `path` if not).
pub(super) fn check_model(cx: &mut Ctx, path: &str, m: &str, model_names: &[String]) -> bool {
    let known = model_names.iter().any(|n| n == m);
    if !known {
        cx.err(path, format!("unknown model `{m}`; defined models: {}", model_names.join(", ")));
    }
    known
}

pub(super) fn capabilities_of(cx: &mut Ctx, path: &str, names: &[String]) -> Vec<Capability> {
    let mut out = Vec::new();
    for (i, c) in names.iter().enumerate() {
        match Capability::parse(c) {
            Some(cap) => out.push(cap),
            None => cx.err(format!("{path}[{i}]"), format!("unknown capability `{c}`; expected one of: {}", Capability::names())),
        }
    }
    out
}
