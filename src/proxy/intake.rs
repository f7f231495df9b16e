//! A request's way in: its path checked and mapped to a dialect and API
//! (in transparent mode, from the host it was sent to), its body read
//! within the client timeouts and size limit, checked (depth, duplicate
//! keys, the model named) and parsed.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::http::RequestHeader;
use pingora_proxy::Session;

use crate::body::JsonBody;
use crate::config::Snapshot;
use crate::dialect::{classify_path, Dialect, ErrorKind, GatewayError, Incoming};
use crate::proxy::ctx::Stop;
use crate::proxy::guard;

/// What the way in learnt of a request.
pub struct Intake {
    /// The gateway path (`/v1/…`, `/anthropic/v1/…`, `/gemini/v1beta/…`).
    pub path: String,
    pub incoming: Incoming,
    pub body: Bytes,
    /// A model call's body (POST to a model endpoint).
    pub json: Option<JsonBody>,
    /// The model the client asked for (the body's, or Gemini's in the path).
    pub requested: Option<String>,
}

/// The path: which dialect and API (before the body is read).
pub fn route_path(snap: &Snapshot, session: &Session, forward: bool) -> Result<(String, Incoming), GatewayError> {
    let head = session.req_header();
    guard::check_path(head.uri.path())?;
    let (path, hint) = match forward {
        true => {
            let (p, i) = forward_target(snap, head, session.digest().is_some_and(|d| d.ssl_digest.is_some()))?;
            (p, Some(i))
        }
        false => {
            doubled_version(head)?;
            (head.uri.path().to_string(), None)
        }
    };
    let mut incoming = classify_path(&path, head.uri.query()).ok_or_else(|| {
        GatewayError::new(
            404,
            ErrorKind::NotFound,
            "unknown_endpoint",
            format!(
                "modelgate has no endpoint {}: point an OpenAI client at http://<modelgate>/v1 and an Anthropic client at http://<modelgate>/anthropic",
                head.uri.path()
            ),
        )
    })?;
    incoming.provider = hint;
    if let Some(m) = &incoming.path_model {
        guard::check_path_model(m)?;
    }
    if !is_model_call(&incoming, head) {
        guard::check_passthrough(snap, head.method.as_str(), &path)?;
    }
    Ok((path, incoming))
}

/// A base URL that ends in one `/v1` too many (`ANTHROPIC_BASE_URL=…/anthropic/v1`
/// gives `/anthropic/v1/v1/messages`): a 404 in the SDK's own error shape
/// that names the base URL to use.
fn doubled_version(head: &RequestHeader) -> Result<(), GatewayError> {
    let path = head.uri.path();
    let host = head.headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1:8080");
    let not_found = |dialect: Dialect, base: String, sdk: &str| {
        GatewayError::new(
            404,
            ErrorKind::NotFound,
            "wrong_base_url",
            format!("modelgate has no endpoint {path}: the base URL has one /v1 too many (the SDK adds the rest of the path itself); set the {sdk} base URL to {base}"),
        )
        .in_dialect(dialect)
    };
    let anthropic_base = format!("http://{host}/anthropic");
    if path.starts_with("/anthropic/v1/v1/") {
        return Err(not_found(Dialect::Anthropic, anthropic_base, "Anthropic SDK's (ANTHROPIC_BASE_URL)"));
    }
    if let Some(rest) = path.strip_prefix("/v1/v1/") {
        if rest == "messages" || rest.starts_with("messages/") {
            return Err(not_found(Dialect::Anthropic, anthropic_base, "Anthropic SDK's (ANTHROPIC_BASE_URL)"));
        }
        return Err(not_found(Dialect::OpenAi, format!("http://{host}/v1"), "OpenAI SDK's (OPENAI_BASE_URL)"));
    }
    Ok(())
}

fn is_model_call(incoming: &Incoming, head: &RequestHeader) -> bool {
    incoming.api.is_model_call() && head.method == http::Method::POST
}

/// Read and check the body.
pub async fn read(snap: &Snapshot, session: &mut Session, path: String, incoming: Incoming) -> Result<Intake, Stop> {
    let body = read_body(session, snap.max_body_bytes, snap.client_timeouts.body_total).await?;
    if crate::body::too_deep(&body, snap.limits.max_json_depth) {
        return Err(crate::body::too_deep_error(snap.limits.max_json_depth).into());
    }
    let json = if is_model_call(&incoming, session.req_header()) { Some(JsonBody::parse(body.clone())?) } else { None };
    // Gemini names the model (and streaming) in the path.
    let requested = match &incoming.path_model {
        Some(m) => Some(m.clone()),
        None => json.as_ref().map(|j| j.model()).transpose()?.flatten(),
    };
    Ok(Intake { path, incoming, body, json, requested })
}

