//! One place per dialect for what its wire looks like outside the message
//! bodies: how a key is sent, the version header, the chat endpoint a
//! translated call goes to, where transparent mode maps its host's paths,
//! which request headers belong to it, the default health-check path, and
//! how a stream error event is framed. Bodies (requests, answers, streams,
//! errors) are translated in `crate::translate::<dialect>`; usage is
//! normalised in `crate::usage`.
//!
//! A new provider dialect adds a [`Dialect`] variant, one [`Spec`] here,
//! its reader and writer in `src/translate/`, and its answers in the test
//! mock (`tests/common/mock`).

use super::Dialect;

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
    chat_endpoint: fn(model: &str, stream: bool) -> String,
    /// The health check's default path (from the host root), given the
    /// provider's base path.
    health_path: fn(base_path: &str) -> String,
    /// The SSE event that carries an error (`event: error` for Anthropic).
    error_event_name: Option<&'static str>,
}

const OPENAI: Spec = Spec {
    auth_header: "authorization",
    auth_prefix: "Bearer ",
    version_header: None,
    header_prefix: "openai-",
    gateway_prefix: "/v1",
    chat_endpoint: |_, _| "/chat/completions".to_string(),
    health_path: |base| format!("{base}/models"),
    error_event_name: None,
};

const ANTHROPIC: Spec = Spec {
    auth_header: "x-api-key",
    auth_prefix: "",
    version_header: Some(("anthropic-version", "2023-06-01")),
    header_prefix: "anthropic-",
    gateway_prefix: "/anthropic",
    chat_endpoint: |_, _| "/v1/messages".to_string(),
    health_path: |_| "/v1/models".to_string(),
    error_event_name: Some("error"),
};

const GEMINI: Spec = Spec {
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
};

/// The registry, indexed by [`Dialect`].
const SPECS: [&Spec; Dialect::COUNT] = [&OPENAI, &ANTHROPIC, &GEMINI];

impl Dialect {
    pub fn spec(self) -> &'static Spec {
        SPECS[self as usize]
    }
}

/// Headers that carry a client's API key, in any dialect.
pub const AUTH_HEADERS: [&str; Dialect::COUNT] = [OPENAI.auth_header, ANTHROPIC.auth_header, GEMINI.auth_header];

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
