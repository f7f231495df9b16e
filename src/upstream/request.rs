//! The upstream request header of one try: the client's method and path
//! under the provider's base path (or the provider's chat endpoint when the
//! request was translated), the client's headers minus hop-by-hop ones,
//! `x-modelgate-*` and other dialects' headers, and the credentials the try
//! may carry ([`Cred`]).

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::RequestHeader;

use crate::body::JsonBody;
use crate::config::{Auth, Provider, Snapshot};
use crate::dialect::sse::StreamTap;
use crate::dialect::wire::AUTH_HEADERS;
use crate::dialect::{Api, Incoming};
use crate::dialect::{Dialect, ErrorKind, GatewayError};
use crate::policy::Attempt;
use crate::translate;
use crate::translate::Wire;

/// Request headers never forwarded upstream (hop-by-hop, or ours to set).
const DROP_REQUEST: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "accept-encoding",
];

/// The body and upstream request header for the tries of one model.
pub struct Prepared {
    pub bytes: Bytes,
    /// modelgate asked an OpenAI stream for usage: hide the usage-only chunk.
    pub drop_usage_only: bool,
    /// The request was translated: the client's format and the request in neutral form.
    pub translated: Option<(Wire, translate::Chat)>,
    pub req: RequestHeader,
}

impl Prepared {
    /// How a stream answering it is split and read (`provider`: its dialect).
    pub fn tap(&self, provider: Dialect) -> StreamTap {
        let tap = StreamTap::new(provider, self.drop_usage_only);
        match self.translated {
            Some(_) => tap.collecting(),
            None => tap,
        }
    }
}

/// The body and request header for attempts at one model: `model`
/// rewritten (or, for Gemini, named in the path), or the request
/// translated for a provider of another dialect. `pristine` forwards the
/// body byte for byte.
#[allow(clippy::too_many_arguments)]
pub fn prepare(
    incoming: &Incoming,
    client: &RequestHeader,
    body: &Bytes,
    json: Option<&JsonBody>,
    stream: bool,
    attempt: &Attempt<'_>,
    provider: &Provider,
    key: Cred<'_>,
    pristine: bool,
) -> Result<Prepared, GatewayError> {
    let (bytes, drop_usage_only, translated, path_model) = match (json, attempt.model) {
        (Some(_), Some(m)) if provider.kind != incoming.dialect => {
            let from = Wire::of_client(incoming.dialect, incoming.api).ok_or_else(|| {
                translate::bad(format!("{} {} calls cannot be translated for a {} model", incoming.dialect, incoming.api.as_str(), provider.kind))
            })?;
            if incoming.gemini_array_stream() {
                return Err(translate::bad(
                    "a streamGenerateContent call served by a model of another dialect needs `?alt=sse` (server-sent events), as Google's SDKs send",
                ));
            }
            let max = m.max_output_tokens.unwrap_or(translate::DEFAULT_MAX_TOKENS);
            // A dated id or alias the client asked for goes upstream as written.
            let asked = json.filter(|_| attempt.as_requested).and_then(|j| j.model().ok().flatten());
            let (bytes, chat) = translate::request(body, from, Wire::of_provider(provider.kind), asked.as_deref().unwrap_or(&m.id), stream, max)?;
            (bytes, false, Some((from, chat)), None)
        }
        (Some(j), _) => {
            // `None` keeps the client's model: shadow mode, or a dated id
            // or alias of the model that serves.
            let model = attempt.model.filter(|_| !pristine && !attempt.as_requested).map(|m| m.id.as_str());
            if incoming.dialect == Dialect::Gemini {
                (body.clone(), false, None, model)
            } else {
                let usage = !pristine && stream && provider.kind == Dialect::OpenAi && matches!(incoming.api, Api::ChatCompletions | Api::Completions);
                let (b, d) = j.render(model, usage);
                (b, d, None, None)
            }
        }
        (None, _) => (body.clone(), false, None, None),
    };
    let req = match &translated {
        Some((_, chat)) => translated_request(client, provider, key, chat, bytes.len())?,
        None => upstream_request(client, provider, &incoming.upstream_path_for(path_model), key, bytes.len(), client.method == http::Method::POST)?,
    };
    Ok(Prepared { bytes, drop_usage_only, translated, req })
}

/// Whose key the client sent: the provider it called (transparent mode),
/// else that of the model it asked for, else its dialect's default. Without
/// api_key_env, no other provider may see it.
pub fn key_owner(snap: &Snapshot, incoming: &Incoming, requested: Option<&str>) -> Option<usize> {
    incoming.provider.or_else(|| requested.and_then(|m| snap.model_for(m)).map(|(m, _)| m.provider)).or(snap.default_provider[incoming.dialect as usize])
}

/// Why a try carries no key.
pub enum NoKey {
    /// The client's key is another provider's (`why` for the `tried` list;
    /// `message` follows the model's name in the client's error).
    Foreign { why: String, message: String },
    /// The provider's api_key_env is not set.
    Unset { message: String },
}

