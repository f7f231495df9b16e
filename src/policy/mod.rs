//! Which model and provider serve a request: the ordered attempt plan.
//!
//! 1. `classify` reads the request once (app, task, complexity, size,
//!    client controls).
//! 2. Routes are tried in file order; the first that matches picks the
//!    target: a fixed model, a complexity tier, the best-scored candidate of
//!    a `select`, or a sticky split arm. An admin override replaces the
//!    target of its route.
//! 3. The plan is that model, then the route's fallbacks, then the model's
//!    own fallbacks, without repeats. Every model passes the same checks:
//!    it speaks the request's dialect (until translation exists), it is
//!    local when the mode is local-only, its context window holds the input
//!    plus `max_tokens`. A model that fails is skipped with its reason.
//! 4. In shadow mode the decision is only reported; the request goes out as
//!    if no route matched.
//!
//! `Trace` records every step for `modelgate route` and `POST /admin/route`;
//! on the request path it is off and costs nothing.

pub mod classify;
pub mod explain;
pub mod overrides;
mod price;
pub mod tokens;

use std::hash::{BuildHasher, RandomState};
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};

pub use classify::{classify, Facts, Score, Source};
pub use overrides::{OverrideStore, Overrides};

use crate::config::{Arm, Capability, Downgrade, Mode, Model, Route, Select, Snapshot, Target};
use crate::dialect::{Dialect, ErrorKind, GatewayError};
use crate::translate;

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
pub struct Decision<'s> {
    pub route: Option<&'s Route>,
    pub mode: Mode,
    /// The split arm the request landed in.
    pub arm: Option<&'s str>,
    /// In shadow mode: the model routing would have chosen (`refused` when
    /// it would have refused the request).
    pub shadow: Option<String>,
    /// The route's target was replaced by an admin override.
    pub overridden: bool,
    pub attempts: Vec<Attempt<'s>>,
}

impl Decision<'_> {
    pub fn route_label(&self) -> &str {
        self.route.map(|r| r.name.as_str()).unwrap_or("none")
    }
}

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
struct Tr<'t>(Option<&'t mut Trace>);

impl Tr<'_> {
    fn on(&self) -> bool {
        self.0.is_some()
    }
    fn note(&mut self, f: impl FnOnce() -> String) {
        if let Some(t) = self.0.as_mut() {
            t.notes.push(f());
        }
    }
    fn target(&mut self, f: impl FnOnce() -> String) {
        if let Some(t) = self.0.as_mut() {
            t.target.push(f());
        }
    }
    fn route(&mut self, route: &str, matched: bool, why: impl FnOnce() -> String) {
        if let Some(t) = self.0.as_mut() {
            t.routes.push(RouteCheck { route: route.to_string(), matched, why: why() });
        }
    }
    fn candidate(&mut self, model: &str, role: &'static str, kept: bool, why: impl FnOnce() -> String, score: Option<ScoreParts>) {
        if let Some(t) = self.0.as_mut() {
            t.candidates.push(CandidateCheck { model: model.to_string(), role, kept, why: why(), score });
        }
    }
}