/// Transparent mode: the provider that answers for the host the client
/// called, and the request's path as the base-URL gateway names it
/// (`/v1/…`, `/anthropic/v1/…`, `/gemini/v1beta/…`). `tls`: the request
/// came inside an intercepted TLS connection (authorized at CONNECT);
/// any other request on the proxy listener is plain HTTP proxying and
/// must carry the proxy credentials itself.
fn forward_target(snap: &Snapshot, head: &RequestHeader, tls: bool) -> Result<(String, usize), GatewayError> {
    let plain = !tls;
    let authority = if plain {
        // Checked before anything else, so an unauthenticated client
        // learns nothing about hosts or paths.
        let given = head.headers.get("proxy-authorization").map(|v| v.as_bytes());
        snap.forward_proxy.authorize(given).map_err(|why| GatewayError::new(407, ErrorKind::Authentication, "proxy_auth", why))?;
        // Pingora keeps an absolute-form target verbatim in raw_path
        // (the Uri holds only its path) and has checked that Host
        // matches its authority.
        let target = String::from_utf8_lossy(head.raw_path()).into_owned();
        let after = |prefix: &str| target.get(..prefix.len()).filter(|p| p.eq_ignore_ascii_case(prefix)).map(|_| &target[prefix.len()..]);
        if let Some(rest) = after("http://") {
            rest.split(['/', '?', '#']).next().unwrap_or("").to_string()
        } else if after("https://").is_some() {
            return Err(GatewayError::new(
                400,
                ErrorKind::InvalidRequest,
                "proxy_scheme",
                "the forward proxy takes plain requests only for http:// URLs; an HTTPS client sends CONNECT (set HTTPS_PROXY)",
            ));
        } else {
            return Err(GatewayError::new(400, ErrorKind::InvalidRequest, "origin_form", format!(
                "`{target}` was sent to modelgate's forward-proxy port as a plain request; this port is a proxy: set HTTPS_PROXY/HTTP_PROXY to it (requests then carry an absolute URL or use CONNECT), or point the SDK's base URL at modelgate's gateway port instead"
            )));
        }
    } else {
        // Inside an intercepted connection the Host header or h2's
        // authority names the host.
        head.uri.authority().map(|a| a.as_str()).or_else(|| head.headers.get("host").and_then(|h| h.to_str().ok())).unwrap_or("").to_string()
    };
    let authority = authority.as_str();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => (h, p.parse::<u16>().ok()),
        _ => (authority, None),
    };
    let host = crate::proxy::target::normalize_host(host.trim_start_matches('[').trim_end_matches(']'));
    let idx =
        snap.providers.iter().position(|p| p.hosts.contains(&host) && port.is_none_or(|port| !plain || port == p.endpoint.port)).ok_or_else(
            || match plain {
                // Never fetched: plain proxying reaches provider hosts only.
                true => GatewayError::new(
                    403,
                    ErrorKind::PermissionDenied,
                    "unknown_host",
                    format!(
                "modelgate forwards plain http:// requests only to provider hosts; `{authority}` is none (add the host to a provider's `hosts` in the config)"
            ),
                ),
                false => GatewayError::new(
                    421,
                    ErrorKind::NotFound,
                    "unknown_host",
                    format!(
                        "modelgate has no provider for host `{host}`; add it to a provider's `hosts` in the config (or remove it from forward_proxy.intercept)"
                    ),
                ),
            },
        )?;
    let p = &snap.providers[idx];
    let path = head.uri.path();
    let rest = path.strip_prefix(p.endpoint.base_path.as_str()).filter(|r| r.is_empty() || r.starts_with('/')).unwrap_or(path);
    let gateway_path = format!("{}{rest}", p.kind.spec().gateway_prefix);
    Ok((gateway_path, idx))
}

/// Read the whole request body within `total`, refusing more than `limit`
/// bytes; a declared length over the limit is refused before reading.
async fn read_body(session: &mut Session, limit: usize, total: Duration) -> Result<Bytes, Stop> {
    match tokio::time::timeout(total, read_body_within(session, limit)).await {
        Ok(r) => r,
        Err(_) => {
            session.set_keepalive(None);
            Err(Stop::Answer(GatewayError::new(
                408,
                ErrorKind::Timeout,
                "body_timeout",
                format!("the request body did not arrive within {} s (client_timeouts.body_total_ms)", total.as_secs_f64()),
            )))
        }
    }
}

async fn read_body_within(session: &mut Session, limit: usize) -> Result<Bytes, Stop> {
    let too_large = |n: String| {
        GatewayError::new(
            413,
            ErrorKind::TooLarge,
            "body_too_large",
            format!("the request body is {n} bytes, over modelgate's limit of {limit} bytes; send a smaller request or raise max_body_bytes in the config"),
        )
    };
    let declared = session.req_header().headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if let Some(n) = declared {
        if n > limit {
            return Err(Stop::AnswerThenDrain(too_large(n.to_string())));
        }
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0));
    loop {
        let chunk = match session.read_request_body().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) if e.etype() == &pingora::ErrorType::ReadTimedout => {
                session.set_keepalive(None);
                return Err(Stop::Answer(GatewayError::new(
                    408,
                    ErrorKind::Timeout,
                    "body_timeout",
                    "the request body stalled longer than client_timeouts.body_idle_ms",
                )));
            }
            Err(_) => return Err(Stop::ClientGone),
        };
        if buf.len() + chunk.len() > limit {
            return Err(Stop::AnswerThenDrain(too_large(format!("more than {limit}"))));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// After answering 413: read and discard what the client is still sending,
/// for a moment and up to a bound, so it sees the answer instead of a
/// reset; then close the connection.
pub async fn drain_or_close(session: &mut Session, limit: usize) {
    let mut left = limit.saturating_mul(4).min(512 * 1024 * 1024);
    let discard = async {
        loop {
            match session.read_request_body().await {
                Ok(Some(c)) if c.len() <= left => left -= c.len(),
                _ => return,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), discard).await;
    session.set_keepalive(None);
}
