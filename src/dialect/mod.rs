//! API dialects: which one a request speaks (from its path), what the
//! upstream path is, and how errors look to each client.
//!
//! A client is always answered in its own dialect: an OpenAI SDK gets
//! `{"error": {...}}`, an Anthropic SDK gets `{"type": "error", ...}`.

mod anthropic;
mod gemini;
mod openai;
pub mod sse;
pub mod wire;

use std::fmt;

use bytes::Bytes;

pub use wire::classify_path;

/// A wire dialect (and provider kind). OpenRouter and Ollama speak `OpenAi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    OpenAi = 0,
    Anthropic = 1,
    Gemini = 2,
}

impl Dialect {
    pub const COUNT: usize = 3;
    pub const ALL: [Dialect; Self::COUNT] = [Dialect::OpenAi, Dialect::Anthropic, Dialect::Gemini];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "openai" => Some(Self::OpenAi),
            "anthropic" => Some(Self::Anthropic),
            "gemini" => Some(Self::Gemini),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
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
    /// Gemini `generateContent` / `streamGenerateContent` (model in the path).
    GenerateContent,
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
            Api::GenerateContent => "generate_content",
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
    /// Path to append to the provider's base path (query included). For
    /// Gemini's generate calls only the part after the model (`:method?query`).
    pub upstream_path: String,
    /// The model named in the path (Gemini).
    pub path_model: Option<String>,
    /// The path asks for a stream (Gemini `streamGenerateContent`).
    pub path_stream: bool,
    /// Transparent mode: the provider whose host the client called (serves
    /// requests no route takes).
    pub provider: Option<usize>,
}

impl Incoming {
    /// A request to `rest` (under the provider's base path) with the client's query.
    pub(crate) fn plain(dialect: Dialect, api: Api, rest: &str, query: Option<&str>) -> Incoming {
        let upstream_path = match query {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_string(),
        };
        Incoming { dialect, api, upstream_path, path_model: None, path_stream: false, provider: None }
    }

    /// The path under the provider's base path for an attempt at `model`
    /// (its upstream id): Gemini generate calls name the model in the path.
    pub fn upstream_path_for(&self, model: Option<&str>) -> String {
        match (self.api, model.or(self.path_model.as_deref())) {
            (Api::GenerateContent, Some(m)) => format!("/models/{m}{}", self.upstream_path),
            _ => self.upstream_path.clone(),
        }
    }

    /// A Gemini stream without `alt=sse` answers one JSON array, not events.
    pub fn gemini_array_stream(&self) -> bool {
        self.api == Api::GenerateContent && self.path_stream && !self.upstream_path.contains("alt=sse")
    }
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

impl ErrorKind {
    /// Google's canonical status name (Gemini error bodies).
    pub fn grpc_status(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest | ErrorKind::TooLarge => "INVALID_ARGUMENT",
            ErrorKind::Authentication => "UNAUTHENTICATED",
            ErrorKind::PermissionDenied => "PERMISSION_DENIED",
            ErrorKind::NotFound => "NOT_FOUND",
            ErrorKind::RateLimited | ErrorKind::BudgetExceeded => "RESOURCE_EXHAUSTED",
            ErrorKind::Unavailable | ErrorKind::Upstream => "UNAVAILABLE",
            ErrorKind::Timeout => "DEADLINE_EXCEEDED",
            ErrorKind::Internal => "INTERNAL",
        }
    }
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
    /// Answer in this dialect, whatever the request's path said (a path
    /// modelgate does not serve, but whose SDK is known).
    pub dialect: Option<Dialect>,
}

impl GatewayError {
    pub fn new(status: u16, kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, kind, code, message: message.into(), retry_after: None, dialect: None }
    }

    /// Written in `dialect`'s error shape.
    pub fn in_dialect(mut self, dialect: Dialect) -> Self {
        self.dialect = Some(dialect);
        self
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The error body in the client's dialect.
    pub fn body(&self, dialect: Dialect) -> Bytes {
        Bytes::from(self.dialect.unwrap_or(dialect).spec().error_body(self).to_string())
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
        let c = classify_path("/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent", Some("alt=sse")).unwrap();
        assert_eq!((c.dialect, c.api, c.path_model.as_deref(), c.path_stream), (Dialect::Gemini, Api::GenerateContent, Some("gemini-2.5-flash"), true));
        assert_eq!(c.upstream_path_for(Some("gemini-2.0-flash")), "/models/gemini-2.0-flash:streamGenerateContent?alt=sse");
        assert!(!c.gemini_array_stream());
        let c = classify_path("/gemini/v1beta/models/gemini-2.5-flash:countTokens", None).unwrap();
        assert_eq!((c.api, c.upstream_path_for(Some("x")).as_str()), (Api::Other, "/models/gemini-2.5-flash:countTokens"));
        assert!(classify_path("/gemini/v2/models", None).is_none());
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
