//! `cache:` (globally) and a route's `cache:` — the response cache's
//! YAML shape, its validation, and the runtime types (data only; the cache
//! itself is `crate::cache`).
//!
//! The top-level block sets the store (memory or Redis, bounds) and the
//! defaults every route inherits; `enabled: false` there keeps the store
//! for routes that opt in with their own `cache:` (`true`, `false`, or a
//! map of the per-route fields).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::validate::Ctx;
use super::{BudgetStore, StoreKind};

pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(3600);
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 256 * 1024 * 1024;
pub const DEFAULT_CACHE_MAX_ENTRY_BYTES: u64 = 2 * 1024 * 1024;
/// Headers that change an answer whatever the body says (API versions and
/// beta features), part of the key unless `key_headers` says otherwise.
pub const DEFAULT_KEY_HEADERS: [&str; 3] = ["anthropic-version", "anthropic-beta", "openai-beta"];

/// The response cache as configured: `Snapshot::cache` is `Some` when the
/// top-level block exists or any route turns the cache on.
#[derive(Debug)]
pub struct CacheConfig {
    /// The policy of requests whose route says nothing (`None`: the cache
    /// is off for them).
    pub global: Option<Arc<CachePolicy>>,
    pub store: CacheStore,
}

/// What a cached request is keyed on and kept for.
#[derive(Debug, Clone, PartialEq)]
pub struct CachePolicy {
    pub ttl: Duration,
    pub scope: CacheScope,
    /// Request headers (lowercase) whose values are part of the key.
    pub key_headers: Vec<http::HeaderName>,
    /// `min_temperature_cacheable`: a request whose temperature is above
    /// this (a request without one counts as 1.0) bypasses the cache unless
    /// it sets a seed.
    pub max_temperature: f64,
}

/// Who shares entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheScope {
    /// Per app and per client key (the default).
    App,
    /// Every client of this modelgate (and of the fleet, with Redis).
    Global,
}

impl CacheScope {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheScope::App => "app",
            CacheScope::Global => "global",
        }
    }
}

/// A route's `cache:`.
#[derive(Debug, Clone, Default)]
pub enum RouteCache {
    /// Not set: the global policy.
    #[default]
    Inherit,
    Off,
    On(Arc<CachePolicy>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct CacheStore {
    pub kind: CacheStoreKind,
    /// The largest answer stored (bigger ones are served, not kept).
    pub max_entry_bytes: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CacheStoreKind {
    /// In this process, LRU within `max_bytes` (and `max_entries`);
    /// `persist` saves it to state_dir at shutdown and loads it at start.
    Memory { max_bytes: u64, max_entries: Option<u64>, persist: bool },
    /// The budget store's Redis (same URL, timeout and key prefix).
    Redis { url: String, timeout: Duration, key_prefix: String },
}

impl CacheStoreKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            CacheStoreKind::Memory { .. } => "memory",
            CacheStoreKind::Redis { .. } => "redis",
        }
    }
}

// === raw YAML ===

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub enabled: Option<bool>,
    pub store: Option<String>,
    pub ttl_s: Option<u64>,
    pub max_bytes: Option<u64>,
    pub max_entries: Option<u64>,
    pub max_entry_bytes: Option<u64>,
    pub persist: Option<bool>,
    pub scope: Option<String>,
    pub key_headers: Option<Vec<String>>,
    pub min_temperature_cacheable: Option<f64>,
}

/// The fields a route may set in its own `cache:` map.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawCachePatch {
    pub enabled: Option<bool>,
    pub ttl_s: Option<u64>,
    pub scope: Option<String>,
    pub key_headers: Option<Vec<String>>,
    pub min_temperature_cacheable: Option<f64>,
}

/// A route's `cache: true | false | { ttl_s: …, … }`.
#[derive(Debug, Clone)]
pub enum RawRouteCache {
    Switch(bool),
    Patch(RawCachePatch),
}

