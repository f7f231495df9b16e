//! The Gemini wire: `generateContent` and `streamGenerateContent` under
//! `/gemini/v1beta/...` (and `/gemini/v1/...`), routed on the model named
//! in the path.

use serde_json::{json, Value};

use super::wire::{Claim, Spec};
use super::{Api, Dialect, GatewayError, Incoming};
use crate::usage::{RawUsage, Usage, UsageCarrier};

pub(super) const SPEC: Spec = Spec {
    auth_header: "x-goog-api-key",
    auth_prefix: "",
    version_header: None,
    header_prefix: "x-goog-",
    gateway_prefix: "/gemini/v1beta",
    chat_endpoint: |model, stream| match stream {
        true => format!("/models/{model}:streamGenerateContent?alt=sse"),
        false => format!("/models/{model}:generateContent"),
    },
    health_path: |base| format!("{base}/models"),
    error_event_name: None,
    error_body,
    usage,
    is_terminal,
    claim,
};

/// A Gemini provider's `base_url` ends in `/v1beta`; `models/{model}:generateContent`
/// and `:streamGenerateContent` are routed on the model in the path.
fn claim(path: &str, query: Option<&str>) -> Claim {
    let Some(rest) = path.strip_prefix("/gemini") else { return Claim::No };
    let Some(rest) = rest.strip_prefix("/v1beta").or_else(|| rest.strip_prefix("/v1")).filter(|r| r.starts_with('/')) else { return Claim::Invalid };
    let generate = rest
        .strip_prefix("/models/")
        .and_then(|m| m.rsplit_once(':'))
        .filter(|(m, method)| !m.is_empty() && !m.contains('/') && matches!(*method, "generateContent" | "streamGenerateContent"));
    Claim::Yes(match generate {
        Some((model, method)) => Incoming {
            path_model: Some(model.to_string()),
            path_stream: method == "streamGenerateContent",
            ..Incoming::plain(Dialect::Gemini, Api::GenerateContent, &format!(":{method}"), query)
        },
        None => Incoming::plain(Dialect::Gemini, Api::Other, rest, query),
    })
}

fn error_body(e: &GatewayError) -> Value {
    json!({"error": {"code": e.status, "message": e.message, "status": e.kind.grpc_status()}})
}

/// `promptTokenCount` includes cached tokens; thoughts are billed as output.
fn usage(u: &RawUsage) -> Usage {
    let total = u.prompt_token_count.unwrap_or(0) + u.tool_use_prompt_token_count.unwrap_or(0);
    let cached = u.cached_content_token_count.unwrap_or(0).min(total);
    Usage { input: total - cached, cached_input: cached, cache_write: 0, output: u.candidates_token_count.unwrap_or(0) + u.thoughts_token_count.unwrap_or(0) }
}

/// A chunk whose candidate has a `finishReason` ends the answer.
fn is_terminal(c: &UsageCarrier) -> bool {
    c.candidates.iter().flatten().any(|c| c.finish_reason.is_some())
}
