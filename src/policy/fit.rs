//! Whether a route matches a request and whether a model can serve it:
//! route conditions, model fitness (dialect, capabilities, context, local
//! mode), `select` scoring, and sticky split points.

use super::*;

/// Why a route did not match.
#[derive(Debug, Clone, Copy)]
pub(super) enum Miss {
    Dialect,
    NoModel,
    Model,
    App,
    Task,
    Complexity,
    Tokens,
    Stream,
    Tools,
    Header(usize),
}

pub(super) fn route_check(r: &Route, f: &Facts<'_>) -> Result<(), Miss> {
    let m = &r.matcher;
    let ok = |c: bool, miss| if c { Ok(()) } else { Err(miss) };
    let reachable = Dialect::ALL.iter().any(|d| r.speaks[*d as usize] && translate::can_translate(f.api, f.dialect, *d));
    ok(r.dialects[f.dialect as usize] && reachable, Miss::Dialect)?;
    let model = f.model.ok_or(Miss::NoModel)?;
    // A dated id or alias matches as the configured model it names, too.
    let matches = |g: &wildmatch::WildMatch| g.matches(model) || f.configured.is_some_and(|c| g.matches(&c.name));
    ok(m.model.as_ref().is_none_or(matches), Miss::Model)?;
    ok(m.app.as_ref().is_none_or(|g| g.matches(&f.app)), Miss::App)?;
    ok(m.task.as_ref().is_none_or(|t| f.task.as_deref() == Some(t.as_str())), Miss::Task)?;
    ok(m.complexity.is_none_or(|c| c.contains(u64::from(f.complexity.value))), Miss::Complexity)?;
    ok(m.stream.is_none_or(|s| s == f.stream), Miss::Stream)?;
    ok(m.tools.is_none_or(|t| t == f.tools), Miss::Tools)?;
    for (i, (name, value)) in m.header.iter().enumerate() {
        ok(f.header(name) == Some(value.as_str()), Miss::Header(i))?;
    }
    // Last: the only condition that may need counting tokens.
    ok(m.tokens.is_none_or(|t| t.contains(f.tokens().count)), Miss::Tokens)
}

pub(super) fn describe_miss(r: &Route, f: &Facts<'_>, miss: Miss) -> String {
    let m = &r.matcher;
    let opt = |v: Option<&str>| v.map(|s| format!("`{s}`")).unwrap_or_else(|| "none".into());
    match miss {
        Miss::Dialect if !r.dialects[f.dialect as usize] => format!("request is {}; the route matches {} requests", f.dialect, dialect_list(&r.dialects)),
        Miss::Dialect => {
            format!("request is {} {}; the route's models speak {} and this API is not translated", f.dialect, f.api.as_str(), dialect_list(&r.speaks))
        }
        Miss::NoModel => "the request names no model".into(),
        Miss::Model => format!("model {} does not match `{}`", opt(f.model), m.model.as_ref().map(|g| g.to_string()).unwrap_or_default()),
        Miss::App => format!("app `{}` does not match `{}`", f.app, m.app.as_ref().map(|g| g.to_string()).unwrap_or_default()),
        Miss::Task => format!("task {} is not `{}`", opt(f.task.as_deref()), m.task.as_deref().unwrap_or("")),
        Miss::Complexity => format!("complexity {} is not in {}", f.complexity.value, m.complexity.map(|c| c.to_string()).unwrap_or_default()),
        Miss::Tokens => format!("~{} input tokens is not in {}", f.tokens().count, m.tokens.map(|c| c.to_string()).unwrap_or_default()),
        Miss::Stream => format!("stream is {}", f.stream),
        Miss::Tools => format!("tools present is {}", f.tools),
        Miss::Header(i) => {
            let (name, value) = &m.header[i];
            format!("header {name} is {} (wants `{value}`)", opt(f.header(name)))
        }
    }
}

pub(super) fn dialect_list(set: &[bool; Dialect::COUNT]) -> String {
    let ds: Vec<&str> = Dialect::ALL.iter().filter(|d| set[**d as usize]).map(|d| d.as_str()).collect();
    ds.join(", ")
}

