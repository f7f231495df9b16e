//! Configuration: the YAML file (`raw`), `${VAR}` substitution (`interp`),
//! positions for error messages (`positions`), and validation into the
//! runtime [`Snapshot`] (`validate`).
//!
//! A `Snapshot` is immutable and complete: it cannot exist half-initialised,
//! every name it holds refers to something that exists. Reload builds a new
//! one (fallible) and swaps it in (infallible), see `crate::reload`.

mod budget;
mod cache;
pub use cache::{CacheConfig, CachePolicy, CacheScope, CacheStore, CacheStoreKind, RouteCache};
mod dashboard;
pub use dashboard::{Dashboard, DEFAULT_FEEDBACK_REQUESTS, DEFAULT_RECENT_REQUESTS};
mod error;
pub use error::{ConfigError, ConfigErrors};
mod forward;
pub use forward::{ForwardProxy, ForwardTimeouts, DEFAULT_INTERCEPT};
mod interp;
mod keys;
pub use keys::*;
pub use validate::keys::{expiry_of, runtime_key_budgets, valid_name};
mod limits;
mod observe;
pub use limits::{ClientTimeouts, PassRule, SizeLimits};
pub use observe::{
    host_name, Alerts, Delivery, LatencyOf, MetricLabels, Rule, RuleKind, Severity, Sink, SinkKind, Telemetry, DEFAULT_AUTO_LABELS, DEFAULT_TRACE_QUEUE,
};
mod positions;
mod raw;
pub use raw::RawRetry;
mod routing;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use wildmatch::WildMatch;

use crate::dialect::Dialect;
use crate::upstream::endpoint::{Endpoint, Timeouts};

pub use budget::*;
pub use routing::*;
pub use validate::DEFAULT_MAX_BODY_BYTES;

/// A secret value (API key). Never printed.
#[derive(Clone, PartialEq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq)]
pub enum AccessLog {
    Stdout,
    Off,
    File(PathBuf),
}

/// How failed attempts are retried (`retry:` globally, per route, per model).
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    /// Tries of one model before the next model of the plan.
    pub max_attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// A Retry-After up to this is waited; a longer one moves on.
    pub max_retry_after: Duration,
    /// Statuses that retry or fall back.
    pub on_status: Vec<u16>,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            max_attempts: 2,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_millis(2000),
            max_retry_after: Duration::from_millis(5000),
            on_status: vec![408, 429, 500, 502, 503, 504, 529],
        }
    }
}

impl Retry {
    /// This policy with the fields `patch` sets replaced.
    pub fn with(&self, patch: &RawRetry) -> Retry {
        let ms = |v: Option<u64>, d: Duration| v.map(Duration::from_millis).unwrap_or(d);
        Retry {
            max_attempts: patch.max_attempts.unwrap_or(self.max_attempts),
            backoff: ms(patch.backoff_ms, self.backoff),
            max_backoff: ms(patch.max_backoff_ms, self.max_backoff),
            max_retry_after: ms(patch.max_retry_after_ms, self.max_retry_after),
            on_status: patch.on_status.clone().unwrap_or_else(|| self.on_status.clone()),
        }
    }
}

/// When a model@provider is skipped for failing (`breaker:`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Breaker {
    /// Consecutive failures that open it; 0 turns the breaker off.
    pub failures: u32,
    /// Or this share of failures within `window` (with `min_requests`).
    pub failure_rate: f64,
    pub window: Duration,
    pub min_requests: u32,
    pub cooldown: Duration,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker { failures: 5, failure_rate: 0.5, window: Duration::from_secs(60), min_requests: 20, cooldown: Duration::from_secs(30) }
    }
}

/// An active health check of a provider.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    /// Path from the host root (`/v1/models`, `/api/tags`).
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
}

/// How modelgate authenticates to a provider.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Forward the client's own auth headers unchanged.
    Passthrough,
    /// Inject this key (read from `env` when the snapshot was built);
    /// `None` when the variable was not set, which fails each request clearly.
    Inject { env: String, key: Option<Secret> },
}

#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub kind: Dialect,
    pub endpoint: Arc<Endpoint>,
    pub auth: Auth,
    pub timeouts: Timeouts,
    pub local: bool,
    pub health_check: Option<HealthCheck>,
    /// Hosts it answers for in transparent mode (`hosts:`, else its
    /// base_url's host), lowercase.
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prices {
    pub input_usd_per_mtok: f64,
    pub output_usd_per_mtok: f64,
    pub cached_input_usd_per_mtok: f64,
    pub cache_write_usd_per_mtok: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    Tools,
    Json,
    Vision,
    Streaming,
    Embeddings,
    Reasoning,
}

