//! Classification: what routing knows about a request (app, task,
//! complexity, size, client controls), computed once per request.
//!
//! Cheap by construction: the body's top-level fields are already split
//! (`JsonBody`); messages are read as borrowed slices and only the last user
//! message's text is decoded. Input tokens are counted lazily, only when a
//! route or the context guard needs them (see `tokens`).

use std::sync::OnceLock;

use http::HeaderMap;
use serde::Deserialize;
use sha2::{Digest, Sha256};

pub use super::complexity::{score, Score};
use super::prompt::{has_response_format, GeminiConfig, Prompt};
use super::tokens::{self, Tokens};
use crate::body::JsonBody;
use crate::config::{Mode, Model, Snapshot};
use crate::dialect::{Api, Dialect, ErrorKind, GatewayError, Incoming};

/// Where a classification value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Header,
    ApiKey,
    /// Index into `routing.tasks`.
    Rule(usize),
    Default,
}

impl Source {
    pub fn describe(self) -> String {
        match self {
            Source::Header => "header".into(),
            Source::ApiKey => "API key (routing.app_keys)".into(),
            Source::Rule(i) => format!("routing.tasks[{i}]"),
            Source::Default => "default".into(),
        }
    }
}

/// Requests a client makes through `x-modelgate-*` headers.
#[derive(Debug, Clone, Default)]
pub struct Controls {
    pub model: Option<String>,
    pub tier_max: bool,
    pub mode: Option<Mode>,
}

pub struct Facts<'a> {
    pub dialect: Dialect,
    pub api: Api,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// The body's `model`.
    pub model: Option<&'a str>,
    /// The configured model `model` names: by its name, its upstream `id`
    /// or one of its `aliases` (`Snapshot::model_for`).
    pub configured: Option<&'a Model>,
    /// `model` is an upstream id or alias of `configured`, not its name: a
    /// try at `configured` sends it upstream as the client wrote it.
    pub by_alias: bool,
    pub app: String,
    pub app_source: Source,
    pub task: Option<String>,
    pub task_source: Source,
    pub complexity: Score,
    pub stream: bool,
    /// Transparent mode: the provider whose host the client called.
    pub provider_hint: Option<usize>,
    pub tools: bool,
    pub response_format: bool,
    /// The end user: `user`, `safety_identifier` or `metadata.user_id`.
    pub user: Option<String>,
    /// The output budget the client asked for.
    pub max_tokens: Option<u64>,
    pub controls: Controls,
    /// Conversations routes answered lately (`client_escalation`); `None`
    /// where nothing is remembered (`modelgate route`).
    pub conversations: Option<&'a super::Conversations>,
    /// The virtual key the request carries (`crate::keys`).
    pub key: Option<std::sync::Arc<crate::config::VirtualKey>>,
    body: Option<&'a JsonBody>,
    body_len: usize,
    tokens_model: Option<&'a str>,
    /// Raw counts per BPE family, made on first use.
    counts: [OnceLock<u64>; 2],
    /// `tokens_upper_bound`, made on first use (routing and budgets each ask).
    upper_bound: OnceLock<u64>,
}

