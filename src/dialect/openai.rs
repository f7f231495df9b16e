//! The OpenAI wire (also OpenRouter, Ollama and every OpenAI-compatible
//! server): Chat Completions, Completions, Embeddings and the Responses API
//! under `/v1`.

use serde_json::{json, Value};

use super::wire::{Claim, Spec};
use super::{Api, Dialect, ErrorKind, GatewayError, Incoming};
use crate::usage::{RawUsage, Usage, UsageCarrier};

pub(super) const SPEC: Spec = Spec {
    auth_header: "authorization",
    auth_prefix: "Bearer ",
    version_header: None,
    header_prefix: "openai-",
    gateway_prefix: "/v1",
    chat_endpoint: |_, _| "/chat/completions".to_string(),
    health_path: |base| format!("{base}/models"),
    error_event_name: None,
    error_body,
    usage,
    is_terminal,
    claim,
};

/// `/v1/...` (the openai SDK's `base_url` ends in `/v1`, as an OpenAI-kind
/// provider's does), so `/v1/chat/completions` → `{base}/chat/completions`.
fn claim(path: &str, query: Option<&str>) -> Claim {
    let Some(rest) = path.strip_prefix("/v1").filter(|r| r.starts_with('/')) else { return Claim::No };
    let api = match rest {
        "/chat/completions" => Api::ChatCompletions,
        "/responses" => Api::Responses,
        "/completions" => Api::Completions,
        "/embeddings" => Api::Embeddings,
        _ => Api::Other,
    };
    Claim::Yes(Incoming::plain(Dialect::OpenAi, api, rest, query))
}

fn error_body(e: &GatewayError) -> Value {
    let ty = match e.kind {
        ErrorKind::InvalidRequest | ErrorKind::NotFound | ErrorKind::TooLarge => "invalid_request_error",
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::PermissionDenied => "permission_error",
        ErrorKind::RateLimited => "rate_limit_error",
        // OpenAI's own type for a spent quota.
        ErrorKind::BudgetExceeded => "insufficient_quota",
        ErrorKind::Upstream | ErrorKind::Timeout | ErrorKind::Internal | ErrorKind::Unavailable => "server_error",
    };
    json!({"error": {"message": e.message, "type": ty, "param": null, "code": e.code}})
}

/// `prompt_tokens` (Responses: `input_tokens`) includes cached tokens.
fn usage(u: &RawUsage) -> Usage {
    let total = u.prompt_tokens.or(u.input_tokens).unwrap_or(0);
    let cached = u.prompt_tokens_details.or(u.input_tokens_details).and_then(|d| d.cached_tokens).unwrap_or(0).min(total);
    Usage { input: total - cached, cached_input: cached, cache_write: 0, output: u.completion_tokens.or(u.output_tokens).unwrap_or(0) }
}

/// Chat streams end with `data: [DONE]` (seen by the splitter); Responses
/// streams with `response.completed` / `.incomplete` / `.failed`.
fn is_terminal(c: &UsageCarrier) -> bool {
    matches!(c.kind.as_deref(), Some("response.completed" | "response.incomplete" | "response.failed"))
}
