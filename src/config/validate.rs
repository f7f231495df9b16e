//! Raw YAML → runtime [`Snapshot`], reporting every error at once.
//!
//! Each section (each provider, model and route) is deserialized on its own,
//! so one typo does not hide the next; every error carries its YAML path and
//! the line/column found through [`PositionIndex`].

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde_yaml::Value;

use super::positions::PositionIndex;
use super::raw::{RawListen, RawModel, RawProvider, RawRoute};
use super::*;
use crate::dialect::Dialect;
use crate::upstream::Endpoint;

pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
const TOP_KEYS: &[&str] = &[
    "listen", "state_dir", "max_body_bytes", "access_log", "admin_token_env", "admin_read_requires_token", "providers", "models", "routes", "routing", "budgets", "budget_store", "timezone", "spend_spike",
    "retry", "breaker", "forward_proxy", "limits", "client_timeouts", "shutdown_grace_s", "allow_passthrough", "cross_provider_client_keys",
];

mod budgets;
mod resilience;
mod routes;

pub(super) struct Ctx {
    idx: PositionIndex,
    errors: Vec<ConfigError>,
}

impl Ctx {
    pub(super) fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let pos = self.idx.find(&path);
        self.errors.push(ConfigError {
            path,
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.column),
            message: message.into(),
        });
    }

    /// Deserialize one section, recording its error (with the exact path
    /// inside the section) instead of failing the whole load.
    fn section<T: DeserializeOwned>(&mut self, path: &str, value: Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(t) => Some(t),
            Err(e) => {
                let inner = e.path().to_string();
                let message = e.inner().to_string();
                let mut full = join(path, if inner == "." { "" } else { &inner });
                if let Some(field) = unknown_field(&message) {
                    if !full.ends_with(field) {
                        full = join(&full, field);
                    }
                }
                self.err(full, message);
                None
            }
        }
    }
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ if b.starts_with('[') => format!("{a}{b}"),
        _ => format!("{a}.{b}"),
    }
}

/// serde says "unknown field `x`, expected ..."; the path should name `x`.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

