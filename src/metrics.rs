//! Every metric modelgate exports, declared once and described at start.
//!
//! Labels come from closed sets only: dialect, provider and model names from
//! config (`other` for a model the config does not know), route names (`none`
//! when no route matched), status codes, outcome/reason labels. Never user
//! text, API keys or unbounded ids.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::Duration;

use metrics::{counter, describe_counter, describe_histogram, histogram, Counter, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::alerts::stats::{self as alert_stats, ModelStats};
use crate::config::MetricLabels;

pub const REQUESTS: &str = "modelgate_requests_total";
pub const TOKENS: &str = "modelgate_tokens_total";
pub const COST: &str = "modelgate_cost_usd_total";
pub const UPSTREAM_DURATION: &str = "modelgate_upstream_duration_seconds";
pub const OVERHEAD: &str = "modelgate_overhead_seconds";
pub const ATTEMPTS: &str = "modelgate_attempts_total";
pub const STREAM_ERRORS: &str = "modelgate_stream_errors_total";
pub const SPLIT_ARMS: &str = "modelgate_split_assignments_total";
pub const SHADOW_DECISIONS: &str = "modelgate_shadow_decisions_total";
pub const CONFIG_RELOADS: &str = "modelgate_config_reloads_total";
pub const CONFIG_RELOAD_FAILURES: &str = "modelgate_config_reload_failures_total";
pub const SAVINGS: &str = "modelgate_savings_usd_total";
pub const UPGRADE_COST: &str = "modelgate_upgrade_cost_usd_total";
pub const BUDGET_SPENT: &str = "modelgate_budget_spent_usd";
pub const BUDGET_LIMIT: &str = "modelgate_budget_limit_usd";
pub const BUDGET_RESERVED: &str = "modelgate_budget_reserved_usd";
pub const BUDGET_WARNINGS: &str = "modelgate_budget_warnings_total";
pub const BUDGET_EXCEEDED: &str = "modelgate_budget_exceeded_total";
pub const RATE_LIMITED: &str = "modelgate_rate_limited_total";
pub const AUTH_REJECTED: &str = "modelgate_auth_rejected_total";
pub const SPEND_SPIKES: &str = "modelgate_spend_spikes_total";
pub const LEDGER_ERRORS: &str = "modelgate_ledger_errors_total";
pub const BUDGET_STORE_UP: &str = "modelgate_budget_store_up";
pub const TRANSLATION_DROPPED: &str = "modelgate_translation_dropped_total";
pub const FALLBACKS: &str = "modelgate_fallbacks_total";
pub const RETRIES: &str = "modelgate_retries_total";
pub const CIRCUIT_STATE: &str = "modelgate_circuit_state";
pub const PROVIDER_UP: &str = "modelgate_provider_up";
pub const TTFT: &str = "modelgate_time_to_first_token_seconds";
pub const OUTCOMES: &str = "modelgate_request_outcomes_total";
pub const ROUTE_UP: &str = "modelgate_route_up";
pub const BUDGET_STATE: &str = "modelgate_budget_state";
pub const ALERTS_FIRED: &str = "modelgate_alerts_fired_total";
pub const ALERTS_SENT: &str = "modelgate_alerts_sent_total";
pub const ALERT_FAILURES: &str = "modelgate_alert_delivery_failures_total";
pub const ALERTS_DROPPED: &str = "modelgate_alerts_dropped_total";
pub const TRACE_SPANS_EXPORTED: &str = "modelgate_trace_spans_exported_total";
pub const TRACE_SPANS_DROPPED: &str = "modelgate_trace_spans_dropped_total";
pub const ANSWER_CHECKS: &str = "modelgate_answer_checks_total";
pub const ESCALATIONS: &str = "modelgate_escalations_total";
pub const ESCALATION_COST: &str = "modelgate_escalation_cost_usd_total";

/// Buckets (seconds) of the upstream and time-to-first-token histograms;
/// the alert evaluator computes its p95 over the same ones.
pub const UPSTREAM_BUCKETS: [f64; 13] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
// Response cache.
pub const CACHE_REQUESTS: &str = "modelgate_cache_requests_total";
pub const CACHE_BYPASSES: &str = "modelgate_cache_bypasses_total";
pub const CACHE_STORES: &str = "modelgate_cache_stores_total";
pub const CACHE_EVICTIONS: &str = "modelgate_cache_evictions_total";
pub const CACHE_COALESCED: &str = "modelgate_cache_coalesced_total";
pub const CACHE_STORE_ERRORS: &str = "modelgate_cache_store_errors_total";
pub const CACHE_ENTRIES: &str = "modelgate_cache_entries";
pub const CACHE_BYTES: &str = "modelgate_cache_bytes";
pub const CACHE_STORE_UP: &str = "modelgate_cache_store_up";
pub const CACHE_SAVINGS: &str = "modelgate_cache_savings_usd_total";

/// Install the global Prometheus recorder and describe every metric.
/// Returns the handle `/metrics` renders from.
pub fn install() -> Result<PrometheusHandle, String> {
    // Overhead is sub-millisecond when healthy: fine buckets at the low end.
    let overhead_buckets = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(OVERHEAD.into()), &overhead_buckets)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(UPSTREAM_DURATION.into()), &UPSTREAM_BUCKETS))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(TTFT.into()), &UPSTREAM_BUCKETS))
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    describe();
    Ok(handle)
}

