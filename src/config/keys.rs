//! Runtime config of virtual keys, the gateway's `auth:` mode and
//! `rate_limits:` (data only: lookups live in `crate::keys`, enforcement
//! in `crate::ratelimit`).

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use wildmatch::WildMatch;

/// `auth.mode`: whether the gateway lets any client key through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Any key (or none) passes; a known key still names its app, user,
    /// budgets and limits.
    #[default]
    Open,
    /// Only a known, unexpired, unrevoked virtual key passes; anything
    /// else is answered 401 before any upstream call.
    KnownKeys,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Open => "open",
            AuthMode::KnownKeys => "known_keys",
        }
    }
}

/// Where a key was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// `keys:` in the config file (or `routing.app_keys`).
    Config,
    /// Created through `POST /admin/keys`.
    Admin,
    /// `routing.app_keys` (a hash naming an app).
    AppKeys,
}

impl KeySource {
    pub fn as_str(self) -> &'static str {
        match self {
            KeySource::Config => "config",
            KeySource::Admin => "admin",
            KeySource::AppKeys => "app_keys",
        }
    }
}

/// One virtual key: never the key itself, only its SHA-256.
#[derive(Debug, Clone)]
pub struct VirtualKey {
    pub name: String,
    /// Lowercase hex SHA-256 of the key.
    pub hash: String,
    pub app: Option<String>,
    pub user: Option<String>,
    /// Models the client may ask for (globs); empty: any.
    pub models: Vec<String>,
    pub model_globs: Vec<WildMatch>,
    /// Routes that may serve the key's requests; empty: any.
    pub routes: Vec<String>,
    /// After this (Unix seconds) the key is refused.
    pub expires_at: Option<i64>,
    /// The key's own rate limits.
    pub limits: RateAmounts,
    pub source: KeySource,
    /// Created (Unix seconds; admin keys).
    pub created_at: Option<i64>,
    /// A runtime key's own budgets (`key:NAME:BUDGET`, scoped to the key);
    /// a config key's are in the snapshot's `budgets`.
    pub budgets: Vec<crate::config::Budget>,
}

impl VirtualKey {
    /// The first 8 hex digits of the hash: how logs and reports name a key
    /// without its name.
    pub fn hash_prefix(&self) -> &str {
        self.hash.get(..8).unwrap_or(&self.hash)
    }

    pub fn allows_model(&self, model: Option<&str>) -> bool {
        self.model_globs.is_empty() || model.is_some_and(|m| self.model_globs.iter().any(|g| g.matches(m)))
    }

    pub fn allows_route(&self, route: &str) -> bool {
        self.routes.is_empty() || self.routes.iter().any(|r| r == route)
    }

    pub fn expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }
}

/// The keys of the config file, by hash.
#[derive(Debug, Clone, Default)]
pub struct KeyTable {
    pub by_hash: HashMap<String, Arc<VirtualKey>>,
}

/// Requests and tokens per minute (either may be unset).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateAmounts {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
}

impl RateAmounts {
    pub fn is_empty(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none()
    }
}

/// What a rate limit keeps one count per.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    Key,
    App,
    User,
    Model,
}

impl Per {
    pub fn parse(s: &str) -> Option<Per> {
        match s {
            "key" => Some(Per::Key),
            "app" => Some(Per::App),
            "user" => Some(Per::User),
            "model" => Some(Per::Model),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Per::Key => "key",
            Per::App => "app",
            Per::User => "user",
            Per::Model => "model",
        }
    }
}

/// Which requests a rate limit counts: every field given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateScope {
    pub key: Option<String>,
    pub app: Option<String>,
    pub user: Option<String>,
    pub model: Option<String>,
}

/// One rate limit (`rate_limits:`, or a key's own).
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    pub name: String,
    pub scope: RateScope,
    /// One count per distinct key, app, user or model (`None`: one count).
    pub per: Option<Per>,
    pub limits: RateAmounts,
    /// With `per`: how many distinct counts are kept at most.
    pub max_buckets: usize,
}

impl RateLimit {
    /// Counts per model (`scope.model` or `per: model`): admitted for each
    /// model a request tries, not once for the request.
    pub fn by_model(&self) -> bool {
        self.scope.model.is_some() || self.per == Some(Per::Model)
    }
}

/// Default bound on distinct users (or keys, apps, models) a per-user
/// budget or a `per:` rate limit keeps counts for.
pub const DEFAULT_MAX_USERS: usize = 10_000;
