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

pub mod bpe;
pub mod classify;
mod complexity;
pub mod explain;
mod fit;
mod ladder;
pub mod overrides;
pub mod overrides_fleet;
mod plan;
mod price;
mod prompt;
pub mod repeat;
pub mod tokens;
mod trace;

use std::hash::{BuildHasher, RandomState};
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};

pub use classify::{classify, Facts, Score, Source};
pub use ladder::escalation;
pub use overrides::{OverrideStore, Overrides};
pub use repeat::Conversations;
pub use trace::{CandidateCheck, RouteCheck, ScoreParts, Trace};

use fit::*;
use ladder::client_escalated;
use plan::*;
use trace::Tr;

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
    /// Send the model id the client asked for (an upstream id or alias of
    /// `model`, such as `gpt-4o-2024-08-06`) instead of `model`'s `id`.
    pub as_requested: bool,
}

impl Attempt<'_> {
    /// The model label for metrics (a closed set: configured names, and
    /// `other` for every model the config does not know). Never shown to a
    /// user as a model's name: see [`Attempt::shown`].
    pub fn model_label(&self) -> &str {
        self.model.map(|m| m.name.as_str()).unwrap_or("other")
    }

    /// The model as messages name it: its configured name, or
    /// `unconfigured model X` (`requested`: what the client asked for).
    pub fn shown(&self, requested: Option<&str>) -> String {
        match self.model {
            Some(m) => m.name.clone(),
            None => format!("unconfigured model {}", requested.unwrap_or("(none named)")),
        }
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
    let over =
        overrides.get(&route.name).filter(|o| overrides::check(snap, &route.name, &o.target).is_ok()).and_then(|o| snap.models.get(&o.target).map(|m| (o, m)));
    if let Some((o, m)) = over {
        tr.note(|| format!("admin override (set {}): route `{}` → {}", o.set_at, route.name, m.name));
    }
    let over = over.map(|(_, m)| m);
    if let Some(e) = route.escalate.as_deref() {
        tr.note(|| {
            let on: Vec<&str> = e.on.iter().map(|c| c.as_str()).collect();
            let to = if e.to.is_empty() { "the next stronger model of the route".to_string() } else { e.to.join(", ") };
            let streams = if e.streams { "" } else { "; streams are not checked" };
            format!("answer checks [{}]: a failing answer is re-sent to {to}, at most {} time(s){streams}", on.join(", "), e.max)
        });
    }
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
