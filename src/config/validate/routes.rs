//! Validation of `routes:` and `routing:`.

use std::collections::HashMap;

use indexmap::IndexMap;
use wildmatch::WildMatch;

use super::super::raw::{RawBump, RawComplexity, RawMatch, RawRange, RawRoute, RawRouting, RawSelect};
use super::{capabilities_of, check_model, check_model_list, targets, Ctx};
use crate::config::*;
use crate::dialect::Dialect;

fn glob(s: Option<String>) -> Option<WildMatch> {
    s.map(|g| WildMatch::new(&g))
}

/// `5`, `"<=3"`, `"<3"`, `">=4"`, `">4"`, `"4-7"` → an inclusive range
/// within `0..=limit`.
pub(crate) fn parse_range(raw: &RawRange, limit: u64) -> Result<Range, String> {
    let num = |s: &str| s.trim().parse::<u64>().map_err(|_| format!("`{s}` is not a whole number"));
    let r = match raw {
        RawRange::Exact(n) => Range { min: *n, max: *n },
        RawRange::Text(t) => {
            let t = t.trim();
            if let Some(n) = t.strip_prefix("<=") {
                Range { min: 0, max: num(n)? }
            } else if let Some(n) = t.strip_prefix(">=") {
                Range { min: num(n)?, max: limit }
            } else if let Some(n) = t.strip_prefix('<') {
                let n = num(n)?;
                if n == 0 {
                    return Err("`<0` matches nothing".into());
                }
                Range { min: 0, max: n - 1 }
            } else if let Some(n) = t.strip_prefix('>') {
                Range { min: num(n)?.saturating_add(1), max: limit }
            } else if let Some((a, b)) = t.split_once('-') {
                Range { min: num(a)?, max: num(b)? }
            } else {
                let n = num(t).map_err(|_| format!("`{t}` is not a range; write e.g. 5, \"<=3\", \">=8\" or \"4-7\""))?;
                Range { min: n, max: n }
            }
        }
    };
    if r.min > r.max {
        return Err(format!("the range {}-{} is empty", r.min, r.max));
    }
    if r.min > limit {
        return Err(format!("{} is above the largest possible value {limit}", r.min));
    }
    Ok(Range { min: r.min, max: r.max.min(limit) })
}

fn mode_of(cx: &mut Ctx, path: &str, s: &str) -> Option<Mode> {
    let m = Mode::parse(s);
    if m.is_none() {
        cx.err(path, format!("unknown routing mode `{s}`; expected one of: {}", Mode::names()));
    }
    m
}

fn match_of(cx: &mut Ctx, path: &str, m: RawMatch) -> RouteMatch {
    let dialect = m.dialect.as_deref().and_then(|d| {
        let parsed = Dialect::parse(d);
        if parsed.is_none() {
            cx.err(format!("{path}.dialect"), format!("unknown dialect `{d}`; expected one of: openai, anthropic, gemini"));
        }
        parsed
    });
    let mut range =
        |field: &str, raw: Option<RawRange>, limit: u64| raw.and_then(|r| parse_range(&r, limit).map_err(|e| cx.err(format!("{path}.{field}"), e)).ok());
    let complexity = range("complexity", m.complexity, 10);
    let tokens = range("tokens", m.tokens, u64::MAX);
    let mut header = Vec::new();
    for (name, value) in m.header {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            cx.err(format!("{path}.header.{name}"), format!("`{name}` is not a valid HTTP header name"));
        }
        header.push((name.to_ascii_lowercase(), value));
    }
    RouteMatch { model: glob(m.model), app: glob(m.app), task: m.task, dialect, complexity, tokens, stream: m.stream, tools: m.tools, header }
}

fn select_of(cx: &mut Ctx, path: &str, s: RawSelect, model_names: &[String]) -> Select {
    if s.candidates.is_empty() {
        cx.err(format!("{path}.candidates"), "list at least one model to choose from");
    }
    check_model_list(cx, &format!("{path}.candidates"), &s.candidates, model_names, None);
    let require = capabilities_of(cx, &format!("{path}.require"), &s.require);
    if let Some(p) = s.max_usd_per_mtok {
        if !(p.is_finite() && p >= 0.0) {
            cx.err(format!("{path}.max_usd_per_mtok"), format!("must be a price ≥ 0 in USD per million tokens, got {p}"));
        }
    }
    Select { candidates: s.candidates, require, max_usd_per_mtok: s.max_usd_per_mtok, local_only: s.local_only }
}

