//! The YAML file as written: serde structs that mirror the user-facing shape
//! (CONFIG.md) with defaults and `deny_unknown_fields`. Nothing here is
//! trusted; `validate` turns it into the runtime `Snapshot`.

use indexmap::IndexMap;
use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub gateway: Option<String>,
    pub admin: Option<String>,
    pub forward_proxy: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawForwardProxy {
    pub intercept: Option<Vec<String>>,
    pub allow_ports: Option<Vec<u16>>,
    pub tunnel: Option<bool>,
    pub allow_clients: Option<Vec<String>>,
    pub auth_env: Option<String>,
    /// CONNECT targets that may be internal: networks, addresses, host names.
    pub allow_internal: Option<Vec<String>>,
    pub allow_private: Option<bool>,
    pub head_timeout_ms: Option<u64>,
    pub tls_handshake_timeout_ms: Option<u64>,
    pub tunnel_idle_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub kind: String,
    pub base_url: String,
    pub api_key_env: Option<String>,
    pub ca_file: Option<String>,
    pub connect_timeout_ms: Option<u64>,
    pub first_byte_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub total_timeout_ms: Option<u64>,
    #[serde(default)]
    pub local: bool,
    #[serde(default)]
    pub default: bool,
    pub health_check: Option<RawHealthCheck>,
    /// Hosts this provider answers for in transparent mode.
    pub hosts: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub path: Option<String>,
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
}

/// `retry:` globally, on a route or on a model; unset fields inherit.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub max_attempts: Option<u32>,
    pub backoff_ms: Option<u64>,
    pub max_backoff_ms: Option<u64>,
    pub max_retry_after_ms: Option<u64>,
    pub on_status: Option<Vec<u16>>,
}

/// `breaker:` globally or on a model; unset fields inherit.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub failures: Option<u32>,
    pub failure_rate: Option<f64>,
    pub window_ms: Option<u64>,
    pub min_requests: Option<u32>,
    pub cooldown_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub provider: String,
    pub id: Option<String>,
    /// Other model ids (globs) clients may ask for that this model answers.
    #[serde(default)]
    pub aliases: Vec<String>,
    pub input_usd_per_mtok: Option<f64>,
    pub output_usd_per_mtok: Option<f64>,
    pub cached_input_usd_per_mtok: Option<f64>,
    pub cache_write_usd_per_mtok: Option<f64>,
    pub context_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    pub quality: Option<u8>,
    pub latency_ms: Option<u64>,
    #[serde(default)]
    pub fallbacks: Vec<String>,
    pub retry: Option<RawRetry>,
    pub breaker: Option<RawBreaker>,
    pub connect_timeout_ms: Option<u64>,
    pub first_byte_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub total_timeout_ms: Option<u64>,
}

/// A number range written as `5`, `"<=3"`, `">=4"`, `"<8"`, `">2"` or `"4-7"`.
#[derive(Debug, Clone)]
pub enum RawRange {
    Exact(u64),
    Text(String),
}

