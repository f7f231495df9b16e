//! What a cache key is made of, and which requests may have one.
//!
//! The key is a SHA-256 over a canonical form of everything that changes
//! the answer: the client's dialect, API and path (query included), the
//! scope (app and client key, unless `scope: global`), the configured key
//! headers, and the request body as a JSON value — object keys sorted,
//! whitespace and string escapes gone, `1.0` and `1` the same number —
//! with nothing stripped (`stream`, sampling fields, tools, system,
//! messages, the requested model: all in). Per attempt the served model
//! (name, upstream id, provider and its endpoint) and the route are added
//! ([`attempt_key`]).
//!
//! A body with an object key given twice at any depth has no canonical
//! form (parsers disagree on which copy wins) and bypasses the cache.

use http::HeaderMap;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use sha2::{Digest, Sha256};

use crate::body::JsonBody;
use crate::config::{CachePolicy, CacheScope, Provider};
use crate::dialect::wire::AUTH_HEADERS;
use crate::dialect::{Api, Incoming};
use crate::policy::Attempt;

pub type Key = [u8; 32];

/// Why a request does not use the cache (the `reason` label).
pub type Reason = &'static str;

/// A JSON value in canonical form: numbers as normalised text, objects as
/// key-sorted lists.
enum Canon {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<Canon>),
    Obj(Vec<(String, Canon)>),
}

