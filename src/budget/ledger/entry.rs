//! One ledger line: a settled request as JSON ([`Entry`]), and reading a
//! line back. It must not know files or budgets.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// One settled request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// When the request was admitted (RFC 3339, UTC); the windows it counts in.
    pub ts: String,
    pub app: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    pub route: String,
    pub provider: String,
    /// The configured model that served (`other` for an unknown one).
    pub model: String,
    /// The model the client asked for, when it differs from `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<String>,
    pub input: u64,
    #[serde(default)]
    pub cached: u64,
    #[serde(default)]
    pub cache_write: u64,
    pub output: u64,
    pub cost_usd: f64,
    /// What the same tokens would have cost at the requested model.
    pub requested_cost_usd: f64,
    /// Tokens counted locally because the provider reported no usage
    /// (e.g. a stream the client cut).
    #[serde(default, skip_serializing_if = "is_false")]
    pub estimated: bool,
    /// The budget whose `on_exceed: downgrade` moved this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downgraded_by: Option<String>,
    /// The split arm of the route that served it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<String>,
    /// Served from the response cache: no upstream call, no tokens, $0;
    /// `cache_saved_usd` is what the cached answer cost when it was made
    /// (at today's prices).
    #[serde(default, skip_serializing_if = "is_false")]
    pub cache_hit: bool,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_saved_usd: f64,
    /// Split requests: the request's `x-modelgate-request-id`, so it can
    /// still be rated (`POST /admin/feedback`) after a restart. One that
    /// does not read back is left out, not damage: spend does not depend
    /// on it.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_id")]
    pub request_id: Option<crate::request_id::RequestId>,
    /// The answer check this attempt's answer failed (`escalate_on`); with
    /// `escalated_to`, the answer was discarded and the request re-sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_failed: Option<String>,
    /// The discarded answer's request went on to this model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalated_to: Option<String>,
    /// The answer that served after escalations: the hops, as in
    /// `x-modelgate-escalated` (`gpt-4o-mini→gpt-4o:schema_mismatch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalated: Option<String>,
    /// The virtual key's name (never the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The end user (from the key, `x-modelgate-user` or the body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl Entry {
    /// The entry as one JSON object, the same bytes `serde_json` writes
    /// for it (a unit test holds them equal), without serde.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut j = crate::jsonline::Json::new(out);
        j.str("ts", &self.ts);
        j.str("app", &self.app);
        if let Some(v) = &self.task {
            j.str("task", v);
        }
        j.str("route", &self.route);
        j.str("provider", &self.provider);
        j.str("model", &self.model);
        if let Some(v) = &self.requested {
            j.str("requested", v);
        }
        j.num("input", self.input);
        j.num("cached", self.cached);
        j.num("cache_write", self.cache_write);
        j.num("output", self.output);
        j.float("cost_usd", self.cost_usd);
        j.float("requested_cost_usd", self.requested_cost_usd);
        if self.estimated {
            j.raw("estimated", "true");
        }
        for (k, v) in [("downgraded_by", &self.downgraded_by), ("arm", &self.arm)] {
            if let Some(v) = v {
                j.str(k, v);
            }
        }
        if self.cache_hit {
            j.raw("cache_hit", "true");
        }
        if !is_zero(&self.cache_saved_usd) {
            j.float("cache_saved_usd", self.cache_saved_usd);
        }
        if let Some(id) = self.request_id {
            j.str("request_id", std::str::from_utf8(&id.hex()).unwrap_or_default());
        }
        for (k, v) in [
            ("check_failed", &self.check_failed),
            ("escalated_to", &self.escalated_to),
            ("escalated", &self.escalated),
            ("key", &self.key),
            ("user", &self.user),
        ] {
            if let Some(v) = v {
                j.str(k, v);
            }
        }
        j.end();
    }
}

fn lenient_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<crate::request_id::RequestId>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(v.as_ref().and_then(|v| v.as_str()).and_then(crate::request_id::RequestId::parse))
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

impl Entry {
    pub fn at(&self) -> Option<Timestamp> {
        self.ts.parse().ok()
    }
}

/// One line read back: an entry, blank, or not an entry.
pub(super) fn parse_line(line: &[u8]) -> Option<Option<(Entry, Timestamp)>> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Some(None);
    }
    serde_json::from_slice::<Entry>(line).ok().and_then(|e| e.at().map(|t| Some((e, t))))
}
