//! Bounds on what a client, a provider or a shutdown can make modelgate
//! hold: `limits:` (body shapes and answer sizes), `client_timeouts:` (how
//! long a client may take to send a request or idle between requests),
//! `shutdown_grace_s`, the pass-through allow-list and whether a client's
//! key may travel to another provider.

use std::time::Duration;

use serde::Deserialize;
use wildmatch::WildMatch;

use super::validate::Ctx;

/// `limits:`.
#[derive(Debug, Clone)]
pub struct SizeLimits {
    /// JSON nesting deeper than this is refused before any upstream call.
    pub max_json_depth: usize,
    /// Largest whole (non-streamed) upstream answer read into memory.
    pub max_answer_bytes: usize,
    /// Largest single server-sent event from a provider.
    pub max_event_bytes: usize,
}

pub const DEFAULT_MAX_JSON_DEPTH: usize = 256;
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;
pub const DEFAULT_MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

impl Default for SizeLimits {
    fn default() -> Self {
        SizeLimits { max_json_depth: DEFAULT_MAX_JSON_DEPTH, max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES, max_event_bytes: DEFAULT_MAX_EVENT_BYTES }
    }
}

/// `client_timeouts:` — the gateway's side of a client connection (nginx's
/// client_header_timeout, client_body_timeout and keepalive_timeout).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientTimeouts {
    /// From a request's first byte (or a new connection) to the end of its header.
    pub header: Duration,
    /// Longest pause between two pieces of a request body.
    pub body_idle: Duration,
    /// Longest time to receive a whole request body.
    pub body_total: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub keepalive: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        ClientTimeouts {
            header: Duration::from_secs(60),
            body_idle: Duration::from_secs(60),
            body_total: Duration::from_secs(300),
            keepalive: Duration::from_secs(75),
        }
    }
}

pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// One `allow_passthrough` entry: `METHOD /gateway/path` with `*` wildcards.
#[derive(Debug, Clone)]
pub struct PassRule {
    method: String,
    path: WildMatch,
}

impl PassRule {
    pub fn parse(s: &str) -> Result<PassRule, String> {
        let (method, path) = s.trim().split_once(' ').ok_or_else(|| format!("`{s}`: write it as `METHOD /path`, e.g. `GET /v1/fine_tuning/jobs*`"))?;
        let method = method.trim().to_ascii_uppercase();
        let path = path.trim();
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic() || b == b'*') {
            return Err(format!("`{s}`: `{method}` is not an HTTP method"));
        }
        if !path.starts_with('/') {
            return Err(format!("`{s}`: the path must start with `/` (the gateway path, e.g. /v1/…, /anthropic/v1/…, /gemini/v1beta/…)"));
        }
        Ok(PassRule { method, path: WildMatch::new(path) })
    }

    pub fn allows(&self, method: &str, path: &str) -> bool {
        (self.method == "*" || self.method == method) && self.path.matches(path)
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    max_json_depth: Option<usize>,
    max_answer_bytes: Option<usize>,
    max_event_bytes: Option<usize>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClientTimeouts {
    header_ms: Option<u64>,
    body_idle_ms: Option<u64>,
    body_total_ms: Option<u64>,
    keepalive_ms: Option<u64>,
}

pub(super) fn limits_of(cx: &mut Ctx, raw: RawLimits) -> SizeLimits {
    let d = SizeLimits::default();
    let mut positive = |key: &str, v: Option<usize>, default: usize| match v {
        Some(0) => {
            cx.err(format!("limits.{key}"), "must be greater than 0");
            default
        }
        Some(n) => n,
        None => default,
    };
    SizeLimits {
        max_json_depth: positive("max_json_depth", raw.max_json_depth, d.max_json_depth),
        max_answer_bytes: positive("max_answer_bytes", raw.max_answer_bytes, d.max_answer_bytes),
        max_event_bytes: positive("max_event_bytes", raw.max_event_bytes, d.max_event_bytes),
    }
}

pub(super) fn client_timeouts_of(cx: &mut Ctx, raw: RawClientTimeouts) -> ClientTimeouts {
    let d = ClientTimeouts::default();
    let mut ms = |key: &str, v: Option<u64>, default: Duration| match v {
        Some(0) => {
            cx.err(format!("client_timeouts.{key}"), "must be greater than 0 (milliseconds)");
            default
        }
        Some(n) => Duration::from_millis(n),
        None => default,
    };
    let t = ClientTimeouts {
        header: ms("header_ms", raw.header_ms, d.header),
        body_idle: ms("body_idle_ms", raw.body_idle_ms, d.body_idle),
        body_total: ms("body_total_ms", raw.body_total_ms, d.body_total),
        keepalive: ms("keepalive_ms", raw.keepalive_ms, d.keepalive),
    };
    if t.keepalive < Duration::from_secs(1) {
        cx.err("client_timeouts.keepalive_ms", "must be at least 1000 (kept-alive connections are timed in whole seconds)");
    }
    t
}

pub(super) fn passthrough_of(cx: &mut Ctx, raw: Vec<String>) -> Vec<PassRule> {
    let mut rules = Vec::new();
    for (i, s) in raw.iter().enumerate() {
        match PassRule::parse(s) {
            Ok(r) => rules.push(r),
            Err(e) => cx.err(format!("allow_passthrough[{i}]"), e),
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_rules() {
        let r = PassRule::parse("get /v1/fine_tuning/jobs*").unwrap();
        assert!(r.allows("GET", "/v1/fine_tuning/jobs/ft-1"));
        assert!(!r.allows("POST", "/v1/fine_tuning/jobs"));
        assert!(PassRule::parse("* /v1/x").unwrap().allows("DELETE", "/v1/x"));
        assert!(PassRule::parse("/v1/x").is_err());
        assert!(PassRule::parse("GET v1/x").is_err());
    }
}