/// By hand rather than `untagged`, so a wrong value says what was expected.
impl<'de> Deserialize<'de> for RawRouteCache {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawRouteCache;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false, or a mapping of enabled, ttl_s, scope, key_headers and min_temperature_cacheable")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<RawRouteCache, E> {
                Ok(RawRouteCache::Switch(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawRouteCache, A::Error> {
                RawCachePatch::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(RawRouteCache::Patch)
            }
        }
        d.deserialize_any(V)
    }
}

// === validation ===

/// The top-level block read: the default policy and whether it applies to
/// every request, and the store.
pub(super) struct CacheDefaults {
    present: bool,
    enabled: bool,
    policy: Arc<CachePolicy>,
    store: Option<CacheStore>,
    /// `store: redis`: resolved against budget_store in `finish`.
    redis: bool,
}

impl CacheDefaults {
    /// A route's `cache:` against these defaults (`path`: the route's).
    pub(super) fn route(&self, cx: &mut Ctx, path: &str, raw: Option<RawRouteCache>) -> RouteCache {
        match raw {
            None => RouteCache::Inherit,
            Some(RawRouteCache::Switch(false)) => RouteCache::Off,
            Some(RawRouteCache::Switch(true)) => RouteCache::On(self.policy.clone()),
            Some(RawRouteCache::Patch(p)) if p.enabled == Some(false) => RouteCache::Off,
            Some(RawRouteCache::Patch(p)) => {
                let policy = policy_of(cx, &format!("{path}.cache"), &self.policy, p.ttl_s, p.scope.as_deref(), p.key_headers, p.min_temperature_cacheable);
                RouteCache::On(Arc::new(policy))
            }
        }
    }

    /// The snapshot's `cache` once the routes are known.
    pub(super) fn finish(self, cx: &mut Ctx, routes: &[super::Route], budget_store: &BudgetStore) -> Option<CacheConfig> {
        let any_route = routes.iter().any(|r| matches!(r.cache, RouteCache::On(_)));
        if !self.present && !any_route {
            return None;
        }
        let mut store = self.store.unwrap_or(CacheStore {
            kind: CacheStoreKind::Memory { max_bytes: DEFAULT_CACHE_MAX_BYTES, max_entries: None, persist: false },
            max_entry_bytes: DEFAULT_CACHE_MAX_ENTRY_BYTES as usize,
        });
        if self.redis {
            match &budget_store.kind {
                StoreKind::Redis { url, timeout, key_prefix, .. } => {
                    store.kind = CacheStoreKind::Redis { url: url.clone(), timeout: *timeout, key_prefix: key_prefix.clone() }
                }
                StoreKind::File => cx.err(
                    "cache.store",
                    "`store: redis` uses the budget store's Redis connection, but budget_store is not Redis; set `budget_store: { kind: redis, url: redis://HOST:PORT }` (budgets then share it too), or use `store: memory`",
                ),
            }
        }
        Some(CacheConfig { global: (self.present && self.enabled).then_some(self.policy), store })
    }
}

fn default_policy() -> CachePolicy {
    CachePolicy {
        ttl: DEFAULT_CACHE_TTL,
        scope: CacheScope::App,
        key_headers: DEFAULT_KEY_HEADERS.iter().map(|h| http::HeaderName::from_static(h)).collect(),
        max_temperature: 0.0,
    }
}

fn policy_of(
    cx: &mut Ctx,
    path: &str,
    base: &CachePolicy,
    ttl_s: Option<u64>,
    scope: Option<&str>,
    key_headers: Option<Vec<String>>,
    min_temperature: Option<f64>,
) -> CachePolicy {
    let mut p = base.clone();
    if let Some(t) = ttl_s {
        if t == 0 {
            cx.err(format!("{path}.ttl_s"), "must be at least 1 second (turn the cache off with `cache: false` or `enabled: false`)");
        }
        p.ttl = Duration::from_secs(t.max(1));
    }
    match scope {
        None => {}
        Some("app") => p.scope = CacheScope::App,
        Some("global") => p.scope = CacheScope::Global,
        Some(other) => cx.err(
            format!("{path}.scope"),
            format!(
                "unknown scope `{other}`; expected app (entries shared only by requests of the same app and client key) or global (shared by every client)"
            ),
        ),
    }
    if let Some(hs) = key_headers {
        p.key_headers = Vec::with_capacity(hs.len());
        for (i, h) in hs.iter().enumerate() {
            match http::HeaderName::from_bytes(h.trim().to_ascii_lowercase().as_bytes()) {
                Ok(n) => p.key_headers.push(n),
                Err(_) => cx.err(format!("{path}.key_headers[{i}]"), format!("`{h}` is not a valid HTTP header name")),
            }
        }
    }
    if let Some(t) = min_temperature {
        if !(t.is_finite() && (0.0..=2.0).contains(&t)) {
            cx.err(
                format!("{path}.min_temperature_cacheable"),
                format!("must be a temperature from 0 to 2, got {t} (0: only temperature 0 or a seed is cached; 1: also requests without a temperature)"),
            );
        }
        p.max_temperature = t;
    }
    p
}

