//! The plan: a route's primary model (fixed, tier, select or split arm,
//! or an admin override), then its fallbacks and the model's own, each
//! checked for fitness; the plan of a request no route takes.

use super::*;

/// The models a target offers, best first, and whether all of them (not
/// just the first that fits) belong in the plan.
pub(super) struct Primary<'s> {
    pub(super) models: Vec<&'s Model>,
    pub(super) all: bool,
    pub(super) arm: Option<&'s str>,
    /// Select candidates that were filtered out.
    pub(super) rejected: Vec<(&'s Model, Unfit)>,
}

impl<'s> Primary<'s> {
    pub(super) fn one(models: Vec<&'s Model>, arm: Option<&'s str>) -> Self {
        Primary { models, all: false, arm, rejected: Vec::new() }
    }
}

pub(super) fn strongest<'s>(ms: impl Iterator<Item = &'s Model>) -> Option<&'s Model> {
    // Highest quality; among equals the later (usually pricier) one.
    ms.fold(None, |best: Option<&Model>, m| if best.is_none_or(|b| m.quality >= b.quality) { Some(m) } else { best })
}

pub(super) fn primary<'s>(snap: &'s Snapshot, route: &'s Route, f: &Facts<'_>, mode: Mode, tr: &mut Tr<'_>) -> Primary<'s> {
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
                let how = if max {
                    "x-modelgate-tier: max → highest quality first".to_string()
                } else {
                    format!("weights cost {:.2} / quality {:.2} / latency {:.2}", w.cost, w.quality, w.latency)
                };
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
pub(super) fn mode_for(snap: &Snapshot, route: Option<&Route>, f: &Facts<'_>, tr: &mut Tr<'_>) -> Mode {
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
pub(super) struct Chain<'s> {
    pub(super) attempts: Vec<Attempt<'s>>,
    pub(super) rejected: Vec<(&'s Model, Unfit)>,
    pub(super) seen: Vec<&'s str>,
    pub(super) select: Option<&'s Select>,
}

impl<'s> Chain<'s> {
    pub(super) fn new(select: Option<&'s Select>) -> Self {
        Chain { attempts: Vec::new(), rejected: Vec::new(), seen: Vec::new(), select }
    }

    /// Add `m` if it fits; returns whether it was added.
    pub(super) fn offer(&mut self, snap: &Snapshot, m: &'s Model, f: &Facts<'_>, mode: Mode, role: &'static str, tr: &mut Tr<'_>) -> bool {
        if self.seen.contains(&m.name.as_str()) {
            return false;
        }
        self.seen.push(&m.name);
        let verdict = self.select.map_or(Ok(()), |s| select_fit(snap, s, m, f)).and_then(|()| fit(snap, m, f, mode));
        match verdict {
            Ok(()) => {
                tr.candidate(&m.name, role, true, || "fits".into(), None);
                // The model the client named by a dated id or alias gets that id.
                let as_requested = f.by_alias && f.configured.is_some_and(|c| std::ptr::eq(c, m));
                self.attempts.push(Attempt { model: Some(m), provider: m.provider, as_requested });
                true
            }
            Err(u) => {
                tr.candidate(&m.name, role, false, || u.describe(snap, m, f), None);
                self.rejected.push((m, u));
                false
            }
        }
    }

    pub(super) fn offer_names(&mut self, snap: &'s Snapshot, names: &'s [String], f: &Facts<'_>, mode: Mode, role: &'static str, tr: &mut Tr<'_>) {
        for m in names.iter().filter_map(|n| snap.models.get(n)) {
            self.offer(snap, m, f, mode, role, tr);
        }
    }

    pub(super) fn finish(self, snap: &Snapshot, f: &Facts<'_>, mode: Mode) -> Result<Vec<Attempt<'s>>, GatewayError> {
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
pub(super) fn unrouted<'s>(snap: &'s Snapshot, f: &Facts<'_>, mode: Mode, tr: &mut Tr<'_>) -> Result<Vec<Attempt<'s>>, GatewayError> {
    // (Looked up again: `Facts` may borrow a shorter-lived snapshot reference.)
    if let Some(m) = f.configured.and_then(|c| snap.models.get(&c.name)).filter(|m| translate::can_translate(f.api, f.dialect, snap.dialect_of(m))) {
        let mut chain = Chain::new(None);
        chain.offer(snap, m, f, mode, "requested", tr);
        chain.offer_names(snap, &m.fallbacks, f, mode, "model fallback", tr);
        return chain.finish(snap, f, mode);
    }
    let Some(provider) = f.provider_hint.or(snap.default_provider[f.dialect as usize]) else {
        return Err(GatewayError::new(
            502,
            ErrorKind::Upstream,
            "no_provider",
            format!("no {d} provider is configured; add a provider with `kind: {d}` to the config", d = f.dialect),
        ));
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
    tr.note(|| {
        format!("`{}` is not a configured {} model: forwarded unchanged to the default provider `{}`", f.model.unwrap_or("(no model)"), f.dialect, p.name)
    });
    Ok(vec![Attempt { model: None, provider, as_requested: false }])
}

/// The routed plan for `route`.
pub(super) fn routed<'s>(
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
            None => {
                let p = primary(snap, route, f, mode, tr);
                match route.client_escalation.and_then(|_| client_escalated(snap, route, p.models.first().copied(), f, tr)) {
                    Some(want) => Primary::one(vec![want], None),
                    None => p,
                }
            }
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

pub(super) fn client_model(snap: &Snapshot, want: &str, allowed: &[wildmatch::WildMatch], route: Option<&Route>) -> Result<(), GatewayError> {
    if !allowed.iter().any(|g| g.matches(want)) {
        let where_ = route.map(|r| format!("route `{}`'s client_models or ", r.name)).unwrap_or_default();
        return Err(GatewayError::new(
            403,
            ErrorKind::PermissionDenied,
            "model_not_allowed",
            format!("x-modelgate-model: the config does not let clients pick `{want}` here; list it in {where_}routing.client_models, or drop the header"),
        ));
    }
    if !snap.models.contains_key(want) {
        let names: Vec<&str> = snap.models.keys().map(String::as_str).collect();
        return Err(GatewayError::new(
            400,
            ErrorKind::InvalidRequest,
            "unknown_model",
            format!("x-modelgate-model: unknown model `{want}`; models: {}", names.join(", ")),
        ));
    }
    Ok(())
}

/// Every model a route names (targets, tiers, candidates, arms, fallbacks).
pub(super) fn route_models<'s>(snap: &'s Snapshot, route: &'s Route) -> Vec<&'s Model> {
    let names: Vec<&String> = match &route.target {
        Target::Model(m) => vec![m],
        Target::Tiers(t) => t.iter().map(|t| &t.model).collect(),
        Target::Select(s) => s.candidates.iter().collect(),
        Target::Split(a) => a.iter().map(|a| &a.model).collect(),
    };
    names.into_iter().chain(&route.fallbacks).filter_map(|n| snap.models.get(n)).collect()
}
