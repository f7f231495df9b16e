//! `dashboard:` — what the admin listener keeps in memory for the web
//! dashboard and its JSON endpoints: the last requests' metadata
//! (`GET /admin/requests`) and which split-routed requests an app may still
//! rate (`POST /admin/feedback`).

use serde::Deserialize;

use super::validate::Ctx;

/// `dashboard:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dashboard {
    /// Metadata of the last this many requests (never prompt text); 0 keeps
    /// none (the Requests view is then empty; the aggregates still count).
    pub recent_requests: usize,
    /// Split-routed requests whose id `POST /admin/feedback` still accepts:
    /// the last this many.
    pub feedback_requests: usize,
}

pub const DEFAULT_RECENT_REQUESTS: usize = 1000;
pub const DEFAULT_FEEDBACK_REQUESTS: usize = 100_000;
const MAX_RECENT_REQUESTS: usize = 100_000;
const MAX_FEEDBACK_REQUESTS: usize = 10_000_000;

impl Default for Dashboard {
    fn default() -> Self {
        Dashboard { recent_requests: DEFAULT_RECENT_REQUESTS, feedback_requests: DEFAULT_FEEDBACK_REQUESTS }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDashboard {
    pub recent_requests: Option<usize>,
    pub feedback_requests: Option<usize>,
}

pub(super) fn dashboard_of(cx: &mut Ctx, raw: RawDashboard) -> Dashboard {
    let d = Dashboard::default();
    let out = Dashboard {
        recent_requests: raw.recent_requests.unwrap_or(d.recent_requests),
        feedback_requests: raw.feedback_requests.unwrap_or(d.feedback_requests),
    };
    if out.recent_requests > MAX_RECENT_REQUESTS {
        cx.err(
            "dashboard.recent_requests",
            format!("{} is more than {MAX_RECENT_REQUESTS}; each kept request holds ~0.5 KB of metadata (use 0 to keep none)", out.recent_requests),
        );
    }
    if out.feedback_requests > MAX_FEEDBACK_REQUESTS {
        cx.err(
            "dashboard.feedback_requests",
            format!("{} is more than {MAX_FEEDBACK_REQUESTS}; each remembered request holds ~100 bytes", out.feedback_requests),
        );
    }
    out
}