/// Names that go out in response headers (route, split arm) must be
/// visible ASCII.
pub(super) fn header_safe(cx: &mut Ctx, path: &str, name: &str) {
    if !name.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        cx.err(path, format!("`{name}` is sent in response headers, so it may only use visible ASCII characters"));
    }
}

pub(super) fn route_of(
    cx: &mut Ctx,
    path: &str,
    mut raw: RawRoute,
    models: &IndexMap<String, Model>,
    providers: &[Provider],
    model_names: &[String],
    cache: &crate::config::cache::CacheDefaults,
) -> Option<Route> {
    let before = cx.errors.len();
    let esc = escalate::Raw::take(&mut raw);
    if raw.name.trim().is_empty() {
        cx.err(format!("{path}.name"), "must not be empty");
    }
    header_safe(cx, &format!("{path}.name"), &raw.name);
    let matcher = match_of(cx, &format!("{path}.match"), raw.match_);
    let mut mode = raw.mode.as_deref().and_then(|m| mode_of(cx, &format!("{path}.mode"), m));

    let given: Vec<&str> = [("target", raw.target.is_some()), ("tiers", raw.tiers.is_some()), ("select", raw.select.is_some()), ("split", raw.split.is_some())]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(n, _)| *n)
        .collect();
    if given.len() != 1 {
        let what = if given.is_empty() { "none".to_string() } else { given.join(" and ") };
        cx.err(path, format!("a route needs exactly one of `target`, `tiers`, `select`, `split` (this one has {what})"));
        return None;
    }
    let target = if let Some(t) = raw.target {
        check_model(cx, &format!("{path}.target"), &t, model_names);
        Target::Model(t)
    } else if let Some(tiers) = raw.tiers {
        targets::tiers_of(cx, &format!("{path}.tiers"), tiers, model_names)
    } else if let Some(s) = raw.select {
        let spath = format!("{path}.select");
        if let Some(m) = s.mode.as_deref() {
            if mode.is_some() {
                cx.err(format!("{spath}.mode"), "the route sets `mode` already; set it in one place");
            }
            mode = mode_of(cx, &format!("{spath}.mode"), m);
        }
        Target::Select(select_of(cx, &spath, s, model_names))
    } else {
        targets::split_of(cx, &format!("{path}.split"), raw.split.unwrap_or_default(), model_names)
    };
    check_model_list(cx, &format!("{path}.fallbacks"), &raw.fallbacks, model_names, None);
    if cx.errors.len() != before {
        return None;
    }

    if targets::lacks_capability(cx, path, &matcher, &target, &raw.fallbacks, models) {
        return None;
    }

    // Which request dialects the route applies to.
    let spoken: Vec<Dialect> = target.models().iter().filter_map(|m| models.get(*m)).map(|m| providers[m.provider].kind).collect();
    let mut speaks = [false; Dialect::COUNT];
    spoken.iter().for_each(|d| speaks[*d as usize] = true);
    let dialects = match matcher.dialect {
        Some(d) => {
            let mut only = [false; Dialect::COUNT];
            only[d as usize] = true;
            only
        }
        None => [true; Dialect::COUNT],
    };
    if mode == Some(Mode::LocalOnly) {
        let all = target.models().into_iter().chain(raw.fallbacks.iter().map(String::as_str));
        if !all.filter_map(|m| models.get(m)).any(|m| providers[m.provider].local) {
            cx.err(format!("{path}.mode"), "this route is local-only but none of its models is on a provider with `local: true`, so it would refuse every request; add a local model or change the mode");
            return None;
        }
    }
    let client_models = raw.client_models.map(|v| v.iter().map(|g| WildMatch::new(g)).collect());
    if let Some(r) = &raw.retry {
        super::resilience::retry_patch(cx, &format!("{path}.retry"), r);
    }
    let cache = cache.route(cx, path, raw.cache);
    let (escalate, client_escalation) = escalate::escalation_of(cx, path, esc, &target, models, model_names);
    Some(Route {
        name: raw.name,
        matcher,
        target,
        fallbacks: raw.fallbacks,
        shadow: raw.shadow,
        mode,
        client_models,
        dialects,
        speaks,
        retry: raw.retry,
        cache,
        escalate,
        client_escalation,
    })
}

fn bump(cx: &mut Ctx, path: &str, raw: Option<RawBump>, default: Bump) -> Bump {
    let b = raw.map(|b| Bump { over: b.over, add: b.add }).unwrap_or(default);
    if b.add > 10 {
        cx.err(format!("{path}.add"), "complexity scores run from 0 to 10");
    }
    b
}