fn describe() {
    describe_counter!(REQUESTS, "Requests answered, by client dialect, serving provider and model, route and HTTP status.");
    describe_counter!(TOKENS, Unit::Count, "Tokens reported by providers, by kind: input, cached, cache_write, output.");
    describe_histogram!(UPSTREAM_DURATION, Unit::Seconds, "Time from sending a request upstream to the end of its response, by serving model and provider.");
    describe_histogram!(TTFT, Unit::Seconds, "Streamed answers: time from sending the request upstream to its first event, by serving model and provider.");
    describe_counter!(
        OUTCOMES,
        "Requests by serving model, provider and outcome: ok, error (modelgate or the provider failed it: 5xx, 429 from a provider, timeouts, open breakers, broken streams), client_error (4xx the client caused), rejected (a budget refused it), client_closed."
    );
    describe_histogram!(
        OVERHEAD,
        Unit::Seconds,
        "Time spent inside modelgate: from the request body received to the upstream call, plus after the upstream response ended."
    );
    describe_counter!(ATTEMPTS, "Upstream attempts by model and outcome (ok, status code class, or failure reason).");
    describe_counter!(STREAM_ERRORS, "Streams that failed after the first byte was sent to the client, by reason.");
    describe_counter!(SPLIT_ARMS, "Requests assigned to each arm of a split route.");
    describe_counter!(
        SHADOW_DECISIONS,
        "Shadow-mode decisions: the model routing would have chosen (`refused` when it would refuse), by route; the request itself was forwarded unchanged."
    );
    describe_counter!(CONFIG_RELOADS, "Successful config reloads.");
    describe_counter!(CONFIG_RELOAD_FAILURES, "Config reloads rejected because the new file was invalid (the old config stays).");
    describe_counter!(
        BUDGET_WARNINGS,
        "Budget warnings, by budget and level: `warn` (spend passed warn_at) and `exceeded` (first request over the limit in a window)."
    );
    describe_counter!(BUDGET_EXCEEDED, "Requests a used-up budget acted on, by budget and action (reject, downgrade).");
    describe_counter!(
        RATE_LIMITED,
        "Rate-limit refusals by limit name and kind (requests, tokens): a request answered 429, or a model skipped for a limit counted per model."
    );
    describe_counter!(AUTH_REJECTED, "Requests refused before any upstream call because of their API key (auth.mode: known_keys), by reason (missing, unknown, revoked, expired, model, route).");
    describe_counter!(SPEND_SPIKES, "Spend spikes: the last hour's spend went over spend_spike.factor × the average hour before it.");
    describe_counter!(LEDGER_ERRORS, "Spend-ledger entries that could not be written to state_dir.");
    describe_counter!(TRANSLATION_DROPPED, "Request fields dropped because the serving model's dialect cannot carry them, by field.");
    describe_counter!(FALLBACKS, "Moves from a failed model to the next of the plan, by from, to and the failure (outcome) that caused it.");
    describe_counter!(RETRIES, "Retries of the same model after a failed attempt, by model and reason.");
    metrics::describe_gauge!(CIRCUIT_STATE, "Circuit breaker per model and provider: 0 closed, 1 open (skipped), 2 half-open (one probe request).");
    metrics::describe_gauge!(PROVIDER_UP, "Active health check per provider: 1 healthy, 0 failing.");
    metrics::describe_gauge!(BUDGET_STORE_UP, "1 while the shared budget store (Redis) answers, 0 while it is unreachable.");
    metrics::describe_gauge!(
        ROUTE_UP,
        "Per route: 1 while some model of it can serve, 0 while every one is skipped (breaker open, provider unhealthy, not installed)."
    );
    describe_counter!(ALERTS_FIRED, "Alerts raised, by rule (each condition once per window).");
    describe_counter!(ALERTS_SENT, "Alerts delivered to a sink (2xx answer), by sink and rule.");
    describe_counter!(ALERT_FAILURES, "Failed tries to deliver an alert, by sink (each retry counts).");
    describe_counter!(
        ALERTS_DROPPED,
        "Alerts given up, by sink and reason: queue_full, expired (still failing after alerts.delivery.give_up_after_s), rejected (the sink answered 4xx)."
    );
    describe_counter!(TRACE_SPANS_EXPORTED, "Trace spans the OTLP collector accepted.");
    describe_counter!(
        TRACE_SPANS_DROPPED,
        "Trace spans not exported, by reason: queue_full (telemetry.queue was full: the request path never waits), export_failed (the collector refused or could not be reached)."
    );
    describe_cache();
    describe_counter!(
        ANSWER_CHECKS,
        "Answers judged by a route's checks (escalate_on), by route, model and result: pass, or the check that failed (invalid_json, schema_mismatch, refusal, truncated, empty, low_logprob)."
    );
    describe_counter!(ESCALATIONS, "Requests re-sent to a stronger model because an answer failed a check, by route, from, to and reason (the check).");
}

