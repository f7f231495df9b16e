//! Validation of a route's answer checks (`escalate_on` and the keys that
//! go with it) and of `client_escalation`.

use indexmap::IndexMap;

use super::super::raw::{RawClientEscalation, RawRoute};
use super::super::{check_model_list, Ctx};
use crate::config::{Check, ClientEscalation, Escalation, Model, Target};

/// Most re-sends a route may allow per request.
const MAX_ESCALATIONS: u32 = 5;

/// The fields of `raw` this module reads, taken out so the route can be
/// built from the rest.
pub(in crate::config::validate) struct Raw {
    on: Option<Vec<String>>,
    to: Option<Vec<String>>,
    max: Option<u32>,
    min_avg_logprob: Option<f64>,
    refusal_patterns: Option<Vec<String>>,
    check_streams: Option<bool>,
    client: Option<RawClientEscalation>,
    /// The route's, for the checks here.
    shadow: bool,
    fallbacks: Vec<String>,
}

impl Raw {
    pub(in crate::config::validate) fn take(r: &mut RawRoute) -> Raw {
        let on = r.escalate_on.take();
        Raw {
            fallbacks: if on.is_some() { r.fallbacks.clone() } else { Vec::new() },
            on,
            to: r.escalate_to.take(),
            max: r.max_escalations.take(),
            min_avg_logprob: r.min_avg_logprob.take(),
            refusal_patterns: r.refusal_patterns.take(),
            check_streams: r.check_streams.take(),
            client: r.client_escalation.take(),
            shadow: r.shadow,
        }
    }
}

/// `escalate_on` and its companions → the route's [`Escalation`].
pub(in crate::config::validate) fn escalation_of(
    cx: &mut Ctx,
    path: &str,
    raw: Raw,
    target: &Target,
    models: &IndexMap<String, Model>,
    model_names: &[String],
) -> (Option<Box<Escalation>>, Option<ClientEscalation>) {
    let client = raw.client.and_then(|c| client_of(cx, &format!("{path}.client_escalation"), c, target));
    let Some(on_raw) = raw.on else {
        // Every companion key needs `escalate_on`.
        let stray = [
            ("escalate_to", raw.to.is_some()),
            ("max_escalations", raw.max.is_some()),
            ("min_avg_logprob", raw.min_avg_logprob.is_some()),
            ("refusal_patterns", raw.refusal_patterns.is_some()),
            ("check_streams", raw.check_streams.is_some()),
        ];
        for (key, _) in stray.iter().filter(|(_, set)| *set) {
            cx.err(format!("{path}.{key}"), format!("`{key}` has no effect without `escalate_on`; list the checks, e.g. escalate_on: [invalid_json, refusal]"));
        }
        return (None, client);
    };
    let before = cx.errors.len();
    let mut on = Vec::new();
    for (i, name) in on_raw.iter().enumerate() {
        match Check::parse(name.trim()) {
            Some(c) if on.contains(&c) => cx.err(format!("{path}.escalate_on[{i}]"), format!("`{c}` is listed twice")),
            Some(c) => on.push(c),
            None => cx.err(format!("{path}.escalate_on[{i}]"), format!("unknown check `{name}`; expected one of: {}", Check::names())),
        }
    }
    if on_raw.is_empty() {
        cx.err(format!("{path}.escalate_on"), format!("list at least one check ({}), or leave `escalate_on` out", Check::names()));
    }
    if raw.shadow {
        cx.err(format!("{path}.escalate_on"), "a shadow route forwards requests unchanged, so its answers are never checked; drop `shadow` or `escalate_on`");
    }
    let to = raw.to.unwrap_or_default();
    check_model_list(cx, &format!("{path}.escalate_to"), &to, model_names, None);
    let max = raw.max.unwrap_or(1);
    if max > MAX_ESCALATIONS {
        cx.err(format!("{path}.max_escalations"), format!("{max} re-sends per request is more than {MAX_ESCALATIONS}; each one is a full model call"));
    }
    let low = on.contains(&Check::LowLogprob);
    match raw.min_avg_logprob {
        Some(v) if !(v.is_finite() && v <= 0.0) => {
            cx.err(format!("{path}.min_avg_logprob"), format!("a log-probability is ≤ 0, got {v}; e.g. -0.357 is an average token probability of 0.7 (ln 0.7)"))
        }
        Some(_) if !low => cx.err(format!("{path}.min_avg_logprob"), "add `low_logprob` to `escalate_on` to use this threshold"),
        None if low => {
            cx.err(format!("{path}.escalate_on"), "`low_logprob` needs `min_avg_logprob`, e.g. min_avg_logprob: -0.357 (an average token probability of 0.7)")
        }
        _ => {}
    }
    let refusal_patterns = raw.refusal_patterns.and_then(|ps| {
        if !on.contains(&Check::Refusal) {
            cx.err(format!("{path}.refusal_patterns"), "add `refusal` to `escalate_on` to use these patterns");
            return None;
        }
        for (i, p) in ps.iter().enumerate() {
            if let Err(e) = regex::Regex::new(p) {
                cx.err(format!("{path}.refusal_patterns[{i}]"), format!("not a valid regular expression: {e}"));
            }
        }
        regex::RegexSet::new(&ps).ok()
    });
    // Somewhere to go: `escalate_to`, or a model of the route stronger than
    // its weakest (with max_escalations: 0 only marking is asked for).
    if to.is_empty() && max > 0 {
        let named: Vec<&Model> = target.models().into_iter().chain(raw.fallbacks.iter().map(String::as_str)).filter_map(|m| models.get(m)).collect();
        let weakest = named.iter().map(|m| m.quality).min();
        // Tiers climb in tier order; other targets by `quality`.
        let climbs = match target {
            Target::Tiers(t) => t.iter().any(|t| t.model != t_first(target)),
            _ => named.iter().any(|m| Some(m.quality) > weakest),
        };
        if !climbs {
            cx.err(
                format!("{path}.escalate_on"),
                "this route names no model stronger (higher `quality`) than another, so a failing answer has nowhere to go; add `escalate_to: [MODEL]`, or `max_escalations: 0` to only mark failing answers",
            );
        }
    }
    if cx.errors.len() != before {
        return (None, client);
    }
    let e = Escalation { on, to, max, min_avg_logprob: raw.min_avg_logprob, refusal_patterns, streams: raw.check_streams.unwrap_or(false) };
    (Some(Box::new(e)), client)
}

/// The first model a target names.
fn t_first(target: &Target) -> &str {
    target.models().first().copied().unwrap_or_default()
}

fn client_of(cx: &mut Ctx, path: &str, raw: RawClientEscalation, target: &Target) -> Option<ClientEscalation> {
    if matches!(target, Target::Model(_)) {
        cx.err(path, "a route with a fixed `target` has no tier to escalate from; use it on a `tiers`, `select` or `split` route");
        return None;
    }
    match (raw.requested_model.trim(), raw.window_s) {
        ("always", None) => Some(ClientEscalation::Always),
        ("always", Some(_)) => {
            cx.err(format!("{path}.window_s"), "`window_s` goes with `requested_model: on_retry`");
            None
        }
        ("on_retry", w) => {
            let secs = w.unwrap_or(300);
            if secs == 0 || secs > 86_400 {
                cx.err(format!("{path}.window_s"), format!("a retry window of {secs} s is outside 1–86400"));
                return None;
            }
            Some(ClientEscalation::OnRetry { window: std::time::Duration::from_secs(secs) })
        }
        (other, _) => {
            cx.err(format!("{path}.requested_model"), format!("unknown value `{other}`; expected on_retry or always"));
            None
        }
    }
}