pub fn validate(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Snapshot, Vec<ConfigError>> {
    let mut cx = Ctx { idx: PositionIndex::build(text), errors: Vec::new() };
    let doc: Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let loc = e.location();
            return Err(vec![ConfigError {
                path: String::new(),
                line: loc.as_ref().map(|l| l.line()),
                column: loc.as_ref().map(|l| l.column()),
                message: format!("not valid YAML: {e}"),
            }]);
        }
    };
    let top = match doc {
        Value::Mapping(m) => m,
        Value::Null => serde_yaml::Mapping::new(),
        _ => return Err(vec![ConfigError::at_line(1, "the config must be a YAML mapping (listen:, providers:, models:, routes: …)")]),
    };

    let mut sections: IndexMap<String, Value> = IndexMap::new();
    for (k, v) in top {
        let Some(key) = k.as_str().map(str::to_string) else {
            cx.err("", "top-level keys must be strings");
            continue;
        };
        if TOP_KEYS.contains(&key.as_str()) {
            sections.insert(key, v);
        } else {
            cx.err(&key, format!("unknown key `{key}`; expected one of: {}", TOP_KEYS.join(", ")));
        }
    }
    let mut take = |k: &str| sections.shift_remove(k).filter(|v| !v.is_null());

    let listen_raw: RawListen = take("listen").and_then(|v| cx.section("listen", v)).unwrap_or_default();
    let state_dir: String = take("state_dir").and_then(|v| cx.section("state_dir", v)).unwrap_or_else(|| "./data".into());
    let max_body: u64 = take("max_body_bytes").and_then(|v| cx.section("max_body_bytes", v)).unwrap_or(DEFAULT_MAX_BODY_BYTES as u64);
    let access_log: String = take("access_log").and_then(|v| cx.section("access_log", v)).unwrap_or_else(|| "stdout".into());
    let raw_providers: IndexMap<String, Value> = take("providers").and_then(|v| cx.section("providers", v)).unwrap_or_default();
    let raw_models: IndexMap<String, Value> = take("models").and_then(|v| cx.section("models", v)).unwrap_or_default();
    let raw_routes: Vec<Value> = take("routes").and_then(|v| cx.section("routes", v)).unwrap_or_default();
    let raw_routing: super::raw::RawRouting = take("routing").and_then(|v| cx.section("routing", v)).unwrap_or_default();
    let admin_token_env: Option<String> = take("admin_token_env").and_then(|v| cx.section("admin_token_env", v));
    let admin_read_requires_token: bool = take("admin_read_requires_token").and_then(|v| cx.section("admin_read_requires_token", v)).unwrap_or(false);
    let raw_budgets: Vec<Value> = take("budgets").and_then(|v| cx.section("budgets", v)).unwrap_or_default();
    let raw_store = take("budget_store").and_then(|v| cx.section("budget_store", v));
    let raw_tz: Option<String> = take("timezone").and_then(|v| cx.section("timezone", v));
    let raw_spike = take("spend_spike").and_then(|v| cx.section("spend_spike", v));
    let raw_retry = take("retry").and_then(|v| cx.section("retry", v));
    let raw_breaker: Option<super::raw::RawBreaker> = take("breaker").and_then(|v| cx.section("breaker", v));
    let raw_forward: super::raw::RawForwardProxy = take("forward_proxy").and_then(|v| cx.section("forward_proxy", v)).unwrap_or_default();
    let raw_limits = take("limits").and_then(|v| cx.section("limits", v)).unwrap_or_default();
    let raw_client_timeouts = take("client_timeouts").and_then(|v| cx.section("client_timeouts", v)).unwrap_or_default();
    let shutdown_grace_s: Option<u64> = take("shutdown_grace_s").and_then(|v| cx.section("shutdown_grace_s", v));
    let raw_passthrough: Vec<String> = take("allow_passthrough").and_then(|v| cx.section("allow_passthrough", v)).unwrap_or_default();
    let cross_provider_client_keys: bool = take("cross_provider_client_keys").and_then(|v| cx.section("cross_provider_client_keys", v)).unwrap_or(false);
    let limits = super::limits::limits_of(&mut cx, raw_limits);
    let client_timeouts = super::limits::client_timeouts_of(&mut cx, raw_client_timeouts);
    let allow_passthrough = super::limits::passthrough_of(&mut cx, raw_passthrough);
    let retry = resilience::retry_of(&mut cx, raw_retry);
    let breaker = resilience::breaker_of(&mut cx, "breaker", raw_breaker.as_ref(), Breaker::default());

    let listen = listen_of(&mut cx, listen_raw);
    if max_body == 0 {
        cx.err("max_body_bytes", "must be greater than 0");
    }
    let access_log = match access_log.as_str() {
        "stdout" => AccessLog::Stdout,
        "off" => AccessLog::Off,
        "" => {
            cx.err("access_log", "must be `stdout`, `off`, or a file path");
            AccessLog::Off
        }
        path => AccessLog::File(PathBuf::from(path)),
    };

    // Providers.
    let mut providers = Vec::new();
    let mut provider_defaults: Vec<bool> = Vec::new();
    let mut provider_names: Vec<String> = Vec::new();
    for (name, v) in raw_providers {
        let path = format!("providers.{name}");
        provider_names.push(name.clone());
        let Some(raw) = cx.section::<RawProvider>(&path, v) else { continue };
        if let Some(p) = provider_of(&mut cx, &path, name, raw.default, raw, env) {
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
        default_provider[d as usize] = flagged
            .first()
            .copied()
            .or_else(|| of_kind.iter().copied().find(|&i| providers[i].name == d.as_str()))
            .or_else(|| of_kind.first().copied());
    }

    // Models.
    let mut models = IndexMap::new();
    let model_names: Vec<String> = raw_models.keys().cloned().collect();
    for (name, v) in raw_models {
        let path = format!("models.{name}");
        let Some(raw) = cx.section::<RawModel>(&path, v) else { continue };
        if let Some(m) = model_of(&mut cx, &path, &name, raw, &providers, &provider_names, &model_names, breaker) {
            models.insert(name, m);
        }
    }

    // Routes.
    let mut routes = Vec::new();
    let mut route_names = HashSet::new();
    for (i, v) in raw_routes.into_iter().enumerate() {
        let path = format!("routes[{i}]");
        let Some(raw) = cx.section::<RawRoute>(&path, v) else { continue };
        if !route_names.insert(raw.name.clone()) {
            cx.err(format!("{path}.name"), format!("route name `{}` is used twice; names must be unique", raw.name));
        }
        if let Some(r) = routes::route_of(&mut cx, &path, raw, &models, &providers, &model_names) {
            routes.push(r);
        }
    }
    let routing = routes::routing_of(&mut cx, raw_routing);
    let has_admin_token = admin_token_env.is_some();
    let admin_token = match admin_token_env {
        Some(var) if var.trim().is_empty() => {
            cx.err("admin_token_env", "must name an environment variable holding the admin bearer token");
            None
        }
        Some(var) => Some((var.clone(), env(&var).filter(|t| !t.is_empty()).map(Secret))),
        None => None,
    };
    admin_exposure(&mut cx, &listen, has_admin_token, admin_read_requires_token);

    let mut budget_names = HashSet::new();
    let mut budgets = Vec::new();
    for (i, v) in raw_budgets.into_iter().enumerate() {
        let path = format!("budgets[{i}]");
        let Some(raw) = cx.section(&path, v) else { continue };
        if let Some(b) = budgets::budget_of(&mut cx, &path, raw, &mut budget_names, &providers, &models) {
            budgets.push(b);
        }
    }
    let budget_store = budgets::store_of(&mut cx, raw_store);
    let timezone = budgets::timezone_of(&mut cx, raw_tz);
    let spike = budgets::spike_of(&mut cx, raw_spike);
    let forward_proxy = forward_proxy_of(&mut cx, raw_forward, &listen, &providers, env);

    if !cx.errors.is_empty() {
        return Err(cx.errors);
    }
    Ok(Snapshot {
        listen,
        state_dir: PathBuf::from(state_dir),
        max_body_bytes: usize::try_from(max_body).unwrap_or(usize::MAX),
        access_log,
        providers,
        models,
        routes,
        routing,
        admin_token,
        admin_read_requires_token,
        default_provider,
        budgets,
        budget_store,
        timezone,
        spike,
        retry,
        forward_proxy,
        limits,
        client_timeouts,
        shutdown_grace: shutdown_grace_s.map_or(super::limits::DEFAULT_SHUTDOWN_GRACE, std::time::Duration::from_secs),
        allow_passthrough,
        cross_provider_client_keys,
    })
}