fn describe_cache() {
    describe_counter!(
        CACHE_REQUESTS,
        "Model calls by what the response cache did: hit (served from it), miss (went upstream), bypass (not cacheable or not opted in)."
    );
    describe_counter!(CACHE_BYPASSES, "Requests that bypassed the response cache, by reason (off, temperature, n, no_store, no_cache, not_a_model_call, …).");
    describe_counter!(
        CACHE_STORES,
        "Answers offered to the response cache, by outcome: stored, too_large, not_cacheable (an error finish), error (store failed)."
    );
    describe_counter!(CACHE_EVICTIONS, "Entries removed from the in-memory cache, by cause: size, expired, deleted (admin), replaced.");
    describe_counter!(CACHE_COALESCED, "Identical misses that waited for one in flight instead of calling upstream themselves.");
    describe_counter!(CACHE_STORE_ERRORS, "Response-cache store (Redis) calls that failed, by operation; each lookup that failed was served as a miss.");
    metrics::describe_gauge!(CACHE_ENTRIES, "Entries in the in-memory response cache.");
    metrics::describe_gauge!(
        CACHE_BYTES,
        Unit::Bytes,
        "Bytes the in-memory response cache holds (answers plus per-entry overhead), bounded by cache.max_bytes."
    );
    metrics::describe_gauge!(CACHE_STORE_UP, "1 while the response cache's Redis answers, 0 while it is unreachable.");
}

/// Labels of one answered request.
pub struct RequestLabels<'a> {
    pub dialect: &'static str,
    pub provider: &'a str,
    pub model: &'a str,
    pub route: &'a str,
    pub status: u16,
}

