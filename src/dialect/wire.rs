//! The registry of wire dialects: one [`Spec`] per dialect says what its
//! wire looks like outside the message bodies — how a key is sent, the
//! version header, the gateway paths it claims, the chat endpoint a
//! translated call goes to, where transparent mode maps its host's paths,
//! which request headers belong to it, the default health-check path, its
//! error body and stream error event, how its usage is normalised and which
//! event ends its streams. Each dialect's spec is in `src/dialect/<name>.rs`;
//! its request, answer and stream translation in `src/translate/<name>.rs`.
//!
//! A new provider dialect adds a [`Dialect`] variant, its `Spec` file, one
//! line in [`SPECS`], its translator, and its answers in the test mock
//! (`tests/common/mock`).

use serde_json::Value;

use super::{Dialect, GatewayError, Incoming};
use crate::usage::{RawUsage, Usage, UsageCarrier};

/// Whether a gateway path is a dialect's.
pub enum Claim {
    No,
    /// The dialect's prefix with a path it does not serve (no other
    /// dialect may take it).
    Invalid,
    Yes(Incoming),
}

/// What a dialect's requests and streams carry besides their bodies.
pub struct Spec {
    /// The header that carries the API key.
    pub auth_header: &'static str,
    /// Written before the key in that header (`Bearer `).
    pub auth_prefix: &'static str,
    /// A header every request carries (`anthropic-version`).
    pub version_header: Option<(&'static str, &'static str)>,
    /// Request headers of this dialect start with this (dropped when a call
    /// is translated for another dialect).
    pub header_prefix: &'static str,
    /// The gateway path that transparent mode maps this dialect's host
    /// paths under (`/v1/chat/completions` on api.openai.com → `/v1/chat/completions`).
    pub gateway_prefix: &'static str,
    /// The chat endpoint (under the provider's base path) of a translated call.
    pub(super) chat_endpoint: fn(model: &str, stream: bool) -> String,
    /// The health check's default path (from the host root), given the
    /// provider's base path.
    pub(super) health_path: fn(base_path: &str) -> String,
    /// The SSE event that carries an error (`event: error` for Anthropic).
    pub(super) error_event_name: Option<&'static str>,
    /// An error modelgate answers with, in this dialect's shape.
    pub(super) error_body: fn(&GatewayError) -> Value,
    /// Usage as this dialect reports it, in disjoint counts.
    pub(super) usage: fn(&RawUsage) -> Usage,
    /// Whether a (JSON) stream event ends the answer.
    pub(super) is_terminal: fn(&UsageCarrier) -> bool,
    /// Which gateway paths are this dialect's.
    pub(super) claim: fn(path: &str, query: Option<&str>) -> Claim,
}

/// The registry, indexed by [`Dialect`].
const SPECS: [&Spec; Dialect::COUNT] = [&super::openai::SPEC, &super::anthropic::SPEC, &super::gemini::SPEC];

/// The order in which dialects claim a gateway path (`/v1/messages` is
/// Anthropic's before `/v1` is OpenAI's).
const CLAIM_ORDER: [Dialect; Dialect::COUNT] = [Dialect::Gemini, Dialect::Anthropic, Dialect::OpenAi];

impl Dialect {
    pub fn spec(self) -> &'static Spec {
        SPECS[self as usize]
    }
}

/// Headers that carry a client's API key, in any dialect.
pub const AUTH_HEADERS: [&str; Dialect::COUNT] = [SPECS[0].auth_header, SPECS[1].auth_header, SPECS[2].auth_header];

/// Map a gateway path to its dialect and API: the first dialect (in
/// [`CLAIM_ORDER`]) that claims it.
pub fn classify_path(path: &str, query: Option<&str>) -> Option<Incoming> {
    for d in CLAIM_ORDER {
        match (d.spec().claim)(path, query) {
            Claim::No => continue,
            Claim::Invalid => return None,
            Claim::Yes(incoming) => return Some(incoming),
        }
    }
    None
}

impl Spec {
    /// The auth header's value for `key`.
    pub fn auth_value(&self, key: &str) -> String {
        format!("{}{key}", self.auth_prefix)
    }

    /// A key in this dialect's auth header, without its prefix.
    pub fn key_in<'h>(&self, value: &'h str) -> Option<&'h str> {
        value.strip_prefix(self.auth_prefix).map(str::trim)
    }

    pub fn chat_endpoint(&self, model: &str, stream: bool) -> String {
        (self.chat_endpoint)(model, stream)
    }

    pub fn health_path(&self, base_path: &str) -> String {
        (self.health_path)(base_path)
    }

    /// An error modelgate answers with, in this dialect's shape.
    pub fn error_body(&self, e: &GatewayError) -> Value {
        (self.error_body)(e)
    }

    /// A usage object of this dialect in disjoint counts.
    pub fn usage(&self, u: &RawUsage) -> Usage {
        (self.usage)(u)
    }

    /// Whether a stream event of this dialect ends the answer.
    pub fn is_terminal(&self, c: &UsageCarrier) -> bool {
        (self.is_terminal)(c)
    }

    /// An event that ends a stream with `error_body` (the error in this
    /// dialect's shape).
    pub fn error_event(&self, error_body: &str) -> String {
        match self.error_event_name {
            Some(name) => format!("event: {name}\ndata: {error_body}\n\n"),
            None => format!("data: {error_body}\n\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dialect_has_its_spec() {
        for d in Dialect::ALL {
            assert_eq!(d.spec().auth_header, AUTH_HEADERS[d as usize]);
        }
        assert_eq!(Dialect::OpenAi.spec().auth_value("k"), "Bearer k");
        assert_eq!(Dialect::Gemini.spec().chat_endpoint("g", true), "/models/g:streamGenerateContent?alt=sse");
        assert_eq!(Dialect::Anthropic.spec().error_event("{}"), "event: error\ndata: {}\n\n");
        assert_eq!(Dialect::OpenAi.spec().key_in("Bearer sk-1"), Some("sk-1"));
    }
}
