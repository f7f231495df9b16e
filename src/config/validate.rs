//! Raw YAML → runtime [`Snapshot`], reporting every error at once.
//!
//! Each section (each provider, model and route) is deserialized on its own,
//! so one typo does not hide the next; every error carries its YAML path and
//! the line/column found through [`PositionIndex`].

use std::collections::HashSet;
use std::path::PathBuf;

use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde_yaml::Value;

use super::positions::PositionIndex;
use super::raw::{RawListen, RawRoute};
use super::*;

pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
const TOP_KEYS: &[&str] = &[
    "listen",
    "state_dir",
    "max_body_bytes",
    "access_log",
    "admin_token_env",
    "admin_read_requires_token",
    "providers",
    "models",
    "routes",
    "routing",
    "budgets",
    "budget_store",
    "timezone",
    "spend_spike",
    "retry",
    "breaker",
    "forward_proxy",
    "limits",
    "client_timeouts",
    "shutdown_grace_s",
    "allow_passthrough",
    "cross_provider_client_keys",
    "threads",
    "metrics",
    "alerts",
    "cache",
    "telemetry",
    "dashboard",
    "auth",
    "keys",
    "rate_limits",
];

mod budgets;
pub mod keys;
mod listen;
mod models;
mod observe;
mod resilience;
mod routes;
mod targets;

use models::{capabilities_of, check_model, check_model_list};

pub(super) struct Ctx {
    idx: PositionIndex,
    errors: Vec<ConfigError>,
}