/// Handles resolved in the registry once per thread and label set (label
/// strings allocated and hashed there only the first time); the key names
/// the metric (or handle set) and its label values. Label sets are closed
/// (see the module doc), so a cache stays as small as the registry.
struct Cache<T> {
    buf: String,
    map: hashbrown::HashMap<String, T>,
}

impl<T> Cache<T> {
    fn new() -> Self {
        Cache { buf: String::new(), map: hashbrown::HashMap::new() }
    }

    fn with<R>(&mut self, key: &[&str], make: impl FnOnce() -> T, f: impl FnOnce(&mut T) -> R) -> R {
        self.buf.clear();
        for part in key {
            self.buf.push_str(part);
            self.buf.push('\u{1f}');
        }
        if let Some(h) = self.map.get_mut(self.buf.as_str()) {
            return f(h);
        }
        f(self.map.entry(self.buf.clone()).or_insert_with(make))
    }
}

thread_local! {
    static COUNTERS: RefCell<Cache<Counter>> = RefCell::new(Cache::new());
    static MODELS: RefCell<Cache<ModelHandles>> = RefCell::new(Cache::new());
    static USAGE: RefCell<Cache<UsageHandles>> = RefCell::new(Cache::new());
}

/// The counter for a label set, from this thread's cache.
fn cached(key: &[&str], make: impl FnOnce() -> Counter) -> Counter {
    COUNTERS.with_borrow_mut(|c| c.with(key, make, |h| h.clone()))
}

pub fn request(l: &RequestLabels<'_>) {
    let mut status = itoa::Buffer::new();
    let status = status.format(l.status);
    cached(&[REQUESTS, l.dialect, l.provider, l.model, l.route, status], || {
        counter!(REQUESTS,
            "dialect" => l.dialect, "provider" => l.provider.to_string(), "model" => l.model.to_string(),
            "route" => l.route.to_string(), "status" => status.to_string())
    })
    .increment(1);
}

/// How a request ended, for error rates (`modelgate_request_outcomes_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// modelgate or the provider failed it: 5xx, a provider's 429,
    /// timeouts, every model skipped, a stream broken after it started.
    Error,
    /// A 4xx the client caused (bad request, auth, size, unknown endpoint).
    ClientError,
    /// A budget or one of modelgate's rate limits refused it.
    Rejected,
    ClientClosed,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [Outcome::Ok, Outcome::Error, Outcome::ClientError, Outcome::Rejected, Outcome::ClientClosed];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::ClientError => "client_error",
            Outcome::Rejected => "rejected",
            Outcome::ClientClosed => "client_closed",
        }
    }

    /// From the status the client got and the failure reason, if any.
    pub fn of(status: u16, error: Option<&str>) -> Outcome {
        match (status, error) {
            (499, _) | (_, Some("client_closed")) => Outcome::ClientClosed,
            (_, Some("budget_exceeded")) => Outcome::Rejected,
            // modelgate's own rate limits (not a provider's 429).
            (429, Some("rate_limited" | "rate_limit_exceeded" | "rate_limit_full")) => Outcome::Rejected,
            (200..=399, None) => Outcome::Ok,
            // A stream that broke after its header went out.
            (200..=399, Some(_)) => Outcome::Error,
            (429, _) | (500.., _) => Outcome::Error,
            _ => Outcome::ClientError,
        }
    }
}

/// The per-(model, provider) handles of an answered request.
struct ModelHandles {
    upstream: Histogram,
    ttft: Histogram,
    outcomes: [Counter; 5],
    stats: Arc<ModelStats>,
}

impl ModelHandles {
    fn new(model: &str, provider: &str) -> Self {
        let (m, p) = (model.to_string(), provider.to_string());
        ModelHandles {
            upstream: histogram!(UPSTREAM_DURATION, "model" => m.clone(), "provider" => p.clone()),
            ttft: histogram!(TTFT, "model" => m.clone(), "provider" => p.clone()),
            // All five at once: an error rate reads 0, not "no data", until
            // the first error.
            outcomes: Outcome::ALL.map(|o| counter!(OUTCOMES, "model" => m.clone(), "provider" => p.clone(), "outcome" => o.as_str())),
            stats: alert_stats::for_model(model),
        }
    }
}