/// The credentials a try at a model on `provider` carries: modelgate's key
/// (api_key_env), else the client's own when it was meant for this provider
/// (or `cross_provider_client_keys` allows it), else none for a local
/// provider; refused otherwise.
pub fn credentials(snap: &Snapshot, provider: usize, key_owner: Option<usize>, client_sent_key: bool) -> Result<Cred<'_>, NoKey> {
    let p = &snap.providers[provider];
    let foreign = client_sent_key && !snap.cross_provider_client_keys && key_owner != Some(provider);
    // Known keys mode: the client's key is a virtual key, never sent on
    // (`check` requires api_key_env on every non-local provider).
    if snap.auth == crate::config::AuthMode::KnownKeys && matches!(p.auth, Auth::Passthrough) {
        return Ok(Cred::Stripped);
    }
    match &p.auth {
        // A local server needs no key: it gets none rather than another provider's.
        Auth::Passthrough if foreign && p.local => Ok(Cred::Stripped),
        Auth::Passthrough if foreign => {
            let owner = key_owner.map_or("another provider", |i| snap.providers[i].name.as_str());
            Err(NoKey::Foreign {
                why: format!("the client's key is for {owner}"),
                message: format!(
                    "is served by provider `{}`, which has no api_key_env, and the key this request carries is for `{owner}`: modelgate does not send a client's key to another provider. Set api_key_env on `{}` (or, if the key is valid there, cross_provider_client_keys: true)",
                    p.name, p.name
                ),
            })
        }
        Auth::Passthrough => Ok(Cred::Client),
        Auth::Inject { key: Some(k), .. } => Ok(Cred::Inject(k.expose())),
        Auth::Inject { env, key: None } => Err(NoKey::Unset {
            message: format!(
                "modelgate has no API key for provider `{}`: the environment variable {env} named by its api_key_env is not set in modelgate's environment. Set it and restart modelgate, or remove api_key_env to forward the client's own key.",
                p.name
            ),
        }),
    }
}

/// A header that could not be built (a value Pingora refuses).
pub fn internal(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::new(500, ErrorKind::Internal, "internal", format!("modelgate could not build the request or response: {e}"))
}

pub fn translated_request(
    client: &RequestHeader,
    provider: &Provider,
    key: Cred<'_>,
    chat: &translate::Chat,
    body_len: usize,
) -> Result<RequestHeader, GatewayError> {
    let spec = provider.kind.spec();
    let path = format!("{}{}", provider.endpoint.base_path, spec.chat_endpoint(&chat.model, chat.stream));
    let mut req = RequestHeader::build(http::Method::POST, path.as_bytes(), Some(client.headers.len() + 4)).map_err(internal)?;
    // The client's key, from whichever dialect's header it came in.
    let client_key = [Dialect::Anthropic, Dialect::Gemini, Dialect::OpenAi]
        .into_iter()
        .find_map(|d| client.headers.get(d.spec().auth_header).and_then(|v| v.to_str().ok()).and_then(|v| d.spec().key_in(v)));
    for (name, value) in client.headers.iter() {
        let n = name.as_str();
        let foreign = Dialect::ALL.iter().any(|d| n.starts_with(d.spec().header_prefix)) || AUTH_HEADERS.contains(&n) || n == "content-type";
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
        req.insert_header(spec.auth_header, spec.auth_value(k)).map_err(internal)?;
    }
    if let Some((name, value)) = spec.version_header {
        req.insert_header(name, value).map_err(internal)?;
    }
    Ok(req)
}

/// The upstream request header: the client's method, path under the
/// provider's base path, and headers minus hop-by-hop and `x-modelgate-*`;
/// auth replaced when modelgate injects the provider key.
pub fn upstream_request(
    client: &RequestHeader,
    provider: &Provider,
    upstream_path: &str,
    key: Cred<'_>,
    body_len: usize,
    has_body: bool,
) -> Result<RequestHeader, GatewayError> {
    // Built as an `http` request head: Pingora's insert_header would parse
    // every name again and keep a case-preserving copy of each (names are
    // case-insensitive; standard ones go out in title case).
    let path = format!("{}{upstream_path}", provider.endpoint.base_path);
    let mut h = HeaderMap::with_capacity(client.headers.len() + 4);
    for (name, value) in client.headers.iter() {
        let n = name.as_str();
        if DROP_REQUEST.contains(&n) || n.starts_with("x-modelgate-") || (!matches!(key, Cred::Client) && AUTH_HEADERS.contains(&n)) {
            continue;
        }
        h.append(name.clone(), value.clone());
    }
    h.insert(http::header::HOST, HeaderValue::from_str(&provider.endpoint.authority).map_err(internal)?);
    h.insert(http::header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    if has_body || body_len > 0 {
        h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body_len));
    }
    if let Cred::Inject(k) = key {
        let spec = provider.kind.spec();
        h.insert(HeaderName::from_static(spec.auth_header), HeaderValue::try_from(spec.auth_value(k)).map_err(internal)?);
    }
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = client.method.clone();
    parts.uri = http::Uri::try_from(path).map_err(internal)?;
    parts.headers = h;
    Ok(RequestHeader::from(parts))
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
