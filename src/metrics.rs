//! Every metric modelgate exports, declared once and described at start.
//!
//! Labels come from closed sets only: dialect, provider and model names from
//! config (`other` for a model the config does not know), route names (`none`
//! when no route matched), status codes, outcome/reason labels. Never user
//! text, API keys or unbounded ids.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::Mutex;

use metrics::{counter, describe_counter, describe_histogram, histogram, Counter, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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
pub const SPEND_SPIKES: &str = "modelgate_spend_spikes_total";
pub const LEDGER_ERRORS: &str = "modelgate_ledger_errors_total";
pub const BUDGET_STORE_UP: &str = "modelgate_budget_store_up";
pub const TRANSLATION_DROPPED: &str = "modelgate_translation_dropped_total";
pub const FALLBACKS: &str = "modelgate_fallbacks_total";
pub const RETRIES: &str = "modelgate_retries_total";
pub const CIRCUIT_STATE: &str = "modelgate_circuit_state";
pub const PROVIDER_UP: &str = "modelgate_provider_up";
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
    let upstream_buckets = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(OVERHEAD.into()), &overhead_buckets)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(UPSTREAM_DURATION.into()), &upstream_buckets))
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    describe();
    Ok(handle)
}

fn describe() {
    describe_counter!(REQUESTS, "Requests answered, by client dialect, serving provider and model, route and HTTP status.");
    describe_counter!(TOKENS, Unit::Count, "Tokens reported by providers, by kind: input, cached, cache_write, output.");
    describe_histogram!(UPSTREAM_DURATION, Unit::Seconds, "Time from sending a request upstream to the end of its response.");
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
    describe_counter!(SPEND_SPIKES, "Spend spikes: the last hour's spend went over spend_spike.factor × the average hour before it.");
    describe_counter!(LEDGER_ERRORS, "Spend-ledger entries that could not be written to state_dir.");
    describe_counter!(TRANSLATION_DROPPED, "Request fields dropped because the serving model's dialect cannot carry them, by field.");
    describe_counter!(FALLBACKS, "Moves from a failed model to the next of the plan, by from, to and the failure (outcome) that caused it.");
    describe_counter!(RETRIES, "Retries of the same model after a failed attempt, by model and reason.");
    metrics::describe_gauge!(CIRCUIT_STATE, "Circuit breaker per model and provider: 0 closed, 1 open (skipped), 2 half-open (one probe request).");
    metrics::describe_gauge!(PROVIDER_UP, "Active health check per provider: 1 healthy, 0 failing.");
    metrics::describe_gauge!(BUDGET_STORE_UP, "1 while the shared budget store (Redis) answers, 0 while it is unreachable.");
    describe_cache();
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

/// The counter for a label set, resolved in the registry once per thread
/// (label strings allocated and hashed there only the first time); `key`
/// names the metric and its label values. Label sets are closed (see the
/// module doc), so the cache stays as small as the registry.
fn cached(key: &[&str], make: impl FnOnce() -> Counter) -> Counter {
    thread_local! {
        static HANDLES: RefCell<(String, HashMap<String, Counter>)> = RefCell::new((String::new(), HashMap::new()));
    }
    HANDLES.with_borrow_mut(|(buf, map)| {
        buf.clear();
        for part in key {
            buf.push_str(part);
            buf.push('\u{1f}');
        }
        if let Some(c) = map.get(buf.as_str()) {
            return c.clone();
        }
        let c = make();
        map.insert(buf.clone(), c.clone());
        c
    })
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

pub fn usage(provider: &str, model: &str, u: &crate::usage::Usage, cost_usd: f64) {
    for (kind, n) in [("input", u.input), ("cached", u.cached_input), ("cache_write", u.cache_write), ("output", u.output)] {
        if n > 0 {
            cached(&[TOKENS, provider, model, kind], || counter!(TOKENS, "provider" => provider.to_string(), "model" => model.to_string(), "kind" => kind))
                .increment(n);
        }
    }
    COST_USD.add(provider, model, cost_usd);
}

/// Counters of USD amounts. The `metrics` crate's counters are integers, so
/// float counters are kept here and rendered after the exporter's output,
/// with the Prometheus `counter` type.
pub struct FloatCounters {
    name: &'static str,
    help: &'static str,
    labels: (&'static str, &'static str),
    values: Mutex<BTreeMap<(String, String), f64>>,
}

pub static COST_USD: FloatCounters = FloatCounters {
    name: COST,
    help: "Cost in USD of served requests, computed from reported usage and the model's prices.",
    labels: ("provider", "model"),
    values: Mutex::new(BTreeMap::new()),
};

pub static SAVINGS_USD: FloatCounters = FloatCounters {
    name: SAVINGS,
    help: "USD saved by routing: the cost the same tokens would have had at the model the client asked for, minus the actual cost (requests served by a cheaper model).",
    labels: ("requested", "model"),
    values: Mutex::new(BTreeMap::new()),
};

pub static CACHE_SAVINGS_USD: FloatCounters = FloatCounters {
    name: CACHE_SAVINGS,
    help: "USD not spent upstream because the response cache served the answer: the cached answer's usage at the serving model's prices.",
    labels: ("provider", "model"),
    values: Mutex::new(BTreeMap::new()),
};

pub static UPGRADE_USD: FloatCounters = FloatCounters {
    name: UPGRADE_COST,
    help: "USD spent above the requested model's price when routing chose a pricier model (e.g. x-modelgate-tier: max).",
    labels: ("requested", "model"),
    values: Mutex::new(BTreeMap::new()),
};

impl FloatCounters {
    pub fn add(&self, a: &str, b: &str, v: f64) {
        if let Ok(mut m) = self.values.lock() {
            *m.entry((a.to_string(), b.to_string())).or_insert(0.0) += v;
        }
    }

    pub fn render(&self, out: &mut String) {
        let Ok(m) = self.values.lock() else { return };
        let _ = writeln!(out, "# HELP {} {}\n# TYPE {} counter", self.name, self.help, self.name);
        let (la, lb) = self.labels;
        for ((a, b), v) in m.iter() {
            let _ = writeln!(out, "{}{{{la}=\"{}\",{lb}=\"{}\"}} {}", self.name, escape(a), escape(b), v);
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
    out
}

/// Savings (or extra cost) of serving `model` instead of `requested`.
pub fn savings(requested: &str, model: &str, requested_cost: f64, cost: f64) {
    let d = requested_cost - cost;
    if d > 0.0 {
        SAVINGS_USD.add(requested, model, d);
    } else if d < 0.0 {
        UPGRADE_USD.add(requested, model, -d);
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

pub fn durations(upstream: Option<std::time::Duration>, overhead: std::time::Duration) {
    if let Some(u) = upstream {
        histogram!(UPSTREAM_DURATION).record(u.as_secs_f64());
    }
    histogram!(OVERHEAD).record(overhead.as_secs_f64());
}

pub fn split_arm(route: &str, arm: &str) {
    counter!(SPLIT_ARMS, "route" => route.to_string(), "arm" => arm.to_string()).increment(1);
}

pub fn shadow_decision(route: &str, model: &str) {
    counter!(SHADOW_DECISIONS, "route" => route.to_string(), "model" => model.to_string()).increment(1);
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
    CACHE_SAVINGS_USD.add(provider, model, usd);
}