impl Capability {
    pub const ALL: [(&'static str, Capability); 6] = [
        ("tools", Capability::Tools),
        ("json", Capability::Json),
        ("vision", Capability::Vision),
        ("streaming", Capability::Streaming),
        ("embeddings", Capability::Embeddings),
        ("reasoning", Capability::Reasoning),
    ];

    pub fn parse(s: &str) -> Option<Capability> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, c)| *c)
    }

    pub fn as_str(self) -> &'static str {
        Self::ALL.iter().find(|(_, c)| *c == self).map(|(n, _)| *n).unwrap_or("?")
    }

    pub fn names() -> String {
        Self::ALL.map(|(n, _)| n).join(", ")
    }
}

#[derive(Debug)]
pub struct Model {
    pub name: String,
    /// Index into `Snapshot::providers`.
    pub provider: usize,
    /// The upstream model id.
    pub id: String,
    /// Upstream ids (globs) a client may ask for that this model answers
    /// (`aliases:`): dated versions such as `gpt-4o-2024-08-06`. Its `id`
    /// counts too.
    pub aliases: Vec<WildMatch>,
    pub prices: Prices,
    pub context_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
    pub capabilities: Vec<Capability>,
    pub quality: u8,
    /// Typical time to first token, a hint for latency scoring.
    pub latency_ms: Option<u64>,
    pub fallbacks: Vec<String>,
    /// Fields of `retry:` set on this model.
    pub retry: Option<RawRetry>,
    pub breaker: Breaker,
    /// The provider's timeouts with this model's overrides.
    pub timeouts: Timeouts,
}