fn complexity_of(cx: &mut Ctx, raw: RawComplexity) -> Complexity {
    let d = Complexity::default();
    let path = "routing.complexity";
    let keyword_match = match raw.keyword_match.as_deref() {
        None | Some("substring") => KeywordMatch::Substring,
        Some("word") => KeywordMatch::Word,
        Some(other) => {
            cx.err(format!("{path}.keyword_match"), format!("unknown keyword_match `{other}`; expected substring or word"));
            KeywordMatch::Substring
        }
    };
    let groups = match raw.keywords {
        None => d.groups,
        Some(gs) => gs
            .into_iter()
            .enumerate()
            .map(|(i, g)| {
                if g.score > 10 {
                    cx.err(format!("{path}.keywords[{i}].score"), "complexity scores run from 0 to 10");
                }
                if g.words.iter().any(|w| w.trim().is_empty()) || g.words.is_empty() {
                    cx.err(format!("{path}.keywords[{i}].words"), "list one or more non-empty keywords");
                }
                (g.score, g.words.iter().map(|w| w.trim().to_lowercase()).collect())
            })
            .collect(),
    };
    let default_score = raw.default_score.unwrap_or(d.default_score);
    if default_score > 10 {
        cx.err(format!("{path}.default_score"), "complexity scores run from 0 to 10");
    }
    Complexity {
        keyword_match,
        groups,
        default_score,
        long_conversation: bump(cx, &format!("{path}.long_conversation"), raw.long_conversation, d.long_conversation),
        many_questions: bump(cx, &format!("{path}.many_questions"), raw.many_questions, d.many_questions),
        long_message: bump(cx, &format!("{path}.long_message"), raw.long_message, d.long_message),
        index: std::sync::OnceLock::new(),
    }
}

pub(super) fn routing_of(cx: &mut Ctx, raw: RawRouting) -> Routing {
    let mut routing = Routing::default();
    if let Some(m) = raw.mode.as_deref().and_then(|m| mode_of(cx, "routing.mode", m)) {
        routing.mode = m;
    }
    routing.shadow = raw.shadow;
    for (name, w) in raw.weights {
        let path = format!("routing.weights.{name}");
        let Some(mode) = mode_of(cx, &path, &name) else { continue };
        let parts = [w.cost, w.quality, w.latency];
        let sum: f64 = parts.iter().sum();
        if parts.iter().any(|p| !(p.is_finite() && *p >= 0.0)) || sum <= 0.0 {
            cx.err(path, "cost, quality and latency must be numbers ≥ 0 with a positive sum, e.g. { cost: 0.4, quality: 0.4, latency: 0.2 }");
            continue;
        }
        routing.weights[mode as usize] = Weights { cost: w.cost / sum, quality: w.quality / sum, latency: w.latency / sum };
    }
    let mut app_keys = HashMap::new();
    for (hash, app) in raw.app_keys {
        let hex = hash.strip_prefix("sha256:").unwrap_or(&hash).to_ascii_lowercase();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            cx.err(
                format!("routing.app_keys.{hash}"),
                "must be the SHA-256 of an API key as 64 hex digits (print it with `modelgate hash-key`), never the key itself",
            );
        } else if app.trim().is_empty() {
            cx.err(format!("routing.app_keys.{hash}"), "the app name must not be empty");
        } else {
            app_keys.insert(hex, app);
        }
    }
    routing.app_keys = app_keys;
    for (i, t) in raw.tasks.into_iter().enumerate() {
        let path = format!("routing.tasks[{i}]");
        if t.task.trim().is_empty() {
            cx.err(format!("{path}.task"), "must name the task, e.g. extraction");
        }
        let system_regex = t.system_regex.and_then(|re| match regex::Regex::new(&re) {
            Ok(r) => Some(r),
            Err(e) => {
                cx.err(format!("{path}.system_regex"), format!("not a valid regular expression: {e}"));
                None
            }
        });
        routing.tasks.push(TaskRule {
            task: t.task,
            path: glob(t.path),
            model: glob(t.model),
            system_contains: t.system_contains.map(|s| s.to_lowercase()),
            system_regex,
            tools: t.tools,
            response_format: t.response_format,
        });
    }
    routing.complexity = complexity_of(cx, raw.complexity);
    routing.client_models = raw.client_models.iter().map(|g| WildMatch::new(g)).collect();
    routing
}

mod escalate;
#[cfg(test)]
mod tests;
