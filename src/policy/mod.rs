//! Which model and provider serve a request: the ordered attempt plan.
//!
//! Routes are tried in file order; the first that matches sets the target.
//! The plan is the target, then the route's fallbacks, then the target's own
//! fallbacks, without repeats. Until cross-dialect translation exists, a
//! model is only planned for requests of its provider's dialect; a route
//! without `match.dialect` applies to its target's dialect.

use crate::config::{Model, Route, Snapshot};
use crate::dialect::Dialect;

/// What routing needs to know about a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub dialect: Dialect,
    /// The `model` field of the body, for APIs that carry one.
    pub model: Option<&'a str>,
    pub app: &'a str,
    pub task: Option<&'a str>,
}

/// One upstream attempt.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'s> {
    /// The configured model, or `None` when forwarding a model the config
    /// does not know (or a request without one) unchanged.
    pub model: Option<&'s Model>,
    /// Index into `Snapshot::providers`.
    pub provider: usize,
}

impl Attempt<'_> {
    /// The model label for metrics and logs.
    pub fn model_label(&self) -> &str {
        self.model.map(|m| m.name.as_str()).unwrap_or("other")
    }
}

#[derive(Debug)]
pub struct Plan<'s> {
    pub route: Option<&'s Route>,
    pub attempts: Vec<Attempt<'s>>,
}

impl Plan<'_> {
    pub fn route_label(&self) -> &str {
        self.route.map(|r| r.name.as_str()).unwrap_or("none")
    }
}

fn route_matches(snap: &Snapshot, r: &Route, f: &RequestFacts<'_>) -> bool {
    let m = &r.matcher;
    let target_dialect = snap.models.get(&r.target).map(|t| snap.providers[t.provider].kind);
    m.dialect.or(target_dialect) == Some(f.dialect)
        && m.model.as_ref().is_none_or(|g| f.model.is_some_and(|x| g.matches(x)))
        && m.app.as_ref().is_none_or(|g| g.matches(f.app))
        && m.task.as_ref().is_none_or(|t| f.task == Some(t.as_str()))
}

/// Build the attempt plan. `None` when nothing can serve the request's
/// dialect (no provider of that kind is configured).
pub fn plan<'s>(snap: &'s Snapshot, f: &RequestFacts<'_>) -> Option<Plan<'s>> {
    let route = f.model.and(snap.routes.iter().find(|r| route_matches(snap, r, f)));
    let head: Option<&'s Model> = match route {
        Some(r) => snap.models.get(&r.target),
        None => f.model.and_then(|m| snap.models.get(m)),
    };
    let Some(head) = head.filter(|m| snap.providers[m.provider].kind == f.dialect) else {
        let provider = snap.default_provider[f.dialect as usize]?;
        return Some(Plan { route: None, attempts: vec![Attempt { model: None, provider }] });
    };
    let mut names: Vec<&str> = vec![head.name.as_str()];
    let chain = route.map(|r| r.fallbacks.as_slice()).unwrap_or(&[]).iter().chain(head.fallbacks.iter());
    for n in chain {
        if !names.contains(&n.as_str()) {
            names.push(n);
        }
    }
    let attempts = names
        .into_iter()
        .filter_map(|n| snap.models.get(n))
        .filter(|m| {
            let ok = snap.providers[m.provider].kind == f.dialect;
            if !ok {
                tracing::debug!(model = %m.name, "skipping fallback in another dialect (translation not supported yet)");
            }
            ok
        })
        .map(|m| Attempt { model: Some(m), provider: m.provider })
        .collect();
    Some(Plan { route, attempts })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = r#"
providers:
  openai: { kind: openai, base_url: "http://127.0.0.1:1/v1" }
  anthropic: { kind: anthropic, base_url: "http://127.0.0.1:2" }
models:
  gpt-4o: { provider: openai, input_usd_per_mtok: 2.5, output_usd_per_mtok: 10, fallbacks: [haiku, gpt-4o-mini] }
  gpt-4o-mini: { provider: openai, input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6 }
  haiku: { provider: anthropic, id: claude-3-5-haiku-20241022, input_usd_per_mtok: 0.8, output_usd_per_mtok: 4 }
routes:
  - { name: planning, match: { task: planning }, target: gpt-4o }
  - { name: billing, match: { app: "billing-*", model: "gpt-4o*" }, target: gpt-4o-mini, fallbacks: [gpt-4o] }
"#;

    fn snap() -> Snapshot {
        crate::config::load_str(CONF, &|_| None).unwrap()
    }

    fn names(p: &Plan<'_>) -> Vec<String> {
        p.attempts.iter().map(|a| a.model_label().to_string()).collect()
    }

    #[test]
    fn first_matching_route_wins_and_fallbacks_follow_without_repeats() {
        let s = snap();
        let f = RequestFacts { dialect: Dialect::OpenAi, model: Some("gpt-4o"), app: "billing-bot", task: None };
        let p = plan(&s, &f).unwrap();
        assert_eq!(p.route_label(), "billing");
        // gpt-4o-mini, then route fallback gpt-4o; haiku is another dialect.
        assert_eq!(names(&p), ["gpt-4o-mini", "gpt-4o"]);
    }

    #[test]
    fn unmatched_known_model_keeps_its_own_chain_and_unknown_passes_through() {
        let s = snap();
        let f = RequestFacts { dialect: Dialect::OpenAi, model: Some("gpt-4o"), app: "default", task: None };
        let p = plan(&s, &f).unwrap();
        assert_eq!((p.route_label(), names(&p)), ("none", vec!["gpt-4o".to_string(), "gpt-4o-mini".to_string()]));
        let f = RequestFacts { model: Some("o3-pro"), ..f };
        let p = plan(&s, &f).unwrap();
        assert_eq!(names(&p), ["other"]);
        assert_eq!(s.providers[p.attempts[0].provider].name, "openai");
    }

    #[test]
    fn routes_apply_only_to_their_targets_dialect() {
        let s = snap();
        let f = RequestFacts { dialect: Dialect::Anthropic, model: Some("claude-x"), app: "default", task: Some("planning") };
        let p = plan(&s, &f).unwrap();
        assert_eq!((p.route_label(), names(&p)), ("none", vec!["other".to_string()]));
    }
}