/// By hand rather than `untagged`, so a wrong value says what was expected
/// instead of "did not match any variant of untagged enum".
impl<'de> Deserialize<'de> for RawRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RawRange;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(r#"a number such as 5, or a range in quotes such as "<=3", ">=4", "<8", ">2" or "4-7""#)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawRange, E> {
                Ok(RawRange::Exact(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawRange, E> {
                u64::try_from(v).map(RawRange::Exact).map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawRange, E> {
                Ok(RawRange::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub model: Option<String>,
    pub app: Option<String>,
    pub task: Option<String>,
    pub dialect: Option<String>,
    pub complexity: Option<RawRange>,
    pub tokens: Option<RawRange>,
    pub stream: Option<bool>,
    pub tools: Option<bool>,
    #[serde(default)]
    pub header: IndexMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTier {
    pub max_complexity: u8,
    pub model: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSelect {
    pub candidates: Vec<String>,
    #[serde(default)]
    pub require: Vec<String>,
    pub mode: Option<String>,
    pub max_usd_per_mtok: Option<f64>,
    #[serde(default)]
    pub local_only: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArm {
    pub model: String,
    pub weight: f64,
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    #[serde(default, rename = "match")]
    pub match_: RawMatch,
    pub target: Option<String>,
    pub tiers: Option<Vec<RawTier>>,
    pub select: Option<RawSelect>,
    pub split: Option<Vec<RawArm>>,
    #[serde(default)]
    pub fallbacks: Vec<String>,
    #[serde(default)]
    pub shadow: bool,
    pub mode: Option<String>,
    pub client_models: Option<Vec<String>>,
    pub retry: Option<RawRetry>,
    pub cache: Option<super::cache::RawRouteCache>,
    /// Answer checks whose failure re-sends the request to a stronger model.
    pub escalate_on: Option<Vec<String>>,
    pub escalate_to: Option<Vec<String>>,
    pub max_escalations: Option<u32>,
    pub min_avg_logprob: Option<f64>,
    pub refusal_patterns: Option<Vec<String>>,
    pub check_streams: Option<bool>,
    pub client_escalation: Option<RawClientEscalation>,
}

/// `client_escalation: { requested_model: on_retry, window_s: 300 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientEscalation {
    pub requested_model: String,
    pub window_s: Option<u64>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct RawWeights {
    pub cost: f64,
    pub quality: f64,
    pub latency: f64,
}

/// One task rule: every condition given must hold.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTaskRule {
    pub task: String,
    pub path: Option<String>,
    pub model: Option<String>,
    pub system_contains: Option<String>,
    pub system_regex: Option<String>,
    pub tools: Option<bool>,
    pub response_format: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeywordGroup {
    pub score: u8,
    pub words: Vec<String>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct RawBump {
    pub over: u64,
    pub add: u8,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawComplexity {
    pub keyword_match: Option<String>,
    pub keywords: Option<Vec<RawKeywordGroup>>,
    pub default_score: Option<u8>,
    pub long_conversation: Option<RawBump>,
    pub many_questions: Option<RawBump>,
    pub long_message: Option<RawBump>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    pub mode: Option<String>,
    #[serde(default)]
    pub shadow: bool,
    #[serde(default)]
    pub weights: IndexMap<String, RawWeights>,
    #[serde(default)]
    pub app_keys: IndexMap<String, String>,
    #[serde(default)]
    pub tasks: Vec<RawTaskRule>,
    #[serde(default)]
    pub complexity: RawComplexity,
    #[serde(default)]
    pub client_models: Vec<String>,
}

/// `scope: global` or `scope: { provider: X, app: Y }`.
#[derive(Debug)]
pub enum RawScope {
    Word(String),
    Map(RawScopeMap),
}

/// By hand rather than `untagged` (see `RawRange`); a mapping keeps its
/// own errors (an unknown key names the keys allowed).
impl<'de> Deserialize<'de> for RawScope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawScope;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "`global`, or a mapping of provider, model, app, task, key and/or user such as { provider: openai } or { app: billing, model: gpt-4o }",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawScope, E> {
                Ok(RawScope::Word(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawScope, A::Error> {
                RawScopeMap::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(RawScope::Map)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScopeMap {
    pub provider: Option<String>,
    pub model: Option<String>,
    pub app: Option<String>,
    pub task: Option<String>,
    pub key: Option<String>,
    pub user: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    pub name: String,
    pub scope: Option<RawScope>,
    pub window: String,
    pub limit_usd: Option<f64>,
    pub limit_tokens: Option<u64>,
    pub limit_requests: Option<u64>,
    pub warn_at: Option<f64>,
    pub on_exceed: Option<String>,
    pub downgrade_to: Option<String>,
    /// `per: user`: one budget per distinct user.
    pub per: Option<String>,
    pub max_users: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudgetStore {
    /// `file` when not given.
    pub kind: Option<String>,
    pub url: Option<String>,
    pub on_unavailable: Option<String>,
    pub timeout_ms: Option<u64>,
    pub key_prefix: Option<String>,
    pub fsync_interval_ms: Option<u64>,
    pub on_ledger_error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpike {
    pub factor: Option<f64>,
    pub baseline_hours: Option<u32>,
    pub min_usd: Option<f64>,
}

/// `metrics:`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    #[serde(default)]
    pub app_labels: Vec<String>,
    #[serde(default)]
    pub task_labels: Vec<String>,
    pub auto_labels: Option<usize>,
}

/// `alerts:`; each sink and rule is read on its own (errors name it).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    pub instance: Option<String>,
    pub link: Option<String>,
    #[serde(default)]
    pub sinks: Vec<serde_yaml::Value>,
    #[serde(default)]
    pub rules: IndexMap<String, serde_yaml::Value>,
    pub delivery: Option<RawDelivery>,
    pub eval_interval_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSink {
    pub name: String,
    pub kind: String,
    pub url: String,
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    pub timeout_ms: Option<u64>,
    pub rules: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDelivery {
    pub backoff_ms: Option<u64>,
    pub max_backoff_ms: Option<u64>,
    pub give_up_after_s: Option<u64>,
    pub queue: Option<usize>,
}

/// One entry of `alerts.rules` (which fields apply depends on the rule).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub enabled: Option<bool>,
    pub severity: Option<String>,
    pub window_s: Option<u64>,
    /// error_rate: a share of requests, e.g. 0.05.
    pub threshold: Option<f64>,
    /// latency_p95.
    pub threshold_ms: Option<u64>,
    /// cost_per_hour.
    pub threshold_usd: Option<f64>,
    pub min_requests: Option<u64>,
    /// latency_p95: `upstream` or `ttft`.
    pub of: Option<String>,
}

/// `telemetry:` (OpenTelemetry traces over OTLP/HTTP).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    pub otlp_endpoint: String,
    pub service_name: Option<String>,
    pub sample_ratio: Option<f64>,
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    pub timeout_ms: Option<u64>,
    pub batch_delay_ms: Option<u64>,
    pub batch_size: Option<usize>,
    pub queue: Option<usize>,
}
