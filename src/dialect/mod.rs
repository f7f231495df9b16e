//! API dialects: which one a request speaks (from its path), what the
//! upstream path is, and how errors look to each client.
//!
//! A client is always answered in its own dialect: an OpenAI SDK gets
//! `{"error": {...}}`, an Anthropic SDK gets `{"type": "error", ...}`.

pub mod sse;

use std::fmt;

use bytes::Bytes;
use serde_json::json;

/// A wire dialect (and provider kind). OpenRouter and Ollama speak `OpenAi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    OpenAi = 0,
    Anthropic = 1,
}

impl Dialect {
    pub const COUNT: usize = 2;
    pub const ALL: [Dialect; Self::COUNT] = [Dialect::OpenAi, Dialect::Anthropic];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "openai" => Some(Self::OpenAi),
            "anthropic" => Some(Self::Anthropic),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The API a request calls. Those that carry a `model` field are routed;
/// `Other` passes through to the dialect's default provider unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    ChatCompletions,
    Responses,
    Completions,
    Embeddings,
    Messages,
    Other,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::ChatCompletions => "chat_completions",
            Api::Responses => "responses",
            Api::Completions => "completions",
            Api::Embeddings => "embeddings",
            Api::Messages => "messages",
            Api::Other => "other",
        }
    }

    /// Whether the body is a JSON object with a `model` to route on.
    pub fn is_model_call(self) -> bool {
        self != Api::Other
    }
}

/// Where a gateway request goes, derived from its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub dialect: Dialect,
    pub api: Api,
    /// Path to append to the provider's base path (query included).
    pub upstream_path: String,
}

/// Map a gateway path to its dialect and API.
///
/// - `/v1/...` is OpenAI (`base_url` of OpenAI-kind providers ends in `/v1`,
///   as the openai SDK's does), so `/v1/chat/completions` → `{base}/chat/completions`.
/// - `/anthropic/v1/...` and `/v1/messages...` are Anthropic (`base_url`
///   without `/v1`, as the anthropic SDK's), so the `/v1/...` part is kept.
pub fn classify_path(path: &str, query: Option<&str>) -> Option<Incoming> {
    let with_query = |p: &str| match query {
        Some(q) => format!("{p}?{q}"),
        None => p.to_string(),
    };
    let anthropic = |rest: &str| Incoming {
        dialect: Dialect::Anthropic,
        api: if rest == "/v1/messages" { Api::Messages } else { Api::Other },
        upstream_path: with_query(rest),
    };
    if let Some(rest) = path.strip_prefix("/anthropic") {
        if rest.starts_with("/v1/") {
            return Some(anthropic(rest));
        }
        return None;
    }
    if path == "/v1/messages" || path.starts_with("/v1/messages/") {
        return Some(anthropic(path));
    }
    let rest = path.strip_prefix("/v1").filter(|r| r.starts_with('/'))?;
    let api = match rest {
        "/chat/completions" => Api::ChatCompletions,
        "/responses" => Api::Responses,
        "/completions" => Api::Completions,
        "/embeddings" => Api::Embeddings,
        _ => Api::Other,
    };
    Some(Incoming { dialect: Dialect::OpenAi, api, upstream_path: with_query(rest) })
}

/// What went wrong, in terms both dialects can express.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    /// Refused by policy (e.g. local-only mode, a model the client may not pick).
    PermissionDenied,
    NotFound,
    TooLarge,
    RateLimited,
    /// A spend budget is used up (retrying before it resets does not help).
    BudgetExceeded,
    /// modelgate cannot serve right now (e.g. its budget store is away).
    Unavailable,
    Upstream,
    Timeout,
    Internal,
}

/// An error modelgate itself answers with (not one relayed from upstream).
#[derive(Debug, Clone)]
pub struct GatewayError {
    pub status: u16,
    pub kind: ErrorKind,
    /// Short machine-readable code, also the `reason` label in metrics.
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl GatewayError {
    pub fn new(status: u16, kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, kind, code, message: message.into(), retry_after: None }
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The error body in the client's dialect.
    pub fn body(&self, dialect: Dialect) -> Bytes {
        let v = match dialect {
            Dialect::OpenAi => {
                let ty = match self.kind {
                    ErrorKind::InvalidRequest | ErrorKind::NotFound | ErrorKind::TooLarge => "invalid_request_error",
                    ErrorKind::Authentication => "authentication_error",
                    ErrorKind::PermissionDenied => "permission_error",
                    ErrorKind::RateLimited => "rate_limit_error",
                    // OpenAI's own type for a spent quota.
                    ErrorKind::BudgetExceeded => "insufficient_quota",
                    ErrorKind::Upstream | ErrorKind::Timeout | ErrorKind::Internal | ErrorKind::Unavailable => "server_error",
                };
                json!({"error": {"message": self.message, "type": ty, "param": null, "code": self.code}})
            }
            Dialect::Anthropic => {
                let ty = match self.kind {
                    ErrorKind::InvalidRequest => "invalid_request_error",
                    ErrorKind::Authentication => "authentication_error",
                    ErrorKind::PermissionDenied => "permission_error",
                    ErrorKind::NotFound => "not_found_error",
                    ErrorKind::TooLarge => "request_too_large",
                    ErrorKind::RateLimited | ErrorKind::BudgetExceeded => "rate_limit_error",
                    ErrorKind::Timeout => "timeout_error",
                    ErrorKind::Upstream | ErrorKind::Internal | ErrorKind::Unavailable => "api_error",
                };
                json!({"type": "error", "error": {"type": ty, "message": self.message}})
            }
        };
        Bytes::from(v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_dialects() {
        let c = classify_path("/v1/chat/completions", None).unwrap();
        assert_eq!((c.dialect, c.api, c.upstream_path.as_str()), (Dialect::OpenAi, Api::ChatCompletions, "/chat/completions"));
        let c = classify_path("/anthropic/v1/messages", Some("beta=true")).unwrap();
        assert_eq!((c.dialect, c.api, c.upstream_path.as_str()), (Dialect::Anthropic, Api::Messages, "/v1/messages?beta=true"));
        let c = classify_path("/v1/messages", None).unwrap();
        assert_eq!((c.dialect, c.api), (Dialect::Anthropic, Api::Messages));
        let c = classify_path("/v1/models", None).unwrap();
        assert_eq!((c.dialect, c.api, c.upstream_path.as_str()), (Dialect::OpenAi, Api::Other, "/models"));
        assert!(classify_path("/v2/x", None).is_none());
        assert!(classify_path("/v1x", None).is_none());
    }

    #[test]
    fn errors_have_each_dialects_shape() {
        let e = GatewayError::new(413, ErrorKind::TooLarge, "body_too_large", "too big");
        let o: serde_json::Value = serde_json::from_slice(&e.body(Dialect::OpenAi)).unwrap();
        assert_eq!(o["error"]["message"], "too big");
        assert_eq!(o["error"]["code"], "body_too_large");
        let a: serde_json::Value = serde_json::from_slice(&e.body(Dialect::Anthropic)).unwrap();
        assert_eq!(a["type"], "error");
        assert_eq!(a["error"]["type"], "request_too_large");
    }
}
