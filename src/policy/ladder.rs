//! Where a request goes when a stronger model should serve it: the
//! escalation ladder of a route (a failed answer check re-sends there) and
//! the client's own escalation (`client_escalation`: a request naming a
//! stronger model than the route picks).

use super::*;
use crate::config::{ClientEscalation, Escalation};

/// The models a failing answer from `from` escalates to, in order: the
/// route's `escalate_to`, else the tiers above `from` (a tiers route whose
/// tiers name it), else the route's models of higher `quality`, weakest
/// first. Models in `tried` (they answered already) and those that cannot
/// serve the request (context, mode, dialect, select filters) are left out.
pub fn escalation<'s>(snap: &'s Snapshot, d: &Decision<'s>, f: &Facts<'_>, esc: &Escalation, from: &'s Model, tried: &[&str]) -> Vec<Attempt<'s>> {
    let Some(route) = d.route else { return Vec::new() };
    let ladder: Vec<&'s Model> = if !esc.to.is_empty() {
        esc.to.iter().filter_map(|n| snap.models.get(n)).collect()
    } else {
        match &route.target {
            Target::Tiers(tiers) if tiers.iter().any(|t| t.model == from.name) => {
                let last = tiers.iter().rposition(|t| t.model == from.name).unwrap_or(0);
                tiers[last + 1..].iter().filter_map(|t| snap.models.get(&t.model)).collect()
            }
            _ => {
                let mut ms: Vec<&Model> = route_models(snap, route).into_iter().filter(|m| m.quality > from.quality).collect();
                // Stable: equal quality keeps config order.
                ms.sort_by_key(|m| m.quality);
                ms
            }
        }
    };
    let select = match &route.target {
        Target::Select(s) => Some(s),
        _ => None,
    };
    let mut chain = Chain::new(select);
    chain.seen.extend(tried.iter().copied().filter_map(|n| snap.models.get_key_value(n).map(|(k, _)| k.as_str())));
    chain.seen.push(&from.name);
    for m in ladder {
        chain.offer(snap, m, f, d.mode, "escalation", &mut Tr(None));
    }
    chain.attempts
}

/// The client's escalation on `route`: the requested model when it is one
/// of the route's, stronger than the route's pick, and the route's
/// `client_escalation` lets it through now. `None`: the pick stands.
pub(super) fn client_escalated<'s>(snap: &'s Snapshot, route: &'s Route, pick: Option<&Model>, f: &Facts<'_>, tr: &mut Tr<'_>) -> Option<&'s Model> {
    let rule = route.client_escalation?;
    let want = f.configured.and_then(|c| snap.models.get(&c.name))?;
    let pick = pick?;
    if want.quality <= pick.quality || !route_models(snap, route).iter().any(|m| m.name == want.name) {
        return None;
    }
    match rule {
        ClientEscalation::Always => {
            tr.target(|| format!("client escalation: `{}` asked for, stronger than the route's pick `{}`", want.name, pick.name));
        }
        ClientEscalation::OnRetry { window } => {
            if !f.asked_again(&route.name, window) {
                tr.note(|| {
                    format!(
                        "client escalation on retry: `{}` is stronger than `{}`, but this conversation was not answered here in the last {} s",
                        want.name,
                        pick.name,
                        window.as_secs()
                    )
                });
                return None;
            }
            tr.target(|| {
                format!(
                    "client escalation: the conversation is asked again within {} s, for `{}` (the route picks `{}`)",
                    window.as_secs(),
                    want.name,
                    pick.name
                )
            });
        }
    }
    Some(want)
}