/// Outcome, upstream duration and time to first token of an answered
/// request (by serving model and provider), the time spent inside
/// modelgate, and the same figures for the alert rules.
pub fn answered(l: &RequestLabels<'_>, error: Option<&str>, upstream: Option<Duration>, ttft: Option<Duration>, overhead: Duration) {
    let outcome = Outcome::of(l.status, error);
    MODELS.with_borrow_mut(|c| {
        c.with(
            &[l.model, l.provider],
            || ModelHandles::new(l.model, l.provider),
            |h| {
                h.outcomes[outcome as usize].increment(1);
                if let Some(u) = upstream {
                    h.upstream.record(u.as_secs_f64());
                }
                if let Some(t) = ttft {
                    h.ttft.record(t.as_secs_f64());
                }
                h.stats.observe(outcome == Outcome::Error, upstream, ttft);
            },
        )
    });
    histogram!(OVERHEAD).record(overhead.as_secs_f64());
}

/// Bounded `app` / `task` label values: the names the config knows keep
/// theirs, then the first `auto` others seen since start; the rest are
/// `other`.
struct AutoLabels(LazyLock<RwLock<HashSet<String>>>);

static AUTO_APPS: AutoLabels = AutoLabels(LazyLock::new(|| RwLock::new(HashSet::new())));
static AUTO_TASKS: AutoLabels = AutoLabels(LazyLock::new(|| RwLock::new(HashSet::new())));

impl AutoLabels {
    fn bound<'v>(&self, v: &'v str, known: &HashSet<String>, auto: usize) -> &'v str {
        if known.contains(v) {
            return v;
        }
        if self.0.read().is_ok_and(|s| s.contains(v)) {
            return v;
        }
        let Ok(mut seen) = self.0.write() else { return "other" };
        if seen.contains(v) {
            return v;
        }
        if seen.len() < auto {
            seen.insert(v.to_string());
            return v;
        }
        "other"
    }
}

/// The `app` label value of `app`.
pub fn app_label<'v>(app: &'v str, bounds: &MetricLabels) -> &'v str {
    AUTO_APPS.bound(app, &bounds.apps, bounds.auto)
}

/// The `task` label value of `task` (`none` without one).
pub fn task_label<'v>(task: Option<&'v str>, bounds: &MetricLabels) -> &'v str {
    match task {
        Some(t) => AUTO_TASKS.bound(t, &bounds.tasks, bounds.auto),
        None => "none",
    }
}

/// Token counters (by kind, made on first use) and the cost counter of one
/// (provider, model, app, task).
struct UsageHandles {
    tokens: [Option<Counter>; 4],
    cost: Arc<AtomicU64>,
}

/// Tokens and cost of a settled request, by provider, model, app and task
/// (app and task bounded by `bounds`).
pub fn usage(provider: &str, model: &str, app: &str, task: Option<&str>, bounds: &MetricLabels, u: &crate::usage::Usage, cost_usd: f64) {
    let app = app_label(app, bounds);
    let task = task_label(task, bounds);
    USAGE.with_borrow_mut(|c| {
        c.with(
            &[provider, model, app, task],
            || UsageHandles { tokens: [None, None, None, None], cost: COST_USD.handle(&[provider, model, app, task]) },
            |h| {
                for (i, (kind, n)) in [("input", u.input), ("cached", u.cached_input), ("cache_write", u.cache_write), ("output", u.output)].into_iter().enumerate() {
                    if n > 0 {
                        h.tokens[i]
                            .get_or_insert_with(|| {
                                counter!(TOKENS, "provider" => provider.to_string(), "model" => model.to_string(), "app" => app.to_string(), "task" => task.to_string(), "kind" => kind)
                            })
                            .increment(n);
                    }
                }
                add_f64(&h.cost, cost_usd);
            },
        )
    });
}

