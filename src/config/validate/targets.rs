//! Validation of a route's `tiers:` and `split:` targets, and of whether
//! its plan can serve what its matcher lets in.

use indexmap::IndexMap;

use super::super::raw::{RawArm, RawTier};
use super::routes::header_safe;
use super::{check_model, Ctx};
use crate::config::*;

/// `tiers:` — models by complexity score, the last one up to 10.
pub(super) fn tiers_of(cx: &mut Ctx, tpath: &str, tiers: Vec<RawTier>, model_names: &[String]) -> Target {
    if tiers.is_empty() {
        cx.err(tpath, "list at least one tier, e.g. { max_complexity: 10, model: gpt-4o }");
    }
    let mut prev: Option<u8> = None;
    for (i, t) in tiers.iter().enumerate() {
        check_model(cx, &format!("{tpath}[{i}].model"), &t.model, model_names);
        if t.max_complexity > 10 {
            cx.err(format!("{tpath}[{i}].max_complexity"), "complexity scores run from 0 to 10");
        }
        if prev.is_some_and(|p| p >= t.max_complexity) {
            cx.err(format!("{tpath}[{i}].max_complexity"), "tiers must be listed with strictly increasing max_complexity");
        }
        prev = Some(t.max_complexity);
    }
    if prev.is_some_and(|p| p < 10) {
        cx.err(format!("{tpath}[{}].max_complexity", tiers.len() - 1), "the last tier must have max_complexity: 10 so every score has a model");
    }
    Target::Tiers(tiers.into_iter().map(|t| Tier { max_complexity: t.max_complexity, model: t.model }).collect())
}

/// `split:` — weighted arms with distinct, header-safe names.
pub(super) fn split_of(cx: &mut Ctx, spath: &str, arms: Vec<RawArm>, model_names: &[String]) -> Target {
    if arms.is_empty() {
        cx.err(spath, "list at least one arm, e.g. { model: gpt-4o-mini, weight: 90 }");
    }
    let mut out: Vec<Arm> = Vec::new();
    for (i, a) in arms.into_iter().enumerate() {
        check_model(cx, &format!("{spath}[{i}].model"), &a.model, model_names);
        if !(a.weight.is_finite() && a.weight >= 0.0) {
            cx.err(format!("{spath}[{i}].weight"), format!("must be a number ≥ 0, got {}", a.weight));
        }
        let name = a.name.unwrap_or_else(|| a.model.clone());
        header_safe(cx, &format!("{spath}[{i}].name"), &name);
        if out.iter().any(|o| o.name == name) {
            cx.err(format!("{spath}[{i}]"), format!("two arms are called `{name}`; give them distinct `name`s"));
        }
        out.push(Arm { name, model: a.model, weight: a.weight });
    }
    if !out.is_empty() && out.iter().map(|a| a.weight).sum::<f64>() <= 0.0 {
        cx.err(spath, "the weights add up to 0; give at least one arm a positive weight");
    }
    Target::Split(out)
}

/// A plan whose every model lacks what every matched request needs
/// cannot serve one of them: an error (and `true`) when so.
pub(super) fn lacks_capability(
    cx: &mut Ctx,
    path: &str,
    matcher: &RouteMatch,
    target: &Target,
    fallbacks: &[String],
    models: &IndexMap<String, Model>,
) -> bool {
    for (needed, cap) in [(matcher.tools, Capability::Tools), (matcher.stream, Capability::Streaming)] {
        if needed != Some(true) {
            continue;
        }
        let planned: Vec<&Model> = target.models().into_iter().chain(fallbacks.iter().map(String::as_str)).filter_map(|m| models.get(m)).collect();
        if !planned.is_empty() && planned.iter().all(|m| !m.has(cap)) {
            let names: Vec<&str> = planned.iter().map(|m| m.name.as_str()).collect();
            cx.err(
                format!("{path}.match"),
                format!("every request this route matches needs the `{}` capability, which none of its models has ({}); add it to a model's capabilities or pick one that has it", cap.as_str(), names.join(", ")),
            );
            return true;
        }
    }
    false
}