impl Ctx {
    pub(super) fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let pos = self.idx.find(&path);
        self.errors.push(ConfigError { path, line: pos.map(|p| p.line), column: pos.map(|p| p.column), message: message.into() });
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

/// The top-level sections, each deserialized on its own, always in the
/// same order (so errors are listed in a stable order).
struct Sections {
    listen: RawListen,
    state_dir: String,
    max_body: u64,
    access_log: String,
    providers: IndexMap<String, Value>,
    models: IndexMap<String, Value>,
    routes: Vec<Value>,
    routing: super::raw::RawRouting,
    admin_token_env: Option<String>,
    admin_read_requires_token: bool,
    budgets: Vec<Value>,
    budget_store: Option<super::raw::RawBudgetStore>,
    timezone: Option<String>,
    spend_spike: Option<super::raw::RawSpike>,
    retry: Option<super::raw::RawRetry>,
    breaker: Option<super::raw::RawBreaker>,
    forward_proxy: super::raw::RawForwardProxy,
    limits: super::limits::RawLimits,
    client_timeouts: super::limits::RawClientTimeouts,
    shutdown_grace_s: Option<u64>,
    allow_passthrough: Vec<String>,
    cross_provider_client_keys: bool,
    threads: Option<usize>,
    metrics: super::raw::RawMetrics,
    alerts: Option<super::raw::RawAlerts>,
    cache: Option<super::cache::RawCache>,
    telemetry: Option<super::raw::RawTelemetry>,
    dashboard: super::dashboard::RawDashboard,
    auth: Option<keys::RawAuth>,
    keys: Vec<Value>,
    rate_limits: Vec<Value>,
}

/// Parse the YAML and split it into top-level sections (unknown keys are
/// errors).
fn top_level(cx: &mut Ctx, text: &str) -> Result<IndexMap<String, Value>, Vec<ConfigError>> {
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
    Ok(sections)
}

impl Sections {
    fn read(cx: &mut Ctx, mut sections: IndexMap<String, Value>) -> Self {
        let mut take = |k: &str| sections.shift_remove(k).filter(|v| !v.is_null());
        Sections {
            listen: take("listen").and_then(|v| cx.section("listen", v)).unwrap_or_default(),
            state_dir: take("state_dir").and_then(|v| cx.section("state_dir", v)).unwrap_or_else(|| "./data".into()),
            max_body: take("max_body_bytes").and_then(|v| cx.section("max_body_bytes", v)).unwrap_or(DEFAULT_MAX_BODY_BYTES as u64),
            access_log: take("access_log").and_then(|v| cx.section("access_log", v)).unwrap_or_else(|| "stdout".into()),
            providers: take("providers").and_then(|v| cx.section("providers", v)).unwrap_or_default(),
            models: take("models").and_then(|v| cx.section("models", v)).unwrap_or_default(),
            routes: take("routes").and_then(|v| cx.section("routes", v)).unwrap_or_default(),
            routing: take("routing").and_then(|v| cx.section("routing", v)).unwrap_or_default(),
            admin_token_env: take("admin_token_env").and_then(|v| cx.section("admin_token_env", v)),
            admin_read_requires_token: take("admin_read_requires_token").and_then(|v| cx.section("admin_read_requires_token", v)).unwrap_or(false),
            budgets: take("budgets").and_then(|v| cx.section("budgets", v)).unwrap_or_default(),
            budget_store: take("budget_store").and_then(|v| cx.section("budget_store", v)),
            timezone: take("timezone").and_then(|v| cx.section("timezone", v)),
            spend_spike: take("spend_spike").and_then(|v| cx.section("spend_spike", v)),
            retry: take("retry").and_then(|v| cx.section("retry", v)),
            breaker: take("breaker").and_then(|v| cx.section("breaker", v)),
            forward_proxy: take("forward_proxy").and_then(|v| cx.section("forward_proxy", v)).unwrap_or_default(),
            limits: take("limits").and_then(|v| cx.section("limits", v)).unwrap_or_default(),
            client_timeouts: take("client_timeouts").and_then(|v| cx.section("client_timeouts", v)).unwrap_or_default(),
            shutdown_grace_s: take("shutdown_grace_s").and_then(|v| cx.section("shutdown_grace_s", v)),
            allow_passthrough: take("allow_passthrough").and_then(|v| cx.section("allow_passthrough", v)).unwrap_or_default(),
            cross_provider_client_keys: take("cross_provider_client_keys").and_then(|v| cx.section("cross_provider_client_keys", v)).unwrap_or(false),
            threads: take("threads").and_then(|v| cx.section("threads", v)),
            metrics: take("metrics").and_then(|v| cx.section("metrics", v)).unwrap_or_default(),
            alerts: take("alerts").and_then(|v| cx.section("alerts", v)),
            cache: take("cache").and_then(|v| cx.section("cache", v)),
            telemetry: take("telemetry").and_then(|v| cx.section("telemetry", v)),
            dashboard: take("dashboard").and_then(|v| cx.section("dashboard", v)).unwrap_or_default(),
            auth: take("auth").and_then(|v| cx.section("auth", v)),
            keys: take("keys").and_then(|v| cx.section("keys", v)).unwrap_or_default(),
            rate_limits: take("rate_limits").and_then(|v| cx.section("rate_limits", v)).unwrap_or_default(),
        }
    }
}

fn routes_of(
    cx: &mut Ctx,
    raw_routes: Vec<Value>,
    models: &IndexMap<String, Model>,
    providers: &[Provider],
    model_names: &[String],
    cache: &super::cache::CacheDefaults,
) -> Vec<Route> {
    let mut routes = Vec::new();
    let mut route_names = HashSet::new();
    for (i, v) in raw_routes.into_iter().enumerate() {
        let path = format!("routes[{i}]");
        let Some(raw) = cx.section::<RawRoute>(&path, v) else { continue };
        if !route_names.insert(raw.name.clone()) {
            cx.err(format!("{path}.name"), format!("route name `{}` is used twice; names must be unique", raw.name));
        }
        if let Some(r) = routes::route_of(cx, &path, raw, models, providers, model_names, cache) {
            routes.push(r);
        }
    }
    routes
}

pub fn validate(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Snapshot, Vec<ConfigError>> {
    let mut cx = Ctx { idx: PositionIndex::build(text), errors: Vec::new() };
    let top = top_level(&mut cx, text)?;
    let raw = Sections::read(&mut cx, top);
    let limits = super::limits::limits_of(&mut cx, raw.limits);
    let client_timeouts = super::limits::client_timeouts_of(&mut cx, raw.client_timeouts);
    let allow_passthrough = super::limits::passthrough_of(&mut cx, raw.allow_passthrough);
    let threads = match raw.threads {
        Some(0) => {
            cx.err("threads", "use at least 1 worker thread (leave `threads` out to use one per core)");
            1
        }
        Some(n) if n > 256 => {
            cx.err("threads", format!("{n} worker threads is more than 256; one per core is usually best"));
            1
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    let retry = resilience::retry_of(&mut cx, raw.retry);
    let breaker = resilience::breaker_of(&mut cx, "breaker", raw.breaker.as_ref(), Breaker::default());
    let listen = listen::listen_of(&mut cx, raw.listen);
    if raw.max_body == 0 {
        cx.err("max_body_bytes", "must be greater than 0");
    }
    let access_log = listen::access_log_of(&mut cx, &raw.access_log);
    let (providers, provider_names, default_provider) = models::providers_of(&mut cx, raw.providers, env);
    let (models, model_names) = models::models_of(&mut cx, raw.models, &providers, &provider_names, breaker);
    let cache = super::cache::defaults_of(&mut cx, raw.cache);
    let routes = routes_of(&mut cx, raw.routes, &models, &providers, &model_names, &cache);
    let routing = routes::routing_of(&mut cx, raw.routing);
    let admin_token = listen::admin_of(&mut cx, &listen, raw.admin_token_env, raw.admin_read_requires_token, env);
    let mut budget_names = HashSet::new();
    let mut budgets = budgets::budgets_named(&mut cx, raw.budgets, &providers, &models, &mut budget_names);
    let auth = keys::auth_of(&mut cx, raw.auth);
    let (key_table, key_budgets) = keys::keys_of(&mut cx, raw.keys, &routing.app_keys, &routes, &providers, &models, &mut budget_names, env);
    budgets.extend(key_budgets);
    let rate_limits = keys::rate_limits_of(&mut cx, raw.rate_limits, &key_table, &models);
    if auth == AuthMode::KnownKeys {
        for p in providers.iter().filter(|p| matches!(p.auth, Auth::Passthrough) && !p.local) {
            cx.err(
                format!("providers.{}.api_key_env", p.name),
                format!("auth.mode is known_keys, so clients send virtual keys that provider `{}` would not accept: set api_key_env so modelgate injects the provider's real key (or mark a local server `local: true`)", p.name),
            );
        }
    }
    let budget_store = budgets::store_of(&mut cx, raw.budget_store);
    let cache = cache.finish(&mut cx, &routes, &budget_store);
    let timezone = budgets::timezone_of(&mut cx, raw.timezone);
    let spike = budgets::spike_of(&mut cx, raw.spend_spike);
    let dashboard = super::dashboard::dashboard_of(&mut cx, raw.dashboard);
    let forward_proxy = listen::forward_proxy_of(&mut cx, raw.forward_proxy, &listen, &providers, env);
    let metric_labels = observe::metric_labels_of(&mut cx, raw.metrics, &routing, &routes, &budgets);
    let alerts = observe::alerts_of(&mut cx, raw.alerts);
    let telemetry = observe::telemetry_of(&mut cx, raw.telemetry);
    if !cx.errors.is_empty() {
        return Err(cx.errors);
    }
    Ok(Snapshot {
        listen,
        state_dir: PathBuf::from(raw.state_dir),
        max_body_bytes: usize::try_from(raw.max_body).unwrap_or(usize::MAX),
        access_log,
        providers,
        models,
        routes,
        routing,
        admin_token,
        admin_read_requires_token: raw.admin_read_requires_token,
        default_provider,
        budget_store,
        timezone,
        spike,
        retry,
        forward_proxy,
        limits,
        client_timeouts,
        shutdown_grace: raw.shutdown_grace_s.map_or(super::limits::DEFAULT_SHUTDOWN_GRACE, std::time::Duration::from_secs),
        allow_passthrough,
        cross_provider_client_keys: raw.cross_provider_client_keys,
        threads,
        metric_labels,
        alerts,
        cache,
        telemetry,
        source_digest: 0,
        dashboard,
        auth,
        keys: Arc::new(key_table),
        per_user: budgets.iter().any(|b| b.per_user.is_some() || b.scope.user.is_some())
            || rate_limits.iter().any(|r| r.per == Some(Per::User) || r.scope.user.is_some()),
        model_rate_limits: rate_limits.iter().any(RateLimit::by_model),
        rate_limits,
        budgets,
    })
}