/// Read the top-level `cache:`; the store's Redis is the budget store's.
pub(super) fn defaults_of(cx: &mut Ctx, raw: Option<RawCache>) -> CacheDefaults {
    let Some(raw) = raw else {
        return CacheDefaults { present: false, enabled: false, policy: Arc::new(default_policy()), store: None, redis: false };
    };
    let redis = raw.store.as_deref() == Some("redis");
    let path = "cache";
    let policy = policy_of(cx, path, &default_policy(), raw.ttl_s, raw.scope.as_deref(), raw.key_headers, raw.min_temperature_cacheable);
    let max_entry_bytes = raw.max_entry_bytes.unwrap_or(DEFAULT_CACHE_MAX_ENTRY_BYTES);
    if max_entry_bytes == 0 {
        cx.err("cache.max_entry_bytes", "must be at least 1");
    }
    let kind = match raw.store.as_deref().unwrap_or("memory") {
        "memory" => {
            let max_bytes = raw.max_bytes.unwrap_or(DEFAULT_CACHE_MAX_BYTES);
            if max_bytes < 1024 * 1024 {
                cx.err("cache.max_bytes", format!("{max_bytes} bytes is too small for a response cache; give at least 1048576 (1 MiB)"));
            }
            if raw.max_entries == Some(0) {
                cx.err("cache.max_entries", "must be at least 1 (turn the cache off with `enabled: false`)");
            }
            if max_entry_bytes > max_bytes / 4 {
                cx.err(
                    "cache.max_entry_bytes",
                    format!("must be at most a quarter of max_bytes ({}), or one answer could push out most others", max_bytes / 4),
                );
            }
            CacheStoreKind::Memory { max_bytes, max_entries: raw.max_entries, persist: raw.persist.unwrap_or(false) }
        }
        "redis" => {
            for (field, set) in [("max_bytes", raw.max_bytes.is_some()), ("max_entries", raw.max_entries.is_some()), ("persist", raw.persist.is_some())] {
                if set {
                    cx.err(
                        format!("cache.{field}"),
                        "only applies to `store: memory` (Redis bounds its memory itself: maxmemory with an LRU policy; entries expire after ttl_s)",
                    );
                }
            }
            if max_entry_bytes > 64 * 1024 * 1024 {
                cx.err("cache.max_entry_bytes", "Redis values are kept small: use at most 67108864 (64 MiB)");
            }
            // (The connection settings are the budget store's: `finish`.)
            CacheStoreKind::Memory { max_bytes: DEFAULT_CACHE_MAX_BYTES, max_entries: None, persist: false }
        }
        other => {
            cx.err(
                "cache.store",
                format!("unknown store `{other}`; expected memory (in this process, the default) or redis (the budget store's Redis, shared by a fleet)"),
            );
            CacheStoreKind::Memory { max_bytes: DEFAULT_CACHE_MAX_BYTES, max_entries: None, persist: false }
        }
    };
    CacheDefaults {
        present: true,
        enabled: raw.enabled.unwrap_or(true),
        policy: Arc::new(policy),
        store: Some(CacheStore { kind, max_entry_bytes: usize::try_from(max_entry_bytes).unwrap_or(usize::MAX) }),
        redis,
    }
}