/// Add to an `f64` kept as its bits.
fn add_f64(a: &AtomicU64, v: f64) {
    if v == 0.0 {
        return;
    }
    let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| Some((f64::from_bits(bits) + v).to_bits()));
}

/// Counters of USD amounts. The `metrics` crate's counters are integers, so
/// float counters are kept here (each series an `f64` in an atomic, its
/// handle cached per thread like the others) and rendered after the
/// exporter's output, with the Prometheus `counter` type.
pub struct FloatCounters {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, Arc<AtomicU64>>>,
}

pub static COST_USD: FloatCounters = FloatCounters {
    name: COST,
    help: "Cost in USD of served requests, computed from reported usage and the model's prices, by provider, model, app and task.",
    labels: &["provider", "model", "app", "task"],
    values: Mutex::new(BTreeMap::new()),
};

pub static SAVINGS_USD: FloatCounters = FloatCounters {
    name: SAVINGS,
    help: "USD saved by routing: the cost the same tokens would have had at the model the client asked for, minus the actual cost (requests served by a cheaper model).",
    labels: &["requested", "model"],
    values: Mutex::new(BTreeMap::new()),
};

pub static CACHE_SAVINGS_USD: FloatCounters = FloatCounters {
    name: CACHE_SAVINGS,
    help: "USD not spent upstream because the response cache served the answer: the cached answer's usage at the serving model's prices.",
    labels: &["provider", "model"],
    values: Mutex::new(BTreeMap::new()),
};

pub static ESCALATION_USD: FloatCounters = FloatCounters {
    name: ESCALATION_COST,
    help: "USD spent on answers that failed a check and were not delivered (the request escalated to a stronger model), by route, model and reason.",
    labels: &["route", "model", "reason"],
    values: Mutex::new(BTreeMap::new()),
};

pub static UPGRADE_USD: FloatCounters = FloatCounters {
    name: UPGRADE_COST,
    help: "USD spent above the requested model's price when routing chose a pricier model (e.g. x-modelgate-tier: max).",
    labels: &["requested", "model"],
    values: Mutex::new(BTreeMap::new()),
};

impl FloatCounters {
    /// The series of `values` (one per label), created at 0 if new.
    fn handle(&self, values: &[&str]) -> Arc<AtomicU64> {
        let Ok(mut m) = self.values.lock() else { return Arc::new(AtomicU64::new(0)) };
        m.entry(values.iter().map(|v| v.to_string()).collect()).or_insert_with(|| Arc::new(AtomicU64::new(0f64.to_bits()))).clone()
    }

    pub fn add(&self, values: &[&str], v: f64) {
        add_f64(&self.handle(values), v);
    }

    pub fn render(&self, out: &mut String) {
        let Ok(m) = self.values.lock() else { return };
        let _ = writeln!(out, "# HELP {} {}\n# TYPE {} counter", self.name, self.help, self.name);
        for (vals, v) in m.iter() {
            let labels: Vec<String> = self.labels.iter().zip(vals).map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let _ = writeln!(out, "{}{{{}}} {}", self.name, labels.join(","), f64::from_bits(v.load(Ordering::Relaxed)));
        }
    }
}

/// Prometheus label-value escaping (config names may hold any character).
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Drains histogram samples into their buckets every few seconds, so memory
/// stays flat even when nobody scrapes `/metrics`.
pub struct Upkeep(pub PrometheusHandle);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Upkeep {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => self.0.run_upkeep(),
            }
        }
    }
}

/// The full `/metrics` text.
pub fn render(handle: &PrometheusHandle) -> String {
    let mut out = handle.render();
    COST_USD.render(&mut out);
    SAVINGS_USD.render(&mut out);
    UPGRADE_USD.render(&mut out);
    CACHE_SAVINGS_USD.render(&mut out);
    ESCALATION_USD.render(&mut out);
    out
}

