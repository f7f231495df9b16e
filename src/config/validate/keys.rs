//! Validation of `auth:`, `keys:` and `rate_limits:`; a key's `budgets:`
//! become ordinary budgets scoped to the key (`key:NAME:BUDGET`), so the
//! budget machinery (reserve, settle, ledger, Redis) enforces them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use indexmap::IndexMap;
use serde::Deserialize;
use wildmatch::WildMatch;

use super::Ctx;
use crate::config::*;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawAuth {
    pub mode: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    name: String,
    /// The key's SHA-256 (`modelgate hash-key`), 64 hex digits, `sha256:` optional.
    key_sha256: Option<String>,
    /// Or the key itself from this environment variable (hashed at load).
    key_env: Option<String>,
    app: Option<String>,
    user: Option<String>,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    routes: Vec<String>,
    expires_at: Option<String>,
    #[serde(default)]
    budgets: Vec<serde_yaml::Value>,
    rate_limits: Option<RateAmounts>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    name: String,
    scope: Option<super::super::raw::RawScope>,
    per: Option<String>,
    rpm: Option<u64>,
    tpm: Option<u64>,
    max_buckets: Option<usize>,
}

/// One of key `key`'s own budgets (`budgets[j]` of a `keys:` entry or of
/// `POST /admin/keys`): an ordinary budget named `key:KEY:NAME` and
/// scoped to the key.
fn key_budget_of(
    cx: &mut Ctx,
    path: &str,
    key: &str,
    value: serde_yaml::Value,
    budget_names: &mut HashSet<String>,
    providers: &[Provider],
    models: &IndexMap<String, Model>,
) -> Option<Budget> {
    let mut raw = cx.section::<super::super::raw::RawBudget>(path, value)?;
    if raw.scope.is_some() || raw.per.is_some() {
        cx.err(format!("{path}.scope"), "a key's budget counts that key's requests only; leave `scope` and `per` out (or write the budget under the top-level `budgets:` with scope { key: NAME })");
        return None;
    }
    raw.name = format!("key:{key}:{}", raw.name);
    let mut b = super::budgets::budget_of(cx, path, raw, budget_names, providers, models)?;
    b.scope.key = Some(key.to_string());
    Some(b)
}

/// The budgets of a key created at runtime (`POST /admin/keys`), checked
/// against `snap` as a `keys:` entry's are (same fields, same messages,
/// paths `budgets[N]…`).
pub fn runtime_key_budgets(snap: &Snapshot, key: &str, raw: &[serde_json::Value]) -> Result<Vec<Budget>, Vec<ConfigError>> {
    let mut cx = Ctx { idx: Default::default(), errors: Vec::new() };
    let mut names: HashSet<String> = snap.budgets.iter().map(|b| b.name.clone()).collect();
    let mut out = Vec::new();
    for (j, v) in raw.iter().enumerate() {
        let path = format!("budgets[{j}]");
        match serde_yaml::to_value(v) {
            Ok(v) => out.extend(key_budget_of(&mut cx, &path, key, v, &mut names, &snap.providers, &snap.models)),
            Err(e) => cx.err(path, e.to_string()),
        }
    }
    match cx.errors.is_empty() {
        true => Ok(out),
        false => Err(cx.errors),
    }
}

