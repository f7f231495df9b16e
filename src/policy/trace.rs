//! What a decision looked at, for `modelgate route` and `POST
//! /admin/route`: routes checked, candidates dropped and why, scores. Off
//! (and free) on the request path.

use super::*;

/// Everything the decision looked at, for explain.
#[derive(Debug, Default, Serialize)]
pub struct Trace {
    pub routes: Vec<RouteCheck>,
    pub mode: String,
    pub target: Vec<String>,
    pub candidates: Vec<CandidateCheck>,
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct RouteCheck {
    pub route: String,
    pub matched: bool,
    pub why: String,
}

#[derive(Debug, Serialize)]
pub struct CandidateCheck {
    pub model: String,
    pub role: &'static str,
    pub kept: bool,
    pub why: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<ScoreParts>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct ScoreParts {
    pub total: f64,
    pub cost: f64,
    pub quality: f64,
    pub latency: f64,
}

/// A trace sink that is free when off.
pub(super) struct Tr<'t>(pub(super) Option<&'t mut Trace>);

impl Tr<'_> {
    pub(super) fn on(&self) -> bool {
        self.0.is_some()
    }
    pub(super) fn note(&mut self, f: impl FnOnce() -> String) {
        if let Some(t) = self.0.as_mut() {
            t.notes.push(f());
        }
    }
    pub(super) fn target(&mut self, f: impl FnOnce() -> String) {
        if let Some(t) = self.0.as_mut() {
            t.target.push(f());
        }
    }
    pub(super) fn route(&mut self, route: &str, matched: bool, why: impl FnOnce() -> String) {
        if let Some(t) = self.0.as_mut() {
            t.routes.push(RouteCheck { route: route.to_string(), matched, why: why() });
        }
    }
    pub(super) fn candidate(&mut self, model: &str, role: &'static str, kept: bool, why: impl FnOnce() -> String, score: Option<ScoreParts>) {
        if let Some(t) = self.0.as_mut() {
            t.candidates.push(CandidateCheck { model: model.to_string(), role, kept, why: why(), score });
        }
    }
}