impl Model {
    /// Whether the model lists `c` (a model without a capability list is
    /// assumed to have them all).
    pub fn has(&self, c: Capability) -> bool {
        self.capabilities.is_empty() || self.capabilities.contains(&c)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Listen {
    pub gateway: SocketAddr,
    pub admin: SocketAddr,
    /// The `HTTPS_PROXY` listener (transparent mode), when configured.
    pub forward_proxy: Option<SocketAddr>,
}

/// The whole validated configuration: what one request sees from start to end.
#[derive(Debug)]
pub struct Snapshot {
    pub listen: Listen,
    pub state_dir: PathBuf,
    pub max_body_bytes: usize,
    pub access_log: AccessLog,
    pub providers: Vec<Provider>,
    pub models: IndexMap<String, Model>,
    pub routes: Vec<Route>,
    pub routing: Routing,
    /// The bearer token for mutating admin endpoints: the variable named by
    /// `admin_token_env` and its value (`None` when unset).
    pub admin_token: Option<(String, Option<Secret>)>,
    /// `admin_read_requires_token`: read-only admin endpoints and /metrics
    /// need the token too (/healthz and /readyz never do).
    pub admin_read_requires_token: bool,
    /// Index of the provider that serves unrouted requests of each dialect.
    pub default_provider: [Option<usize>; Dialect::COUNT],
    pub budgets: Vec<Budget>,
    pub budget_store: BudgetStore,
    /// Calendar windows of budgets and usage reports.
    pub timezone: jiff::tz::TimeZone,
    pub spike: Spike,
    /// `retry:` (defaults filled in).
    pub retry: Retry,
    pub forward_proxy: ForwardProxy,
    pub limits: SizeLimits,
    pub client_timeouts: ClientTimeouts,
    /// How long SIGTERM lets in-flight requests finish.
    pub shutdown_grace: Duration,
    /// Worker threads of each listener (`threads`; default: the cores this
    /// process may use). Applied at start.
    pub threads: usize,
    /// `allow_passthrough`: pass-through endpoints beyond the built-in list.
    pub allow_passthrough: Vec<PassRule>,
    /// A client's own key may be sent to a provider other than the one it
    /// called (fallbacks and routes across providers without api_key_env).
    pub cross_provider_client_keys: bool,
    /// `metrics:`: which app and task names become label values.
    pub metric_labels: MetricLabels,
    /// `alerts:` (no sinks: alerts are only logged).
    pub alerts: Alerts,
    /// The response cache (`cache:`, or a route's); `None`: off everywhere.
    pub cache: Option<CacheConfig>,
    /// `telemetry:` (OpenTelemetry traces; `None`: off).
    pub telemetry: Option<Arc<Telemetry>>,
    /// `dashboard:`: what the admin listener keeps for the dashboard.
    pub dashboard: Dashboard,
    /// A digest of the file's bytes this snapshot was loaded from (0: not
    /// from a file): the reloader compares the file with it.
    pub source_digest: u64,
    /// `auth.mode`: open, or known virtual keys only.
    pub auth: AuthMode,
    /// `keys:` (and `routing.app_keys`) by hash; keys created at runtime
    /// live in `crate::keys::KeyStore`.
    pub keys: Arc<KeyTable>,
    /// `rate_limits:` (a key's own limits are on the key).
    pub rate_limits: Vec<RateLimit>,
    /// Some budget or rate limit counts users: requests record theirs.
    pub per_user: bool,
    /// Some rate limit counts per model ([`RateLimit::by_model`]): each
    /// model tried is admitted on its own.
    pub model_rate_limits: bool,
}

impl Snapshot {
    /// The configured model a client's model id names: a model of that
    /// name, else the first (in file order) whose `id` is it, else the
    /// first with an alias pattern matching it. The `bool` says whether the
    /// id is not the model's name (an upstream id or alias: sent upstream
    /// as the client wrote it).
    pub fn model_for(&self, requested: &str) -> Option<(&Model, bool)> {
        if let Some(m) = self.models.get(requested) {
            return Some((m, false));
        }
        if let Some(m) = self.models.values().find(|m| m.id == requested) {
            return Some((m, true));
        }
        self.models.values().find(|m| m.aliases.iter().any(|a| a.matches(requested))).map(|m| (m, true))
    }

    /// The retry policy of `model` on `route`: model fields over route
    /// fields over the global `retry:`.
    pub fn retry_for(&self, route: Option<&Route>, model: Option<&Model>) -> Retry {
        let mut r = self.retry.clone();
        if let Some(p) = route.and_then(|r| r.retry.as_ref()) {
            r = r.with(p);
        }
        if let Some(p) = model.and_then(|m| m.retry.as_ref()) {
            r = r.with(p);
        }
        r
    }

    /// Fallbacks that a client's own key cannot follow: (model, fallback,
    /// the fallback's provider), where that provider has no api_key_env, is
    /// not the model's own and is not local (a local one gets no key).
    pub fn cross_provider_fallbacks(&self) -> Vec<(&str, &str, &str)> {
        if self.cross_provider_client_keys {
            return Vec::new();
        }
        let mut out = Vec::new();
        for m in self.models.values() {
            for f in m.fallbacks.iter().filter_map(|f| self.models.get(f)) {
                let p = &self.providers[f.provider];
                if f.provider != m.provider && matches!(p.auth, Auth::Passthrough) && !p.local {
                    out.push((m.name.as_str(), f.name.as_str(), p.name.as_str()));
                }
            }
        }
        out
    }

    /// Whether `model`'s provider runs on this host.
    pub fn is_local(&self, model: &Model) -> bool {
        self.providers[model.provider].local
    }

    pub fn dialect_of(&self, model: &Model) -> Dialect {
        self.providers[model.provider].kind
    }

    /// Exposure that is allowed but worth a warning (`modelgate check`
    /// prints these, `run` logs them).
    pub fn exposure_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let gateway = self.listen.gateway;
        let injecting: Vec<&str> = self.providers.iter().filter(|p| matches!(p.auth, Auth::Inject { .. })).map(|p| p.name.as_str()).collect();
        if !gateway.ip().is_loopback() && !injecting.is_empty() {
            out.push(format!(
                "listen.gateway: the gateway listens on {gateway}, reachable from other machines, and injects the API keys of {} (api_key_env); modelgate has no client allow-list for the gateway, so anyone who can reach this port spends your keys. Listen on 127.0.0.1:{} (listen.gateway), or restrict the port with a firewall",
                injecting.join(", "),
                gateway.port()
            ));
        }
        let admin = self.listen.admin;
        if !admin.ip().is_loopback() && self.admin_token.is_some() && !self.admin_read_requires_token {
            out.push(format!(
                "listen.admin: the admin listener on {admin} is reachable from other machines and answers /metrics and the read-only /admin endpoints (spend, usage, routing) without a token; set `admin_read_requires_token: true` to require it"
            ));
        }
        out
    }

    /// Names of providers whose `api_key_env` is not set; logged at start.
    pub fn missing_keys(&self) -> impl Iterator<Item = (&str, &str)> {
        self.providers.iter().filter_map(|p| match &p.auth {
            Auth::Inject { env, key: None } => Some((p.name.as_str(), env.as_str())),
            _ => None,
        })
    }
}

/// Load and validate a config file, reading `${VAR}`s from the process env.
pub fn load_file(path: &Path) -> Result<Snapshot, ConfigErrors> {
    let wrap = |errors| ConfigErrors { file: path.to_path_buf(), errors };
    let text = std::fs::read_to_string(path)
        .map_err(|e| wrap(vec![ConfigError { path: String::new(), line: None, column: None, message: format!("cannot read file: {e}") }]))?;
    let mut snap = load_str(&text, &|k| std::env::var(k).ok()).map_err(wrap)?;
    snap.source_digest = digest(text.as_bytes());
    Ok(snap)
}

/// What [`Snapshot::source_digest`] holds for a file's bytes.
pub fn digest(bytes: &[u8]) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(bytes)
}

/// Load and validate config text. Relative paths (state_dir, ca_file,
/// access_log) are relative to the working directory, as on the command line.
pub fn load_str(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Snapshot, Vec<ConfigError>> {
    let (text, used) = interp::substitute(text, env)?;
    validate::validate(&text, env).map_err(|errors| errors.into_iter().map(|e| ConfigError { message: interp::redact(&e.message, &used), ..e }).collect())
}

/// The config compiled into the binary: used by `modelgate run` without `-c`.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../conf/modelgate.yaml");