/// A key's hash from `key_sha256` (64 hex digits, `sha256:` optional).
pub(in crate::config) fn hash_of(text: &str) -> Option<String> {
    let hex = text.strip_prefix("sha256:").unwrap_or(text).to_ascii_lowercase();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

pub(super) fn auth_of(cx: &mut Ctx, raw: Option<RawAuth>) -> AuthMode {
    match raw.and_then(|r| r.mode).as_deref() {
        None | Some("open") => AuthMode::Open,
        Some("known_keys") => AuthMode::KnownKeys,
        Some(other) => {
            cx.err("auth.mode", format!("unknown mode `{other}`; expected open (any client key passes) or known_keys (only keys listed in `keys:` or created with POST /admin/keys)"));
            AuthMode::Open
        }
    }
}

/// `keys:` (and `routing.app_keys`, folded in as keys that name an app
/// only); returns the key table and the keys' budgets.
#[allow(clippy::too_many_arguments)]
pub(super) fn keys_of(
    cx: &mut Ctx,
    raw: Vec<serde_yaml::Value>,
    app_keys: &HashMap<String, String>,
    routes: &[Route],
    providers: &[Provider],
    models: &IndexMap<String, Model>,
    budget_names: &mut HashSet<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> (KeyTable, Vec<Budget>) {
    let mut table = KeyTable::default();
    let mut budgets = Vec::new();
    let mut names = HashSet::new();
    let now = jiff::Timestamp::now().as_second();
    for (i, v) in raw.into_iter().enumerate() {
        let path = format!("keys[{i}]");
        let Some(k) = cx.section::<RawKey>(&path, v) else { continue };
        let before = cx.errors.len();
        if !valid_name(&k.name) {
            cx.err(format!("{path}.name"), "must be 1-64 letters, digits, `-`, `_` or `.` (it names the key in reports, the ledger and admin URLs)");
        } else if !names.insert(k.name.clone()) {
            cx.err(format!("{path}.name"), format!("key name `{}` is used twice; names must be unique", k.name));
        }
        let hash = match (&k.key_sha256, &k.key_env) {
            (Some(h), None) => hash_of(h).or_else(|| {
                cx.err(
                    format!("{path}.key_sha256"),
                    "must be the SHA-256 of the key as 64 hex digits (print it with `modelgate hash-key`), never the key itself",
                );
                None
            }),
            (None, Some(var)) => match env(var) {
                Some(key) if !key.trim().is_empty() => Some(crate::keys::hash_key(key.trim())),
                _ => {
                    cx.err(
                        format!("{path}.key_env"),
                        format!("the environment variable {var} is not set (or empty); set it to the key, or give key_sha256 instead"),
                    );
                    None
                }
            },
            (Some(_), Some(_)) => {
                cx.err(&path, "give either key_sha256 or key_env, not both");
                None
            }
            (None, None) => {
                cx.err(&path, "a key needs key_sha256 (its SHA-256, from `modelgate hash-key`) or key_env (an environment variable holding it)");
                None
            }
        };
        for (field, v) in [("app", &k.app), ("user", &k.user)] {
            if v.as_deref().is_some_and(|s| s.trim().is_empty()) {
                cx.err(format!("{path}.{field}"), "must not be empty (leave it out instead)");
            }
        }
        for (j, r) in k.routes.iter().enumerate() {
            if !routes.iter().any(|x| &x.name == r) {
                let known: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
                cx.err(format!("{path}.routes[{j}]"), format!("unknown route `{r}`; defined routes: {}", known.join(", ")));
            }
        }
        let expires_at = k.expires_at.as_deref().and_then(|t| match expiry_of(t) {
            Some(s) => Some(s),
            None => {
                cx.err(
                    format!("{path}.expires_at"),
                    format!("`{t}` is not a time; write RFC 3339 (2026-12-31T00:00:00Z) or a date (2026-12-31, midnight UTC)"),
                );
                None
            }
        });
        let limits = k.rate_limits.unwrap_or_default();
        rate_amounts_check(cx, &format!("{path}.rate_limits"), &limits, k.rate_limits.is_some());
        for (j, b) in k.budgets.into_iter().enumerate() {
            budgets.extend(key_budget_of(cx, &format!("{path}.budgets[{j}]"), &k.name, b, budget_names, providers, models));
        }
        if cx.errors.len() != before {
            continue;
        }
        let Some(hash) = hash else { continue };
        if let Some(t) = expires_at.filter(|t| *t <= now) {
            tracing::warn!(key = %k.name, expired = %jiff::Timestamp::from_second(t).map(|t| t.to_string()).unwrap_or_default(), "keys: this key has expired and is refused");
        }
        let key = VirtualKey {
            name: k.name.clone(),
            hash: hash.clone(),
            app: k.app,
            user: k.user,
            model_globs: k.models.iter().map(|g| WildMatch::new(g)).collect(),
            models: k.models,
            routes: k.routes,
            expires_at,
            limits,
            source: KeySource::Config,
            created_at: None,
            budgets: Vec::new(),
        };
        if table.by_hash.insert(hash, Arc::new(key)).is_some() {
            cx.err(format!("{path}.key_sha256"), "this key is listed twice (same hash as another entry of `keys:`)");
        }
    }
    // `routing.app_keys` stays valid: each is a known key naming an app.
    for (hash, app) in app_keys {
        if table.by_hash.contains_key(hash) {
            cx.err(format!("routing.app_keys.{hash}"), "this key is also listed under `keys:`; keep it in one place (move its app to the `keys:` entry)");
            continue;
        }
        let key = VirtualKey {
            name: format!("app-key-{}", &hash[..8]),
            hash: hash.clone(),
            app: Some(app.clone()),
            user: None,
            models: Vec::new(),
            model_globs: Vec::new(),
            routes: Vec::new(),
            expires_at: None,
            limits: RateAmounts::default(),
            source: KeySource::AppKeys,
            created_at: None,
            budgets: Vec::new(),
        };
        table.by_hash.insert(hash.clone(), Arc::new(key));
    }
    (table, budgets)
}

/// A key name: what admin URLs and the ledger carry.
pub fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// RFC 3339 or a bare date (midnight UTC), as Unix seconds.
pub fn expiry_of(t: &str) -> Option<i64> {
    if let Ok(ts) = t.parse::<jiff::Timestamp>() {
        return Some(ts.as_second());
    }
    let d: jiff::civil::Date = t.parse().ok()?;
    d.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp().as_second())
}

fn rate_amounts_check(cx: &mut Ctx, path: &str, a: &RateAmounts, given: bool) {
    if given && a.is_empty() {
        cx.err(path, "name a limit: rpm (requests per minute) and/or tpm (tokens per minute)");
    }
    for (f, v) in [("rpm", a.rpm), ("tpm", a.tpm)] {
        if v == Some(0) {
            cx.err(format!("{path}.{f}"), "must be greater than 0 (leave it out for no limit)");
        }
    }
}

/// `rate_limits:`.
pub(super) fn rate_limits_of(cx: &mut Ctx, raw: Vec<serde_yaml::Value>, keys: &KeyTable, models: &IndexMap<String, Model>) -> Vec<RateLimit> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for (i, v) in raw.into_iter().enumerate() {
        let path = format!("rate_limits[{i}]");
        let Some(r) = cx.section::<RawRateLimit>(&path, v) else { continue };
        let before = cx.errors.len();
        if r.name.trim().is_empty() {
            cx.err(format!("{path}.name"), "must not be empty");
        } else if !names.insert(r.name.clone()) {
            cx.err(format!("{path}.name"), format!("rate limit name `{}` is used twice; names must be unique", r.name));
        }
        let limits = RateAmounts { rpm: r.rpm, tpm: r.tpm };
        rate_amounts_check(cx, &path, &limits, true);
        let per = r.per.as_deref().and_then(|p| {
            Per::parse(p).or_else(|| {
                cx.err(format!("{path}.per"), format!("unknown `per: {p}`; expected key, app, user or model (one count per distinct value)"));
                None
            })
        });
        let scope = match r.scope {
            None => RateScope::default(),
            Some(super::super::raw::RawScope::Word(w)) if w == "global" => RateScope::default(),
            Some(super::super::raw::RawScope::Word(w)) => {
                cx.err(
                    format!("{path}.scope"),
                    format!("unknown scope `{w}`; write `global` or a mapping of key, app, user and/or model such as {{ app: billing }}"),
                );
                RateScope::default()
            }
            Some(super::super::raw::RawScope::Map(m)) => {
                if m.provider.is_some() || m.task.is_some() {
                    cx.err(format!("{path}.scope"), "a rate limit's scope names key, app, user and/or model (not provider or task)");
                }
                if let Some(k) = &m.key {
                    if !keys.by_hash.values().any(|x| &x.name == k) {
                        cx.err(format!("{path}.scope.key"), format!("no key named `{k}` in `keys:`"));
                    }
                }
                if let Some(model) = &m.model {
                    if !models.contains_key(model) {
                        let known: Vec<&str> = models.keys().map(String::as_str).collect();
                        cx.err(format!("{path}.scope.model"), format!("unknown model `{model}`; defined models: {}", known.join(", ")));
                    }
                }
                RateScope { key: m.key, app: m.app, user: m.user, model: m.model }
            }
        };
        let max_buckets = r.max_buckets.unwrap_or(DEFAULT_MAX_USERS);
        if max_buckets == 0 {
            cx.err(format!("{path}.max_buckets"), "must be at least 1");
        }
        if r.max_buckets.is_some() && per.is_none() {
            cx.err(format!("{path}.max_buckets"), "only applies with `per:` (one count per key, app, user or model)");
        }
        if cx.errors.len() == before {
            out.push(RateLimit { name: r.name, scope, per, limits, max_buckets });
        }
    }
    out
}
