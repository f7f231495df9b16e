//! Virtual keys: who a client is, from the key it sends.
//!
//! A key is only ever kept as its SHA-256 ([`hash_key`]); logs, reports
//! and the admin API name it by its name or hash prefix. Keys come from
//! the config (`keys:`, `routing.app_keys`, in the snapshot) and from the
//! admin API at runtime ([`KeyStore`]: `state_dir/keys.json`, and the
//! shared Redis when `budget_store` is one, so a fleet sees the same keys
//! and revocations). Authentication ([`authenticate`]) runs on the way in,
//! before the body is read and before any upstream call.
//!
//! It must not decide budgets or rate limits: it only says which key (if
//! any) a request carries.

mod store;

use std::sync::Arc;

use http::HeaderMap;
use sha2::{Digest, Sha256};

pub use store::{KeyStore, NewKey, Refresh};

use crate::config::{AuthMode, Snapshot, VirtualKey};
use crate::dialect::{ErrorKind, GatewayError};

/// How keys are named in config and storage: lowercase hex SHA-256.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The key a client sent: `Authorization: Bearer`, `x-api-key`
/// (Anthropic), `x-goog-api-key` or Gemini's `?key=`.
pub fn client_key<'h>(headers: &'h HeaderMap, query: Option<&'h str>) -> Option<&'h str> {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    h("authorization")
        .map(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).unwrap_or(v).trim())
        .or_else(|| h("x-api-key"))
        .or_else(|| h("x-goog-api-key"))
        .or_else(|| query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("key="))).filter(|k| !k.is_empty()))
}

/// `path?query` without its `key=` parameter (Gemini's API key in the
/// query), or `None` when it has none.
pub fn without_query_key(path: &str) -> Option<String> {
    let (p, q) = path.split_once('?')?;
    if !q.split('&').any(|kv| kv.starts_with("key=")) {
        return None;
    }
    let rest: Vec<&str> = q.split('&').filter(|kv| !kv.starts_with("key=")).collect();
    Some(if rest.is_empty() { p.to_string() } else { format!("{p}?{}", rest.join("&")) })
}

fn unauthorized(message: String) -> GatewayError {
    GatewayError::new(401, ErrorKind::Authentication, "invalid_api_key", message)
}

/// The virtual key a request carries. In `known_keys` mode a missing,
/// unknown, expired or revoked key is an error (401); in `open` mode the
/// request goes on without one. Nothing is hashed when no key is known at
/// all in open mode.
pub fn authenticate(snap: &Snapshot, store: &KeyStore, headers: &HeaderMap, query: Option<&str>) -> Result<Option<Arc<VirtualKey>>, GatewayError> {
    let known_keys = snap.auth == AuthMode::KnownKeys;
    if !known_keys && snap.keys.by_hash.is_empty() && store.is_empty() {
        return Ok(None);
    }
    let Some(key) = client_key(headers, query) else {
        return match known_keys {
            true => Err(rejected("missing", unauthorized(
                "this modelgate accepts known API keys only (auth.mode: known_keys) and the request carries none; send the virtual key your operator gave you as the SDK's API key".into(),
            ))),
            false => Ok(None),
        };
    };
    let hash = hash_key(key);
    let found = store.lookup(&hash).or_else(|| snap.keys.by_hash.get(&hash).cloned());
    let revoked = store.is_revoked(&hash);
    let now = jiff::Timestamp::now().as_second();
    match found {
        Some(k) if revoked => refuse(known_keys, "revoked", format!("the API key `{}…` (key `{}`) has been revoked; ask your operator for a new one", &hash[..8], k.name)),
        Some(k) if k.expired(now) => refuse(known_keys, "expired", format!("the API key `{}…` (key `{}`) has expired; ask your operator for a new one", &hash[..8], k.name)),
        Some(k) => Ok(Some(k)),
        None if known_keys => Err(rejected("unknown", unauthorized(format!(
            "the API key `{}…` (SHA-256 prefix) is not known to this modelgate (auth.mode: known_keys); use a key listed in its `keys:` config or created with POST /admin/keys",
            &hash[..8]
        )))),
        None => Ok(None),
    }
}

/// A revoked or expired key: refused in `known_keys` mode; in open mode it
/// is simply not a virtual key any more (the request goes on as unkeyed).
fn refuse(known_keys: bool, reason: &'static str, message: String) -> Result<Option<Arc<VirtualKey>>, GatewayError> {
    match known_keys {
        true => Err(rejected(reason, unauthorized(message))),
        false => Ok(None),
    }
}

fn rejected(reason: &'static str, e: GatewayError) -> GatewayError {
    crate::metrics::auth_rejected(reason);
    e
}

/// A request's key may not ask for `model` or be served by `route`: 403.
pub fn check_model(key: &VirtualKey, model: Option<&str>) -> Result<(), GatewayError> {
    if key.allows_model(model) {
        return Ok(());
    }
    crate::metrics::auth_rejected("model");
    Err(GatewayError::new(
        403,
        ErrorKind::PermissionDenied,
        "model_not_allowed",
        format!("the API key `{}` may not use model `{}`; it allows: {}", key.name, model.unwrap_or("(none)"), key.models.join(", ")),
    ))
}

pub fn check_route(key: &VirtualKey, route: &str) -> Result<(), GatewayError> {
    if key.allows_route(route) {
        return Ok(());
    }
    crate::metrics::auth_rejected("route");
    Err(GatewayError::new(
        403,
        ErrorKind::PermissionDenied,
        "route_not_allowed",
        format!("the API key `{}` may not use route `{route}`; it allows routes: {}", key.name, key.routes.join(", ")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_in_every_dialect_header() {
        let mut h = HeaderMap::new();
        assert_eq!(client_key(&h, Some("alt=sse&key=g-1")), Some("g-1"));
        h.insert("x-goog-api-key", "g-2".parse().unwrap());
        assert_eq!(client_key(&h, None), Some("g-2"));
        h.insert("x-api-key", "a-1".parse().unwrap());
        assert_eq!(client_key(&h, None), Some("a-1"));
        h.insert("authorization", "Bearer o-1".parse().unwrap());
        assert_eq!(client_key(&h, None), Some("o-1"));
        assert_eq!(hash_key("test"), "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
        assert_eq!(without_query_key(":streamGenerateContent?alt=sse&key=mg-1").as_deref(), Some(":streamGenerateContent?alt=sse"));
        assert_eq!(without_query_key(":generateContent?key=mg-1").as_deref(), Some(":generateContent"));
        assert_eq!(without_query_key(":generateContent?alt=sse"), None);
    }
}
