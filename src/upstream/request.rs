//! The upstream request header of one try: the client's method and path
//! under the provider's base path (or the provider's chat endpoint when the
//! request was translated), the client's headers minus hop-by-hop ones,
//! `x-modelgate-*` and other dialects' headers, and the credentials the try
//! may carry ([`Cred`]).

use pingora::http::RequestHeader;

use crate::config::Provider;
use crate::dialect::{Dialect, ErrorKind, GatewayError};
use crate::translate;

/// Request headers never forwarded upstream (hop-by-hop, or ours to set).
const DROP_REQUEST: &[&str] =
    &["host", "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer", "upgrade", "accept-encoding"];

/// A header that could not be built (a value Pingora refuses).
pub fn internal(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::new(500, ErrorKind::Internal, "internal", format!("modelgate could not build the request or response: {e}"))
}

pub fn translated_request(client: &RequestHeader, provider: &Provider, key: Cred<'_>, chat: &translate::Chat, body_len: usize) -> Result<RequestHeader, GatewayError> {
    let endpoint = match provider.kind {
        Dialect::OpenAi => "/chat/completions".to_string(),
        Dialect::Anthropic => "/v1/messages".to_string(),
        Dialect::Gemini if chat.stream => format!("/models/{}:streamGenerateContent?alt=sse", chat.model),
        Dialect::Gemini => format!("/models/{}:generateContent", chat.model),
    };
    let path = format!("{}{endpoint}", provider.endpoint.base_path);
    let mut req = RequestHeader::build(http::Method::POST, path.as_bytes(), Some(client.headers.len() + 4)).map_err(internal)?;
    let client_key = client
        .headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| client.headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()))
        .or_else(|| client.headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")))
        .map(str::trim);
    for (name, value) in client.headers.iter() {
        let n = name.as_str();
        let foreign = n.starts_with("anthropic-") || n.starts_with("openai-") || n.starts_with("x-goog-") || AUTH_HEADERS.contains(&n) || n == "content-type";
        if DROP_REQUEST.contains(&n) || n.starts_with("x-modelgate-") || foreign {
            continue;
        }
        req.append_header(name.clone(), value.clone()).map_err(internal)?;
    }
    req.insert_header("host", provider.endpoint.authority.as_str()).map_err(internal)?;
    req.insert_header("accept-encoding", "identity").map_err(internal)?;
    req.insert_header("content-type", "application/json").map_err(internal)?;
    req.insert_header("content-length", body_len.to_string()).map_err(internal)?;
    let k = match key {
        Cred::Inject(k) => Some(k),
        Cred::Client => client_key,
        Cred::Stripped => None,
    };
    if let Some(k) = k {
        set_auth(&mut req, provider.kind, k)?;
    }
    if provider.kind == Dialect::Anthropic {
        req.insert_header("anthropic-version", "2023-06-01").map_err(internal)?;
    }
    Ok(req)
}

/// The upstream request header: the client's method, path under the
/// provider's base path, and headers minus hop-by-hop and `x-modelgate-*`;
/// auth replaced when modelgate injects the provider key.
pub fn upstream_request(client: &RequestHeader, provider: &Provider, upstream_path: &str, key: Cred<'_>, body_len: usize, has_body: bool) -> Result<RequestHeader, GatewayError> {
    let path = format!("{}{upstream_path}", provider.endpoint.base_path);
    let mut req = RequestHeader::build(client.method.clone(), path.as_bytes(), Some(client.headers.len() + 4)).map_err(internal)?;
    for (name, value) in client.headers.iter() {
        let n = name.as_str();
        if DROP_REQUEST.contains(&n) || n.starts_with("x-modelgate-") || (!matches!(key, Cred::Client) && AUTH_HEADERS.contains(&n)) {
            continue;
        }
        req.append_header(name.clone(), value.clone()).map_err(internal)?;
    }
    req.insert_header("host", provider.endpoint.authority.as_str()).map_err(internal)?;
    req.insert_header("accept-encoding", "identity").map_err(internal)?;
    if has_body || body_len > 0 {
        req.insert_header("content-length", body_len.to_string()).map_err(internal)?;
    }
    if let Cred::Inject(k) = key {
        set_auth(&mut req, provider.kind, k)?;
    }
    Ok(req)
}

/// What authenticates an attempt upstream.
#[derive(Clone, Copy)]
pub enum Cred<'a> {
    /// modelgate's own key for the provider (`api_key_env`).
    Inject(&'a str),
    /// The client's own auth headers (the key was meant for this provider).
    Client,
    /// None: a local provider that the client's key was not meant for.
    Stripped,
}

/// Headers that carry a client's API key, in any dialect.
pub const AUTH_HEADERS: &[&str] = &["authorization", "x-api-key", "x-goog-api-key"];

/// Put `key` in the auth header of a provider of `kind`.
fn set_auth(req: &mut RequestHeader, kind: Dialect, key: &str) -> Result<(), GatewayError> {
    match kind {
        Dialect::OpenAi => req.insert_header("authorization", format!("Bearer {key}")),
        Dialect::Anthropic => req.insert_header("x-api-key", key),
        Dialect::Gemini => req.insert_header("x-goog-api-key", key),
    }
    .map_err(internal)
}