/// Why a model cannot serve this request.
#[derive(Debug, Clone)]
pub(super) enum Unfit {
    Dialect(Dialect),
    NotLocal(&'static str),
    Context { need: u64, context: u64 },
    Lacks(Capability),
    TooExpensive { price: f64, max: f64 },
}

impl Unfit {
    pub(super) fn describe(&self, snap: &Snapshot, m: &Model, f: &Facts<'_>) -> String {
        match self {
            Unfit::Dialect(d) => format!("speaks {d} and the request is {} {}, which is not translated", f.dialect, f.api.as_str()),
            Unfit::NotLocal(why) => format!("provider `{}` is not local ({why})", snap.providers[m.provider].name),
            Unfit::Context { need, context } => format!("needs ~{need} tokens (input + max_tokens) but its context window is {context}"),
            Unfit::Lacks(c) => format!("lacks the `{}` capability", c.as_str()),
            Unfit::TooExpensive { price, max } => format!("blended price ${price:.3}/Mtok is over max_usd_per_mtok ${max}"),
        }
    }
}

/// The checks every planned model passes.
pub(super) fn fit(snap: &Snapshot, m: &Model, f: &Facts<'_>, mode: Mode) -> Result<(), Unfit> {
    let d = snap.dialect_of(m);
    if !translate::can_translate(f.api, f.dialect, d) {
        return Err(Unfit::Dialect(d));
    }
    if mode == Mode::LocalOnly && !snap.is_local(m) {
        return Err(Unfit::NotLocal("routing mode local-only"));
    }
    if let Some(context) = m.context_tokens {
        let out = f.max_tokens.unwrap_or(0);
        // Count tokens only when the free upper bound does not settle it.
        if f.tokens_upper_bound().saturating_add(out) > context {
            let need = f.tokens_for(Some(&m.id)).count.saturating_add(out);
            if need > context {
                return Err(Unfit::Context { need, context });
            }
        }
    }
    Ok(())
}

/// Extra filters of a `select`, then the request's own needs.
pub(super) fn select_fit(snap: &Snapshot, s: &Select, m: &Model, f: &Facts<'_>) -> Result<(), Unfit> {
    if s.local_only && !snap.is_local(m) {
        return Err(Unfit::NotLocal("select.local_only"));
    }
    if let Some(max) = s.max_usd_per_mtok {
        let price = m.blended_usd_per_mtok();
        if price > max {
            return Err(Unfit::TooExpensive { price, max });
        }
    }
    let needs = [(f.tools, Capability::Tools), (f.response_format, Capability::Json), (f.stream, Capability::Streaming)];
    let implied = needs.iter().filter(|(n, _)| *n).map(|(_, c)| c);
    match s.require.iter().chain(implied).find(|c| !m.has(**c)) {
        Some(c) => Err(Unfit::Lacks(*c)),
        None => Ok(()),
    }
}

/// Min–max normalise so the best value scores 1 (all equal: 1).
pub(super) fn norm(v: f64, lo: f64, hi: f64, higher_is_better: bool) -> f64 {
    if hi - lo <= f64::EPSILON {
        return 1.0;
    }
    let x = (v - lo) / (hi - lo);
    if higher_is_better {
        x
    } else {
        1.0 - x
    }
}

/// Score candidates by the mode's weights: cheaper (blended price), better
/// (`quality`), faster (`latency_ms`; unknown scores 0.5).
pub(super) fn scores(snap: &Snapshot, ms: &[&Model], mode: Mode) -> Vec<ScoreParts> {
    let w = snap.routing.weights(mode);
    let range = |vals: &mut dyn Iterator<Item = f64>| vals.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (clo, chi) = range(&mut ms.iter().map(|m| m.blended_usd_per_mtok()));
    let (qlo, qhi) = range(&mut ms.iter().map(|m| f64::from(m.quality)));
    let (llo, lhi) = range(&mut ms.iter().filter_map(|m| m.latency_ms).map(|l| l as f64));
    ms.iter()
        .map(|m| {
            let cost = norm(m.blended_usd_per_mtok(), clo, chi, false);
            let quality = norm(f64::from(m.quality), qlo, qhi, true);
            let latency = m.latency_ms.map(|l| norm(l as f64, llo, lhi, false)).unwrap_or(0.5);
            ScoreParts { total: w.cost * cost + w.quality * quality + w.latency * latency, cost, quality, latency }
        })
        .collect()
}

/// A number in [0, 1) that is the same for the same route, app and user
/// (random when the request names no user).
pub(super) fn split_point(route: &str, app: &str, user: Option<&str>) -> f64 {
    let x = match user {
        Some(u) => {
            let d = Sha256::new().chain_update(route).chain_update([0]).chain_update(app).chain_update([0]).chain_update(u).finalize();
            u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
        }
        None => RandomState::new().hash_one(Instant::now()),
    };
    (x >> 11) as f64 / (1u64 << 53) as f64
}

pub(super) fn pick_arm(arms: &[Arm], point: f64) -> &Arm {
    let total: f64 = arms.iter().map(|a| a.weight).sum();
    let mut acc = 0.0;
    for a in arms {
        acc += a.weight / total;
        if point < acc && a.weight > 0.0 {
            return a;
        }
    }
    arms.iter().rev().find(|a| a.weight > 0.0).unwrap_or(&arms[0])
}