impl<'de> Deserialize<'de> for Canon {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Canon;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<Canon, E> {
                Ok(Canon::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Canon, E> {
                Ok(Canon::Bool(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Canon, E> {
                Ok(Canon::Num(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Canon, E> {
                Ok(Canon::Num(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Canon, E> {
                Ok(Canon::Num(number(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Canon, E> {
                Ok(Canon::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Canon, E> {
                Ok(Canon::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Canon, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(4));
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                Ok(Canon::Arr(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Canon, A::Error> {
                let mut out: Vec<(String, Canon)> = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some(k) = map.next_key::<String>()? {
                    out.push((k, map.next_value()?));
                }
                out.sort_by(|a, b| a.0.cmp(&b.0));
                if out.windows(2).any(|w| w[0].0 == w[1].0) {
                    return Err(serde::de::Error::custom(DUP_KEY));
                }
                Ok(Canon::Obj(out))
            }
        }
        d.deserialize_any(V)
    }
}

const DUP_KEY: &str = "modelgate-cache: duplicate key";

/// A float's canonical text: integral values as integers (`1.0` is `1`),
/// others in Rust's shortest round-trip form.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

impl Canon {
    /// Feed the value to `h`, length-prefixed so no two values share a form.
    fn hash(&self, h: &mut Sha256) {
        match self {
            Canon::Null => h.update(b"n"),
            Canon::Bool(b) => h.update(if *b { b"t" } else { b"f" }),
            Canon::Num(n) => {
                h.update(b"#");
                lp(h, n.as_bytes());
            }
            Canon::Str(s) => {
                h.update(b"s");
                lp(h, s.as_bytes());
            }
            Canon::Arr(a) => {
                h.update(b"[");
                h.update((a.len() as u64).to_le_bytes());
                a.iter().for_each(|v| v.hash(h));
            }
            Canon::Obj(m) => {
                h.update(b"{");
                h.update((m.len() as u64).to_le_bytes());
                for (k, v) in m {
                    lp(h, k.as_bytes());
                    v.hash(h);
                }
            }
        }
    }
}

/// Length-prefixed bytes.
fn lp(h: &mut Sha256, b: &[u8]) {
    h.update((b.len() as u64).to_le_bytes());
    h.update(b);
}

/// The body's canonical digest, or why it has none.
fn body_digest(body: &[u8], h: &mut Sha256) -> Result<(), Reason> {
    match serde_json::from_slice::<Canon>(body) {
        Ok(c) => {
            c.hash(h);
            Ok(())
        }
        Err(e) if e.to_string().starts_with(DUP_KEY) => Err("duplicate_key"),
        Err(_) => Err("unreadable_body"),
    }
}

/// `Cache-Control` directives a client sent that concern us.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ClientControl {
    /// `no-store`: neither served from nor kept in the cache.
    pub no_store: bool,
    /// `no-cache`: not served from the cache; the fresh answer is kept.
    pub no_cache: bool,
}

pub fn client_control(headers: &HeaderMap) -> ClientControl {
    let mut c = ClientControl::default();
    for v in headers.get_all(http::header::CACHE_CONTROL).iter().filter_map(|v| v.to_str().ok()) {
        for d in v.split(',').map(|d| d.trim().split('=').next().unwrap_or("").trim()) {
            if d.eq_ignore_ascii_case("no-store") {
                c.no_store = true;
            } else if d.eq_ignore_ascii_case("no-cache") {
                c.no_cache = true;
            }
        }
    }
    c
}

/// The sampling fields that decide whether an answer may be reused.
#[derive(Debug, Default, serde::Deserialize)]
struct Sampling {
    temperature: Option<f64>,
    seed: Option<serde::de::IgnoredAny>,
    #[serde(rename = "candidateCount")]
    candidate_count: Option<u64>,
}

fn field<T: serde::de::DeserializeOwned>(j: &JsonBody, key: &str) -> Option<T> {
    j.field(key).and_then(|r| serde_json::from_str::<Option<T>>(r.get()).ok().flatten())
}

/// Whether a request may be answered from (and kept in) the cache under
/// `policy`: `n` > 1 (several choices) never; embeddings always (they
/// have no sampling); otherwise a seed, or a temperature of at most
/// `min_temperature_cacheable` (a request without one counts as 1.0, the
/// providers' default).
pub fn cacheable(incoming: &Incoming, j: &JsonBody, policy: &CachePolicy) -> Result<(), Reason> {
    if matches!(field::<serde_json::Value>(j, "background"), Some(serde_json::Value::Bool(true))) {
        return Err("background");
    }
    if field::<f64>(j, "n").is_some_and(|n| n > 1.0) || field::<f64>(j, "best_of").is_some_and(|n| n > 1.0) {
        return Err("n");
    }
    let gen: Sampling = field(j, "generationConfig").unwrap_or_default();
    if gen.candidate_count.is_some_and(|n| n > 1) {
        return Err("n");
    }
    if incoming.api == Api::Embeddings {
        return Ok(());
    }
    let seeded = j.field("seed").is_some_and(|s| s.get().trim() != "null") || gen.seed.is_some();
    let temperature = field::<f64>(j, "temperature").or(gen.temperature).unwrap_or(1.0);
    if seeded || temperature <= policy.max_temperature {
        Ok(())
    } else {
        Err("temperature")
    }
}

/// The request's digest: everything but the served model and route.
pub fn request_digest(incoming: &Incoming, headers: &HeaderMap, app: &str, body: &[u8], policy: &CachePolicy) -> Result<Key, Reason> {
    let mut h = Sha256::new();
    h.update(b"modelgate-cache-v1\0");
    lp(&mut h, incoming.dialect.as_str().as_bytes());
    lp(&mut h, incoming.api.as_str().as_bytes());
    lp(&mut h, incoming.upstream_path.as_bytes());
    lp(&mut h, incoming.path_model.as_deref().unwrap_or("").as_bytes());
    match policy.scope {
        CacheScope::Global => h.update(b"G"),
        CacheScope::App => {
            h.update(b"A");
            lp(&mut h, app.as_bytes());
            // The client's own key: entries are never shared across keys.
            for name in AUTH_HEADERS {
                values(&mut h, headers, name);
            }
        }
    }
    h.update(b"H");
    for name in &policy.key_headers {
        values(&mut h, headers, name.as_str());
    }
    h.update(b"B");
    body_digest(body, &mut h)?;
    Ok(h.finalize().into())
}

/// A header's values (absent and empty differ).
fn values(h: &mut Sha256, headers: &HeaderMap, name: &str) {
    lp(h, name.as_bytes());
    let all = headers.get_all(name);
    h.update((all.iter().count() as u64).to_le_bytes());
    for v in all {
        lp(h, v.as_bytes());
    }
}

/// The key of one attempt: the request's digest, the route, and the model
/// that serves it as the provider sees it.
pub fn attempt_key(digest: &Key, route: &str, a: &Attempt<'_>, p: &Provider) -> Key {
    let mut h = Sha256::new();
    h.update(digest);
    lp(&mut h, route.as_bytes());
    lp(&mut h, p.name.as_bytes());
    lp(&mut h, p.kind.as_str().as_bytes());
    lp(&mut h, p.endpoint.authority.as_bytes());
    lp(&mut h, p.endpoint.base_path.as_bytes());
    lp(&mut h, a.model_label().as_bytes());
    match a.model {
        Some(m) => {
            lp(&mut h, m.id.as_bytes());
            // (A translated request takes max_tokens from it.)
            h.update(m.max_output_tokens.unwrap_or(0).to_le_bytes());
        }
        None => h.update(b"-"),
    }
    h.update([a.as_requested as u8]);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(body: &str) -> Result<Key, Reason> {
        let mut h = Sha256::new();
        body_digest(body.as_bytes(), &mut h).map(|()| h.finalize().into())
    }

    #[test]
    fn the_canonical_form_ignores_key_order_whitespace_escapes_and_number_spelling() {
        let a = digest(r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"Hi A"}]}"#).unwrap();
        let b = digest("{ \"messages\" : [ {\"content\":\"Hi \\u0041\", \"role\":\"user\"} ],\n \"temperature\": 0.0, \"model\": \"m\" }").unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn every_byte_that_changes_the_meaning_changes_the_digest() {
        let base = r#"{"model":"m","temperature":0,"max_tokens":5,"messages":[{"role":"user","content":"Hi"}]}"#;
        let d = digest(base).unwrap();
        for other in [
            r#"{"model":"m","temperature":0,"max_tokens":6,"messages":[{"role":"user","content":"Hi"}]}"#,
            r#"{"model":"m","temperature":0.5,"max_tokens":5,"messages":[{"role":"user","content":"Hi"}]}"#,
            r#"{"model":"m","temperature":0,"max_tokens":5,"messages":[{"role":"user","content":"Hi!"}]}"#,
            r#"{"model":"n","temperature":0,"max_tokens":5,"messages":[{"role":"user","content":"Hi"}]}"#,
            r#"{"model":"m","temperature":0,"max_tokens":5,"stream":true,"messages":[{"role":"user","content":"Hi"}]}"#,
            r#"{"model":"m","temperature":0,"max_tokens":"5","messages":[{"role":"user","content":"Hi"}]}"#,
            r#"{"model":"m","temperature":0,"max_tokens":5,"messages":[{"role":"user","content":"Hi"}],"tools":[]}"#,
            r#"{"model":"m","temperature":0,"max_tokens":5,"messages":[{"role":"user","content":"Hi"},{"role":"user","content":""}]}"#,
        ] {
            assert_ne!(digest(other).unwrap(), d, "{other}");
        }
        // Strings and keys are length-prefixed: moving a byte across a boundary changes it.
        assert_ne!(digest(r#"{"a":"bc"}"#).unwrap(), digest(r#"{"ab":"c"}"#).unwrap());
        assert_ne!(digest(r#"[["a"],"b"]"#).unwrap(), digest(r#"[["a","b"]]"#).unwrap());
    }

    #[test]
    fn a_repeated_key_at_any_depth_has_no_key() {
        assert_eq!(digest(r#"{"a":{"x":1,"x":2}}"#), Err("duplicate_key"));
        assert_eq!(digest("{"), Err("unreadable_body"));
    }

    #[test]
    fn cache_control_directives_are_read_in_any_case() {
        let mut h = HeaderMap::new();
        h.insert(http::header::CACHE_CONTROL, "max-age=0, No-Cache".parse().unwrap());
        assert_eq!(client_control(&h), ClientControl { no_store: false, no_cache: true });
        h.append(http::header::CACHE_CONTROL, "no-store".parse().unwrap());
        assert!(client_control(&h).no_store);
    }

    #[test]
    fn temperature_seed_and_n_decide_what_may_be_cached() {
        let policy = CachePolicy { ttl: std::time::Duration::from_secs(1), scope: CacheScope::App, key_headers: vec![], max_temperature: 0.0 };
        let chat = crate::dialect::classify_path("/v1/chat/completions", None).unwrap();
        let check = |body: &str, p: &CachePolicy| cacheable(&chat, &JsonBody::parse(bytes::Bytes::from(body.to_string())).unwrap(), p);
        assert_eq!(check(r#"{"temperature":0}"#, &policy), Ok(()));
        assert_eq!(check(r#"{"temperature":0.7}"#, &policy), Err("temperature"));
        assert_eq!(check(r#"{}"#, &policy), Err("temperature"));
        assert_eq!(check(r#"{"temperature":0.7,"seed":7}"#, &policy), Ok(()));
        assert_eq!(check(r#"{"temperature":0,"n":2}"#, &policy), Err("n"));
        assert_eq!(check(r#"{"generationConfig":{"temperature":0}}"#, &policy), Ok(()));
        assert_eq!(check(r#"{"generationConfig":{"temperature":0,"candidateCount":2}}"#, &policy), Err("n"));
        let warm = CachePolicy { max_temperature: 1.0, ..policy.clone() };
        assert_eq!(check(r#"{}"#, &warm), Ok(()));
        assert_eq!(check(r#"{"temperature":1.2}"#, &warm), Err("temperature"));
        let emb = crate::dialect::classify_path("/v1/embeddings", None).unwrap();
        assert_eq!(cacheable(&emb, &JsonBody::parse(bytes::Bytes::from_static(b"{\"input\":\"x\"}")).unwrap(), &policy), Ok(()));
    }
}