/// Savings (or extra cost) of serving `model` instead of `requested`.
pub fn savings(requested: &str, model: &str, requested_cost: f64, cost: f64) {
    let d = requested_cost - cost;
    if d > 0.0 {
        SAVINGS_USD.add(&[requested, model], d);
    } else if d < 0.0 {
        UPGRADE_USD.add(&[requested, model], -d);
    }
}

pub fn translation_dropped(field: &'static str) {
    counter!(TRANSLATION_DROPPED, "field" => field).increment(1);
}

pub fn budget_warning(budget: &str, level: &'static str) {
    counter!(BUDGET_WARNINGS, "budget" => budget.to_string(), "level" => level).increment(1);
}

pub fn budget_exceeded(budget: &str, action: &'static str) {
    counter!(BUDGET_EXCEEDED, "budget" => budget.to_string(), "action" => action).increment(1);
}

pub fn rate_limited(limit: &str, kind: &'static str) {
    counter!(RATE_LIMITED, "limit" => limit.to_string(), "kind" => kind).increment(1);
}

pub fn auth_rejected(reason: &'static str) {
    counter!(AUTH_REJECTED, "reason" => reason).increment(1);
}

pub fn spend_spike() {
    counter!(SPEND_SPIKES).increment(1);
}

pub fn ledger_error() {
    counter!(LEDGER_ERRORS).increment(1);
}

pub fn budget_store(up: bool) {
    metrics::gauge!(BUDGET_STORE_UP).set(if up { 1.0 } else { 0.0 });
}

pub fn attempt(model: &str, outcome: &'static str) {
    cached(&[ATTEMPTS, model, outcome], || counter!(ATTEMPTS, "model" => model.to_string(), "outcome" => outcome)).increment(1);
}

pub fn fallback(from: &str, to: &str, reason: &'static str) {
    counter!(FALLBACKS, "from" => from.to_string(), "to" => to.to_string(), "reason" => reason).increment(1);
}

pub fn retry(model: &str, reason: &'static str) {
    counter!(RETRIES, "model" => model.to_string(), "reason" => reason).increment(1);
}

pub fn circuit_state(model: &str, provider: &str, state: f64) {
    metrics::gauge!(CIRCUIT_STATE, "model" => model.to_string(), "provider" => provider.to_string()).set(state);
}

pub fn provider_up(provider: &str, up: bool) {
    metrics::gauge!(PROVIDER_UP, "provider" => provider.to_string()).set(if up { 1.0 } else { 0.0 });
}

pub fn stream_error(reason: &'static str) {
    counter!(STREAM_ERRORS, "reason" => reason).increment(1);
}

pub fn answer_check(route: &str, model: &str, result: &'static str) {
    counter!(ANSWER_CHECKS, "route" => route.to_string(), "model" => model.to_string(), "result" => result).increment(1);
}

/// An answer from `from` failed `reason` and the request went on to `to`;
/// the discarded answer cost `cost`.
pub fn escalation(route: &str, from: &str, to: &str, reason: &'static str, cost: f64) {
    counter!(ESCALATIONS, "route" => route.to_string(), "from" => from.to_string(), "to" => to.to_string(), "reason" => reason).increment(1);
    ESCALATION_USD.add(&[route, from, reason], cost);
}

pub fn split_arm(route: &str, arm: &str) {
    counter!(SPLIT_ARMS, "route" => route.to_string(), "arm" => arm.to_string()).increment(1);
}

pub fn shadow_decision(route: &str, model: &str) {
    counter!(SHADOW_DECISIONS, "route" => route.to_string(), "model" => model.to_string()).increment(1);
}

pub fn route_up(route: &str, up: bool) {
    metrics::gauge!(ROUTE_UP, "route" => route.to_string()).set(if up { 1.0 } else { 0.0 });
}

pub fn alert_fired(rule: &'static str) {
    counter!(ALERTS_FIRED, "rule" => rule).increment(1);
}

pub fn alert_sent(sink: &str, rule: &'static str) {
    counter!(ALERTS_SENT, "sink" => sink.to_string(), "rule" => rule).increment(1);
}