impl Facts<'_> {
    /// An upper bound on the input tokens that costs nothing: a token is at
    /// least one byte of the body.
    pub fn tokens_upper_bound(&self) -> u64 {
        *self.upper_bound.get_or_init(|| {
            // A token is at least one byte of the body, except images (a
            // flat 1,000 each): with any image the bound is unknown.
            static IMAGE: std::sync::LazyLock<memchr::memmem::Finder<'static>> = std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"image"));
            if self.body.is_some_and(|b| IMAGE.find(b.original()).is_some()) {
                return u64::MAX;
            }
            tokens::scaled(self.body_len as u64, false).count
        })
    }

    /// The estimated input tokens for the requested model.
    pub fn tokens(&self) -> Tokens {
        self.tokens_for(self.tokens_model)
    }

    /// The estimated input tokens for a model (upstream id): its own
    /// tokenizer, or the o200k count with a margin.
    pub fn tokens_for(&self, model: Option<&str>) -> Tokens {
        let (family, exact) = tokens::family(model);
        let n = *self.counts[family as usize].get_or_init(|| self.body.map(|b| tokens::count(b, self.api, family)).unwrap_or(0));
        tokens::scaled(n, exact)
    }

    /// The requested model's estimate, if routing needed a count.
    pub fn tokens_if_counted(&self) -> Option<Tokens> {
        let (family, exact) = tokens::family(self.tokens_model);
        self.counts[family as usize].get().map(|n| tokens::scaled(*n, exact))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        header(self.headers, name)
    }

    /// The request's JSON body (model calls).
    pub fn body(&self) -> Option<&JsonBody> {
        self.body
    }

    /// `route` answered this same conversation within `window` (the app
    /// asks again).
    pub fn asked_again(&self, route: &str, window: std::time::Duration) -> bool {
        self.conversations.is_some_and(|c| c.answered_within(route, self, window))
    }

    /// The virtual key's name.
    pub fn key_name(&self) -> Option<&str> {
        self.key.as_deref().map(|k| k.name.as_str())
    }

    /// Who the request is, from its virtual key: the key's app (unless it
    /// is a `routing.app_keys` entry in open mode, where the
    /// `x-modelgate-app` header still wins, as before) and user; without a
    /// user on the key, `x-modelgate-user`, then the body's.
    /// `x-modelgate-user` is read only when something counts users (`per_user`).
    pub fn identify(&mut self, key: Option<std::sync::Arc<crate::config::VirtualKey>>, known_keys: bool, per_user: bool) {
        if let Some(k) = &key {
            if let Some(app) = &k.app {
                let header_wins = k.source == crate::config::KeySource::AppKeys && !known_keys && self.app_source == Source::Header;
                if !header_wins {
                    self.app = app.clone();
                    self.app_source = Source::ApiKey;
                }
            }
        }
        let header = || if per_user { self.header("x-modelgate-user").map(str::to_string) } else { None };
        if let Some(u) = key.as_ref().and_then(|k| k.user.clone()).or_else(header) {
            self.user = Some(u);
        }
        self.key = key;
    }
}

fn header<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

fn bad_header(name: &str, msg: String) -> GatewayError {
    GatewayError::new(400, ErrorKind::InvalidRequest, "invalid_modelgate_header", format!("{name}: {msg}"))
}

/// The request's classification. `body` is the parsed JSON of a model call
/// (`None` for other requests); `body_len` its size in bytes.
pub fn classify<'a>(
    snap: &'a Snapshot,
    incoming: &Incoming,
    path: &'a str,
    headers: &'a HeaderMap,
    body: Option<&'a JsonBody>,
    body_len: usize,
    model: Option<&'a str>,
) -> Result<Facts<'a>, GatewayError> {
    let (dialect, api) = (incoming.dialect, incoming.api);
    let routing = &snap.routing;
    // Most requests carry no `x-modelgate-*` header: one look at the
    // names instead of five lookups that each parse a name.
    let ours = headers.keys().any(|k| k.as_str().starts_with("x-modelgate-"));
    let control = |name: &str| if ours { header(headers, name) } else { None };
    let controls = if ours { Controls::read(headers)? } else { Controls::default() };

    let (app, app_source) = if let Some(a) = control("x-modelgate-app") {
        (a.to_string(), Source::Header)
    } else if let Some(a) = app_from_key(headers, routing) {
        (a, Source::ApiKey)
    } else {
        ("default".to_string(), Source::Default)
    };

    let prompt = body.map(|b| Prompt::read(b, api, dialect, !routing.tasks.is_empty())).unwrap_or_default();
    let tools = body.and_then(|b| b.field("tools")).is_some_and(|t| !matches!(t.get().trim(), "null" | "[]"));
    let gemini_config = body.filter(|_| api == Api::GenerateContent).and_then(GeminiConfig::read);
    let response_format = body.is_some_and(has_response_format) || gemini_config.as_ref().is_some_and(GeminiConfig::structured);

    let (task, task_source) = match control("x-modelgate-task") {
        Some(t) => (Some(t.to_string()), Source::Header),
        None => task_rule(routing, path, model, &prompt.system, tools, response_format),
    };

    let complexity = score(&routing.complexity, &prompt.last_user, prompt.messages);
    let user = body.and_then(user_of);
    let max_tokens = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| body.and_then(|b| b.field(k)).and_then(|v| v.get().trim().parse::<u64>().ok()))
        .or(gemini_config.as_ref().and_then(|g| g.max_output_tokens));
    // Count with the tokenizer of the model the request names (its upstream id
    // when it is a configured model).
    let found = model.and_then(|m| snap.model_for(m));
    let (configured, by_alias) = (found.map(|(c, _)| c), found.is_some_and(|(_, a)| a));
    let tokens_model = model.map(|m| configured.filter(|_| !by_alias).map(|c| c.id.as_str()).unwrap_or(m));

    Ok(Facts {
        dialect,
        api,
        path,
        headers,
        model,
        configured,
        by_alias,
        app,
        app_source,
        task,
        task_source,
        complexity,
        stream: incoming.path_stream || body.is_some_and(JsonBody::stream),
        provider_hint: incoming.provider,
        tools,
        response_format,
        user,
        max_tokens,
        controls,
        conversations: None,
        key: None,
        body,
        body_len,
        tokens_model,
        counts: [OnceLock::new(), OnceLock::new()],
        upper_bound: OnceLock::new(),
    })
}