/// Why a route did not match.
#[derive(Debug, Clone, Copy)]
enum Miss {
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

fn route_check(r: &Route, f: &Facts<'_>) -> Result<(), Miss> {
    let m = &r.matcher;
    let ok = |c: bool, miss| if c { Ok(()) } else { Err(miss) };
    let reachable = Dialect::ALL.iter().any(|d| r.speaks[*d as usize] && translate::can_translate(f.api, f.dialect, *d));
    ok(r.dialects[f.dialect as usize] && reachable, Miss::Dialect)?;
    let model = f.model.ok_or(Miss::NoModel)?;
    ok(m.model.as_ref().is_none_or(|g| g.matches(model)), Miss::Model)?;
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

fn describe_miss(r: &Route, f: &Facts<'_>, miss: Miss) -> String {
    let m = &r.matcher;
    let opt = |v: Option<&str>| v.map(|s| format!("`{s}`")).unwrap_or_else(|| "none".into());
    match miss {
        Miss::Dialect if !r.dialects[f.dialect as usize] => format!("request is {}; the route matches {} requests", f.dialect, dialect_list(&r.dialects)),
        Miss::Dialect => format!("request is {} {}; the route's models speak {} and this API is not translated", f.dialect, f.api.as_str(), dialect_list(&r.speaks)),
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

fn dialect_list(set: &[bool; Dialect::COUNT]) -> String {
    let ds: Vec<&str> = Dialect::ALL.iter().filter(|d| set[**d as usize]).map(|d| d.as_str()).collect();
    ds.join(", ")
}

/// Why a model cannot serve this request.
#[derive(Debug, Clone)]
enum Unfit {
    Dialect(Dialect),
    NotLocal(&'static str),
    Context { need: u64, context: u64 },
    Lacks(Capability),
    TooExpensive { price: f64, max: f64 },
}

impl Unfit {
    fn describe(&self, snap: &Snapshot, m: &Model, f: &Facts<'_>) -> String {
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
fn fit(snap: &Snapshot, m: &Model, f: &Facts<'_>, mode: Mode) -> Result<(), Unfit> {
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
fn select_fit(snap: &Snapshot, s: &Select, m: &Model, f: &Facts<'_>) -> Result<(), Unfit> {
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
fn norm(v: f64, lo: f64, hi: f64, higher_is_better: bool) -> f64 {
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
fn scores(snap: &Snapshot, ms: &[&Model], mode: Mode) -> Vec<ScoreParts> {
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
fn split_point(route: &str, app: &str, user: Option<&str>) -> f64 {
    let x = match user {
        Some(u) => {
            let d = Sha256::new().chain_update(route).chain_update([0]).chain_update(app).chain_update([0]).chain_update(u).finalize();
            u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
        }
        None => RandomState::new().hash_one(Instant::now()),
    };
    (x >> 11) as f64 / (1u64 << 53) as f64
}

fn pick_arm(arms: &[Arm], point: f64) -> &Arm {
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

/// The models a target offers, best first, and whether all of them (not
/// just the first that fits) belong in the plan.
struct Primary<'s> {
    models: Vec<&'s Model>,
    all: bool,
    arm: Option<&'s str>,
    /// Select candidates that were filtered out.
    rejected: Vec<(&'s Model, Unfit)>,
}

impl<'s> Primary<'s> {
    fn one(models: Vec<&'s Model>, arm: Option<&'s str>) -> Self {
        Primary { models, all: false, arm, rejected: Vec::new() }
    }
}

fn strongest<'s>(ms: impl Iterator<Item = &'s Model>) -> Option<&'s Model> {
    // Highest quality; among equals the later (usually pricier) one.
    ms.fold(None, |best: Option<&Model>, m| if best.is_none_or(|b| m.quality >= b.quality) { Some(m) } else { best })
}

fn primary<'s>(snap: &'s Snapshot, route: &'s Route, f: &Facts<'_>, mode: Mode, tr: &mut Tr<'_>) -> Primary<'s> {
    let get = |n: &str| snap.models.get(n);
    let max = f.controls.tier_max;
    match &route.target {
        Target::Model(m) => {
            tr.target(|| format!("target: {m}"));
            Primary::one(get(m).into_iter().collect(), None)
        }
        Target::Tiers(tiers) => {
            let score = f.complexity.value;
            let chosen = if max { tiers.len() - 1 } else { tiers.iter().position(|t| score <= t.max_complexity).unwrap_or(tiers.len() - 1) };
            tr.target(|| {
                if max {
                    format!("tiers: x-modelgate-tier: max → top tier ({})", tiers[chosen].model)
                } else {
                    format!("tiers: complexity {score} → tier max_complexity {} ({})", tiers[chosen].max_complexity, tiers[chosen].model)
                }
            });
            // The chosen tier, then the tiers above, then below.
            let order = (chosen..tiers.len()).chain((0..chosen).rev());
            Primary::one(order.filter_map(|i| get(&tiers[i].model)).collect(), None)
        }
        Target::Select(s) => {
            let mut kept: Vec<&Model> = Vec::new();
            let mut rejected = Vec::new();
            for m in s.candidates.iter().filter_map(|n| get(n)) {
                match select_fit(snap, s, m, f).and_then(|()| fit(snap, m, f, mode)) {
                    Ok(()) => kept.push(m),
                    Err(u) => {
                        tr.candidate(&m.name, "candidate", false, || u.describe(snap, m, f), None);
                        rejected.push((m, u));
                    }
                }
            }
            let parts = scores(snap, &kept, mode);
            let mut ranked: Vec<(&Model, ScoreParts)> = kept.into_iter().zip(parts).collect();
            // Stable sorts: ties keep config order.
            ranked.sort_by(|a, b| b.1.total.total_cmp(&a.1.total));
            if mode == Mode::LocalPreferred {
                ranked.sort_by_key(|(m, _)| !snap.is_local(m));
            }
            if max {
                ranked.sort_by_key(|(m, _)| std::cmp::Reverse(m.quality));
            }
            let w = snap.routing.weights(mode);
            tr.target(|| {
                let how = if max { "x-modelgate-tier: max → highest quality first".to_string() } else { format!("weights cost {:.2} / quality {:.2} / latency {:.2}", w.cost, w.quality, w.latency) };
                let local = if mode == Mode::LocalPreferred { ", local models first" } else { "" };
                format!("select ({mode}): {how}{local}")
            });
            if tr.on() {
                for (m, p) in &ranked {
                    tr.candidate(&m.name, "candidate", true, || format!("score {:.3}", p.total), Some(*p));
                }
            }
            Primary { models: ranked.into_iter().map(|(m, _)| m).collect(), all: true, arm: None, rejected }
        }
        Target::Split(arms) => {
            let arm = if max {
                let best = strongest(arms.iter().filter_map(|a| get(&a.model)));
                let a = arms.iter().find(|a| best.is_some_and(|b| b.name == a.model)).unwrap_or(&arms[0]);
                tr.target(|| format!("split: x-modelgate-tier: max → strongest arm `{}`", a.name));
                a
            } else {
                let point = split_point(&route.name, &f.app, f.user.as_deref());
                let a = pick_arm(arms, point);
                tr.target(|| match &f.user {
                    Some(u) => format!("split: app `{}` + user `{u}` → point {point:.4} → arm `{}` (sticky)", f.app, a.name),
                    None => format!("split: no user in the request → random point {point:.4} → arm `{}`", a.name),
                });
                a
            };
            Primary::one(get(&arm.model).into_iter().collect(), Some(arm.name.as_str()))
        }
    }
}

/// The mode for this request: the header, else the route's, else global.
/// A header cannot lift local-only set by config.
fn mode_for(snap: &Snapshot, route: Option<&Route>, f: &Facts<'_>, tr: &mut Tr<'_>) -> Mode {
    let (base, from) = match route.and_then(|r| r.mode) {
        Some(m) => (m, "route"),
        None => (snap.routing.mode, "routing.mode"),
    };
    let mode = match f.controls.mode {
        Some(h) if base == Mode::LocalOnly && h != Mode::LocalOnly => {
            tr.note(|| format!("x-modelgate-mode: {h} ignored: local-only from {from} cannot be lifted by a request"));
            base
        }
        Some(h) => h,
        None => base,
    };
    if let Some(t) = tr.0.as_mut() {
        t.mode = format!("{mode} (from {})", if f.controls.mode == Some(mode) && mode != base { "x-modelgate-mode header" } else { from });
    }
    mode
}

/// Turn an ordered model list into attempts: every model passes `fit`
/// (and the route's `select` filters, fallbacks included), once.
struct Chain<'s> {
    attempts: Vec<Attempt<'s>>,
    rejected: Vec<(&'s Model, Unfit)>,
    seen: Vec<&'s str>,
    select: Option<&'s Select>,
}

impl<'s> Chain<'s> {
    fn new(select: Option<&'s Select>) -> Self {
        Chain { attempts: Vec::new(), rejected: Vec::new(), seen: Vec::new(), select }
    }

    /// Add `m` if it fits; returns whether it was added.
    fn offer(&mut self, snap: &Snapshot, m: &'s Model, f: &Facts<'_>, mode: Mode, role: &'static str, tr: &mut Tr<'_>) -> bool {
        if self.seen.contains(&m.name.as_str()) {
            return false;
        }
        self.seen.push(&m.name);
        let verdict = self.select.map_or(Ok(()), |s| select_fit(snap, s, m, f)).and_then(|()| fit(snap, m, f, mode));
        match verdict {
            Ok(()) => {
                tr.candidate(&m.name, role, true, || "fits".into(), None);
                self.attempts.push(Attempt { model: Some(m), provider: m.provider });
                true
            }
            Err(u) => {
                tr.candidate(&m.name, role, false, || u.describe(snap, m, f), None);
                self.rejected.push((m, u));
                false
            }
        }
    }

    fn offer_names(&mut self, snap: &'s Snapshot, names: &'s [String], f: &Facts<'_>, mode: Mode, role: &'static str, tr: &mut Tr<'_>) {
        for m in names.iter().filter_map(|n| snap.models.get(n)) {
            self.offer(snap, m, f, mode, role, tr);
        }
    }

    fn finish(self, snap: &Snapshot, f: &Facts<'_>, mode: Mode) -> Result<Vec<Attempt<'s>>, GatewayError> {
        if !self.attempts.is_empty() {
            return Ok(self.attempts);
        }
        let list: Vec<String> = self.rejected.iter().map(|(m, u)| format!("{}: {}", m.name, u.describe(snap, m, f))).collect();
        let list = list.join("; ");
        let context = self.rejected.iter().any(|(_, u)| matches!(u, Unfit::Context { .. }));
        let not_local = !self.rejected.is_empty() && self.rejected.iter().all(|(_, u)| matches!(u, Unfit::NotLocal(_)));
        Err(if context {
            let need = self.rejected.iter().find_map(|(_, u)| if let Unfit::Context { need, .. } = u { Some(*need) } else { None }).unwrap_or(0);
            GatewayError::new(400, ErrorKind::InvalidRequest, "context_length_exceeded", format!(
                "this request needs about {need} tokens (estimated input plus max_tokens), more than any model that could serve it holds ({list}); shorten the conversation or lower max_tokens"
            ))
        } else if not_local || mode == Mode::LocalOnly {
            GatewayError::new(403, ErrorKind::PermissionDenied, "local_only", format!(
                "routing mode local-only keeps requests on this host, but no local model can serve this one ({list}); add a model on a provider with `local: true` or use another routing mode"
            ))
        } else {
            GatewayError::new(400, ErrorKind::InvalidRequest, "no_model", format!("no configured model can serve this request ({list})"))
        })
    }
}

/// The plan when no route applies: the requested model (if configured, in
/// the request's dialect) with its fallbacks, else the dialect's default
/// provider with the body unchanged.
fn unrouted<'s>(snap: &'s Snapshot, f: &Facts<'_>, mode: Mode, tr: &mut Tr<'_>) -> Result<Vec<Attempt<'s>>, GatewayError> {
    if let Some(m) = f.model.and_then(|n| snap.models.get(n)).filter(|m| translate::can_translate(f.api, f.dialect, snap.dialect_of(m))) {
        let mut chain = Chain::new(None);
        chain.offer(snap, m, f, mode, "requested", tr);
        chain.offer_names(snap, &m.fallbacks, f, mode, "model fallback", tr);
        return chain.finish(snap, f, mode);
    }
    let Some(provider) = f.provider_hint.or(snap.default_provider[f.dialect as usize]) else {
        return Err(GatewayError::new(502, ErrorKind::Upstream, "no_provider", format!(
            "no {d} provider is configured; add a provider with `kind: {d}` to the config",
            d = f.dialect
        )));
    };
    let p = &snap.providers[provider];
    if mode == Mode::LocalOnly && !p.local {
        return Err(GatewayError::new(403, ErrorKind::PermissionDenied, "local_only", format!(
            "routing mode local-only keeps requests on this host, but `{}` is not a configured model and the default {} provider `{}` is not local; configure a local model for it or use another routing mode",
            f.model.unwrap_or("(no model)"),
            f.dialect,
            p.name
        )));
    }
    tr.note(|| format!("`{}` is not a configured {} model: forwarded unchanged to the default provider `{}`", f.model.unwrap_or("(no model)"), f.dialect, p.name));
    Ok(vec![Attempt { model: None, provider }])
}

/// The routed plan for `route`.
fn routed<'s>(
    snap: &'s Snapshot,
    route: &'s Route,
    over: Option<&'s Model>,
    f: &Facts<'_>,
    mode: Mode,
    tr: &mut Tr<'_>,
) -> Result<(Vec<Attempt<'s>>, Option<&'s str>), GatewayError> {
    let p = match &f.controls.model {
        Some(want) => {
            let allowed = route.client_models.as_ref().unwrap_or(&snap.routing.client_models);
            client_model(snap, want, allowed, Some(route))?;
            tr.target(|| format!("x-modelgate-model: {want} (allowed by config)"));
            Primary::one(snap.models.get(want).into_iter().collect(), None)
        }
        None => match over {
            Some(m) => {
                tr.target(|| format!("target: {} (admin override)", m.name));
                Primary::one(vec![m], None)
            }
            None => primary(snap, route, f, mode, tr),
        },
    };
    let select = match &route.target {
        Target::Select(s) => Some(s),
        _ => None,
    };
    let mut chain = Chain::new(select);
    let mut head: Option<&Model> = None;
    if p.all {
        // A select's ranked candidates are traced with their scores already.
        for m in &p.models {
            chain.offer(snap, m, f, mode, "candidate", &mut Tr(None));
        }
        head = p.models.first().copied();
        for (m, u) in p.rejected {
            chain.seen.push(&m.name);
            chain.rejected.push((m, u));
        }
    } else {
        for m in &p.models {
            if chain.offer(snap, m, f, mode, "target", tr) {
                head = Some(m);
                break;
            }
        }
    }
    chain.offer_names(snap, &route.fallbacks, f, mode, "route fallback", tr);
    if let Some(h) = head.or(p.models.first().copied()) {
        chain.offer_names(snap, &h.fallbacks, f, mode, "model fallback", tr);
    }
    Ok((chain.finish(snap, f, mode)?, p.arm))
}

fn client_model(snap: &Snapshot, want: &str, allowed: &[wildmatch::WildMatch], route: Option<&Route>) -> Result<(), GatewayError> {
    if !allowed.iter().any(|g| g.matches(want)) {
        let where_ = route.map(|r| format!("route `{}`'s client_models or ", r.name)).unwrap_or_default();
        return Err(GatewayError::new(403, ErrorKind::PermissionDenied, "model_not_allowed", format!(
            "x-modelgate-model: the config does not let clients pick `{want}` here; list it in {where_}routing.client_models, or drop the header"
        )));
    }
    if !snap.models.contains_key(want) {
        let names: Vec<&str> = snap.models.keys().map(String::as_str).collect();
        return Err(GatewayError::new(400, ErrorKind::InvalidRequest, "unknown_model", format!("x-modelgate-model: unknown model `{want}`; models: {}", names.join(", "))));
    }
    Ok(())
}

/// A request routing refuses, with what was decided before the refusal
/// (for the access log).
#[derive(Debug)]
pub struct Refused<'s> {
    pub route: Option<&'s Route>,
    pub mode: Mode,
    pub error: GatewayError,
}

impl From<Refused<'_>> for GatewayError {
    fn from(r: Refused<'_>) -> Self {
        r.error
    }
}

/// Decide the plan for a classified request.
pub fn decide<'s>(snap: &'s Snapshot, overrides: &'s Overrides, f: &Facts<'_>, trace: Option<&mut Trace>) -> Result<Decision<'s>, Refused<'s>> {
    let mut tr = Tr(trace);
    let mut route: Option<&Route> = None;
    for r in &snap.routes {
        match route_check(r, f) {
            Ok(()) => {
                tr.route(&r.name, true, || "all conditions hold".into());
                route = Some(r);
                break;
            }
            Err(miss) => tr.route(&r.name, false, || describe_miss(r, f, miss)),
        }
    }
    let mode = mode_for(snap, route, f, &mut tr);
    let refused = |error| Refused { route, mode, error };
    let Some(route) = route else {
        let attempts = match &f.controls.model {
            Some(want) => {
                client_model(snap, want, &snap.routing.client_models, None).map_err(refused)?;
                tr.target(|| format!("x-modelgate-model: {want} (allowed by routing.client_models)"));
                let mut chain = Chain::new(None);
                if let Some(m) = snap.models.get(want) {
                    chain.offer(snap, m, f, mode, "target", &mut tr);
                    chain.offer_names(snap, &m.fallbacks, f, mode, "model fallback", &mut tr);
                }
                chain.finish(snap, f, mode)
            }
            None => {
                if f.controls.tier_max {
                    tr.note(|| "x-modelgate-tier: max has no effect: no route matched".into());
                }
                unrouted(snap, f, mode, &mut tr)
            }
        };
        return Ok(Decision { route: None, mode, arm: None, shadow: None, overridden: false, attempts: attempts.map_err(refused)? });
    };

    // An admin override replaces the route's target (if it still applies
    // to this config).
    let over = overrides
        .get(&route.name)
        .filter(|o| overrides::check(snap, &route.name, &o.target).is_ok())
        .and_then(|o| snap.models.get(&o.target).map(|m| (o, m)));
    if let Some((o, m)) = over {
        tr.note(|| format!("admin override (set {}): route `{}` → {}", o.set_at, route.name, m.name));
    }
    let over = over.map(|(_, m)| m);
    let routed = routed(snap, route, over, f, mode, &mut tr);
    if !(route.shadow || snap.routing.shadow) {
        let (attempts, arm) = routed.map_err(refused)?;
        return Ok(Decision { route: Some(route), mode, arm, shadow: None, overridden: over.is_some(), attempts });
    }
    let would = match &routed {
        Ok((a, _)) => a.first().map(|a| a.model_label().to_string()).unwrap_or_default(),
        Err(e) => {
            tr.note(|| format!("shadow: routing would refuse: {}", e.message));
            "refused".into()
        }
    };
    tr.note(|| format!("shadow mode: would send to {would}; forwarding the request unchanged"));
    let arm = routed.ok().and_then(|(_, arm)| arm);
    // Forwarded as if no route matched: the global mode (or the header),
    // not the route's.
    let mode = mode_for(snap, None, f, &mut Tr(None));
    let attempts = unrouted(snap, f, mode, &mut tr).map_err(|error| Refused { route: Some(route), mode, error })?;
    Ok(Decision { route: Some(route), mode, arm, shadow: Some(would), overridden: over.is_some(), attempts })
}

/// Every model a route names (targets, tiers, candidates, arms, fallbacks).
fn route_models<'s>(snap: &'s Snapshot, route: &'s Route) -> Vec<&'s Model> {
    let names: Vec<&String> = match &route.target {
        Target::Model(m) => vec![m],
        Target::Tiers(t) => t.iter().map(|t| &t.model).collect(),
        Target::Select(s) => s.candidates.iter().collect(),
        Target::Split(a) => a.iter().map(|a| &a.model).collect(),
    };
    names.into_iter().chain(&route.fallbacks).filter_map(|n| snap.models.get(n)).collect()
}

/// The attempt that serves a request after a budget's `on_exceed:
/// downgrade`: the named model, or the cheapest model the request's route
/// names (without a route: any configured model), that can serve it under
/// the same mode and filters as the original plan.
pub fn downgrade<'s>(snap: &'s Snapshot, d: &Decision<'s>, f: &Facts<'_>, to: &Downgrade) -> Result<Attempt<'s>, GatewayError> {
    let select = d.route.and_then(|r| match &r.target {
        Target::Select(s) => Some(s),
        _ => None,
    });
    let mut chain = Chain::new(select);
    let mut off = Tr(None);
    match to {
        Downgrade::Model(name) => {
            if let Some(m) = snap.models.get(name) {
                chain.offer(snap, m, f, d.mode, "downgrade", &mut off);
            }
        }
        Downgrade::Cheapest => {
            let mut ms = match d.route {
                Some(r) => route_models(snap, r),
                None => snap.models.values().collect(),
            };
            ms.sort_by(|a, b| a.blended_usd_per_mtok().total_cmp(&b.blended_usd_per_mtok()));
            for m in ms {
                if chain.offer(snap, m, f, d.mode, "downgrade", &mut off) {
                    break;
                }
            }
        }
    }
    chain.finish(snap, f, d.mode).map(|a| a[0])
}

#[cfg(test)]
mod tests;