/// `forward_proxy:`; a listener on a non-loopback address needs an
/// explicit `allow_clients` (no accidental open proxy). Intercepted hosts
/// are those on the list some provider answers for; others are tunnelled.
fn forward_proxy_of(cx: &mut Ctx, raw: super::raw::RawForwardProxy, listen: &Listen, providers: &[Provider], env: &dyn Fn(&str) -> Option<String>) -> ForwardProxy {
    let mut fp = ForwardProxy::default();
    if let Some(list) = raw.intercept {
        fp.intercept = list.iter().map(|h| normalize_host(h)).collect();
    }
    fp.intercept.retain(|h| providers.iter().any(|p| p.hosts.contains(h)));
    if let Some(ports) = raw.allow_ports {
        if ports.is_empty() || ports.contains(&0) {
            cx.err("forward_proxy.allow_ports", "list the ports CONNECT may reach (1–65535), e.g. [443]");
        }
        fp.allow_ports = ports;
    }
    fp.tunnel = raw.tunnel.unwrap_or(true);
    for (i, c) in raw.allow_clients.iter().flatten().enumerate() {
        let parsed = c.parse::<ipnet::IpNet>().or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(n) => fp.allow_clients.push(n),
            Err(_) => cx.err(format!("forward_proxy.allow_clients[{i}]"), format!("`{c}` is not an IP address or network (e.g. 10.0.0.0/8)")),
        }
    }
    if let Some(addr) = listen.forward_proxy {
        if !addr.ip().is_loopback() && fp.allow_clients.is_empty() {
            cx.err(
                "listen.forward_proxy",
                format!("the forward proxy would listen on {addr}, reachable from other machines, without forward_proxy.allow_clients; list the client networks allowed to use it (e.g. [10.0.0.0/8]) or listen on 127.0.0.1 — modelgate will not run an open proxy"),
            );
        }
    }
    fp.auth = match raw.auth_env {
        Some(var) if var.trim().is_empty() => {
            cx.err("forward_proxy.auth_env", "must name an environment variable holding the proxy password");
            None
        }
        Some(var) => Some((var.clone(), env(&var).filter(|t| !t.is_empty()).map(Secret))),
        None => None,
    };
    for (i, entry) in raw.allow_internal.iter().flatten().enumerate() {
        if let Err(why) = fp.targets.add(entry) {
            cx.err(format!("forward_proxy.allow_internal[{i}]"), why);
        }
    }
    fp.targets.allow_private = raw.allow_private.unwrap_or(false);
    let mut ms = |field: &str, v: Option<u64>, default: Duration| match v {
        Some(0) => {
            cx.err(format!("forward_proxy.{field}"), "must be greater than 0 (milliseconds)");
            default
        }
        Some(ms) => Duration::from_millis(ms),
        None => default,
    };
    let d = ForwardTimeouts::default();
    fp.timeouts = ForwardTimeouts {
        head: ms("head_timeout_ms", raw.head_timeout_ms, d.head),
        tls_handshake: ms("tls_handshake_timeout_ms", raw.tls_handshake_timeout_ms, d.tls_handshake),
        tunnel_idle: ms("tunnel_idle_timeout_ms", raw.tunnel_idle_timeout_ms, d.tunnel_idle),
    };
    fp
}