impl Controls {
    /// The client's `x-modelgate-model`, `-tier` and `-mode` headers.
    fn read(headers: &HeaderMap) -> Result<Controls, GatewayError> {
        Ok(Controls {
            model: header(headers, "x-modelgate-model").map(str::to_string),
            tier_max: match header(headers, "x-modelgate-tier") {
                None => false,
                Some(v) if v.eq_ignore_ascii_case("max") => true,
                Some(v) => {
                    return Err(bad_header("x-modelgate-tier", format!("`{v}` is not a tier request; send `max` to escalate to the route's strongest model")))
                }
            },
            mode: match header(headers, "x-modelgate-mode") {
                None => None,
                Some(v) => Some(
                    Mode::parse(v).ok_or_else(|| bad_header("x-modelgate-mode", format!("unknown routing mode `{v}`; expected one of: {}", Mode::names())))?,
                ),
            },
        })
    }
}

/// The first `routing.tasks` rule the request matches.
fn task_rule(routing: &crate::config::Routing, path: &str, model: Option<&str>, system: &str, tools: bool, response_format: bool) -> (Option<String>, Source) {
    let lower = system.to_lowercase();
    let hit = routing.tasks.iter().position(|r| {
        r.path.as_ref().is_none_or(|g| g.matches(path))
            && r.model.as_ref().is_none_or(|g| model.is_some_and(|m| g.matches(m)))
            && r.system_contains.as_ref().is_none_or(|s| lower.contains(s.as_str()))
            && r.system_regex.as_ref().is_none_or(|re| re.is_match(system))
            && r.tools.is_none_or(|t| t == tools)
            && r.response_format.is_none_or(|f| f == response_format)
    });
    match hit {
        Some(i) => (Some(routing.tasks[i].task.clone()), Source::Rule(i)),
        None => (None, Source::Default),
    }
}

/// The end user the body names (`user`, `safety_identifier`, Anthropic's
/// `metadata.user_id`).
fn user_of(body: &JsonBody) -> Option<String> {
    let field_str = |k: &str| body.field(k).and_then(|v| serde_json::from_str::<String>(v.get()).ok());
    field_str("user").or_else(|| field_str("safety_identifier")).or_else(|| {
        #[derive(Deserialize)]
        struct Meta {
            user_id: Option<String>,
        }
        body.field("metadata").and_then(|m| serde_json::from_str::<Meta>(m.get()).ok()).and_then(|m| m.user_id)
    })
}

/// The hex SHA-256 of the client's API key, if it is mapped to an app.
fn app_from_key(headers: &HeaderMap, routing: &crate::config::Routing) -> Option<String> {
    if routing.app_keys.is_empty() {
        return None;
    }
    let key = header(headers, "authorization")
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .or_else(|| header(headers, "x-api-key"))
        .or_else(|| header(headers, "x-goog-api-key"))?;
    routing.app_keys.get(&key_hash(key.trim())).cloned()
}

/// How an API key is named in `routing.app_keys`: lowercase hex SHA-256.
pub fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}
