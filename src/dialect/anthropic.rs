//! The Anthropic wire: the Messages API under `/anthropic/v1/...` (and
//! `/v1/messages`).

use serde_json::{json, Value};

use super::wire::{Claim, Spec};
use super::{Api, Dialect, ErrorKind, GatewayError, Incoming};
use crate::usage::{RawUsage, Usage, UsageCarrier};

pub(super) const SPEC: Spec = Spec {
    auth_header: "x-api-key",
    auth_prefix: "",
    version_header: Some(("anthropic-version", "2023-06-01")),
    header_prefix: "anthropic-",
    gateway_prefix: "/anthropic",
    chat_endpoint: |_, _| "/v1/messages".to_string(),
    health_path: |_| "/v1/models".to_string(),
    error_event_name: Some("error"),
    error_body,
    usage,
    is_terminal,
    claim,
};

/// `/anthropic/v1/...` and `/v1/messages...` (the anthropic SDK's `base_url`
/// has no `/v1`, so the `/v1/...` part is kept).
fn claim(path: &str, query: Option<&str>) -> Claim {
    let rest = match path.strip_prefix("/anthropic") {
        Some(rest) if rest.starts_with("/v1/") => rest,
        Some(_) => return Claim::Invalid,
        None if path == "/v1/messages" || path.starts_with("/v1/messages/") => path,
        None => return Claim::No,
    };
    let api = if rest == "/v1/messages" { Api::Messages } else { Api::Other };
    Claim::Yes(Incoming::plain(Dialect::Anthropic, api, rest, query))
}

fn error_body(e: &GatewayError) -> Value {
    let ty = match e.kind {
        ErrorKind::InvalidRequest => "invalid_request_error",
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::PermissionDenied => "permission_error",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::TooLarge => "request_too_large",
        ErrorKind::RateLimited | ErrorKind::BudgetExceeded => "rate_limit_error",
        ErrorKind::Timeout => "timeout_error",
        ErrorKind::Upstream | ErrorKind::Internal | ErrorKind::Unavailable => "api_error",
    };
    json!({"type": "error", "error": {"type": ty, "message": e.message}})
}

/// `input_tokens` excludes cache reads and writes.
fn usage(u: &RawUsage) -> Usage {
    Usage {
        input: u.input_tokens.unwrap_or(0),
        cached_input: u.cache_read_input_tokens.unwrap_or(0),
        cache_write: u.cache_creation_input_tokens.unwrap_or(0),
        output: u.output_tokens.unwrap_or(0),
    }
}

fn is_terminal(c: &UsageCarrier) -> bool {
    c.kind.as_deref() == Some("message_stop")
}
