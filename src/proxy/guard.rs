//! What a request must look like before anything of it reaches a provider:
//! a plain path (no dot-segments, no encoded separators), a model name a
//! provider path can carry, and — for requests modelgate does not
//! understand — an endpoint on the pass-through allow-list.

use std::sync::OnceLock;

use crate::config::{PassRule, Snapshot};
use crate::dialect::{ErrorKind, GatewayError};

fn bad(message: String) -> GatewayError {
    GatewayError::new(400, ErrorKind::InvalidRequest, "invalid_path", message)
}

/// A path is passed on only in its plain form: no `.`/`..` segments, no
/// empty segments, no backslashes and no percent-encoded `/`, `\` or `.`,
/// which a provider (or a proxy in front of it) could decode into a
/// different path than the one modelgate checked.
pub fn check_path(path: &str) -> Result<(), GatewayError> {
    let lower = path.to_ascii_lowercase();
    for enc in ["%2f", "%5c", "%2e"] {
        if lower.contains(enc) {
            return Err(bad(format!("the path `{path}` contains an encoded `/`, `\\` or `.` ({enc}); send the plain path")));
        }
    }
    if path.contains('\\') || path.bytes().any(|b| b.is_ascii_control()) {
        return Err(bad(format!("the path `{}` contains a backslash or a control character", path.escape_debug())));
    }
    if path.split('/').skip(1).any(|seg| seg == "." || seg == "..") {
        return Err(bad(format!("the path `{path}` contains a `.` or `..` segment; send the plain path")));
    }
    Ok(())
}

/// A model named in a path (Gemini `models/{model}:generateContent`):
/// letters, digits, `.`, `_`, `-` (and `/` between such parts, for tuned
/// models), never `..`.
pub fn check_path_model(model: &str) -> Result<(), GatewayError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let parts_ok = model.split('/').all(|p| !p.is_empty() && p != "." && p != ".." && p.chars().all(ok_char));
    if model.is_empty() || model.contains("..") || !parts_ok {
        return Err(GatewayError::new(
            400,
            ErrorKind::InvalidRequest,
            "invalid_model",
            format!("the model `{}` in the path may only contain letters, digits, `.`, `_` and `-`", model.escape_debug()),
        ));
    }
    Ok(())
}

/// Endpoints each dialect passes through without a route (gateway paths;
/// `*` matches anything). `allow_passthrough` in the config adds more.
const BUILT_IN: &[&str] = &[
    // OpenAI (and OpenAI-compatible providers).
    "GET /v1/models",
    "GET /v1/models/*",
    "POST /v1/moderations",
    "GET /v1/responses/*",
    "DELETE /v1/responses/*",
    "POST /v1/responses/*/cancel",
    "POST /v1/responses/input_tokens",
    "POST /v1/audio/speech",
    "POST /v1/audio/transcriptions",
    "POST /v1/audio/translations",
    "POST /v1/images/generations",
    "POST /v1/images/edits",
    "POST /v1/images/variations",
    "GET /v1/files",
    "POST /v1/files",
    "GET /v1/files/*",
    "DELETE /v1/files/*",
    "GET /v1/batches",
    "POST /v1/batches",
    "GET /v1/batches/*",
    "POST /v1/batches/*/cancel",
    // Anthropic (`/anthropic/v1/…` and the bare `/v1/messages/…`).
    "POST /anthropic/v1/messages/count_tokens",
    "POST /v1/messages/count_tokens",
    "GET /anthropic/v1/models",
    "GET /anthropic/v1/models/*",
    "POST /anthropic/v1/messages/batches",
    "GET /anthropic/v1/messages/batches",
    "GET /anthropic/v1/messages/batches/*",
    "POST /anthropic/v1/messages/batches/*/cancel",
    "DELETE /anthropic/v1/messages/batches/*",
    "POST /v1/messages/batches",
    "GET /v1/messages/batches",
    "GET /v1/messages/batches/*",
    "POST /v1/messages/batches/*/cancel",
    "DELETE /v1/messages/batches/*",
    // Gemini.
    "GET /gemini/v1beta/models",
    "GET /gemini/v1beta/models/*",
    "POST /gemini/v1beta/models/*:countTokens",
    "POST /gemini/v1beta/models/*:embedContent",
    "POST /gemini/v1beta/models/*:batchEmbedContents",
    "GET /gemini/v1/models",
    "GET /gemini/v1/models/*",
    "POST /gemini/v1/models/*:countTokens",
    "POST /gemini/v1/models/*:embedContent",
    "POST /gemini/v1/models/*:batchEmbedContents",
];

fn built_in() -> &'static [PassRule] {
    static RULES: OnceLock<Vec<PassRule>> = OnceLock::new();
    RULES.get_or_init(|| BUILT_IN.iter().filter_map(|r| PassRule::parse(r).ok()).collect())
}

/// A request for an endpoint modelgate does not route (no model call) is
/// passed through only when the built-in list or `allow_passthrough` names it.
pub fn check_passthrough(snap: &Snapshot, method: &str, path: &str) -> Result<(), GatewayError> {
    if built_in().iter().chain(&snap.allow_passthrough).any(|r| r.allows(method, path)) {
        return Ok(());
    }
    Err(GatewayError::new(404, ErrorKind::NotFound, "endpoint_not_allowed", format!(
        "modelgate does not pass `{method} {path}` through to providers; if your app needs it, add \"{method} {path}\" (wildcards allowed) to allow_passthrough in modelgate's config"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        for p in ["/v1/chat/completions", "/gemini/v1beta/models/gemini-2.5-flash:generateContent", "/v1/files/file-abc/content"] {
            assert!(check_path(p).is_ok(), "{p}");
        }
        for p in ["/v1/../admin", "/v1/./models", "/v1/models/..", "/v1/%2e%2e/x", "/v1/a%2Fb", "/v1/a%5cb", "/v1/a\\b", "/v1/%2E/x"] {
            assert_eq!(check_path(p).unwrap_err().status, 400, "{p}");
        }
    }

    #[test]
    fn path_models() {
        for m in ["gemini-2.5-flash", "gemini-1.5-pro-002", "tunedModels/my_model-1"] {
            assert!(check_path_model(m).is_ok(), "{m}");
        }
        for m in ["", "..", "a/../b", "a b", "a?b", "a#b", "a%2fb", "a\nb", "/a", "a/"] {
            assert!(check_path_model(m).is_err(), "{m:?}");
        }
    }

    #[test]
    fn built_in_rules_parse() {
        assert_eq!(built_in().len(), BUILT_IN.len());
    }
}