/// A non-loopback admin listener needs a token: its mutating endpoints
/// change routing, and without `admin_read_requires_token` anyone who can
/// reach it reads spend and usage.
fn admin_exposure(cx: &mut Ctx, listen: &Listen, has_token: bool, read_requires_token: bool) {
    let addr = listen.admin;
    if !addr.ip().is_loopback() && !has_token {
        cx.err(
            "listen.admin",
            format!(
                "the admin listener would listen on {addr}, reachable from other machines, without admin_token_env; set `admin_token_env: MODELGATE_ADMIN_TOKEN` (and `admin_read_requires_token: true` to protect /metrics and the read-only /admin endpoints too), or listen on 127.0.0.1:{}",
                addr.port()
            ),
        );
    }
    if read_requires_token && !has_token {
        cx.err("admin_read_requires_token", "needs admin_token_env: name the environment variable that holds the admin bearer token");
    }
}

/// Hosts compared in one form (lowercase, no trailing dot).
fn normalize_host(h: &str) -> String {
    crate::proxy::target::normalize_host(h)
}

fn addr(cx: &mut Ctx, path: &str, value: Option<String>, default: &str) -> SocketAddr {
    let v = value.unwrap_or_else(|| default.to_string());
    v.parse().unwrap_or_else(|_| {
        cx.err(path, format!("`{v}` is not a listen address; write IP:PORT, e.g. {default}"));
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

fn listen_of(cx: &mut Ctx, raw: RawListen) -> Listen {
    let gateway = addr(cx, "listen.gateway", raw.gateway, "127.0.0.1:8080");
    let admin = addr(cx, "listen.admin", raw.admin, "127.0.0.1:9090");
    if gateway == admin && gateway.port() != 0 {
        cx.err("listen.admin", format!("admin and gateway both listen on {gateway}; give them different ports"));
    }
    let forward_proxy = raw.forward_proxy.map(|f| addr(cx, "listen.forward_proxy", Some(f), "127.0.0.1:8081"));
    if forward_proxy.is_some_and(|f| f.port() != 0 && (f == gateway || f == admin)) {
        cx.err("listen.forward_proxy", "the forward proxy needs its own port (not the gateway's or the admin's)");
    }
    Listen { gateway, admin, forward_proxy }
}

fn provider_of(
    cx: &mut Ctx,
    path: &str,
    name: String,
    default: bool,
    raw: RawProvider,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<(Provider, bool)> {
    let before = cx.errors.len();
    let kind = Dialect::parse(&raw.kind).unwrap_or_else(|| {
        cx.err(format!("{path}.kind"), format!("unknown provider kind `{}`; expected one of: openai, anthropic, gemini (OpenRouter and Ollama are openai)", raw.kind));
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
    let timeouts = resilience::timeouts_of(cx, path, fields, resilience::DEFAULT_TIMEOUTS);
    let health_check = resilience::health_check_of(cx, path, raw.health_check, kind, endpoint.as_ref().map(|e| e.base_path.as_str()).unwrap_or(""));
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
        resilience::retry_patch(cx, &format!("{path}.retry"), r);
    }
    let breaker = resilience::breaker_of(cx, &format!("{path}.breaker"), raw.breaker.as_ref(), breaker);
    let fields = [raw.connect_timeout_ms, raw.first_byte_timeout_ms, raw.idle_timeout_ms, raw.total_timeout_ms];
    let base = provider.map(|i| providers[i].timeouts).unwrap_or(resilience::DEFAULT_TIMEOUTS);
    let timeouts = resilience::timeouts_of(cx, path, fields, base);
    if cx.errors.len() != before {
        return None;
    }
    Some(Model {
        name: name.to_string(),
        provider: provider?,
        id: raw.id.unwrap_or_else(|| name.to_string()),
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

fn check_model_list(cx: &mut Ctx, path: &str, list: &[String], model_names: &[String], this: Option<&str>) {
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
fn check_model(cx: &mut Ctx, path: &str, m: &str, model_names: &[String]) -> bool {
    let known = model_names.iter().any(|n| n == m);
    if !known {
        cx.err(path, format!("unknown model `{m}`; defined models: {}", model_names.join(", ")));
    }
    known
}

fn capabilities_of(cx: &mut Ctx, path: &str, names: &[String]) -> Vec<Capability> {
    let mut out = Vec::new();
    for (i, c) in names.iter().enumerate() {
        match Capability::parse(c) {
            Some(cap) => out.push(cap),
            None => cx.err(format!("{path}[{i}]"), format!("unknown capability `{c}`; expected one of: {}", Capability::names())),
        }
    }
    out
}