pub fn alert_failure(sink: &str) {
    counter!(ALERT_FAILURES, "sink" => sink.to_string()).increment(1);
}

pub fn alert_dropped(sink: &str, reason: &'static str) {
    counter!(ALERTS_DROPPED, "sink" => sink.to_string(), "reason" => reason).increment(1);
}

pub fn reload(ok: bool) {
    counter!(if ok { CONFIG_RELOADS } else { CONFIG_RELOAD_FAILURES }).increment(1);
}

// === response cache ===

pub fn cache_request(result: &'static str) {
    cached(&[CACHE_REQUESTS, result], || counter!(CACHE_REQUESTS, "result" => result)).increment(1);
}

pub fn cache_bypass(reason: &'static str) {
    cached(&[CACHE_BYPASSES, reason], || counter!(CACHE_BYPASSES, "reason" => reason)).increment(1);
}

pub fn cache_store(outcome: &'static str) {
    counter!(CACHE_STORES, "outcome" => outcome).increment(1);
}

pub fn cache_eviction(cause: &'static str) {
    counter!(CACHE_EVICTIONS, "cause" => cause).increment(1);
}

pub fn cache_coalesced() {
    counter!(CACHE_COALESCED).increment(1);
}

pub fn cache_store_error(op: &'static str) {
    counter!(CACHE_STORE_ERRORS, "op" => op).increment(1);
}

pub fn cache_size(entries: u64, bytes: u64) {
    metrics::gauge!(CACHE_ENTRIES).set(entries as f64);
    metrics::gauge!(CACHE_BYTES).set(bytes as f64);
}

pub fn cache_store_up(up: bool) {
    metrics::gauge!(CACHE_STORE_UP).set(if up { 1.0 } else { 0.0 });
}

pub fn cache_savings(provider: &str, model: &str, usd: f64) {
    CACHE_SAVINGS_USD.add(&[provider, model], usd);
}

pub fn trace_spans_exported(n: u64) {
    counter!(TRACE_SPANS_EXPORTED).increment(n);
}

pub fn trace_spans_dropped(reason: &'static str, n: u64) {
    counter!(TRACE_SPANS_DROPPED, "reason" => reason).increment(n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_separate_what_modelgate_or_providers_failed_from_the_clients_doing() {
        assert_eq!(Outcome::of(200, None), Outcome::Ok);
        assert_eq!(Outcome::of(200, Some("cut")), Outcome::Error, "a stream broken after its header");
        assert_eq!(Outcome::of(503, Some("circuit_open")), Outcome::Error);
        assert_eq!(Outcome::of(429, None), Outcome::Error, "a provider's rate limit");
        assert_eq!(Outcome::of(429, Some("budget_exceeded")), Outcome::Rejected);
        assert_eq!(Outcome::of(429, Some("rate_limit_exceeded")), Outcome::Rejected, "modelgate's own rate limit");
        assert_eq!(Outcome::of(429, Some("rate_limited")), Outcome::Rejected, "every model over its rate limit");
        assert_eq!(Outcome::of(400, None), Outcome::ClientError);
        assert_eq!(Outcome::of(499, Some("client_closed")), Outcome::ClientClosed);
        assert_eq!(Outcome::of(200, Some("client_closed")), Outcome::ClientClosed);
    }

    #[test]
    fn app_labels_keep_known_names_then_the_first_few_others() {
        let auto = AutoLabels(LazyLock::new(|| RwLock::new(HashSet::new())));
        let known: HashSet<String> = ["billing".to_string()].into();
        assert_eq!(auto.bound("billing", &known, 2), "billing");
        assert_eq!(auto.bound("a", &known, 2), "a");
        assert_eq!(auto.bound("b", &known, 2), "b");
        assert_eq!(auto.bound("c", &known, 2), "other", "over auto_labels");
        assert_eq!(auto.bound("a", &known, 2), "a", "a name seen first stays");
        assert_eq!(auto.bound("billing", &known, 2), "billing", "known names never count against the limit");
        assert_eq!(task_label(None, &MetricLabels::default()), "none");
    }
}
